//! `baton check` on a store a real workflow ran through.

mod common;

use common::*;

#[test]
fn the_demos_store_checks_clean_and_a_missing_store_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let mut demo = baton();
    demo.args([
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--output",
        "json",
        "--pace",
        "0",
    ]);
    run(demo).ok();

    let mut check = baton();
    check.args(["check", "--data-dir", data]);
    let out = run(check);
    out.ok();
    assert!(out.stdout.contains("no violations"), "{}", out.stdout);

    let mut json = baton();
    json.args(["check", "--data-dir", data, "--output", "json"]);
    let report = run(json).ok().json();
    assert!(report["tasks"].as_u64().unwrap() > 200);
    assert_eq!(report["violations"].as_array().unwrap().len(), 0);

    let mut missing = baton();
    missing.args([
        "check",
        "--data-dir",
        dir.path().join("nowhere").to_str().unwrap(),
    ]);
    let out = run(missing);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("no store at"), "{}", out.stderr);
}
