//! `baton mcp` driven by an MCP client (rmcp's), as an LLM host would: over stdio (the binary
//! as a child process) and over streamable HTTP, against a real `baton serve`. The same
//! scenario runs over both: the tools listed, a workflow submitted, its tasks claimed, started,
//! heartbeated and completed as an agent, the dependent handed the upstream result, a signal
//! completing a waiting task, and refusals coming back as tool errors with the problem's code.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rmcp::model::ProtocolVersion;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

type Mcp = RunningService<RoleClient, ClientConfig>;

const TOOLS: &[&str] = &[
    "cancel",
    "claim_task",
    "complete_task",
    "counts",
    "fail_task",
    "get_task",
    "get_workflow",
    "list_tasks",
    "list_workflows",
    "release_task",
    "report_progress",
    "retry_task",
    "send_signal",
    "start_task",
    "submit_workflow",
    "task_history",
    "waiting",
];

fn client_info() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("baton-test", "1"),
    )
}

/// A runtime for the clients; the HTTP client's TLS provider is the process's, as in `baton`.
fn runtime() -> tokio::runtime::Runtime {
    baton_server::listen::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Calls tool `name`; the result, error or not. A protocol error fails the test.
async fn call(mcp: &Mcp, name: &'static str, args: Value) -> CallToolResult {
    let Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let params = CallToolRequestParams::new(name).with_arguments(args);
    tokio::time::timeout(WAIT_MAX * 3, mcp.call_tool(params))
        .await
        .unwrap_or_else(|_| panic!("{name}: no answer"))
        .unwrap_or_else(|e| panic!("{name}: protocol error {e}"))
}

/// The JSON of a tool's result: its text, which must match its structured content (there is
/// one when the JSON is an object).
fn json_of(name: &str, r: &CallToolResult) -> Value {
    let text = r
        .content
        .first()
        .and_then(|c| c.as_text())
        .unwrap_or_else(|| panic!("{name}: no text in {:?}", r.content))
        .text
        .clone();
    let value: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{name}: text is not JSON ({e}): {text:.2000}"));
    if value.is_object() {
        assert_eq!(
            r.structured_content.as_ref(),
            Some(&value),
            "{name}: the structured content is not the text's JSON"
        );
    }
    value
}

/// At most 2,000 characters of `v`'s debug form, for failure messages.
fn short(v: &impl std::fmt::Debug) -> String {
    format!("{v:?}").chars().take(2000).collect()
}

/// Calls a tool that must succeed; its JSON.
async fn ok(mcp: &Mcp, name: &'static str, args: Value) -> Value {
    let r = call(mcp, name, args.clone()).await;
    assert_ne!(
        r.is_error,
        Some(true),
        "{name} {} failed: {}",
        short(&args),
        short(&r.content)
    );
    json_of(name, &r)
}

/// Calls a tool that must fail; its text and structured content.
async fn refused(mcp: &Mcp, name: &'static str, args: Value) -> (String, Value) {
    let r = call(mcp, name, args.clone()).await;
    assert_eq!(
        r.is_error,
        Some(true),
        "{name} {} succeeded: {}",
        short(&args),
        short(&r.content)
    );
    let text = r
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default();
    (text, r.structured_content.clone().unwrap_or(Value::Null))
}

/// Calls `name` until `done` holds for its answer, at most [`WAIT_MAX`].
async fn until(mcp: &Mcp, name: &'static str, args: Value, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let v = ok(mcp, name, args.clone()).await;
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {args}: never came to pass; last {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn tools_are_described(mcp: &Mcp) {
    let tools = mcp.list_all_tools().await.expect("tools/list");
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, TOOLS);
    for t in &tools {
        let description = t.description.as_deref().unwrap_or_default();
        assert!(
            description.len() > 80,
            "{}: too short a description: {description:?}",
            t.name
        );
        assert_eq!(
            t.input_schema.get("type"),
            Some(&json!("object")),
            "{}",
            t.name
        );
    }
    let by_name = |n: &str| tools.iter().find(|t| t.name == n).unwrap();
    // Arguments are described and required where they must be.
    let submit = &by_name("submit_workflow").input_schema;
    assert_eq!(submit["required"], json!(["tasks"]));
    assert_eq!(
        submit["properties"]["tasks"]["items"]["required"],
        json!(["key"])
    );
    let complete = &by_name("complete_task").input_schema;
    let mut required: Vec<&str> = complete["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort();
    assert_eq!(required, ["result", "task"]);
    assert!(complete["properties"]["token"]["description"]
        .as_str()
        .unwrap()
        .contains("fencing token"));
    // The lifecycle is taught: the claim names the next step, the server its states.
    assert!(by_name("claim_task")
        .description
        .as_deref()
        .unwrap()
        .contains("start_task"));
    let info = mcp.peer_info().expect("the server's info");
    let instructions = info.instructions.as_deref().unwrap_or_default();
    for word in [
        "Blocked",
        "Pending",
        "Assigned",
        "Executing",
        "Completed",
        "lease",
    ] {
        assert!(instructions.contains(word), "instructions lack {word}");
    }
}

/// The whole scenario, over whichever transport `mcp` uses.
async fn scenario(mcp: &Mcp) {
    tools_are_described(mcp).await;

    // An operator submits: plan, then write (its input from plan's result), then a person's
    // approval.
    let created = ok(
        mcp,
        "submit_workflow",
        json!({
            "name": "article",
            "labels": {"team": "docs"},
            "tasks": [
                {"key": "plan", "capabilities": ["llm"], "input": {"topic": "leases"}},
                {"key": "write", "depends_on": ["plan"], "capabilities": ["llm"],
                 "input": {"outline": {"$from": "plan", "pointer": "/text"}}},
                {"key": "approve", "depends_on": ["write"],
                 "wait_for": {"signal": "approve"}}
            ]
        }),
    )
    .await;
    assert_eq!(created["created"], json!(true));
    let workflow = created["workflow"].as_str().unwrap().to_owned();
    let plan = created["tasks"]["plan"].as_str().unwrap().to_owned();
    let write = created["tasks"]["write"].as_str().unwrap().to_owned();
    let approve = created["tasks"]["approve"].as_str().unwrap().to_owned();

    // Why write waits: its dependency.
    let w = ok(mcp, "get_task", json!({"task": write})).await;
    assert_eq!(w["state"], json!("blocked"));
    assert_eq!(w["waiting"]["reason"], json!("dependencies"));
    assert_eq!(w["waiting"]["open"][0]["key"], json!("plan"));

    // An agent claims plan, with its input and a lease.
    let claim = ok(
        mcp,
        "claim_task",
        json!({"capabilities": ["llm"], "wait_seconds": 10}),
    )
    .await;
    assert_eq!(claim["task"], json!(plan), "{claim}");
    assert_eq!(claim["key"], json!("plan"));
    assert_eq!(claim["state"], json!("assigned"));
    assert_eq!(claim["input"], json!({"topic": "leases"}));
    assert!(claim["token"].as_u64().is_some(), "{claim}");
    assert!(
        claim["deadlines_in_seconds"]["start"].as_f64().is_some(),
        "{claim}"
    );
    let shown = ok(mcp, "get_task", json!({"task": plan})).await;
    assert_eq!(shown["state"], json!("assigned"));
    assert_eq!(shown["waiting"]["reason"], json!("leased"));
    assert_eq!(shown["held_here"]["token"], claim["token"]);

    // start, heartbeat with progress, complete: by task id alone (short ids will do).
    let short = &plan[plan.len() - 8..];
    let started = ok(mcp, "start_task", json!({"task": short})).await;
    assert_eq!(started["state"], json!("executing"));
    assert!(
        started["deadlines_in_seconds"]["heartbeat"]
            .as_f64()
            .is_some(),
        "{started}"
    );
    let beat = ok(
        mcp,
        "report_progress",
        json!({"task": plan, "progress": {"done": 1, "of": 2}, "usage": {"tokens": 120}}),
    )
    .await;
    assert_eq!(beat["state"], json!("executing"));
    let done = ok(
        mcp,
        "complete_task",
        json!({"task": plan, "result": {"text": "1. leases 2. tokens"}, "usage": {"tokens": 300}}),
    )
    .await;
    assert_eq!(done["state"], json!("completed"));
    // A report sent again is answered, not applied twice.
    let again = ok(
        mcp,
        "complete_task",
        json!({"task": plan, "result": {"text": "1. leases 2. tokens"}, "usage": {"tokens": 300}}),
    )
    .await;
    assert_eq!(again["state"], json!("completed"));
    let history = ok(mcp, "task_history", json!({"task": plan})).await;
    let text = history.to_string();
    for event in [
        "agent_assigned",
        "execution_started",
        "heartbeat",
        "execution_succeeded",
    ] {
        assert!(text.contains(event), "{event} missing: {history}");
    }

    // The dependent is claimable now, handed plan's result, and started in the same call.
    let claim = ok(
        mcp,
        "claim_task",
        json!({"capabilities": ["llm"], "wait_seconds": 20, "start": true}),
    )
    .await;
    assert_eq!(claim["task"], json!(write), "{claim}");
    assert_eq!(claim["state"], json!("executing"), "{claim}");
    assert_eq!(claim["input"], json!({"outline": "1. leases 2. tokens"}));
    assert_eq!(
        claim["upstream"]["plan"]["result"],
        json!({"text": "1. leases 2. tokens"})
    );
    ok(
        mcp,
        "complete_task",
        json!({"task": write, "result": {"draft": "…"}}),
    )
    .await;

    // approve waits for a person: listed as waiting, completed by the signal.
    let waiting = until(mcp, "waiting", json!({"workflow": workflow}), |v| {
        v["tasks"].as_array().is_some_and(|t| !t.is_empty())
    })
    .await;
    assert_eq!(waiting["tasks"][0]["id"], json!(approve));
    assert_eq!(waiting["tasks"][0]["signal"], json!("approve"));
    let sent = ok(
        mcp,
        "send_signal",
        json!({"workflow": workflow, "name": "approve", "data": {"ok": true}, "idempotency_key": "a1"}),
    )
    .await;
    assert_eq!(sent["delivered_to"][0]["id"], json!(approve), "{sent}");
    assert_eq!(sent["delivered_to"][0]["state"], json!("completed"));
    let a = ok(
        mcp,
        "get_task",
        json!({"task": approve, "pointer": "/result"}),
    )
    .await;
    assert_eq!(a, json!({"ok": true}));
    let wf = until(mcp, "get_workflow", json!({"workflow": workflow}), |v| {
        v["status"] == json!("completed")
    })
    .await;
    assert_eq!(wf["counts"]["completed"], json!(3));
    assert_eq!(wf["tasks"].as_array().unwrap().len(), 3);
    let listed = ok(mcp, "list_workflows", json!({"status": "completed"})).await;
    assert_eq!(listed["workflows"][0]["id"], json!(workflow));
    let tasks = ok(
        mcp,
        "list_tasks",
        json!({"workflow": workflow, "state": "completed"}),
    )
    .await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 3);
    let counts = ok(mcp, "counts", json!({"workflow": workflow})).await;
    assert_eq!(counts["completed"], json!(3));

    // Refusals are tool errors with the problem's code and detail. A cycle:
    let (text, problem) = refused(
        mcp,
        "submit_workflow",
        json!({"tasks": [{"key": "a", "depends_on": ["b"]}, {"key": "b", "depends_on": ["a"]}]}),
    )
    .await;
    assert_eq!(problem["code"], json!("cycle"), "{problem}");
    assert_eq!(problem["status"], json!(422));
    assert!(text.contains("422 cycle"), "{text}");
    assert!(text.contains("field `tasks[].depends_on`"), "{text}");

    // Completing a task whose lease was lost (an operator cancelled it meanwhile).
    let solo = ok(
        mcp,
        "submit_workflow",
        json!({"name": "solo", "tasks": [{"key": "only", "capabilities": ["llm"]}]}),
    )
    .await;
    let only = solo["tasks"]["only"].as_str().unwrap().to_owned();
    let claim = ok(
        mcp,
        "claim_task",
        json!({"capabilities": ["llm"], "wait_seconds": 10, "start": true}),
    )
    .await;
    assert_eq!(claim["task"], json!(only), "{claim}");
    // A report under a token that is not the lease's is refused as stale.
    let token = claim["token"].as_u64().unwrap();
    let (text, problem) = refused(
        mcp,
        "report_progress",
        json!({"task": only, "agent": claim["agent"], "token": token + 1}),
    )
    .await;
    assert_eq!(problem["code"], json!("stale_lease"), "{problem}");
    assert!(text.contains("409 stale_lease"), "{text}");
    let cancelled = ok(
        mcp,
        "cancel",
        json!({"task": only, "reason": "no longer needed"}),
    )
    .await;
    assert_eq!(cancelled["state"], json!("cancelled"));
    let (text, problem) = refused(
        mcp,
        "complete_task",
        json!({"task": only, "result": {"late": true}}),
    )
    .await;
    assert_eq!(problem["code"], json!("task_cancelled"), "{problem}");
    assert_eq!(problem["status"], json!(409));
    assert!(text.contains("stop working on it"), "{text}");

    // Large values are cut, each cut saying how to read the whole, which get_task does.
    let doc = "x".repeat(100_000);
    let big = ok(
        mcp,
        "submit_workflow",
        json!({"tasks": [{"key": "big", "capabilities": ["llm"], "input": {"doc": doc}}]}),
    )
    .await;
    let big = big["tasks"]["big"].as_str().unwrap().to_owned();
    let claim = ok(
        mcp,
        "claim_task",
        json!({"capabilities": ["llm"], "wait_seconds": 10}),
    )
    .await;
    assert_eq!(claim["task"], json!(big), "{claim}");
    assert!(
        claim.to_string().len() < 20_000,
        "{}",
        claim.to_string().len()
    );
    let cut = claim["input"]["doc"].as_str().unwrap();
    assert!(
        cut.contains(&format!(
            "get_task with task {big} and pointer \"/input/doc\""
        )),
        "{cut}"
    );
    let whole = ok(
        mcp,
        "get_task",
        json!({"task": big, "pointer": "/input/doc", "max_bytes": 200_000}),
    )
    .await;
    assert!(whole == json!(doc), "get_task did not read the whole input");
    let released = ok(mcp, "release_task", json!({"task": big})).await;
    assert_eq!(released["state"], json!("pending"));

    // Bad arguments: tool errors, and the server goes on.
    let (text, _) = refused(mcp, "claim_task", json!({"capabilities": "llm"})).await;
    assert!(
        text.contains("capabilities") || text.contains("sequence"),
        "{text}"
    );
    let (text, _) = refused(mcp, "get_task", json!({"task": "not-an-id"})).await;
    assert!(text.contains("`task`"), "{text}");
    let (text, _) = refused(mcp, "complete_task", json!({"task": write})).await;
    assert!(text.contains("result"), "{text}");
    let (text, _) = refused(
        mcp,
        "start_task",
        json!({"task": "00000000-0000-0000-0000-000000000001"}),
    )
    .await;
    assert!(text.contains("holds no lease"), "{text}");
    let (_, problem) = refused(
        mcp,
        "get_task",
        json!({"task": "00000000-0000-0000-0000-000000000001"}),
    )
    .await;
    assert_eq!(problem["code"], json!("task_not_found"));
    ok(mcp, "counts", json!({})).await;
}

#[test]
fn over_stdio() {
    let srv = Server::start();
    runtime().block_on(async {
        let mut cmd =
            tokio::process::Command::from(srv.command(&["mcp", "--agent-name", "stdio-agent"]));
        cmd.env("RUST_LOG", "warn");
        let (transport, _) = TokioChildProcess::builder(cmd)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("baton mcp starts");
        let mcp = client_info().serve(transport).await.expect("initialized");
        scenario(&mcp).await;
        let agents = srv.run(&["agents", "--output", "json"]).ok().json();
        assert!(agents.to_string().contains("stdio-agent"), "{agents}");
        // A task still held when the host closes the session is given back at once.
        let left = ok(
            &mcp,
            "submit_workflow",
            json!({"tasks": [{"key": "left", "capabilities": ["later"]}]}),
        )
        .await;
        let left = left["tasks"]["left"].as_str().unwrap().to_owned();
        // (Other capabilities: the agent is registered again with them.)
        let claim = ok(
            &mcp,
            "claim_task",
            json!({"capabilities": ["later"], "start": true}),
        )
        .await;
        assert_eq!(claim["task"], json!(left), "{claim}");
        mcp.cancel().await.expect("closed");
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let shown = srv.run(&["show", &left, "--output", "json"]).ok().json();
            if shown["state"] == json!("pending") {
                assert_eq!(
                    shown["attempt"],
                    json!(1),
                    "a release uses no attempt: {shown}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "never given back: {shown}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// A model may think for longer than the agent's liveness window between two calls: `baton
/// mcp` keeps the agent alive while it holds a lease, so the task is still the model's.
#[test]
fn the_agent_stays_alive_between_calls() {
    let srv = Server::start_with(&["--agent-ttl-ms", "3000"]);
    runtime().block_on(async {
        let mut cmd = tokio::process::Command::from(srv.command(&["mcp"]));
        cmd.env("RUST_LOG", "warn");
        let (transport, _) = TokioChildProcess::builder(cmd)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("baton mcp starts");
        let mcp = client_info().serve(transport).await.expect("initialized");
        let created = ok(
            &mcp,
            "submit_workflow",
            json!({"tasks": [{"key": "slow", "capabilities": ["think"]}]}),
        )
        .await;
        let task = created["tasks"]["slow"].as_str().unwrap().to_owned();
        let claim = ok(
            &mcp,
            "claim_task",
            json!({"capabilities": ["think"], "wait_seconds": 10, "start": true}),
        )
        .await;
        assert_eq!(claim["task"], json!(task), "{claim}");
        // More than two liveness windows without a call.
        tokio::time::sleep(Duration::from_secs(7)).await;
        let shown = ok(&mcp, "get_task", json!({"task": task})).await;
        assert_eq!(shown["state"], json!("executing"), "{shown}");
        assert_eq!(shown["held_here"]["token"], claim["token"], "{shown}");
        let done = ok(
            &mcp,
            "complete_task",
            json!({"task": task, "result": {"ok": 1}}),
        )
        .await;
        assert_eq!(done["state"], json!("completed"));
        mcp.cancel().await.expect("closed");
    });
}

/// `baton mcp --http 127.0.0.1:0 ARGS` against `srv`, and the URL it prints.
fn http_mcp(srv: &Server, args: &[&str]) -> (KillOnDrop, String) {
    let mut all = vec!["mcp", "--http", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut child = srv
        .command(&all)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("baton mcp starts");
    let lines = Lines::of_stdout(child.stdout.take().unwrap());
    let child = KillOnDrop(child);
    let line = lines
        .until("listening on")
        .expect("baton mcp prints its address");
    let url = line
        .split_whitespace()
        .last()
        .expect("the address")
        .to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{line}"
    );
    (child, url)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn over_streamable_http() {
    let srv = Server::start();
    let (_mcp_process, url) = http_mcp(&srv, &[]);
    runtime().block_on(async {
        let transport = StreamableHttpClientTransport::from_uri(url.as_str());
        let mcp = client_info().serve(transport).await.expect("initialized");
        scenario(&mcp).await;
        mcp.cancel().await.expect("closed");
    });
}

/// The newest protocol has no sessions: each request is answered by a handler of its own, and
/// what `baton mcp` remembers (the agent, the leases) is the process's.
#[test]
fn over_streamable_http_without_sessions() {
    let srv = Server::start();
    let (_mcp_process, url) = http_mcp(&srv, &[]);
    runtime().block_on(async {
        let transport = StreamableHttpClientTransport::from_uri(url.as_str());
        let lifecycle = ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        };
        let mcp = client_info()
            .serve_with_lifecycle(transport, lifecycle)
            .await
            .expect("discovered");
        let version = mcp
            .peer_info()
            .expect("the server's info")
            .protocol_version
            .clone();
        assert_eq!(version, ProtocolVersion::V_2026_07_28);
        scenario(&mcp).await;
        mcp.cancel().await.expect("closed");
    });
}

/// The status line and body of a raw POST to `url` with `headers`.
fn post(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(WAIT_MAX)).unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(h, _)| h.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (h, v) in headers {
        req.push_str(&format!("{h}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, rest)
}

#[test]
fn http_refuses_other_hosts_and_origins_without_a_token() {
    let srv = Server::start();
    let (_mcp_process, url) = http_mcp(&srv, &[]);
    let (code, body) = post(&url, &[("Host", "evil.example:80")]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("host_not_loopback"), "{body}");
    let (code, body) = post(&url, &[("Origin", "https://evil.example")]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("cross_site_origin"), "{body}");
    // A loopback origin passes the guard (and reaches MCP, which wants a session first).
    let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
    let (code, body) = post(&url, &[("Origin", &format!("http://localhost:{port}"))]);
    assert_ne!(code, 403, "{body}");

    // Beyond loopback only with a token.
    let run = srv.run(&["mcp", "--http", "0.0.0.0:0"]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("--http-token"), "{run:?}");
}

#[test]
fn http_with_a_token_needs_it() {
    let srv = Server::start();
    let (_mcp_process, url) = http_mcp(&srv, &["--http-token", "s3cret"]);
    let (code, body) = post(&url, &[]);
    assert_eq!(code, 401, "{body}");
    let (code, _) = post(&url, &[("Authorization", "Bearer wrong")]);
    assert_eq!(code, 401);
    runtime().block_on(async {
        let refused = client_info()
            .serve(StreamableHttpClientTransport::from_uri(url.as_str()))
            .await;
        assert!(refused.is_err(), "a client without the token got in");
        let config =
            StreamableHttpClientTransportConfig::with_uri(url.as_str()).auth_header("s3cret");
        let mcp = client_info()
            .serve(StreamableHttpClientTransport::from_config(config))
            .await
            .expect("initialized with the token");
        let counts = ok(&mcp, "counts", json!({})).await;
        assert_eq!(counts["total"], json!(0));
        mcp.cancel().await.expect("closed");
    });
}
