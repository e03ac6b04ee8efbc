//! What only the PostgreSQL backend has: several processes (here, several `PgStore`s) on one
//! database, migrations shared between them, and connection handling.
//!
//! The server comes from `BATON_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); every test works in a schema of its own,
//! dropped at the end, and is skipped without a server (`common::require`).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use baton_core::*;
use baton_store::postgres::{PgOptions, PgStore};
use baton_store::*;
use common::pg::{url, Schema};
use serde_json::json;
use tokio_postgres::NoTls;
use uuid::Uuid;

const T0: Timestamp = Timestamp(1_700_000_000_000);

fn caps(names: &[&str]) -> BTreeSet<Capability> {
    names.iter().map(|&n| Capability::from(n)).collect()
}

fn spec(key: &str, required: &[&str]) -> TaskSpec {
    TaskSpec {
        capabilities: caps(required),
        input: json!({ "key": key }),
        timeouts: Timeouts {
            schedule_to_start_ms: None,
            start_ms: Some(1_000),
            start_to_close_ms: Some(10_000),
            heartbeat_ms: Some(2_000),
        },
        ..TaskSpec::new(key)
    }
}

/// A workflow of independent tasks (all `Pending` once submitted).
fn workflow(
    specs: Vec<TaskSpec>,
    idempotency_key: Option<&str>,
    hash: &str,
) -> (Vec<TaskId>, SubmitBatch) {
    let id = WorkflowId(Uuid::now_v7());
    let mut ids = Vec::new();
    let mut tasks = Vec::new();
    for spec in specs {
        let sub = Submission {
            task: TaskId(Uuid::now_v7()),
            workflow: id,
            spec: Arc::new(spec),
            completed: Vec::new(),
            seed: 7,
            input: None,
            unresolved: None,
        };
        let t = submit(&sub, T0).expect("valid spec");
        ids.push(t.task.id);
        tasks.push(NewTask {
            entry: HistoryEntry {
                seq: 1,
                at: T0,
                event: Event::Submitted(sub),
            },
            outbox: t.effects,
            task: t.task,
        });
    }
    let batch = SubmitBatch {
        workflow: WorkflowRef::New(NewWorkflow {
            id,
            name: "pg".into(),
            idempotency_key: idempotency_key.map(str::to_owned),
            request_hash: hash.to_owned(),
            created_at: T0,
            outputs: None,
            labels: Default::default(),
            budgets: Default::default(),
        }),
        tasks,
        edges: Vec::new(),
        transitions: Vec::new(),
    };
    (ids, batch)
}

fn record(task: &Task, event: Event, now: Timestamp) -> TransitionRecord {
    TransitionRecord::apply(task, event, now).unwrap_or_else(|r| panic!("{r}"))
}

fn cancel(reason: &str) -> Event {
    Event::CancelRequested {
        requested_by: "ops".into(),
        reason: reason.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_exclusive_across_processes() {
    const STORES: usize = 4;
    const LOOPS_PER_STORE: usize = 4;
    const TASKS: usize = 200;

    let Some(schema) = Schema::new() else {
        return;
    };
    // The stores open (and race to migrate) at once, like processes starting together.
    let opened = futures_join_all((0..STORES).map(|_| schema.open())).await;
    let stores: Vec<Arc<PgStore>> = opened.into_iter().map(Arc::new).collect();

    // Two capability sets, so claims merge candidates across sets.
    let specs = (0..TASKS)
        .map(|i| {
            let required: &[&str] = if i % 2 == 0 {
                &["work"]
            } else {
                &["work", "gpu"]
            };
            TaskSpec {
                priority: (i % 3) as i32,
                ..spec(&format!("t{i}"), required)
            }
        })
        .collect();
    let (ids, batch) = workflow(specs, None, "claims");
    stores[0].submit(batch).await.unwrap();

    let mut loops = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for l in 0..LOOPS_PER_STORE {
            let store = Arc::clone(store);
            let agent = AgentId(Uuid::from_u128(((s * LOOPS_PER_STORE + l) + 1) as u128));
            loops.push(tokio::spawn(async move {
                let mut got: Vec<(TaskId, AgentId, LeaseId)> = Vec::new();
                let mut round = 0usize;
                loop {
                    round += 1;
                    let wanted = 1 + round % 3;
                    let leases: Vec<LeaseId> =
                        (0..wanted).map(|_| LeaseId(Uuid::now_v7())).collect();
                    let claimed = store
                        .claim(ClaimRequest {
                            start: false,
                            agent,
                            capabilities: caps(&["work", "gpu"]),
                            leases: leases.clone(),
                            now: T0.plus_ms(round as u64),
                            max_held: None,
                        })
                        .await
                        .unwrap();
                    assert!(claimed.len() <= wanted);
                    if claimed.is_empty() {
                        // Locked candidates are skipped: stop only once none is left pending.
                        if store.counts(None).await.unwrap().get(StateKind::Pending) == 0 {
                            return got;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    for task in claimed {
                        let lease = task.state.lease().expect("a claimed task is leased");
                        assert_eq!(lease.agent, agent);
                        assert!(leases.contains(&lease.id), "a lease of this request");
                        got.push((task.id, agent, lease.id));
                    }
                }
            }));
        }
    }
    let mut claims: HashMap<TaskId, Vec<(AgentId, LeaseId)>> = HashMap::new();
    let all = tokio::time::timeout(Duration::from_secs(120), futures_join_all(loops))
        .await
        .expect("claim loops finish");
    for got in all {
        for (task, agent, lease) in got.unwrap() {
            claims.entry(task).or_default().push((agent, lease));
        }
    }
    assert_eq!(claims.len(), TASKS, "every task was claimed");
    for (task, by) in &claims {
        assert_eq!(
            by.len(),
            1,
            "task {task} was handed out {} times: {by:?}",
            by.len()
        );
    }

    for store in &stores {
        let counts = store.counts(None).await.unwrap();
        assert_eq!(counts.get(StateKind::Assigned), TASKS as u64, "{counts:?}");
        assert_eq!(counts.total(), TASKS as u64, "{counts:?}");
    }
    for id in ids {
        let task = stores[1].task(id).await.unwrap().unwrap();
        let lease = task.state.lease().expect("assigned");
        assert_eq!((lease.agent, lease.id), claims[&id][0]);
        let history = stores[2].history(id, 0, 10).await.unwrap();
        assert_eq!(history.len(), 2, "submitted, then assigned once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_race_between_processes_has_one_winner_and_one_typed_conflict() {
    const TASKS: usize = 20;
    let Some(schema) = Schema::new() else {
        return;
    };
    let a = Arc::new(schema.open().await);
    let b = Arc::new(schema.open().await);
    let (ids, batch) = workflow(
        (0..TASKS)
            .map(|i| spec(&format!("t{i}"), &["work"]))
            .collect(),
        None,
        "race",
    );
    a.submit(batch).await.unwrap();

    for id in ids {
        let task = b.task(id).await.unwrap().unwrap();
        let from_a = record(&task, cancel("from a"), T0.plus_ms(1));
        let from_b = record(&task, cancel("from b"), T0.plus_ms(2));
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let race = |store: Arc<PgStore>, rec: TransitionRecord| {
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                store.apply(rec).await
            })
        };
        let (ra, rb) = tokio::join!(
            race(Arc::clone(&a), from_a.clone()),
            race(Arc::clone(&b), from_b.clone())
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let (winner, loss) = match (&ra, &rb) {
            (Ok(_), Err(e)) => (&from_a, e),
            (Err(e), Ok(_)) => (&from_b, e),
            other => panic!("expected exactly one winner, got {other:?}"),
        };
        match loss {
            StoreError::Conflict {
                task,
                expected,
                found,
            } => {
                assert_eq!(*task, id);
                assert_eq!(*expected, 1);
                assert_eq!(*found, Some(2));
            }
            other => panic!("expected a conflict, got {other}"),
        }
        assert_eq!(a.task(id).await.unwrap().unwrap(), winner.task);
        assert_eq!(b.history(id, 0, 10).await.unwrap().len(), 2);
    }
    let counts = a.counts(None).await.unwrap();
    assert_eq!(counts.get(StateKind::Cancelled), TASKS as u64, "{counts:?}");
    assert_eq!(counts.total(), TASKS as u64, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_a_newer_schema_is_refused() {
    // Mixed case: the name is quoted everywhere, never folded to lower case.
    let Some(schema) = Schema::named(format!("Baton_T_{}", Uuid::now_v7().simple())) else {
        return;
    };
    let first = schema.open().await;
    let (ids, batch) = workflow(vec![spec("kept", &["work"])], None, "m");
    first.submit(batch).await.unwrap();
    drop(first);

    let second = schema.open().await;
    assert!(
        second.task(ids[0]).await.unwrap().is_some(),
        "data survives a reopen"
    );
    assert_eq!(
        second.counts(None).await.unwrap().get(StateKind::Pending),
        1
    );
    drop(second);

    let sql = schema.sql().await;
    let version: String = sql
        .query_one(
            "SELECT value FROM baton_meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Every migration file is applied (counted rather than written here, so that a change
    // adding one does not have to edit this line).
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/postgres"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.ends_with(".sql") && name.bytes().take(3).all(|b| b.is_ascii_digit())
        })
        .count();
    assert_eq!(version, migrations.to_string());

    sql.execute(
        "UPDATE baton_meta SET value = '99' WHERE key = 'schema_version'",
        &[],
    )
    .await
    .unwrap();
    match PgStore::open_with(&url(), schema.options()).await {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (99, migrations as i64));
        }
        Err(e) => panic!("expected SchemaTooNew, got {e}"),
        Ok(_) => panic!("expected SchemaTooNew, the store opened"),
    }
}

#[tokio::test]
async fn a_schema_of_another_application_is_not_a_baton_store() {
    let Some(schema) = Schema::new() else {
        return;
    };
    let (client, conn) = tokio_postgres::connect(&url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{0}\"; CREATE TABLE \"{0}\".invoices (id int)",
            schema.0
        ))
        .await
        .unwrap();
    match PgStore::open_with(&url(), schema.options()).await {
        Err(e @ StoreError::NotABatonStore { .. }) => {
            assert!(
                e.to_string().contains("invoices") || e.to_string().contains("1 tables"),
                "{e}"
            );
        }
        Err(e) => panic!("expected NotABatonStore, got {e}"),
        Ok(_) => panic!("expected NotABatonStore, the store opened"),
    }
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1",
            &[&schema.0],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "nothing was created beside the foreign table");
}

#[tokio::test]
async fn bad_urls_and_unreachable_servers_are_clear_errors() {
    let err = PgStore::open("postgres://baton:s3cret@localhost:notaport/db")
        .await
        .err();
    match err {
        Some(StoreError::InvalidUrl { url, detail }) => {
            assert!(!url.contains("s3cret"), "the password is not shown: {url}");
            assert!(!detail.is_empty());
        }
        other => panic!("expected InvalidUrl, got {other:?}"),
    }

    let bad_schema = PgOptions {
        schema: Some("no spaces; please".into()),
        pool_size: 1,
    };
    let err = PgStore::open_with(&url(), bad_schema).await.err();
    assert!(
        matches!(err, Some(StoreError::InvalidUrl { .. })),
        "{err:?}"
    );

    let err = PgStore::open("postgres://baton:s3cret@127.0.0.1:1/test")
        .await
        .err();
    match err {
        Some(StoreError::Unavailable { detail }) => {
            assert!(detail.contains("cannot connect"), "{detail}");
            assert!(!detail.contains("s3cret"), "{detail}");
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_store_opens_postgres_urls() {
    let base = url();
    let separator = if base.contains('?') { '&' } else { '?' };

    // The schema chosen by the server's search_path...
    let Some(by_path) = Schema::new() else {
        return;
    };
    by_path.open().await;
    let store = AnyStore::open(&format!(
        "{base}{separator}options=-csearch_path%3D{}",
        by_path.0
    ))
    .await
    .unwrap();
    assert!(matches!(store, AnyStore::Postgres(_)));
    drop(store);

    // ...or named in the URL.
    let Some(by_param) = Schema::new() else {
        return;
    };
    let store = AnyStore::open(&format!("{base}{separator}schema={}", by_param.0))
        .await
        .unwrap();
    let (ids, batch) = workflow(vec![spec("via_any", &["work"])], None, "any");
    store.submit(batch).await.unwrap();
    assert!(store.task(ids[0]).await.unwrap().is_some());
    let in_schema: i64 = by_param
        .sql()
        .await
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_schema, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_from_two_processes_creates_one_workflow() {
    let Some(schema) = Schema::new() else {
        return;
    };
    let a = schema.open().await;
    let b = schema.open().await;
    for round in 0..10 {
        let key = format!("order-{round}");
        let (_, first) = workflow(
            vec![spec("x", &["work"]), spec("y", &["work"])],
            Some(&key),
            "same",
        );
        let (_, second) = workflow(
            vec![spec("x", &["work"]), spec("y", &["work"])],
            Some(&key),
            "same",
        );
        let (ra, rb) = tokio::join!(a.submit(first), b.submit(second));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let (created, existing) = match (&ra, &rb) {
            (
                SubmitOutcome::Created { workflow },
                SubmitOutcome::Existing { workflow: w, tasks },
            )
            | (
                SubmitOutcome::Existing { workflow: w, tasks },
                SubmitOutcome::Created { workflow },
            ) => (*workflow, (*w, tasks.clone())),
            other => panic!("expected one creation and one existing answer, got {other:?}"),
        };
        assert_eq!(created, existing.0);
        let keys: Vec<&str> = existing.1.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys.len(), 2, "{keys:?}");

        let (_, other) = workflow(vec![spec("z", &["work"])], Some(&key), "different");
        let err = b.submit(other).await.unwrap_err();
        assert!(
            matches!(err, StoreError::IdempotencyMismatch { .. }),
            "{err}"
        );
    }
    let counts = a.counts(None).await.unwrap();
    assert_eq!(counts.get(StateKind::Pending), 20, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_chosen_as_deadlock_victim_is_run_again() {
    let Some(schema) = Schema::new() else {
        return;
    };
    let store = Arc::new(schema.open().await);
    let (mut ids, batch) = workflow(vec![spec("p", &["work"]), spec("q", &["work"])], None, "dl");
    store.submit(batch).await.unwrap();
    ids.sort();
    let (lo, hi) = (ids[0], ids[1]);

    // Another process holds `hi`; the store's batch locks `lo`, then waits for `hi`.
    let mut other = schema.sql().await;
    let tx = other.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", &[&hi.0])
        .await
        .unwrap();
    let mut records = Vec::new();
    for id in [lo, hi] {
        let task = store.task(id).await.unwrap().unwrap();
        records.push(record(&task, cancel("deadlock"), T0.plus_ms(1)));
    }
    let before = store.stats();
    let applying = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.apply_all(records).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Now the other process wants `lo`: a cycle. The store's backend waited first, so its
    // deadlock check fires first and its batch is the victim.
    tx.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", &[&lo.0])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let results = tokio::time::timeout(Duration::from_secs(30), applying)
        .await
        .expect("the batch finishes")
        .unwrap()
        .expect("the batch commits on a later attempt");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let after = store.stats();
    assert!(
        after.reruns_contended > before.reruns_contended,
        "the batch was run again after the deadlock: {before:?} -> {after:?}"
    );
    for id in [lo, hi] {
        assert_eq!(
            store.task(id).await.unwrap().unwrap().kind(),
            StateKind::Cancelled
        );
    }
}

/// Three pending tasks and a cancellation record for each; the first task's next history row
/// is planted beforehand, so that writing its entry violates the history's key.
async fn planted(
    schema: &Schema,
    store: &PgStore,
    keys: [&str; 3],
    reason: &str,
) -> (Vec<TaskId>, Vec<TransitionRecord>) {
    let (ids, batch) = workflow(
        keys.iter().map(|k| spec(k, &["work"])).collect(),
        None,
        reason,
    );
    store.submit(batch).await.unwrap();
    schema
        .sql()
        .await
        .execute(
            "INSERT INTO history (task_id, seq, at, actor, event, payload)
             VALUES ($1, 2, 0, 'test', 'test', '{}')",
            &[&ids[0].0],
        )
        .await
        .unwrap();
    let mut records = Vec::new();
    for id in &ids {
        let task = store.task(*id).await.unwrap().unwrap();
        records.push(record(&task, cancel(reason), T0.plus_ms(1)));
    }
    (ids, records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failing_in_the_database_fails_alone() {
    let Some(schema) = Schema::new() else {
        return;
    };
    let store = schema.open().await;
    let (ids, records) = planted(&schema, &store, ["x", "y", "z"], "alone").await;
    let results = store.apply_all(records).await.unwrap();
    assert!(
        matches!(&results[0], Err(StoreError::Backend(m)) if m.contains("23505")),
        "{results:?}"
    );
    assert!(results[1].is_ok() && results[2].is_ok(), "{results:?}");

    assert_eq!(
        store.task(ids[0]).await.unwrap().unwrap().kind(),
        StateKind::Pending
    );
    for id in &ids[1..] {
        assert_eq!(
            store.task(*id).await.unwrap().unwrap().kind(),
            StateKind::Cancelled
        );
    }
    let counts = store.counts(None).await.unwrap();
    assert_eq!(counts.get(StateKind::Pending), 1, "{counts:?}");
    assert_eq!(counts.get(StateKind::Cancelled), 2, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_careful_rerun_answers_every_record_on_its_own() {
    let Some(schema) = Schema::new() else {
        return;
    };
    let store = schema.open().await;
    // The first record's history entry already exists: its insert fails in the database, and
    // the batch is run again one savepoint per record.
    let (ids, mut records) =
        planted(&schema, &store, ["fails", "stale", "passes"], "careful").await;
    // A record of a version the task does not have: a conflict, found before any write.
    records[1].task.version += 1;
    records[1].entry.seq += 1;
    let before = store.stats();
    let results = store.apply_all(records).await.unwrap();
    assert!(store.stats().reruns_careful > before.reruns_careful);
    assert!(
        matches!(&results[0], Err(StoreError::Backend(m)) if m.contains("23505")),
        "{results:?}"
    );
    assert!(
        matches!(&results[1], Err(StoreError::Conflict { .. })),
        "{results:?}"
    );
    assert!(results[2].is_ok(), "{results:?}");
    let states: Vec<StateKind> = futures_join_all(ids.iter().map(|id| store.task(*id)))
        .await
        .into_iter()
        .map(|t| t.unwrap().unwrap().kind())
        .collect();
    assert_eq!(
        states,
        [StateKind::Pending, StateKind::Pending, StateKind::Cancelled]
    );
    let counts = store.counts(None).await.unwrap();
    assert_eq!(counts.get(StateKind::Pending), 2, "{counts:?}");
    assert_eq!(counts.get(StateKind::Cancelled), 1, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_its_connections_are_killed() {
    let Some(schema) = Schema::new() else {
        return;
    };
    let app = schema.0.clone();
    let separator = if url().contains('?') { '&' } else { '?' };
    let url = format!("{}{separator}application_name={app}", url());
    let store = PgStore::open_with(&url, schema.options()).await.unwrap();
    let (ids, batch) = workflow(
        vec![spec("a", &["work"]), spec("b", &["work"])],
        None,
        "kill",
    );
    store.submit(batch).await.unwrap();
    assert!(
        store.task(ids[0]).await.unwrap().is_some(),
        "a pooled connection exists"
    );

    let sql = schema.sql().await;
    let killed: i64 = sql
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                   WHERE application_name = $1) k",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        killed >= 2,
        "the writers and the pooled connection: {killed}"
    );

    let task = store.task(ids[0]).await.unwrap().unwrap();
    store
        .apply(record(&task, cancel("after kill"), T0.plus_ms(1)))
        .await
        .unwrap();
    let claimed = store
        .claim(ClaimRequest {
            start: false,
            agent: AgentId(Uuid::now_v7()),
            capabilities: caps(&["work"]),
            leases: vec![LeaseId(Uuid::now_v7())],
            now: T0.plus_ms(2),
            max_held: None,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, ids[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transitions_share_commits() {
    const TASKS: usize = 300;
    let Some(schema) = Schema::new() else {
        return;
    };
    let store = Arc::new(schema.open().await);
    let (ids, batch) = workflow(
        (0..TASKS)
            .map(|i| spec(&format!("t{i}"), &["work"]))
            .collect(),
        None,
        "group",
    );
    store.submit(batch).await.unwrap();
    let mut records = Vec::new();
    for id in &ids {
        let task = store.task(*id).await.unwrap().unwrap();
        records.push(record(&task, cancel("group"), T0.plus_ms(1)));
    }
    let before = store.stats();
    let applies: Vec<_> = records
        .into_iter()
        .map(|rec| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.apply(rec).await })
        })
        .collect();
    for result in futures_join_all(applies).await {
        result.unwrap().unwrap();
    }
    let after = store.stats();
    let (commits, writes) = (after.commits - before.commits, after.writes - before.writes);
    assert_eq!(writes, TASKS as u64);
    assert!(
        commits < writes / 2,
        "{commits} commits for {writes} writes"
    );
    assert_eq!(
        store.counts(None).await.unwrap().get(StateKind::Cancelled),
        TASKS as u64
    );
}

/// Awaits all futures concurrently, in order of the results.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in set.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_every_process_and_one_leads_at_a_time() {
    let Some(schema) = Schema::new() else {
        return;
    };
    let a = schema.open().await;
    let b = schema.open().await;
    let mut on_a = a.notices().expect("PostgreSQL stores hear each other");
    let mut on_b = b.notices().expect("PostgreSQL stores hear each other");
    let Some(other) = Schema::new() else {
        return;
    };
    let stranger = other.open().await;
    let mut on_stranger = stranger.notices().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    a.notify("hello from a".into()).await.unwrap();
    for rx in [&mut on_a, &mut on_b] {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the notice arrives")
            .unwrap();
        assert_eq!(got, "hello from a");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), on_stranger.recv())
            .await
            .is_err(),
        "another schema's stores do not hear it"
    );

    assert!(a.try_lead().await.unwrap());
    assert!(a.try_lead().await.unwrap(), "leadership lasts");
    assert!(!b.try_lead().await.unwrap(), "one leader at a time");
    drop(a);
    let start = std::time::Instant::now();
    while !b.try_lead().await.unwrap() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "b never took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Retention's mark and an operator's rerun of the same finished workflow, racing from two
/// processes: either the rerun commits first (and the mark, checking again once it holds the
/// workflow's row, keeps the reopened workflow) or the mark does (and the rerun is refused as
/// for a workflow that is gone); never a marked workflow with a reopened task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_and_a_rerun_racing_from_two_processes_never_both_win() {
    const TRIALS: usize = 20;
    let Some(schema) = Schema::new() else {
        return;
    };
    let a = Arc::new(schema.open().await);
    let b = Arc::new(schema.open().await);
    let (mut kept, mut deleted) = (0, 0);
    for trial in 0..TRIALS {
        let (ids, batch) = workflow(vec![spec("x", &["work"])], None, "race");
        let wf = match &batch.workflow {
            WorkflowRef::New(w) => w.id,
            _ => unreachable!(),
        };
        a.submit(batch).await.unwrap();
        let task = a.task(ids[0]).await.unwrap().unwrap();
        a.apply(record(&task, cancel("done"), T0.plus_ms(1)))
            .await
            .unwrap();
        loop {
            let items = a.outbox(100).await.unwrap();
            if items.is_empty() {
                break;
            }
            a.ack_outbox(items.iter().map(|o| o.id).collect())
                .await
                .unwrap();
        }
        let cancelled = a.task(ids[0]).await.unwrap().unwrap();
        let rerun = record(
            &cancelled,
            Event::Reopened {
                requested_by: "ops".into(),
                reason: "again".into(),
                root: "x".into(),
                input: None,
                keep_items: false,
                retired: Vec::new(),
            },
            T0.plus_ms(2),
        );
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let control = {
            let (b, barrier) = (Arc::clone(&b), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                b.control(ControlWrite {
                    records: vec![rerun],
                    workflow_pause: None,
                    budgets: None,
                    audit: None,
                })
                .await
            })
        };
        let gc = {
            let (a, barrier) = (Arc::clone(&a), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                a.gc_workflows(GcBatch {
                    mark: vec![wf],
                    finished_before: T0.plus_ms(1_000),
                    now: T0.plus_ms(2_000),
                    tasks_max: 10,
                })
                .await
            })
        };
        let (control, gc) = (control.await.unwrap(), gc.await.unwrap().unwrap());
        match control {
            Ok(_) => {
                assert!(gc.marked.is_empty(), "trial {trial}: reopened, yet marked");
                let task = a.task(ids[0]).await.unwrap().unwrap();
                assert_eq!(task.kind(), StateKind::Blocked, "trial {trial}");
                assert!(a.workflow(wf).await.unwrap().is_some());
                kept += 1;
            }
            Err(StoreError::WorkflowNotFound(w)) => {
                assert_eq!(w, wf);
                assert_eq!(gc.marked, vec![wf], "trial {trial}");
                assert!(a.task(ids[0]).await.unwrap().is_none());
                deleted += 1;
            }
            Err(e) => panic!("trial {trial}: {e}"),
        }
    }
    assert_eq!(kept + deleted, TRIALS);
    eprintln!("rerun first {kept} times, retention first {deleted} times");
}
