//! Retention with the manual clock: exactly what finished before the cutoff goes, never live
//! work; agents holding a lease stay; a deletion cut short is finished by the next pass; what
//! only served live work is pruned without changing the order claims take tasks in.

mod common;

use std::sync::Arc;

use baton_core::{
    CatchUp, CompensationSpec, Overlap, ScheduleSpec, StateKind, TaskSpec, Timestamp,
    WorkflowTemplate,
};
use baton_engine::check::check_store;
use baton_engine::{
    Clock, Engine, EngineConfig, EngineError, GcOptions, ManualClock, Operator, SeededIds,
    GC_TASKS_PER_BATCH,
};
use baton_store::sqlite::SqliteStore;
use baton_store::{AuditFilter, GcBatch, Store};
use common::*;
use serde_json::json;

const DAY: u64 = 86_400_000;
const HOUR: u64 = 3_600_000;

fn config() -> EngineConfig {
    EngineConfig {
        retain_ms: DAY,
        agent_retention_ms: 7 * DAY,
        audit_retain_ms: 30 * DAY,
        artifact_unreferenced_grace_ms: HOUR,
        ..EngineConfig::default()
    }
}

fn op() -> Operator {
    Operator {
        by: "ops".into(),
        reason: "test".into(),
    }
}

/// A task needing capability `cap`.
fn task(key: &str, deps: &[&str], cap: &str) -> TaskSpec {
    TaskSpec {
        capabilities: caps(&[cap]),
        ..spec(key, deps)
    }
}

async fn collect(h: &Harness) -> baton_engine::GcReport {
    h.engine
        .collect(GcOptions::default())
        .await
        .expect("a pass")
}

async fn dry_run(h: &Harness) -> baton_engine::GcReport {
    h.engine
        .collect(GcOptions {
            dry_run: true,
            exclusive: false,
        })
        .await
        .expect("a dry run")
}

async fn exists(h: &Harness, wf: baton_core::WorkflowId) -> bool {
    match h.engine.workflow(wf).await {
        Ok(_) => true,
        Err(EngineError::WorkflowNotFound(_)) => false,
        Err(e) => panic!("{e}"),
    }
}

async fn assert_clean(h: &Harness) {
    let report = check_store(h.engine.store(), |_| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
}

async fn history_len(h: &Harness, wf: baton_core::WorkflowId) -> u64 {
    let mut n = 0;
    for t in h.workflow_tasks(wf).await {
        n += h.history(t.id).await.len() as u64;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_exactly_the_workflows_that_finished_before_the_cutoff() {
    let h = Harness::with_config(config());
    // Finished: a -> b, completed.
    let done = h
        .submit(vec![task("a", &[], "a"), task("b", &["a"], "a")])
        .await;
    let worker = h.agent("worker", &["a"], 1).await;
    h.run(worker, done.id("a")).await;
    h.tick().await;
    h.run(worker, done.id("b")).await;
    h.tick().await;
    // Failed for good, its compensation not yet created (its effect waits in the outbox).
    let mut f = task("f", &[], "f");
    f.retry = retry(1, 10);
    f.compensation = Some(CompensationSpec {
        key: "undo-f".into(),
        capabilities: caps(&["f"]),
        input: json!({}),
        retry: None,
        timeouts: None,
        priority: None,
    });
    let failing = h.submit(vec![f]).await;
    // Failed, a retry scheduled in ten days: not finished.
    let mut r = task("r", &[], "r");
    r.retry = retry(3, 10 * DAY);
    r.retry.max_backoff_ms = 10 * DAY;
    let retrying = h.submit(vec![r]).await;
    let flaky = h.agent("flaky", &["r"], 1).await;
    let claimed = h.claim_only(flaky, retrying.id("r")).await;
    let started = h.start(&claimed).await;
    h.fail(&started, "flaky", true).await;
    // Paused, and live (no agent can run it).
    let paused = h.submit(vec![task("p", &[], "p")]).await;
    h.engine
        .pause_task(paused.id("p"), op(), false)
        .await
        .unwrap();
    let live = h.submit(vec![task("l", &[], "nobody")]).await;
    // Two runs of a schedule: one of a tick it moved past, one of its next tick (it may fire
    // again after a crash: deleting it would let that submit the workflow anew).
    let schedule = h
        .engine
        .create_schedule(ScheduleSpec {
            name: "nightly".into(),
            cron: "0 0 0 * * *".into(),
            timezone: "UTC".into(),
            workflow: WorkflowTemplate {
                name: "nightly".into(),
                tasks: vec![task("s", &[], "s")],
                outputs: None,
                labels: Default::default(),
                budgets: Default::default(),
            },
            overlap: Overlap::Allow,
            catch_up: CatchUp::None,
        })
        .await
        .unwrap();
    let next = schedule.record.next_fire_at.0;
    let runner = h.agent("runner", &["s"], 1).await;
    let mut ticks = Vec::new();
    for tick in [next - DAY, next] {
        let receipt = h
            .engine
            .submit_workflow(baton_engine::WorkflowRequest {
                idempotency_key: Some(format!("schedule:nightly:{tick}")),
                ..request(vec![task("s", &[], "s")])
            })
            .await
            .unwrap();
        let run = flow(receipt);
        h.run(runner, run.id("s")).await;
        ticks.push(run);
    }
    h.tick().await;
    let finished_at = h.now();
    // Failed for good last, its compensation's effect left waiting in the outbox (no tick).
    let fixer = h.agent("fixer", &["f"], 1).await;
    let claimed = h.claim_only(fixer, failing.id("f")).await;
    let started = h.start(&claimed).await;
    h.fail(&started, "broken", false).await;

    // Not yet a day: nothing goes.
    h.advance(DAY - 1);
    let early = collect(&h).await;
    assert_eq!((early.workflows, early.tasks), (0, 0), "{early:?}");

    h.advance(DAY);
    let expected_history = history_len(&h, done.id).await + history_len(&h, ticks[0].id).await;
    let preview = dry_run(&h).await;
    assert!(preview.dry_run);
    assert_eq!(preview.kept_for_schedules, 1, "{preview:?}");
    let report = collect(&h).await;
    assert_eq!(
        report.workflows, 2,
        "`done` and the schedule's past tick: {report:?}"
    );
    assert_eq!(report.tasks, 3);
    assert_eq!(report.history, expected_history);
    assert_eq!(
        (report.oldest, report.newest),
        (Some(finished_at), Some(finished_at))
    );
    assert_eq!(report.kept_for_schedules, 1);
    assert_eq!(
        (
            preview.workflows,
            preview.tasks,
            preview.history,
            preview.signals
        ),
        (
            report.workflows,
            report.tasks,
            report.history,
            report.signals
        ),
        "the dry run said what would go"
    );
    assert!(!exists(&h, done.id).await && !exists(&h, ticks[0].id).await);
    assert!(h.by_key(done.id, "a").await.is_none());
    for wf in [failing.id, retrying.id, paused.id, live.id, ticks[1].id] {
        assert!(exists(&h, wf).await, "{wf} is kept");
    }
    // A pass run again finds nothing more.
    let again = collect(&h).await;
    assert_eq!((again.workflows, again.tasks), (0, 0), "{again:?}");

    // The compensation is created and done, the schedule moves past its tick: both go, a
    // day after they finished.
    h.tick().await;
    assert_clean(&h).await;
    let undo = h.by_key(failing.id, "undo-f").await.expect("compensation");
    h.run(fixer, undo.id).await;
    h.tick().await;
    h.advance(DAY + 1);
    let later = collect(&h).await;
    assert_eq!(later.workflows, 2, "{later:?}");
    assert!(!exists(&h, failing.id).await && !exists(&h, ticks[1].id).await);
    for wf in [retrying.id, paused.id, live.id] {
        assert!(exists(&h, wf).await, "{wf} is still kept");
    }
    assert_eq!(h.state(retrying.id("r")).await, StateKind::Failed);
    let counts = h.counts(None).await;
    assert_eq!(counts.total(), 3, "{counts:?}");
    assert_clean(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_of_zero_keeps_every_workflow() {
    let h = Harness::with_config(EngineConfig {
        retain_ms: 0,
        ..config()
    });
    let wf = h.submit(vec![task("x", &[], "x")]).await;
    h.engine
        .cancel_workflow(wf.id, "ops".into(), "done".into())
        .await
        .unwrap();
    h.tick().await;
    h.advance(365 * DAY);
    let report = collect(&h).await;
    assert_eq!(report.finished_before, None);
    assert_eq!(report.workflows, 0);
    assert!(exists(&h, wf.id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_agents_go_unless_they_hold_a_lease_and_old_audit_entries_go() {
    let h = Harness::with_config(config());
    let wf = h.submit(vec![task("held", &[], "x")]).await;
    let holder = h.agent("holder", &["x"], 1).await;
    h.claim_only(holder, wf.id("held")).await;
    let idle = h.agent("idle", &["y"], 1).await;
    h.engine
        .cancel_workflow(
            h.submit(vec![task("z", &[], "z")]).await.id,
            "ops".into(),
            "x".into(),
        )
        .await
        .unwrap();
    h.advance(7 * DAY + 1);
    let recent = h.agent("recent", &["y"], 1).await;
    let report = collect(&h).await;
    assert_eq!(report.agents, 1, "{report:?}");
    assert!(
        h.engine.agent(idle).await.is_err(),
        "silent, no lease: deleted"
    );
    assert!(h.engine.agent(holder).await.is_ok(), "it holds a lease");
    assert!(h.engine.agent(recent).await.is_ok());
    // The watchdog takes the dead holder's lease back; then it goes too.
    h.tick().await;
    assert_eq!(h.state(wf.id("held")).await, StateKind::Pending);
    assert_eq!(collect(&h).await.agents, 1);
    assert!(h.engine.agent(holder).await.is_err());
    // The audit entry of the cancellation outlives its workflow, until its own retention.
    let audit = |h: &Harness| {
        let engine = h.engine.clone();
        async move {
            engine
                .audit(AuditFilter {
                    limit: 10,
                    ..AuditFilter::default()
                })
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(audit(&h).await, 1);
    h.advance(23 * DAY);
    assert_eq!(collect(&h).await.audit, 1);
    assert_eq!(audit(&h).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_cut_short_is_finished_by_the_next_pass() {
    let n = 2 * GC_TASKS_PER_BATCH + 200;
    let h = Harness::with_config(config());
    let specs: Vec<TaskSpec> = (0..n).map(|i| task(&format!("t{i}"), &[], "x")).collect();
    let big = h.submit(specs).await;
    let small = h.submit(vec![task("keep", &[], "x")]).await;
    h.engine
        .cancel_workflow(big.id, "ops".into(), "stop".into())
        .await
        .unwrap();
    h.tick().await;
    h.advance(DAY + 1);
    // One batch, then the process dies.
    let cutoff = Timestamp(h.now().0 - DAY);
    let first = h
        .engine
        .store()
        .gc_workflows(GcBatch {
            mark: vec![big.id],
            finished_before: cutoff,
            now: h.now(),
            tasks_max: GC_TASKS_PER_BATCH,
        })
        .await
        .unwrap();
    assert_eq!((first.tasks, first.more), (GC_TASKS_PER_BATCH as u64, true));
    let h = h.restart();
    // Half deleted, it is gone for everyone: not shown, and no control reopens its tasks.
    assert!(!exists(&h, big.id).await);
    let left = h.workflow_tasks(big.id).await;
    assert_eq!(left.len(), n - GC_TASKS_PER_BATCH);
    let refused = h
        .engine
        .rerun(left[0].id, op(), None, false)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, EngineError::WorkflowNotFound(w) if w == big.id),
        "{refused:?}"
    );
    assert_clean(&h).await;
    let report = collect(&h).await;
    assert_eq!(report.workflows, 1);
    assert_eq!(report.tasks as usize, n - GC_TASKS_PER_BATCH);
    assert!(h.workflow_tasks(big.id).await.is_empty());
    assert!(exists(&h, small.id).await);
    assert_eq!(h.counts(None).await.total(), 1);
    assert_clean(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_go_once_no_task_refers_to_them_and_their_grace_passed() {
    let h = Harness::with_config(config());
    let put = |bytes: &'static [u8]| {
        let engine = h.engine.clone();
        async move {
            let mut upload = engine.artifact_upload(None, None).unwrap();
            upload.write(bytes).await.unwrap();
            upload.finish().await.unwrap().meta.artifact
        }
    };
    let only = put(b"only the finished workflow").await;
    let shared = put(b"shared with a live one").await;
    let reuploaded = put(b"uploaded again lately").await;
    let refer = |key: &str, cap: &str, artifacts: &[baton_core::ArtifactRef]| TaskSpec {
        input: json!(artifacts
            .iter()
            .map(|a| json!({"$artifact": a.to_string()}))
            .collect::<Vec<_>>()),
        ..task(key, &[], cap)
    };
    let finished = h
        .submit(vec![refer("f", "f", &[only, shared, reuploaded])])
        .await;
    let live = h.submit(vec![refer("l", "nobody", &[shared])]).await;
    h.engine
        .cancel_workflow(finished.id, "ops".into(), "done".into())
        .await
        .unwrap();
    h.tick().await;
    h.advance(2 * DAY);
    put(b"uploaded again lately").await;
    let report = collect(&h).await;
    assert_eq!(report.workflows, 1);
    assert_eq!(report.artifacts_released, 2, "{report:?}");
    assert_eq!(
        report.artifacts_deleted, 1,
        "the other was uploaded within the grace"
    );
    assert!(h.engine.artifact(only).await.is_err());
    assert!(
        h.engine.artifact(shared).await.is_ok(),
        "a live task refers to it"
    );
    assert!(h.engine.artifact(reuploaded).await.is_ok());
    h.advance(HOUR + 1);
    assert_eq!(collect(&h).await.artifacts_deleted, 1);
    assert!(h.engine.artifact(reuploaded).await.is_err());
    assert!(exists(&h, live.id).await);
}

/// Two engines run the same work from the same ids; one runs retention between every step,
/// deleting what finishes and pruning fairness groups and concurrency keys, the other never
/// does: every claim hands out the same tasks in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_never_changes_the_order_claims_take_tasks_in() {
    struct Side {
        _dir: tempfile::TempDir,
        engine: Engine<SqliteStore>,
    }
    let clock = Arc::new(ManualClock::new(T0));
    let side = |collects: bool| {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("baton.db")).unwrap();
        let config = EngineConfig {
            retain_ms: if collects { 1 } else { 0 },
            ..config()
        };
        let engine = Engine::with_ids(
            store,
            Arc::clone(&clock) as Arc<dyn Clock>,
            Arc::new(SeededIds::new(7)),
            config,
        );
        Side { _dir: dir, engine }
    };
    let (pruned, kept) = (side(true), side(false));
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    let mut agents = Vec::new();
    for s in [&pruned, &kept] {
        agents.push(
            s.engine
                .register_agent(Some(agent_id(1)), "w".into(), caps(&["x"]), 10_000)
                .await
                .unwrap()
                .id,
        );
    }
    let mut pruned_groups = 0;
    for round in 0..30 {
        // New workflows of a few sizes; some tasks in tenants' fairness groups, some under a
        // concurrency key.
        for w in 0..=next(3) {
            let size = 1 + next(70) as usize;
            let tenanted = next(2) == 0;
            let specs: Vec<TaskSpec> = (0..size)
                .map(|i| {
                    let mut s = task(&format!("t{i}"), &[], "x");
                    // Tenants come and go: the clock passes the groups of those gone.
                    s.input = json!({"tenant": format!("tenant-{}-{}", round / 4, i % 3)});
                    if tenanted {
                        s.fairness_key = Some("{/tenant}".into());
                    }
                    if i % 5 == 0 {
                        s.concurrency = vec![baton_core::ConcurrencyKey {
                            key: "gpu-{/tenant}".into(),
                            max: 1_000,
                        }];
                    }
                    s
                })
                .collect();
            for s in [&pruned, &kept] {
                s.engine
                    .submit_workflow(baton_engine::WorkflowRequest {
                        name: format!("r{round}-w{w}"),
                        ..request(specs.clone())
                    })
                    .await
                    .unwrap();
            }
        }
        // Claims take some of the work; every third round, all of it (then the fairness
        // clock reaches the groups' last turns).
        let want = if round % 3 == 2 {
            usize::MAX
        } else {
            1 + next(60) as usize
        };
        let mut orders = Vec::new();
        for (s, agent) in [(&pruned, agents[0]), (&kept, agents[1])] {
            let mut claimed = Vec::new();
            while claimed.len() < want {
                let more = s
                    .engine
                    .claim(
                        agent,
                        (want - claimed.len()).min(256),
                        std::time::Duration::ZERO,
                    )
                    .await
                    .unwrap();
                if more.is_empty() {
                    break;
                }
                claimed.extend(more);
            }
            orders.push(claimed.iter().map(|t| t.id).collect::<Vec<_>>());
            for t in claimed {
                let running = s
                    .engine
                    .report(t.id, started(&t), Default::default())
                    .await
                    .unwrap();
                s.engine
                    .report(t.id, succeeded(&running), Default::default())
                    .await
                    .unwrap();
            }
            s.engine.tick().await.unwrap();
        }
        assert_eq!(
            orders[0], orders[1],
            "round {round}: the same tasks, in the same order"
        );
        clock.advance(if next(4) == 0 { 2 * HOUR } else { 10 });
        let report = pruned.engine.collect(GcOptions::default()).await.unwrap();
        pruned_groups += report.fair_groups;
    }
    assert!(pruned_groups > 0, "the clock passed some groups");
    let gone = pruned.engine.store().counts(None).await.unwrap();
    let all = kept.engine.store().counts(None).await.unwrap();
    assert!(
        gone.total() < all.total(),
        "retention deleted finished workflows"
    );
}
