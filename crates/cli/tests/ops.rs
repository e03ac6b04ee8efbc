//! The operator commands, run as a user would: the built `baton` binary against a real
//! `baton serve`.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::Value;

const PIPELINE_YAML: &str = "\
# A two-step pipeline.
name: pipeline
labels: {tenant: globex}
tasks:
  - key: plan
    capabilities: [think]
    input: {topic: durable execution}
  - key: write
    depends_on: [plan]
    retry:
      max_attempts: 5
";

const REPORT_JSON: &str = r#"{
  "name": "report",
  "idempotency_key": "report-1",
  "tasks": [
    {"key": "gather", "input": {"sources": 3}},
    {"key": "summarize", "depends_on": ["gather"], "priority": 5}
  ]
}
"#;

/// Submits `text` as the file `name`, answering the ids by key.
fn submit(srv: &Server, name: &str, text: &str) -> Value {
    let path = srv.file(name, text);
    srv.run(&["submit", path.to_str().unwrap(), "--output", "json"])
        .ok()
        .json()
}

fn task_count(srv: &Server) -> usize {
    let list = srv.run(&["tasks", "--output", "json"]).ok().json();
    list["tasks"].as_array().expect("a list of tasks").len()
}

#[test]
fn yaml_and_json_workflows_are_submitted_and_listed() {
    let srv = Server::start();
    let yaml = srv.file("pipeline.yaml", PIPELINE_YAML);
    let run = srv.run(&["submit", yaml.to_str().unwrap()]);
    run.ok();
    assert!(run.stdout.starts_with("Submitted workflow "), "{run:#?}");
    assert!(
        run.stdout.contains("plan") && run.stdout.contains("write"),
        "{run:#?}"
    );

    let created = submit(&srv, "report.json", REPORT_JSON);
    assert_eq!(created["created"], true);
    let workflow = created["workflow"].as_str().unwrap().to_owned();
    let ids = created["tasks"].as_object().unwrap();
    assert_eq!(ids.len(), 2);

    let table = srv.run(&["tasks"]);
    table.ok();
    let header = table.stdout.lines().next().unwrap();
    for column in ["ID", "KEY", "STATE", "ATTEMPT", "UPDATED"] {
        assert!(header.contains(column), "{header}");
    }
    for key in ["plan", "write", "gather", "summarize"] {
        assert!(table.stdout.contains(key), "{key} missing: {table:#?}");
    }
    assert!(table.stdout.contains("Blocked") && table.stdout.contains("Pending"));

    assert_eq!(task_count(&srv), 4);
    let blocked = srv
        .run(&[
            "tasks",
            "--workflow",
            &workflow,
            "--state",
            "blocked",
            "--output",
            "json",
        ])
        .ok()
        .json();
    let blocked = blocked["tasks"].as_array().unwrap();
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0]["key"], "summarize");
    assert_eq!(blocked[0]["id"], ids["summarize"]);

    let paged = srv
        .run(&["tasks", "--limit", "3", "--output", "json"])
        .ok()
        .json();
    assert_eq!(paged["tasks"].as_array().unwrap().len(), 3);
    assert!(paged["next"].is_string(), "a next page: {paged}");
    let all = srv.run(&["tasks", "--all", "--output", "json"]).ok().json();
    assert_eq!(all["tasks"].as_array().unwrap().len(), 4);
    assert!(all["next"].is_null());

    let again = srv.run(&[
        "submit",
        srv.file("report.json", REPORT_JSON).to_str().unwrap(),
    ]);
    again.ok();
    assert!(again.stdout.contains("already submitted"), "{again:#?}");
    assert_eq!(
        task_count(&srv),
        4,
        "the idempotency key makes it one workflow"
    );
}

#[test]
fn an_unknown_field_is_reported_at_its_line_and_nothing_is_submitted() {
    let srv = Server::start();
    let path = srv.file(
        "typo.yaml",
        "name: typo\ntasks:\n  - key: fetch\n  - key: parse\n    depends_on: [fetch]\n    retries: 3\n",
    );
    let run = srv.run(&["submit", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("line 6"), "{run:#?}");
    assert!(run.stderr.contains("unknown field `retries`"), "{run:#?}");
    assert!(run.stderr.contains("tasks[1].retries"), "{run:#?}");
    assert!(run.stderr.contains("typo.yaml:6:5"), "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    assert_eq!(task_count(&srv), 0, "a bad file submits nothing");
}

#[test]
fn a_syntax_error_is_reported_at_the_parsers_position() {
    let srv = Server::start();
    let path = srv.file(
        "broken.json",
        "{\n  \"tasks\": [\n    {\"key\": \"a\"}\n    {\"key\": \"b\"}\n  ]\n}\n",
    );
    let run = srv.run(&["submit", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("invalid JSON"), "{run:#?}");
    assert!(run.stderr.contains("line 4"), "{run:#?}");
    assert_eq!(task_count(&srv), 0);
}

#[test]
fn a_cycle_is_reported_with_the_line_of_a_dependency_in_it() {
    let srv = Server::start();
    let path = srv.file(
        "cycle.yaml",
        "tasks:\n  - key: a\n    depends_on: [c]\n  - key: b\n    depends_on: [a]\n  - key: c\n    depends_on: [b]\n  - key: d\n",
    );
    let run = srv.run(&["submit", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("cycle"), "{run:#?}");
    assert!(
        run.stderr.contains(" -> "),
        "the cycle is spelt out: {run:#?}"
    );
    assert!(
        ["line 3,", "line 5,", "line 7,"]
            .iter()
            .any(|l| run.stderr.contains(l)),
        "the line of a `depends_on` in the cycle: {run:#?}"
    );
    assert!(run.stderr.contains(".depends_on[0]"), "{run:#?}");
    assert_eq!(task_count(&srv), 0);
}

#[test]
fn a_rule_violation_is_reported_at_the_line_of_its_field() {
    let srv = Server::start();
    let path = srv.file(
        "retry.yaml",
        "name: bad-retry\ntasks:\n  - key: fetch\n    retry:\n      max_attempts: 0\n",
    );
    let run = srv.run(&["submit", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("line 5"), "{run:#?}");
    assert!(
        run.stderr.contains("tasks[0].retry.max_attempts"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("between 1 and 100"), "{run:#?}");
    assert_eq!(task_count(&srv), 0);

    let dry = srv.run(&["submit", "--dry-run", path.to_str().unwrap()]);
    assert_eq!(dry.code, Some(1), "--dry-run checks the same: {dry:#?}");
    let good = srv.file("good.yaml", PIPELINE_YAML);
    let dry = srv.run(&["submit", "--dry-run", good.to_str().unwrap()]);
    dry.ok();
    assert!(dry.stdout.contains("nothing submitted"), "{dry:#?}");
    assert_eq!(task_count(&srv), 0);
}

#[test]
fn show_prints_the_history_and_cancel_shows_cancelled() {
    let srv = Server::start();
    let created = submit(&srv, "pipeline.yaml", PIPELINE_YAML);
    let plan = created["tasks"]["plan"].as_str().unwrap().to_owned();
    let write = created["tasks"]["write"].as_str().unwrap().to_owned();

    let shown = srv.run(&["show", &plan]);
    shown.ok();
    for expected in [
        "Pending",
        "1 of 3",
        "History",
        "TIME",
        "EVENT",
        "ACTOR",
        "submitted",
        "engine",
        "→ Pending",
        "no online agent offers think",
    ] {
        assert!(
            shown.stdout.contains(expected),
            "{expected:?} missing: {shown:#?}"
        );
    }
    let shown = srv.run(&["show", &write]);
    assert!(shown.stdout.contains("plan (Pending"), "{shown:#?}");
    assert!(
        shown.stdout.contains("for dependencies to complete"),
        "{shown:#?}"
    );

    let cancelled = srv.run(&["cancel", &plan, "--reason", "no longer needed"]);
    cancelled.ok();
    assert!(cancelled.stdout.contains("Cancelled"), "{cancelled:#?}");
    let shown = srv.run(&["show", &plan]);
    shown.ok();
    for expected in [
        "State       Cancelled",
        "cancel_requested",
        "operator",
        "Pending → Cancelled",
        "no longer needed",
    ] {
        assert!(
            shown.stdout.contains(expected),
            "{expected:?} missing: {shown:#?}"
        );
    }
    let view = srv.run(&["show", &plan, "--output", "json"]).ok().json();
    assert_eq!(view["state"], "cancelled");
    assert_eq!(view["history"].as_array().unwrap().len(), 2);

    let again = srv.run(&["cancel", &plan]);
    again.ok();
    assert!(
        again.stdout.contains("Cancelled (attempt 1, version 2)"),
        "cancelling again changes nothing: {again:#?}"
    );

    let workflow = created["workflow"].as_str().unwrap();
    let whole = srv.run(&["cancel", "--workflow", workflow, "--output", "json"]);
    assert!(whole.ok().json()["cancelled"].is_u64(), "{whole:#?}");
    let write_now = srv.run(&["show", &write, "--output", "json"]).ok().json();
    assert_eq!(write_now["state"], "cancelled");
}

#[test]
fn retry_of_a_task_that_has_not_failed_is_refused_with_the_servers_reason() {
    let srv = Server::start();
    let created = submit(&srv, "report.json", REPORT_JSON);
    let gather = created["tasks"]["gather"].as_str().unwrap();
    let run = srv.run(&["retry", gather]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "task {gather} is pending (ready, waiting for an agent), not failed: only a task \
             that failed for good can be retried; it can still be cancelled"
        )),
        "the state and what a retry needs, in words: {run:#?}"
    );
    assert!(!run.stderr.contains("rule"), "{run:#?}");
    assert!(run.stderr.contains("409"), "{run:#?}");

    let missing = srv.run(&["show", "0192d0c6-8f5e-7cc3-9a4e-2b1f0c9d8e7a"]);
    assert_eq!(missing.code, Some(1), "{missing:#?}");
    assert!(missing.stderr.contains("not found"), "{missing:#?}");
    let usage = srv.run(&["show", "not-an-id"]);
    assert_eq!(usage.code, Some(2), "{usage:#?}");
}

#[test]
fn agents_lists_an_agent_registered_over_http() {
    let srv = Server::start();
    let none = srv.run(&["agents"]);
    assert!(none.ok().stdout.contains("No agents"), "{none:#?}");

    let client = baton_client::Client::new(&srv.url).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let agent = rt
        .block_on(client.register_agent("scribe", &["summarize".into(), "write".into()], 4))
        .expect("the agent registers");

    let table = srv.run(&["agents"]);
    table.ok();
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("scribe"))
        .unwrap_or_else(|| panic!("no row for the agent: {table:#?}"));
    for expected in [
        agent.id.to_string().as_str(),
        "yes",
        "summarize,write",
        "4",
        "local",
    ] {
        assert!(row.contains(expected), "{expected:?} missing: {row}");
    }
    let json = srv.run(&["agents", "--output", "json"]).ok().json();
    assert_eq!(json[0]["name"], "scribe");
    assert_eq!(json[0]["concurrency"], 4);
    assert_eq!(json[0]["registered_by"], "local");
}

/// `baton watch --output json` against `url`, once it has subscribed: the process, its
/// standard output and its standard error.
fn watch_json(url: &str) -> (std::process::Child, Lines, Lines) {
    let mut watch = baton()
        .env("BATON_URL", url)
        .args(["watch", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("watch starts");
    let out = Lines::of_stdout(watch.stdout.take().unwrap());
    let err = Lines::of_stderr(watch.stderr.take().unwrap());
    assert!(
        err.until("Watching transitions").is_some(),
        "watch never subscribed"
    );
    (watch, out, err)
}

/// A server restarting under `baton watch` (SIGKILL, same address) does not end it: the
/// stream is opened again, says that transitions may have been missed (another process), and
/// goes on with the new server's transitions.
#[test]
fn watch_resumes_after_the_server_restarts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let mut node = Node::start(
        &["--data-dir", data.to_str().unwrap()],
        dir.path().join("serve.log"),
    );
    let (mut watch, out, err) = watch_json(&node.url);

    node.kill();
    assert!(
        err.until("reconnecting").is_some(),
        "watch says the stream was lost"
    );
    node.restart();
    assert!(
        err.until("event stream resumed").is_some(),
        "{}",
        node.log()
    );
    let file = dir.path().join("wf.yaml");
    std::fs::write(&file, "tasks:\n  - key: after-restart\n").unwrap();
    let mut submit = baton();
    submit
        .env("BATON_URL", &node.url)
        .args(["submit", file.to_str().unwrap()]);
    run(submit).ok();
    let line = out.next().expect("a transition after the restart");
    let event: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(event["key"], "after-restart", "{event}");
    assert!(watch.try_wait().unwrap().is_none(), "watch goes on");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn watch_prints_transitions_as_json_lines() {
    let srv = Server::start();
    let (mut watch, out, _err) = watch_json(&srv.url);

    let created = submit(&srv, "pipeline.yaml", PIPELINE_YAML);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let line = out.next().expect("a transition line");
        let event: Value = serde_json::from_str(&line).expect("a JSON line");
        seen.push(event);
    }
    let _ = watch.kill();
    let _ = watch.wait();
    for event in &seen {
        assert_eq!(event["event"], "submitted", "{event}");
        assert!(event["from"].is_null(), "{event}");
        assert_eq!(event["workflow"], created["workflow"]);
    }
    let keys: Vec<&str> = seen.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert!(
        keys.contains(&"plan") && keys.contains(&"write"),
        "{keys:?}"
    );
    let plan = seen.iter().find(|e| e["key"] == "plan").unwrap();
    assert_eq!(plan["to"], "pending");
    assert_eq!(plan["task"], created["tasks"]["plan"]);
}

#[test]
fn an_unreachable_server_exits_3_with_a_clear_message() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let run = run({
        let mut cmd = baton();
        cmd.args(["tasks", "--url", &url]);
        cmd
    });
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("cannot reach Baton at"), "{run:#?}");
    assert!(run.stderr.contains(&url), "{run:#?}");
    assert!(run.stderr.contains("--url or BATON_URL"), "{run:#?}");
}

#[test]
fn completions_are_printed_for_bash() {
    let run = run({
        let mut cmd = baton();
        cmd.args(["completions", "bash"]);
        cmd
    });
    run.ok();
    assert!(run.stdout.contains("_baton"), "{}", run.stdout);
    assert!(run.stdout.contains("submit"), "{}", run.stdout);
}

#[test]
fn the_top_level_help_documents_the_exit_codes() {
    let run = run({
        let mut cmd = baton();
        cmd.arg("--help");
        cmd
    });
    run.ok();
    assert!(run.stdout.contains("Exit status"), "{}", run.stdout);
    assert!(
        run.stdout.contains("3  the server cannot be reached"),
        "{}",
        run.stdout
    );
}

#[test]
fn global_flags_a_command_ignores_are_hidden_from_its_help_but_accepted() {
    let help = |args: &[&str]| {
        let run = run({
            let mut cmd = baton();
            cmd.args(args).arg("--help");
            cmd
        });
        run.ok();
        run.stdout.clone()
    };
    for (args, hidden, shown) in [
        (
            &["serve"][..],
            &["--url", "--token", "--output"][..],
            &[][..],
        ),
        (&["demo"], &["--url", "--token"], &["--output"]),
        (
            &["lifecycle", "diagram"],
            &["--url", "--token", "--output"],
            &[],
        ),
        (&["bench"], &["--url", "--token"], &["--output"]),
        (&["agent"], &["--output"], &["--url", "--token"]),
        (&["mcp"], &["--output"], &["--url", "--token"]),
        (&["tasks"], &[], &["--url", "--token", "--output"]),
        (
            &["schedules", "list"],
            &[],
            &["--url", "--token", "--output"],
        ),
    ] {
        let text = help(args);
        for flag in hidden {
            assert!(
                !text.contains(&format!("{flag} <")),
                "{args:?} shows {flag}: {text}"
            );
        }
        for flag in shown {
            assert!(
                text.contains(&format!("{flag} <")),
                "{args:?} hides {flag}: {text}"
            );
        }
    }
    let accepted = run({
        let mut cmd = baton();
        cmd.args([
            "lifecycle",
            "--url",
            "http://127.0.0.1:1",
            "--output",
            "json",
            "check",
        ]);
        cmd
    });
    assert!(
        accepted.ok().stdout.contains("lifecycle ok"),
        "{accepted:#?}"
    );
}

#[test]
fn the_token_comes_from_the_flag_or_the_environment() {
    let srv = Server::start_with(&["--operator-token", "s3cret"]);
    let refused = srv.run(&["tasks"]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("401"), "{refused:#?}");
    srv.run(&["tasks", "--token", "s3cret"]).ok();
    let mut cmd = srv.command(&["tasks"]);
    cmd.env("BATON_TOKEN", "s3cret");
    run(cmd).ok();
}

/// Works one task to its end as an agent would, over HTTP: succeeded with `result`, or failed
/// for good.
fn work(srv: &Server, capability: &str, result: Option<Value>) {
    use baton_client::Client;
    use baton_core::ErrorReport;
    let client = Client::new(&srv.url).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let agent = client
            .register_agent("worker", &[capability.into()], 1)
            .await
            .unwrap();
        let claimed = client
            .claim(agent.id, 1, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        let task = claimed.first().expect("a task to claim");
        client.started(task, agent.id).await.unwrap();
        match result {
            Some(result) => client.succeeded(task, agent.id, result).await.unwrap(),
            None => {
                let error = ErrorReport {
                    kind: "bad_input".into(),
                    message: "the topic is empty\n  File \"agent.py\", line 3".into(),
                    retryable: false,
                };
                client.failed(task, agent.id, error).await.unwrap()
            }
        };
    });
}

#[test]
fn show_follows_a_task_through_its_lifecycle_and_retry_reopens_a_failure() {
    let srv = Server::start();
    let created = submit(&srv, "pipeline.yaml", PIPELINE_YAML);
    let plan = created["tasks"]["plan"].as_str().unwrap().to_owned();
    work(
        &srv,
        "think",
        Some(serde_json::json!({"outline": ["a", "b"]})),
    );
    let shown = srv.run(&["show", &plan]);
    shown.ok();
    for expected in [
        "State       Completed",
        r#"Result      {"outline":["a","b"]}"#,
        "Pending → Assigned",
        "Assigned → Executing",
        "Executing → Completed",
        "execution_succeeded",
        "agent ",
    ] {
        assert!(
            shown.stdout.contains(expected),
            "{expected:?} missing: {shown:#?}"
        );
    }

    let created = submit(
        &srv,
        "single.yaml",
        "tasks:\n  - key: draft\n    capabilities: [draft]\n    priority: 10\n",
    );
    let draft = created["tasks"]["draft"].as_str().unwrap().to_owned();
    work(&srv, "draft", None);
    let shown = srv.run(&["show", &draft]);
    for expected in [
        "State       Failed",
        "bad_input: the topic is empty",
        "failed for good",
        "Executing → Failed",
        "\n              File \"agent.py\", line 3",
        "the topic is empty ⏎   File \"agent.py\", line 3",
    ] {
        assert!(
            shown.stdout.contains(expected),
            "{expected:?} missing: {shown:#?}"
        );
    }
    assert!(
        shown.stdout.lines().all(|l| !l.starts_with("  File")),
        "a stderr tail's lines are indented under their field: {shown:#?}"
    );
    let retried = srv.run(&["retry", &draft, "--output", "json"]).ok().json();
    assert_eq!(retried["state"], "pending");
    let shown = srv.run(&["show", &draft]);
    assert!(shown.stdout.contains("Failed → Pending"), "{shown:#?}");
    assert!(shown.stdout.contains("retry_requested"), "{shown:#?}");
}

#[test]
fn submit_wait_prints_the_workflow_result_and_exits_by_how_it_ended() {
    let srv = Server::start();
    let workflow = |key: &str| {
        format!(
            "tasks:\n  - key: {key}\n    capabilities: [think]\noutputs:\n  title: {{$from: {key}, pointer: /title}}\n  fixed: 1\n"
        )
    };
    let path = srv.file("completes.yaml", &workflow("plan"));
    let cmd = srv.command(&["submit", "--wait", path.to_str().unwrap()]);
    let waiting = std::thread::spawn(move || common::run(cmd));
    work(&srv, "think", Some(serde_json::json!({"title": "Tides"})));
    let done = waiting.join().unwrap();
    done.ok();
    assert!(done.stdout.contains("completed"), "{done:#?}");
    let result = &done.stdout[done.stdout.find('{').expect("the result")..];
    let result: Value = serde_json::from_str(result).unwrap();
    assert_eq!(result, serde_json::json!({"title": "Tides", "fixed": 1}));

    let path = srv.file("fails.yaml", &workflow("draft"));
    let cmd = srv.command(&[
        "submit",
        "--wait",
        "--output",
        "json",
        path.to_str().unwrap(),
    ]);
    let waiting = std::thread::spawn(move || common::run(cmd));
    work(&srv, "think", None);
    let failed = waiting.join().unwrap();
    assert_eq!(failed.code, Some(1), "{failed:#?}");
    assert_eq!(failed.json()["status"], "failed");
    assert!(failed.stderr.contains("ended failed"), "{failed:#?}");

    let path = srv.file("waits.yaml", &workflow("idle"));
    let still = srv.run(&["submit", "--wait", "--timeout", "1", path.to_str().unwrap()]);
    assert_eq!(still.code, Some(4), "{still:#?}");
    assert!(still.stderr.contains("still running"), "{still:#?}");
}

#[test]
fn artifacts_are_put_and_got_by_reference() {
    let srv = Server::start_with(&["--artifact-bytes-max", "4096"]);
    let notes = srv.file("notes.txt", "durable notes\n");
    let put = srv.run(&[
        "artifact",
        "put",
        notes.to_str().unwrap(),
        "--content-type",
        "text/plain",
    ]);
    put.ok();
    let artifact = put.stdout.trim();
    assert!(
        artifact.starts_with("sha256:") && artifact.len() == 71,
        "{put:#?}"
    );

    let got = srv.run(&["artifact", "get", artifact]);
    assert_eq!(got.ok().stdout, "durable notes\n");
    let copy = srv.file("copy.txt", "");
    srv.run(&["artifact", "get", artifact, "-o", copy.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "durable notes\n");

    let big = srv.file("big.txt", &"x".repeat(4097));
    let refused = srv.run(&["artifact", "put", big.to_str().unwrap()]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(
        refused.stderr.contains("artifact_too_large")
            && refused.stderr.contains("artifact-bytes-max"),
        "{refused:#?}"
    );

    let unknown = format!("sha256:{}", "0".repeat(64));
    let missing = srv.run(&["artifact", "get", &unknown]);
    assert_eq!(missing.code, Some(1), "{missing:#?}");
    assert!(
        missing.stderr.contains("artifact_not_found"),
        "{missing:#?}"
    );
}

#[test]
fn workflows_lists_them_with_their_status_and_show_takes_a_workflow_id() {
    let srv = Server::start();
    let created = submit(&srv, "pipeline.yaml", PIPELINE_YAML);
    let workflow = created["workflow"].as_str().unwrap().to_owned();
    let listed = srv.run(&["workflows"]);
    listed.ok();
    assert!(listed.stdout.contains(&workflow), "{listed:#?}");
    assert!(listed.stdout.contains("running"), "{listed:#?}");
    assert!(listed.stdout.contains("0/"), "{listed:#?}");
    let json = srv.run(&["workflows", "--output", "json"]).ok().json();
    assert_eq!(json["workflows"][0]["status"], "running");
    let count = |args: &[&str]| {
        let mut all = vec!["workflows", "--output", "json"];
        all.extend_from_slice(args);
        srv.run(&all).ok().json()["workflows"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(&["--status", "running", "--name", "PIPE"]), 1);
    assert_eq!(count(&["--status", "completed"]), 0);
    assert_eq!(count(&["--label", "tenant:acme"]), 0);
    assert_eq!(count(&["--label", "tenant:globex"]), 1);
    let bad = srv.run(&["workflows", "--status", "done"]);
    assert_eq!(bad.code, Some(1), "{bad:#?}");
    assert!(bad.stderr.contains("--status"), "{bad:#?}");

    let shown = srv.run(&["show", &workflow]);
    shown.ok();
    assert!(shown.stdout.starts_with("Workflow "), "{shown:#?}");
    assert!(shown.stdout.contains("status   running"), "{shown:#?}");

    let tasks = srv.run(&["tasks"]);
    tasks.ok();
    assert!(tasks.stdout.contains("WORKFLOW"), "{tasks:#?}");
    assert!(
        tasks.stdout.contains(&workflow[workflow.len() - 8..]),
        "the workflow's short id is its last eight digits: {tasks:#?}"
    );
    let unknown = srv.run(&["show", &uuid::Uuid::nil().to_string()]);
    assert_eq!(unknown.code, Some(1), "{unknown:#?}");
}

#[test]
fn a_second_server_on_the_same_data_directory_or_port_is_refused_clearly() {
    let srv = Server::start();
    let data = srv.file("unused", "").parent().unwrap().join("data");
    let second = common::run_for(
        {
            let mut cmd = baton();
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(&data);
            cmd
        },
        std::time::Duration::from_secs(30),
    );
    assert_ne!(second.code, Some(0), "{second:#?}");
    assert!(
        second.stderr.contains("another baton serve (pid")
            && second.stderr.contains("uses the data directory"),
        "{second:#?}"
    );

    let file = srv.file("not-a-dir", "x");
    let on_file = common::run_for(
        {
            let mut cmd = baton();
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(&file);
            cmd
        },
        std::time::Duration::from_secs(30),
    );
    assert!(
        on_file.stderr.contains("is a file, not a directory"),
        "{on_file:#?}"
    );

    let port = srv.url.trim_start_matches("http://").to_owned();
    let other = tempfile::tempdir().unwrap();
    let busy = common::run_for(
        {
            let mut cmd = baton();
            cmd.args(["serve", "--listen", &port, "--data-dir"])
                .arg(other.path());
            cmd
        },
        std::time::Duration::from_secs(30),
    );
    assert!(
        busy.stderr.contains("is in use") && busy.stderr.contains("--listen"),
        "{busy:#?}"
    );
}

const APPROVAL_YAML: &str = "\
name: approval
tasks:
  - key: draft
    input: {plan: spend $40}
  - key: review
    depends_on: [draft]
    wait_for: {signal: approve, timeout_ms: 3600000}
  - key: publish
    depends_on: [review]
";

#[test]
fn waiting_lists_a_signal_task_and_signal_completes_it() {
    let srv = Server::start();
    let created = submit(&srv, "approval.yaml", APPROVAL_YAML);
    let wf = created["workflow"].as_str().unwrap();
    let review = created["tasks"]["review"].as_str().unwrap();
    let none = srv.run(&["waiting"]);
    let none = none.ok();
    assert!(none.stdout.contains("No task waits"), "{none:#?}");

    // Sent before the task waits: kept.
    let kept = srv.run(&[
        "signal",
        wf,
        "approve",
        "--data",
        r#"{"reject": "not a rejection"}"#,
    ]);
    let kept = kept.ok();
    assert!(kept.stdout.contains("kept"), "{kept:#?}");
    let signals = srv.run(&["show", review, "--output", "json"]).ok().json();
    assert_eq!(signals["state"], "blocked", "{signals}");

    let bad = srv.run(&["signal", wf, "approve", "--data", "{oops"]);
    assert_eq!(bad.code, Some(1), "{bad:#?}");
    assert!(bad.stderr.contains("--data is not valid JSON"), "{bad:#?}");
}

#[test]
fn a_rejection_from_the_command_line_fails_the_waiting_task() {
    let srv = Server::start();
    let text = "name: gate\ntasks:\n  - key: review\n    wait_for: {signal: approve}\n";
    let created = submit(&srv, "gate.yaml", text);
    let wf = created["workflow"].as_str().unwrap();
    let review = created["tasks"]["review"].as_str().unwrap();
    let listed = srv.run(&["waiting"]);
    let listed = listed.ok();
    assert!(listed.stdout.contains("review"), "{listed:#?}");
    assert!(listed.stdout.contains("approve"), "{listed:#?}");
    let json = srv.run(&["waiting", "--output", "json"]).ok().json();
    assert_eq!(json["tasks"][0]["id"], review);

    let rejected = srv.run(&[
        "signal",
        wf,
        "approve",
        "--reject",
        "over budget",
        "--idempotency-key",
        "k1",
    ]);
    let rejected = rejected.ok();
    assert!(rejected.stdout.contains("rejected"), "{rejected:#?}");
    assert!(rejected.stdout.contains("review"), "{rejected:#?}");
    let shown = srv.run(&["show", review, "--output", "json"]).ok().json();
    assert_eq!(shown["state"], "failed", "{shown}");
    assert_eq!(shown["errors"][0]["kind"], "rejected", "{shown}");
    let again = srv.run(&[
        "signal",
        wf,
        "approve",
        "--reject",
        "over budget",
        "--idempotency-key",
        "k1",
    ]);
    let again = again.ok();
    assert!(again.stdout.contains("sent before"), "{again:#?}");
}

const SCHEDULE_YAML: &str = "\
name: weekday-digest
cron: 0 0 9 * * MON-FRI
timezone: Europe/Berlin
workflow:
  name: digest
  tasks:
    - key: collect
overlap: skip
catch_up: {policy: latest}
";

#[test]
fn schedules_are_created_from_a_file_listed_paused_and_deleted() {
    let srv = Server::start();
    let path = srv.file("digest.yaml", SCHEDULE_YAML);
    let created = srv.run(&["schedules", "create", path.to_str().unwrap()]);
    let created = created.ok();
    assert!(created.stdout.contains("weekday-digest"), "{created:#?}");
    assert!(created.stdout.contains("Next"), "{created:#?}");
    let listed = srv.run(&["schedules", "--output", "json"]).ok().json();
    let s = &listed["schedules"][0];
    assert_eq!(s["name"], "weekday-digest");
    assert_eq!(s["next"].as_array().unwrap().len(), 5);
    let paused = srv.run(&["schedules", "pause", "weekday-digest"]);
    let paused = paused.ok();
    assert!(paused.stdout.contains("paused"), "{paused:#?}");
    let table = srv.run(&["schedules"]);
    let table = table.ok();
    assert!(table.stdout.contains("paused"), "{table:#?}");
    srv.run(&["schedules", "delete", "weekday-digest"]).ok();
    let gone = srv.run(&["schedules", "show", "weekday-digest"]);
    assert_eq!(gone.code, Some(1), "{gone:#?}");
    assert!(gone.stderr.contains("not found"), "{gone:#?}");

    let bad = srv.file(
        "bad.yaml",
        "name: x\ncron: every day\nworkflow: {tasks: [{key: a}]}\n",
    );
    let refused = srv.run(&["schedules", "create", bad.to_str().unwrap()]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("cron"), "{refused:#?}");
}

const TRIGGER_YAML: &str = "\
name: on-push
tasks:
  - key: build
    capabilities: [think]
    input: {repo: {$input: /repo}, sha: {$input: /head/sha}}
outputs:
  built: {$from: build, pointer: /ok}
";

#[test]
fn triggers_are_put_from_a_file_listed_fired_once_per_key_and_deleted() {
    let srv = Server::start();
    let path = srv.file("push.yaml", TRIGGER_YAML);
    let put = srv.run(&["triggers", "put", "ci/push", path.to_str().unwrap()]);
    let put = put.ok();
    assert!(
        put.stdout.starts_with("Created trigger ci/push."),
        "{put:#?}"
    );
    assert!(put.stdout.contains("/repo, /head/sha"), "{put:#?}");
    let again = srv.run(&["triggers", "put", "ci/push", path.to_str().unwrap()]);
    let again = again.ok();
    assert!(
        again.stdout.starts_with("Replaced trigger ci/push."),
        "{again:#?}"
    );
    let json = srv
        .run(&[
            "triggers",
            "put",
            "ci/push",
            path.to_str().unwrap(),
            "--output",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(
        (&json["name"], &json["created"]),
        (&"ci/push".into(), &false.into())
    );
    let listed = srv.run(&["triggers", "--output", "json"]).ok().json();
    assert_eq!(listed["triggers"][0]["name"], "ci/push");
    assert_eq!(listed["triggers"][0]["workflow"]["name"], "on-push");
    let table = srv.run(&["triggers"]);
    let table = table.ok();
    assert!(table.stdout.contains("on-push"), "{table:#?}");
    let shown = srv
        .run(&["triggers", "show", "ci/push", "--output", "json"])
        .ok()
        .json();
    assert_eq!(shown["workflow"]["tasks"][0]["key"], "build");

    let input = r#"{"repo": "baton", "head": {"sha": "abc"}}"#;
    let fire = |key: &str| {
        srv.run(&[
            "triggers",
            "fire",
            "ci/push",
            "--input",
            input,
            "--idempotency-key",
            key,
            "--output",
            "json",
        ])
        .ok()
        .json()
    };
    let fired = fire("push-1");
    assert_eq!(fired["created"], true);
    let build = fired["tasks"]["build"].as_str().unwrap();
    let task = srv.run(&["show", build, "--output", "json"]).ok().json();
    assert_eq!(
        task["spec"]["input"],
        serde_json::json!({"repo": "baton", "sha": "abc"})
    );
    let again = fire("push-1");
    assert_eq!(again["workflow"], fired["workflow"]);
    assert_eq!(again["created"], false);
    let repeat = srv.run(&[
        "triggers",
        "fire",
        "ci/push",
        "--input",
        input,
        "--idempotency-key",
        "push-1",
    ]);
    let repeat = repeat.ok();
    assert!(repeat.stdout.contains("already fired"), "{repeat:#?}");
    assert!(
        repeat.stdout.contains(fired["workflow"].as_str().unwrap()),
        "{repeat:#?}"
    );

    let from_file = srv.file("push-2.yaml", "repo: baton\nhead: {sha: def}\n");
    let table = srv.run(&[
        "triggers",
        "fire",
        "ci/push",
        "--input-file",
        from_file.to_str().unwrap(),
    ]);
    let table = table.ok();
    assert!(table.stdout.contains("Fired trigger ci/push"), "{table:#?}");
    assert!(table.stdout.contains("build"), "{table:#?}");

    srv.run(&["triggers", "delete", "ci/push"]).ok();
    let gone = srv.run(&["triggers", "show", "ci/push"]);
    assert_eq!(gone.code, Some(1), "{gone:#?}");
    assert!(gone.stderr.contains("not found"), "{gone:#?}");
    let none = srv.run(&["triggers"]);
    assert!(none.ok().stdout.contains("No trigger"), "{none:#?}");
}

#[test]
fn a_bad_trigger_or_input_is_refused_naming_what_is_wrong() {
    let srv = Server::start();
    let path = srv.file("push.yaml", TRIGGER_YAML);
    srv.run(&["triggers", "put", "push", path.to_str().unwrap()])
        .ok();
    let workflows = || {
        srv.run(&["workflows", "--output", "json"]).ok().json()["workflows"]
            .as_array()
            .unwrap()
            .len()
    };

    let unknown = srv.run(&["triggers", "fire", "nope", "--input", "{}"]);
    assert_eq!(unknown.code, Some(1), "{unknown:#?}");
    assert!(
        unknown.stderr.contains("trigger `nope` not found"),
        "{unknown:#?}"
    );
    assert!(
        unknown.stderr.contains("404 trigger_not_found"),
        "{unknown:#?}"
    );

    let invalid = srv.run(&["triggers", "fire", "push", "--input", "{repo: baton"]);
    assert_eq!(invalid.code, Some(1), "{invalid:#?}");
    assert!(
        invalid.stderr.contains("--input is not valid JSON"),
        "{invalid:#?}"
    );

    let lacking = srv.run(&[
        "triggers",
        "fire",
        "push",
        "--input",
        r#"{"repo": "baton"}"#,
    ]);
    assert_eq!(lacking.code, Some(1), "{lacking:#?}");
    assert!(
        lacking.stderr.contains("--input does not fit"),
        "{lacking:#?}"
    );
    assert!(lacking.stderr.contains("/head/sha"), "{lacking:#?}");

    let both = srv.run(&[
        "triggers",
        "fire",
        "push",
        "--input",
        "{}",
        "--input-file",
        path.to_str().unwrap(),
    ]);
    assert_eq!(both.code, Some(2), "{both:#?}");
    assert_eq!(workflows(), 0);

    let bad = srv.file(
        "bad.yaml",
        "tasks:\n  - key: build\n    input: {repo: {$input: repo}}\n",
    );
    let refused = srv.run(&["triggers", "put", "bad", bad.to_str().unwrap()]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(
        refused
            .stderr
            .contains("workflow.tasks[0].input.repo.$input"),
        "{refused:#?}"
    );
    let listed = srv.run(&["triggers", "--output", "json"]).ok().json();
    assert_eq!(listed["triggers"].as_array().unwrap().len(), 1);
}

#[test]
fn fire_wait_prints_the_workflow_result_as_submit_wait_does() {
    let srv = Server::start();
    let path = srv.file("push.yaml", TRIGGER_YAML);
    srv.run(&["triggers", "put", "push", path.to_str().unwrap()])
        .ok();
    let cmd = srv.command(&[
        "triggers",
        "fire",
        "push",
        "--input",
        r#"{"repo": "baton", "head": {"sha": "abc"}}"#,
        "--wait",
    ]);
    let waiting = std::thread::spawn(move || common::run(cmd));
    work(&srv, "think", Some(serde_json::json!({"ok": true})));
    let done = waiting.join().unwrap();
    done.ok();
    assert!(done.stdout.contains("Fired trigger push"), "{done:#?}");
    assert!(done.stdout.contains("completed"), "{done:#?}");
    assert!(done.stdout.contains(r#""built": true"#), "{done:#?}");
}

/// An id's last eight hex digits: its short id, as tables show it.
fn short(id: &str) -> String {
    id[id.len() - 8..].to_owned()
}

#[test]
fn short_ids_are_accepted_wherever_an_id_is() {
    let srv = Server::start();
    let text =
        "name: gate\ntasks:\n  - key: review\n    wait_for: {signal: approve}\n  - key: later\n";
    let created = submit(&srv, "gate.yaml", text);
    let wf = created["workflow"].as_str().unwrap().to_owned();
    let review = created["tasks"]["review"].as_str().unwrap().to_owned();
    let later = created["tasks"]["later"].as_str().unwrap().to_owned();

    let shown = srv.run(&["show", &short(&review), "--output", "json"]);
    assert_eq!(shown.ok().json()["id"], review.as_str());
    let upper = review[review.len() - 12..].to_uppercase();
    let shown = srv.run(&["show", &upper, "--output", "json"]);
    assert_eq!(
        shown.ok().json()["id"],
        review.as_str(),
        "any case, more digits"
    );
    let shown = srv.run(&["show", &short(&wf)]);
    assert!(shown.ok().stdout.starts_with("Workflow "), "{shown:#?}");

    let listed = srv.run(&["tasks", "--workflow", &short(&wf), "--output", "json"]);
    assert_eq!(listed.ok().json()["tasks"].as_array().unwrap().len(), 2);
    let waiting = srv.run(&["waiting", "--workflow", &short(&wf), "--output", "json"]);
    assert_eq!(waiting.ok().json()["tasks"][0]["id"], review.as_str());

    let signalled = srv.run(&["signal", &short(&wf), "approve", "--reject", "no"]);
    assert!(signalled.ok().stdout.contains("rejected"), "{signalled:#?}");
    let retried = srv.run(&["retry", &short(&review), "--output", "json"]);
    assert_eq!(retried.ok().json()["task"], review.as_str());
    let cancelled = srv.run(&["cancel", &short(&later), "--output", "json"]);
    assert_eq!(cancelled.ok().json()["state"], "cancelled");
    let whole = srv.run(&["cancel", "--workflow", &short(&wf), "--output", "json"]);
    assert!(whole.ok().json()["cancelled"].is_u64(), "{whole:#?}");

    let unknown = srv.run(&["show", "00000000"]);
    assert_eq!(unknown.code, Some(1), "{unknown:#?}");
    assert!(
        unknown
            .stderr
            .contains("no task's or workflow's id ends in `00000000`"),
        "{unknown:#?}"
    );
    let not_a_task = srv.run(&["retry", &short(&wf)]);
    assert_eq!(not_a_task.code, Some(1), "{not_a_task:#?}");
    assert!(
        not_a_task.stderr.contains("no task's id ends in")
            && not_a_task.stderr.contains(&format!("but workflow {wf}")),
        "{not_a_task:#?}"
    );
    let too_short = srv.run(&["show", "abc"]);
    assert_eq!(too_short.code, Some(2), "{too_short:#?}");
    assert!(
        too_short.stderr.contains("last 4 or more hex digits"),
        "{too_short:#?}"
    );
}

#[test]
fn an_ambiguous_short_id_is_refused_listing_the_candidates() {
    let srv = Server::start();
    let tasks: Vec<Value> = (0..2_000)
        .map(|i| serde_json::json!({"key": format!("t{i}")}))
        .collect();
    let text = serde_json::json!({"name": "many", "tasks": tasks}).to_string();
    let created = submit(&srv, "many.json", &text);
    let mut by_suffix: std::collections::HashMap<String, Vec<(String, String)>> =
        std::collections::HashMap::new();
    for (key, id) in created["tasks"].as_object().unwrap() {
        let id = id.as_str().unwrap().to_owned();
        by_suffix
            .entry(id[id.len() - 4..].to_owned())
            .or_default()
            .push((key.clone(), id));
    }
    let (suffix, ids) = by_suffix
        .iter()
        .find(|(_, ids)| (2..=10).contains(&ids.len()))
        .expect("2,000 ids share some last 4 digits");
    let run = srv.run(&["show", suffix]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "`{suffix}` is ambiguous: {} ids end in it",
            ids.len()
        )),
        "{run:#?}"
    );
    for (key, id) in ids {
        assert!(
            run.stderr.contains(&format!("task      {id}  {key}")),
            "{id} {key} listed: {run:#?}"
        );
    }
    assert!(run.stdout.is_empty(), "{run:#?}");
}

#[test]
fn pause_resume_skip_rerun_and_audit_from_the_command_line() {
    let srv = Server::start();
    let created = submit(&srv, "report.json", REPORT_JSON);
    let workflow = created["workflow"].as_str().unwrap();
    let gather = created["tasks"]["gather"].as_str().unwrap();
    let summarize = created["tasks"]["summarize"].as_str().unwrap();

    // Every control needs a reason.
    let missing = srv.run(&["pause", gather]);
    assert_eq!(missing.code, Some(2), "{missing:#?}");
    assert!(missing.stderr.contains("--reason"), "{missing:#?}");

    let paused = srv.run(&["pause", gather, "--reason", "budget review"]);
    assert!(
        paused.ok().stdout.contains(" paused: Pending"),
        "{paused:#?}"
    );
    let shown = srv.run(&["show", gather]).ok().stdout.clone();
    assert!(shown.contains("paused by local"), "{shown}");
    assert!(shown.contains("budget review"), "{shown}");
    srv.run(&["resume", gather, "--reason", "approved"]).ok();

    let skipped = srv.run(&[
        "skip",
        gather,
        "--result",
        r#"{"sources": ["by hand"]}"#,
        "--reason",
        "gathered by hand",
    ]);
    assert!(
        skipped.ok().stdout.contains(" skipped: Completed"),
        "{skipped:#?}"
    );
    let bad = srv.run(&["skip", summarize, "--result", "not json", "--reason", "x"]);
    assert_eq!(bad.code, Some(1), "{bad:#?}");
    assert!(
        bad.stderr.contains("--result is not valid JSON"),
        "{bad:#?}"
    );

    let dry = srv.run(&["rerun", gather, "--dry-run", "--reason", "recheck"]);
    let text = dry.ok().stdout.clone();
    assert!(text.starts_with("would rerun 2 tasks"), "{text}");
    assert!(
        text.contains("gather") && text.contains("summarize"),
        "{text}"
    );
    let rerun = srv.run(&[
        "rerun",
        gather,
        "--input",
        r#"{"sources": 5}"#,
        "--reason",
        "more sources",
        "--output",
        "json",
    ]);
    assert_eq!(rerun.ok().json()["applied"], true);
    let now = srv.run(&["show", gather, "--output", "json"]).ok().json();
    assert_eq!(now["spec"]["input"], serde_json::json!({"sources": 5}));

    let wf_pause = srv.run(&["pause", "--workflow", workflow, "--reason", "hold"]);
    assert!(
        wf_pause.ok().stdout.contains("paused, 2 tasks changed"),
        "{wf_pause:#?}"
    );
    srv.run(&["resume", "--workflow", workflow, "--reason", "go"])
        .ok();

    let audit = srv.run(&["audit", "--output", "json"]).ok().json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["resume", "pause", "rerun", "skip", "resume", "pause"]
    );
    let table = srv
        .run(&["audit", "--action", "skip", "--since", "1h"])
        .ok()
        .stdout
        .clone();
    assert!(table.contains("gathered by hand"), "{table}");
    assert!(!table.contains("budget review"), "{table}");
    let bad_since = srv.run(&["audit", "--since", "yesterday"]);
    assert_eq!(bad_since.code, Some(2), "{bad_since:#?}");
}

#[test]
fn budgets_are_set_shown_and_checked_from_the_command_line() {
    let srv = Server::start();
    let text = "name: spend\nbudgets: {usd: {limit: 1}}\ntasks:\n  - key: a\n";
    let created = submit(&srv, "spend.yaml", text);
    let workflow = created["workflow"].as_str().unwrap().to_owned();
    let shown = srv.run(&["budget", &workflow]);
    shown.ok();
    assert!(shown.stdout.contains("usd"), "{shown:#?}");
    assert!(shown.stdout.contains("0 of 1 (pause)"), "{shown:#?}");

    let no_reason = srv.run(&["budget", &workflow, "--set", "usd=5"]);
    assert_eq!(no_reason.code, Some(1), "{no_reason:#?}");
    assert!(no_reason.stderr.contains("--reason"), "{no_reason:#?}");
    for bad in ["usd", "usd=0", "usd=5:explode", "USD=5"] {
        let refused = srv.run(&["budget", &workflow, "--set", bad, "--reason", "r"]);
        assert_eq!(refused.code, Some(1), "{bad}: {refused:#?}");
    }
    let set = srv.run(&[
        "budget",
        &workflow,
        "--set",
        "usd=5",
        "--set",
        "tokens=2000:fail",
        "--reason",
        "more",
    ]);
    set.ok();
    assert!(set.stdout.contains("0 of 5 (pause)"), "{set:#?}");
    assert!(set.stdout.contains("0 of 2000 (fail)"), "{set:#?}");
    let json = srv
        .run(&["show", &workflow, "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        json["budgets"]["tokens"],
        serde_json::json!({"limit": 2000, "policy": "fail"})
    );
    let show = srv.run(&["show", &workflow]);
    assert!(show.stdout.contains("spent"), "{show:#?}");
    let audit = srv
        .run(&["audit", "--action", "budgets", "--output", "json"])
        .ok()
        .json();
    assert_eq!(audit["entries"][0]["reason"], "more");
    let usage = srv.run(&["usage", "--label", "tenant:none"]);
    usage.ok();
    assert!(usage.stdout.contains("Nothing reported."), "{usage:#?}");
}

#[test]
fn rate_limits_are_set_listed_shown_and_deleted_and_show_tells_why_a_task_waits() {
    let srv = Server::start();
    let set = srv.run(&["limits", "set", "llm", "--units", "2", "--per", "1h"]);
    set.ok();
    assert!(set.stdout.contains("2/1h units"), "{set:#?}");
    assert!(set.stdout.contains("available  2 of 2"), "{set:#?}");
    let bad = srv.run(&["limits", "set", "llm", "--units", "0", "--per", "1m"]);
    assert_eq!(bad.code, Some(1), "{bad:#?}");
    assert!(bad.stderr.contains("units"), "{bad:#?}");
    let bad_period = srv.run(&["limits", "set", "llm", "--units", "1", "--per", "1w"]);
    assert_eq!(bad_period.code, Some(2), "{bad_period:#?}");

    let text = "name: drawing\ntasks:\n  - {key: a, rate: [{key: llm}]}\n  - {key: b, rate: [{key: llm}]}\n  - {key: c, rate: [{key: llm}]}\n";
    let created = submit(&srv, "drawing.yaml", text);
    let claimed: Vec<String> = {
        let client = baton_client::Client::new(&srv.url).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let agent = client.register_agent("worker", &[], 10).await.unwrap();
            let claimed = client
                .claim(agent.id, 10, std::time::Duration::ZERO)
                .await
                .unwrap();
            claimed.iter().map(|t| t.task.to_string()).collect()
        })
    };
    assert_eq!(claimed.len(), 2, "{claimed:?}");
    let waiting = created["tasks"]
        .as_object()
        .unwrap()
        .values()
        .map(|id| id.as_str().unwrap())
        .find(|id| !claimed.iter().any(|t| t == id))
        .unwrap()
        .to_owned();
    let show = srv.run(&["show", &waiting]);
    show.ok();
    assert!(show.stdout.contains("for rate limit `llm`"), "{show:#?}");

    let list = srv.run(&["limits"]);
    list.ok();
    assert!(list.stdout.contains("llm"), "{list:#?}");
    let json = srv
        .run(&["limits", "show", "llm", "--output", "json"])
        .ok()
        .json();
    assert_eq!(
        (json["available"].as_u64(), json["parked"].as_u64()),
        (Some(0), Some(1))
    );
    srv.run(&["limits", "delete", "llm"]).ok();
    let gone = srv.run(&["limits", "show", "llm"]);
    assert_eq!(gone.code, Some(1), "{gone:#?}");
    assert!(
        gone.stderr.contains("limit_not_found") || gone.stderr.contains("not found"),
        "{gone:#?}"
    );
}
