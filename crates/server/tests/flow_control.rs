//! Flow control over HTTP: named rate limits (`/v1/limits`), tasks that draw from them and hold
//! concurrency keys, the wait reasons a held task shows, and the 4xx that bad flow control gets.
//! SQLite by default; PostgreSQL with `BATON_E2E_STORE=postgres`.

mod common;

use common::{task, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn put_limit(srv: &TestServer, key: &str, body: Value) -> (StatusCode, Value) {
    let r = srv
        .send_json(Method::PUT, &format!("/v1/limits/{key}"), None, &body)
        .await;
    (r.status, r.json())
}

fn with(mut t: Value, field: &str, value: Value) -> Value {
    t[field] = value;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_set_listed_changed_and_deleted() {
    let srv = TestServer::start().await;
    let (s, b) = put_limit(&srv, "openai", json!({"units": 3000, "per_ms": 60000})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        (
            b["key"].as_str(),
            b["units"].as_u64(),
            b["available"].as_u64()
        ),
        (Some("openai"), Some(3000), Some(3000)),
        "{b}"
    );
    let (s, b) = put_limit(&srv, "openai", json!({"units": 6000, "per_ms": 60000})).await;
    assert_eq!(
        (s, b["units"].as_u64()),
        (StatusCode::OK, Some(6000)),
        "{b}"
    );
    put_limit(&srv, "anthropic", json!({"units": 50, "per_ms": 1000})).await;
    let (s, list) = srv.get("/v1/limits").await;
    assert_eq!(s, StatusCode::OK);
    let keys: Vec<&str> = list["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["anthropic", "openai"]);

    for (body, field) in [
        (json!({"units": 0, "per_ms": 1000}), "units"),
        (json!({"units": -1, "per_ms": 1000}), "units"),
        (json!({"units": 5, "per_ms": 0}), "per_ms"),
        (json!({"units": 5}), "per_ms"),
    ] {
        let (s, p) = put_limit(&srv, "openai", body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {p}");
        assert_eq!(p["field"], field, "{body}: {p}");
    }
    let (_, b) = srv.get("/v1/limits/openai").await;
    assert_eq!(b["units"], 6000, "a refused change changed nothing");

    let r = srv
        .raw(Method::DELETE, "/v1/limits/openai", None, None, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let (s, p) = srv.get("/v1/limits/openai").await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("limit_not_found"))
    );
    let r = srv
        .raw(Method::DELETE, "/v1/limits/openai", None, None, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_wait_for_their_limit_and_their_key_and_say_so() {
    let srv = TestServer::start().await;
    put_limit(&srv, "llm", json!({"units": 2, "per_ms": 6000})).await;
    let mut tasks: Vec<Value> = (0..3)
        .map(|i| with(task(&format!("r{i}"), &[]), "rate", json!([{"key": "llm"}])))
        .collect();
    tasks.extend((0..3).map(|i| {
        let t = with(
            task(&format!("c{i}"), &[]),
            "concurrency",
            json!([{"key": "tenant-{/tenant}", "max": 1}]),
        );
        with(t, "input", json!({"tenant": "acme"}))
    }));
    let submitted = srv.submit(json!(tasks)).await;
    let agent = srv.register("worker", &["work"], 10).await;
    let claimed = srv.claim(&agent, 10).await;
    assert_eq!(claimed.len(), 3, "two units and one slot: {claimed:?}");

    let r2 = srv.task(submitted["tasks"]["r2"].as_str().unwrap()).await;
    let c2 = srv.task(submitted["tasks"]["c2"].as_str().unwrap()).await;
    let (rate, key) = (&r2["waiting"], &c2["waiting"]);
    assert_eq!(rate["reason"], "rate_limited", "{rate}");
    assert_eq!(key["reason"], "concurrency_full", "{key}");
    assert_eq!(rate["limit"], "llm", "{rate}");
    assert_eq!(rate["until"], json!(common::T0.0 + 3_000), "{rate}");
    assert_eq!(key["key"], "tenant-acme", "{key}");
    assert_eq!(
        (key["held"].as_u64(), key["max"].as_u64()),
        (Some(1), Some(1))
    );
    let (_, llm) = srv.get("/v1/limits/llm").await;
    assert_eq!(llm["available"], 0, "{llm}");

    // Half a period later (within the claimed tasks' start timeout), one unit is back.
    srv.clock.advance(3_000);
    let more = srv.claim(&agent, 10).await;
    assert_eq!(more.len(), 1, "{more:?}");
    assert_eq!(more[0]["key"], "r2");
    // The running task of the key ends: the next one of it is handed out.
    let held = claimed
        .iter()
        .find(|t| t["key"].as_str().unwrap().starts_with('c'))
        .unwrap();
    srv.finish(held, &agent).await;
    let next = srv.claim(&agent, 10).await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(next[0]["key"].as_str().unwrap().starts_with('c'));
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flow_control_gets_a_422_naming_the_field() {
    let srv = TestServer::start().await;
    put_limit(&srv, "llm", json!({"units": 10, "per_ms": 1000})).await;
    for (field, value, named) in [
        ("rate", json!([{"key": "unknown"}]), "tasks[0].rate[0].key"),
        (
            "rate",
            json!([{"key": "llm", "units": 11}]),
            "tasks[0].rate[0].units",
        ),
        (
            "rate",
            json!([{"key": "llm", "units": -1}]),
            "tasks[0].rate[0].units",
        ),
        (
            "concurrency",
            json!([{"key": "k", "max": 0}]),
            "tasks[0].concurrency[0].max",
        ),
        (
            "concurrency",
            json!([{"key": "k-{tenant}", "max": 1}]),
            "tasks[0].concurrency[0].key",
        ),
    ] {
        let (s, p) = srv
            .post(
                "/v1/workflows",
                json!({"name": "bad", "tasks": [with(task("a", &[]), field, value.clone())]}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{value}: {p}");
        assert!(
            p["field"].as_str().unwrap_or_default().starts_with(named)
                || p["detail"].as_str().unwrap_or_default().contains(named),
            "{value}: {p}"
        );
    }
    let counts = srv.counts().await;
    assert_eq!(counts["total"], 0, "nothing was created: {counts}");
}
