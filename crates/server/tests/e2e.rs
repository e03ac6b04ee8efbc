//! End-to-end scenarios over real HTTP against a real server and store.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn ids(receipt: &Value) -> HashMap<String, String> {
    receipt["tasks"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diamond_runs_in_dependency_order() {
    let srv = TestServer::start().await;
    let wf = srv
        .submit(json!([
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["a"]),
            task("d", &["b", "c"])
        ]))
        .await;
    let ids = ids(&wf);
    let agent = srv.register("worker", &["work"], 4).await;

    let first = srv.claim(&agent, 4).await;
    assert_eq!(first.len(), 1, "only a is ready");
    assert_eq!(first[0]["key"], "a");
    assert!(first[0]["traceparent"].as_str().unwrap().starts_with("00-"));
    srv.finish(&first[0], &agent).await;
    srv.wait_state(&ids["b"], "pending").await;
    srv.wait_state(&ids["c"], "pending").await;
    assert_eq!(srv.state_of(&ids["d"]).await, "blocked");

    let middle = srv.claim(&agent, 4).await;
    let keys: HashSet<&str> = middle.iter().map(|t| t["key"].as_str().unwrap()).collect();
    assert_eq!(keys, HashSet::from(["b", "c"]));
    srv.finish(&middle[0], &agent).await;
    let d = srv.task(&ids["d"]).await;
    assert_eq!(d["state"], "blocked");
    assert_eq!(d["waiting"]["reason"], "dependencies");
    assert_eq!(d["waiting"]["open"].as_array().unwrap().len(), 1);
    srv.finish(&middle[1], &agent).await;
    srv.wait_state(&ids["d"], "pending").await;
    let last = srv.claim(&agent, 4).await;
    srv.finish(&last[0], &agent).await;

    let counts = srv
        .get(&format!(
            "/v1/counts?workflow={}",
            wf["workflow"].as_str().unwrap()
        ))
        .await
        .1;
    assert_eq!(counts["completed"], 4);
    assert_eq!(counts["total"], 4);
    let d = srv.task(&ids["d"]).await;
    assert_eq!(d["result"], json!({"by": agent}));
    assert!(d["waiting"].is_null());
    let events: Vec<&str> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "submitted",
            "dependencies_met",
            "agent_assigned",
            "execution_started",
            "execution_succeeded"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_with_four_concurrent_agents_complete_exactly_once() {
    let srv = Arc::new(TestServer::start().await);
    let tasks: Vec<Value> = (0..1000)
        .map(|i| {
            if i < 10 {
                task(&format!("t{i}"), &[])
            } else {
                let dep = format!("t{}", i % 10);
                task(&format!("t{i}"), &[dep.as_str()])
            }
        })
        .collect();
    srv.submit(Value::Array(tasks)).await;
    let mut handles = Vec::new();
    for n in 0..4 {
        let srv = Arc::clone(&srv);
        handles.push(tokio::spawn(async move {
            let agent = srv.register(&format!("agent-{n}"), &["work"], 32).await;
            let mut done = Vec::new();
            let mut idle = 0;
            while idle < 50 {
                let (status, body) = srv
                    .post(
                        &format!("/v1/agents/{agent}/claim"),
                        json!({"max": 16, "wait_ms": 200}),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let got = body["tasks"].as_array().unwrap().clone();
                if got.is_empty() {
                    idle += 1;
                    let c = srv.counts().await;
                    if c["completed"] == 1000 {
                        break;
                    }
                    continue;
                }
                idle = 0;
                for t in &got {
                    srv.finish(t, &agent).await;
                    done.push(t["task"].as_str().unwrap().to_owned());
                }
            }
            done
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 1000, "every task completed once");
    assert_eq!(unique.len(), 1000);
    assert_eq!(srv.counts().await["completed"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_retried_after_its_backoff() {
    let srv = TestServer::start().await;
    let wf = srv.submit(json!([task("flaky", &[])])).await;
    let id = ids(&wf)["flaky"].clone();
    let agent = srv.register("worker", &["work"], 1).await;
    let claimed = srv.claim(&agent, 1).await.remove(0);
    srv.report(&claimed, &agent, "started", json!({})).await;
    let (status, body) = srv
        .report(
            &claimed,
            &agent,
            "failed",
            json!({"error": {"kind": "timeout", "message": "upstream slow"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let task = srv.task(&id).await;
    assert_eq!(task["state"], "failed");
    assert_eq!(task["waiting"]["reason"], "backing_off");
    assert_eq!(task["waiting"]["attempt"], 1);
    let wf_id = wf["workflow"].as_str().unwrap();
    let (_, counts) = srv.get(&format!("/v1/counts?workflow={wf_id}")).await;
    assert_eq!(
        (counts["failed"].as_u64(), counts["retrying"].as_u64()),
        (Some(1), Some(1)),
        "failed, not for good: {counts}"
    );
    assert!(
        srv.claim(&agent, 1).await.is_empty(),
        "nothing before the backoff"
    );

    srv.clock.advance(999);
    srv.engine.tick().await.unwrap();
    assert_eq!(srv.state_of(&id).await, "failed");
    srv.clock.advance(1);
    srv.engine.tick().await.unwrap();
    let task = srv.wait_state(&id, "pending").await;
    assert_eq!(task["attempt"], 2);
    let again = srv.claim(&agent, 1).await.remove(0);
    assert_eq!(again["attempt"], 2);
    assert_ne!(again["idempotency_key"], claimed["idempotency_key"]);
    srv.finish(&again, &agent).await;
    assert_eq!(srv.task(&id).await["errors"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_loses_its_task_to_the_heartbeat_deadline_and_its_late_report_is_refused() {
    let srv = TestServer::start().await;
    let wf = srv.submit(json!([task("long", &[])])).await;
    let id = ids(&wf)["long"].clone();
    let agent = srv.register("worker", &["work"], 1).await;
    let claimed = srv.claim(&agent, 1).await.remove(0);
    srv.report(&claimed, &agent, "started", json!({})).await;
    srv.clock.advance(9_000);
    let (status, body) = srv
        .report(
            &claimed,
            &agent,
            "heartbeat",
            json!({"progress": {"pct": 50}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cancelled"], false);

    srv.clock.advance(10_000);
    srv.engine.tick().await.unwrap();
    let task = srv.wait_state(&id, "failed").await;
    assert_eq!(task["errors"][0]["kind"], "timeout.heartbeat");
    let versions = task["version"].clone();

    let (status, body) = srv
        .report(&claimed, &agent, "succeeded", json!({"result": "late"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(srv.task(&id).await["version"], versions, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_with_a_stale_token_is_refused_and_changes_nothing() {
    let srv = TestServer::start().await;
    let wf = srv.submit(json!([task("job", &[])])).await;
    let id = ids(&wf)["job"].clone();
    let slow = srv.register("slow", &["work"], 1).await;
    let fast = srv.register("fast", &["work"], 1).await;
    let first = srv.claim(&slow, 1).await.remove(0);
    srv.clock.advance(5_000);
    srv.engine.tick().await.unwrap();
    srv.wait_state(&id, "pending").await;
    let second = srv.claim(&fast, 1).await.remove(0);
    assert!(second["token"].as_u64() > first["token"].as_u64());

    let before = srv.task(&id).await;
    let (status, body) = srv.report(&first, &slow, "started", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "stale_lease");
    let after = srv.task(&id).await;
    assert_eq!(before["version"], after["version"]);
    srv.finish(&second, &fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_task_cancels_everything_downstream_and_creates_its_compensation() {
    let srv = TestServer::start().await;
    let mut root = task("book-flight", &[]);
    root["compensation"] =
        json!({"key": "cancel-flight", "capabilities": ["work"], "input": {"refund": true}});
    let wf = srv
        .submit(json!([
            root,
            task("book-hotel", &["book-flight"]),
            task("send-itinerary", &["book-hotel"])
        ]))
        .await;
    let ids = ids(&wf);
    let (status, body) = srv
        .post(
            &format!("/v1/tasks/{}/cancel", ids["book-flight"]),
            json!({"reason": "trip off"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cancelled"], true);
    srv.wait_state(&ids["book-hotel"], "cancelled").await;
    let itinerary = srv.wait_state(&ids["send-itinerary"], "cancelled").await;
    assert_eq!(itinerary["detail"]["reason"]["upstream"], "book-hotel");

    let workflow = wf["workflow"].as_str().unwrap();
    let start = std::time::Instant::now();
    let comp = loop {
        let (_, list) = srv
            .get(&format!("/v1/tasks?workflow={workflow}&state=pending"))
            .await;
        if let Some(t) = list["tasks"].as_array().unwrap().first() {
            break t.clone();
        }
        assert!(
            start.elapsed().as_secs() < 10,
            "no compensation task appeared"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(comp["key"], "cancel-flight");
    let comp = srv.task(comp["id"].as_str().unwrap()).await;
    assert_eq!(comp["spec"]["input"]["compensates"], "book-flight");
    assert_eq!(comp["spec"]["input"]["input"], json!({"refund": true}));
    assert_eq!(comp["compensates"], ids["book-flight"].as_str());
    let root = srv.task(&ids["book-flight"]).await;
    assert_eq!(root["compensation"], comp["id"]);
    let hotel = srv.task(&ids["book-hotel"]).await;
    assert_eq!(hotel["upstream_cause"], ids["book-flight"].as_str());
    let (status, rules) = srv.get("/v1/lifecycle?format=json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(rules
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["event"] == "cancel_requested" && r["to"] == "cancelled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executing_agent_decomposes_its_task_and_the_dependents_wait_for_the_sub_tasks() {
    let srv = TestServer::start().await;
    let wf = srv
        .submit(json!([task("plan", &[]), task("write", &["plan"])]))
        .await;
    let ids = ids(&wf);
    let agent = srv.register("planner", &["work"], 4).await;
    let plan = srv.claim(&agent, 1).await.remove(0);
    srv.report(&plan, &agent, "started", json!({})).await;
    let (status, body) = srv
        .report(
            &plan,
            &agent,
            "subtasks",
            json!({"tasks": [task("research-1", &[]), task("research-2", &[])]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let subs = ids_of(&body);
    srv.report(&plan, &agent, "succeeded", json!({"result": "planned"}))
        .await;
    let write = srv.task(&ids["write"]).await;
    assert_eq!(write["state"], "blocked");
    let open: Vec<&str> = write["waiting"]["open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap())
        .collect();
    assert_eq!(open, ["research-1", "research-2"]);

    for claimed in srv.claim(&agent, 4).await {
        assert!(claimed["key"].as_str().unwrap().starts_with("research"));
        srv.finish(&claimed, &agent).await;
    }
    for id in subs.values() {
        assert_eq!(srv.state_of(id).await, "completed");
    }
    srv.wait_state(&ids["write"], "pending").await;

    let (status, body) = srv
        .report(
            &plan,
            &agent,
            "subtasks",
            json!({"tasks": [task("late", &[])]}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

fn ids_of(body: &Value) -> HashMap<String, String> {
    ids(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_with_the_same_idempotency_key_returns_the_first_workflow() {
    let srv = TestServer::start().await;
    let body = json!({"name": "nightly", "idempotency_key": "nightly-2026-11-26", "tasks": [task("a", &[]), task("b", &["a"])]});
    let (s1, first) = srv.post("/v1/workflows", body.clone()).await;
    assert_eq!(s1, StatusCode::CREATED);
    let (s2, second) = srv.post("/v1/workflows", body).await;
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(second["created"], false);
    assert_eq!(first["workflow"], second["workflow"]);
    assert_eq!(first["tasks"], second["tasks"]);
    assert_eq!(srv.counts().await["total"], 2);
    let (s3, third) = srv
        .post(
            "/v1/workflows",
            json!({"idempotency_key": "nightly-2026-11-26", "tasks": [task("z", &[])]}),
        )
        .await;
    assert_eq!(s3, StatusCode::CONFLICT, "{third}");
    assert_eq!(third["code"], "idempotency_mismatch");
    assert_eq!(srv.counts().await["total"], 2);
}

/// A replay answers exactly what the first submission created, whatever the workflow grew
/// since; the key may come as the `Idempotency-Key` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_answers_the_first_submissions_tasks_only() {
    let srv = TestServer::start().await;
    let submit = |key: &'static str, body: Value| {
        srv.client
            .post(format!("{}/v1/workflows", srv.url))
            .header("Idempotency-Key", key)
            .json(&body)
    };
    let body = json!({"tasks": [task("plan", &[]), task("write", &["plan"])]});
    let res = submit("grow-1", body.clone()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let first: Value = res.json().await.unwrap();
    let agent = srv.register("planner", &["work"], 4).await;
    let plan = srv.claim(&agent, 1).await.remove(0);
    srv.report(&plan, &agent, "started", json!({})).await;
    let (status, _) = srv
        .report(
            &plan,
            &agent,
            "subtasks",
            json!({"tasks": [task("research", &[])]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(srv.counts().await["total"], 3);

    let res = submit("grow-1", body.clone()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["workflow"], first["workflow"]);
    assert_eq!(
        again["tasks"], first["tasks"],
        "the sub-task is not in the answer"
    );
    assert_eq!(again["created"], false);
    // The body's key is the same key.
    let mut in_body = body.clone();
    in_body["idempotency_key"] = json!("grow-1");
    let (status, by_body) = srv.post("/v1/workflows", in_body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_body, again);
    // Two different keys are refused, and nothing is created.
    let res = submit("grow-2", in_body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused: Value = res.json().await.unwrap();
    assert_eq!(refused["field"], "idempotency_key", "{refused}");
    assert_eq!(srv.counts().await["total"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_finishes_the_workflow_with_nothing_lost() {
    let srv = TestServer::start().await;
    let wf = srv
        .submit(json!([
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["b"])
        ]))
        .await;
    let ids = ids(&wf);
    let agent = srv.register("worker", &["work"], 2).await;
    let a = srv.claim(&agent, 1).await.remove(0);
    srv.finish(&a, &agent).await;
    srv.wait_state(&ids["b"], "pending").await;
    let b = srv.claim(&agent, 1).await.remove(0);
    srv.report(&b, &agent, "started", json!({})).await;
    let before = srv.task(&ids["b"]).await;

    let (url, dir, clock) = srv.stop().await;
    let srv = TestServer::start_with(url, dir, baton_server::Tokens::none(), clock).await;
    let after = srv.task(&ids["b"]).await;
    assert_eq!(before["history"], after["history"]);
    assert_eq!(after["state"], "executing");
    let (status, body) = srv
        .report(&b, &agent, "succeeded", json!({"result": 2}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the lease survives the restart: {body}"
    );
    srv.wait_state(&ids["c"], "pending").await;
    let c = srv.claim(&agent, 1).await.remove(0);
    srv.finish(&c, &agent).await;
    assert_eq!(srv.counts().await["completed"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_shows_transitions_of_the_chosen_workflow() {
    let srv = TestServer::start().await;
    let wf = srv.submit(json!([task("a", &[])])).await;
    let other = srv.submit(json!([task("x", &[])])).await;
    let workflow = wf["workflow"].as_str().unwrap().to_owned();
    let mut res = srv
        .client
        .get(format!("{}/v1/events?workflow={workflow}", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let agent = srv.register("worker", &["work"], 2).await;
    for t in srv.claim(&agent, 2).await {
        srv.finish(&t, &agent).await;
    }
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen.contains("\"to\":\"completed\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "no completion event: {seen}"
        );
        if let Ok(Some(chunk)) =
            tokio::time::timeout(std::time::Duration::from_secs(5), res.chunk())
                .await
                .unwrap()
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(seen.contains("event: transition"));
    assert!(seen.contains(&workflow));
    assert!(
        !seen.contains(other["workflow"].as_str().unwrap()),
        "filtered by workflow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_resumes_after_the_last_event_it_received() {
    let srv = TestServer::start().await;
    let open = |last: Option<String>| {
        let mut rb = srv.client.get(format!("{}/v1/events", srv.url));
        if let Some(id) = last {
            rb = rb.header("Last-Event-ID", id);
        }
        rb.send()
    };
    let mut res = open(None).await.unwrap();
    let mut buf = String::new();
    srv.submit(json!([task("a", &[]), task("b", &[]), task("c", &[])]))
        .await;
    let first = read_sse(&mut res, &mut buf, 3).await;
    assert!(first.iter().all(|e| e.event == "transition"), "{first:?}");
    let seqs: Vec<u64> = first
        .iter()
        .map(|e| {
            e.id.as_deref()
                .unwrap()
                .rsplit('-')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    drop(res);

    // Missed while disconnected: the third submission and two more.
    srv.submit(json!([task("d", &[]), task("e", &[])])).await;
    let mut res = open(first[1].id.clone()).await.unwrap();
    let mut buf = String::new();
    let resumed = read_sse(&mut res, &mut buf, 3).await;
    assert_eq!(resumed[0], first[2], "the first missed event comes first");
    let keys: Vec<String> = resumed
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(
        keys[1..].contains(&"d".to_owned()) && keys[1..].contains(&"e".to_owned()),
        "{keys:?}"
    );
    assert!(
        resumed.iter().all(|e| e.event == "transition"),
        "no gap: {resumed:?}"
    );
    drop(res);

    // Another process's position cannot be resumed: the stream says so first.
    let foreign = format!("{}-3", uuid::Uuid::new_v4().simple());
    let mut res = open(Some(foreign)).await.unwrap();
    let mut buf = String::new();
    let said = read_sse(&mut res, &mut buf, 1).await;
    assert_eq!(said[0].event, "lagged");
    assert_eq!(said[0].data, "0");
    drop(res);

    // An id that is not one of ours is ignored: live events only, no gap reported.
    let mut res = open(Some("not-an-id".into())).await.unwrap();
    let mut buf = String::new();
    srv.submit(json!([task("f", &[])])).await;
    let live = read_sse(&mut res, &mut buf, 1).await;
    assert_eq!(live[0].event, "transition", "{live:?}");
    assert!(live[0].data.contains("\"key\":\"f\""), "{live:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_listed_newest_first_and_their_graph_carries_every_task_and_edge() {
    let srv = TestServer::start().await;
    let first = srv
        .submit(json!([
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["a", "b"])
        ]))
        .await;
    let second = srv.submit(json!([task("x", &[])])).await;
    let (status, list) = srv.get("/v1/workflows?limit=1").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["workflows"][0]["id"], second["workflow"]);
    assert_eq!(list["workflows"][0]["counts"]["pending"], 1);
    let next = list["next"].as_str().unwrap();
    let (_, older) = srv
        .get(&format!("/v1/workflows?limit=1&before={next}"))
        .await;
    assert_eq!(older["workflows"][0]["id"], first["workflow"]);

    let ids = ids(&first);
    let (status, graph) = srv
        .get(&format!(
            "/v1/workflows/{}/graph",
            first["workflow"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{graph}");
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 3);
    let mut edges: Vec<(String, String)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["dependency"].as_str().unwrap().to_owned(),
                e["dependent"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    edges.sort();
    let mut expected = vec![
        (ids["a"].clone(), ids["b"].clone()),
        (ids["a"].clone(), ids["c"].clone()),
        (ids["b"].clone(), ids["c"].clone()),
    ];
    expected.sort();
    assert_eq!(edges, expected);
    let (status, _) = srv
        .get(&format!("/v1/workflows/{}/graph", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_event_streams_and_waiting_claims_instead_of_waiting_for_them() {
    let srv = TestServer::start().await;
    let agent = srv.register("idle", &["work"], 1).await;
    let mut stream = srv.events().await;
    let waiting = srv.claim_waiting(&agent, 60_000);
    srv.wait_metric("baton_claims_waiting", |n| n == 1.0).await;
    srv.wait_metric("baton_event_subscribers", |n| n >= 1.0)
        .await;
    tokio::time::timeout(std::time::Duration::from_secs(10), srv.stop())
        .await
        .expect("the server stops without waiting for the stream or the claim");
    let claim = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    if let Ok(res) = claim {
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the event stream ended");
}

/// A task's input is in its view once: in `spec`. The `submitted` history entry's data is the
/// submission without its spec, in the view and in `/history`; and `baton show`'s replay of
/// the history still works from the view (the CLI puts the spec back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_view_carries_its_input_once() {
    let srv = TestServer::start().await;
    let marker = format!("marker-{}", uuid::Uuid::now_v7());
    let records: Vec<Value> = (0..500).map(|i| json!({"i": i, "name": "x"})).collect();
    let input = json!({"marker": marker, "records": records});
    let mut big = task("big", &[]);
    big["input"] = input.clone();
    let wf = srv.submit(json!([big])).await;
    let id = ids(&wf)["big"].clone();
    let agent = srv.register("worker", &["work"], 1).await;
    let claimed = srv.claim(&agent, 1).await;
    assert_eq!(claimed[0]["input"], input, "the agent gets the whole input");
    srv.finish(&claimed[0], &agent).await;

    let view = srv.task(&id).await;
    assert_eq!(view["spec"]["input"], input);
    assert_eq!(view["spec"]["key"], "big");
    let text = view.to_string();
    assert_eq!(text.matches(&marker).count(), 1, "{text}");
    let submitted = &view["history"][0];
    assert_eq!(submitted["event"], "submitted");
    assert_eq!(submitted["seq"], 1);
    let data = submitted["data"].as_object().unwrap();
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["completed", "event", "seed", "task", "workflow"]);
    assert_eq!(data["task"], json!(id));
    assert_eq!(data["workflow"], wf["workflow"]);
    assert_eq!(view["history"].as_array().unwrap().len(), 4);
    // The client's view type reads it.
    let typed: baton_api::TaskView = serde_json::from_value(view.clone()).unwrap();
    assert_eq!(typed.spec.input, input);

    let (status, page) = srv.get(&format!("/v1/tasks/{id}/history")).await;
    assert_eq!(status, StatusCode::OK);
    let page = page.as_array().unwrap();
    assert_eq!(page.len(), 4);
    // The same entries as the view's, in the same shape.
    assert_eq!(page[..], view["history"].as_array().unwrap()[..]);
    assert_eq!(page[0]["data"]["event"], "submitted");
    assert_eq!(page[0]["data"]["task"], json!(id));
    assert!(page[0]["data"].get("spec").is_none(), "{:?}", page[0]);
    // A 64-bit seed, as a string: JavaScript's numbers would round it.
    let seed = page[0]["data"]["seed"]
        .as_str()
        .expect("the seed is a string");
    assert!(seed.parse::<u64>().is_ok(), "{seed}");
    assert_eq!(page[0]["actor"]["actor"], "engine");
    assert!(!Value::Array(page.clone()).to_string().contains(&marker));
    let (_, rest) = srv.get(&format!("/v1/tasks/{id}/history?after=2")).await;
    assert_eq!(rest.as_array().unwrap()[..], page[2..]);
    let (status, _) = srv
        .get(&format!("/v1/tasks/{}/history", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_registering_an_agent_keeps_its_concurrency_unless_it_gives_one() {
    let srv = TestServer::start().await;
    let id = srv.register("keeper", &["work"], 5).await;
    let again = json!({"id": id, "name": "keeper", "capabilities": ["work", "more"]});
    let (s, view) = srv.post("/v1/agents", again).await;
    assert_eq!(s, StatusCode::CREATED, "{view}");
    assert_eq!(
        (view["concurrency"].as_u64(), view["id"].as_str()),
        (Some(5), Some(id.as_str()))
    );
    let (_, view) = srv
        .post(
            "/v1/agents",
            json!({"id": id, "name": "keeper", "concurrency": 2}),
        )
        .await;
    assert_eq!(view["concurrency"], 2, "{view}");
    let (_, fresh) = srv.post("/v1/agents", json!({"name": "fresh"})).await;
    assert_eq!(fresh["concurrency"], 1, "{fresh}");
}

/// `start: true` hands the task out executing: its history says `agent_assigned` then
/// `execution_started`, by the agent, at one moment; it completes without a `started` report,
/// and a `started` report sent anyway is a duplicate, answered as the task stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_with_start_hands_out_executing_tasks() {
    let srv = TestServer::start().await;
    let wf = srv
        .submit(json!([task("a", &[]), task("b", &[]), task("c", &["a"])]))
        .await;
    let agent = srv.register("worker", &["work"], 4).await;
    let (status, body) = srv
        .post(
            &format!("/v1/agents/{agent}/claim"),
            json!({"max": 4, "start": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let claimed = body["tasks"].as_array().unwrap().clone();
    assert_eq!(claimed.len(), 2, "a and b are ready, c waits for a");
    for t in &claimed {
        assert_eq!(t["started"], true, "{t}");
        let view = srv.task(t["task"].as_str().unwrap()).await;
        assert_eq!(view["state"], "executing", "{view}");
        assert_eq!(view["version"], t["version"]);
        let history: Vec<&Value> = view["history"].as_array().unwrap().iter().collect();
        let events: Vec<&str> = history
            .iter()
            .map(|h| h["event"].as_str().unwrap())
            .collect();
        assert_eq!(events, ["submitted", "agent_assigned", "execution_started"]);
        assert_eq!(history[1]["at"], history[2]["at"]);
        assert_eq!(history[2]["actor"]["agent"], agent.as_str(), "{view}");
        assert!(view["deadlines"]["start_to_close"].is_u64(), "{view}");
        assert_eq!(history[2]["data"]["by_claim"], true, "{view}");
        // Its first heartbeat is due within the start timeout (5 s), not the heartbeat's (10 s):
        // a claim answer lost on its way is noticed as soon as an unstarted task's would be.
        let started_at = history[2]["at"].as_u64().unwrap();
        assert_eq!(view["deadlines"]["heartbeat"], started_at + 5_000, "{view}");
    }
    let (status, again) = srv.report(&claimed[0], &agent, "started", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["state"], "executing");
    assert_eq!(again["version"], claimed[0]["version"], "nothing written");
    for t in &claimed {
        let (s, b) = srv
            .report(t, &agent, "succeeded", json!({"result": {"ok": true}}))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let next = srv.claim_one(&agent).await;
    assert_eq!(next["key"], "c");
    assert_eq!(next["started"], false, "claimed without start");
    let wf_id = wf["workflow"].as_str().unwrap();
    let (_, counts) = srv.get(&format!("/v1/counts?workflow={wf_id}")).await;
    assert_eq!(
        (counts["completed"].as_u64(), counts["assigned"].as_u64()),
        (Some(2), Some(1))
    );

    // Without a heartbeat deadline nothing would take the task back if this answer were lost:
    // it comes back assigned, under its start deadline.
    let mut silent = task("silent", &[]);
    silent["timeouts"]["heartbeat_ms"] = Value::Null;
    srv.submit(json!([silent])).await;
    let (status, body) = srv
        .post(
            &format!("/v1/agents/{agent}/claim"),
            json!({"max": 1, "start": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let t = &body["tasks"][0];
    assert_eq!(
        (t["key"].as_str(), t["started"].as_bool()),
        (Some("silent"), Some(false))
    );
    assert_eq!(srv.state_of(t["task"].as_str().unwrap()).await, "assigned");
}

/// `POST /v1/reports` applies each report as its own request would, in the order sent for one
/// task, and answers each on its own: a refused report changes nothing of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_reports_is_answered_report_by_report() {
    let srv = TestServer::start().await;
    srv.submit(json!([task("a", &[]), task("b", &[]), task("c", &[])]))
        .await;
    let agent = srv.register("worker", &["work"], 4).await;
    let claimed = srv.claim(&agent, 3).await;
    let (a, b, c) = (&claimed[0], &claimed[1], &claimed[2]);
    srv.report(b, &agent, "started", json!({})).await;
    let report = |t: &Value, kind: &str, token: &Value| json!({"report": kind, "task": t["task"], "agent": agent, "token": token});
    let mut succeeded = report(a, "succeeded", &a["token"]);
    succeeded["result"] = json!({"n": 1});
    let mut beat = report(b, "heartbeat", &b["token"]);
    beat["progress"] = json!({"pct": 50});
    let (status, body) = srv
        .post(
            "/v1/reports",
            json!({"reports": [
                report(a, "started", &a["token"]),
                beat,
                report(c, "started", &json!(99)),
                succeeded,
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answers = body["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[0]["task"], a["task"]);
    assert_eq!(
        (
            answers[0]["status"].as_u64(),
            answers[0]["answer"]["state"].as_str()
        ),
        (Some(200), Some("executing"))
    );
    assert_eq!(answers[1]["answer"]["state"], "executing");
    assert_eq!(answers[2]["status"], 409, "{}", answers[2]);
    assert_eq!(answers[2]["problem"]["code"], "stale_lease");
    assert_eq!(answers[2]["problem"]["field"], "reports[2]");
    assert!(answers[2].get("answer").is_none());
    assert_eq!(answers[3]["answer"]["state"], "completed");

    let view = srv.task(a["task"].as_str().unwrap()).await;
    let events: Vec<&str> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "submitted",
            "agent_assigned",
            "execution_started",
            "execution_succeeded"
        ]
    );
    assert_eq!(view["result"], json!({"n": 1}));
    let view = srv.task(b["task"].as_str().unwrap()).await;
    assert_eq!(view["detail"]["progress"], json!({"pct": 50}), "{view}");
    assert_eq!(srv.state_of(c["task"].as_str().unwrap()).await, "assigned");

    // Each agent of a batch is looked up once; reports from one nobody registered are each
    // refused, and the others applied.
    let stranger = json!("00000000-0000-7000-8000-000000000001");
    let mut from_stranger = report(c, "started", &c["token"]);
    from_stranger["agent"] = stranger.clone();
    let mut beat_from_stranger = report(b, "heartbeat", &b["token"]);
    beat_from_stranger["agent"] = stranger;
    let (status, body) = srv
        .post(
            "/v1/reports",
            json!({"reports": [from_stranger, report(c, "started", &c["token"]), beat_from_stranger]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let codes: Vec<(&Value, &Value)> = body["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (&a["status"], &a["problem"]["field"]))
        .collect();
    assert_eq!(
        codes,
        [
            (&json!(404), &json!("reports[0]")),
            (&json!(200), &Value::Null),
            (&json!(404), &json!("reports[2]"))
        ]
    );
    assert_eq!(srv.state_of(c["task"].as_str().unwrap()).await, "executing");
    let before = srv.task(c["task"].as_str().unwrap()).await["history"].clone();

    // Not a batch: refused whole, naming the field, and nothing applied.
    let (status, body) = srv
        .post(
            "/v1/reports",
            json!({"reports": [report(c, "heartbeat", &c["token"]), {"report": "finished"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["field"].as_str().unwrap().starts_with("reports[1]"),
        "{body}"
    );
    assert_eq!(
        srv.task(c["task"].as_str().unwrap()).await["history"],
        before
    );
    let (status, body) = srv.post("/v1/reports", json!({"reports": []})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "reports");
}
