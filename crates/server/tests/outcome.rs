//! A workflow as a whole: `GET /v1/workflows/{id}` says whether it is running, completed,
//! failed or cancelled, and once it completed shows its `result`, its declared `outputs`
//! with every reference to a task's result resolved. SQLite by default; PostgreSQL with
//! `BATON_E2E_STORE=postgres`.

mod common;

use common::{task, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn submit(srv: &TestServer, tasks: Value, outputs: Value) -> Value {
    let (status, body) = srv
        .post(
            "/v1/workflows",
            json!({"name": "outcome", "tasks": tasks, "outputs": outputs}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn workflow(srv: &TestServer, receipt: &Value) -> Value {
    let id = receipt["workflow"].as_str().unwrap();
    let (status, body) = srv.get(&format!("/v1/workflows/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_workflow_shows_its_outputs_resolved_as_its_result() {
    let srv = TestServer::start().await;
    let outputs = json!({
        "title": {"$from": "plan", "pointer": "/title"},
        "text": {"$from": "write"},
        "version": 2,
    });
    let receipt = submit(
        &srv,
        json!([task("plan", &[]), task("write", &["plan"])]),
        outputs.clone(),
    )
    .await;
    let running = workflow(&srv, &receipt).await;
    assert_eq!(running["status"], "running");
    assert_eq!(running["outputs"], outputs);
    assert!(running.get("result").is_none(), "{running}");

    let agent = srv.register("writer", &["work"], 1).await;
    let plan = srv.claim_one(&agent).await;
    srv.complete(&plan, &agent, json!({"title": "Tides"})).await;
    assert_eq!(workflow(&srv, &receipt).await["status"], "running");
    let write = srv.claim_one(&agent).await;
    srv.complete(&write, &agent, json!(["para 1", "para 2"]))
        .await;

    let done = workflow(&srv, &receipt).await;
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["result"],
        json!({"title": "Tides", "text": ["para 1", "para 2"], "version": 2})
    );
    let (_, list) = srv.get("/v1/workflows").await;
    let listed = &list["workflows"][0];
    assert_eq!(listed["status"], "completed");
    assert!(listed.get("result").is_none(), "lists carry no results");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_with_a_task_failed_for_good_is_failed_and_running_while_it_retries() {
    let srv = TestServer::start().await;
    let receipt = submit(
        &srv,
        json!([task("plan", &[]), task("write", &["plan"])]),
        json!({"text": {"$from": "write"}}),
    )
    .await;
    let agent = srv.register("writer", &["work"], 1).await;
    let plan = srv.claim_one(&agent).await;
    let (s, b) = srv.report(&plan, &agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let error = |retryable: bool| json!({"error": {"kind": "flaky", "message": "no", "retryable": retryable}});
    let (s, b) = srv.report(&plan, &agent, "failed", error(true)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        workflow(&srv, &receipt).await["status"],
        "running",
        "a retry is scheduled"
    );
    let plan_id = plan["task"].as_str().unwrap();
    srv.clock.advance(60_000);
    srv.engine.tick().await.unwrap();
    srv.wait_state(plan_id, "pending").await;
    let plan = srv.claim_one(&agent).await;
    let (s, b) = srv.report(&plan, &agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = srv.report(&plan, &agent, "failed", error(false)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    srv.wait_state(receipt["tasks"]["write"].as_str().unwrap(), "cancelled")
        .await;
    let failed = workflow(&srv, &receipt).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed.get("result").is_none(), "{failed}");
    assert_eq!(failed["unresolved"]["from"], "write");
    assert_eq!(
        failed["unresolved"]["reason"], "task `write` did not complete",
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_workflow_is_cancelled() {
    let srv = TestServer::start().await;
    let receipt = submit(&srv, json!([task("plan", &[])]), json!({})).await;
    let id = receipt["workflow"].as_str().unwrap();
    let (s, b) = srv
        .post(
            &format!("/v1/workflows/{id}/cancel"),
            json!({"reason": "no"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(workflow(&srv, &receipt).await["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_finds_nothing_says_so_instead_of_a_result() {
    let srv = TestServer::start().await;
    let receipt = submit(
        &srv,
        json!([task("plan", &[])]),
        json!({"title": {"$from": "plan", "pointer": "/title"}}),
    )
    .await;
    let agent = srv.register("writer", &["work"], 1).await;
    let plan = srv.claim_one(&agent).await;
    srv.complete(&plan, &agent, json!({"no title": true})).await;
    let done = workflow(&srv, &receipt).await;
    assert_eq!(done["status"], "completed");
    assert!(done.get("result").is_none(), "{done}");
    assert_eq!(
        done["unresolved"],
        json!({"at": "outputs.title", "from": "plan", "pointer": "/title"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_checked_at_submission() {
    let srv = TestServer::start().await;
    for (outputs, field) in [
        (json!({"x": {"$from": "nope"}}), "outputs.x.$from"),
        (
            json!({"x": [{"$from": "plan", "pointer": "title"}]}),
            "outputs.x[0].pointer",
        ),
    ] {
        let (status, body) = srv
            .post(
                "/v1/workflows",
                json!({"tasks": [task("plan", &[])], "outputs": outputs}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["field"], field, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_says_once_when_a_workflow_ends() {
    let srv = TestServer::start().await;
    let receipt = submit(&srv, json!([task("plan", &[])]), json!({})).await;
    let workflow = receipt["workflow"].as_str().unwrap().to_owned();
    let other = submit(&srv, json!([task("other", &[])]), json!({})).await;
    let mut res = srv
        .client
        .get(format!("{}/v1/events?workflow={workflow}", srv.url))
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    let agent = srv.register("writer", &["work"], 2).await;
    for _ in 0..2 {
        let claimed = srv.claim_one(&agent).await;
        srv.complete(&claimed, &agent, json!("done")).await;
    }
    // Its three transitions (assigned, started, succeeded), then that it ended.
    let seen = common::read_sse(&mut res, &mut buf, 4).await;
    let kinds: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["transition", "transition", "transition", "workflow"]
    );
    let ended: Value = serde_json::from_str(&seen[3].data).unwrap();
    assert_eq!(ended["workflow"], workflow.as_str());
    assert_eq!(ended["status"], "completed");
    assert_ne!(
        other["workflow"], workflow,
        "the other workflow's end is filtered out"
    );
    // Nothing more: the end is said once.
    let more = tokio::time::timeout(std::time::Duration::from_millis(500), res.chunk()).await;
    assert!(
        more.is_err() || matches!(more, Ok(Ok(Some(ref c))) if c.starts_with(b":")),
        "{more:?}"
    );
}
