//! Agents over HTTP: `GET /v1/agents` pages by id, each token has at most so many agents
//! registered (loopback clients without tokens together as `local`), and the agent retention
//! deletes silent ones, which frees their token's room.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use baton_engine::{EngineConfig, GcOptions, ManualClock};
use baton_server::Tokens;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret";
const ADMIN_2: &str = "admin-2-secret";
const DAY_MS: u64 = 86_400_000;

fn config(per_token: u32) -> EngineConfig {
    EngineConfig {
        agent_ttl_ms: 60_000,
        agents_per_token_max: per_token,
        agent_retention_ms: 7 * DAY_MS,
        ..EngineConfig::default()
    }
}

async fn server(tokens: Tokens, per_token: u32) -> TestServer {
    let (url, dir) = store_url().await;
    let clock = Arc::new(ManualClock::new(T0));
    TestServer::start_with_config(url, dir, tokens, clock, config(per_token)).await
}

async fn register(srv: &TestServer, token: Option<&str>, body: Value) -> RawResponse {
    srv.send_json(Method::POST, "/v1/agents", token, &body)
        .await
}

fn problem(res: &RawResponse, status: StatusCode, code: &str) -> Value {
    let body = res.json();
    assert_eq!(res.status, status, "{body}");
    assert_eq!(
        res.content_type.as_deref(),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(body["code"], code, "{body}");
    body
}

fn created(res: &RawResponse) -> String {
    let body = res.json();
    assert_eq!(res.status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn list(srv: &TestServer, token: Option<&str>, query: &str) -> RawResponse {
    srv.raw(
        Method::GET,
        &format!("/v1/agents{query}"),
        token,
        None,
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_list_a_page_at_a_time_by_id() {
    let srv = server(Tokens::none(), 100).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(created(
            &register(
                &srv,
                None,
                json!({"name": format!("w{i}"), "capabilities": ["work"]}),
            )
            .await,
        ));
    }
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let res = list(&srv, None, &query).await;
        assert_eq!(res.status, StatusCode::OK);
        let body = res.json();
        let agents = body["agents"].as_array().unwrap();
        assert!(agents.len() <= 2, "{body}");
        for a in agents {
            seen.push(a["id"].as_str().unwrap().to_owned());
            assert_eq!(a["registered_by"], "local", "{a}");
            assert_eq!(a["online"], true);
        }
        pages += 1;
        match body["next"].as_str() {
            Some(next) => {
                assert_eq!(next, agents.last().unwrap()["id"].as_str().unwrap());
                query = format!("?limit=2&after={next}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "every agent once, by id");
    // Without a limit, the default page holds them all and says there is no next.
    let all = list(&srv, None, "").await.json();
    assert_eq!(all["agents"].as_array().unwrap().len(), 5);
    assert!(all.get("next").is_none(), "{all}");

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?after=not-an-id", "after"),
    ] {
        let res = list(&srv, None, query).await;
        let body = problem(&res, StatusCode::BAD_REQUEST, "invalid_query");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let res = list(&srv, None, "?page=2").await;
    problem(&res, StatusCode::BAD_REQUEST, "invalid_query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_has_at_most_so_many_agents_registered() {
    let mut tokens = Tokens::none();
    tokens.add_admin(ADMIN);
    tokens.add_admin(ADMIN_2);
    let srv = server(tokens, 3).await;
    let mut first = None;
    for i in 0..3 {
        let id = created(&register(&srv, Some(ADMIN), json!({"name": format!("a{i}")})).await);
        first.get_or_insert(id);
    }
    let res = register(&srv, Some(ADMIN), json!({"name": "a3"})).await;
    let body = problem(
        &res,
        StatusCode::TOO_MANY_REQUESTS,
        "agents_per_token_max_reached",
    );
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("`admin`") && detail.contains("--agents-per-token-max"),
        "{detail}"
    );
    // Nothing was written: still three.
    assert_eq!(
        list(&srv, Some(ADMIN), "").await.json()["agents"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // One of them registers again: not another agent.
    let again = register(
        &srv,
        Some(ADMIN),
        json!({"id": first.clone().unwrap(), "name": "a0", "concurrency": 2}),
    )
    .await;
    assert_eq!(created(&again), first.clone().unwrap());
    // Another token counts its own.
    created(&register(&srv, Some(ADMIN_2), json!({"name": "b0"})).await);
    // Silent for the agent retention, holding no lease: deleted, which makes room.
    srv.clock.advance(7 * DAY_MS + 1);
    let survivor = created(&register(&srv, Some(ADMIN_2), json!({"name": "b1"})).await);
    let report = srv.engine.collect(GcOptions::default()).await.unwrap();
    assert_eq!(report.agents, 4, "{report:?}");
    let left: Vec<Value> = list(&srv, Some(ADMIN), "").await.json()["agents"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], survivor.as_str());
    for i in 0..3 {
        created(&register(&srv, Some(ADMIN), json!({"name": format!("c{i}")})).await);
    }
    // A deleted agent that comes back is not known by its id any more: it registers as a
    // new agent, counted anew.
    let res = register(
        &srv,
        Some(ADMIN),
        json!({"id": first.unwrap(), "name": "a0"}),
    )
    .await;
    let refused = problem(&res, StatusCode::NOT_FOUND, "agent_not_found");
    assert_eq!(refused["field"], "id");
    let res = register(&srv, Some(ADMIN), json!({"name": "a0"})).await;
    problem(
        &res,
        StatusCode::TOO_MANY_REQUESTS,
        "agents_per_token_max_reached",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_clients_without_tokens_share_one_cap() {
    let srv = server(Tokens::none(), 2).await;
    created(&register(&srv, None, json!({"name": "x"})).await);
    created(&register(&srv, None, json!({"name": "y"})).await);
    let res = register(&srv, None, json!({"name": "z"})).await;
    let body = problem(
        &res,
        StatusCode::TOO_MANY_REQUESTS,
        "agents_per_token_max_reached",
    );
    assert!(
        body["detail"].as_str().unwrap().contains("`local`"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_token_may_keep_its_agents_max_registered_and_no_more() {
    use baton_server::tokens::{Secret, TokenSpec};
    let pool = TokenSpec {
        origin: "test".into(),
        name: "pool".into(),
        role: baton_server::Role::Agent,
        secret: Secret::Plain("pool-secret".into()),
        agents: vec!["worker-*".into()],
        agents_max: Some(4),
        scope: Default::default(),
    };
    let tokens = Tokens::build([pool]).unwrap();
    // The server's cap (2) is below the token's agents_max (4): the token's counts.
    let srv = server(tokens, 2).await;
    let mut ids = BTreeSet::new();
    for i in 0..4 {
        ids.insert(created(
            &register(
                &srv,
                Some("pool-secret"),
                json!({"name": format!("worker-{i}")}),
            )
            .await,
        ));
    }
    // Online, the token's agents_max refuses a fifth; silent past the liveness window, the
    // registered cap still does (they are stored until the agent retention deletes them).
    let res = register(&srv, Some("pool-secret"), json!({"name": "worker-4"})).await;
    problem(&res, StatusCode::TOO_MANY_REQUESTS, "agents_max_reached");
    srv.clock.advance(60_001);
    let res = register(&srv, Some("pool-secret"), json!({"name": "worker-4"})).await;
    problem(
        &res,
        StatusCode::TOO_MANY_REQUESTS,
        "agents_per_token_max_reached",
    );
    assert_eq!(ids.len(), 4);
}
