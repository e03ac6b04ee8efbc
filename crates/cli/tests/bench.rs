//! `baton bench` at tiny sizes, as CI runs it: every scenario ends, prints one JSON record with
//! the figures it promises, and the figures are sane (every task completed, nothing lost, no
//! double completion, no invariant violated).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BATON: &str = env!("CARGO_BIN_EXE_baton");
/// Longest one scenario may take at these sizes, in a debug build on a busy machine.
const SCENARIO_MAX: Duration = Duration::from_secs(120);

/// Runs `baton bench ARGS --output json`; returns the record after checking its shape.
fn bench(args: &[&str]) -> Value {
    let mut cmd = Command::new(BATON);
    for var in ["BATON_STORE", "BATON_DATA_DIR", "BATON_URL", "BATON_TOKEN"] {
        cmd.env_remove(var);
    }
    let started = Instant::now();
    let out = cmd
        .arg("bench")
        .args(args)
        .args(["--output", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("baton runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "baton bench {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        started.elapsed() < SCENARIO_MAX,
        "baton bench {args:?} took {:?}",
        started.elapsed()
    );
    let record: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(record["scenario"], args[0], "{record:#}");
    assert_eq!(record["ok"], true, "{record:#}");
    assert!(record["machine"]["cores"].as_u64() >= Some(1), "{record:#}");
    assert!(record["parameters"].is_object(), "{record:#}");
    record
}

/// A figure, which must be a number.
#[track_caller]
fn fig(record: &Value, key: &str) -> f64 {
    record["figures"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {key}: {record:#}"))
}

#[test]
fn throughput_completes_every_task() {
    let r = bench(&[
        "throughput",
        "--tasks",
        "300",
        "--agents",
        "4",
        "--batch",
        "16",
    ]);
    assert_eq!(fig(&r, "completed"), 300.0);
    assert!(fig(&r, "tasks_per_s") > 0.0);
    assert_eq!(fig(&r, "errors"), 0.0);
    for key in [
        "claim_to_complete_p50_ms",
        "claim_to_complete_p99_ms",
        "claim_to_complete_max_ms",
        "ready_to_assigned_p99_ms",
        "writes_per_commit",
    ] {
        assert!(fig(&r, key) >= 0.0, "{key}");
    }
    assert!(fig(&r, "claim_to_complete_p50_ms") <= fig(&r, "claim_to_complete_max_ms"));
    assert!(fig(&r, "peak_rss_mib") > 1.0);
    assert_eq!(r["parameters"]["tasks"], 300);
}

#[test]
fn dag_releases_dependents_and_compares_with_independent_tasks() {
    let r = bench(&["dag", "--tasks", "120", "--agents", "4"]);
    let tasks = r["parameters"]["tasks"].as_f64().unwrap();
    assert_eq!(fig(&r, "completed"), tasks);
    assert_eq!(fig(&r, "independent_completed"), tasks);
    assert!(fig(&r, "release_p50_ms") >= 0.0);
    assert!(fig(&r, "release_p99_ms") >= fig(&r, "release_p50_ms"));
    assert!(fig(&r, "makespan_s") > 0.0 && fig(&r, "independent_makespan_s") > 0.0);
    assert!(fig(&r, "makespan_ratio") > 0.0);
}

#[test]
fn timeouts_requeue_every_lease() {
    let r = bench(&["timeouts", "--tasks", "300", "--start-timeout-ms", "1500"]);
    assert_eq!(fig(&r, "requeued"), 300.0);
    assert!(fig(&r, "lag_p99_ms") >= 0.0);
    assert!(fig(&r, "cpu_s") >= 0.0);
    assert!(fig(&r, "requeue_after_last_deadline_ms") < 60_000.0);
}

#[test]
fn scale_compares_a_big_store_with_an_empty_one() {
    let r = bench(&["scale", "--tasks", "1000", "--probes", "20"]);
    assert_eq!(fig(&r, "big_total"), 1020.0);
    assert_eq!(fig(&r, "empty_total"), 20.0);
    for key in [
        "empty_start_ms",
        "big_start_ms",
        "empty_claim_p50_ms",
        "big_claim_p99_ms",
        "big_counts_p50_ms",
    ] {
        assert!(fig(&r, key) > 0.0, "{key}");
    }
    assert!(fig(&r, "big_rss_mib") > 1.0);
}

#[test]
fn core_and_store_measure_their_ceilings() {
    let r = bench(&["core", "--millis", "100"]);
    assert!(fig(&r, "transitions_per_s") > 1_000.0);

    let r = bench(&["store", "--writers", "1,8", "--millis", "150"]);
    assert!(fig(&r, "disk_fsync_per_s") > 0.0);
    for w in [1, 8] {
        assert!(fig(&r, &format!("w{w}_transitions_per_s")) > 0.0);
        assert!(fig(&r, &format!("w{w}_writes_per_commit")) >= 1.0);
        assert!(fig(&r, &format!("w{w}_raw_sqlite_per_s")) > 0.0);
    }
}

#[test]
fn crash_survives_every_kill_without_losing_or_doubling_anything() {
    let r = bench(&["crash", "--kills", "3", "--tasks", "120", "--agents", "4"]);
    assert_eq!(fig(&r, "kills_survived"), 3.0);
    assert_eq!(fig(&r, "tasks_completed"), 120.0);
    // Every completion is acknowledged unless its answer died with the server and the run
    // ended before the retry; what matters is that none acknowledged is missing.
    assert!((100.0..=120.0).contains(&fig(&r, "completions_acknowledged")));
    assert_eq!(fig(&r, "double_completions"), 0.0);
    assert_eq!(fig(&r, "lost_acknowledgements"), 0.0);
    assert_eq!(fig(&r, "violations"), 0.0);
    assert!(fig(&r, "reports_acknowledged") >= 200.0);
}

#[test]
fn a_bad_store_url_is_refused() {
    let out = Command::new(BATON)
        .args(["bench", "throughput", "--nodes", "2", "--tasks", "10"])
        .env_remove("BATON_STORE")
        .stdin(Stdio::null())
        .output()
        .expect("baton runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("postgres"), "{stderr}");
}
