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
    assert_eq!(
        sorted(store.released_blocked(10).await.unwrap()),
        sorted(vec![flow.id("b"), flow.id("c")])
    );
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
            max_size_bytes: Some(256 * 1024),
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
