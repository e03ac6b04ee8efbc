//! Bad requests over real HTTP, table-driven: every row is refused with a 4xx problem document
//! (`application/problem+json`) carrying the expected status, code and, where the server names
//! one, field; and no row changes anything the API can show: counts, agents, the task list and
//! every fixture task in full (version and history included) are compared before and after
//! each row.
//!
//! All rows run even when some fail; the test then fails once, listing every failing row.
//! Run with `--nocapture` to see the table as it runs.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Ids and tokens of the prepared store.
struct Fixture {
    workflow: String,
    /// Registered; completed `done` and holds the lease on `running`.
    agent: String,
    /// Registered; holds nothing.
    bystander: String,
    /// Completed by `agent` with `{"by": agent}`, under token `done_token`.
    done: String,
    done_token: u64,
    /// Executing under `agent` with token `token`; `stale_token` is its previous, lost lease.
    running: String,
    token: u64,
    stale_token: u64,
    /// Pending and never claimed: it needs a capability no agent has.
    idle: String,
    /// Blocked on `idle`.
    later: String,
}

impl Fixture {
    fn tasks(&self) -> [(&'static str, &str); 4] {
        [
            ("done", &self.done),
            ("running", &self.running),
            ("idle", &self.idle),
            ("later", &self.later),
        ]
    }
}

async fn prepare(srv: &TestServer) -> Fixture {
    let mut done = task("done", &[]);
    done["priority"] = json!(10);
    let mut running = task("running", &[]);
    running["priority"] = json!(5);
    let mut idle = task("idle", &[]);
    idle["capabilities"] = json!(["manual"]);
    let later = task("later", &["idle"]);
    let (status, wf) = srv
        .post(
            "/v1/workflows",
            json!({"name": "fixture", "idempotency_key": "fixture-key",
                   "tasks": [done, running, idle, later]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");
    let id = |k: &str| wf["tasks"][k].as_str().unwrap().to_owned();
    let agent = srv.register("fixture-agent", &["work"], 4).await;
    let bystander = srv.register("bystander", &["work"], 1).await;

    let first = srv.claim(&agent, 1).await.remove(0);
    assert_eq!(first["key"], "done");
    srv.finish(&first, &agent).await;

    let lost = srv.claim(&agent, 1).await.remove(0);
    assert_eq!(lost["key"], "running");
    srv.clock.advance(5_000);
    srv.engine.tick().await.unwrap();
    srv.wait_state(&id("running"), "pending").await;
    let current = srv.claim(&agent, 1).await.remove(0);
    assert_eq!(current["key"], "running");
    let (s, b) = srv.report(&current, &agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    srv.engine.tick().await.unwrap();
    // Move the clock on, so that a refused request that wrote a timestamp (an agent's
    // `last_seen`, a task's `updated_at`) shows in the snapshot.
    srv.clock.advance(1_000);

    let fx = Fixture {
        workflow: wf["workflow"].as_str().unwrap().to_owned(),
        agent,
        bystander,
        done: id("done"),
        done_token: first["token"].as_u64().unwrap(),
        running: id("running"),
        token: current["token"].as_u64().unwrap(),
        stale_token: lost["token"].as_u64().unwrap(),
        idle: id("idle"),
        later: id("later"),
    };
    assert!(fx.stale_token < fx.token);
    assert_eq!(srv.state_of(&fx.done).await, "completed");
    assert_eq!(srv.state_of(&fx.running).await, "executing");
    assert_eq!(srv.state_of(&fx.idle).await, "pending");
    assert_eq!(srv.state_of(&fx.later).await, "blocked");
    fx
}

// ---- the snapshot -------------------------------------------------------------------------

/// Everything the API shows about the store, by name.
async fn snapshot(srv: &TestServer, fx: &Fixture) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut take = |name: String, status: StatusCode, body: Value| {
        assert_eq!(status, StatusCode::OK, "snapshot of {name}: {body}");
        out.push((name, body));
    };
    let (s, b) = srv.get("/v1/counts").await;
    take("counts".into(), s, b);
    let (s, b) = srv.get("/v1/agents").await;
    take("agents".into(), s, b);
    let (s, b) = srv.get("/v1/tasks?limit=1000").await;
    take("task list".into(), s, b);
    let (s, b) = srv.get(&format!("/v1/workflows/{}", fx.workflow)).await;
    take("workflow".into(), s, b);
    for (key, id) in fx.tasks() {
        let (s, b) = srv.get(&format!("/v1/tasks/{id}")).await;
        take(format!("task `{key}`"), s, b);
    }
    out
}

/// The paths at which `a` and `b` differ, with both values.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => diff(&format!("{path}.{k}"), va, vb, out),
                    None => out.push(format!("{path}.{k}: removed (was {va})")),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    out.push(format!("{path}.{k}: added ({vb})"));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

fn snapshot_diff(before: &[(String, Value)], after: &[(String, Value)]) -> Vec<String> {
    let mut out = Vec::new();
    for ((name, a), (_, b)) in before.iter().zip(after) {
        diff(name, a, b, &mut out);
    }
    out
}

// ---- rows -----------------------------------------------------------------------------------

struct Row {
    name: String,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
    /// Further members the problem must carry, with their values.
    members: Vec<(&'static str, Value)>,
    /// The keys of a dependency cycle, each depending on the next, from any starting point.
    cycle: Option<Vec<&'static str>>,
}

impl Row {
    fn raw(
        name: &str,
        method: Method,
        path: impl Into<String>,
        content_type: Option<&'static str>,
        body: Option<Vec<u8>>,
    ) -> Row {
        Row {
            name: name.to_owned(),
            method,
            path: path.into(),
            content_type,
            body,
            status: 0,
            code: "",
            field: None,
            members: Vec::new(),
            cycle: None,
        }
    }

    fn expect(mut self, status: u16, code: &'static str) -> Row {
        self.status = status;
        self.code = code;
        self
    }

    fn field(mut self, field: &'static str) -> Row {
        self.field = Some(field);
        self
    }

    fn member(mut self, name: &'static str, value: Value) -> Row {
        self.members.push((name, value));
        self
    }

    fn cycle(mut self, keys: &[&'static str]) -> Row {
        self.cycle = Some(keys.to_vec());
        self
    }
}

fn post(name: &str, path: impl Into<String>, body: Value) -> Row {
    Row::raw(
        name,
        Method::POST,
        path,
        Some("application/json"),
        Some(serde_json::to_vec(&body).unwrap()),
    )
}

fn post_bytes(name: &str, path: impl Into<String>, ct: Option<&'static str>, body: &[u8]) -> Row {
    Row::raw(name, Method::POST, path, ct, Some(body.to_vec()))
}

fn get(name: &str, path: impl Into<String>) -> Row {
    Row::raw(name, Method::GET, path, None, None)
}

/// A valid task.
fn ok(key: &str) -> Value {
    json!({"key": key, "capabilities": ["work"]})
}

/// `ok(key)` with `member` set to `value`.
fn ok_with(key: &str, member: &str, value: Value) -> Value {
    let mut t = ok(key);
    t[member] = value;
    t
}

/// `ok(key)` depending on `deps`.
fn dep(key: &str, deps: &[&str]) -> Value {
    ok_with(key, "depends_on", json!(deps))
}

/// A workflow of `tasks`.
fn wf(tasks: Value) -> Value {
    json!({"name": "bad", "tasks": tasks})
}

/// POST /v1/workflows with one task holding `member: value`.
fn wf1(name: &str, member: &str, value: Value) -> Row {
    post(
        name,
        "/v1/workflows",
        wf(json!([ok_with("t", member, value)])),
    )
}

const ABSENT: &str = "0192d0c6-8f5e-7cc3-9a4e-2b1f0c9d8e7a";

fn rows(fx: &Fixture) -> Vec<Row> {
    let wfs = "/v1/workflows";
    let running = &fx.running;
    let agent = fx.agent.as_str();
    let report = |what: &str, task: &str| format!("/v1/tasks/{task}/{what}");
    let claim = format!("/v1/agents/{agent}/claim");
    let key129 = "k".repeat(129);
    let caps33: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
    let caps65: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let deep = format!(
        r#"{{"tasks":[{{"key":"deep","input":{}{}}}]}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let mut huge = br#"{"name":""#.to_vec();
    huge.resize(huge.len() + 8 * 1024 * 1024, b'x');
    huge.extend_from_slice(br#"","tasks":[{"key":"a"}]}"#);
    let mut bad_utf8 = br#"{"name":""#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bad_utf8.extend_from_slice(br#"","tasks":[{"key":"a"}]}"#);
    const DAY_MS: u64 = 24 * 3600 * 1000;

    vec![
        // ---- the body as bytes ----
        post_bytes("malformed JSON", wfs, Some("application/json"), br#"{"name": "x", "tasks": [}"#)
            .expect(400, "malformed_json"),
        post_bytes("truncated JSON", wfs, Some("application/json"), br#"{"name":"x","tasks":[{"key":"a","capabilities":["wo"#)
            .expect(400, "malformed_json"),
        post_bytes("empty body", wfs, Some("application/json"), b"")
            .expect(400, "malformed_json"),
        post_bytes("invalid UTF-8", wfs, Some("application/json"), &bad_utf8)
            .expect(400, "malformed_json"),
        post_bytes("trailing garbage after the object", wfs, Some("application/json"), br#"{"tasks":[{"key":"a"}]} x"#)
            .expect(400, "malformed_json"),
        post("JSON array instead of an object", wfs, json!([ok("a")]))
            .expect(422, "invalid_field").field("body"),
        post("JSON array in field order instead of an object", wfs, json!(["bad", null, [ok("a")]]))
            .expect(422, "invalid_field").field("body"),
        post("JSON string instead of an object", wfs, json!("tasks"))
            .expect(422, "invalid_field").field("body"),
        post_bytes("Content-Type text/plain", wfs, Some("text/plain"), &serde_json::to_vec(&wf(json!([ok("a")]))).unwrap())
            .expect(415, "unsupported_media_type"),
        post_bytes("no Content-Type", wfs, None, &serde_json::to_vec(&wf(json!([ok("a")]))).unwrap())
            .expect(415, "unsupported_media_type"),
        post_bytes("body over 8 MiB", wfs, Some("application/json"), &huge)
            .expect(413, "body_too_large"),
        post_bytes("input nested 200 arrays deep", wfs, Some("application/json"), deep.as_bytes())
            .expect(400, "malformed_json"),
        // ---- shape of a workflow ----
        wf1("`priority` as a string", "priority", json!("high"))
            .expect(422, "invalid_field").field("tasks[0].priority"),
        post("`key` as a number", wfs, wf(json!([{"key": 7}])))
            .expect(422, "invalid_field").field("tasks[0].key"),
        wf1("`priority` beyond i32", "priority", json!(2_147_483_648u64))
            .expect(422, "invalid_field").field("tasks[0].priority"),
        post("unknown top-level field", wfs, json!({"tasks": [ok("a")], "owner": "me"}))
            .expect(422, "invalid_field").field("owner"),
        wf1("`retry` as an array in field order", "retry", json!([5]))
            .expect(422, "invalid_field").field("tasks[0].retry"),
        wf1("unknown field in a task", "colour", json!("red"))
            .expect(422, "invalid_field").field("tasks[0].colour"),
        wf1("unknown field in `retry`", "retry", json!({"max_tries": 3}))
            .expect(422, "invalid_field").field("tasks[0].retry.max_tries"),
        wf1("unknown field in `timeouts`", "timeouts", json!({"deadline_ms": 3}))
            .expect(422, "invalid_field").field("tasks[0].timeouts.deadline_ms"),
        wf1("unknown field in `compensation`", "compensation", json!({"key": "undo", "depends_on": []}))
            .expect(422, "invalid_field").field("tasks[0].compensation.depends_on"),
        wf1("compensation retry with no attempt", "compensation", json!({"key": "undo", "retry": {"max_attempts": 0}}))
            .expect(422, "invalid_field").field("tasks[0].compensation.retry.max_attempts"),
        wf1("compensation priority as a string", "compensation", json!({"key": "undo", "priority": "high"}))
            .expect(422, "invalid_field").field("tasks[0].compensation.priority"),
        wf1("unknown `on_agent_lost` policy", "on_agent_lost", json!("retry"))
            .expect(422, "invalid_field").field("tasks[0].on_agent_lost"),
        post("missing `tasks`", wfs, json!({"name": "empty"}))
            .expect(422, "invalid_field").field("tasks"),
        post("task without `key`", wfs, wf(json!([{"capabilities": ["work"]}])))
            .expect(422, "invalid_field").field("tasks[0].key"),
        post("`tasks` as an object", wfs, json!({"tasks": {"a": ok("a")}}))
            .expect(422, "invalid_field").field("tasks"),
        post("workflow name of 257 bytes", wfs, json!({"name": "n".repeat(257), "tasks": [ok("a")]}))
            .expect(422, "invalid_field").field("name"),
        // ---- workflow validation ----
        post("empty `tasks`", wfs, wf(json!([])))
            .expect(422, "invalid_field").field("tasks"),
        post("empty task key", wfs, wf(json!([ok("")])))
            .expect(422, "invalid_field").field("tasks[0].key"),
        post("task key of 129 bytes", wfs, wf(json!([ok(&key129)])))
            .expect(422, "invalid_field").field("tasks[0].key"),
        post("task key with a space", wfs, wf(json!([ok("two words")])))
            .expect(422, "invalid_field").field("tasks[0].key"),
        post("task key with non-ASCII letters", wfs, wf(json!([ok("tâche")])))
            .expect(422, "invalid_field").field("tasks[0].key"),
        post("duplicate task keys", wfs, wf(json!([ok("a"), ok("a")])))
            .expect(422, "duplicate_task").field("tasks[].key"),
        post("unknown dependency", wfs, wf(json!([dep("a", &["ghost"])])))
            .expect(422, "unknown_dependency").field("tasks[].depends_on"),
        post("self-dependency", wfs, wf(json!([dep("a", &["a"])])))
            .expect(422, "invalid_field").field("tasks[0].depends_on"),
        post("dependency listed twice", wfs, wf(json!([ok("a"), dep("b", &["a", "a"])])))
            .expect(422, "invalid_field").field("tasks[1].depends_on"),
        post("2-cycle", wfs, wf(json!([dep("a", &["b"]), dep("b", &["a"])])))
            .expect(422, "cycle").field("tasks[].depends_on").cycle(&["a", "b"]),
        post("3-cycle", wfs, wf(json!([dep("a", &["b"]), dep("b", &["c"]), dep("c", &["a"]), dep("d", &[])])))
            .expect(422, "cycle").field("tasks[].depends_on").cycle(&["a", "b", "c"]),
        wf1("retry.max_attempts 0", "retry", json!({"max_attempts": 0}))
            .expect(422, "invalid_field").field("tasks[0].retry.max_attempts"),
        wf1("retry.max_attempts 101", "retry", json!({"max_attempts": 101}))
            .expect(422, "invalid_field").field("tasks[0].retry.max_attempts"),
        wf1("retry.jitter 1.5", "retry", json!({"jitter": 1.5}))
            .expect(422, "invalid_field").field("tasks[0].retry.jitter"),
        wf1("retry.backoff_multiplier 0.5", "retry", json!({"backoff_multiplier": 0.5}))
            .expect(422, "invalid_field").field("tasks[0].retry.backoff_multiplier"),
        wf1("retry.max_backoff_ms below initial_backoff_ms", "retry", json!({"initial_backoff_ms": 5000, "max_backoff_ms": 4999}))
            .expect(422, "invalid_field").field("tasks[0].retry.max_backoff_ms"),
        wf1("retry.initial_backoff_ms above 30 days", "retry", json!({"initial_backoff_ms": 30 * DAY_MS + 1, "max_backoff_ms": 30 * DAY_MS + 1}))
            .expect(422, "invalid_field").field("tasks[0].retry.initial_backoff_ms"),
        wf1("retry.non_retryable kind with a space", "retry", json!({"non_retryable": ["bad kind"]}))
            .expect(422, "invalid_field").field("tasks[0].retry.non_retryable[]"),
        wf1("timeouts.heartbeat_ms 0", "timeouts", json!({"heartbeat_ms": 0}))
            .expect(422, "invalid_field").field("tasks[0].timeouts.heartbeat_ms"),
        wf1("timeouts.start_to_close_ms above 30 days", "timeouts", json!({"start_to_close_ms": 30 * DAY_MS + 1}))
            .expect(422, "invalid_field").field("tasks[0].timeouts.start_to_close_ms"),
        wf1("capability with an invalid character", "capabilities", json!(["gpu!"]))
            .expect(422, "invalid_field").field("tasks[0].capabilities[]"),
        wf1("33 capabilities on a task", "capabilities", json!(caps33))
            .expect(422, "invalid_field").field("tasks[0].capabilities"),
        wf1("compensation key equal to the task's own", "compensation", json!({"key": "t"}))
            .expect(422, "invalid_field").field("tasks[0].compensation.key"),
        post("compensation key equal to another task's key", wfs, wf(json!([ok("a"), ok_with("b", "compensation", json!({"key": "a"}))])))
            .expect(422, "invalid_field").field("tasks[1].compensation.key"),
        post("two compensations with one key", wfs, wf(json!([ok_with("a", "compensation", json!({"key": "undo"})), ok_with("b", "compensation", json!({"key": "undo"}))])))
            .expect(422, "invalid_field").field("tasks[1].compensation.key"),
        post("empty idempotency key", wfs, json!({"idempotency_key": "", "tasks": [ok("a")]}))
            .expect(422, "invalid_field").field("idempotency_key"),
        post("idempotency key reused for another workflow", wfs, json!({"name": "fixture", "idempotency_key": "fixture-key", "tasks": [ok("other")]}))
            .expect(409, "idempotency_mismatch"),
        // ---- a single task ----
        post("single task with a bad key", "/v1/tasks", json!({"task": ok("two words")}))
            .expect(422, "invalid_field").field("task.key"),
        post("single task without `task`", "/v1/tasks", json!({"idempotency_key": "x"}))
            .expect(422, "invalid_field").field("task"),
        // ---- ids and routes ----
        get("task id not a UUID", "/v1/tasks/not-a-uuid")
            .expect(400, "invalid_id").field("task_id"),
        get("unknown task id", format!("/v1/tasks/{ABSENT}"))
            .expect(404, "task_not_found"),
        get("history of an unknown task", format!("/v1/tasks/{ABSENT}/history"))
            .expect(404, "task_not_found"),
        get("workflow id not a UUID", "/v1/workflows/42")
            .expect(400, "invalid_id").field("workflow_id"),
        get("unknown workflow id", format!("/v1/workflows/{ABSENT}"))
            .expect(404, "workflow_not_found"),
        post("cancel an unknown workflow", format!("/v1/workflows/{ABSENT}/cancel"), json!({}))
            .expect(404, "workflow_not_found"),
        post("cancel an unknown task", format!("/v1/tasks/{ABSENT}/cancel"), json!({}))
            .expect(404, "task_not_found"),
        post("claim with an agent id not a UUID", "/v1/agents/worker-1/claim", json!({}))
            .expect(400, "invalid_id").field("agent_id"),
        post("claim for an unknown agent", format!("/v1/agents/{ABSENT}/claim"), json!({}))
            .expect(404, "agent_not_found"),
        Row::raw("heartbeat of an unknown agent", Method::POST, format!("/v1/agents/{ABSENT}/heartbeat"), None, None)
            .expect(404, "agent_not_found"),
        get("unknown route", "/v1/nothing-here")
            .expect(404, "no_route"),
        Row::raw("DELETE /v1/tasks", Method::DELETE, "/v1/tasks", None, None)
            .expect(405, "method_not_allowed"),
        Row::raw("PUT on a workflow", Method::PUT, format!("/v1/workflows/{}", fx.workflow), Some("application/json"), Some(b"{}".to_vec()))
            .expect(405, "method_not_allowed"),
        // ---- query strings ----
        get("?state=bogus", "/v1/tasks?state=bogus")
            .expect(400, "invalid_query").field("state"),
        get("?limit=0", "/v1/tasks?limit=0")
            .expect(400, "invalid_query").field("limit"),
        get("?limit=1001", "/v1/tasks?limit=1001")
            .expect(400, "invalid_query").field("limit"),
        get("?limit=abc", "/v1/tasks?limit=abc")
            .expect(400, "invalid_query"),
        get("task history ?limit=0", format!("/v1/tasks/{}/history?limit=0", fx.done))
            .expect(400, "invalid_query").field("limit"),
        get("task history ?limit=1001", format!("/v1/tasks/{}/history?limit=1001", fx.done))
            .expect(400, "invalid_query").field("limit"),
        get("workflow history ?limit=0", format!("/v1/workflows/{}/history?limit=0", fx.workflow))
            .expect(400, "invalid_query").field("limit"),
        get("workflow history ?limit=501", format!("/v1/workflows/{}/history?limit=501", fx.workflow))
            .expect(400, "invalid_query").field("limit"),
        get("audit ?until past the latest time", "/v1/audit?until=9223372036854775808")
            .expect(400, "invalid_query").field("until"),
        get("unknown query parameter", "/v1/tasks?colour=red")
            .expect(400, "invalid_query"),
        get("counts for a workflow id not a UUID", "/v1/counts?workflow=nope")
            .expect(400, "invalid_query"),
        get("events for a workflow id not a UUID", "/v1/events?workflow=nope")
            .expect(400, "invalid_query"),
        get("/v1/lifecycle?format=svg", "/v1/lifecycle?format=svg")
            .expect(400, "invalid_query").field("format"),
        // ---- claims ----
        post("claim max 0", &claim, json!({"max": 0}))
            .expect(422, "invalid_field").field("max"),
        post("claim max 1000", &claim, json!({"max": 1000}))
            .expect(422, "invalid_field").field("max"),
        post("claim wait_ms over the maximum", &claim, json!({"wait_ms": 60_001}))
            .expect(422, "invalid_field").field("wait_ms"),
        post("claim max as a string", &claim, json!({"max": "one"}))
            .expect(422, "invalid_field").field("max"),
        post("claim with an unknown field", &claim, json!({"capabilities": ["work"]}))
            .expect(422, "invalid_field").field("capabilities"),
        // ---- reports ----
        post("succeeded with a stale token", report("succeeded", running), json!({"agent": agent, "token": fx.stale_token, "result": 1}))
            .expect(409, "stale_lease").member("state", json!("executing")),
        post("heartbeat with a stale token", report("heartbeat", running), json!({"agent": agent, "token": fx.stale_token}))
            .expect(409, "stale_lease").member("state", json!("executing")),
        post("succeeded with `result: null`", report("succeeded", running), json!({"agent": agent, "token": fx.token, "result": null}))
            .expect(409, "guard_failed").member("state", json!("executing")),
        post("succeeded without `result`", report("succeeded", running), json!({"agent": agent, "token": fx.token}))
            .expect(422, "invalid_field").field("result"),
        post("succeeded with a token not issued yet", report("succeeded", running), json!({"agent": agent, "token": fx.token + 1, "result": 1}))
            .expect(409, "stale_lease"),
        post("started on a pending task never claimed", report("started", &fx.idle), json!({"agent": agent, "token": 0}))
            .expect(409, "stale_lease").member("state", json!("pending")),
        post("report by an agent that holds no lease", report("succeeded", running), json!({"agent": fx.bystander, "token": fx.token, "result": 1}))
            .expect(409, "stale_lease").member("state", json!("executing")),
        post("report naming an unregistered agent", report("succeeded", running), json!({"agent": ABSENT, "token": fx.token, "result": 1}))
            .expect(404, "agent_not_found"),
        post("report on an unknown task", report("started", ABSENT), json!({"agent": agent, "token": 1}))
            .expect(404, "task_not_found"),
        post("report on a task id not a UUID", report("started", "t-1"), json!({"agent": agent, "token": 1}))
            .expect(400, "invalid_id").field("task_id"),
        post("failed without `error.kind`", report("failed", running), json!({"agent": agent, "token": fx.token, "error": {"message": "boom"}}))
            .expect(422, "invalid_field").field("error.kind"),
        post("failed with an empty `error.kind`", report("failed", running), json!({"agent": agent, "token": fx.token, "error": {"kind": "", "message": "boom"}}))
            .expect(422, "invalid_field").field("error.kind"),
        post("failed with `error.kind` over 128 bytes", report("failed", running), json!({"agent": agent, "token": fx.token, "error": {"kind": "k".repeat(129), "message": "boom"}}))
            .expect(422, "invalid_field").field("error.kind"),
        post("failed with `error.message` over 32,768 bytes", report("failed", running), json!({"agent": agent, "token": fx.token, "error": {"kind": "x", "message": "m".repeat(32_769)}}))
            .expect(422, "invalid_field").field("error.message"),
        post("failed with `error.message` of 32,769 bytes in 8,193 characters", report("failed", running), json!({"agent": agent, "token": fx.token, "error": {"kind": "x", "message": format!("{}m", "\u{1F4A5}".repeat(8_192))}}))
            .expect(422, "invalid_field").field("error.message"),
        post("failed with `error.retryable` as a string", report("failed", running), json!({"agent": agent, "token": fx.token, "error": {"kind": "x", "message": "boom", "retryable": "yes"}}))
            .expect(422, "invalid_field").field("error.retryable"),
        post("succeeded again with a different result", report("succeeded", &fx.done), json!({"agent": agent, "token": fx.done_token, "result": {"by": "someone else"}}))
            .expect(409, "conflict").member("state", json!("completed")),
        post("released on a completed task", report("released", &fx.done), json!({"agent": agent, "token": fx.done_token}))
            .expect(409, "not_accepted").member("state", json!("completed")),
        post("report without `token`", report("started", running), json!({"agent": agent}))
            .expect(422, "invalid_field").field("token"),
        post("report with a negative token", report("started", running), json!({"agent": agent, "token": -1}))
            .expect(422, "invalid_field").field("token"),
        post("report with `agent` not a UUID", report("started", running), json!({"agent": "fixture-agent", "token": fx.token}))
            .expect(422, "invalid_field").field("agent"),
        post("report with a token past int64", report("heartbeat", running), json!({"agent": agent, "token": 9_223_372_036_854_775_808u64}))
            .expect(422, "invalid_field").field("token"),
        post("batched report with a token past int64", "/v1/reports", json!({"reports": [
                {"report": "heartbeat", "task": running, "agent": agent, "token": fx.token},
                {"report": "heartbeat", "task": running, "agent": agent, "token": 9_223_372_036_854_775_808u64}]}))
            .expect(422, "invalid_field").field("reports[1]"),
        post("subtasks with no tasks", report("subtasks", running), json!({"agent": agent, "token": fx.token, "tasks": []}))
            .expect(422, "invalid_field").field("tasks"),
        // ---- operator actions ----
        post("cancel a completed task", format!("/v1/tasks/{}/cancel", fx.done), json!({"reason": "too late"}))
            .expect(409, "not_accepted").member("state", json!("completed")),
        post("retry a pending task", format!("/v1/tasks/{}/retry", fx.idle), json!({}))
            .expect(409, "not_accepted").member("state", json!("pending")),
        post("retry a completed task", format!("/v1/tasks/{}/retry", fx.done), json!({}))
            .expect(409, "not_accepted").member("state", json!("completed")),
        post("retry with an unknown body field", format!("/v1/tasks/{}/retry", fx.done), json!({"force": true}))
            .expect(422, "invalid_field").field("force"),
        post("fail a task with `error.message` over 32,768 bytes", format!("/v1/tasks/{}/fail", fx.idle), json!({"reason": "stop", "error": {"kind": "forced", "message": "m".repeat(32_769)}}))
            .expect(422, "invalid_field").field("error.message"),
        post("cancel a task with a reason over 1,024 bytes", format!("/v1/tasks/{}/cancel", fx.idle), json!({"reason": "r".repeat(1025)}))
            .expect(422, "invalid_field").field("reason"),
        post("cancel a workflow with a reason over 1,024 bytes", format!("/v1/workflows/{}/cancel", fx.workflow), json!({"reason": "r".repeat(1025)}))
            .expect(422, "invalid_field").field("reason"),
        post("cancel with `reason` as a number", format!("/v1/tasks/{}/cancel", fx.idle), json!({"reason": 5}))
            .expect(422, "invalid_field").field("reason"),
        // ---- agents ----
        post("register with concurrency 0", "/v1/agents", json!({"name": "w", "concurrency": 0}))
            .expect(422, "invalid_field").field("concurrency"),
        post("register with concurrency 10001", "/v1/agents", json!({"name": "w", "concurrency": 10_001}))
            .expect(422, "invalid_field").field("concurrency"),
        post("register with an empty name", "/v1/agents", json!({"name": ""}))
            .expect(422, "invalid_field").field("name"),
        post("register without a name", "/v1/agents", json!({"capabilities": ["work"]}))
            .expect(422, "invalid_field").field("name"),
        post("register with a name of 257 bytes", "/v1/agents", json!({"name": "n".repeat(257)}))
            .expect(422, "invalid_field").field("name"),
        post("register with 65 capabilities", "/v1/agents", json!({"name": "w", "capabilities": caps65}))
            .expect(422, "invalid_field").field("capabilities"),
        post("register with an invalid capability", "/v1/agents", json!({"name": "w", "capabilities": ["has space"]}))
            .expect(422, "invalid_field").field("capabilities[]"),
        post("re-register an existing agent with concurrency 0", "/v1/agents", json!({"id": agent, "name": "fixture-agent", "concurrency": 0}))
            .expect(422, "invalid_field").field("concurrency"),
    ]
}

/// What is wrong with the answer to `row`, if anything.
fn judge(row: &Row, res: &RawResponse) -> Vec<String> {
    let mut bad = Vec::new();
    let body = res.json();
    let status = res.status.as_u16();
    if status != row.status {
        bad.push(format!("status {status}, expected {}", row.status));
    }
    if !res.status.is_client_error() {
        bad.push(format!("status {status} is not 4xx"));
    }
    if res.content_type.as_deref() != Some("application/problem+json") {
        bad.push(format!("Content-Type {:?}", res.content_type));
    }
    if !body.is_object() {
        bad.push(format!(
            "body is not a JSON object: {:?}",
            String::from_utf8_lossy(&res.body[..res.body.len().min(300)])
        ));
        return bad;
    }
    for member in ["type", "title", "code", "detail"] {
        match body[member].as_str() {
            Some(s) if !s.is_empty() => {}
            _ => bad.push(format!("`{member}` missing or empty")),
        }
    }
    if body["status"].as_u64() != Some(u64::from(status)) {
        bad.push(format!("`status` {} != HTTP {status}", body["status"]));
    }
    if body["code"] != row.code {
        bad.push(format!("code {}, expected {:?}", body["code"], row.code));
    }
    if body["type"] != format!("/problems/{}", body["code"].as_str().unwrap_or("")) {
        bad.push(format!("type {} does not name the code", body["type"]));
    }
    if let Some(field) = row.field {
        if body["field"] != field {
            bad.push(format!("field {}, expected {field:?}", body["field"]));
        }
    }
    if !body["field"].is_null() && body["expected"].as_str().is_none_or(str::is_empty) {
        bad.push("a `field` without what was `expected`".into());
    }
    for (name, value) in &row.members {
        if &body[*name] != value {
            bad.push(format!("`{name}` {}, expected {value}", body[*name]));
        }
    }
    if let Some(keys) = &row.cycle {
        let got: Vec<&str> = body["cycle"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // A closed path, the first key repeated at the end: `b -> a -> b`.
        let n = keys.len();
        let closed = got.len() == n + 1
            && got.first() == got.last()
            && (0..n).any(|r| (0..n).all(|i| got[i] == keys[(i + r) % n]));
        if !closed {
            bad.push(format!(
                "cycle {}, expected a closed path through {keys:?}, each depending on the next",
                body["cycle"]
            ));
        }
    }
    bad
}

/// Waits until the engine's background work has nothing left: no outbox item to carry out and
/// no blocked task to release (the fixture's effects have all run).
async fn quiet(srv: &TestServer) {
    use baton_store::Store;
    let store = srv.engine.store();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let outbox = store.outbox(1).await.expect("outbox");
        let released = store.released_blocked(1).await.expect("released");
        if outbox.is_empty() && released.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "the fixture's effects never ran: outbox {outbox:?}, released {released:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_is_a_4xx_problem_and_changes_nothing() {
    let srv = TestServer::start().await;
    let fx = prepare(&srv).await;
    quiet(&srv).await;
    let before = snapshot(&srv, &fx).await;
    quiet(&srv).await;
    let settled = snapshot(&srv, &fx).await;
    assert!(
        snapshot_diff(&before, &settled).is_empty(),
        "the fixture is still changing: {:#?}",
        snapshot_diff(&before, &settled)
    );

    let rows = rows(&fx);
    let mut names = std::collections::HashSet::new();
    for row in &rows {
        assert!(names.insert(row.name.as_str()), "row {:?} twice", row.name);
        assert!(row.status != 0, "row {:?} expects nothing", row.name);
    }
    let mut baseline = before;
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        // A millisecond on, so that a timestamp written by this row differs from the one an
        // earlier row may have written.
        srv.clock.advance(1);
        let res = srv
            .raw(
                row.method.clone(),
                &row.path,
                None,
                row.content_type,
                row.body.clone(),
            )
            .await;
        let body = res.json();
        let mut bad = judge(row, &res);
        let after = snapshot(&srv, &fx).await;
        let changed = snapshot_diff(&baseline, &after);
        if !changed.is_empty() {
            bad.push(format!("the store changed: {changed:?}"));
            // Already a failure; compare later rows with the store as this row left it, so
            // that they are judged on their own.
            baseline = after;
        }
        println!(
            "{:>3} {:<52} {} {:<22} {:<34} {}",
            i + 1,
            row.name,
            res.status.as_u16(),
            body["code"].as_str().unwrap_or("-"),
            body["field"].as_str().unwrap_or("-"),
            if bad.is_empty() { "ok" } else { "FAILED" }
        );
        if !bad.is_empty() {
            let detail = body["detail"].as_str().unwrap_or("").to_owned();
            failures.push(format!(
                "row {} `{}` ({} {}): {}\n      detail: {detail}",
                i + 1,
                row.name,
                row.method,
                if row.path.len() > 80 {
                    &row.path[..80]
                } else {
                    &row.path
                },
                bad.join("; ")
            ));
        }
    }
    println!("{} rows, {} failed", rows.len(), failures.len());
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}
