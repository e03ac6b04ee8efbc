//! Schedules over HTTP: create, list, show with next fire times, pause, resume, delete; a tick
//! submits the workflow with the idempotency key `schedule:NAME:TICK_MS`; bad schedules are
//! refused with the field named. SQLite by default; PostgreSQL with `BATON_E2E_STORE=postgres`.

mod common;

use baton_core::Timestamp;
use common::{task, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn schedule(name: &str, cron: &str) -> Value {
    json!({"name": name, "cron": cron, "timezone": "Europe/Berlin",
           "workflow": {"name": "digest", "tasks": [task("collect", &[])]},
           "overlap": "allow", "catch_up": {"policy": "latest"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_created_listed_paused_resumed_and_its_ticks_submit_workflows() {
    let srv = TestServer::start().await;
    let name = format!("digest-{}", uuid::Uuid::now_v7().simple());
    let (status, created) = srv
        .post("/v1/schedules", schedule(&name, "0 0 * * * *"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let next: Vec<u64> = serde_json::from_value(created["next"].clone()).unwrap();
    assert_eq!(next.len(), 5);
    assert!(
        next.windows(2).all(|w| w[1] - w[0] == 3_600_000),
        "{next:?}"
    );
    assert_eq!(created["spec"]["catch_up"], json!({"policy": "latest"}));

    let (_, list) = srv.get("/v1/schedules").await;
    assert!(list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == name.as_str()));

    // The first tick comes: one workflow, keyed by the tick.
    srv.clock.set(Timestamp(next[0]));
    srv.engine.tick().await.unwrap();
    let (_, shown) = srv.get(&format!("/v1/schedules/{name}")).await;
    assert_eq!(shown["last_tick_at"], next[0]);
    let wf = shown["last_workflow"].as_str().unwrap().to_owned();
    let (_, workflow) = srv.get(&format!("/v1/workflows/{wf}")).await;
    assert_eq!(workflow["name"], "digest");
    assert_eq!(
        workflow["idempotency_key"],
        format!("schedule:{name}:{}", next[0])
    );

    let (status, paused) = srv
        .post(&format!("/v1/schedules/{name}/pause"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["next"], json!([]));
    let (_, resumed) = srv
        .post(&format!("/v1/schedules/{name}/resume"), json!({}))
        .await;
    assert_eq!(resumed["paused"], false);

    let res = srv
        .send_json(
            Method::DELETE,
            &format!("/v1/schedules/{name}"),
            None,
            &json!(null),
        )
        .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let (status, gone) = srv.get(&format!("/v1/schedules/{name}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
    assert_eq!(gone["code"], "schedule_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_naming_the_field() {
    let srv = TestServer::start().await;
    let name = format!("s-{}", uuid::Uuid::now_v7().simple());
    let mut bad_tz = schedule(&name, "0 0 * * * *");
    bad_tz["timezone"] = json!("Mars/Olympus");
    let mut bad_policy = schedule(&name, "0 0 * * * *");
    bad_policy["overlap"] = json!("sometimes");
    let mut bad_max = schedule(&name, "0 0 * * * *");
    bad_max["catch_up"] = json!({"policy": "all", "max": 0});
    let cases = [
        (schedule(&name, "every hour"), "cron"),
        (bad_tz, "timezone"),
        (bad_policy, "overlap"),
        (bad_max, "catch_up.max"),
    ];
    for (body, field) in cases {
        let (status, problem) = srv.post("/v1/schedules", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let (_, list) = srv.get("/v1/schedules").await;
    assert!(!list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == name.as_str()));
    let (status, _) = srv
        .post("/v1/schedules", schedule(&name, "0 0 * * * *"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, problem) = srv
        .post("/v1/schedules", schedule(&name, "0 0 * * * *"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "schedule_exists");
}

/// The names of every page of `path`'s list `field`, `limit` at a time, and whether each page
/// said `next`.
async fn pages(
    srv: &TestServer,
    path: &str,
    field: &str,
    limit: usize,
) -> Vec<(Vec<String>, bool)> {
    let mut pages = Vec::new();
    let mut query = format!("limit={limit}");
    loop {
        let (status, page) = srv.get(&format!("{path}?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let names = page[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect();
        let next = page["next"].as_str().map(str::to_owned);
        pages.push((names, next.is_some()));
        match next {
            Some(after) => query = format!("limit={limit}&after={}", urlencoding(&after)),
            None => return pages,
        }
    }
}

/// `s` percent-encoded for a query.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_list_a_page_at_a_time_by_name() {
    let srv = TestServer::start().await;
    for name in ["e", "a/1", "d", "b", "c"] {
        let (status, body) = srv
            .post("/v1/schedules", schedule(name, "0 0 * * * *"))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        pages(&srv, "/v1/schedules", "schedules", 2).await,
        [
            (names(&["a/1", "b"]), true),
            (names(&["c", "d"]), true),
            (names(&["e"]), false),
        ]
    );
    // `next` only when more follow: a last page that is full says none.
    assert_eq!(pages(&srv, "/v1/schedules", "schedules", 5).await.len(), 1);
    let (_, all) = srv.get("/v1/schedules").await;
    assert_eq!(
        all["schedules"].as_array().unwrap().len(),
        5,
        "100 by default"
    );
    assert!(all.get("next").is_none());
    for bad in ["limit=0", "limit=1001"] {
        let (status, problem) = srv.get(&format!("/v1/schedules?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert_eq!(problem["field"], "limit", "{problem}");
    }
}
