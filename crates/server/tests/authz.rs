//! The authorization matrix: every route the server serves, as it lists them itself
//! (`baton_server::routes()`), called over real HTTP against a real server and store with each
//! role's token, no token and a wrong one, each answer held to the row of [`MATRIX`] for that
//! route. A route without a row fails the test: say who may call it here (and in
//! `baton_server::PERMISSIONS`, which the server applies).
//!
//! A caller refused gets 401 (no or a wrong token) or 403 (a role the route does not allow);
//! a caller let through gets anything else (200, 404, 409, 422: the route's own answer). The
//! refused are sent a body that is not even JSON, so a refusal is shown to come before the
//! body is read; the others a minimal valid body, so they reach the handler. An agent token
//! acts as its own agent, on the task leased to it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use baton_engine::ManualClock;
use baton_server::Tokens;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const VIEWER: &str = "viewer-secret";
const OPERATOR: &str = "operator-secret";
const ADMIN: &str = "admin-secret";
const AGENT: &str = "agent-secret";
const WRONG: &str = "not-a-token";

/// The callers, in the order each route is called with them: the refused first and the
/// agent before the operator and admin, whose actions (cancelling, deleting) could change
/// what the agent holds. The matrix's columns are in [`COLUMNS`] order.
const CALLERS: [Who; 6] = [
    Who::NoToken,
    Who::Wrong,
    Who::Viewer,
    Who::Agent,
    Who::Operator,
    Who::Admin,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Viewer,
    Operator,
    Admin,
    Agent,
    NoToken,
    Wrong,
}

/// The matrix's columns.
const COLUMNS: [Who; 6] = [
    Who::Viewer,
    Who::Operator,
    Who::Admin,
    Who::Agent,
    Who::NoToken,
    Who::Wrong,
];

impl Who {
    fn bearer(self) -> Option<&'static str> {
        match self {
            Who::Viewer => Some(VIEWER),
            Who::Operator => Some(OPERATOR),
            Who::Admin => Some(ADMIN),
            Who::Agent => Some(AGENT),
            Who::NoToken => None,
            Who::Wrong => Some(WRONG),
        }
    }
}

/// Every route: its method, its path as routed, and what each column gets: `Y` let through,
/// `F` 403, `U` 401. Columns: viewer, operator, admin, agent, no token, wrong token.
const MATRIX: &[(&str, &str, &str)] = &[
    // Public documents and the dashboard.
    ("GET", "/healthz", "YYYYYY"),
    ("GET", "/v1/openapi.json", "YYYYYY"),
    ("GET", "/v1/lifecycle", "YYYYYY"),
    ("GET", "/", "YYYYYY"),
    ("GET", "/reference", "YYYYYY"),
    ("GET", "/assets/{*path}", "YYYYYY"),
    // Reads: viewers and up, not agents.
    ("GET", "/metrics", "YYYFUU"),
    ("GET", "/v1/events", "YYYFUU"),
    ("GET", "/v1/counts", "YYYFUU"),
    ("GET", "/v1/ids/{suffix}", "YYYFUU"),
    ("GET", "/v1/workflows", "YYYFUU"),
    ("GET", "/v1/workflows/{id}", "YYYFUU"),
    ("GET", "/v1/workflows/{id}/graph", "YYYFUU"),
    ("GET", "/v1/workflows/{id}/history", "YYYFUU"),
    ("GET", "/v1/workflows/{id}/signals", "YYYFUU"),
    ("GET", "/v1/waiting", "YYYFUU"),
    ("GET", "/v1/tasks", "YYYFUU"),
    ("GET", "/v1/agents", "YYYFUU"),
    ("GET", "/v1/schedules", "YYYFUU"),
    ("GET", "/v1/schedules/{name}", "YYYFUU"),
    ("GET", "/v1/triggers", "YYYFUU"),
    ("GET", "/v1/triggers/{name}", "YYYFUU"),
    ("GET", "/v1/audit", "YYYFUU"),
    ("GET", "/v1/usage", "YYYFUU"),
    ("GET", "/v1/limits", "YYYFUU"),
    ("GET", "/v1/limits/{key}", "YYYFUU"),
    // Reads of one task: an agent too, for the task leased to it.
    ("GET", "/v1/tasks/{id}", "YYYYUU"),
    ("GET", "/v1/tasks/{id}/history", "YYYYUU"),
    ("GET", "/v1/tasks/{id}/upstream", "YYYYUU"),
    // Acting on workflows and tasks: operators and admins.
    ("POST", "/v1/workflows", "FYYFUU"),
    ("POST", "/v1/workflows/{id}/cancel", "FYYFUU"),
    ("POST", "/v1/workflows/{id}/signals/{name}", "FYYFUU"),
    ("POST", "/v1/workflows/{id}/pause", "FYYFUU"),
    ("POST", "/v1/workflows/{id}/resume", "FYYFUU"),
    ("PUT", "/v1/workflows/{id}/budgets", "FYYFUU"),
    ("POST", "/v1/tasks", "FYYFUU"),
    ("POST", "/v1/tasks/{id}/cancel", "FYYFUU"),
    ("POST", "/v1/tasks/{id}/retry", "FYYFUU"),
    ("POST", "/v1/tasks/{id}/pause", "FYYFUU"),
    ("POST", "/v1/tasks/{id}/resume", "FYYFUU"),
    ("POST", "/v1/tasks/{id}/skip", "FYYFUU"),
    ("POST", "/v1/tasks/{id}/fail", "FYYFUU"),
    ("POST", "/v1/tasks/{id}/rerun", "FYYFUU"),
    ("POST", "/v1/triggers/{name}", "FYYFUU"),
    // Standing configuration: admins.
    ("POST", "/v1/schedules", "FFYFUU"),
    ("DELETE", "/v1/schedules/{name}", "FFYFUU"),
    ("POST", "/v1/schedules/{name}/pause", "FFYFUU"),
    ("POST", "/v1/schedules/{name}/resume", "FFYFUU"),
    ("PUT", "/v1/triggers/{name}", "FFYFUU"),
    ("DELETE", "/v1/triggers/{name}", "FFYFUU"),
    ("PUT", "/v1/limits/{key}", "FFYFUU"),
    ("DELETE", "/v1/limits/{key}", "FFYFUU"),
    // Agents' work: agent tokens (as their agents) and admins.
    ("POST", "/v1/agents", "FFYYUU"),
    ("POST", "/v1/agents/{id}/heartbeat", "FFYYUU"),
    ("POST", "/v1/agents/{id}/claim", "FFYYUU"),
    ("POST", "/v1/tasks/{id}/started", "FFYYUU"),
    ("POST", "/v1/reports", "FFYYUU"),
    ("POST", "/v1/tasks/{id}/heartbeat", "FFYYUU"),
    ("POST", "/v1/tasks/{id}/succeeded", "FFYYUU"),
    ("POST", "/v1/tasks/{id}/failed", "FFYYUU"),
    ("POST", "/v1/tasks/{id}/released", "FFYYUU"),
    ("POST", "/v1/tasks/{id}/subtasks", "FFYYUU"),
    // Artifacts: uploads by those who submit or report, downloads by anyone with a token.
    ("PUT", "/v1/artifacts", "FYYYUU"),
    ("GET", "/v1/artifacts/{artifact}", "YYYYUU"),
    ("HEAD", "/v1/artifacts/{artifact}", "YYYYUU"),
];

/// The row of `(method, path)`: what each caller gets.
fn row(method: &Method, path: &str) -> Option<BTreeMap<&'static str, char>> {
    let (_, _, cells) = MATRIX
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)?;
    assert_eq!(
        cells.len(),
        COLUMNS.len(),
        "{method} {path}: one cell per column"
    );
    Some(
        COLUMNS
            .iter()
            .zip(cells.chars())
            .map(|(who, cell)| (name(*who), cell))
            .collect(),
    )
}

fn name(who: Who) -> &'static str {
    match who {
        Who::Viewer => "viewer",
        Who::Operator => "operator",
        Who::Admin => "admin",
        Who::Agent => "agent",
        Who::NoToken => "no token",
        Who::Wrong => "wrong token",
    }
}

/// What one route's calls work on, made afresh for each route: a workflow whose task `held`
/// is leased to the agent token's agent (one for the whole test, so that the token's cap on
/// agents online is not the question), a task waiting for a signal, a schedule, a trigger and
/// an artifact.
struct Fixture {
    workflow: String,
    held: String,
    lease_token: u64,
    agent: String,
    schedule: String,
    trigger: String,
    artifact: String,
}

/// Registers the agent every route's calls act as, with the agent token.
async fn register_agent(srv: &TestServer) -> String {
    let res = srv
        .send_json(
            Method::POST,
            "/v1/agents",
            Some(AGENT),
            &json!({"name": "worker-1", "capabilities": ["work"], "concurrency": 10_000}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
    res.json()["id"].as_str().unwrap().to_owned()
}

async fn fixture(srv: &TestServer, n: usize, agent: &str) -> Fixture {
    let admin = Some(ADMIN);
    let res = srv
        .send_json(
            Method::POST,
            "/v1/workflows",
            admin,
            &json!({"name": format!("matrix {n}"), "tasks": [
                task("held", &[]),
                {"key": "approval", "wait_for": {"signal": "go"}},
                task("after", &["held"]),
            ]}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
    let wf = res.json();
    let held = wf["tasks"]["held"].as_str().unwrap().to_owned();
    // Claim until `held` is ours (earlier routes' workflows may have ready work too).
    let lease_token = loop {
        let res = srv
            .send_json(
                Method::POST,
                &format!("/v1/agents/{agent}/claim"),
                Some(AGENT),
                &json!({"max": 256}),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.json());
        let claimed = res.json()["tasks"].as_array().unwrap().clone();
        assert!(
            !claimed.is_empty(),
            "the task `held` of route {n} is never claimed"
        );
        if let Some(t) = claimed.iter().find(|t| t["task"] == held.as_str()) {
            break t["token"].as_u64().unwrap();
        }
    };
    let schedule = format!("sched-{n}");
    let res = srv
        .send_json(
            Method::POST,
            "/v1/schedules",
            admin,
            &json!({"name": schedule, "cron": "0 0 0 1 1 *", "workflow": {"tasks": [{"key": "a"}]}}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
    let trigger = format!("trig-{n}");
    let res = srv
        .send_json(
            Method::PUT,
            &format!("/v1/triggers/{trigger}"),
            admin,
            &json!({"tasks": [{"key": "a"}]}),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
    let res = srv
        .raw(
            Method::PUT,
            "/v1/artifacts",
            admin,
            Some("text/plain"),
            Some(format!("artifact {n}").into_bytes()),
        )
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
    let artifact = res.json()["artifact"].as_str().unwrap().to_owned();
    Fixture {
        workflow: wf["workflow"].as_str().unwrap().to_owned(),
        held,
        lease_token,
        agent: agent.to_owned(),
        schedule,
        trigger,
        artifact,
    }
}

/// The route's path with its parameters filled from the fixture.
fn fill(path: &str, f: &Fixture) -> String {
    let id = if path.starts_with("/v1/workflows/") {
        &f.workflow
    } else if path.starts_with("/v1/tasks/") {
        &f.held
    } else {
        &f.agent
    };
    let name = if path.starts_with("/v1/schedules/") {
        &f.schedule
    } else if path.starts_with("/v1/triggers/") {
        &f.trigger
    } else {
        "go"
    };
    path.replace("{id}", id)
        .replace("{name}", name)
        .replace("{suffix}", &f.held[f.held.len() - 8..])
        .replace("{artifact}", &f.artifact)
        .replace("{*path}", "app.css")
        .replace("{key}", "llm")
}

/// A minimal valid body for the route, or none.
fn body(method: &Method, path: &str, f: &Fixture, n: usize, who: Who) -> Option<Value> {
    let lease = json!({"agent": f.agent, "token": f.lease_token});
    let with = |extra: Value| {
        let mut b = lease.clone();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    Some(match (method.as_str(), path) {
        ("GET" | "HEAD" | "DELETE", _) => return None,
        ("POST", "/v1/workflows") => json!({"tasks": [{"key": "x"}]}),
        ("POST", "/v1/tasks") => json!({"task": {"key": "y"}}),
        ("POST", "/v1/schedules") => json!({
            "name": format!("new-{n}-{}", name(who).replace(' ', "-")),
            "cron": "0 0 0 1 1 *",
            "workflow": {"tasks": [{"key": "a"}]},
        }),
        ("POST", "/v1/schedules/{name}/pause" | "/v1/schedules/{name}/resume") => return None,
        ("PUT", "/v1/triggers/{name}") => json!({"tasks": [{"key": "a"}]}),
        ("PUT", "/v1/limits/{key}") => json!({"units": 10, "per_ms": 1000}),
        ("POST", "/v1/agents") => {
            json!({"name": format!("worker-{n}-again"), "capabilities": ["work"]})
        }
        ("POST", "/v1/agents/{id}/heartbeat") => return None,
        ("POST", "/v1/agents/{id}/claim") => json!({"max": 1}),
        (
            "POST",
            "/v1/tasks/{id}/started" | "/v1/tasks/{id}/heartbeat" | "/v1/tasks/{id}/released",
        ) => lease,
        ("POST", "/v1/tasks/{id}/succeeded") => with(json!({"result": {"ok": true}})),
        ("POST", "/v1/reports") => {
            json!({"reports": [with(json!({"report": "heartbeat", "task": f.held}))]})
        }
        ("POST", "/v1/tasks/{id}/failed") => {
            with(json!({"error": {"kind": "boom", "message": "x"}}))
        }
        ("POST", "/v1/tasks/{id}/subtasks") => with(json!({"tasks": [{"key": "sub"}]})),
        ("POST", "/v1/workflows/{id}/signals/{name}") => json!({"ok": true}),
        _ => json!({}),
    })
}

/// One call: the status, and the body unless it is an event stream (which does not end).
async fn call(
    srv: &TestServer,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Vec<u8>>,
    content_type: &str,
) -> (StatusCode, String) {
    let mut rb = srv.client.request(method, format!("{}{path}", srv.url));
    if let Some(t) = bearer {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(b);
    }
    let res = rb.send().await.unwrap();
    let status = res.status();
    let streaming = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        return (status, "(an event stream)".into());
    }
    (status, res.text().await.unwrap_or_default())
}

async fn server() -> TestServer {
    let mut tokens = Tokens::none();
    tokens.add_viewer(VIEWER);
    tokens.add_operator(OPERATOR);
    tokens.add_admin(ADMIN);
    tokens.add_agent("worker-*", AGENT);
    let (url, dir) = store_url().await;
    TestServer::start_with(url, dir, tokens, Arc::new(ManualClock::new(T0))).await
}

#[test]
fn every_route_has_a_row() {
    let routes = baton_server::routes();
    let missing: Vec<String> = routes
        .iter()
        .filter(|(m, p)| row(m, p).is_none())
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a row in the authorization matrix (crates/server/tests/authz.rs, \
         MATRIX): {missing:#?}\nAdd a row for each, saying who may call it (and a row to \
         baton_server::PERMISSIONS, which the server applies)"
    );
    let served: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, p)| (m.to_string(), p.clone()))
        .collect();
    let unserved: Vec<String> = MATRIX
        .iter()
        .filter(|(m, p, _)| !served.contains(&((*m).to_owned(), (*p).to_owned())))
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    if !unserved.is_empty() {
        eprintln!("rows for routes not served (yet): {unserved:?}");
    }
    // The server's own table covers every route too (it refuses to start otherwise).
    for (m, p) in &routes {
        assert!(
            baton_server::auth::permission(m, p).is_some(),
            "{m} {p} has no row in baton_server::PERMISSIONS"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_as_its_row_says() {
    let srv = server().await;
    let mut routes = baton_server::routes();
    routes.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
    let agent = register_agent(&srv).await;
    let mut wrong = Vec::new();
    for (n, (method, path)) in routes.iter().enumerate() {
        let Some(expected) = row(method, path) else {
            panic!("{method} {path} has no row: see every_route_has_a_row");
        };
        let f = fixture(&srv, n, &agent).await;
        let url = fill(path, &f);
        for who in CALLERS {
            let want = expected[name(who)];
            // The refused get a body that is not JSON: refused all the same, before it is read.
            let (payload, content_type) = match (want, body(method, path, &f, n, who)) {
                ('Y', Some(b)) => (Some(serde_json::to_vec(&b).unwrap()), "application/json"),
                ('Y', None) => (None, "application/json"),
                (_, Some(_)) => (Some(b"{not json".to_vec()), "application/json"),
                (_, None) => (None, "application/json"),
            };
            let (status, text) = call(
                &srv,
                method.clone(),
                &url,
                who.bearer(),
                payload,
                content_type,
            )
            .await;
            let ok = match want {
                'Y' => status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                'F' => status == StatusCode::FORBIDDEN,
                'U' => status == StatusCode::UNAUTHORIZED,
                other => panic!("{method} {path}: unknown cell {other:?}"),
            };
            if !ok {
                let text: String = text.chars().take(300).collect();
                wrong.push(format!(
                    "{method} {path} as {}: expected {want}, got {status}: {text}",
                    name(who)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} answers disagree with the matrix:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
