//! Fan-out over HTTP: a task with `for_each` expands, when its dependencies complete, into one
//! task per element of the array it refers to (`KEY[0]`, `KEY[1]`, … with the element at
//! `item`), and completes with their results in element order, which its dependents receive
//! in `upstream`. An empty array completes it at once; what is not an array, or too long,
//! fails it. SQLite by default; PostgreSQL with `BATON_E2E_STORE=postgres`.

mod common;

use common::{task, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn fan_out(key: &str, deps: &[&str], pointer: &str, input: Value) -> Value {
    let mut t = task(key, deps);
    t["for_each"] = json!({"$from": deps[0], "pointer": pointer});
    t["input"] = input;
    t
}

async fn plan_with(srv: &TestServer, agent: &str, result: Value) {
    let plan = srv.claim_within(agent, 1).await;
    assert_eq!(plan[0]["key"], "plan");
    srv.complete(&plan[0], agent, result).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_runs_one_task_per_element_and_hands_their_results_on_in_order() {
    let srv = TestServer::start().await;
    let receipt = srv
        .submit(json!([
            task("plan", &[]),
            fan_out(
                "write",
                &["plan"],
                "/sections",
                json!({"words": 300, "topic": {"$from": "plan", "pointer": "/topic"}})
            ),
            task("edit", &["write"]),
        ]))
        .await;
    let agent = srv.register("writer", &["work"], 8).await;
    plan_with(
        &srv,
        &agent,
        json!({"topic": "tides", "sections": ["moon", {"$from": "not a reference"}, "sun"]}),
    )
    .await;

    let mut items = Vec::new();
    while items.len() < 3 {
        items.extend(srv.claim_within(&agent, 3).await);
    }
    items.sort_by_key(|t| t["key"].as_str().unwrap().to_owned());
    let keys: Vec<&str> = items.iter().map(|t| t["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["write[0]", "write[1]", "write[2]"]);
    assert_eq!(
        items[1]["input"],
        json!({"words": 300, "topic": "tides", "item": {"$from": "not a reference"}}),
        "the element at `item`, beside the task's resolved input, taken as written"
    );
    // Completed out of order: the results still come in element order.
    for t in items.iter().rev() {
        let item = t["input"]["item"].clone();
        srv.complete(t, &agent, json!({ "text": item })).await;
    }
    let edit = srv.claim_within(&agent, 1).await;
    assert_eq!(edit[0]["key"], "edit");
    let write_id = receipt["tasks"]["write"].clone();
    assert_eq!(
        edit[0]["upstream"]["write"],
        json!({"task": write_id, "result": [
            {"text": "moon"}, {"text": {"$from": "not a reference"}}, {"text": "sun"}
        ]})
    );
    let write = srv.task(write_id.as_str().unwrap()).await;
    assert_eq!(write["state"], "completed");
    assert!(
        write["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "for_each_expanded"),
        "{write}"
    );
    srv.complete(&edit[0], &agent, json!("edited")).await;
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_array_completes_the_fan_out_at_once() {
    let srv = TestServer::start().await;
    let receipt = srv
        .submit(json!([
            task("plan", &[]),
            fan_out("write", &["plan"], "/sections", json!({})),
            task("edit", &["write"]),
        ]))
        .await;
    let agent = srv.register("writer", &["work"], 1).await;
    plan_with(&srv, &agent, json!({"sections": []})).await;
    let write = receipt["tasks"]["write"].as_str().unwrap();
    let done = srv.wait_state(write, "completed").await;
    assert_eq!(done["result"], json!([]));
    let edit = srv.claim_within(&agent, 1).await;
    assert_eq!(edit[0]["upstream"]["write"]["result"], json!([]));
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_an_array_or_too_long_fails_the_fan_out_naming_why() {
    let srv = TestServer::start().await;
    let cases = [
        (json!({"sections": "one"}), "/sections", "not an array"),
        (json!({}), "/sections", "finds nothing"),
        (
            json!({"sections": vec![0; 10_001]}),
            "/sections",
            "more than the 10000",
        ),
    ];
    let agent = srv.register("writer", &["work"], 1).await;
    for (result, pointer, why) in cases {
        let receipt = srv
            .submit(json!([
                task("plan", &[]),
                fan_out("write", &["plan"], pointer, json!({})),
                task("edit", &["write"]),
            ]))
            .await;
        plan_with(&srv, &agent, result).await;
        let failed = srv
            .wait_state(receipt["tasks"]["write"].as_str().unwrap(), "failed")
            .await;
        let error = &failed["errors"][0];
        assert_eq!(error["kind"], "input_unresolved");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
        srv.wait_state(receipt["tasks"]["edit"].as_str().unwrap(), "cancelled")
            .await;
    }
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_elements_expand_in_one_commit() {
    let srv = TestServer::start().await;
    let receipt = srv
        .submit(json!([
            task("plan", &[]),
            fan_out("write", &["plan"], "", json!({"n": 1})),
        ]))
        .await;
    let agent = srv.register("writer", &["work"], 1).await;
    let items: Vec<u32> = (0..10_000).collect();
    plan_with(&srv, &agent, json!(items)).await;
    let workflow = receipt["workflow"].as_str().unwrap();
    let write = receipt["tasks"]["write"].as_str().unwrap();
    let start = std::time::Instant::now();
    loop {
        let (_, wf) = srv.get(&format!("/v1/workflows/{workflow}")).await;
        if wf["counts"]["pending"] == 10_000 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "never expanded: {wf}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let map = srv.task(write).await;
    assert_eq!(map["state"], "blocked");
    assert_eq!(map["dependencies"].as_array().unwrap().len(), 10_001);
    let last = map["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "write[9999]")
        .expect("the last element's task");
    let last = srv.task(last["id"].as_str().unwrap()).await;
    assert_eq!(last["state"], "pending");
    assert_eq!(last["spec"]["input"], json!({"n": 1, "item": 9999}));
    let (status, cancelled) = srv
        .post(
            &format!("/v1/workflows/{workflow}/cancel"),
            json!({"reason": "enough"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_that_fails_for_good_cancels_the_fan_out_and_its_retry_revives_it() {
    let srv = TestServer::start().await;
    let receipt = srv
        .submit(json!([
            task("plan", &[]),
            fan_out("write", &["plan"], "", json!({})),
            task("edit", &["write"]),
        ]))
        .await;
    let agent = srv.register("writer", &["work"], 4).await;
    plan_with(&srv, &agent, json!(["a", "b"])).await;
    let mut items = Vec::new();
    while items.len() < 2 {
        items.extend(srv.claim_within(&agent, 2).await);
    }
    items.sort_by_key(|t| t["key"].as_str().unwrap().to_owned());
    srv.complete(&items[0], &agent, json!("A")).await;
    let (s, b) = srv.report(&items[1], &agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = srv
        .report(
            &items[1],
            &agent,
            "failed",
            json!({"error": {"kind": "bad", "message": "no", "retryable": false}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let write = receipt["tasks"]["write"].as_str().unwrap();
    srv.wait_state(write, "cancelled").await;
    let item = items[1]["task"].as_str().unwrap();
    let (s, b) = srv
        .post(&format!("/v1/tasks/{item}/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    srv.wait_state(write, "blocked").await;
    let again = srv.claim_within(&agent, 1).await;
    assert_eq!(again[0]["key"], "write[1]");
    srv.complete(&again[0], &agent, json!("B")).await;
    let done = srv.wait_state(write, "completed").await;
    assert_eq!(done["result"], json!(["A", "B"]));
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_fan_out_cancels_its_items_that_have_not_ended() {
    let srv = TestServer::start().await;
    let receipt = srv
        .submit(json!([
            task("plan", &[]),
            fan_out("write", &["plan"], "", json!({})),
        ]))
        .await;
    let agent = srv.register("writer", &["work"], 4).await;
    plan_with(&srv, &agent, json!(["a", "b", "c"])).await;
    let mut items = Vec::new();
    while items.len() < 3 {
        items.extend(srv.claim_within(&agent, 3).await);
    }
    items.sort_by_key(|t| t["key"].as_str().unwrap().to_owned());
    srv.complete(&items[0], &agent, json!("A")).await;
    let write = receipt["tasks"]["write"].as_str().unwrap();
    let (s, b) = srv
        .post(
            &format!("/v1/tasks/{write}/cancel"),
            json!({"reason": "enough"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        srv.state_of(items[0]["task"].as_str().unwrap()).await,
        "completed"
    );
    for item in &items[1..] {
        srv.wait_state(item["task"].as_str().unwrap(), "cancelled")
            .await;
    }
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_is_checked_at_submission() {
    let srv = TestServer::start().await;
    let cases = [
        (
            fan_out("write", &["plan"], "x", json!({})),
            "tasks[1].for_each.pointer",
        ),
        (
            {
                let mut t = task("write", &["plan"]);
                t["for_each"] = json!({"$from": "other"});
                t
            },
            "tasks[1].for_each.$from",
        ),
        (
            fan_out("write", &["plan"], "", json!({"item": 1})),
            "tasks[1].input",
        ),
        (
            fan_out("write", &["plan"], "", json!([1])),
            "tasks[1].input",
        ),
        (task("write[0]", &["plan"]), "tasks[1].key"),
    ];
    for (t, field) in cases {
        let (status, body) = srv
            .post("/v1/workflows", json!({"tasks": [task("plan", &[]), t]}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["field"], field, "{body}");
    }
}
