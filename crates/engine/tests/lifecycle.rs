//! Scenario tests of one task's life through the engine: claims, reports, retries, the
//! watchdog, fencing tokens, dead agents and wait reasons. Real SQLite store, manual clock:
//! time moves only when a test moves it, and timers fire only in `tick`.

mod common;

use std::time::Duration;

use baton_core::{
    AgentLostPolicy, CancelReason, EventKind, FencingToken, LeaseLoss, Refusal, State, StateKind,
    Timeouts, Timestamp,
};
use baton_engine::{EngineConfig, EngineError, OpenDependency, WaitReason};
use baton_store::Store;
use common::*;

fn refusal(err: EngineError) -> Refusal {
    match err {
        EngineError::Rejected(r) => r.refusal,
        other => panic!("expected a lifecycle refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_runs_to_completion_and_the_join_waits_for_both_branches() {
    let h = Harness::new();
    let wf = h
        .submit(vec![
            spec("a", &[]),
            spec("b", &["a"]),
            spec("c", &["a"]),
            spec("d", &["b", "c"]),
        ])
        .await;
    let agent = h.agent("worker", &["work"], 4).await;
    for k in ["b", "c", "d"] {
        assert_eq!(h.state(wf.id(k)).await, StateKind::Blocked, "{k}");
    }

    let a = h.run(agent, wf.id("a")).await;
    assert_eq!(a.kind(), StateKind::Completed);
    // Released in the commit that completed a, stamped with it, without a tick.
    for k in ["b", "c"] {
        let t = h.task(wf.id(k)).await;
        assert_eq!(t.kind(), StateKind::Pending, "{k}");
        assert_eq!(t.updated_at, a.updated_at, "{k}");
    }

    let mut branches = h.claim(agent, 4).await;
    branches.sort_by(|x, y| x.spec.key.cmp(&y.spec.key));
    let keys: Vec<&str> = branches.iter().map(|t| t.spec.key.as_str()).collect();
    assert_eq!(keys, ["b", "c"], "only b and c are claimable after a");
    let (b, c) = (&branches[0], &branches[1]);

    let b = h.start(b).await;
    h.succeed(&b).await;
    h.tick().await;
    assert!(
        h.claim(agent, 4).await.is_empty(),
        "d is not claimable while c is open"
    );
    let d = h.task(wf.id("d")).await;
    assert_eq!(d.kind(), StateKind::Blocked);
    assert_eq!(
        h.engine.wait_reason(&d).await.unwrap(),
        Some(WaitReason::Dependencies {
            open: vec![OpenDependency {
                key: key("c"),
                id: wf.id("c"),
                state: StateKind::Assigned,
            }],
        })
    );

    let c = h.start(c).await;
    h.succeed(&c).await;
    h.tick().await;
    let d = h.claim_only(agent, wf.id("d")).await;
    let d = h.start(&d).await;
    let d = h.succeed(&d).await;
    assert_eq!(
        d.state,
        State::Completed {
            result: result_of(&d),
            token: FencingToken(1),
        }
    );
    h.tick().await;

    let counts = h.counts(Some(wf.id)).await;
    assert_eq!(counts.get(StateKind::Completed), 4);
    assert_eq!(counts.total(), 4);
    assert_eq!(h.counts(None).await, counts, "the global counters agree");
    for k in ["a", "b", "c", "d"] {
        let events = h.events(wf.id(k)).await;
        let expected: &[EventKind] = if k == "a" {
            &[
                EventKind::Submitted,
                EventKind::AgentAssigned,
                EventKind::ExecutionStarted,
                EventKind::ExecutionSucceeded,
            ]
        } else {
            &[
                EventKind::Submitted,
                EventKind::DependenciesMet,
                EventKind::AgentAssigned,
                EventKind::ExecutionStarted,
                EventKind::ExecutionSucceeded,
            ]
        };
        assert_eq!(events, expected, "history of {k}");
    }
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_back_off_then_fail_for_good_and_cancel_dependents() {
    let h = Harness::new();
    let mut flaky = spec("flaky", &[]);
    flaky.retry = retry(3, 1_000);
    let wf = h
        .submit(vec![
            flaky,
            spec("next", &["flaky"]),
            spec("last", &["next"]),
        ])
        .await;
    let agent = h.agent("worker", &["work"], 1).await;

    let mut backoff = 1_000;
    for attempt in 1..=2 {
        let t = h.claim_only(agent, wf.id("flaky")).await;
        assert_eq!(t.attempt, attempt);
        let t = h.start(&t).await;
        let failed_at = h.now();
        let t = h.fail(&t, "flaky", true).await;
        let State::Failed { error, retry_at } = &t.state else {
            panic!("expected Failed, got {:?}", t.state);
        };
        assert_eq!(error.kind, "flaky");
        assert_eq!(error.attempt, attempt);
        assert_eq!(*retry_at, Some(failed_at.plus_ms(backoff)), "exact backoff");

        assert!(h.claim(agent, 1).await.is_empty(), "nothing before backoff");
        h.advance(backoff - 1);
        h.tick().await;
        assert_eq!(h.state(t.id).await, StateKind::Failed, "1 ms early");
        assert!(h.claim(agent, 1).await.is_empty());

        h.advance(1);
        h.tick().await;
        let t = h.task(t.id).await;
        assert_eq!(t.kind(), StateKind::Pending);
        assert_eq!(t.attempt, attempt + 1);
        assert_eq!(t.errors.len(), attempt as usize);
        backoff *= 2;
    }

    let t = h.claim_only(agent, wf.id("flaky")).await;
    assert_eq!(t.attempt, 3);
    let t = h.start(&t).await;
    let t = h.fail(&t, "flaky", true).await;
    assert!(
        matches!(t.state, State::Failed { retry_at: None, .. }),
        "the last attempt fails for good: {:?}",
        t.state
    );
    assert!(t.state.is_terminal());
    assert_eq!(h.engine.wait_reason(&t).await.unwrap(), None);
    assert_eq!(
        h.state(wf.id("next")).await,
        StateKind::Blocked,
        "dependents are failed by the outbox, in tick"
    );

    h.tick().await;
    let next = h.task(wf.id("next")).await;
    assert_eq!(
        next.state,
        State::Cancelled {
            reason: CancelReason::Upstream {
                upstream: key("flaky")
            }
        }
    );
    let last = h.task(wf.id("last")).await;
    assert_eq!(
        last.state,
        State::Cancelled {
            reason: CancelReason::Upstream {
                upstream: key("next")
            }
        }
    );

    h.advance(3_600_000);
    h.tick().await;
    assert_eq!(h.state(wf.id("flaky")).await, StateKind::Failed, "no more");
    let events = h.events(wf.id("flaky")).await;
    assert_eq!(count(&events, EventKind::ExecutionFailed), 3);
    assert_eq!(count(&events, EventKind::Retry), 2);
    let counts = h.counts(Some(wf.id)).await;
    assert_eq!(counts.get(StateKind::Failed), 1);
    assert_eq!(counts.get(StateKind::Cancelled), 2);
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retryable_error_fails_the_task_at_once() {
    let h = Harness::new();
    let mut t = spec("t", &[]);
    t.retry = retry(5, 1_000);
    t.retry.non_retryable = vec!["bad_input".into()];
    let wf = h.submit(vec![t, spec("u", &[])]).await;
    let agent = h.agent("worker", &["work"], 2).await;

    let t = h.claim_only(agent, wf.id("t")).await;
    let t = h.start(&t).await;
    let t = h.fail(&t, "bad_input", true).await;
    assert!(matches!(t.state, State::Failed { retry_at: None, .. }));

    let u = h.claim_only(agent, wf.id("u")).await;
    let u = h.start(&u).await;
    let u = h.fail(&u, "crashed", false).await;
    assert!(
        matches!(u.state, State::Failed { retry_at: None, .. }),
        "the reporter said it is not retryable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_message_over_its_limit_is_refused_and_changes_nothing() {
    let h = Harness::new();
    let wf = h.submit(vec![spec("t", &[])]).await;
    let agent = h.agent("worker", &["work"], 1).await;
    let t = h.claim_only(agent, wf.id("t")).await;
    let t = h.start(&t).await;

    let with_message = |message: String| {
        let mut event = failed(&t, "crashed", false);
        if let baton_core::Event::ExecutionFailed { error, .. } = &mut event {
            error.message = message;
        }
        event
    };
    let over = "m".repeat(baton_engine::ERROR_MESSAGE_LEN_MAX + 1);
    match h.report(t.id, with_message(over)).await {
        Err(EngineError::Invalid { field, .. }) => assert_eq!(field, "error.message"),
        other => panic!("expected error.message refused, got {other:?}"),
    }
    let stored = h.engine.task(t.id).await.expect("task");
    assert_eq!(
        stored.version, t.version,
        "a refused report changes nothing"
    );

    let at_limit = "m".repeat(baton_engine::ERROR_MESSAGE_LEN_MAX);
    let t = h
        .report(t.id, with_message(at_limit.clone()))
        .await
        .expect("a message of the limit is taken");
    assert_eq!(t.errors.last().map(|e| &e.message), Some(&at_limit));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_times_out_on_heartbeats_and_its_late_reports_are_refused() {
    let h = Harness::new();
    let mut t = spec("t", &[]);
    t.timeouts = Timeouts {
        schedule_to_start_ms: None,
        start_ms: Some(1_000),
        start_to_close_ms: Some(60_000),
        heartbeat_ms: Some(2_000),
    };
    let wf = h.submit(vec![t]).await;
    let agent = h.agent("worker", &["work"], 1).await;
    let id = wf.id("t");

    let claimed = h.claim_only(agent, id).await;
    let running = h.start(&claimed).await;
    assert_eq!(
        running.deadlines.heartbeat,
        Some(h.now().plus_ms(2_000)),
        "the heartbeat deadline is armed at start"
    );

    // A heartbeat pushes the deadline out.
    h.advance(1_500);
    let (a, token) = lease(&running);
    let beat = h
        .report(
            id,
            baton_core::Event::Heartbeat {
                usage: Default::default(),
                agent: a,
                token,
                progress: Some(serde_json::json!({"pct": 50})),
            },
        )
        .await
        .unwrap();
    let deadline = h.now().plus_ms(2_000);
    assert_eq!(beat.deadlines.heartbeat, Some(deadline));
    h.set(Timestamp(deadline.0 - 1));
    h.tick().await;
    assert_eq!(h.state(id).await, StateKind::Executing, "not yet due");

    // Then the agent goes silent.
    h.set(deadline);
    h.tick().await;
    let t = h.task(id).await;
    let State::Failed { error, retry_at } = &t.state else {
        panic!("expected Failed, got {:?}", t.state);
    };
    assert_eq!(error.kind, "timeout.heartbeat");
    assert_eq!(error.token, Some(token));
    assert!(retry_at.is_some(), "a retry is scheduled");
    assert!(
        matches!(
            h.engine.wait_reason(&t).await.unwrap(),
            Some(WaitReason::BackingOff {
                attempt: 1,
                max_attempts: 3,
                ..
            })
        ),
        "backing off"
    );
    let history_len = h.history(id).await.len();

    // The old lease reports afterwards: refused, nothing changes.
    let late = [
        succeeded(&running),
        baton_core::Event::Heartbeat {
            usage: Default::default(),
            agent: a,
            token,
            progress: None,
        },
        failed(&running, "oops", true),
    ];
    for event in late {
        let err = h.report(id, event.clone()).await.unwrap_err();
        assert!(
            matches!(err, EngineError::Rejected(_)),
            "{event:?} is refused, got {err:?}"
        );
        assert_eq!(h.task(id).await, t, "the task is unchanged");
        assert_eq!(h.history(id).await.len(), history_len, "nothing appended");
    }
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_token_after_start_timeout_and_reassignment_is_refused() {
    let h = Harness::new();
    let mut t = spec("t", &[]);
    t.timeouts.start_ms = Some(1_000);
    let wf = h.submit(vec![t]).await;
    let first = h.agent("first", &["work"], 1).await;
    let second = h.agent("second", &["work"], 1).await;
    let id = wf.id("t");

    let old = h.claim_only(first, id).await;
    assert_eq!(lease(&old), (first, FencingToken(1)));

    h.advance(1_000);
    h.tick().await;
    let requeued = h.task(id).await;
    assert_eq!(
        requeued.kind(),
        StateKind::Pending,
        "the start timeout requeues"
    );
    assert_eq!(requeued.attempt, 1, "a start timeout costs no attempt");
    assert!(requeued.errors.is_empty());
    assert_eq!(h.events(id).await.last(), Some(&EventKind::TimeoutExpired));
    // While nobody holds it, the old agent is told its lease has ended.
    let err = h.report(id, started(&old)).await.unwrap_err();
    assert_eq!(
        refusal(err),
        Refusal::StaleLease {
            reported: FencingToken(1),
            current: FencingToken(1),
            loss: LeaseLoss::Revoked,
        }
    );

    let new = h.claim_only(second, id).await;
    assert_eq!(lease(&new), (second, FencingToken(2)));
    let new = h.start(&new).await;
    let before = h.task(id).await;
    let history_len = h.history(id).await.len();

    for event in [succeeded(&old), started(&old), failed(&old, "late", true)] {
        let err = h.report(id, event).await.unwrap_err();
        assert_eq!(
            refusal(err),
            Refusal::StaleLease {
                reported: FencingToken(1),
                current: FencingToken(2),
                loss: LeaseLoss::Superseded,
            }
        );
        assert_eq!(h.task(id).await, before, "the task is unchanged");
        assert_eq!(h.history(id).await.len(), history_len);
    }

    let done = h.succeed(&new).await;
    assert_eq!(
        done.state,
        State::Completed {
            result: result_of(&done),
            token: FencingToken(2)
        }
    );
    // The current lease's duplicate success is answered, not applied twice.
    let again = h.report(id, succeeded(&new)).await.unwrap();
    assert_eq!(again, done);
    assert_eq!(h.history(id).await.len(), history_len + 1);
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_committed_before_the_watchdog_runs_stays_a_success() {
    let h = Harness::new();
    let mut specs = Vec::new();
    for k in ["early", "late"] {
        let mut t = spec(k, &[]);
        t.timeouts = Timeouts {
            schedule_to_start_ms: Some(5_000),
            start_ms: Some(1_000),
            start_to_close_ms: Some(3_000),
            heartbeat_ms: Some(2_000),
        };
        specs.push(t);
    }
    let wf = h.submit(specs).await;
    let agent = h.agent("worker", &["work"], 2).await;
    let claimed = h.claim(agent, 2).await;
    assert_eq!(claimed.len(), 2);
    let mut running = Vec::new();
    for t in &claimed {
        running.push(h.start(t).await);
    }
    let early = running.iter().find(|t| t.spec.key.0 == "early").unwrap();
    let late = running.iter().find(|t| t.spec.key.0 == "late").unwrap();

    // `early` succeeds 1 ms before its heartbeat deadline.
    h.advance(1_999);
    h.succeed(early).await;
    // `late` succeeds after every deadline passed, but before the watchdog looked.
    h.advance(3_600_000);
    h.succeed(late).await;
    h.tick().await;
    h.advance(3_600_000);
    h.tick().await;

    for k in ["early", "late"] {
        let t = h.task(wf.id(k)).await;
        assert_eq!(t.kind(), StateKind::Completed, "{k}");
        assert_eq!(t.deadlines, Default::default(), "{k}: nothing armed");
        let events = h.events(t.id).await;
        assert_eq!(count(&events, EventKind::ExecutionSucceeded), 1, "{k}");
        assert_eq!(count(&events, EventKind::TimeoutExpired), 0, "{k}");
        assert_eq!(events.last(), Some(&EventKind::ExecutionSucceeded), "{k}");
    }
    h.assert_replays(wf.id).await;
}

/// The real race: success reports and the watchdog run at the same time, after the deadline
/// passed. Whichever commits first wins; never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_and_timeout_racing_end_in_exactly_one_outcome() {
    let h = Harness::new();
    let specs = (0..24)
        .map(|i| {
            let mut t = spec(&format!("t{i}"), &[]);
            t.timeouts.heartbeat_ms = Some(1_000);
            t
        })
        .collect();
    let wf = h.submit(specs).await;
    let agent = h.agent("worker", &["work"], 24).await;
    let mut running = Vec::new();
    for t in h.claim(agent, 24).await {
        running.push(h.start(&t).await);
    }
    h.advance(1_000);

    let reports = {
        let engine = h.engine.clone();
        let running = running.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for t in &running {
                outcomes.push(engine.report(t.id, succeeded(t), Default::default()).await);
            }
            outcomes
        })
    };
    h.tick().await;
    let outcomes = reports.await.unwrap();

    for (t, outcome) in running.iter().zip(outcomes) {
        let stored = h.task(t.id).await;
        let events = h.events(t.id).await;
        let successes = count(&events, EventKind::ExecutionSucceeded);
        let timeouts = count(&events, EventKind::TimeoutExpired);
        match outcome {
            Ok(_) => {
                assert_eq!(stored.kind(), StateKind::Completed);
                assert_eq!((successes, timeouts), (1, 0), "{events:?}");
            }
            Err(EngineError::Rejected(_)) => {
                assert_eq!(stored.kind(), StateKind::Failed);
                assert_eq!((successes, timeouts), (0, 1), "{events:?}");
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    let counts = h.counts(Some(wf.id)).await;
    assert_eq!(
        counts.get(StateKind::Completed) + counts.get(StateKind::Failed),
        24
    );
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agents_leases_are_taken_back() {
    let h = Harness::new();
    let ttl = h.engine.config().agent_ttl_ms;
    // Priorities fix the order in which claims hand the tasks out.
    let specs = ["fail", "assigned", "requeue", "assigned-2", "kept"]
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let mut t = spec(k, &[]);
            t.priority = 10 - i as i32;
            if *k == "requeue" {
                t.on_agent_lost = AgentLostPolicy::Requeue;
            }
            t
        })
        .collect();
    let wf = h.submit(specs).await;
    let silent = h.agent("silent", &["work"], 2).await;
    let silent2 = h.agent("silent-2", &["work"], 2).await;
    let alive = h.agent("alive", &["work"], 1).await;

    let first = h.claim(silent, 2).await;
    let keys: Vec<&str> = first.iter().map(|t| t.spec.key.as_str()).collect();
    assert_eq!(keys, ["fail", "assigned"]);
    let fail = h.start(&first[0]).await;
    let second = h.claim(silent2, 2).await;
    let keys: Vec<&str> = second.iter().map(|t| t.spec.key.as_str()).collect();
    assert_eq!(keys, ["requeue", "assigned-2"]);
    let requeued = h.start(&second[0]).await;
    let kept = h.claim_only(alive, wf.id("kept")).await;
    let kept = h.start(&kept).await;

    h.advance(ttl);
    h.engine.agent_keepalive(alive).await.unwrap();
    h.tick().await;
    assert_eq!(
        h.state(wf.id("fail")).await,
        StateKind::Executing,
        "ttl not yet exceeded"
    );

    h.advance(1);
    h.tick().await;
    let t = h.task(wf.id("fail")).await;
    let State::Failed { error, retry_at } = &t.state else {
        panic!("expected Failed, got {:?}", t.state);
    };
    assert_eq!(error.kind, baton_core::AGENT_LOST);
    assert!(retry_at.is_some(), "the default policy retries");
    for k in ["assigned", "assigned-2"] {
        let t = h.task(wf.id(k)).await;
        assert_eq!(t.kind(), StateKind::Pending, "{k} goes back to the queue");
        assert!(t.errors.is_empty(), "{k}");
        assert_eq!(t.attempt, 1, "{k}");
    }
    let t = h.task(wf.id("requeue")).await;
    assert_eq!(t.kind(), StateKind::Pending, "Requeue policy");
    assert_eq!(t.attempt, 1);
    assert!(t.errors.is_empty());
    assert_eq!(
        h.task(wf.id("kept")).await.kind(),
        StateKind::Executing,
        "a live agent keeps its lease"
    );
    assert!(h.engine.store().leased_to(silent).await.unwrap().is_empty());
    assert!(h
        .engine
        .store()
        .leased_to(silent2)
        .await
        .unwrap()
        .is_empty());
    assert!(!h
        .engine
        .agent_online(&h.engine.agent(silent).await.unwrap()));

    // The dead agent wakes up and reports: refused, nothing changes.
    let before = h.task(wf.id("requeue")).await;
    let err = h.report(before.id, succeeded(&requeued)).await.unwrap_err();
    assert!(
        matches!(
            refusal(err),
            Refusal::StaleLease {
                loss: LeaseLoss::Revoked,
                ..
            }
        ),
        "the dead agent is told its lease has ended"
    );
    assert_eq!(h.task(before.id).await, before);
    let before = h.task(wf.id("fail")).await;
    assert!(h.report(before.id, succeeded(&fail)).await.is_err());
    assert_eq!(h.task(before.id).await, before);

    // Another tick changes nothing more; the live agent finishes.
    h.tick().await;
    h.succeed(&kept).await;
    let counts = h.counts(Some(wf.id)).await;
    assert_eq!(counts.get(StateKind::Pending), 3);
    assert_eq!(counts.get(StateKind::Failed), 1);
    assert_eq!(counts.get(StateKind::Completed), 1);
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_reasons_explain_every_non_terminal_state() {
    let h = Harness::new();
    let mut gpu = spec("gpu", &[]);
    gpu.capabilities = caps(&["gpu", "work"]);
    let mut x = spec("x", &[]);
    x.retry = retry(3, 1_000);
    let wf = h
        .submit(vec![gpu, x, spec("y", &[]), spec("after", &["x", "y"])])
        .await;
    let reason = |id| {
        let h = &h;
        async move {
            let t = h.task(id).await;
            h.engine.wait_reason(&t).await.unwrap()
        }
    };

    // Blocked: the open dependencies, in key order.
    assert_eq!(
        reason(wf.id("after")).await,
        Some(WaitReason::Dependencies {
            open: vec![
                OpenDependency {
                    key: key("x"),
                    id: wf.id("x"),
                    state: StateKind::Pending
                },
                OpenDependency {
                    key: key("y"),
                    id: wf.id("y"),
                    state: StateKind::Pending
                },
            ]
        })
    );
    // Pending, nobody online.
    assert_eq!(
        reason(wf.id("x")).await,
        Some(WaitReason::NoCapableAgent {
            missing: caps(&["work"]).into_iter().collect()
        })
    );
    // Pending, the online agents lack `gpu`.
    let worker = h.agent("worker", &["work"], 1).await;
    assert_eq!(
        reason(wf.id("gpu")).await,
        Some(WaitReason::NoCapableAgent {
            missing: caps(&["gpu"]).into_iter().collect()
        })
    );
    // Pending, the capable agent is busy.
    let x_claimed = h.claim_only(worker, wf.id("x")).await;
    assert_eq!(
        reason(wf.id("y")).await,
        Some(WaitReason::AgentsBusy { capable_online: 1 })
    );
    // Assigned and executing: who holds the lease, until when.
    assert_eq!(
        reason(wf.id("x")).await,
        Some(WaitReason::Leased {
            agent: worker,
            state: StateKind::Assigned,
            until: Some(h.now().plus_ms(60_000)),
        })
    );
    h.advance(10);
    let x_running = h.start(&x_claimed).await;
    assert_eq!(
        reason(wf.id("x")).await,
        Some(WaitReason::Leased {
            agent: worker,
            state: StateKind::Executing,
            until: Some(h.now().plus_ms(60_000)),
        }),
        "the heartbeat deadline comes first"
    );
    // Failed with a retry: backing off until when, after which attempt.
    let failed_at = h.now();
    h.fail(&x_running, "flaky", true).await;
    assert_eq!(
        reason(wf.id("x")).await,
        Some(WaitReason::BackingOff {
            until: failed_at.plus_ms(1_000),
            attempt: 1,
            max_attempts: 3,
        })
    );
    assert_eq!(
        reason(wf.id("after")).await,
        Some(WaitReason::Dependencies {
            open: vec![
                OpenDependency {
                    key: key("x"),
                    id: wf.id("x"),
                    state: StateKind::Failed
                },
                OpenDependency {
                    key: key("y"),
                    id: wf.id("y"),
                    state: StateKind::Pending
                },
            ]
        })
    );
    // An agent not heard from within its ttl no longer counts as online.
    h.advance(h.engine.config().agent_ttl_ms + 1);
    assert_eq!(
        reason(wf.id("y")).await,
        Some(WaitReason::NoCapableAgent {
            missing: caps(&["work"]).into_iter().collect()
        })
    );
    // A terminal task has no wait reason.
    let y = h.claim_only(worker, wf.id("y")).await;
    let y = h.start(&y).await;
    h.succeed(&y).await;
    assert_eq!(reason(wf.id("y")).await, None);
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_respect_capabilities_priority_and_concurrency() {
    let h = Harness::new();
    let mut gpu = spec("gpu", &[]);
    gpu.capabilities = caps(&["gpu"]);
    let mut urgent = spec("urgent", &[]);
    urgent.priority = 10;
    let wf = h.submit(vec![spec("normal", &[]), gpu, urgent]).await;
    let worker = h.agent("worker", &["work"], 1).await;

    let t = h.claim(worker, 10).await;
    assert_eq!(t.len(), 1, "concurrency 1");
    assert_eq!(t[0].id, wf.id("urgent"), "the highest priority first");
    assert!(h.claim(worker, 10).await.is_empty(), "at its limit");
    let err = h.engine.claim(worker, 0, Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, EngineError::Invalid { ref field, .. } if field == "max"));
    let err = h
        .engine
        .claim(agent_id(99), 1, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::AgentNotFound(_)));

    let t = h.start(&t[0]).await;
    h.succeed(&t).await;
    let t = h.claim(worker, 10).await;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].id, wf.id("normal"), "gpu needs a capability it lacks");
    assert_eq!(h.state(wf.id("gpu")).await, StateKind::Pending);
}

/// A claim with a wait returns as soon as work appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_claim_is_woken_by_new_work() {
    // The claim looks again on its own only after a minute: only the wake-up can end its wait.
    let h = Harness::with_config(EngineConfig {
        claim_recheck_ms: 60_000,
        ..EngineConfig::default()
    });
    let worker = h.agent("worker", &["work"], 1).await;
    let claim = {
        let engine = h.engine.clone();
        tokio::spawn(async move { engine.claim(worker, 1, Duration::from_secs(30)).await })
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while !h
            .engine
            .metrics_text()
            .await
            .unwrap()
            .contains("\nbaton_claims_waiting 1\n")
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the claim waits");
    let wf = h.submit(vec![spec("t", &[])]).await;
    let claimed = tokio::time::timeout(Duration::from_secs(10), claim)
        .await
        .expect("the claim is woken")
        .unwrap()
        .unwrap();
    assert_eq!(
        claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
        [wf.id("t")]
    );
}

/// Claims of one agent running at the same time never lease it more than its concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_one_agent_respect_its_concurrency() {
    let h = Harness::new();
    let wf = h
        .submit((0..20).map(|i| spec(&format!("t{i}"), &[])).collect())
        .await;
    let agent = h.agent("worker", &["work"], 3).await;
    let claims: Vec<_> = (0..6)
        .map(|_| {
            let engine = h.engine.clone();
            tokio::spawn(async move { engine.claim(agent, 3, Duration::ZERO).await })
        })
        .collect();
    let mut claimed = 0;
    for c in claims {
        claimed += c.await.unwrap().unwrap().len();
    }
    assert_eq!(claimed, 3, "the limit holds across concurrent claims");
    assert_eq!(h.engine.store().leased_to(agent).await.unwrap().len(), 3);
    assert_eq!(h.counts(Some(wf.id)).await.get(StateKind::Assigned), 3);
}
