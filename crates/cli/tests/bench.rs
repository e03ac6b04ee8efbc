//! `baton bench` (crate `baton-bench`) at tiny sizes, as CI runs it: every scenario ends,
//! prints one JSON record with the figures it promises, and the figures agree with each other
//! and with what was run (every task completed, rates computed from the counts, percentiles in
//! order, nothing lost, no double completion, no invariant violated). No figure is compared
//! with a speed: timings belong in `BENCHMARKS.md`, not in pass/fail.

use std::process::{Command, Stdio};

use serde_json::Value;

const BATON: &str = env!("CARGO_BIN_EXE_baton");

/// Runs `baton bench ARGS --output json`; returns the record after checking its shape.
fn bench(args: &[&str]) -> Value {
    let mut cmd = Command::new(BATON);
    for var in ["BATON_STORE", "BATON_DATA_DIR", "BATON_URL", "BATON_TOKEN"] {
        cmd.env_remove(var);
    }
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
    let record: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(record["scenario"], args[0], "{record:#}");
    assert_eq!(record["ok"], true, "{record:#}");
    assert!(record["machine"]["cores"].as_u64() >= Some(1), "{record:#}");
    assert!(record["parameters"].is_object(), "{record:#}");
    record
}

/// Asserts `a` equals `b` within `rel` (figures are rounded for reading).
#[track_caller]
fn close(a: f64, b: f64, rel: f64, what: &str) {
    assert!(
        (a - b).abs() <= rel * a.abs().max(b.abs()),
        "{what}: {a} is not {b} within {rel}"
    );
}

/// Asserts the percentiles of `key` are in order: p50 <= p99 <= max.
#[track_caller]
fn ordered(record: &Value, key: &str) {
    let (p50, p99) = (
        fig(record, &format!("{key}_p50_ms")),
        fig(record, &format!("{key}_p99_ms")),
    );
    assert!(p50 <= p99, "{key}: p50 {p50} > p99 {p99}");
    if let Some(max) = record["figures"][format!("{key}_max_ms")].as_f64() {
        assert!(p99 <= max, "{key}: p99 {p99} > max {max}");
    }
}

/// A figure, which must be a number.
#[track_caller]
fn fig(record: &Value, key: &str) -> f64 {
    record["figures"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {key}: {record:#}"))
}

#[test]
fn throughput_with_flow_control_completes_every_task() {
    let r = bench(&[
        "throughput",
        "--tasks",
        "200",
        "--agents",
        "2",
        "--batch",
        "8",
        "--flow",
    ]);
    assert_eq!(r["parameters"]["flow"], true);
    assert_eq!(fig(&r, "completed"), 200.0);
    assert_eq!(fig(&r, "errors"), 0.0);
}

#[test]
fn fairness_finishes_the_small_workflow_and_the_backlog() {
    let r = bench(&[
        "fairness",
        "--big",
        "600",
        "--small",
        "5",
        "--after-ms",
        "0",
        "--agents",
        "2",
        "--batch",
        "4",
    ]);
    assert_eq!(fig(&r, "completed"), 605.0);
    let makespan = fig(&r, "small_makespan_s");
    assert!(makespan > 0.0, "{r:#}");
    assert!(fig(&r, "backlog_ahead") <= 600.0);
}

#[test]
fn retention_deletes_what_a_steady_workload_finished() {
    let r = bench(&[
        "retention",
        "--duration-s",
        "4",
        "--rate",
        "10",
        "--tasks",
        "10",
        "--retain-ms",
        "500",
        "--gc-every-ms",
        "200",
        "--sample-ms",
        "500",
        "--agents",
        "2",
    ]);
    assert_eq!(fig(&r, "tasks_submitted"), 400.0);
    assert_eq!(
        fig(&r, "tasks_deleted"),
        400.0,
        "all outlived the retention: {r:#}"
    );
    assert_eq!(fig(&r, "workflows_deleted"), 40.0);
    assert_eq!(fig(&r, "tasks_stored_end"), 0.0);
    let samples = r["figures"]["samples"].as_array().expect("samples");
    assert!(samples.len() >= 8, "{r:#}");
    assert!(samples.iter().all(|s| s[1].as_f64() > Some(0.0)), "{r:#}");
    // Without retention the same work stays.
    let kept = bench(&[
        "retention",
        "--duration-s",
        "2",
        "--rate",
        "10",
        "--tasks",
        "10",
        "--retain-ms",
        "0",
        "--agents",
        "2",
    ]);
    assert_eq!(fig(&kept, "tasks_deleted"), 0.0);
    assert_eq!(fig(&kept, "tasks_stored_end"), 200.0);
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
    assert_eq!(r["parameters"]["tasks"], 300);
    assert_eq!(fig(&r, "completed"), 300.0);
    assert_eq!(fig(&r, "errors"), 0.0);
    // The rate is the completions over the time measured, which is rounded to the
    // millisecond (300 tasks take a few tens of them).
    let elapsed = fig(&r, "elapsed_s");
    assert!(elapsed > 0.0);
    close(
        fig(&r, "tasks_per_s"),
        300.0 / elapsed,
        0.0005 / elapsed + 0.001,
        "tasks_per_s",
    );
    // A claim takes at most a batch: 300 tasks in batches of 16 need 19 claims or more.
    assert!(fig(&r, "claims") >= 19.0, "{r:#}");
    ordered(&r, "claim_to_complete");
    ordered(&r, "ready_to_assigned");
    assert!(fig(&r, "claim_to_complete_max_ms") > 0.0);
    // Every commit writes something; 300 tasks take at least 3 writes each.
    assert!(fig(&r, "writes_per_commit") >= 1.0, "{r:#}");
    assert!(fig(&r, "peak_rss_mib") > 1.0);
}

#[test]
fn throughput_with_a_child_server_reports_its_own_peak_rss() {
    let r = bench(&["throughput", "--tasks", "200", "--agents", "2", "--child"]);
    assert_eq!(r["parameters"]["server"], "child");
    assert_eq!(fig(&r, "completed"), 200.0);
    assert_eq!(fig(&r, "errors"), 0.0);
    // Read from the child's /metrics and its store once it stopped.
    assert!(fig(&r, "writes_per_commit") >= 1.0, "{r:#}");
    ordered(&r, "ready_to_assigned");
    assert!(fig(&r, "server_peak_rss_mib") > 1.0, "{r:#}");
    assert!(r["figures"].get("peak_rss_mib").is_none(), "{r:#}");
}

#[test]
fn dag_releases_dependents_and_compares_with_independent_tasks() {
    let r = bench(&[
        "dag",
        "--tasks",
        "120",
        "--agents",
        "4",
        "--map-items",
        "150",
    ]);
    let tasks = r["parameters"]["tasks"].as_f64().unwrap();
    // The map: every item ran, the join was handed every result, the steps follow each other.
    assert_eq!(fig(&r, "map_completed"), 150.0);
    assert_eq!(fig(&r, "map_join_results"), 150.0);
    for step in ["map_expansion_ms", "map_gather_ms", "map_join_release_ms"] {
        assert!(fig(&r, step) >= 0.0, "{step}: {r:#}");
    }
    assert!(fig(&r, "map_makespan_s") > 0.0);
    assert_eq!(fig(&r, "completed"), tasks);
    assert_eq!(fig(&r, "independent_completed"), tasks);
    assert_eq!(fig(&r, "errors"), 0.0);
    ordered(&r, "release");
    assert!(fig(&r, "fan_in_release_p50_ms") <= fig(&r, "fan_in_release_max_ms"));
    let (graph, flat) = (fig(&r, "makespan_s"), fig(&r, "independent_makespan_s"));
    assert!(graph > 0.0 && flat > 0.0);
    // Each makespan is rounded to the millisecond, and a run of 120 independent tasks takes a
    // few tens of them: the ratio of the rounded figures is off by up to their rounding.
    let rounding = 0.0005 / graph + 0.0005 / flat;
    close(
        fig(&r, "makespan_ratio"),
        graph / flat,
        rounding + 0.001,
        "makespan_ratio",
    );
}

#[test]
fn timeouts_requeue_every_lease() {
    let r = bench(&["timeouts", "--tasks", "300", "--start-timeout-ms", "1500"]);
    assert_eq!(fig(&r, "requeued"), 300.0);
    // The watchdog never takes a lease back before its deadline.
    assert_eq!(fig(&r, "requeued_before_deadline"), 0.0);
    assert!(fig(&r, "requeue_after_last_deadline_ms") >= 0.0, "{r:#}");
    ordered(&r, "lag");
    assert!(fig(&r, "cpu_s") > 0.0, "the watchdog's work costs CPU");
}

#[test]
fn scale_compares_a_big_store_with_an_empty_one() {
    let r = bench(&["scale", "--tasks", "1000", "--probes", "20"]);
    // Both stores got the same 20 probes, every one completed; the big one holds the 1,000
    // finished tasks on top.
    assert_eq!(fig(&r, "empty_total"), 20.0);
    assert_eq!(fig(&r, "empty_completed"), 20.0);
    assert_eq!(fig(&r, "big_total") - fig(&r, "empty_total"), 1000.0);
    assert_eq!(
        fig(&r, "big_completed") - fig(&r, "empty_completed"),
        1000.0
    );
    for store in ["empty", "big"] {
        ordered(&r, &format!("{store}_claim"));
        ordered(&r, &format!("{store}_counts"));
        assert!(fig(&r, &format!("{store}_start_ms")) > 0.0, "{store}");
        assert!(fig(&r, &format!("{store}_rss_mib")) > 1.0, "{store}");
    }
    close(
        fig(&r, "claim_p50_ratio"),
        fig(&r, "big_claim_p50_ms") / fig(&r, "empty_claim_p50_ms"),
        0.02,
        "claim_p50_ratio",
    );
}

#[test]
fn core_and_store_measure_their_ceilings() {
    let r = bench(&["core", "--millis", "100"]);
    // Rounds of 1,000 happy paths of 4 transitions each.
    let transitions = fig(&r, "transitions");
    assert!(
        transitions >= 4_000.0 && transitions % 4_000.0 == 0.0,
        "{r:#}"
    );
    close(
        fig(&r, "transitions_per_s") * fig(&r, "ns_per_transition"),
        1e9,
        0.01,
        "transitions/s x ns per transition",
    );

    let r = bench(&["store", "--writers", "1,8", "--millis", "150"]);
    assert!(fig(&r, "disk_fsync_per_s") > 0.0);
    for w in [1, 8] {
        assert!(fig(&r, &format!("w{w}_transitions_per_s")) > 0.0);
        // One writer waits for each commit: one write per commit; eight share some.
        let per_commit = fig(&r, &format!("w{w}_writes_per_commit"));
        assert!(
            (1.0..=f64::from(w)).contains(&per_commit),
            "w{w}: {per_commit}"
        );
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
fn reads_answers_every_read_of_a_big_input() {
    let r = bench(&[
        "reads",
        "--concurrency",
        "4",
        "--tasks",
        "3",
        "--rounds",
        "2",
        "--input-bytes",
        "20000",
        "--settle-s",
        "0",
    ]);
    // Every reader read its tasks, each answer was checked (its own input, whole).
    assert_eq!(fig(&r, "reads"), 8.0);
    assert_eq!(fig(&r, "errors"), 0.0);
    let input = fig(&r, "input_json_bytes");
    assert!((20_000.0..21_000.0).contains(&input), "{r:#}");
    // An answer carries the input once, beside the rest of the task.
    assert_eq!(fig(&r, "input_copies_per_answer"), 1.0, "{r:#}");
    assert!(fig(&r, "answer_bytes") > input, "{r:#}");
    ordered(&r, "read");
    assert!(fig(&r, "peak_rss_mib") > 1.0 && fig(&r, "settled_rss_mib") > 1.0);

    // Lists and graphs do not show inputs: each answer was checked (every task listed, the
    // task's own graph) and carries no copy.
    for read in ["list", "graph"] {
        let r = bench(&[
            "reads",
            "--read",
            read,
            "--concurrency",
            "2",
            "--tasks",
            "3",
            "--rounds",
            "2",
            "--input-bytes",
            "20000",
            "--settle-s",
            "0",
        ]);
        assert_eq!(r["parameters"]["read"], read);
        assert_eq!(fig(&r, "reads"), 4.0, "{read}");
        assert_eq!(fig(&r, "errors"), 0.0, "{read}");
        assert_eq!(fig(&r, "input_copies_per_answer"), 0.0, "{read}: {r:#}");
    }
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
