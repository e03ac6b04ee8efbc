//! `check_store`: clean after real work, and every kind of damage is reported.

mod common;

use baton_core::{CompensationSpec, StateKind};
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
    let flow = h
        .submit(vec![
            spec("a", &[]),
            spec("b", &["a"]),
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
    assert_eq!(report.violations.len(), 6, "{details:#?}");
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
