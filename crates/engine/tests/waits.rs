//! Steps that wait for the world: signal tasks (`wait_for`), delays (`not_before`,
//! `delay_ms`) and sleeps (`sleep_ms`), through the engine on a real SQLite store with a
//! manual clock.

mod common;

use baton_core::{State, StateKind, TaskSpec, Timestamp, WaitFor, REJECTED};
use baton_engine::{EngineError, SignalInput, WaitReason};
use baton_store::{Store, TaskFilter};
use common::*;
use serde_json::json;

fn approval(key: &str, deps: &[&str], timeout_ms: Option<u64>) -> TaskSpec {
    TaskSpec {
        depends_on: deps.iter().map(|&d| key_of(d)).collect(),
        wait_for: Some(WaitFor {
            signal: "approve".into(),
            timeout_ms,
        }),
        retry: retry(2, 100),
        ..TaskSpec::new(key)
    }
}

fn key_of(k: &str) -> baton_core::TaskKey {
    baton_core::TaskKey::from(k)
}

fn data(v: serde_json::Value) -> SignalInput {
    SignalInput::Data(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_completes_the_waiting_task_and_its_data_flows_to_dependents() {
    let h = Harness::new();
    let mut deploy = spec("deploy", &["review"]);
    deploy.input = json!({"approved": {"$from": "review", "pointer": "/ok"}});
    let wf = h
        .submit(vec![
            spec("plan", &[]),
            approval("review", &["plan"], None),
            deploy,
        ])
        .await;
    let agent = h.agent("worker", &["work"], 4).await;
    h.run(agent, wf.id("plan")).await;
    h.tick().await;
    let review = h.engine.task(wf.id("review")).await.unwrap();
    assert_eq!(review.kind(), StateKind::Pending);
    assert!(
        h.claim(agent, 4).await.is_empty(),
        "no agent is handed a signal task"
    );
    assert_eq!(
        h.engine.wait_reason(&review).await.unwrap(),
        Some(WaitReason::Signal {
            signal: "approve".into(),
            until: None
        })
    );
    let waiting = h
        .engine
        .waiting(TaskFilter {
            limit: 10,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        waiting.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![review.id]
    );

    let receipt = h
        .engine
        .signal(wf.id, "approve", data(json!({"ok": true})), "alice", None)
        .await
        .unwrap();
    assert!(receipt.created);
    assert_eq!(receipt.delivered_to.len(), 1);
    assert!(receipt.signal.delivered_at.is_some());
    let review = h.engine.task(wf.id("review")).await.unwrap();
    assert_eq!(
        review.state,
        State::Completed {
            result: json!({"ok": true}),
            token: baton_core::FencingToken(0)
        }
    );
    h.tick().await;
    let deploy = h.claim_only(agent, wf.id("deploy")).await;
    assert_eq!(deploy.input(), Some(&json!({"approved": true})));
    let history = h.engine.history(review.id, 0, 100).await.unwrap();
    let last = &history.last().unwrap().event;
    assert_eq!(last.kind(), baton_core::EventKind::SignalReceived);
    assert_eq!(
        last.actor(),
        baton_core::Actor::Operator {
            name: "alice".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_sent_before_the_task_waits_is_kept_and_delivered_once_it_does() {
    let h = Harness::new();
    let wf = h
        .submit(vec![
            spec("plan", &[]),
            approval("review", &["plan"], None),
            approval("second", &["review"], None),
        ])
        .await;
    let early = h
        .engine
        .signal(wf.id, "approve", data(json!("early")), "alice", None)
        .await
        .unwrap();
    assert!(early.delivered_to.is_empty());
    assert_eq!(early.signal.delivered_at, None);

    let agent = h.agent("worker", &["work"], 4).await;
    h.run(agent, wf.id("plan")).await;
    h.tick().await;
    let review = h.engine.task(wf.id("review")).await.unwrap();
    assert_eq!(
        review.state,
        State::Completed {
            result: json!("early"),
            token: baton_core::FencingToken(0)
        },
        "the kept signal completes it as soon as it waits"
    );
    // The kept signal was taken: the next task waiting for the same name waits anew.
    let second = h.engine.task(wf.id("second")).await.unwrap();
    assert_eq!(second.kind(), StateKind::Pending);
    let signals = h.engine.signals(wf.id, 0, 10).await.unwrap();
    assert_eq!(signals.len(), 1);
    assert!(signals[0].delivered_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_applies_once_and_a_different_request_is_refused() {
    let h = Harness::new();
    let wf = h
        .submit(vec![approval("a", &[], None), approval("b", &["a"], None)])
        .await;
    let key = Some("click-1".to_owned());
    let first = h
        .engine
        .signal(wf.id, "approve", data(json!(1)), "alice", key.clone())
        .await
        .unwrap();
    assert_eq!(first.delivered_to.len(), 1);
    h.tick().await;
    assert_eq!(
        h.engine.task(wf.id("b")).await.unwrap().kind(),
        StateKind::Pending
    );
    let again = h
        .engine
        .signal(wf.id, "approve", data(json!(1)), "alice", key.clone())
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.signal.id, first.signal.id);
    assert!(
        again.delivered_to.is_empty(),
        "a repeat delivers nothing new"
    );
    assert_eq!(
        h.engine.task(wf.id("b")).await.unwrap().kind(),
        StateKind::Pending,
        "the repeat did not complete the next waiter"
    );
    let other = h
        .engine
        .signal(wf.id, "approve", data(json!(2)), "alice", key)
        .await
        .unwrap_err();
    assert!(
        matches!(other, EngineError::IdempotencyMismatch { .. }),
        "{other:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_fails_the_task_and_cancels_its_dependents() {
    let h = Harness::new();
    let wf = h
        .submit(vec![
            approval("review", &[], None),
            spec("deploy", &["review"]),
        ])
        .await;
    let r = h
        .engine
        .signal(
            wf.id,
            "approve",
            SignalInput::Reject("too expensive".into()),
            "bob",
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.delivered_to.len(), 1);
    let review = h.engine.task(wf.id("review")).await.unwrap();
    let State::Failed { error, retry_at } = &review.state else {
        panic!("{:?}", review.state)
    };
    assert_eq!(error.kind, REJECTED);
    assert!(error.message.contains("too expensive"), "{}", error.message);
    assert_eq!(*retry_at, None);
    h.tick().await;
    assert_eq!(h.state(wf.id("deploy")).await, StateKind::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_times_out_is_retried_and_then_fails_for_good() {
    let h = Harness::new();
    let wf = h.submit(vec![approval("review", &[], Some(1_000))]).await;
    let id = wf.id("review");
    h.advance(1_000);
    h.tick().await;
    let t = h.engine.task(id).await.unwrap();
    let State::Failed { error, retry_at } = &t.state else {
        panic!("{:?}", t.state)
    };
    assert_eq!(error.kind, "timeout.signal");
    assert!(retry_at.is_some());
    h.advance(100);
    h.tick().await;
    let t = h.engine.task(id).await.unwrap();
    assert_eq!(t.kind(), StateKind::Pending, "the retry waits again");
    h.advance(1_000);
    h.tick().await;
    let t = h.engine.task(id).await.unwrap();
    assert!(t.state.is_terminal(), "{:?}", t.state);
    let late = h
        .engine
        .signal(wf.id, "approve", data(json!("late")), "alice", None)
        .await
        .unwrap();
    assert!(
        late.delivered_to.is_empty(),
        "a failed task takes no signal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signals_are_refused_and_change_nothing() {
    let h = Harness::new();
    let wf = h.submit(vec![approval("review", &[], None)]).await;
    let e = h
        .engine
        .signal(wf.id, "no spaces", data(json!(1)), "alice", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EngineError::Invalid { field, .. } if field == "name"),
        "{e:?}"
    );
    let e = h
        .engine
        .signal(
            wf.id,
            "approve",
            SignalInput::Reject(" ".into()),
            "alice",
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EngineError::Invalid { field, .. } if field == "reject"),
        "{e:?}"
    );
    let e = h
        .engine
        .signal(
            baton_core::WorkflowId(uuid::Uuid::nil()),
            "approve",
            data(json!(1)),
            "alice",
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, EngineError::WorkflowNotFound(_)), "{e:?}");
    assert!(h.engine.signals(wf.id, 0, 10).await.unwrap().is_empty());
    assert_eq!(h.state(wf.id("review")).await, StateKind::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_and_sleeping_tasks_wake_at_their_time_across_a_restart() {
    let h = Harness::new();
    let at = Timestamp(h.now().0 + 60_000);
    let delayed = TaskSpec {
        not_before: Some(at),
        ..spec("report", &[])
    };
    let pause = TaskSpec {
        sleep_ms: Some(5_000),
        ..TaskSpec::new("pause")
    };
    let wf = h
        .submit(vec![
            delayed,
            spec("plan", &[]),
            pause,
            spec("after", &["pause"]),
        ])
        .await;
    let agent = h.agent("worker", &["work"], 4).await;
    let report = h.engine.task(wf.id("report")).await.unwrap();
    assert_eq!(report.kind(), StateKind::Blocked);
    assert_eq!(
        h.engine.wait_reason(&report).await.unwrap(),
        Some(WaitReason::Timer {
            until: at,
            sleeps: false
        })
    );
    h.tick().await;
    assert_eq!(
        h.claim(agent, 4)
            .await
            .iter()
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        vec![wf.id("plan")],
        "only the task without a delay is ready"
    );

    let h = h.restart();
    h.advance(5_000);
    h.tick().await;
    let pause = h.engine.task(wf.id("pause")).await.unwrap();
    assert_eq!(
        pause.state,
        State::Completed {
            result: json!({"slept_ms": 5_000}),
            token: baton_core::FencingToken(0)
        }
    );
    h.tick().await;
    assert_eq!(h.state(wf.id("after")).await, StateKind::Pending);
    assert_eq!(h.state(wf.id("report")).await, StateKind::Blocked);
    h.set(at);
    h.tick().await;
    assert_eq!(h.state(wf.id("report")).await, StateKind::Pending);
    // Each timer fired once: one timer_fired entry per task.
    for k in ["report", "pause"] {
        let fired = h
            .engine
            .history(wf.id(k), 0, 100)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.event.kind() == baton_core::EventKind::TimerFired)
            .count();
        assert_eq!(fired, 1, "{k}");
    }
    assert!(h
        .engine
        .store()
        .released_blocked(10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_counts_from_the_release_of_the_task() {
    let h = Harness::new();
    let later = TaskSpec {
        delay_ms: Some(2_000),
        ..spec("later", &["first"])
    };
    let wf = h.submit(vec![spec("first", &[]), later]).await;
    let agent = h.agent("worker", &["work"], 4).await;
    h.advance(10_000);
    h.run(agent, wf.id("first")).await;
    h.tick().await;
    let t = h.engine.task(wf.id("later")).await.unwrap();
    assert_eq!(t.wake_at, Some(Timestamp(h.now().0 + 2_000)));
    // The release sweep does not release it again while it waits.
    for _ in 0..3 {
        h.tick().await;
    }
    assert_eq!(
        h.engine.history(t.id, 0, 100).await.unwrap().len(),
        2,
        "submitted, dependencies_met"
    );
    h.advance(2_000);
    h.tick().await;
    h.claim_only(agent, wf.id("later")).await;
}
