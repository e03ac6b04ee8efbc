//! Crash-restart torture of one `baton serve`: agents work a workflow of thousands of tasks
//! with dependencies and retries while the server is killed with SIGKILL at random moments,
//! over and over, and started again on the same store (sometimes killed again while it starts).
//! Afterwards every task has completed exactly once, every report the server acknowledged is
//! in its task's history, and `baton check` finds nothing wrong. Run on SQLite and PostgreSQL.
//!
//! The kill moments are drawn from a seed, printed at the start; set it again to repeat a run:
//!
//! - `BATON_TORTURE_SEED`: the seed (default: from the clock);
//! - `BATON_TORTURE_KILLS`: SIGKILLs while the workflow runs (default 20);
//! - `BATON_TORTURE_TASKS`: tasks in the workflow (default 2,000);
//! - `BATON_TORTURE_AGENTS`: agents (default 8).
//!
//! At the defaults each test takes well under 90 s as a debug build on two cores; raise the
//! numbers for longer runs.

mod common;
#[path = "common/fleet.rs"]
mod fleet;

use std::time::{Duration, Instant};

use baton_store::AnyStore;
use common::*;
use fleet::*;

const TASKS_DEFAULT: u64 = 2_000;
const KILLS_DEFAULT: u64 = 20;
const AGENTS_DEFAULT: u64 = 8;
/// A claimed task whose agent never heard of its claim (the answer died with the server)
/// comes back after this long.
const START_MS: u64 = 2_000;

/// The two tests take turns: each has the machine to itself.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// splitmix64: a small, well-mixed generator, enough to draw kill moments from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs the torture against `baton serve ARGS`, whose store is at `store_url`.
fn torture(label: &str, args: &[&str], store_url: &str, dir: &std::path::Path) {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tasks = env_or("BATON_TORTURE_TASKS", TASKS_DEFAULT);
    let kills = env_or("BATON_TORTURE_KILLS", KILLS_DEFAULT);
    let agents = env_or("BATON_TORTURE_AGENTS", AGENTS_DEFAULT);
    let seed = env_or(
        "BATON_TORTURE_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    eprintln!(
        "torture ({label}): seed {seed} (BATON_TORTURE_SEED={seed} repeats the kill moments), \
         {tasks} tasks, {kills} kills, {agents} agents"
    );
    assert!(tasks >= 100, "BATON_TORTURE_TASKS is at least 100");
    let began = Instant::now();
    // Generous: a healthy run at the defaults takes a fraction of it.
    let deadline = began + Duration::from_secs(240 + tasks / 20 + kills * 3);
    let mut rng = Rng(seed);

    let mut node = Node::start(args, dir.join("serve.log"));
    let rt = runtime();
    let urls = vec![node.url.clone()];
    let specs = workflow(tasks as usize, START_MS);
    let workflow = rt.block_on(submit(&urls, &specs));
    let fleet = Fleet::start(&rt, &urls, agents as usize, false);
    let ledger = std::sync::Arc::clone(&fleet.ledger);

    // Kill when this many successes were acknowledged (1% to 90% of the tasks), plus a few
    // random milliseconds; one time in five, kill it again while it starts.
    let mut moments: Vec<u64> = (0..kills)
        .map(|_| tasks / 100 + rng.below(tasks * 89 / 100))
        .collect();
    moments.sort_unstable();
    let mut killed = 0;
    let mut killed_starting = 0;
    for moment in moments {
        while ledger.succeeded() < moment {
            assert!(
                Instant::now() < deadline,
                "no progress: {} successes acknowledged, waiting for {moment}; unexpected: {:?}\n{}",
                ledger.succeeded(),
                ledger.unexpected_answers(),
                node.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.below(200)));
        node.kill();
        killed += 1;
        if rng.below(5) == 0 {
            node.spawn();
            std::thread::sleep(Duration::from_millis(rng.below(150)));
            node.kill();
            killed_starting += 1;
        }
        node.restart();
    }

    // The rest runs undisturbed to the end.
    loop {
        if let Some((ended, total)) = rt.block_on(progress(&urls, workflow)) {
            if ended == total {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the workflow did not end: {ended} of {total} tasks ended; unexpected: {:?}\n{}",
                ledger.unexpected_answers(),
                node.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ledger = fleet.stop(&rt);
    let unexpected = ledger.unexpected_answers();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    let status = node.terminate().expect("the node runs");
    assert!(status.success(), "baton serve stopped with {status}");

    let acks = ledger.acks();
    let verified = rt.block_on(async {
        let store = AnyStore::open(store_url).await.expect("the store opens");
        verify(&store, workflow, &acks).await
    });
    assert_eq!(verified.tasks as u64, tasks);
    let mut check = baton();
    check.args(["check", "--store", store_url, "--output", "json"]);
    let out = run_for(check, Duration::from_secs(60 + tasks / 50));
    let report = out.ok().json();
    assert_eq!(report["violations"], serde_json::json!([]), "{report:#}");

    eprintln!(
        "torture ({label}): survived {} SIGKILLs ({killed} while working, {killed_starting} while \
         starting) over {} tasks ({} retried, {} history entries); {} acknowledged reports \
         verified; {} connection errors and {} 503s retried, {} reports refused as stale; \
         {:.1} s",
        killed + killed_starting,
        verified.tasks,
        verified.retried_tasks,
        verified.history_entries,
        verified.acks,
        ledger
            .transport_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        ledger
            .unavailable
            .load(std::sync::atomic::Ordering::Relaxed),
        ledger.conflicts.load(std::sync::atomic::Ordering::Relaxed),
        began.elapsed().as_secs_f64()
    );
}

#[test]
fn sqlite_survives_repeated_sigkills_losing_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let data = data.to_str().expect("a UTF-8 path");
    let store = format!("{data}/baton.db");
    torture("sqlite", &["--data-dir", data], &store, dir.path());
}

#[test]
fn postgres_survives_repeated_sigkills_losing_nothing_acknowledged() {
    let Some(schema) = PgSchema::new("baton_tt_") else {
        return;
    };
    let url = schema.url();
    let dir = tempfile::tempdir().expect("a temporary directory");
    torture("postgres", &["--store", &url], &url, dir.path());
}
