//! `baton serve --tokens FILE`: tokens of every role from a file, combined with the flags',
//! replaced at once on SIGHUP (a file refused then leaves the tokens in force), and a file
//! refused at start naming the field at fault. Drives the real binary.

#![cfg(unix)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The SHA-256 of `look-but-do-not-touch`, the viewer's secret, given in the file instead of it.
const VIEWER_SHA256: &str = "3f9bd4c3cfae92e7bc5c6369c8ff763271def724eb55eb6408d136b6c7edfa1c";

fn tokens_file(dir: &std::path::Path, operator_secret: &str) -> std::path::PathBuf {
    let path = dir.join("tokens.json");
    write_tokens(&path, operator_secret);
    path
}

fn write_tokens(path: &std::path::Path, operator_secret: &str) {
    let text = format!(
        r#"{{"tokens": [
            {{"name": "ci", "role": "operator", "secret": "{operator_secret}"}},
            {{"name": "eyes", "role": "viewer", "secret_sha256": "{VIEWER_SHA256}"}},
            {{"name": "workers", "role": "agent", "secret": "agent-secret",
              "agents": ["worker-*"], "agents_max": 8}}
        ]}}"#
    );
    std::fs::write(path, text).unwrap();
}

/// Whether `baton tasks` is let through with `token`.
fn reads_with(srv: &Server, token: &str) -> bool {
    srv.run(&["tasks", "--token", token]).code == Some(0)
}

/// Waits (at most 10 s) until `ok` holds.
fn eventually(what: &str, srv: &Server, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} never happened: {}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tokens_come_from_a_file_and_are_replaced_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = tokens_file(dir.path(), "first-secret");
    let srv = Server::start_with(&[
        "--tokens",
        path.to_str().unwrap(),
        "--admin-token",
        "root-secret",
    ]);
    // The file's tokens and the flag's, each with its role.
    assert!(reads_with(&srv, "first-secret"));
    assert!(reads_with(&srv, "look-but-do-not-touch"), "by its SHA-256");
    assert!(reads_with(&srv, "root-secret"));
    assert!(
        !reads_with(&srv, "agent-secret"),
        "an agent does not list tasks"
    );
    let workflow = srv.file("wf.json", r#"{"tasks": [{"key": "a"}]}"#);
    let workflow = workflow.to_str().unwrap();
    let refused = srv.run(&["submit", workflow, "--token", "look-but-do-not-touch"]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("403"), "{refused:#?}");
    srv.run(&["submit", workflow, "--token", "first-secret"])
        .ok();
    let log = srv.log();
    assert!(log.contains("tokens loaded"), "{log}");
    assert!(
        log.contains("operator=1") && log.contains("admin=1"),
        "{log}"
    );
    for secret in ["first-secret", "root-secret", "agent-secret", "look-but"] {
        assert!(!log.contains(secret), "the log shows a secret: {log}");
    }

    // Rotated: the new secret works, the old one no longer does.
    write_tokens(&path, "second-secret");
    srv.signal(libc::SIGHUP);
    eventually("the rotation", &srv, || reads_with(&srv, "second-secret"));
    assert!(!reads_with(&srv, "first-secret"));
    assert!(reads_with(&srv, "root-secret"), "the flags' tokens stay");
    assert!(srv.log().contains("tokens reloaded"));

    // A file refused on reload changes nothing, and says why.
    std::fs::write(
        &path,
        r#"{"tokens": [{"name": "ci", "role": "operator", "secret": "third-secret"},
                       {"name": "ci", "role": "viewer", "secret": "fourth-secret"}]}"#,
    )
    .unwrap();
    srv.signal(libc::SIGHUP);
    eventually("the refusal", &srv, || {
        srv.log().contains("tokens file refused")
    });
    assert!(srv.log().contains("tokens[1].name"), "{}", srv.log());
    assert!(
        reads_with(&srv, "second-secret"),
        "the tokens in force stay"
    );
    assert!(!reads_with(&srv, "third-secret"));
    std::fs::write(&path, "{not json").unwrap();
    srv.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        reads_with(&srv, "second-secret"),
        "the tokens in force stay"
    );
}

#[test]
fn a_tokens_file_refused_at_start_names_the_field_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    std::fs::write(
        &path,
        "{\"tokens\": [\n  {\"name\": \"ci\", \"role\": \"operater\", \"secret\": \"s\"}\n]}",
    )
    .unwrap();
    let mut cmd = baton();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--tokens")
        .arg(&path);
    let out = run(cmd);
    assert_ne!(out.code, Some(0), "{out:#?}");
    for says in ["tokens.json", "tokens[0].role", "operater", "line 2"] {
        assert!(out.stderr.contains(says), "{says:?} missing: {out:#?}");
    }
}
