//! Short ids over HTTP: `GET /v1/ids/{suffix}` answers the tasks and workflows whose ids end
//! in the hex digits given (any case, hyphens ignored), and refuses anything else as 422
//! naming `suffix`.

mod common;

use std::collections::HashMap;

use common::{task, TestServer};
use reqwest::StatusCode;
use serde_json::Value;

fn last(id: &str, digits: usize) -> String {
    let simple = id.replace('-', "");
    simple[simple.len() - digits..].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suffix_finds_the_task_or_workflow_whose_id_ends_in_it() {
    let srv = TestServer::start().await;
    let receipt = srv.submit(serde_json::json!([task("plan", &[])])).await;
    let workflow = receipt["workflow"].as_str().unwrap();
    let plan = receipt["tasks"]["plan"].as_str().unwrap();

    let (status, body) = srv.get(&format!("/v1/ids/{}", last(plan, 8))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tasks"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["tasks"][0]["id"], plan);
    assert_eq!(body["tasks"][0]["workflow"], workflow);
    assert_eq!(body["tasks"][0]["key"], "plan");
    assert_eq!(body["workflows"], Value::Array(Vec::new()));
    assert_eq!(body["more"], false);

    let (_, body) = srv
        .get(&format!(
            "/v1/ids/{}",
            workflow[workflow.len() - 17..].to_uppercase()
        ))
        .await;
    assert_eq!(body["workflows"][0]["id"], workflow, "{body}");
    assert_eq!(body["workflows"][0]["name"], "e2e");
    assert!(body["tasks"].as_array().unwrap().is_empty(), "{body}");

    let (_, body) = srv.get(&format!("/v1/ids/{plan}")).await;
    assert_eq!(
        body["tasks"][0]["id"], plan,
        "the whole id is a suffix too: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suffix_of_many_ids_lists_ten_and_says_there_are_more() {
    let srv = TestServer::start().await;
    let tasks: Vec<Value> = (0..2_000).map(|i| task(&format!("t{i}"), &[])).collect();
    let receipt = srv.submit(Value::Array(tasks)).await;
    let mut by_digit: HashMap<String, usize> = HashMap::new();
    for id in receipt["tasks"].as_object().unwrap().values() {
        *by_digit.entry(last(id.as_str().unwrap(), 4)).or_default() += 1;
    }
    let (shared, n) = by_digit.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(*n >= 2, "2,000 ids share some last 4 digits");
    let (status, body) = srv.get(&format!("/v1/ids/{shared}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["tasks"].as_array().unwrap().len(),
        *n.min(&10),
        "{body}"
    );
    assert_eq!(body["more"], *n > 10, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_4_to_32_hex_digits_is_refused_naming_suffix() {
    let srv = TestServer::start().await;
    for bad in ["abc", "wxyz", "0192d0c6-8f5e-7cc3-9a4e-2b1f0c9d8e7a00"] {
        let (status, body) = srv.get(&format!("/v1/ids/{bad}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["field"], "suffix", "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains(bad)
                && body["expected"].as_str().unwrap().contains("hex digits"),
            "{body}"
        );
    }
}
