//! `baton demo` as a newcomer runs it: it ends on its own, every task ended, and the summary
//! shows what the demo promises: decomposition, retries, a recovered timeout, a failure for good
//! with its compensation and cancelled dependents.

mod common;

use std::collections::BTreeSet;

use common::baton;
use serde_json::json;

#[test]
fn demo_ends_with_every_expected_outcome() {
    let run = common::run({
        let mut cmd = baton();
        cmd.args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--output",
            "json",
            "--pace",
            "0",
        ]);
        cmd
    });
    let summary = run.ok().json();
    assert_eq!(summary["ok"], true, "{summary:#}\n{}", run.stderr);
    assert_eq!(summary["missing"], json!([]));
    let counts = &summary["counts"];
    for open in ["blocked", "pending", "assigned", "executing"] {
        assert_eq!(counts[open], 0, "{open}: {counts}");
    }
    let total = counts["total"].as_u64().unwrap();
    assert!((200..=300).contains(&total), "a few hundred tasks: {total}");
    let sections = summary["sections"].as_u64().unwrap();
    assert_eq!(
        summary["added_by_planners"].as_u64().unwrap(),
        total - 4 - sections
    );
    // The workflow failed (one task did, as planned), and its outputs still resolved: the
    // cover fanned out over the outline's topics, one line per section, in order.
    assert_eq!(summary["workflow"]["status"], "failed");
    let result = &summary["workflow"]["result"];
    assert_eq!(result["goal"], "Quarterly technology briefing");
    let cover = result["cover"].as_array().unwrap();
    assert_eq!(cover.len() as u64, sections);
    assert!(
        cover[0].as_str().unwrap().contains("stands this quarter"),
        "{cover:?}"
    );
    assert_eq!(counts["failed"], 1);
    assert_eq!(counts["cancelled"], 3);
    assert_eq!(counts["completed"].as_u64().unwrap(), total - 4);

    assert_eq!(summary["failed"][0]["key"], "s02/research-3");
    assert_eq!(summary["failed"][0]["kind"], "source_forbidden");
    assert_eq!(
        summary["compensations"],
        json!([{"key": "s02/research-3/undo", "state": "completed"}])
    );
    let cancelled: BTreeSet<&str> = summary["cancelled"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert_eq!(
        cancelled,
        BTreeSet::from(["s02/write", "s02/review", "s02/publish"])
    );
    let recovered = summary["timeouts_recovered"].as_array().unwrap();
    assert!(
        recovered.contains(&json!("s00/research-0")),
        "{recovered:?}"
    );
    assert_eq!(summary["late_reports_refused"], 1);
    assert!(summary["errors_by_kind"]["timeout.heartbeat"].as_u64() >= Some(1));
    assert!(summary["errors_by_kind"]["rate_limited"].as_u64() >= Some(5));
    assert!(summary["retries"].as_u64() >= Some(6), "{summary:#}");
    // How long it took is a figure for people (the summary prints it), not a test's business.
    assert!(summary["elapsed_ms"].is_u64(), "{summary:#}");
    assert!(summary["transitions"].as_u64() > Some(total * 3));
    assert!(summary["api"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
}

#[test]
fn demo_prints_its_urls_progress_and_summary_for_people() {
    let run = common::run({
        let mut cmd = baton();
        cmd.args(["demo", "--listen", "127.0.0.1:0", "--tasks", "60"]);
        cmd
    });
    run.ok();
    let out = &run.stdout;
    for expected in [
        "dashboard  http://127.0.0.1:",
        "API        http://127.0.0.1:",
        "(temporary)",
        "tasks ended │ blocked",
        "(about 300 ms a task: --pace MS)",
        "failed           1  s02/research-3: source_forbidden",
        "s02/write, s02/review, s02/publish (upstream failed)",
        "1 recovered (s00/research-0)",
        "compensation   s02/research-3/undo completed",
        "fan-out        cover expanded into",
        "workflow       failed; its result",
        "cover  \"Quarterly technology briefing: where",
        "Every task ended and every expected outcome happened.",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
    let progress = out.lines().filter(|l| l.starts_with("[ ")).count();
    assert!(
        progress >= 2,
        "at the default pace the progress shows for seconds:\n{out}"
    );
    assert!(
        !out.contains('\u{1b}'),
        "no terminal codes when stdout is not a terminal"
    );
}
