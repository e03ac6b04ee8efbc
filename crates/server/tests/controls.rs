//! Operators in control over HTTP: pause and resume (task and workflow), skip, fail, rerun from
//! a task with a dry run, a reason required for each, the agent's refusal naming what happened,
//! and `GET /v1/audit`. SQLite by default; PostgreSQL with `BATON_E2E_STORE=postgres`.

mod common;

use common::{task, TestServer};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_without_a_reason_is_refused_naming_the_field_and_changes_nothing() {
    let srv = TestServer::start().await;
    let receipt = srv.submit(json!([task("a", &[])])).await;
    let a = receipt["tasks"]["a"].as_str().unwrap();
    for (path, body) in [
        ("pause", json!({})),
        ("resume", json!({"reason": ""})),
        ("skip", json!({"result": 1})),
        ("fail", json!({"reason": "   "})),
        ("rerun", json!({"dry_run": true})),
    ] {
        let (status, problem) = srv.post(&format!("/v1/tasks/{a}/{path}"), body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {problem}"
        );
        assert_eq!(problem["field"], "reason", "{path}: {problem}");
    }
    let shown = srv.task(a).await;
    assert_eq!(shown["state"], "pending");
    assert_eq!(shown["version"], 1);
    assert!(shown.get("paused").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_now_takes_the_task_back_and_the_agents_heartbeat_is_told_why() {
    let srv = TestServer::start().await;
    let receipt = srv.submit(json!([task("a", &[])])).await;
    let a = receipt["tasks"]["a"].as_str().unwrap();
    let agent = srv.register("w", &["work"], 1).await;
    let claimed = srv.claim_one(&agent).await;
    let (s, _) = srv.report(&claimed, &agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK);

    let (s, body) = srv
        .post(
            &format!("/v1/tasks/{a}/pause"),
            json!({"reason": "over budget", "now": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "pending");
    let (s, problem) = srv.report(&claimed, &agent, "heartbeat", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "task_paused", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("over budget"),
        "{problem}"
    );
    let shown = srv.task(a).await;
    assert_eq!(shown["paused"]["reason"], "over budget");
    assert_eq!(shown["waiting"]["reason"], "paused");
    assert!(
        srv.claim(&agent, 1).await.is_empty(),
        "a paused task is not handed out"
    );

    let (s, body) = srv
        .post(
            &format!("/v1/tasks/{a}/resume"),
            json!({"reason": "approved"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let again = srv.claim_one(&agent).await;
    srv.finish(&again, &agent).await;
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_fail_and_rerun_move_the_graph_and_the_audit_log_records_each() {
    let srv = TestServer::start().await;
    let receipt = srv
        .submit(json!([
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["b"])
        ]))
        .await;
    let wf = receipt["workflow"].as_str().unwrap();
    let id = |k: &str| receipt["tasks"][k].as_str().unwrap().to_owned();
    let agent = srv.register("w", &["work"], 2).await;

    // Skip `a` by hand: `b` runs with its result in `upstream`.
    let (s, body) = srv
        .post(
            &format!("/v1/tasks/{}/skip", id("a")),
            json!({"reason": "done by hand", "result": {"by": "hand"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "completed");
    let claimed = srv.claim_one(&agent).await;
    assert_eq!(claimed["task"], id("b").as_str());
    assert_eq!(claimed["upstream"]["a"]["result"], json!({"by": "hand"}));
    srv.finish(&claimed, &agent).await;

    // Fail `c` for good.
    let (s, body) = srv
        .post(
            &format!("/v1/tasks/{}/fail", id("c")),
            json!({"reason": "wrong prompt", "error": {"kind": "bad_prompt", "message": "tone"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(srv.task(&id("c")).await["errors"][0]["kind"], "bad_prompt");

    // Rerun from `b`: a dry run lists b and c; the rerun reopens both, `a` keeps its result.
    let (s, dry) = srv
        .post(
            &format!("/v1/tasks/{}/rerun", id("b")),
            json!({"reason": "prompt fixed", "dry_run": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{dry}");
    assert_eq!(dry["applied"], false);
    let keys: Vec<&str> = dry["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["b", "c"]);
    assert_eq!(srv.state_of(&id("b")).await, "completed");
    let (s, done) = srv
        .post(
            &format!("/v1/tasks/{}/rerun", id("b")),
            json!({"reason": "prompt fixed", "input": {"tone": "warm"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["applied"], true);
    assert_eq!(srv.state_of(&id("a")).await, "completed");
    let claimed = srv.claim_one(&agent).await;
    assert_eq!(claimed["task"], id("b").as_str());
    assert_eq!(claimed["input"], json!({"tone": "warm"}));
    srv.finish(&claimed, &agent).await;
    let claimed = srv.claim_one(&agent).await;
    assert_eq!(claimed["task"], id("c").as_str());
    srv.finish(&claimed, &agent).await;
    srv.wait_state(&id("c"), "completed").await;

    let (s, audit) = srv.get(&format!("/v1/audit?workflow={wf}")).await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["rerun", "fail", "skip"], "{audit}");
    assert_eq!(audit["entries"][0]["reason"], "prompt fixed");
    assert_eq!(audit["entries"][0]["detail"]["tasks_changed"], 2);
    let (s, page) = srv.get("/v1/audit?action=skip&limit=1").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["entries"][0]["action"], "skip");
    let (s, bad) = srv.get("/v1/audit?limit=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    srv.assert_store_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_workflow_hands_out_nothing_until_resumed() {
    let srv = TestServer::start().await;
    let receipt = srv.submit(json!([task("a", &[]), task("b", &[])])).await;
    let wf = receipt["workflow"].as_str().unwrap();
    let agent = srv.register("w", &["work"], 2).await;
    let (s, body) = srv
        .post(
            &format!("/v1/workflows/{wf}/pause"),
            json!({"reason": "spend review"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["tasks_changed"], 2);
    let (_, view) = srv.get(&format!("/v1/workflows/{wf}")).await;
    assert_eq!(view["paused"]["reason"], "spend review");
    assert_eq!(view["counts"]["paused"], 2, "{view}");
    let (_, counts) = srv.get("/v1/counts").await;
    assert_eq!(counts["paused"], 2, "{counts}");
    assert_eq!(
        counts["pending"], 2,
        "paused tasks keep their state: {counts}"
    );
    assert!(srv.claim(&agent, 2).await.is_empty());
    // The task list and the graph say which tasks are paused (the dashboard tags them).
    let paused_in = |list: &serde_json::Value, field: &str| -> Vec<bool> {
        list[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["paused"] == true)
            .collect()
    };
    let (_, tasks) = srv.get(&format!("/v1/tasks?workflow={wf}")).await;
    assert_eq!(paused_in(&tasks, "tasks"), [true, true], "{tasks}");
    let (_, graph) = srv.get(&format!("/v1/workflows/{wf}/graph")).await;
    assert_eq!(paused_in(&graph, "nodes"), [true, true], "{graph}");
    let (s, body) = srv
        .post(
            &format!("/v1/workflows/{wf}/resume"),
            json!({"reason": "ok"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["tasks_changed"], 2);
    assert_eq!(srv.counts().await["paused"], 0);
    let (_, tasks) = srv.get(&format!("/v1/tasks?workflow={wf}")).await;
    assert_eq!(paused_in(&tasks, "tasks"), [false, false], "{tasks}");
    assert_eq!(srv.claim(&agent, 2).await.len(), 2);
    let (s, missing) = srv
        .post(
            "/v1/workflows/00000000-0000-0000-0000-000000000001/pause",
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_racing_a_skip_or_a_rerun_completes_the_task_once() {
    let srv = TestServer::start().await;
    let agent = srv.register("w", &["work"], 4).await;
    for round in 0..6 {
        let receipt = srv.submit(json!([task("a", &[]), task("b", &["a"])])).await;
        let a = receipt["tasks"]["a"].as_str().unwrap().to_owned();
        let claimed = srv.claim_one(&agent).await;
        assert_eq!(claimed["task"], a.as_str());
        let (s, _) = srv.report(&claimed, &agent, "started", json!({})).await;
        assert_eq!(s, StatusCode::OK);
        let control = if round % 2 == 0 {
            (
                "skip",
                json!({"reason": "race", "result": {"by": "operator"}}),
            )
        } else {
            ("rerun", json!({"reason": "race"}))
        };
        let path = format!("/v1/tasks/{a}/{}", control.0);
        let ((done, _), (controlled, body)) = tokio::join!(
            srv.report(
                &claimed,
                &agent,
                "succeeded",
                json!({"result": {"by": "agent"}})
            ),
            srv.post(&path, control.1)
        );
        let shown = srv.task(&a).await;
        let successes = shown["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["event"] == "execution_succeeded")
            .count();
        match control.0 {
            // Whichever commits first wins; the other is refused.
            "skip" => {
                assert!(
                    (done == StatusCode::OK) != (controlled == StatusCode::OK),
                    "round {round}: success {done}, skip {controlled}: {body}"
                );
                assert_eq!(shown["state"], "completed");
                assert_eq!(successes, usize::from(done == StatusCode::OK));
            }
            // A rerun applies either way: to the running task, or to the completed one.
            _ => {
                assert_eq!(controlled, StatusCode::OK, "round {round}: {body}");
                // Reopened; released at once, having no dependencies.
                assert!(
                    shown["state"] == "blocked" || shown["state"] == "pending",
                    "round {round}: {}",
                    shown["state"]
                );
                assert!(successes <= 1);
            }
        }
        // Whatever is left runs to completion.
        let b = receipt["tasks"]["b"].as_str().unwrap().to_owned();
        for _ in 0..400 {
            if srv.state_of(&b).await == "completed" {
                break;
            }
            for claimed in srv.claim(&agent, 4).await {
                srv.finish(&claimed, &agent).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(srv.state_of(&a).await, "completed", "round {round}");
        assert_eq!(srv.state_of(&b).await, "completed", "round {round}");
    }
    srv.assert_store_checks_clean().await;
}
