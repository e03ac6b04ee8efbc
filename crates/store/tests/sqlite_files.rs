//! The SQLite file itself: reopening, foreign or newer files, unwritable places, a full disk.

mod common;

use baton_core::*;
use baton_store::sqlite::{SqliteOptions, SqliteStore};
use baton_store::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_written_is_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let flow = diamond();
    let (a, counts, history) = {
        let store = SqliteStore::open(&path).unwrap();
        store.submit(flow.batch.clone()).await.unwrap();
        let a = run_to_completion(&store, flow.id("a"), at(10)).await;
        let counts = store.counts(None).await.unwrap();
        let history = store.history(a.id, 0, 100).await.unwrap();
        (a, counts, history)
    };
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.task(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.counts(None).await.unwrap(), counts);
    assert_eq!(store.history(a.id, 0, 100).await.unwrap(), history);
    assert_eq!(replay(&history).unwrap(), a);
    // Released in the commit that completed a.
    for k in ["b", "c"] {
        let t = store.task(flow.id(k)).await.unwrap().unwrap();
        assert_eq!(t.kind(), StateKind::Pending, "{k}");
    }
    assert!(store.released_blocked(10).await.unwrap().is_empty());
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let junk: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&path, &junk).unwrap();
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::NotABatonStore { .. }), "{err}");
    assert!(err.to_string().contains("baton.db"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), junk, "the file is untouched");
}

#[test]
fn another_applications_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL);")
            .unwrap();
    }
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(err, StoreError::NotABatonStore { .. }), "{err}");
    assert!(err.to_string().contains("another application"), "{err}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "nothing was added to it");
}

#[test]
fn a_store_from_a_newer_baton_is_refused_with_the_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    drop(SqliteStore::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 99;").unwrap();
    }
    let err = SqliteStore::open(&path).err().expect("refused");
    let StoreError::SchemaTooNew { found, supported } = err else {
        panic!("{err}")
    };
    assert_eq!(found, 99);
    assert!(supported < 99);
}

#[test]
fn an_unwritable_place_gives_a_clear_error() {
    let err = SqliteStore::open("/nonexistent-dir/baton/baton.db")
        .err()
        .expect("refused");
    assert!(err.to_string().contains("directory exists"), "{err}");
    let err = SqliteStore::open("/proc/baton.db").err().expect("refused");
    assert!(err.to_string().contains("/proc/baton.db"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_write_cleanly_and_keeps_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let store = SqliteStore::open_with(
        &path,
        SqliteOptions {
            max_size_bytes: Some(512 * 1024),
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let mut committed = 0u64;
    let mut failure = None;
    for round in 0..200 {
        let keys: Vec<String> = (0..20).map(|i| format!("r{round}-t{i}")).collect();
        let defs: Vec<Def<'_>> = keys.iter().map(|k| def(k, &[])).collect();
        let flow = workflow(&defs, None);
        match store.submit(flow.batch.clone()).await {
            Ok(_) => committed += 20,
            Err(e) => {
                failure = Some((e, flow));
                break;
            }
        }
    }
    let (err, flow) = failure.expect("the quota is reached");
    assert!(err.to_string().contains("full"), "{err}");
    assert!(committed > 0);
    assert_eq!(store.counts(None).await.unwrap().total(), committed);
    assert!(store.workflow(flow.id).await.unwrap().is_none());
    assert!(store
        .task(flow.batch.tasks[0].task.id)
        .await
        .unwrap()
        .is_none());

    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.counts(None).await.unwrap().total(), committed);
    let listed = store
        .tasks(TaskFilter {
            limit: 1000,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len() as u64, committed);
}

fn auto_vacuum(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap()
}

/// A workflow of `n` tasks, each with an input of some kilobytes, submitted and cancelled at
/// `at(t)` (and its effects acknowledged): finished, for retention to delete.
async fn finished_workflow<S: Store>(s: &S, n: usize, t: u64) -> WorkflowId {
    let keys: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    let mut flow = workflow(&keys.iter().map(|k| def(k, &[])).collect::<Vec<_>>(), None);
    for new in flow.batch.tasks.iter_mut() {
        std::sync::Arc::make_mut(&mut new.task.spec).input =
            serde_json::json!({ "text": "x".repeat(4_000) });
    }
    s.submit(flow.batch.clone()).await.unwrap();
    for id in flow.ids.values() {
        advance(
            s,
            *id,
            Event::CancelRequested {
                requested_by: "ops".into(),
                reason: "test".into(),
            },
            at(t),
        )
        .await;
    }
    loop {
        let items = s.outbox(100).await.unwrap();
        if items.is_empty() {
            break;
        }
        s.ack_outbox(items.iter().map(|o| o.id).collect())
            .await
            .unwrap();
    }
    flow.id
}

/// Deletes every workflow that finished before `at(before)`, a batch at a time.
async fn collect_all<S: Store>(s: &S, before: u64) -> u64 {
    let mut tasks = 0;
    let mut page = s
        .gc_candidates(GcScan {
            finished_before: at(before),
            after: None,
            limit: 100,
        })
        .await
        .unwrap();
    loop {
        let out = s
            .gc_workflows(GcBatch {
                mark: page.candidates.iter().map(|c| c.workflow).collect(),
                finished_before: at(before),
                now: at(before),
                tasks_max: 100,
            })
            .await
            .unwrap();
        tasks += out.tasks;
        page.candidates.clear();
        if !out.more {
            return tasks;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_freed_by_retention_goes_back_to_the_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(auto_vacuum(&path), 2, "a new store vacuums incrementally");
    for _ in 0..4 {
        finished_workflow(&store, 250, 10).await;
    }
    let full = store.size_bytes().await.unwrap();
    assert_eq!(collect_all(&store, 1_000).await, 1_000);
    // Deleted over several batches, each workflow leaves no count behind.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let counted: i64 = conn
        .query_row("SELECT count(*) FROM workflow_counts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(counted, 0);
    drop(conn);
    let reclaimed = store.reclaim_space(u64::MAX).await.unwrap();
    assert!(reclaimed > 100, "pages given back: {reclaimed}");
    // The pages leave the file at the checkpoint that follows.
    let after = store.size_bytes().await.unwrap();
    assert!(
        after < full / 2,
        "the file shrank from {full} to {after} bytes"
    );
    assert_eq!(store.reclaim_space(1_000).await.unwrap(), 0, "nothing left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_before_retention_is_converted_to_incremental_vacuum_once_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let flow = {
        let store = SqliteStore::open(&path).unwrap();
        finished_workflow(&store, 10, 10).await
    };
    {
        // As an older Baton left it: no auto-vacuum.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;")
            .unwrap();
    }
    assert_eq!(auto_vacuum(&path), 0);
    drop(SqliteStore::open(&path).unwrap());
    assert_eq!(auto_vacuum(&path), 0, "readers never convert");
    let store = SqliteStore::open_with(
        &path,
        SqliteOptions {
            convert_to_incremental_vacuum: true,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    assert_eq!(auto_vacuum(&path), 2);
    assert!(
        store.workflow(flow).await.unwrap().is_some(),
        "nothing lost"
    );
    assert_eq!(store.counts(None).await.unwrap().total(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_the_store_is_written_is_one_consistent_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let store = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
    let mut a = store.stage_artifact().unwrap();
    a.write(b"the report").unwrap();
    let artifact = store
        .put_artifact(a.finish().unwrap(), None, at(1))
        .await
        .unwrap()
        .meta
        .artifact;
    let mut loose = store.stage_artifact().unwrap();
    loose.write(b"unreferenced").unwrap();
    store
        .put_artifact(loose.finish().unwrap(), None, at(1))
        .await
        .unwrap();
    let mut referring = workflow(&[def("r", &[])], None);
    std::sync::Arc::make_mut(&mut referring.batch.tasks[0].task.spec).input =
        serde_json::json!({ "doc": { "$artifact": artifact.to_string() } });
    store.submit(referring.batch.clone()).await.unwrap();
    // A writer goes on while the backup runs.
    let writing = {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move {
            for round in 0..200u64 {
                let keys: Vec<String> = (0..10).map(|i| format!("w{round}-{i}")).collect();
                let flow = workflow(&keys.iter().map(|k| def(k, &[])).collect::<Vec<_>>(), None);
                store.submit(flow.batch).await.unwrap();
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let copy = dir.path().join("backup.db");
    let report = {
        let (path, copy) = (path.clone(), copy.clone());
        tokio::task::spawn_blocking(move || baton_store::sqlite::backup(&path, &copy))
            .await
            .unwrap()
            .unwrap()
    };
    writing.await.unwrap();
    assert!(report.bytes > 0);
    assert_eq!(report.artifacts, 2);
    let err = baton_store::sqlite::backup(&path, &copy).unwrap_err();
    assert!(err.to_string().contains("exists already"), "{err}");

    for leftover in ["-wal", "-shm", ".partial"] {
        let mut name = copy.as_os_str().to_owned();
        name.push(leftover);
        assert!(
            !std::path::Path::new(&name).exists(),
            "{leftover} left behind"
        );
    }
    let mode: String = rusqlite::Connection::open(&copy)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "one self-contained file");
    let restored = SqliteStore::open(&copy).unwrap();
    // Whole workflows only: the counters agree with the tasks, which come in tens.
    let counts = restored.counts(None).await.unwrap();
    let tasks = restored
        .tasks(TaskFilter {
            limit: PAGE_ROWS_MAX,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    let mut all = tasks.len() as u64;
    let mut after = tasks.last().map(|t| t.id);
    while let Some(last) = after {
        let page = restored
            .tasks(TaskFilter {
                after: Some(last),
                limit: PAGE_ROWS_MAX,
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        all += page.len() as u64;
        after = page.last().map(|t| t.id);
    }
    assert_eq!(counts.total(), all);
    assert_eq!((all - 1) % 10, 0, "{all} tasks: whole submissions");
    let (meta, mut chunks) = restored.read_artifact(artifact).await.unwrap().unwrap();
    assert_eq!(meta.size, 10);
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        bytes.extend(chunk.unwrap());
    }
    assert_eq!(bytes, b"the report");
}

#[test]
fn a_backup_refuses_what_is_not_a_baton_store() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x);")
        .unwrap();
    let err = baton_store::sqlite::backup(&other, &dir.path().join("copy.db")).unwrap_err();
    assert!(matches!(err, StoreError::NotABatonStore { .. }), "{err}");
    assert!(!dir.path().join("copy.db").exists());
    let err = baton_store::sqlite::backup(&dir.path().join("missing.db"), &dir.path().join("c.db"))
        .unwrap_err();
    assert!(err.to_string().contains("no store at"), "{err}");
}

/// A batch runs without savepoints first; a write that fails in the database rolls it back,
/// and it runs again one savepoint per command: the failure is that record's alone, a
/// conflict is answered as one, and the rest of the batch is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_in_the_database_fails_alone_after_a_careful_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let store = SqliteStore::open(&path).unwrap();
    let flow = workflow(
        &[def("fails", &[]), def("stale", &[]), def("passes", &[])],
        None,
    );
    store.submit(flow.batch.clone()).await.unwrap();
    let ids = ["fails", "stale", "passes"].map(|k| flow.id(k));
    // The first task's next history entry exists already: writing it violates the key.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO history (task_id, seq, at, actor, event, payload)
             VALUES (?1, 2, 0, 'test', 'test', '{}')",
            [ids[0].0],
        )
        .unwrap();
    let mut records = Vec::new();
    for id in ids {
        let task = store.task(id).await.unwrap().unwrap();
        let event = Event::CancelRequested {
            requested_by: "ops".into(),
            reason: "careful".into(),
        };
        records.push(record(&task, event, at(1)));
    }
    // A version the task does not have: a conflict, found before any write.
    records[1].task.version += 1;
    records[1].entry.seq += 1;
    let before = store.stats();
    let results = store.apply_all(records).await.unwrap();
    assert_eq!(store.stats().reruns_careful, before.reruns_careful + 1);
    assert!(
        matches!(&results[0], Err(StoreError::Backend(m)) if m.contains("UNIQUE")),
        "{results:?}"
    );
    assert!(
        matches!(&results[1], Err(StoreError::Conflict { .. })),
        "{results:?}"
    );
    assert!(results[2].is_ok(), "{results:?}");
    let mut states = Vec::new();
    for id in ids {
        states.push(store.task(id).await.unwrap().unwrap().kind());
    }
    assert_eq!(
        states,
        [StateKind::Pending, StateKind::Pending, StateKind::Cancelled]
    );
    assert_eq!(store.history(ids[2], 0, 10).await.unwrap().len(), 2);
    let counts = store.counts(None).await.unwrap();
    assert_eq!(counts.get(StateKind::Pending), 2, "{counts:?}");
    assert_eq!(counts.get(StateKind::Cancelled), 1, "{counts:?}");
}

/// The writer keeps its own copy of a pending task it stored, for a claim to take without
/// reading the row again. Another process that moved the task on, and back to pending, left a
/// row at another version: the claim takes the row, not the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_takes_the_row_another_process_changed_not_the_writers_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let ours = SqliteStore::open(&path).unwrap();
    let theirs = SqliteStore::open(&path).unwrap();
    let flow = workflow(&[def("a", &[])], None);
    ours.submit(flow.batch.clone()).await.unwrap();
    let id = flow.id("a");

    let taken = claim_one(&theirs, agent(2), at(10)).await.unwrap();
    assert_eq!((taken.id, taken.fencing_token), (id, FencingToken(1)));
    let released = advance(
        &theirs,
        id,
        Event::AssignmentReleased {
            agent: agent(2),
            token: FencingToken(1),
        },
        at(20),
    )
    .await;
    assert_eq!((released.kind(), released.version), (StateKind::Pending, 3));

    let claimed = claim_one(&ours, agent(1), at(30)).await.unwrap();
    // Taken from the row at once: a stale copy would fail the compare-and-set, and only the
    // rerun of the batch (which forgets every copy) would take the row.
    assert_eq!(ours.stats().reruns_careful, 0);
    assert_eq!(claimed.version, 4);
    assert_eq!(claimed.fencing_token, FencingToken(2));
    let history = ours.history(id, 0, 100).await.unwrap();
    assert_eq!(history.len(), 4);
    assert_eq!(replay(&history).unwrap(), claimed);
}

/// A store from before `workflow_counts` (migration 14) gets each workflow's counts from its
/// tasks when opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_workflow_counts_counts_its_workflows_tasks_on_opening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let flow = diamond();
    let (counts, open) = {
        let store = SqliteStore::open(&path).unwrap();
        store.submit(flow.batch.clone()).await.unwrap();
        run_to_completion(&store, flow.id("a"), at(10)).await;
        (
            store.counts(Some(flow.id)).await.unwrap(),
            store.workflow_open(flow.id).await.unwrap(),
        )
    };
    assert_eq!(
        (
            counts.get(StateKind::Completed),
            counts.get(StateKind::Pending)
        ),
        (1, 2)
    );
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "DROP TABLE workflow_counts;
             DROP INDEX tasks_by_workflow;
             CREATE INDEX tasks_by_workflow ON tasks (workflow_id, state, id);
             PRAGMA user_version = 13;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.counts(Some(flow.id)).await.unwrap(), counts);
    assert_eq!(store.workflow_open(flow.id).await.unwrap(), open);
    let b = claim_one(&store, agent(1), at(20)).await.unwrap();
    let moved = store.counts(Some(flow.id)).await.unwrap();
    assert_eq!(
        (
            moved.get(StateKind::Pending),
            moved.get(StateKind::Assigned)
        ),
        (1, 1),
        "{b:?}"
    );
}
