//! Crash test: a child process writes to a SQLite store and reports every acknowledged write;
//! the parent kills it with SIGKILL at a random moment, reopens the store and checks that
//! every acknowledged write is there and the store is consistent. Repeated many times
//! (`BATON_CRASH_ROUNDS`, default 20).
//!
//! The child is this test binary again, running the same test with [`CHILD_ENV`] set: the
//! test then does the child's work instead (until it is killed), so the binary has no test of
//! its own for the child that would pass without checking anything.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_core::*;
use baton_store::sqlite::SqliteStore;
use baton_store::*;
use common::*;
use serde_json::json;

const CHILD_ENV: &str = "BATON_CRASH_CHILD_DB";

/// The test as run by the parent, with this name.
const TEST_NAME: &str = "acknowledged_writes_survive_sigkill_at_random_moments";

/// The child's work, until it is killed: submit small workflows and run their tasks to
/// completion with several concurrent workers, printing `ack <task> <version>` after each
/// write is acknowledged.
fn child(path: &str) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(SqliteStore::open(path).unwrap());
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let mut workers = Vec::new();
        for w in 0..4u128 {
            let store = Arc::clone(&store);
            let out = Arc::clone(&out);
            workers.push(tokio::spawn(async move {
                let ack = |id: TaskId, version: u64| {
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ack {id} {version}").unwrap();
                    o.flush().unwrap();
                };
                loop {
                    let flow = workflow(
                        &[
                            def("a", &[]),
                            def("b", &["a"]),
                            def("c", &["a"]),
                            def("d", &["b", "c"]),
                        ],
                        None,
                    );
                    store.submit(flow.batch.clone()).await.unwrap();
                    for t in &flow.batch.tasks {
                        ack(t.task.id, 1);
                    }
                    for _ in 0..8 {
                        let claimed = store
                            .claim(ClaimRequest {
                                start: false,
                                agent: agent(w),
                                capabilities: caps(&["work"]),
                                leases: vec![LeaseId(uuid::Uuid::now_v7())],
                                now: at(1),
                                max_held: None,
                            })
                            .await
                            .unwrap();
                        for task in claimed {
                            ack(task.id, task.version);
                            let token = task.fencing_token;
                            let started = record(
                                &task,
                                Event::ExecutionStarted {
                                    by_claim: false,
                                    agent: agent(w),
                                    token,
                                },
                                at(2),
                            );
                            let next = started.task.clone();
                            store.apply(started).await.unwrap();
                            ack(next.id, next.version);
                            let done = record(
                                &next,
                                Event::ExecutionSucceeded {
                                    usage: Default::default(),
                                    agent: agent(w),
                                    token,
                                    result: Some(json!({"worker": w as u64})),
                                },
                                at(3),
                            );
                            let version = done.task.version;
                            store.apply(done).await.unwrap();
                            ack(next.id, version);
                        }
                        for id in store.released_blocked(10).await.unwrap() {
                            let Some(task) = store.task(id).await.unwrap() else {
                                continue;
                            };
                            let rec = record(
                                &task,
                                Event::DependenciesMet {
                                    completed: task.dependencies.clone(),
                                    input: None,
                                    unresolved: None,
                                    results: None,
                                },
                                at(4),
                            );
                            let version = rec.task.version;
                            if store.apply(rec).await.is_ok() {
                                ack(id, version);
                            }
                        }
                    }
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
    });
    unreachable!("the workers loop until the parent kills this process")
}

/// Every acknowledged write is stored; every history replays to its task; counters agree.
async fn check_store(path: &std::path::Path, acked: &HashMap<TaskId, u64>) -> u64 {
    let store = SqliteStore::open(path).expect("the store reopens after SIGKILL");
    for (&id, &version) in acked {
        let task = store
            .task(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged task {id} is missing"));
        assert!(
            task.version >= version,
            "task {id}: acked v{version}, stored v{}",
            task.version
        );
    }
    let mut counted = StateCounts::default();
    let mut after = None;
    loop {
        let page = store
            .tasks(TaskFilter {
                after,
                limit: 500,
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for task in &page {
            counted.0[task.kind().index()] += 1;
            let history = store.history(task.id, 0, 1000).await.unwrap();
            assert_eq!(history.len() as u64, task.version, "task {}", task.id);
            assert_eq!(&replay(&history).unwrap(), task, "replay of {}", task.id);
        }
    }
    assert_eq!(
        store.counts(None).await.unwrap(),
        counted,
        "counters match the tasks"
    );
    counted.total()
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_moments() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
    }
    let rounds: u64 = std::env::var("BATON_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("baton.db");
    let exe = std::env::current_exe().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut acked: HashMap<TaskId, u64> = HashMap::new();
    let mut total_acks = 0usize;
    for round in 0..rounds {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let kill_after = Duration::from_millis(30 + (seed >> 33) % 250);
        let mut child = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() == Some("ack") {
                    let id: TaskId = parts.next().unwrap().parse().unwrap();
                    let version: u64 = parts.next().unwrap().parse().unwrap();
                    acks.push((id, version));
                }
            }
            acks
        });
        let started = Instant::now();
        while started.elapsed() < kill_after {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let acks = lines.join().unwrap();
        total_acks += acks.len();
        for (id, version) in acks {
            let v = acked.entry(id).or_insert(0);
            *v = (*v).max(version);
        }
        let tasks = rt.block_on(check_store(&path, &acked));
        eprintln!(
            "round {round}: killed after {kill_after:?}; {tasks} tasks, {total_acks} acks so far"
        );
    }
    assert!(total_acks > 0, "the child acknowledged writes");
}
