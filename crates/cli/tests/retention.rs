//! Retention, backup and restore through the real binary: `baton gc --dry-run` says what
//! would go (on a live store), `baton gc` deletes it (refused while a server owns the SQLite
//! store); `baton backup` copies a store while its server writes, the copy checks clean with
//! `baton check` and serves again (the restore).

mod common;
#[path = "common/fleet.rs"]
mod fleet;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// The server's data directory.
fn data_dir(srv: &Server) -> PathBuf {
    srv.file("marker", "").parent().unwrap().join("data")
}

fn submit(srv: &Server, name: &str, text: &str) -> String {
    let path = srv.file(name, text);
    srv.run(&["submit", path.to_str().unwrap(), "--output", "json"])
        .ok()
        .json()["workflow"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn gc(data: &std::path::Path, extra: &[&str]) -> Run {
    let mut cmd = baton();
    cmd.arg("gc").arg("--data-dir").arg(data).args(extra);
    run(cmd)
}

#[test]
fn baton_gc_says_what_would_go_and_deletes_it_once_no_server_owns_the_store() {
    let mut srv = Server::start();
    let data = data_dir(&srv);
    let done = submit(
        &srv,
        "done.yaml",
        "tasks:\n  - key: a\n  - key: b\n    depends_on: [a]\n",
    );
    let live = submit(&srv, "live.yaml", "tasks:\n  - key: x\n");
    srv.run(&["cancel", "--workflow", &done, "--reason", "not needed"])
        .ok();
    // The cancellation's effects are carried out, then a second passes: it finished before
    // a retention of one second.
    std::thread::sleep(Duration::from_millis(2_500));

    let dry = gc(&data, &["--dry-run", "--retain", "1s", "--output", "json"]);
    let report = dry.ok().json();
    assert_eq!(report["dry_run"], true, "{report}");
    assert_eq!(report["workflows"], 1, "{report}");
    assert_eq!(report["tasks"], 2, "{report}");
    assert!(report["history_entries"].as_u64().unwrap() >= 4, "{report}");
    let table = gc(&data, &["--dry-run", "--retain", "1s"]);
    let text = &table.ok().stdout;
    assert!(
        text.starts_with("Would delete workflows that finished before ") && text.contains("1s ago"),
        "{text}"
    );
    assert!(text.contains("  workflows                  1"), "{text}");

    // The server owns the store: deleting beside it is refused, saying why and what to do.
    let refused = gc(&data, &["--retain", "1s"]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(
        refused.stderr.contains("a baton serve (pid")
            && refused.stderr.contains("baton gc --dry-run"),
        "{refused:#?}"
    );
    let still = srv.run(&["show", &done]);
    still.ok();

    assert!(srv.terminate().success());
    let deleted = gc(&data, &["--retain", "1s", "--output", "json"])
        .ok()
        .json();
    assert_eq!(deleted["dry_run"], false);
    assert_eq!(
        (&deleted["workflows"], &deleted["tasks"]),
        (&report["workflows"], &report["tasks"]),
        "it deleted what the dry run said: {deleted}"
    );
    let again = gc(&data, &["--dry-run", "--retain", "1s", "--output", "json"])
        .ok()
        .json();
    assert_eq!(again["workflows"], 0, "{again}");

    let mut check = baton();
    check
        .args(["check", "--output", "json", "--data-dir"])
        .arg(&data);
    let checked = run(check).ok().json();
    assert_eq!(checked["tasks"], 1, "the live workflow's task: {checked}");
    assert_eq!(checked["violations"].as_array().unwrap().len(), 0);
    let db = data.join("baton.db");
    let restarted = Server::start_with(&["--store", db.to_str().unwrap()]);
    assert_eq!(restarted.run(&["show", &done]).code, Some(1), "gone");
    restarted.run(&["show", &live]).ok();
}

#[test]
fn retention_flags_are_checked_and_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let bad = gc(dir.path(), &["--retain", "30days"]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
    assert!(
        bad.stderr.contains("--retain") && bad.stderr.contains("30d, 12h"),
        "{bad:#?}"
    );
    let missing = gc(&dir.path().join("nowhere"), &["--dry-run"]);
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("no store at"), "{missing:#?}");

    let mut serve = baton();
    serve
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--agent-retention",
            "10s",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"));
    let refused = run_for(serve, Duration::from_secs(30));
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(
        refused
            .stderr
            .contains("--agent-retention 10s is shorter than the liveness window"),
        "{refused:#?}"
    );
}

#[test]
fn a_backup_taken_while_the_server_writes_checks_clean_and_serves_again() {
    let srv = Server::start();
    let data = data_dir(&srv);
    let notes = srv.file("notes.txt", "durable notes\n");
    let artifact = srv
        .run(&["artifact", "put", notes.to_str().unwrap()])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let referring = submit(
        &srv,
        "refers.yaml",
        &format!("tasks:\n  - key: read\n    capabilities: [nobody]\n    input: {{doc: {{$artifact: \"{artifact}\"}}}}\n"),
    );

    // Agents work, and workflows keep coming, while the backup is taken.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let urls = vec![srv.url.clone()];
    let fleet = fleet::Fleet::start(&rt, &urls, 4, false);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, urls) = (Arc::clone(&stop), urls.clone());
        let handle = rt.handle().clone();
        std::thread::spawn(move || {
            let mut submitted = 0;
            while !stop.load(Ordering::SeqCst) {
                handle.block_on(fleet::submit(&urls, &fleet::workflow(100, 60_000)));
                submitted += 1;
            }
            submitted
        })
    };
    std::thread::sleep(Duration::from_millis(1_500));
    let copy = tempfile::tempdir().unwrap();
    let file = copy.path().join("backup.db");
    let mut backup = baton();
    backup
        .args(["backup", "--output", "json", "--data-dir"])
        .arg(&data)
        .arg(&file);
    let started = Instant::now();
    let report = run(backup).ok().json();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let submitted = writer.join().unwrap();
    fleet.stop(&rt);
    assert!(
        submitted >= 2,
        "workflows were submitted meanwhile: {submitted}"
    );
    assert_eq!(report["artifacts"], 1, "{report}");
    assert!(report["bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // A backup never overwrites.
    let mut again = baton();
    again.args(["backup", "--data-dir"]).arg(&data).arg(&file);
    let refused = run(again);
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.contains("exists already"), "{refused:#?}");

    let mut check = baton();
    check
        .args(["check", "--output", "json", "--store"])
        .arg(&file);
    let checked = run(check).ok().json();
    assert_eq!(
        checked["violations"].as_array().unwrap().len(),
        0,
        "{checked}"
    );
    let tasks = checked["tasks"].as_u64().unwrap();
    assert!(tasks > 100, "{checked}");

    // The restore: a server on the copy.
    let restored = Server::start_with(&["--store", file.to_str().unwrap()]);
    let client = baton_client::Client::new(&restored.url).unwrap();
    let total = rt.block_on(client.counts(None)).unwrap().total;
    assert_eq!(total, tasks);
    restored.run(&["show", &referring]).ok();
    let got = restored.run(&["artifact", "get", &artifact]);
    assert_eq!(got.ok().stdout, "durable notes\n");
}

#[test]
fn a_postgresql_store_is_backed_up_with_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = baton();
    cmd.args([
        "backup",
        "--store",
        "postgres://baton:secret@db.internal:5432/baton?schema=prod",
    ])
    .arg(dir.path().join("copy.db"));
    let refused = run(cmd);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(
        refused.stderr.contains("pg_dump") && refused.stderr.contains("Backup and restore"),
        "{refused:#?}"
    );
    assert!(
        !refused.stderr.contains("secret"),
        "the password is not shown"
    );
    assert!(!dir.path().join("copy.db").exists());
}

#[test]
fn on_postgresql_baton_gc_runs_beside_the_servers() {
    let Some(schema) = fleet::PgSchema::new("baton_gc_") else {
        return;
    };
    let url = schema.url();
    let srv = Server::start_with(&["--store", &url]);
    let done = submit(&srv, "done.yaml", "tasks:\n  - key: a\n  - key: b\n");
    let live = submit(&srv, "live.yaml", "tasks:\n  - key: x\n");
    srv.run(&["cancel", "--workflow", &done, "--reason", "not needed"])
        .ok();
    std::thread::sleep(Duration::from_millis(2_500));
    let gc_on = |extra: &[&str]| {
        let mut cmd = baton();
        cmd.args(["gc", "--store", &url, "--retain", "1s", "--output", "json"])
            .args(extra);
        run(cmd).ok().json()
    };
    assert_eq!(gc_on(&["--dry-run"])["workflows"], 1);
    let deleted = gc_on(&[]);
    assert_eq!(
        (&deleted["workflows"], &deleted["tasks"]),
        (&1.into(), &2.into())
    );
    // The server goes on, without the deleted workflow.
    assert_eq!(srv.run(&["show", &done]).code, Some(1));
    srv.run(&["show", &live]).ok();
    let mut check = baton();
    check.args(["check", "--store", &url, "--output", "json"]);
    let checked = run(check).ok().json();
    assert_eq!(
        checked["violations"].as_array().unwrap().len(),
        0,
        "{checked}"
    );
}
