//! `check_store`: clean after real work, and every kind of damage is reported.

mod common;

use baton_core::{CompensationSpec, StateKind, TaskSpec};
use baton_engine::check::check_store;
use baton_store::Store;
use common::*;
use serde_json::json;

/// A workflow that exercises retries, a final failure with compensation, upstream
/// cancellation and decomposition-free success.
async fn busy_store() -> (Harness, Flow) {
    let h = Harness::new();
    let mut risky = spec("risky", &[]);
    risky.retry = retry(2, 100);
    risky.compensation = Some(CompensationSpec {
        retry: None,
        timeouts: None,
        priority: None,
        key: key("undo-risky"),
        capabilities: caps(&["work"]),
        input: json!({}),
    });
    // `b` goes before `risky`, which was ready first, by its priority.
    let b = TaskSpec {
        priority: 1,
        ..spec("b", &["a"])
    };
    let flow = h
        .submit(vec![
            spec("a", &[]),
            b,
            risky,
            spec("after-risky", &["risky"]),
        ])
        .await;
    let agent = h.agent("worker", &["work"], 8).await;
    h.run(agent, flow.id("a")).await;
    h.tick().await;
    h.run(agent, flow.id("b")).await;
    for _ in 0..2 {
        let t = h.claim_only(agent, flow.id("risky")).await;
        let t = h.start(&t).await;
        h.fail(&t, "flaky", true).await;
        h.advance(1_000);
        h.tick().await;
    }
    let undo = h
        .by_key(flow.id, "undo-risky")
        .await
        .expect("compensation created");
    h.run(agent, undo.id).await;
    assert_eq!(h.state(flow.id("after-risky")).await, StateKind::Cancelled);
    (h, flow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_after_real_work_is_clean() {
    let (h, _) = busy_store().await;
    let mut seen = 0;
    let report = check_store(h.engine.store(), |n| seen = n).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.violations);
    assert_eq!(report.tasks, 5);
    assert_eq!(seen, 5);
    assert!(report.history_entries > 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_is_reported_task_by_task() {
    let (h, flow) = busy_store().await;
    let path = h.dir.path().join("baton.db");
    let undo = h.by_key(flow.id, "undo-risky").await.unwrap();
    let dir = h.dir;
    drop(h.engine);
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute(
            "DELETE FROM history WHERE task_id = ?1 AND seq = (SELECT max(seq) FROM history WHERE task_id = ?1)",
            [flow.id("b").0],
        )
        .unwrap();
        db.execute(
            "UPDATE state_counts SET n = n + 5 WHERE state = 'pending'",
            [],
        )
        .unwrap();
        db.execute(
            "UPDATE history SET at = 0 WHERE task_id = ?1 AND seq = 3",
            [flow.id("a").0],
        )
        .unwrap();
        db.execute("DELETE FROM tasks WHERE id = ?1", [undo.id.0])
            .unwrap();
        db.execute(
            "UPDATE state_counts SET n = n - 1 WHERE state = 'completed'",
            [],
        )
        .unwrap();
    }
    let store = baton_store::sqlite::SqliteStore::open(&path).unwrap();
    let report = check_store(&store, |_| {}).await.unwrap();
    let details: Vec<&str> = report
        .violations
        .iter()
        .map(|v| v.detail.as_str())
        .collect();
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.task == Some(flow.id("b")) && v.detail.contains("replaying the history")),
        "{details:#?}"
    );
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.task == Some(flow.id("risky"))
                && v.detail
                    .contains("compensation task `undo-risky` does not exist")),
        "{details:#?}"
    );
    assert!(
        details.iter().any(|d| d.starts_with("counts per state")),
        "{details:#?}"
    );
    // The deleted task's row left its workflow's counts behind (the store's were mended).
    assert!(
        report.violations.iter().any(|v| v.workflow == Some(flow.id)
            && v.detail.starts_with("the workflow's counts per state")),
        "{details:#?}"
    );
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.task == Some(flow.id("b")) && v.detail.contains("0 success reports")),
        "{details:#?}"
    );
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.task == Some(flow.id("a"))
                && v.detail
                    .contains("history goes back in time: entry 3 at 0ms follows entry 2")),
        "{details:#?}"
    );
    assert_eq!(report.violations.len(), 7, "{details:#?}");
    drop(dir);
}

/// The wall clock stepped back (an NTP correction) between a dependency's completion and its
/// dependent's release and run: every history still moves forward in time, and the dependent
/// is stamped after its dependency completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepping_back_never_makes_a_history_go_back() {
    let h = Harness::new();
    let flow = h.submit(vec![spec("a", &[]), spec("b", &["a"])]).await;
    let agent = h.agent("worker", &["work"], 2).await;
    h.advance(10_000);
    h.run(agent, flow.id("a")).await;
    let done = h.engine.store().task(flow.id("a")).await.unwrap().unwrap();
    h.set(baton_core::Timestamp(h.now().0 - 60_000));
    h.tick().await;
    h.run(agent, flow.id("b")).await;
    assert_eq!(h.state(flow.id("b")).await, StateKind::Completed);
    let history = h
        .engine
        .store()
        .history(flow.id("b"), 0, 100)
        .await
        .unwrap();
    assert!(
        history.windows(2).all(|w| w[0].at <= w[1].at),
        "{history:#?}"
    );
    let released = history
        .iter()
        .find(|e| e.event.kind() == baton_core::EventKind::DependenciesMet)
        .expect("released");
    assert!(
        released.at >= done.updated_at,
        "released before `a` completed"
    );
    let report = check_store(h.engine.store(), |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflows_usage_that_is_not_the_sum_of_its_tasks_is_reported() {
    let h = Harness::new();
    let flow = h.submit(vec![spec("a", &[])]).await;
    let agent = h.agent("worker", &["work"], 1).await;
    let running = h.start(&h.claim_only(agent, flow.id("a")).await).await;
    let (agent, token) = lease(&running);
    let units = |n: f64| -> baton_core::Usage {
        [("tokens".to_owned(), baton_core::Amount::of(n).unwrap())].into()
    };
    let beat = baton_core::Event::Heartbeat {
        agent,
        token,
        progress: None,
        usage: units(10.0),
    };
    h.report(running.id, beat).await.unwrap();
    let report = check_store(h.engine.store(), |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.violations);

    // A record that adds to the workflow what the task did not take in.
    let task = h.task(running.id).await;
    let beat = baton_core::Event::Heartbeat {
        agent,
        token,
        progress: None,
        usage: units(15.0),
    };
    let mut record =
        baton_store::TransitionRecord::apply(&task, beat, h.now().max(task.updated_at)).unwrap();
    record.usage_added = units(99.0);
    h.engine.store().apply(record).await.unwrap();
    let report = check_store(h.engine.store(), |_| {}).await.unwrap();
    assert_eq!(report.violations.len(), 1, "{:#?}", report.violations);
    assert_eq!(report.violations[0].workflow, Some(flow.id));
    assert!(
        report.violations[0]
            .detail
            .contains("not the sum of its tasks'"),
        "{:#?}",
        report.violations
    );
}

/// Tasks with big inputs, written through the store on each backend: every input is stored
/// once (in `task_specs`), and `check_store` replays every history exactly, a `submitted`
/// row written before that (the spec in its payload) included.
mod inputs_stored_once {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use baton_core::{
        AgentId, Capability, Event, FencingToken, LeaseId, Submission, TaskId, TaskSpec, Timestamp,
        WorkflowId,
    };
    use baton_engine::check::check_store;
    use baton_store::{NewTask, NewWorkflow, Store, SubmitBatch, TransitionRecord, WorkflowRef};
    use serde_json::json;
    use uuid::Uuid;

    const TASKS: usize = 6;

    /// Writes `TASKS` completed tasks whose inputs are about 100 KiB each; returns their ids.
    async fn write<S: Store>(store: &S) -> Vec<TaskId> {
        let now = Timestamp(1_700_000_000_000);
        let workflow = WorkflowId(Uuid::now_v7());
        let caps = BTreeSet::from([Capability("work".into())]);
        let agent = AgentId(Uuid::now_v7());
        let (mut new, mut records, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..TASKS {
            let mut spec = TaskSpec::new(format!("t{i}"));
            spec.capabilities = caps.clone();
            spec.input = json!({
                "i": i,
                "records": (0..2_000).map(|r| json!({"r": r, "text": "some words"})).collect::<Vec<_>>(),
            });
            let sub = Submission {
                task: TaskId(Uuid::now_v7()),
                workflow,
                spec: Arc::new(spec),
                completed: Vec::new(),
                seed: i as u64,
                input: None,
                unresolved: None,
            };
            ids.push(sub.task);
            let (created, t) = NewTask::submitted(sub, now).unwrap();
            let mut task = t.task;
            new.push(created);
            let token = FencingToken(task.fencing_token.0 + 1);
            for event in [
                Event::AgentAssigned {
                    agent,
                    capabilities: caps.clone(),
                    lease: LeaseId(Uuid::now_v7()),
                },
                Event::ExecutionStarted {
                    agent,
                    token,
                    by_claim: false,
                },
                Event::ExecutionSucceeded {
                    usage: Default::default(),
                    agent,
                    token,
                    result: Some(json!({"i": i})),
                },
            ] {
                let rec = TransitionRecord::apply(&task, event, now).unwrap();
                task = rec.task.clone();
                records.push(rec);
            }
        }
        store
            .submit(SubmitBatch {
                workflow: WorkflowRef::New(NewWorkflow {
                    id: workflow,
                    name: "big inputs".into(),
                    idempotency_key: None,
                    request_hash: String::new(),
                    created_at: now,
                    outputs: None,
                    labels: Default::default(),
                    budgets: Default::default(),
                }),
                tasks: new,
                edges: Vec::new(),
                transitions: Vec::new(),
            })
            .await
            .unwrap();
        for r in store.apply_all(records).await.unwrap() {
            r.unwrap();
        }
        ids
    }

    /// The `submitted` payload of a task as Baton wrote it before: the whole event.
    async fn old_payload<S: Store>(store: &S, id: TaskId) -> String {
        let history = store.history(id, 0, 1).await.unwrap();
        serde_json::to_string(&history[0].event).unwrap()
    }

    async fn check_clean<S: Store>(store: &S) {
        let report = check_store(store, |_| {}).await.unwrap();
        assert!(report.is_clean(), "{:#?}", report.violations);
        assert_eq!(report.tasks, TASKS as u64);
        assert_eq!(report.history_entries, 4 * TASKS as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.db");
        let store = baton_store::sqlite::SqliteStore::open(&path).unwrap();
        let ids = write(&store).await;
        check_clean(&store).await;
        let old = old_payload(&store, ids[0]).await;
        let db = rusqlite::Connection::open(&path).unwrap();
        let stored: Vec<(i64, i64)> = ids
            .iter()
            .map(|id| {
                db.query_row(
                    "SELECT length(h.payload), length(s.spec) FROM history h
                     JOIN task_specs s ON s.task_id = h.task_id WHERE h.task_id = ?1 AND h.seq = 1",
                    [id.0],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap()
            })
            .collect();
        assert!(
            stored
                .iter()
                .all(|&(history, spec)| history < 1_000 && spec > 50_000),
            "each input once, in task_specs: {stored:?}"
        );
        db.execute(
            "UPDATE history SET payload = ?2 WHERE task_id = ?1 AND seq = 1",
            rusqlite::params![ids[0].0, old],
        )
        .unwrap();
        check_clean(&store).await;
    }

    /// Drops the test's schema, with everything in it, when it goes (panicking or not).
    struct Schema {
        url: String,
        name: String,
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let (url, name) = (self.url.clone(), self.name.clone());
            // A runtime of its own: the test's may be shutting down.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .ok()?;
                    tokio::spawn(conn);
                    client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await
                        .ok()
                })
            })
            .join();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(url) = crate::common::require::postgres() else {
            return;
        };
        let schema = Schema {
            url: url.clone(),
            name: format!("baton_i_{}", Uuid::now_v7().simple()),
        };
        let store = baton_store::postgres::PgStore::open_with(
            &url,
            baton_store::postgres::PgOptions {
                schema: Some(schema.name.clone()),
                pool_size: 2,
            },
        )
        .await
        .expect("PostgreSQL is reachable (run .ci/postgres)");
        let (sql, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let ids = write(&store).await;
        check_clean(&store).await;
        let old = old_payload(&store, ids[0]).await;
        let history = format!("\"{}\".history", schema.name);
        let specs = format!("\"{}\".task_specs", schema.name);
        for id in &ids {
            let row = sql
                .query_one(
                    &format!(
                        "SELECT length(h.payload)::int8, length(s.spec)::int8 FROM {history} h
                         JOIN {specs} s ON s.task_id = h.task_id
                         WHERE h.task_id = $1 AND h.seq = 1"
                    ),
                    &[&id.0],
                )
                .await
                .unwrap();
            let (history, spec): (i64, i64) = (row.get(0), row.get(1));
            assert!(
                history < 1_000 && spec > 50_000,
                "each input once, in task_specs: {history} {spec}"
            );
        }
        let n = sql
            .execute(
                &format!("UPDATE {history} SET payload = $2 WHERE task_id = $1 AND seq = 1"),
                &[&ids[0].0, &old],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
        check_clean(&store).await;
    }
}
