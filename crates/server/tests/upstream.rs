//! Results flow down the graph: a claimed task carries its dependencies' results by key,
//! `GET /v1/tasks/{id}/upstream` reads them for any task, a result over the limit is refused
//! when reported, and a claim answer past its budget withholds results it then names.

mod common;

use common::{task, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_task_carries_its_dependencies_results_by_key() {
    let srv = TestServer::start().await;
    srv.submit(json!([
        task("plan", &[]),
        task("research", &[]),
        task("write", &["plan", "research"])
    ]))
    .await;
    let agent = srv.register("writer", &["work"], 1).await;
    let mut ids = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let claimed = srv.claim_one(&agent).await;
        assert_eq!(
            claimed["upstream"],
            json!({}),
            "no dependencies, no upstream"
        );
        let key = claimed["key"].as_str().unwrap().to_owned();
        srv.complete(&claimed, &agent, json!({ "from": key })).await;
        ids.insert(key, claimed["task"].clone());
    }
    let write = srv.claim_one(&agent).await;
    assert_eq!(write["key"], "write");
    assert_eq!(
        write["upstream"],
        json!({
            "plan": {"task": ids["plan"], "result": {"from": "plan"}},
            "research": {"task": ids["research"], "result": {"from": "research"}},
        })
    );
    let id = write["task"].as_str().unwrap();
    let (status, all) = srv.get(&format!("/v1/tasks/{id}/upstream")).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all, write["upstream"], "the same read for any task");
    let (status, one) = srv.get(&format!("/v1/tasks/{id}/upstream?key=plan")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one, json!({"plan": write["upstream"]["plan"]}));

    let (status, body) = srv.get(&format!("/v1/tasks/{id}/upstream?key=nope")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "invalid_query");
    assert_eq!(body["field"], "key");
    let plan = ids["plan"].as_str().unwrap();
    let (status, body) = srv.get(&format!("/v1/tasks/{plan}/upstream")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_limit_is_refused_when_reported_and_changes_nothing() {
    let srv = TestServer::start().await;
    srv.submit(json!([task("big", &[])])).await;
    let agent = srv.register("big", &["work"], 1).await;
    let claimed = srv.claim_one(&agent).await;
    let (s, _) = srv.report(&claimed, &agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let over = "x".repeat(baton_engine::PAYLOAD_BYTES_MAX_DEFAULT as usize);
    let (status, body) = srv
        .report(&claimed, &agent, "succeeded", json!({ "result": over }))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["code"], "result_too_large");
    assert_eq!(body["field"], "result");
    assert!(
        body["expected"]
            .as_str()
            .unwrap()
            .contains("--payload-bytes-max"),
        "{body}"
    );
    let id = claimed["task"].as_str().unwrap();
    assert_eq!(srv.state_of(id).await, "executing", "nothing changed");
    // Just under the limit is accepted.
    let under = "x".repeat(baton_engine::PAYLOAD_BYTES_MAX_DEFAULT as usize - 2);
    let (status, body) = srv
        .report(&claimed, &agent, "succeeded", json!({ "result": under }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_answer_withholds_results_past_its_budget_and_names_their_size() {
    let srv = TestServer::start().await;
    // Five results of ~0.9 MiB: more than one claim answer's 4 MiB.
    let parts = ["p0", "p1", "p2", "p3", "p4"];
    let mut tasks: Vec<Value> = parts.iter().map(|p| task(p, &[])).collect();
    tasks.push(task("join", &parts));
    srv.submit(Value::Array(tasks)).await;
    let agent = srv.register("joiner", &["work"], 1).await;
    let big = "y".repeat(900 * 1024);
    for _ in parts {
        let claimed = srv.claim_one(&agent).await;
        srv.complete(&claimed, &agent, json!(big)).await;
    }
    let join = srv.claim_one(&agent).await;
    let upstream = join["upstream"].as_object().unwrap();
    assert_eq!(upstream.len(), 5);
    let withheld: Vec<&String> = upstream
        .iter()
        .filter(|(_, u)| u.get("result").is_none())
        .map(|(k, _)| k)
        .collect();
    let carried = 5 - withheld.len();
    assert_eq!(carried, 4, "4 of 0.9 MiB fit in 4 MiB: {upstream:?}");
    let key = withheld[0];
    let size = json!(big).to_string().len() as u64;
    assert_eq!(upstream[key.as_str()]["withheld_bytes"], json!(size));
    let id = join["task"].as_str().unwrap();
    // A read of all of them is bounded the same way.
    let (status, all) = srv.get(&format!("/v1/tasks/{id}/upstream")).await;
    assert_eq!(status, StatusCode::OK);
    let all = all.as_object().unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(
        all.values().filter(|u| u.get("result").is_none()).count(),
        1,
        "4 MiB per read: {:?}",
        all.keys()
    );
    let (status, read) = srv.get(&format!("/v1/tasks/{id}/upstream?key={key}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        read[key.as_str()]["result"],
        json!(big),
        "read with one request"
    );
}
