//! Scenario tests of what survives and what holds under load: idempotent resubmission, a
//! restart in the middle of a workflow, many agents claiming at once, and the background
//! loops doing the same job as `tick`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use baton_core::{EventKind, StateKind, TaskId, TaskSpec};
use baton_engine::EngineError;
use baton_store::{Store, TaskFilter};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_with_the_same_idempotency_key_returns_the_first_workflow() {
    let h = Harness::new();
    let mut req = request(vec![spec("a", &[]), spec("b", &["a"])]);
    req.idempotency_key = Some("order-42".into());

    let first = h.engine.submit_workflow(req.clone()).await.unwrap();
    assert!(first.created);
    assert_eq!(first.tasks.len(), 2);
    let counts = h.counts(None).await;
    assert_eq!(counts.total(), 2);

    // Even after the workflow moved on.
    let agent = h.agent("worker", &["work"], 1).await;
    let wf = flow(first.clone());
    h.run(agent, wf.id("a")).await;
    h.tick().await;
    let counts = h.counts(None).await;

    let second = h.engine.submit_workflow(req.clone()).await.unwrap();
    assert!(!second.created);
    assert_eq!(second.workflow, first.workflow);
    assert_eq!(second.tasks, first.tasks, "same ids, same order");
    assert_eq!(h.counts(None).await, counts, "nothing written");
    assert_eq!(h.history(wf.id("a")).await.len(), 4);

    // The same key for another request is refused.
    let mut other = req.clone();
    other.tasks[0].input = json!({"changed": true});
    match h.engine.submit_workflow(other).await {
        Err(EngineError::IdempotencyMismatch { key }) => assert_eq!(key, "order-42"),
        r => panic!("expected an idempotency mismatch, got {r:?}"),
    }
    let mut renamed = req.clone();
    renamed.name = "another name".into();
    assert!(matches!(
        h.engine.submit_workflow(renamed).await,
        Err(EngineError::IdempotencyMismatch { .. })
    ));
    assert_eq!(h.counts(None).await, counts, "nothing written");

    // Another key is another workflow; so is no key at all.
    let mut fresh = req.clone();
    fresh.idempotency_key = Some("order-43".into());
    let third = h.engine.submit_workflow(fresh).await.unwrap();
    assert!(third.created);
    assert_ne!(third.workflow, first.workflow);
    let mut keyless = req;
    keyless.idempotency_key = None;
    let fourth = h.engine.submit_workflow(keyless.clone()).await.unwrap();
    let fifth = h.engine.submit_workflow(keyless).await.unwrap();
    assert!(fourth.created && fifth.created);
    assert_ne!(fourth.workflow, fifth.workflow);
    assert_eq!(h.counts(None).await.total(), counts.total() + 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_workflow_loses_nothing() {
    let h = Harness::new();
    let mut a = spec("a", &[]);
    a.retry = retry(3, 500);
    // b's input is taken from a's result: the engine releases it, through the outbox.
    let mut b = spec("b", &["a"]);
    b.input = serde_json::json!({"from_a": {"$from": "a"}});
    let wf = h
        .submit(vec![a, b, spec("c", &["a"]), spec("d", &["b", "c"])])
        .await;
    let agent = h.agent("worker", &["work"], 2).await;

    // a fails once, is retried, completes; c is released in the same commit; the process
    // dies before b is released (its release is in the outbox).
    let t = h.claim_only(agent, wf.id("a")).await;
    let t = h.start(&t).await;
    h.fail(&t, "flaky", true).await;
    h.advance(500);
    h.tick().await;
    h.run(agent, wf.id("a")).await;
    assert_eq!(h.state(wf.id("b")).await, StateKind::Blocked);
    assert_eq!(h.state(wf.id("c")).await, StateKind::Pending);

    let h = h.restart();
    assert_eq!(h.state(wf.id("a")).await, StateKind::Completed);
    assert_eq!(h.state(wf.id("b")).await, StateKind::Blocked);
    h.tick().await;
    assert_eq!(
        h.state(wf.id("b")).await,
        StateKind::Pending,
        "released after restart"
    );
    assert_eq!(h.state(wf.id("c")).await, StateKind::Pending);

    // b and c are running when the process dies again; c has just completed.
    let mut running = h.claim(agent, 2).await;
    running.sort_by(|x, y| x.spec.key.cmp(&y.spec.key));
    let b = h.start(&running[0]).await;
    let c = h.start(&running[1]).await;
    h.succeed(&c).await;

    let h = h.restart();
    assert_eq!(
        h.state(wf.id("b")).await,
        StateKind::Executing,
        "the lease survives"
    );
    assert_eq!(h.engine.agent(agent).await.unwrap().name, "worker");
    // The agent carries on under its lease with the same token.
    h.succeed(&b).await;
    h.tick().await;
    h.run(agent, wf.id("d")).await;
    h.tick().await;

    let counts = h.counts(Some(wf.id)).await;
    assert_eq!(counts.get(StateKind::Completed), 4);
    assert_eq!(counts.total(), 4);
    assert_eq!(h.counts(None).await, counts);
    h.assert_replays(wf.id).await;
    let events = h.events(wf.id("a")).await;
    assert_eq!(count(&events, EventKind::Retry), 1);
    assert_eq!(count(&events, EventKind::ExecutionSucceeded), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_agents_claiming_at_once_complete_every_task_exactly_once() {
    const TASKS: usize = 1_000;
    const AGENTS: usize = 4;
    const BATCH: usize = 16;
    let h = Harness::new();
    let specs: Vec<TaskSpec> = (0..TASKS).map(|i| spec(&format!("t{i}"), &[])).collect();
    let wf = h.submit(specs).await;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(
            h.agent(&format!("agent-{i}"), &["work"], BATCH as u32)
                .await,
        );
    }

    let workers: Vec<_> = agents
        .iter()
        .map(|&agent| {
            let engine = h.engine.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let batch = engine.claim(agent, BATCH, Duration::ZERO).await.unwrap();
                    if batch.is_empty() {
                        return done;
                    }
                    assert!(batch.len() <= BATCH);
                    // Report the whole batch concurrently, as a pool of workers would.
                    let reports: Vec<_> = batch
                        .into_iter()
                        .map(|t| {
                            let engine = engine.clone();
                            tokio::spawn(async move {
                                let t = engine
                                    .report(t.id, started(&t), Default::default())
                                    .await
                                    .unwrap();
                                engine
                                    .report(t.id, succeeded(&t), Default::default())
                                    .await
                                    .unwrap()
                            })
                        })
                        .collect();
                    for r in reports {
                        let t = r.await.unwrap();
                        assert_eq!(t.kind(), StateKind::Completed);
                        done.push(t.id);
                    }
                }
            })
        })
        .collect();
    let mut per_agent = Vec::new();
    let mut done: HashMap<TaskId, usize> = HashMap::new();
    for w in workers {
        let ids = w.await.unwrap();
        per_agent.push(ids.len());
        for id in ids {
            *done.entry(id).or_default() += 1;
        }
    }
    assert_eq!(done.len(), TASKS, "every task completed");
    assert!(done.values().all(|&n| n == 1), "each by one agent only");
    assert_eq!(per_agent.iter().sum::<usize>(), TASKS);

    let counts = h.counts(Some(wf.id)).await;
    assert_eq!(counts.get(StateKind::Completed), TASKS as u64);
    assert_eq!(counts.total(), TASKS as u64);
    assert_eq!(h.counts(None).await, counts);
    for id in wf.ids.values() {
        let events = h.events(*id).await;
        assert_eq!(
            events,
            [
                EventKind::Submitted,
                EventKind::AgentAssigned,
                EventKind::ExecutionStarted,
                EventKind::ExecutionSucceeded
            ],
            "task {id}"
        );
    }
    let mut after = None;
    let mut seen = 0;
    loop {
        let page = h
            .engine
            .store()
            .tasks(TaskFilter {
                workflow: Some(wf.id),
                state: Some(StateKind::Completed),
                after,
                limit: 300,
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        seen += page.len();
    }
    assert_eq!(seen, TASKS);
}

/// The watchdog and the effect runner, started in the background, do what `tick` does:
/// release dependents, requeue on a start timeout, reap dead agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_loops_do_the_work_of_tick() {
    let h = Harness::new();
    let mut b = spec("b", &["a"]);
    b.timeouts.start_ms = Some(5_000);
    let wf = h.submit(vec![spec("a", &[]), b]).await;
    let handles = h.engine.start();
    let agent = h.agent("worker", &["work"], 1).await;

    h.run(agent, wf.id("a")).await;
    eventually("b is released", || async {
        h.state(wf.id("b")).await == StateKind::Pending
    })
    .await;

    h.claim_only(agent, wf.id("b")).await;
    h.advance(5_000);
    eventually("b is taken back after its start timeout", || async {
        h.state(wf.id("b")).await == StateKind::Pending
    })
    .await;
    assert_eq!(
        h.events(wf.id("b")).await.last(),
        Some(&EventKind::TimeoutExpired)
    );

    let b = h.claim_only(agent, wf.id("b")).await;
    let _b = h.start(&b).await;
    h.advance(h.engine.config().agent_ttl_ms + 1);
    eventually("the dead agent's task fails", || async {
        h.state(wf.id("b")).await == StateKind::Failed
    })
    .await;
    assert_eq!(
        h.task(wf.id("b"))
            .await
            .errors
            .last()
            .map(|e| e.kind.clone()),
        Some(baton_core::AGENT_LOST.to_owned())
    );

    h.engine.shutdown();
    for handle in handles {
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("the loops stop at shutdown")
            .unwrap();
    }
    let err = h
        .engine
        .claim(agent, 1, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ShuttingDown));
}

/// Subscribers see each accepted transition after it is durable, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_every_transition() {
    let h = Harness::new();
    let mut events = h.engine.subscribe();
    let wf = h.submit(vec![spec("a", &[]), spec("b", &["a"])]).await;
    let agent = h.agent("worker", &["work"], 1).await;
    h.run(agent, wf.id("a")).await;
    h.tick().await;

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push((e.key.0.clone(), e.event, e.to));
    }
    let a: Vec<_> = seen.iter().filter(|(k, ..)| k == "a").cloned().collect();
    assert_eq!(
        a,
        [
            ("a".to_owned(), EventKind::Submitted, StateKind::Pending),
            (
                "a".to_owned(),
                EventKind::AgentAssigned,
                StateKind::Assigned
            ),
            (
                "a".to_owned(),
                EventKind::ExecutionStarted,
                StateKind::Executing
            ),
            (
                "a".to_owned(),
                EventKind::ExecutionSucceeded,
                StateKind::Completed
            ),
        ]
    );
    let b: Vec<_> = seen.iter().filter(|(k, ..)| k == "b").cloned().collect();
    assert_eq!(
        b,
        [
            ("b".to_owned(), EventKind::Submitted, StateKind::Blocked),
            (
                "b".to_owned(),
                EventKind::DependenciesMet,
                StateKind::Pending
            ),
        ]
    );
}
