//! Bearer tokens over real HTTP: no or a wrong token is 401; an agent token acts only as the
//! agents registered under its name, reads only the tasks leased to them, and never acts as an
//! operator (403); an admin token may do everything; with no tokens configured, loopback
//! clients are admins. (`authz.rs` holds every route against every role.)

mod common;

use std::sync::Arc;

use baton_engine::ManualClock;
use baton_server::Tokens;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const OPERATOR: &str = "operator-secret";
const ADMIN: &str = "admin-secret";
const ALPHA: &str = "alpha-secret";
const BETA: &str = "beta-secret";

/// A server with an operator token and agent tokens for `alpha` and `beta`. The fixture's own
/// helpers (`post`, `get`, `submit`, ...) send the operator token.
async fn server() -> TestServer {
    let mut tokens = Tokens::none();
    tokens.add_operator(OPERATOR);
    tokens.add_admin(ADMIN);
    tokens.add_agent("alpha", ALPHA);
    tokens.add_agent("beta", BETA);
    let (url, dir) = store_url().await;
    let mut srv = TestServer::start_with(url, dir, tokens, Arc::new(ManualClock::new(T0))).await;
    srv.token = Some(OPERATOR.to_owned());
    srv
}

/// Asserts `res` is a problem document with this status and code.
#[track_caller]
fn assert_problem(res: &RawResponse, status: StatusCode, code: &str) {
    let body = res.json();
    assert_eq!(res.status, status, "{body}");
    assert_eq!(
        res.content_type.as_deref(),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    for member in ["type", "title", "detail"] {
        assert!(
            body[member].as_str().is_some_and(|s| !s.is_empty()),
            "`{member}` missing: {body}"
        );
    }
}

#[track_caller]
fn assert_status(res: &RawResponse, status: StatusCode) -> Value {
    let body = res.json();
    assert_eq!(res.status, status, "{body}");
    body
}

/// Registers an agent named `name` with `token`.
async fn register_as(srv: &TestServer, token: &str, name: &str) -> String {
    let res = srv
        .send_json(
            Method::POST,
            "/v1/agents",
            Some(token),
            &json!({"name": name, "capabilities": ["work"], "concurrency": 4}),
        )
        .await;
    assert_status(&res, StatusCode::CREATED)["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Claims one task for `agent` with `token`.
async fn claim_as(srv: &TestServer, token: &str, agent: &str) -> Value {
    let res = srv
        .send_json(
            Method::POST,
            &format!("/v1/agents/{agent}/claim"),
            Some(token),
            &json!({"max": 1}),
        )
        .await;
    let mut body = assert_status(&res, StatusCode::OK);
    body["tasks"]
        .as_array_mut()
        .unwrap()
        .pop()
        .expect("a task to claim")
}

/// Everything the requests below could change.
async fn store_view(srv: &TestServer) -> Value {
    let (s, tasks) = srv.get("/v1/tasks?limit=1000").await;
    assert_eq!(s, StatusCode::OK, "{tasks}");
    let mut full = Vec::new();
    for t in tasks["tasks"].as_array().unwrap() {
        full.push(srv.task(t["id"].as_str().unwrap()).await);
    }
    let (s, agents) = srv.get("/v1/agents").await;
    assert_eq!(s, StatusCode::OK, "{agents}");
    json!({"counts": srv.counts().await, "agents": agents, "tasks": full})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_token_is_401_unauthorized() {
    let srv = server().await;
    srv.submit(json!([task("a", &[])])).await;
    let before = store_view(&srv).await;
    let wf = json!({"tasks": [task("b", &[])]});
    let requests: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/v1/tasks", None),
        (Method::GET, "/v1/counts", None),
        (Method::GET, "/v1/agents", None),
        (Method::GET, "/v1/events", None),
        (Method::POST, "/v1/workflows", Some(wf.clone())),
        (
            Method::POST,
            "/v1/tasks",
            Some(json!({"task": task("c", &[])})),
        ),
        (Method::POST, "/v1/agents", Some(json!({"name": "alpha"}))),
    ];
    for (method, path, body) in requests {
        let res = match &body {
            Some(b) => srv.send_json(method.clone(), path, None, b).await,
            None => srv.raw(method.clone(), path, None, None, None).await,
        };
        assert_problem(&res, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // A body that would be refused anyway is refused for the missing token first.
    let res = srv
        .raw(
            Method::POST,
            "/v1/workflows",
            None,
            Some("application/json"),
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_problem(&res, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(store_view(&srv).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_401_unauthorized() {
    let srv = server().await;
    let before = store_view(&srv).await;
    let wf = json!({"tasks": [task("a", &[])]});
    for token in ["not-a-token", "operator-secret-but-longer", "alpha", ""] {
        let res = srv
            .send_json(Method::POST, "/v1/workflows", Some(token), &wf)
            .await;
        assert_problem(&res, StatusCode::UNAUTHORIZED, "unauthorized");
        let res = srv
            .raw(Method::GET, "/v1/counts", Some(token), None, None)
            .await;
        assert_problem(&res, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // The right secret under another scheme is not a bearer token.
    let res = srv
        .client
        .post(format!("{}/v1/workflows", srv.url))
        .header("Authorization", format!("Token {OPERATOR}"))
        .json(&wf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = srv
        .client
        .post(format!("{}/v1/workflows", srv.url))
        .basic_auth(OPERATOR, None::<&str>)
        .json(&wf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(store_view(&srv).await, before);
}

/// RFC 9110 §11.1: the authentication scheme is case-insensitive, so `bearer <token>` is the
/// same credential as `Bearer <token>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let srv = server().await;
    for scheme in ["bearer", "BEARER"] {
        let res = srv
            .client
            .get(format!("{}/v1/counts", srv.url))
            .header("Authorization", format!("{scheme} {OPERATOR}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "`Authorization: {scheme} <operator token>` was refused"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_registers_only_under_its_own_name() {
    let srv = server().await;
    let alpha = register_as(&srv, ALPHA, "alpha").await;
    let beta = register_as(&srv, BETA, "beta").await;
    let before = store_view(&srv).await;

    let res = srv
        .send_json(
            Method::POST,
            "/v1/agents",
            Some(ALPHA),
            &json!({"name": "beta"}),
        )
        .await;
    assert_problem(&res, StatusCode::FORBIDDEN, "forbidden");
    // Nor may it take over beta's registration by its id, under either name.
    for name in ["alpha", "beta"] {
        let res = srv
            .send_json(
                Method::POST,
                "/v1/agents",
                Some(ALPHA),
                &json!({"id": beta, "name": name, "capabilities": ["everything"]}),
            )
            .await;
        assert_problem(&res, StatusCode::FORBIDDEN, "forbidden");
    }
    // Nor rename its own registration to beta.
    let res = srv
        .send_json(
            Method::POST,
            "/v1/agents",
            Some(ALPHA),
            &json!({"id": alpha, "name": "beta"}),
        )
        .await;
    assert_problem(&res, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(store_view(&srv).await, before, "nothing changed");

    // Re-registering itself is fine.
    let res = srv
        .send_json(
            Method::POST,
            "/v1/agents",
            Some(ALPHA),
            &json!({"id": alpha, "name": "alpha", "capabilities": ["work", "more"]}),
        )
        .await;
    let body = assert_status(&res, StatusCode::CREATED);
    assert_eq!(body["id"], alpha.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_claims_and_reports_only_as_its_own_agent() {
    let srv = server().await;
    srv.submit(json!([task("job", &[]), task("other", &[])]))
        .await;
    let alpha = register_as(&srv, ALPHA, "alpha").await;
    let beta = register_as(&srv, BETA, "beta").await;
    let claimed = claim_as(&srv, ALPHA, &alpha).await;
    let id = claimed["task"].as_str().unwrap().to_owned();
    let token = claimed["token"].as_u64().unwrap();
    let before = store_view(&srv).await;

    // Claiming, or keeping alive, for another agent.
    let res = srv
        .send_json(
            Method::POST,
            &format!("/v1/agents/{beta}/claim"),
            Some(ALPHA),
            &json!({"max": 1}),
        )
        .await;
    assert_problem(&res, StatusCode::FORBIDDEN, "forbidden");
    let res = srv
        .raw(
            Method::POST,
            &format!("/v1/agents/{beta}/heartbeat"),
            Some(ALPHA),
            None,
            None,
        )
        .await;
    assert_problem(&res, StatusCode::FORBIDDEN, "forbidden");

    // Reporting in another agent's name: beta's token naming alpha, alpha's naming beta.
    for (bearer, named) in [(BETA, &alpha), (ALPHA, &beta)] {
        for (what, extra) in [
            ("started", json!({})),
            ("heartbeat", json!({})),
            ("succeeded", json!({"result": "stolen"})),
            (
                "failed",
                json!({"error": {"kind": "sabotage", "message": "x"}}),
            ),
            ("released", json!({})),
            ("subtasks", json!({"tasks": [task("sub", &[])]})),
        ] {
            let mut body = json!({"agent": named, "token": token});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let res = srv
                .send_json(
                    Method::POST,
                    &format!("/v1/tasks/{id}/{what}"),
                    Some(bearer),
                    &body,
                )
                .await;
            assert_problem(&res, StatusCode::FORBIDDEN, "forbidden");
        }
    }
    assert_eq!(store_view(&srv).await, before, "nothing changed");

    // Its own reports go through.
    for (what, extra) in [
        ("started", json!({})),
        ("succeeded", json!({"result": {"ok": true}})),
    ] {
        let mut body = json!({"agent": alpha, "token": token});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let res = srv
            .send_json(
                Method::POST,
                &format!("/v1/tasks/{id}/{what}"),
                Some(ALPHA),
                &body,
            )
            .await;
        assert_status(&res, StatusCode::OK);
    }
    assert_eq!(srv.state_of(&id).await, "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_may_not_submit_cancel_or_retry() {
    let srv = server().await;
    let mut once = task("once", &[]);
    once["retry"]["max_attempts"] = json!(1);
    let wf = srv.submit(json!([once, task("open", &[])])).await;
    let workflow = wf["workflow"].as_str().unwrap().to_owned();
    let once = wf["tasks"]["once"].as_str().unwrap().to_owned();
    let open = wf["tasks"]["open"].as_str().unwrap().to_owned();
    let alpha = register_as(&srv, ALPHA, "alpha").await;
    // Fail `once` for good, so that a retry would be accepted from an operator.
    let res = srv
        .send_json(
            Method::POST,
            &format!("/v1/agents/{alpha}/claim"),
            Some(ALPHA),
            &json!({"max": 2}),
        )
        .await;
    let claimed = assert_status(&res, StatusCode::OK)["tasks"].clone();
    let mine = claimed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "once")
        .unwrap()
        .clone();
    for (what, extra) in [
        ("started", json!({})),
        (
            "failed",
            json!({"error": {"kind": "boom", "message": "x", "retryable": false}}),
        ),
    ] {
        let mut body = json!({"agent": alpha, "token": mine["token"]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let res = srv
            .send_json(
                Method::POST,
                &format!("/v1/tasks/{once}/{what}"),
                Some(ALPHA),
                &body,
            )
            .await;
        assert_status(&res, StatusCode::OK);
    }
    srv.engine.tick().await.unwrap();
    assert_eq!(srv.state_of(&once).await, "failed");
    let before = store_view(&srv).await;

    let forbidden: Vec<(String, Value)> = vec![
        ("/v1/workflows".into(), json!({"tasks": [task("x", &[])]})),
        ("/v1/tasks".into(), json!({"task": task("y", &[])})),
        (format!("/v1/tasks/{open}/cancel"), json!({"reason": "no"})),
        (format!("/v1/workflows/{workflow}/cancel"), json!({})),
        (format!("/v1/tasks/{once}/retry"), json!({})),
    ];
    for token in [ALPHA, BETA] {
        for (path, body) in &forbidden {
            let res = srv.send_json(Method::POST, path, Some(token), body).await;
            assert_problem(&res, StatusCode::FORBIDDEN, "forbidden");
        }
    }
    assert_eq!(store_view(&srv).await, before, "nothing changed");

    // Nor read lists, workflows, or a task not leased to one of its agents (`once` failed,
    // `open` is leased to alpha: beta's token may not read it).
    for (token, path) in [
        (ALPHA, "/v1/tasks".to_owned()),
        (ALPHA, "/v1/counts".to_owned()),
        (ALPHA, "/v1/agents".to_owned()),
        (ALPHA, "/v1/events".to_owned()),
        (ALPHA, format!("/v1/tasks/{once}")),
        (ALPHA, format!("/v1/tasks/{once}/upstream")),
        (BETA, format!("/v1/tasks/{open}")),
        (ALPHA, format!("/v1/workflows/{workflow}")),
        (ALPHA, format!("/v1/ids/{}", &once[once.len() - 8..])),
    ] {
        let res = srv.raw(Method::GET, &path, Some(token), None, None).await;
        assert_problem(&res, StatusCode::FORBIDDEN, "forbidden");
    }
    // It reads the task it holds, its history and its upstream.
    for path in [
        format!("/v1/tasks/{open}"),
        format!("/v1/tasks/{open}/history"),
        format!("/v1/tasks/{open}/upstream"),
    ] {
        let res = srv.raw(Method::GET, &path, Some(ALPHA), None, None).await;
        assert_status(&res, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_may_do_everything() {
    let srv = server().await;
    let op = Some(ADMIN);
    // Register agents under any name, and re-register them.
    let alpha = register_as(&srv, ADMIN, "alpha").await;
    let beta = register_as(&srv, ADMIN, "beta").await;
    let res = srv
        .send_json(
            Method::POST,
            "/v1/agents",
            op,
            &json!({"id": beta, "name": "beta", "capabilities": ["work"], "concurrency": 2}),
        )
        .await;
    assert_status(&res, StatusCode::CREATED);

    // Submit a workflow and a single task.
    let mut once = task("once", &[]);
    once["retry"]["max_attempts"] = json!(1);
    once["priority"] = json!(10);
    let mut two = task("two", &[]);
    two["priority"] = json!(5);
    let res = srv
        .send_json(
            Method::POST,
            "/v1/workflows",
            op,
            &json!({"tasks": [once, two]}),
        )
        .await;
    let wf = assert_status(&res, StatusCode::CREATED);
    let once = wf["tasks"]["once"].as_str().unwrap().to_owned();
    let res = srv
        .send_json(
            Method::POST,
            "/v1/tasks",
            op,
            &json!({"task": task("single", &[])}),
        )
        .await;
    let single = assert_status(&res, StatusCode::CREATED);

    // Claim, keep alive and report in any agent's name: alpha fails `once`, beta completes
    // `two`.
    let first = claim_as(&srv, ADMIN, &alpha).await;
    assert_eq!(first["key"], "once");
    let second = claim_as(&srv, ADMIN, &beta).await;
    assert_eq!(second["key"], "two");
    let res = srv
        .raw(
            Method::POST,
            &format!("/v1/agents/{beta}/heartbeat"),
            op,
            None,
            None,
        )
        .await;
    assert_status(&res, StatusCode::OK);
    for (claimed, agent, what, extra) in [
        (
            &first,
            &alpha,
            "failed",
            json!({"error": {"kind": "boom", "message": "x"}}),
        ),
        (&second, &beta, "succeeded", json!({"result": 1})),
    ] {
        let id = claimed["task"].as_str().unwrap();
        let mut body = json!({"agent": agent, "token": claimed["token"]});
        let res = srv
            .send_json(Method::POST, &format!("/v1/tasks/{id}/started"), op, &body)
            .await;
        assert_status(&res, StatusCode::OK);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let res = srv
            .send_json(Method::POST, &format!("/v1/tasks/{id}/{what}"), op, &body)
            .await;
        assert_status(&res, StatusCode::OK);
    }

    // Retry the task that failed for good.
    srv.engine.tick().await.unwrap();
    assert_eq!(srv.state_of(&once).await, "failed");
    let res = srv
        .send_json(
            Method::POST,
            &format!("/v1/tasks/{once}/retry"),
            op,
            &json!({}),
        )
        .await;
    assert_eq!(assert_status(&res, StatusCode::OK)["state"], "pending");

    // Cancel a task and a workflow.
    let res = srv
        .send_json(
            Method::POST,
            &format!("/v1/tasks/{once}/cancel"),
            op,
            &json!({"reason": "enough"}),
        )
        .await;
    assert_eq!(assert_status(&res, StatusCode::OK)["state"], "cancelled");
    let res = srv
        .send_json(
            Method::POST,
            &format!(
                "/v1/workflows/{}/cancel",
                single["workflow"].as_str().unwrap()
            ),
            op,
            &json!({}),
        )
        .await;
    assert_status(&res, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_tokens_configured_loopback_clients_are_admins_named_local() {
    let srv = TestServer::start().await;
    assert!(srv.token.is_none());
    let res = srv
        .send_json(
            Method::POST,
            "/v1/workflows",
            None,
            &json!({"tasks": [task("a", &[])]}),
        )
        .await;
    let wf = assert_status(&res, StatusCode::CREATED);
    let a = wf["tasks"]["a"].as_str().unwrap();
    let res = srv
        .send_json(
            Method::POST,
            "/v1/agents",
            None,
            &json!({"name": "anyone", "capabilities": ["work"]}),
        )
        .await;
    assert_status(&res, StatusCode::CREATED);
    let res = srv.raw(Method::GET, "/v1/counts", None, None, None).await;
    assert_eq!(assert_status(&res, StatusCode::OK)["total"], 1);
    // A token, meaningless here, changes nothing.
    let res = srv
        .raw(Method::GET, "/v1/counts", Some("anything"), None, None)
        .await;
    assert_status(&res, StatusCode::OK);
    let res = srv
        .send_json(
            Method::POST,
            &format!("/v1/tasks/{a}/cancel"),
            None,
            &json!({}),
        )
        .await;
    assert_status(&res, StatusCode::OK);
    // Recorded as done by `local`.
    let task = srv.task(a).await;
    let cancel = task["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(cancel["event"], "cancel_requested", "{cancel}");
    assert_eq!(cancel["actor"]["name"], "local", "{cancel}");
}

/// Sends `GET path` with extra headers, no token unless given.
async fn get_with(
    srv: &TestServer,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
) -> (RawResponse, reqwest::header::HeaderMap) {
    let mut rb = srv.client.get(format!("{}{path}", srv.url));
    if let Some(t) = bearer {
        rb = rb.bearer_auth(t);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let res = rb.send().await.unwrap();
    let status = res.status();
    let head = res.headers().clone();
    let content_type = head
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = res.bytes().await.unwrap().to_vec();
    (
        RawResponse {
            status,
            content_type,
            body,
        },
        head,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_a_request_addressed_to_another_name_is_refused() {
    let srv = TestServer::start().await;
    let port = srv.url.rsplit(':').next().unwrap().to_owned();
    // What a DNS-rebinding page sends: the attacker's name, resolved to 127.0.0.1.
    for host in ["evil.example", &format!("evil.example:{port}"), "10.0.0.1"] {
        for path in ["/v1/counts", "/healthz", "/"] {
            let (res, _) = get_with(&srv, path, None, &[("host", host)]).await;
            assert_problem(&res, StatusCode::FORBIDDEN, "host_not_loopback");
        }
    }
    // A POST is refused before it changes anything.
    let res = srv
        .client
        .post(format!("{}/v1/workflows", srv.url))
        .header("host", "evil.example")
        .json(&json!({"tasks": [task("a", &[])]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(srv.counts().await["total"], 0);
    // Loopback names, with or without a port, pass.
    for host in [
        "localhost".to_owned(),
        format!("localhost:{port}"),
        format!("dashboard.localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "[::1]".to_owned(),
    ] {
        let (res, _) = get_with(&srv, "/v1/counts", None, &[("host", &host)]).await;
        assert_status(&res, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_a_cross_site_origin_is_refused() {
    let srv = TestServer::start().await;
    let port = srv.url.rsplit(':').next().unwrap().to_owned();
    for origin in [
        "https://evil.example",
        "http://evil.example:80",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        let (res, _) = get_with(&srv, "/v1/counts", None, &[("origin", origin)]).await;
        assert_problem(&res, StatusCode::FORBIDDEN, "cross_site_origin");
    }
    // A cross-site form post changes nothing.
    let res = srv
        .client
        .post(format!("{}/v1/workflows", srv.url))
        .header("origin", "https://evil.example")
        .json(&json!({"tasks": [task("a", &[])]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(srv.counts().await["total"], 0);
    // The dashboard's own requests, and other loopback origins, pass.
    for origin in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://[::1]:{port}"),
    ] {
        let (res, _) = get_with(&srv, "/v1/counts", None, &[("origin", &origin)]).await;
        assert_status(&res, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_host_and_origin_are_not_checked() {
    let srv = server().await;
    let (res, _) = get_with(
        &srv,
        "/v1/counts",
        Some(OPERATOR),
        &[
            ("host", "baton.internal:7700"),
            ("origin", "https://ops.example"),
        ],
    )
    .await;
    assert_status(&res, StatusCode::OK);
    // Without a token it is the token that is missing, not the name that is wrong.
    let (res, _) = get_with(&srv, "/v1/counts", None, &[("host", "evil.example")]).await;
    assert_problem(&res, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_401_names_the_bearer_scheme() {
    let srv = server().await;
    for bearer in [None, Some("wrong")] {
        let (res, head) = get_with(&srv, "/v1/counts", bearer, &[]).await;
        assert_problem(&res, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            head.get("www-authenticate").and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"baton\""),
        );
    }
    // Other refusals do not carry it.
    let res = srv
        .client
        .post(format!("{}/v1/workflows", srv.url))
        .bearer_auth(ALPHA)
        .json(&json!({"tasks": [task("a", &[])]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get("www-authenticate").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_has_at_most_agents_max_of_its_agents_online() {
    use baton_server::tokens::{Secret, TokenSpec};
    let pool = TokenSpec {
        origin: "test".into(),
        name: "pool".into(),
        role: baton_server::Role::Agent,
        secret: Secret::Plain("pool-secret".into()),
        agents: vec!["worker-*".into(), "planner".into()],
        agents_max: Some(2),
        scope: Default::default(),
    };
    let mut tokens = Tokens::build([pool]).unwrap();
    tokens.add_admin(ADMIN);
    let (url, dir) = store_url().await;
    let srv = TestServer::start_with(url, dir, tokens, Arc::new(ManualClock::new(T0))).await;

    // Any name its patterns match, up to two online at once.
    let first = register_as(&srv, "pool-secret", "worker-1").await;
    register_as(&srv, "pool-secret", "planner").await;
    let res = srv
        .send_json(
            Method::POST,
            "/v1/agents",
            Some("pool-secret"),
            &json!({"name": "worker-2", "capabilities": ["work"]}),
        )
        .await;
    assert_problem(&res, StatusCode::TOO_MANY_REQUESTS, "agents_max_reached");
    assert!(res.json()["detail"].as_str().unwrap().contains("`pool`"));
    // A name it does not bind is refused as such.
    let res = srv
        .send_json(
            Method::POST,
            "/v1/agents",
            Some("pool-secret"),
            &json!({"name": "planner-2", "capabilities": ["work"]}),
        )
        .await;
    assert_problem(&res, StatusCode::FORBIDDEN, "forbidden");
    // Registering one of its agents again is not another agent.
    let res = srv
        .send_json(
            Method::POST,
            "/v1/agents",
            Some("pool-secret"),
            &json!({"id": first, "name": "worker-1", "capabilities": ["work"]}),
        )
        .await;
    assert_status(&res, StatusCode::CREATED);
    let res = srv
        .raw(Method::GET, "/v1/agents", Some(ADMIN), None, None)
        .await;
    let agents = assert_status(&res, StatusCode::OK);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 2, "{agents}");
    // Once they have been silent for the liveness window, others may come.
    srv.clock.advance(60_001);
    register_as(&srv, "pool-secret", "worker-2").await;
    register_as(&srv, "pool-secret", "worker-3").await;
    // An admin token has no such limit.
    for i in 0..5 {
        register_as(&srv, ADMIN, &format!("worker-admin-{i}")).await;
    }
}
