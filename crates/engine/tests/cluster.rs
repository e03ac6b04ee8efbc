//! Several engine nodes on one PostgreSQL database: the watchdog fires once across them,
//! wake-ups and transitions cross nodes. Uses `BATON_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), in a schema of its own; skipped without a server
//! (`common::require`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use baton_core::{EventKind, StateKind, Task, TaskSpec, Timeouts};
use baton_engine::{Clock, Engine, EngineConfig, EngineError, ManualClock};
use baton_store::postgres::{PgOptions, PgStore};
use baton_store::Store;
use common::require::postgres_url as url;
use common::{caps, request, spec, started, succeeded, T0};
use uuid::Uuid;

/// A schema for the test, dropped at the end.
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
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

/// `n` engines on one schema; `None` when no server answers (the test is skipped: return).
async fn nodes(n: usize) -> Option<(Schema, Arc<ManualClock>, Vec<Engine<PgStore>>)> {
    common::require::postgres()?;
    let schema = Schema(format!("baton_c_{}", Uuid::now_v7().simple()));
    let clock = Arc::new(ManualClock::new(T0));
    let mut engines = Vec::new();
    for _ in 0..n {
        let store = PgStore::open_with(
            &url(),
            PgOptions {
                schema: Some(schema.0.clone()),
                pool_size: 4,
            },
        )
        .await
        .expect("PostgreSQL is reachable (run .ci/postgres)");
        // Waiting claims look again on their own only after a minute, beyond every wait
        // here: a claim woken within its wait was woken by a notice.
        engines.push(Engine::new(
            store,
            Arc::clone(&clock) as Arc<dyn Clock>,
            EngineConfig {
                claim_recheck_ms: 60_000,
                ..EngineConfig::default()
            },
        ));
    }
    Some((schema, clock, engines))
}

fn quick_start(key: &str) -> TaskSpec {
    TaskSpec {
        timeouts: Timeouts {
            start_ms: Some(1_000),
            ..Timeouts::default()
        },
        ..spec(key, &[])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_fires_once_across_nodes() {
    let Some((_schema, clock, engines)) = nodes(3).await else {
        return;
    };
    let specs: Vec<TaskSpec> = (0..30).map(|i| quick_start(&format!("t{i}"))).collect();
    let receipt = engines[0].submit_workflow(request(specs)).await.unwrap();
    let agent = engines[1]
        .register_agent(None, "silent".into(), caps(&["work"]), 100)
        .await
        .unwrap();
    let claimed = engines[2]
        .claim(agent.id, 30, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 30);
    clock.advance(1_000);

    let ticks = engines.iter().map(|e| {
        let e = e.clone();
        tokio::spawn(async move { e.tick().await })
    });
    for t in ticks {
        t.await.unwrap().unwrap();
    }
    let mut leaders = 0;
    for e in &engines {
        if e.store().try_lead().await.unwrap() {
            leaders += 1;
        }
    }
    assert_eq!(leaders, 1, "exactly one node leads");
    for (_, id) in &receipt.tasks {
        let history = engines[0].history(*id, 0, 100).await.unwrap();
        let timeouts = history
            .iter()
            .filter(|h| h.event.kind() == EventKind::TimeoutExpired)
            .count();
        assert_eq!(timeouts, 1, "task {id}");
        let task = engines[1].store().task(*id).await.unwrap().unwrap();
        assert_eq!(task.kind(), StateKind::Pending);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_submitted_on_one_node_wakes_a_claim_waiting_on_another() {
    let Some((_schema, _clock, engines)) = nodes(2).await else {
        return;
    };
    for e in &engines {
        e.start();
    }
    let mut events = engines[1].subscribe();
    // Node 1 hears node 0 once its listening connection is up: a probe (work no agent here
    // takes), sent again until node 1 streams one, says it is.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut probe = spec("probe", &[]);
            probe.capabilities = caps(&["probe"]);
            let sent = engines[0]
                .submit_workflow(request(vec![probe]))
                .await
                .unwrap();
            let heard = tokio::time::timeout(Duration::from_millis(500), async {
                loop {
                    if events.recv().await.unwrap().task == sent.tasks[0].1 {
                        return;
                    }
                }
            });
            if heard.await.is_ok() {
                return;
            }
        }
    })
    .await
    .expect("node 1 listens to node 0");
    let agent = engines[1]
        .register_agent(None, "waiting".into(), caps(&["work"]), 1)
        .await
        .unwrap();
    let waiting = {
        let e = engines[1].clone();
        tokio::spawn(async move { e.claim(agent.id, 1, Duration::from_secs(20)).await })
    };
    // The claim is waiting before the work exists.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !engines[1]
            .metrics_text()
            .await
            .unwrap()
            .contains("\nbaton_claims_waiting 1\n")
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the claim waits");
    let receipt = engines[0]
        .submit_workflow(request(vec![spec("wake", &[])]))
        .await
        .unwrap();
    let claimed = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the claim returns")
        .unwrap()
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, receipt.tasks[0].1);

    let submitted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ev = events.recv().await.unwrap();
            if ev.task == receipt.tasks[0].1 && ev.event == EventKind::Submitted {
                return ev;
            }
        }
    })
    .await
    .expect("node 1 streams the transition node 0 committed");
    assert_eq!(submitted.to, StateKind::Pending);
    for e in &engines {
        e.shutdown();
    }
}

/// A node decides an agent's report from the task as it last committed it, but only its write
/// confirms that: whatever another node changed meanwhile is what the report is answered by,
/// whether the stale task would have refused it, accepted it or called it a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_answered_by_what_another_node_changed() {
    let Some((_schema, _clock, engines)) = nodes(2).await else {
        return;
    };
    let (here, there) = (&engines[0], &engines[1]);
    let specs = ["refused", "accepted", "duplicate"].map(|k| spec(k, &[]));
    here.submit_workflow(request(specs.to_vec())).await.unwrap();
    let agent = here
        .register_agent(None, "worker".into(), caps(&["work"]), 10)
        .await
        .unwrap();
    let claimed = here.claim(agent.id, 3, Duration::ZERO).await.unwrap();
    let task = |key: &str| {
        claimed
            .iter()
            .find(|t| t.spec.key.0 == key)
            .unwrap()
            .clone()
    };
    let report = |e: &Engine<PgStore>, id, event| {
        let e = e.clone();
        async move { e.report(id, event, Default::default()).await }
    };

    // Started over there: here it is still assigned, where a success is refused.
    let refused = task("refused");
    report(there, refused.id, started(&refused)).await.unwrap();
    let done = report(here, refused.id, succeeded(&refused)).await;
    assert_eq!(done.unwrap().kind(), StateKind::Completed);

    // Started here, cancelled over there: here a success would be accepted, and a second
    // start would be a duplicate.
    for (key, resent) in [
        ("accepted", succeeded as fn(&Task) -> _),
        ("duplicate", started),
    ] {
        let t = task(key);
        report(here, t.id, started(&t)).await.unwrap();
        there
            .cancel_task(t.id, "alice".into(), "not needed".into())
            .await
            .unwrap();
        let refusal = report(here, t.id, resent(&t)).await;
        assert!(
            matches!(refusal, Err(EngineError::Rejected(_))),
            "{key}: {refusal:?}"
        );
    }

    for (key, state) in [
        ("refused", StateKind::Completed),
        ("accepted", StateKind::Cancelled),
        ("duplicate", StateKind::Cancelled),
    ] {
        let stored = here.store().task(task(key).id).await.unwrap().unwrap();
        assert_eq!(stored.kind(), state, "{key}");
    }
}
