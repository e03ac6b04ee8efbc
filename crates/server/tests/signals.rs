//! Signals over HTTP: a task with `wait_for` waits for `POST /v1/workflows/{id}/signals/{name}`,
//! whose body becomes its result (or whose `{"reject": …}` fails it); `GET /v1/waiting` lists
//! what waits; the `Idempotency-Key` header applies a signal once; bad signals are refused with
//! the field named and change nothing. SQLite by default; PostgreSQL with
//! `BATON_E2E_STORE=postgres`.

mod common;

use common::{task, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn approval(key: &str, deps: &[&str]) -> Value {
    json!({"key": key, "depends_on": deps, "input": {"plan": "spend $40"},
           "wait_for": {"signal": "approve", "timeout_ms": 3_600_000}})
}

/// Sends a signal, with an `Idempotency-Key` header if given.
async fn send(
    srv: &TestServer,
    wf: &str,
    name: &str,
    key: Option<&str>,
    body: &Value,
) -> common::RawResponse {
    let mut rb = srv
        .client
        .post(format!("{}/v1/workflows/{wf}/signals/{name}", srv.url))
        .json(body);
    if let Some(k) = key {
        rb = rb.header("Idempotency-Key", k);
    }
    if let Some(t) = &srv.token {
        rb = rb.bearer_auth(t);
    }
    let res = rb.send().await.unwrap();
    common::RawResponse {
        status: res.status(),
        content_type: None,
        body: res.bytes().await.unwrap().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_completes_the_waiting_task_and_its_dependents_run_with_it() {
    let srv = TestServer::start().await;
    let mut deploy = task("deploy", &["review"]);
    deploy["input"] = json!({"by": {"$from": "review", "pointer": "/by"}});
    let receipt = srv.submit(json!([approval("review", &[]), deploy])).await;
    let wf = receipt["workflow"].as_str().unwrap().to_owned();
    let review = receipt["tasks"]["review"].as_str().unwrap().to_owned();

    let (status, waiting) = srv.get("/v1/waiting").await;
    assert_eq!(status, StatusCode::OK, "{waiting}");
    let listed = &waiting["tasks"][0];
    assert_eq!(listed["id"], review.as_str());
    assert_eq!(listed["signal"], "approve");
    assert_eq!(listed["input"], json!({"plan": "spend $40"}));
    assert!(listed["until"].as_u64().is_some());
    let shown = srv.task(&review).await;
    assert_eq!(shown["waiting"]["reason"], "signal", "{shown}");

    let sent = send(
        &srv,
        &wf,
        "approve",
        Some("click-1"),
        &json!({"by": "alice"}),
    )
    .await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.json());
    let body = sent.json();
    assert_eq!(body["delivered_to"][0]["key"], "review");
    assert_eq!(body["delivered_to"][0]["state"], "completed");
    let done = srv.task(&review).await;
    assert_eq!(done["state"], "completed");
    assert_eq!(done["result"], json!({"by": "alice"}));

    // The same key again: applied once, answered with the first signal.
    let again = send(
        &srv,
        &wf,
        "approve",
        Some("click-1"),
        &json!({"by": "alice"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["signal"]["id"], body["signal"]["id"]);
    assert_eq!(again.json()["delivered_to"], json!([]));
    let other = send(&srv, &wf, "approve", Some("click-1"), &json!({"by": "bob"})).await;
    assert_eq!(other.status, StatusCode::CONFLICT);

    let agent = srv.register("deployer", &["work"], 1).await;
    let claimed = srv.claim_one(&agent).await;
    assert_eq!(claimed["key"], "deploy");
    assert_eq!(claimed["input"], json!({"by": "alice"}));
    let (_, signals) = srv.get(&format!("/v1/workflows/{wf}/signals")).await;
    assert_eq!(signals["signals"].as_array().unwrap().len(), 1);
    assert!(signals["signals"][0]["delivered_at"].as_u64().is_some());
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_fails_the_task_and_an_early_signal_waits_for_its_task() {
    let srv = TestServer::start().await;
    let receipt = srv
        .submit(json!([task("plan", &[]), approval("review", &["plan"])]))
        .await;
    let wf = receipt["workflow"].as_str().unwrap().to_owned();
    let review = receipt["tasks"]["review"].as_str().unwrap().to_owned();
    let early = send(
        &srv,
        &wf,
        "approve",
        None,
        &json!({"reject": "over budget"}),
    )
    .await;
    assert_eq!(early.status, StatusCode::CREATED);
    assert_eq!(
        early.json()["delivered_to"],
        json!([]),
        "kept: nothing waits yet"
    );
    assert!(early.json()["signal"].get("delivered_at").is_none());

    let agent = srv.register("planner", &["work"], 1).await;
    let plan = srv.claim_one(&agent).await;
    srv.complete(&plan, &agent, json!("plan")).await;
    let failed = srv.wait_state(&review, "failed").await;
    assert_eq!(failed["errors"][0]["kind"], "rejected", "{failed}");
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signals_are_refused_naming_the_field() {
    let srv = TestServer::start().await;
    let receipt = srv.submit(json!([approval("review", &[])])).await;
    let wf = receipt["workflow"].as_str().unwrap().to_owned();
    let cases = [
        (
            format!("/v1/workflows/{wf}/signals/bad%20name"),
            json!(1),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            format!("/v1/workflows/{wf}/signals/approve"),
            json!({"reject": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reject",
        ),
        (
            format!("/v1/workflows/{wf}/signals/approve"),
            json!({"reject": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reject",
        ),
        (
            format!("/v1/workflows/{}/signals/approve", uuid::Uuid::nil()),
            json!(1),
            StatusCode::NOT_FOUND,
            "",
        ),
        (
            format!("/v1/workflows/{wf}/signals/approve?limit=3"),
            json!(1),
            StatusCode::BAD_REQUEST,
            "",
        ),
    ];
    for (path, body, status, field) in cases {
        let res = srv.send_json(Method::POST, &path, None, &body).await;
        assert_eq!(res.status, status, "{path}: {}", res.json());
        if !field.is_empty() {
            assert_eq!(res.json()["field"], field, "{path}");
        }
    }
    let (_, signals) = srv.get(&format!("/v1/workflows/{wf}/signals")).await;
    assert_eq!(signals["signals"], json!([]), "nothing was stored");
    let id = receipt["tasks"]["review"].as_str().unwrap();
    assert_eq!(srv.state_of(id).await, "pending");
}

/// An agent asks a person for approval mid-run: it adds a signal sub-task and the sub-task that
/// acts on the answer; the workflow's next step waits for both, and the approval's data reaches
/// the acting sub-task through `upstream`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_asks_for_approval_mid_run_by_adding_a_signal_sub_task() {
    let srv = TestServer::start().await;
    let receipt = srv
        .submit(json!([task("plan", &[]), task("report", &["plan"])]))
        .await;
    let wf = receipt["workflow"].as_str().unwrap().to_owned();
    let report = receipt["tasks"]["report"].as_str().unwrap().to_owned();
    let agent = srv.register("planner", &["work"], 4).await;
    let plan = srv.claim(&agent, 1).await.remove(0);
    srv.report(&plan, &agent, "started", json!({})).await;
    let (status, body) = srv
        .report(
            &plan,
            &agent,
            "subtasks",
            json!({"tasks": [
                {"key": "ok-to-spend", "input": {"plan": "buy 3 GPUs"},
                 "wait_for": {"signal": "approve"}},
                task("spend", &["ok-to-spend"]),
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let approval = body["tasks"]["ok-to-spend"].as_str().unwrap().to_owned();
    srv.report(&plan, &agent, "succeeded", json!({"result": "planned"}))
        .await;

    let (_, waiting) = srv.get("/v1/waiting").await;
    assert_eq!(waiting["tasks"][0]["id"], approval.as_str(), "{waiting}");
    assert_eq!(waiting["tasks"][0]["input"], json!({"plan": "buy 3 GPUs"}));
    assert!(
        srv.claim(&agent, 4).await.is_empty(),
        "nothing runs before the approval"
    );
    assert_eq!(srv.state_of(&report).await, "blocked");

    let sent = send(&srv, &wf, "approve", None, &json!({"budget": 900})).await;
    assert_eq!(sent.status, StatusCode::CREATED, "{}", sent.json());
    let spend = srv.claim_one(&agent).await;
    assert_eq!(spend["key"], "spend");
    assert_eq!(
        spend["upstream"]["ok-to-spend"]["result"],
        json!({"budget": 900}),
        "{spend}"
    );
    srv.finish(&spend, &agent).await;
    let last = srv.claim_one(&agent).await;
    assert_eq!(last["key"], "report");
    srv.finish(&last, &agent).await;
    srv.assert_store_checks_clean().await;
}
