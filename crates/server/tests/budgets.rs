//! What agents spend, and budgets that stop a workflow over HTTP: usage reported on heartbeats
//! and results adds up per task, workflow and label; a budget reached pauses the workflow (no
//! task is handed out once the pause commits), a resume is refused until the budget is raised,
//! then the workflow finishes; `cancel` budgets cancel what is left; bad budgets and usage get a
//! 422 naming the field. SQLite by default; PostgreSQL with `BATON_E2E_STORE=postgres`.

mod common;

use common::{task, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn submit(srv: &TestServer, n: usize, budgets: Value) -> (String, Vec<String>) {
    let tasks: Vec<Value> = (0..n).map(|i| task(&format!("t{i}"), &[])).collect();
    let (s, body) = srv
        .post(
            "/v1/workflows",
            json!({"name": "spend", "tasks": tasks, "labels": {"tenant": "acme"}, "budgets": budgets}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let ids = (0..n)
        .map(|i| body["tasks"][format!("t{i}")].as_str().unwrap().to_owned())
        .collect();
    (body["workflow"].as_str().unwrap().to_owned(), ids)
}

/// Runs one claimed task: a heartbeat with usage, then its success with the running total;
/// the answer to the success.
async fn run_spending(srv: &TestServer, claimed: &Value, agent: &str) -> (StatusCode, Value) {
    let (s, b) = srv.report(claimed, agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let usage = json!({"usage": {"usd": 0.3, "tokens": 100}});
    let (s, b) = srv.report(claimed, agent, "heartbeat", usage).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let done = json!({"result": {"ok": true}, "usage": {"usd": 0.4, "tokens": 150}});
    srv.report(claimed, agent, "succeeded", done).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_reached_pauses_the_workflow_until_it_is_raised_and_resumed() {
    let srv = TestServer::start().await;
    let (wf, _) = submit(&srv, 6, json!({"usd": {"limit": 1, "policy": "pause"}})).await;
    let agent = srv.register("spender", &["work"], 1).await;
    // 0.4 usd a task: the third one's heartbeat takes the workflow to 1.1, and the pause takes
    // that task back from its agent too.
    for _ in 0..2 {
        let claimed = srv.claim_one(&agent).await;
        let (s, b) = run_spending(&srv, &claimed, &agent).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let claimed = srv.claim_one(&agent).await;
    let (s, p) = run_spending(&srv, &claimed, &agent).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::CONFLICT, Some("task_paused")),
        "{p}"
    );
    let (_, shown) = srv.get(&format!("/v1/workflows/{wf}")).await;
    assert_eq!(
        shown["usage"],
        json!({"tokens": 400, "usd": 1.1}),
        "{shown}"
    );
    assert_eq!(shown["paused"]["by"], "budget", "{shown}");
    assert_eq!(
        shown["paused"]["reason"], "budget usd 1 reached (1.1)",
        "{shown}"
    );
    assert_eq!(shown["counts"]["completed"], 2);
    assert_eq!(shown["counts"]["paused"], 4);
    assert!(
        srv.claim(&agent, 3).await.is_empty(),
        "no task is handed out once the pause committed"
    );

    let (s, p) = srv
        .post(
            &format!("/v1/workflows/{wf}/resume"),
            json!({"reason": "go on"}),
        )
        .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::CONFLICT, Some("budget_reached")),
        "{p}"
    );

    let raise = json!({"reason": "approved by finance", "budgets": {"usd": {"limit": 10}}});
    let res = srv
        .send_json(
            Method::PUT,
            &format!("/v1/workflows/{wf}/budgets"),
            None,
            &raise,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.json());
    assert_eq!(
        res.json()["budgets"]["usd"],
        json!({"limit": 10, "policy": "pause"})
    );
    let (s, b) = srv
        .post(
            &format!("/v1/workflows/{wf}/resume"),
            json!({"reason": "raised"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The one taken back runs again under a new lease, counted from zero.
    for _ in 0..4 {
        let claimed = srv.claim_one(&agent).await;
        let (s, b) = run_spending(&srv, &claimed, &agent).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (_, shown) = srv.get(&format!("/v1/workflows/{wf}")).await;
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(
        shown["usage"],
        json!({"tokens": 1000, "usd": 2.7}),
        "{shown}"
    );
    let (_, usage) = srv.get("/v1/usage?label=tenant:acme").await;
    assert_eq!(
        usage["usage"],
        json!({"tokens": 1000, "usd": 2.7}),
        "{usage}"
    );
    srv.wait_metric("baton_usage_total{unit=\"usd\"}", |v| {
        (v - 2.7).abs() < 1e-9
    })
    .await;

    let (_, audit) = srv.get(&format!("/v1/audit?workflow={wf}")).await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("local", "resume"),
            ("local", "budgets"),
            ("budget", "pause")
        ],
        "{audit}"
    );
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_budget_cancels_everything_left_the_running_task_included() {
    let srv = TestServer::start().await;
    let (wf, ids) = submit(
        &srv,
        3,
        json!({"tokens": {"limit": 100, "policy": "cancel"}}),
    )
    .await;
    let agent = srv.register("spender", &["work"], 1).await;
    let claimed = srv.claim_one(&agent).await;
    let (s, _) = srv.report(&claimed, &agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let usage = json!({"usage": {"tokens": 100}});
    let (s, b) = srv.report(&claimed, &agent, "heartbeat", usage).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, p) = srv
        .report(&claimed, &agent, "succeeded", json!({"result": 1}))
        .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::CONFLICT, Some("task_cancelled")),
        "{p}"
    );
    let (_, shown) = srv.get(&format!("/v1/workflows/{wf}")).await;
    assert_eq!(shown["status"], "cancelled", "{shown}");
    for id in &ids {
        let t = srv.task(id).await;
        assert_eq!(t["state"], "cancelled", "{t}");
        assert_eq!(t["detail"]["reason"]["requested_by"], "budget", "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_budgets_and_usage_are_refused_naming_the_field() {
    let srv = TestServer::start().await;
    for (budgets, field) in [
        (json!({"usd": {"limit": 0}}), "budgets.usd.limit"),
        (json!({"USD": {"limit": 1}}), "budgets.USD"),
        (json!({"usd": {"limit": -1}}), "budgets.usd.limit"),
        (
            json!({"usd": {"limit": 1, "policy": "explode"}}),
            "budgets.usd.policy",
        ),
        (json!({"usd": {}}), "budgets.usd.limit"),
    ] {
        let (s, p) = srv
            .post(
                "/v1/workflows",
                json!({"tasks": [task("a", &[])], "budgets": budgets}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{budgets}: {p}");
        assert_eq!(p["field"], field, "{budgets}: {p}");
    }
    let (_, ids) = submit(&srv, 1, json!({})).await;
    let agent = srv.register("w", &["work"], 1).await;
    let claimed = srv.claim_one(&agent).await;
    let (s, _) = srv.report(&claimed, &agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    for (usage, field) in [
        (json!({"usd": -0.5}), "usage.usd"),
        (json!({"Tokens": 5}), "usage.Tokens"),
        (json!({"usd": "0.5"}), "usage.usd"),
    ] {
        let (s, p) = srv
            .report(&claimed, &agent, "heartbeat", json!({ "usage": usage }))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{usage}: {p}");
        assert_eq!(p["field"], field, "{usage}: {p}");
    }
    let shown = srv.task(&ids[0]).await;
    assert!(shown.get("usage").is_none(), "nothing counted: {shown}");
    let (s, p) = srv.get("/v1/usage?label=no-separator").await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("label")),
        "{p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_reached_takes_the_running_tasks_back_so_a_runaway_loop_stops() {
    let srv = TestServer::start().await;
    let (wf, ids) = submit(&srv, 2, json!({"usd": {"limit": 1}})).await;
    let (a, b) = (
        srv.register("looping", &["work"], 1).await,
        srv.register("other", &["work"], 1).await,
    );
    let (ca, cb) = (srv.claim_one(&a).await, srv.claim_one(&b).await);
    for (c, agent) in [(&ca, &a), (&cb, &b)] {
        let (s, body) = srv.report(c, agent, "started", json!({})).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    // One agent loops, spending: its report that reaches the budget is taken in.
    for total in [0.4, 0.8, 1.05] {
        let (s, body) = srv
            .report(&ca, &a, "heartbeat", json!({"usage": {"usd": total}}))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    // Both are told to stop at their next report; nothing of the workflow is handed out.
    for (c, agent) in [(&ca, &a), (&cb, &b)] {
        let (s, p) = srv
            .report(c, agent, "heartbeat", json!({"usage": {"usd": 2}}))
            .await;
        assert_eq!(
            (s, p["code"].as_str()),
            (StatusCode::CONFLICT, Some("task_paused")),
            "{p}"
        );
    }
    for id in &ids {
        let t = srv.task(id).await;
        assert_eq!(
            (t["state"].as_str(), t["paused"]["by"].as_str()),
            (Some("pending"), Some("budget")),
            "{t}"
        );
    }
    assert!(srv.claim(&a, 2).await.is_empty());
    let (_, shown) = srv.get(&format!("/v1/workflows/{wf}")).await;
    assert_eq!(
        shown["usage"],
        json!({"usd": 1.05}),
        "refused reports count nothing: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_reached_by_the_last_report_leaves_the_ended_workflow_as_it_ended() {
    let srv = TestServer::start().await;
    let (wf, _) = submit(&srv, 1, json!({"usd": {"limit": 0.1}})).await;
    let agent = srv.register("spender", &["work"], 1).await;
    let claimed = srv.claim_one(&agent).await;
    let (s, b) = run_spending(&srv, &claimed, &agent).await;
    // The heartbeat (0.3) reached it while the task ran: taken back.
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("task_paused")),
        "{b}"
    );
    let (_, shown) = srv.get(&format!("/v1/workflows/{wf}")).await;
    assert_eq!(shown["status"], "running", "{shown}");

    let (wf, _) = submit(&srv, 1, json!({"tokens": {"limit": 150}})).await;
    let claimed = srv.claim_one(&agent).await;
    let (s, b) = run_spending(&srv, &claimed, &agent).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, shown) = srv.get(&format!("/v1/workflows/{wf}")).await;
    assert_eq!(shown["status"], "completed", "{shown}");
    assert!(
        shown.get("paused").is_none(),
        "an ended workflow is not paused: {shown}"
    );

    // A budget lowered under what was spent applies at once.
    let (wf, _) = submit(&srv, 2, json!({})).await;
    let claimed = srv.claim_one(&agent).await;
    let (s, b) = run_spending(&srv, &claimed, &agent).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let lower = json!({"reason": "cut", "budgets": {"usd": {"limit": 0.2}}});
    let res = srv
        .send_json(
            Method::PUT,
            &format!("/v1/workflows/{wf}/budgets"),
            None,
            &lower,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.json());
    assert_eq!(res.json()["paused"]["by"], "budget", "{:?}", res.json());
}
