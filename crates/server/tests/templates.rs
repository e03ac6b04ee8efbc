//! Input templates over HTTP: a value `{"$from": KEY, "pointer": …}` in a task's input is
//! replaced by what it finds in that dependency's result when the task becomes ready; the
//! claim hands out the resolved input, the task view shows it beside the template, the
//! history records it (so `baton check` replays it exactly), a pointer that finds nothing fails
//! the task with `input_unresolved`, and a reference to a task that is not a dependency is
//! refused at submission with its field path. SQLite by default; PostgreSQL with
//! `BATON_E2E_STORE=postgres`.

mod common;

use common::{task, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn with_input(key: &str, deps: &[&str], input: Value) -> Value {
    let mut t = task(key, deps);
    t["input"] = input;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_task_is_handed_its_input_with_every_reference_resolved() {
    let srv = TestServer::start().await;
    let template = json!({
        "title": {"$from": "plan", "pointer": "/title"},
        "first": {"$from": "plan", "pointer": "/sections/0"},
        "odd": {"$from": "plan", "pointer": "/a~1b"},
        "notes": {"$from": "research"},
        "as_written": {"$literal": {"$from": "plan"}},
        "words": 600,
    });
    let receipt = srv
        .submit(json!([
            task("plan", &[]),
            task("research", &[]),
            with_input("write", &["plan", "research"], template.clone()),
        ]))
        .await;
    let write_id = receipt["tasks"]["write"].as_str().unwrap().to_owned();
    let blocked = srv.task(&write_id).await;
    assert_eq!(blocked["spec"]["input"], template);
    assert!(
        blocked.get("input").is_none(),
        "nothing resolved yet: {blocked}"
    );

    let agent = srv.register("writer", &["work"], 1).await;
    for _ in 0..2 {
        let claimed = srv.claim_one(&agent).await;
        let result = match claimed["key"].as_str().unwrap() {
            "plan" => json!({"title": "Tides", "sections": ["moon", "sun"], "a/b": [1]}),
            _ => json!(["note 1", "note 2"]),
        };
        srv.complete(&claimed, &agent, result).await;
    }
    let write = srv.claim_one(&agent).await;
    let resolved = json!({
        "title": "Tides",
        "first": "moon",
        "odd": [1],
        "notes": ["note 1", "note 2"],
        "as_written": {"$from": "plan"},
        "words": 600,
    });
    assert_eq!(write["key"], "write");
    assert_eq!(write["input"], resolved);

    let view = srv.task(&write_id).await;
    assert_eq!(view["input"], resolved, "the resolved input is shown");
    assert_eq!(view["spec"]["input"], template, "beside the template");
    let met = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "dependencies_met")
        .expect("a release in the history")
        .clone();
    assert_eq!(met["data"]["input"], resolved, "recorded in the history");
    srv.complete(&write, &agent, json!("done")).await;
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pointer_that_finds_nothing_fails_the_task_naming_it() {
    let srv = TestServer::start().await;
    let receipt = srv
        .submit(json!([
            task("plan", &[]),
            with_input(
                "write",
                &["plan"],
                json!({"section": {"$from": "plan", "pointer": "/sections/7"}})
            ),
            task("publish", &["write"]),
        ]))
        .await;
    let agent = srv.register("writer", &["work"], 1).await;
    let plan = srv.claim_one(&agent).await;
    srv.complete(&plan, &agent, json!({"sections": ["only one"]}))
        .await;

    let write_id = receipt["tasks"]["write"].as_str().unwrap();
    let failed = srv.wait_state(write_id, "failed").await;
    let error = &failed["errors"][0];
    assert_eq!(error["kind"], "input_unresolved", "{failed}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("/sections/7"), "{message}");
    assert!(message.contains("input.section"), "{message}");
    assert_eq!(failed["detail"]["retry_at"], Value::Null, "not retried");
    let publish = receipt["tasks"]["publish"].as_str().unwrap();
    srv.wait_state(publish, "cancelled").await;
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_to_a_task_that_is_not_a_dependency_is_refused_at_submission() {
    let srv = TestServer::start().await;
    let cases = [
        (
            json!({"body": [{"$from": "research"}]}),
            "tasks[1].input.body[0].$from",
        ),
        (
            json!({"body": {"$from": "plan", "pointer": "sections"}}),
            "tasks[1].input.body.pointer",
        ),
        (
            json!({"body": {"$from": "plan", "select": "/x"}}),
            "tasks[1].input.body",
        ),
    ];
    for (input, field) in cases {
        let (status, body) = srv
            .post(
                "/v1/workflows",
                json!({"tasks": [task("plan", &[]), with_input("write", &["plan"], input)]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["field"], field, "{body}");
    }
    let (_, workflows) = srv.get("/v1/workflows").await;
    assert_eq!(
        workflows["workflows"].as_array().map(Vec::len),
        Some(0),
        "a refused submission changes nothing: {workflows}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_task_whose_dependencies_completed_is_resolved_when_added() {
    let srv = TestServer::start().await;
    srv.submit(json!([task("plan", &[]), task("write", &["plan"])]))
        .await;
    let agent = srv.register("writer", &["work"], 2).await;
    let plan = srv.claim_one(&agent).await;
    srv.complete(&plan, &agent, json!({"sections": ["a", "b"]}))
        .await;
    let write = srv.claim_one(&agent).await;
    let (s, b) = srv.report(&write, &agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (status, body) = srv
        .report(
            &write,
            &agent,
            "subtasks",
            json!({"tasks": [with_input(
                "write-b",
                &["plan"],
                json!({"section": {"$from": "plan", "pointer": "/sections/1"}})
            )]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sub = srv.claim_one(&agent).await;
    assert_eq!(sub["key"], "write-b");
    assert_eq!(sub["input"], json!({"section": "b"}));
    srv.assert_store_checks_clean().await;
}
