//! Triggers over HTTP: a registered workflow template that `POST /v1/triggers/{name}` submits,
//! the body filling its `{"$input": POINTER}` placeholders; idempotent by `Idempotency-Key`;
//! bad templates and bodies refused with the field named. SQLite by default; PostgreSQL with
//! `BATON_E2E_STORE=postgres`.

mod common;

use common::{task, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn fire(
    srv: &TestServer,
    name: &str,
    key: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let mut rb = srv
        .client
        .post(format!("{}/v1/triggers/{name}", srv.url))
        .json(body);
    if let Some(k) = key {
        rb = rb.header("Idempotency-Key", k);
    }
    let res = rb.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn put(srv: &TestServer, name: &str, body: Value) -> (StatusCode, Value) {
    let res = srv
        .client
        .put(format!("{}/v1/triggers/{name}", srv.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_submits_its_workflow_with_the_request_body_as_input() {
    let srv = TestServer::start().await;
    let mut triage = task("triage", &[]);
    triage["input"] = json!({"ticket": {"$input": "/id"}, "all": {"$input": ""}});
    let template = json!({"name": "support", "tasks": [triage]});
    let (status, created) = put(&srv, "new-ticket", template.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = put(&srv, "new-ticket", template).await;
    assert_eq!(status, StatusCode::OK, "replaced");

    let body = json!({"id": 42, "text": "the printer is on fire"});
    let (status, receipt) = fire(&srv, "new-ticket", Some("ticket-42"), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{receipt}");
    let id = receipt["tasks"]["triage"].as_str().unwrap();
    let shown = srv.task(id).await;
    assert_eq!(shown["spec"]["input"], json!({"ticket": 42, "all": body}));
    let (status, again) = fire(&srv, "new-ticket", Some("ticket-42"), &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["workflow"], receipt["workflow"]);

    let (status, problem) = fire(&srv, "new-ticket", None, &json!({"text": "no id"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "body");
    let (status, problem) = fire(&srv, "nobody", None, &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["code"], "trigger_not_found");
    let (_, list) = srv.get("/v1/triggers").await;
    assert_eq!(list["triggers"][0]["name"], "new-ticket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_triggers_are_refused_naming_the_field() {
    let srv = TestServer::start().await;
    let mut bad_pointer = task("triage", &[]);
    bad_pointer["input"] = json!({"x": {"$input": "id"}});
    let cases = [
        (
            "ok",
            json!({"tasks": [bad_pointer]}),
            "workflow.tasks[0].input.x.$input",
        ),
        (
            "ok",
            json!({"tasks": [task("bad key", &[])]}),
            "workflow.tasks[0].key",
        ),
        ("bad name", json!({"tasks": [task("a", &[])]}), "name"),
    ];
    for (name, body, field) in cases {
        let (status, problem) = put(&srv, name, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let (_, list) = srv.get("/v1/triggers").await;
    assert_eq!(list["triggers"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_list_a_page_at_a_time_by_name() {
    let srv = TestServer::start().await;
    for name in ["ci:c", "ci:a", "ci:e", "ci:b", "ci:d"] {
        let (status, body) = put(&srv, name, json!({"tasks": [task("a", &[])]})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    loop {
        let (status, page) = srv.get(&format!("/v1/triggers?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let names: Vec<&str> = page["triggers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        seen.push(names.join(" "));
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(
                    next,
                    *names.last().unwrap(),
                    "`next` is the page's last name"
                );
                query = format!("limit=2&after={next}");
            }
            None => break,
        }
    }
    assert_eq!(seen, ["ci:a ci:b", "ci:c ci:d", "ci:e"]);
    let (_, full) = srv.get("/v1/triggers?limit=5").await;
    assert!(full.get("next").is_none(), "nothing follows: {full}");
}
