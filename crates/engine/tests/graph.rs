//! Scenario tests of workflows as graphs: cancellation downstream, compensation,
//! decomposition, operator retries reviving dependents, and refused submissions.

mod common;

use baton_core::{
    CancelReason, CompensationSpec, DagError, EventKind, FencingToken, State, StateKind, TaskSpec,
};
use baton_engine::{EngineError, OpenDependency, WaitReason};
use baton_store::Store;
use common::*;
use serde_json::json;

fn upstream(k: &str) -> State {
    State::Cancelled {
        reason: CancelReason::Upstream { upstream: key(k) },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_task_cancels_everything_downstream() {
    let h = Harness::new();
    // a -> b -> c -> d, a -> e; f is independent.
    let wf = h
        .submit(vec![
            spec("a", &[]),
            spec("b", &["a"]),
            spec("c", &["b"]),
            spec("d", &["c"]),
            spec("e", &["a"]),
            spec("f", &[]),
        ])
        .await;

    let a = h
        .engine
        .cancel_task(wf.id("a"), "ops".into(), "not needed".into())
        .await
        .unwrap();
    assert_eq!(
        a.state,
        State::Cancelled {
            reason: CancelReason::Operator {
                requested_by: "ops".into(),
                reason: "not needed".into()
            }
        }
    );
    // Cancelling again is answered, not applied twice.
    let again = h
        .engine
        .cancel_task(wf.id("a"), "ops".into(), "not needed".into())
        .await
        .unwrap();
    assert_eq!(again, a);
    assert_eq!(h.history(wf.id("a")).await.len(), 2);
    assert_eq!(
        h.state(wf.id("b")).await,
        StateKind::Blocked,
        "effects run in tick"
    );

    h.tick().await;
    assert_eq!(h.task(wf.id("b")).await.state, upstream("a"));
    assert_eq!(h.task(wf.id("c")).await.state, upstream("b"));
    assert_eq!(h.task(wf.id("d")).await.state, upstream("c"));
    assert_eq!(h.task(wf.id("e")).await.state, upstream("a"));
    assert_eq!(
        h.state(wf.id("f")).await,
        StateKind::Pending,
        "not downstream"
    );
    for k in ["b", "c", "d", "e"] {
        assert_eq!(
            h.events(wf.id(k)).await,
            [EventKind::Submitted, EventKind::UpstreamFailed],
            "{k}"
        );
    }
    let counts = h.counts(Some(wf.id)).await;
    assert_eq!(counts.get(StateKind::Cancelled), 5);
    assert_eq!(counts.get(StateKind::Pending), 1);
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_workflow_cancels_every_task_not_yet_ended() {
    let h = Harness::new();
    let wf = h
        .submit(vec![
            spec("done", &[]),
            spec("running", &[]),
            spec("assigned", &[]),
            spec("ready", &[]),
            spec("waiting", &["ready"]),
            spec("waiting-2", &["waiting"]),
        ])
        .await;
    let agent = h.agent("worker", &["work"], 3).await;
    h.run(agent, wf.id("done")).await;
    let running = h.claim_only(agent, wf.id("running")).await;
    let running = h.start(&running).await;
    h.claim_only(agent, wf.id("assigned")).await;
    let other = h.submit(vec![spec("elsewhere", &[])]).await;

    let n = h
        .engine
        .cancel_workflow(wf.id, "ops".into(), "abandoned".into())
        .await
        .unwrap();
    assert_eq!(n, 5, "every task but the completed one");
    h.tick().await;
    let counts = h.counts(Some(wf.id)).await;
    assert_eq!(counts.get(StateKind::Completed), 1);
    assert_eq!(counts.get(StateKind::Cancelled), 5);
    assert_eq!(counts.total(), 6);
    assert!(h.engine.store().leased_to(agent).await.unwrap().is_empty());
    assert_eq!(h.state(other.id("elsewhere")).await, StateKind::Pending);

    // The agent that was running a cancelled task is refused.
    let err = h.report(running.id, succeeded(&running)).await.unwrap_err();
    assert!(matches!(err, EngineError::Rejected(_)));
    // Nothing left to cancel; an unknown workflow is named.
    let n = h
        .engine
        .cancel_workflow(wf.id, "ops".into(), "again".into())
        .await
        .unwrap();
    assert_eq!(n, 0);
    let unknown = baton_core::WorkflowId(uuid::Uuid::nil());
    let err = h
        .engine
        .cancel_workflow(unknown, "ops".into(), "x".into())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::WorkflowNotFound(id) if id == unknown));
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_failure_spawns_its_compensation_task_once() {
    let h = Harness::new();
    let mut charge = spec("charge", &[]);
    charge.retry = retry(1, 1_000);
    charge.compensation = Some(CompensationSpec {
        retry: None,
        timeouts: None,
        priority: None,
        key: key("refund"),
        capabilities: caps(&["work"]),
        input: json!({"amount": 10}),
    });
    let wf = h.submit(vec![charge, spec("ship", &["charge"])]).await;
    let agent = h.agent("worker", &["work"], 1).await;

    let t = h.claim_only(agent, wf.id("charge")).await;
    let t = h.start(&t).await;
    let t = h.fail(&t, "card_declined", true).await;
    assert!(matches!(t.state, State::Failed { retry_at: None, .. }));
    assert!(h.by_key(wf.id, "refund").await.is_none(), "created in tick");

    h.tick().await;
    let refund = h
        .by_key(wf.id, "refund")
        .await
        .expect("the compensation task exists");
    assert_eq!(refund.workflow, wf.id);
    assert_eq!(refund.kind(), StateKind::Pending);
    assert_eq!(refund.spec.capabilities, caps(&["work"]));
    assert_eq!(refund.spec.input["compensates"], json!("charge"));
    assert_eq!(refund.spec.input["task"], json!(wf.id("charge")));
    assert_eq!(refund.spec.input["input"], json!({"amount": 10}));
    assert_eq!(refund.spec.input["error"]["kind"], json!("card_declined"));
    assert_eq!(
        refund.spec.input["errors"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        refund.spec.priority, 0,
        "the failed task's priority when unset"
    );
    assert_eq!(
        refund.spec.timeouts,
        baton_core::TaskSpec::new("any").timeouts,
        "default deadlines when unset"
    );
    assert_eq!(h.task(wf.id("ship")).await.state, upstream("charge"));
    assert_eq!(h.counts(Some(wf.id)).await.total(), 3);

    h.tick().await;
    h.advance(3_600_000);
    h.tick().await;
    assert_eq!(
        h.counts(Some(wf.id)).await.total(),
        3,
        "only one compensation"
    );
    let refunds = h
        .engine
        .store()
        .tasks(baton_store::TaskFilter {
            workflow: Some(wf.id),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.spec.key.0 == "refund")
        .count();
    assert_eq!(refunds, 1);

    // The compensation runs like any task.
    h.run(agent, refund.id).await;
    assert_eq!(h.state(refund.id).await, StateKind::Completed);
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_task_with_compensation_spawns_it_too() {
    let h = Harness::new();
    let mut book = spec("book", &[]);
    book.input = json!({"room": 12});
    book.priority = 2;
    // A compensation with settings of its own.
    let undo_retry = retry(5, 250);
    let undo_timeouts = baton_core::Timeouts {
        start_ms: Some(2_000),
        start_to_close_ms: Some(120_000),
        ..Default::default()
    };
    book.compensation = Some(CompensationSpec {
        retry: Some(undo_retry.clone()),
        timeouts: Some(undo_timeouts.clone()),
        priority: Some(9),
        key: key("unbook"),
        capabilities: caps(&["work"]),
        input: json!(null),
    });
    let wf = h.submit(vec![book]).await;
    h.engine
        .cancel_task(wf.id("book"), "ops".into(), "changed plans".into())
        .await
        .unwrap();
    h.tick().await;
    let unbook = h.by_key(wf.id, "unbook").await.expect("compensation");
    assert_eq!(unbook.kind(), StateKind::Pending);
    assert_eq!(
        unbook.spec.input["error"],
        json!(null),
        "cancelled, not failed"
    );
    assert_eq!(unbook.spec.input["errors"], json!([]));
    assert_eq!(unbook.spec.input["task_input"], json!({"room": 12}));
    assert_eq!(unbook.spec.retry, undo_retry);
    assert_eq!(unbook.spec.timeouts, undo_timeouts);
    assert_eq!(
        unbook.spec.priority, 9,
        "its own priority, not the task's 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decomposition_makes_dependents_wait_for_the_sub_tasks() {
    let h = Harness::new();
    let wf = h
        .submit(vec![spec("plan", &[]), spec("write", &["plan"])])
        .await;
    let agent = h.agent("planner", &["work"], 4).await;
    let plan_id = wf.id("plan");

    // The first lease is given back; the second one is current.
    let first = h.claim_only(agent, plan_id).await;
    let (_, old_token) = lease(&first);
    h.report(
        plan_id,
        baton_core::Event::AssignmentReleased {
            agent,
            token: old_token,
        },
    )
    .await
    .unwrap();
    let plan = h.claim_only(agent, plan_id).await;
    let plan = h.start(&plan).await;
    let (_, token) = lease(&plan);
    assert_eq!(token, FencingToken(2));

    let before_counts = h.counts(Some(wf.id)).await;
    let write_before = h.task(wf.id("write")).await;
    let (wf_id, write_id) = (wf.id, wf.id("write"));
    let nothing_written = |label: &'static str| {
        let h = &h;
        let write_before = write_before.clone();
        async move {
            assert_eq!(h.counts(Some(wf_id)).await, before_counts, "{label}");
            assert_eq!(h.task(write_id).await, write_before, "{label}");
            assert_eq!(h.history(write_id).await.len(), 1, "{label}");
        }
    };

    // A stale token is refused.
    let err = h
        .engine
        .add_subtasks(plan_id, agent, old_token, vec![spec("research-1", &[])])
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Rejected(_)), "{err:?}");
    nothing_written("stale token").await;
    // So is another agent.
    let err = h
        .engine
        .add_subtasks(plan_id, agent_id(7), token, vec![spec("research-1", &[])])
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Rejected(_)), "{err:?}");
    // A sub-task the dependent would wait for, that waits for the dependent: a cycle.
    let err = h
        .engine
        .add_subtasks(
            plan_id,
            agent,
            token,
            vec![spec("research-1", &[]), spec("loop", &["write"])],
        )
        .await
        .unwrap_err();
    match err {
        EngineError::Graph(DagError::Cycle(keys)) => {
            assert!(
                keys.contains(&key("write")) && keys.contains(&key("loop")),
                "{keys:?}"
            );
        }
        other => panic!("expected a cycle, got {other:?}"),
    }
    nothing_written("cycle").await;
    // A sub-task with a key already used.
    let err = h
        .engine
        .add_subtasks(plan_id, agent, token, vec![spec("write", &[])])
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Graph(DagError::DuplicateTask(ref k)) if *k == key("write")),
        "{err:?}"
    );
    nothing_written("duplicate").await;
    // An invalid sub-task is named by its index.
    let mut bad = spec("bad", &[]);
    bad.retry.max_attempts = 0;
    let err = h
        .engine
        .add_subtasks(plan_id, agent, token, vec![spec("ok", &[]), bad])
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Invalid { ref field, .. } if field == "tasks[1].retry.max_attempts"),
        "{err:?}"
    );
    nothing_written("invalid").await;

    // The agent decomposes its task: research-1 can start at once, research-2 after plan.
    let added = h
        .engine
        .add_subtasks(
            plan_id,
            agent,
            token,
            vec![spec("research-1", &[]), spec("research-2", &["plan"])],
        )
        .await
        .unwrap();
    let keys: Vec<&str> = added.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["research-1", "research-2"]);
    let r1 = added[0].1;
    let r2 = added[1].1;
    assert_eq!(h.state(r1).await, StateKind::Pending);
    assert_eq!(h.state(r2).await, StateKind::Blocked);
    let write = h.task(wf.id("write")).await;
    assert_eq!(write.kind(), StateKind::Blocked);
    assert_eq!(
        write.dependencies,
        [key("plan"), key("research-1"), key("research-2")]
    );
    assert_eq!(
        h.engine.wait_reason(&write).await.unwrap(),
        Some(WaitReason::Dependencies {
            open: vec![
                OpenDependency {
                    key: key("plan"),
                    id: plan_id,
                    state: StateKind::Executing
                },
                OpenDependency {
                    key: key("research-1"),
                    id: r1,
                    state: StateKind::Pending
                },
                OpenDependency {
                    key: key("research-2"),
                    id: r2,
                    state: StateKind::Blocked
                },
            ]
        })
    );
    // Adding the same sub-task again is a duplicate key.
    let err = h
        .engine
        .add_subtasks(plan_id, agent, token, vec![spec("research-1", &[])])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        EngineError::Graph(DagError::DuplicateTask(_))
    ));

    // research-1 completes: write still waits.
    h.run(agent, r1).await;
    h.tick().await;
    assert_eq!(h.state(wf.id("write")).await, StateKind::Blocked);
    // plan completes: research-2 is released, write still waits.
    h.succeed(&plan).await;
    h.tick().await;
    assert_eq!(h.state(r2).await, StateKind::Pending);
    assert_eq!(h.state(wf.id("write")).await, StateKind::Blocked);
    let write = h.task(wf.id("write")).await;
    assert_eq!(
        h.engine.wait_reason(&write).await.unwrap(),
        Some(WaitReason::Dependencies {
            open: vec![OpenDependency {
                key: key("research-2"),
                id: r2,
                state: StateKind::Pending
            }]
        })
    );
    // Adding sub-tasks after the task completed is refused.
    let err = h
        .engine
        .add_subtasks(plan_id, agent, token, vec![spec("late", &[])])
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Rejected(_)));
    // research-2 completes: write is released.
    h.run(agent, r2).await;
    h.tick().await;
    let write = h.task(wf.id("write")).await;
    assert_eq!(write.kind(), StateKind::Pending);
    h.run(agent, write.id).await;
    let counts = h.counts(Some(wf.id)).await;
    assert_eq!(counts.get(StateKind::Completed), 4);
    assert_eq!(counts.total(), 4);
    assert_eq!(
        h.events(wf.id("write")).await,
        [
            EventKind::Submitted,
            EventKind::DependencyAdded,
            EventKind::DependencyAdded,
            EventKind::DependenciesMet,
            EventKind::AgentAssigned,
            EventKind::ExecutionStarted,
            EventKind::ExecutionSucceeded,
        ]
    );
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_final_failure_revives_its_cancelled_dependents() {
    let h = Harness::new();
    let mut a = spec("a", &[]);
    a.retry = retry(2, 100);
    let mut x = spec("x", &[]);
    x.priority = 1;
    let wf = h
        .submit(vec![
            a,
            TaskSpec {
                priority: 1,
                ..spec("b", &["a"])
            },
            spec("c", &["b"]),
            x,
            spec("y", &["a", "x"]),
        ])
        .await;
    let agent = h.agent("worker", &["work"], 1).await;
    h.run(agent, wf.id("x")).await;

    for attempt in 1..=2 {
        let t = h.claim_only(agent, wf.id("a")).await;
        assert_eq!(t.attempt, attempt);
        let t = h.start(&t).await;
        h.fail(&t, "broken", true).await;
        h.advance(100);
        h.tick().await;
    }
    let failed = h.task(wf.id("a")).await;
    assert!(matches!(failed.state, State::Failed { retry_at: None, .. }));
    assert_eq!(h.task(wf.id("b")).await.state, upstream("a"));
    assert_eq!(h.task(wf.id("c")).await.state, upstream("b"));
    assert_eq!(h.task(wf.id("y")).await.state, upstream("a"));

    // Retrying a task that is not failed for good is refused.
    let err = h
        .engine
        .retry_task(wf.id("x"), "ops".into())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Rejected(_)));

    let a = h.engine.retry_task(wf.id("a"), "ops".into()).await.unwrap();
    assert_eq!(a.kind(), StateKind::Pending);
    assert_eq!(a.attempt, 3);
    assert_eq!(a.attempts_allowed, 4, "a fresh budget of max_attempts");
    h.tick().await;
    for k in ["b", "c", "y"] {
        assert_eq!(h.state(wf.id(k)).await, StateKind::Blocked, "{k} revived");
    }

    // The fresh attempts retry as usual.
    let t = h.claim_only(agent, wf.id("a")).await;
    let t = h.start(&t).await;
    let t = h.fail(&t, "broken", true).await;
    assert!(matches!(
        t.state,
        State::Failed {
            retry_at: Some(_),
            ..
        }
    ));
    h.advance(400);
    h.tick().await;
    for k in ["b", "c", "y"] {
        assert_eq!(h.state(wf.id(k)).await, StateKind::Blocked, "{k}");
    }

    h.run(agent, wf.id("a")).await;
    h.tick().await;
    assert_eq!(h.state(wf.id("b")).await, StateKind::Pending);
    assert_eq!(
        h.state(wf.id("y")).await,
        StateKind::Pending,
        "x was already done"
    );
    assert_eq!(h.state(wf.id("c")).await, StateKind::Blocked);
    // b (by its priority), then y and c in either order.
    h.run(agent, wf.id("b")).await;
    h.tick().await;
    for _ in 0..2 {
        let t = h.claim(agent, 1).await.pop().expect("y or c");
        assert!([wf.id("y"), wf.id("c")].contains(&t.id));
        let t = h.start(&t).await;
        h.succeed(&t).await;
    }
    let counts = h.counts(Some(wf.id)).await;
    assert_eq!(counts.get(StateKind::Completed), 5);
    assert_eq!(counts.total(), 5);
    assert_eq!(
        h.events(wf.id("c")).await,
        [
            EventKind::Submitted,
            EventKind::UpstreamFailed,
            EventKind::UpstreamRevived,
            EventKind::DependenciesMet,
            EventKind::AgentAssigned,
            EventKind::ExecutionStarted,
            EventKind::ExecutionSucceeded,
        ]
    );
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_refused_and_change_nothing() {
    let h = Harness::new();
    let submit = |specs: Vec<baton_core::TaskSpec>| h.engine.submit_workflow(request(specs));

    match submit(vec![
        spec("a", &["c"]),
        spec("b", &["a"]),
        spec("c", &["b"]),
    ])
    .await
    {
        Err(EngineError::Graph(DagError::Cycle(keys))) => {
            assert_eq!(keys.len(), 4, "a closed path: {keys:?}");
            assert_eq!(keys.first(), keys.last());
            for k in ["a", "b", "c"] {
                assert!(keys.contains(&key(k)), "{keys:?}");
            }
        }
        other => panic!("expected a cycle, got {other:?}"),
    }
    match submit(vec![spec("a", &[]), spec("b", &["ghost"])]).await {
        Err(EngineError::Graph(DagError::UnknownDependency { task, dependency })) => {
            assert_eq!((task, dependency), (key("b"), key("ghost")));
        }
        other => panic!("expected an unknown dependency, got {other:?}"),
    }
    match submit(vec![spec("a", &[]), spec("a", &[])]).await {
        Err(EngineError::Graph(DagError::DuplicateTask(k))) => assert_eq!(k, key("a")),
        other => panic!("expected a duplicate task, got {other:?}"),
    }
    let mut bad = spec("b", &[]);
    bad.retry.max_attempts = 0;
    match submit(vec![spec("a", &[]), bad]).await {
        Err(EngineError::Invalid { field, expected }) => {
            assert_eq!(field, "tasks[1].retry.max_attempts");
            assert!(expected.contains("between 1 and"), "{expected}");
        }
        other => panic!("expected an invalid field, got {other:?}"),
    }
    let mut bad = spec("a", &[]);
    bad.timeouts.heartbeat_ms = Some(0);
    match submit(vec![bad]).await {
        Err(EngineError::Invalid { field, .. }) => {
            assert_eq!(field, "tasks[0].timeouts.heartbeat_ms")
        }
        other => panic!("expected an invalid field, got {other:?}"),
    }
    match submit(vec![spec("a", &["a"])]).await {
        Err(EngineError::Invalid { field, .. }) => assert_eq!(field, "tasks[0].depends_on"),
        other => panic!("expected an invalid field, got {other:?}"),
    }
    let mut clash = spec("a", &[]);
    clash.compensation = Some(CompensationSpec {
        retry: None,
        timeouts: None,
        priority: None,
        key: key("b"),
        capabilities: Default::default(),
        input: json!(null),
    });
    match submit(vec![clash, spec("b", &[])]).await {
        Err(EngineError::Invalid { field, .. }) => assert_eq!(field, "tasks[0].compensation.key"),
        other => panic!("expected an invalid field, got {other:?}"),
    }
    match submit(vec![]).await {
        Err(EngineError::Invalid { field, .. }) => assert_eq!(field, "tasks"),
        other => panic!("expected an invalid field, got {other:?}"),
    }
    let mut req = request(vec![spec("a", &[])]);
    req.idempotency_key = Some(String::new());
    match h.engine.submit_workflow(req).await {
        Err(EngineError::Invalid { field, .. }) => assert_eq!(field, "idempotency_key"),
        other => panic!("expected an invalid field, got {other:?}"),
    }

    assert_eq!(h.counts(None).await.total(), 0, "nothing was written");
    let all = h
        .engine
        .store()
        .tasks(baton_store::TaskFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(all.is_empty());
    h.tick().await;
    assert_eq!(h.counts(None).await.total(), 0);
}

/// Sub-tasks that could never run, or that would take a compensation's key, are refused and
/// nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decomposition_refuses_sub_tasks_that_could_never_run_or_hide_a_compensation() {
    let h = Harness::new();
    let mut dead = spec("dead", &[]);
    dead.retry = retry(1, 100);
    dead.priority = 2;
    dead.compensation = Some(CompensationSpec {
        retry: None,
        timeouts: None,
        priority: None,
        key: key("undo-dead"),
        capabilities: caps(&["work"]),
        input: json!(null),
    });
    let mut gone = spec("gone", &[]);
    gone.priority = 1;
    let mut done = spec("done", &[]);
    done.priority = 3;
    let wf = h
        .submit(vec![
            done,
            dead,
            gone,
            spec("plan", &[]),
            spec("write", &["plan"]),
        ])
        .await;
    let agent = h.agent("worker", &["work"], 4).await;
    h.run(agent, wf.id("done")).await;
    let d = h.claim_only(agent, wf.id("dead")).await;
    let d = h.start(&d).await;
    h.fail(&d, "broken", false).await;
    h.engine
        .cancel_task(wf.id("gone"), "ops".into(), "no".into())
        .await
        .unwrap();
    let plan = h.claim_only(agent, wf.id("plan")).await;
    let plan = h.start(&plan).await;
    let (_, token) = lease(&plan);
    let counts = h.counts(Some(wf.id)).await;
    let write_history = h.history(wf.id("write")).await.len();

    let with_comp = |k: &str, comp: &str| {
        let mut s = spec(k, &[]);
        s.compensation = Some(CompensationSpec {
            retry: None,
            timeouts: None,
            priority: None,
            key: key(comp),
            capabilities: caps(&["work"]),
            input: json!(null),
        });
        s
    };
    let cases: Vec<(Vec<baton_core::TaskSpec>, &str)> = vec![
        (
            vec![spec("ok", &[]), spec("sub", &["dead"])],
            "tasks[1].depends_on",
        ),
        (vec![spec("sub", &["gone"])], "tasks[0].depends_on"),
        (vec![spec("undo-dead", &[])], "tasks[0].key"),
        (vec![with_comp("sub", "write")], "tasks[0].compensation.key"),
        (
            vec![with_comp("sub", "undo-dead")],
            "tasks[0].compensation.key",
        ),
        (
            vec![with_comp("sub", "sub-2"), spec("sub-2", &[])],
            "tasks[0].compensation.key",
        ),
        (
            vec![with_comp("sub", "undo"), with_comp("sub-2", "undo")],
            "tasks[1].compensation.key",
        ),
    ];
    for (specs, expected_field) in cases {
        let err = h
            .engine
            .add_subtasks(plan.id, agent, token, specs)
            .await
            .unwrap_err();
        match err {
            EngineError::Invalid { field, .. } => assert_eq!(field, expected_field),
            other => panic!("expected an invalid {expected_field}, got {other:?}"),
        }
        assert_eq!(h.counts(Some(wf.id)).await, counts, "nothing written");
        assert_eq!(h.history(wf.id("write")).await.len(), write_history);
    }

    // The compensation of `dead` still gets its key.
    h.tick().await;
    assert!(h.by_key(wf.id, "undo-dead").await.is_some());
    // A sub-task waiting for a completed task is ready at once.
    let added = h
        .engine
        .add_subtasks(plan.id, agent, token, vec![spec("after-done", &["done"])])
        .await
        .unwrap();
    assert_eq!(h.state(added[0].1).await, StateKind::Pending);
    let write = h.task(wf.id("write")).await;
    assert_eq!(
        h.engine.wait_reason(&write).await.unwrap(),
        Some(WaitReason::Dependencies {
            open: vec![
                OpenDependency {
                    key: key("after-done"),
                    id: added[0].1,
                    state: StateKind::Pending
                },
                OpenDependency {
                    key: key("plan"),
                    id: plan.id,
                    state: StateKind::Executing
                },
            ]
        })
    );
    h.assert_replays(wf.id).await;
}

/// A revived task that still waits for another dependency which failed for good is cancelled
/// again, naming that one, instead of staying blocked for ever; retrying that one brings it
/// back too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revived_dependent_with_another_failed_upstream_is_cancelled_again() {
    let h = Harness::new();
    let mut a = spec("a", &[]);
    a.priority = 2;
    let mut b = spec("b", &[]);
    b.priority = 1;
    let wf = h
        .submit(vec![a, b, spec("y", &["a", "b"]), spec("z", &["y"])])
        .await;
    let agent = h.agent("worker", &["work"], 1).await;
    for k in ["a", "b"] {
        let t = h.claim_only(agent, wf.id(k)).await;
        let t = h.start(&t).await;
        h.fail(&t, "broken", false).await;
        h.tick().await;
    }
    assert_eq!(h.task(wf.id("y")).await.state, upstream("a"));
    assert_eq!(h.task(wf.id("z")).await.state, upstream("y"));

    h.engine.retry_task(wf.id("a"), "ops".into()).await.unwrap();
    h.tick().await;
    assert_eq!(
        h.task(wf.id("y")).await.state,
        upstream("b"),
        "b is still failed"
    );
    assert_eq!(h.task(wf.id("z")).await.state, upstream("y"));
    h.run(agent, wf.id("a")).await;
    h.tick().await;
    assert_eq!(h.task(wf.id("y")).await.state, upstream("b"));

    h.engine.retry_task(wf.id("b"), "ops".into()).await.unwrap();
    h.tick().await;
    assert_eq!(h.state(wf.id("y")).await, StateKind::Blocked);
    assert_eq!(h.state(wf.id("z")).await, StateKind::Blocked);
    let y = h.task(wf.id("y")).await;
    assert_eq!(
        h.engine.wait_reason(&y).await.unwrap(),
        Some(WaitReason::Dependencies {
            open: vec![OpenDependency {
                key: key("b"),
                id: wf.id("b"),
                state: StateKind::Pending
            }]
        })
    );
    h.run(agent, wf.id("b")).await;
    h.tick().await;
    h.run(agent, wf.id("y")).await;
    h.tick().await;
    h.run(agent, wf.id("z")).await;
    let counts = h.counts(Some(wf.id)).await;
    assert_eq!(counts.get(StateKind::Completed), 4);
    assert_eq!(counts.total(), 4);
    h.assert_replays(wf.id).await;
}

/// Sub-tasks can be added while dependents of the parent are cancelled: each records the new
/// dependency and stays cancelled. An operator's cancellation stands; a dependent cancelled
/// because another dependency failed comes back when that one is retried, and then waits for
/// the sub-tasks too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_tasks_can_be_added_while_a_dependent_is_cancelled() {
    let h = Harness::new();
    let mut flaky = spec("flaky", &[]);
    flaky.retry = retry(1, 100);
    flaky.priority = 10;
    let wf = h
        .submit(vec![
            spec("plan", &[]),
            flaky,
            spec("report", &["plan", "flaky"]),
            spec("notify", &["plan"]),
        ])
        .await;
    let agent = h.agent("worker", &["work"], 4).await;
    let parter = h.agent("parter", &["parts"], 1).await;

    let f = h.claim_only(agent, wf.id("flaky")).await;
    let f = h.start(&f).await;
    h.fail(&f, "fatal", false).await;
    h.tick().await;
    assert_eq!(h.task(wf.id("report")).await.state, upstream("flaky"));
    h.engine
        .cancel_task(wf.id("notify"), "ops".into(), "not needed".into())
        .await
        .unwrap();

    let plan = h.claim_only(agent, wf.id("plan")).await;
    let plan = h.start(&plan).await;
    let (_, token) = lease(&plan);
    let mut part = spec("part", &[]);
    part.capabilities = caps(&["parts"]);
    let added = h
        .engine
        .add_subtasks(wf.id("plan"), agent, token, vec![part])
        .await
        .expect("cancelled dependents do not stop a decomposition");
    let part = added[0].1;
    h.succeed(&plan).await;
    h.tick().await;

    h.engine
        .retry_task(wf.id("flaky"), "ops".into())
        .await
        .unwrap();
    h.tick().await;
    h.run(agent, wf.id("flaky")).await;
    h.tick().await;
    let report = h.task(wf.id("report")).await;
    assert_eq!(report.kind(), StateKind::Blocked, "it waits for `part`");
    assert_eq!(
        report.dependencies,
        [key("plan"), key("flaky"), key("part")]
    );

    h.run(parter, part).await;
    h.tick().await;
    assert_eq!(h.state(wf.id("report")).await, StateKind::Pending);
    h.run(agent, wf.id("report")).await;
    assert_eq!(h.state(wf.id("notify")).await, StateKind::Cancelled);
    assert_eq!(
        h.events(wf.id("notify")).await,
        [
            EventKind::Submitted,
            EventKind::CancelRequested,
            EventKind::DependencyAdded
        ],
        "an operator's cancellation stands; the sub-task is recorded on it"
    );
    assert!(matches!(
        h.task(wf.id("notify")).await.state,
        State::Cancelled {
            reason: CancelReason::Operator { .. }
        }
    ));
    h.assert_replays(wf.id).await;
    let report = baton_engine::check::check_store(h.engine.store(), |_| {})
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.violations);
}
