//! Triggers and schedules through the client against a real engine and server: a trigger is
//! registered, listed, fired (its input filling the template's placeholders; the same key
//! again answering the first workflow) and deleted; names holding `/` reach their resource.

use std::sync::Arc;

use baton_client::Client;
use baton_engine::{Engine, EngineConfig, SystemClock};
use baton_server::{AppState, Tokens};
use baton_store::AnyStore;
use serde_json::json;

async fn server(dir: &std::path::Path) -> Client {
    let store = AnyStore::open(&dir.join("baton.db").display().to_string())
        .await
        .expect("the store opens");
    let engine = Engine::new(store, Arc::new(SystemClock), EngineConfig::default());
    engine.start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(baton_server::serve(
        listener,
        AppState::new(engine, Tokens::none()),
        None,
        std::future::pending(),
    ));
    Client::new(&url).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_is_registered_fired_once_per_key_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let client = server(dir.path()).await;
    let template = json!({
        "name": "on-push",
        "tasks": [{"key": "build", "input": {"repo": {"$input": "/repo"}, "all": {"$input": ""}}}]
    });

    let put = client.put_trigger("ci/push", &template).await.unwrap();
    assert!(put.created);
    assert_eq!(put.trigger.name, "ci/push");
    assert_eq!(put.trigger.workflow.tasks.len(), 1);
    let again = client.put_trigger("ci/push", &template).await.unwrap();
    assert!(!again.created, "a second put replaces");
    let listed = client.triggers().await.unwrap();
    assert_eq!(
        listed.iter().map(|t| &t.name).collect::<Vec<_>>(),
        ["ci/push"]
    );
    assert_eq!(
        client.trigger("ci/push").await.unwrap().workflow.name,
        "on-push"
    );

    let input = json!({"repo": "baton"});
    let fired = client
        .fire_trigger("ci/push", &input, Some("push-1"))
        .await
        .unwrap();
    assert!(fired.created);
    let build = client.task(fired.tasks["build"]).await.unwrap();
    assert_eq!(
        build.spec.input,
        json!({"repo": "baton", "all": {"repo": "baton"}})
    );
    let again = client
        .fire_trigger("ci/push", &input, Some("push-1"))
        .await
        .unwrap();
    assert_eq!(again.workflow, fired.workflow);
    assert!(!again.created);
    let mismatch = client
        .fire_trigger("ci/push", &json!({"repo": "other"}), Some("push-1"))
        .await
        .unwrap_err();
    assert_eq!(mismatch.code(), Some("idempotency_mismatch"), "{mismatch}");
    let other = client.fire_trigger("ci/push", &input, None).await.unwrap();
    assert_ne!(other.workflow, fired.workflow);

    let missing = client
        .fire_trigger("ci/push", &json!({"branch": "main"}), None)
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(422), "{missing}");
    assert_eq!(missing.problem().unwrap().field.as_deref(), Some("body"));

    let bad = client
        .put_trigger(
            "bad",
            &json!({"tasks": [{"key": "a", "input": {"$input": "repo"}}]}),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(422), "{bad}");
    assert_eq!(
        bad.problem().unwrap().field.as_deref(),
        Some("workflow.tasks[0].input.$input")
    );
    assert!(client.trigger("bad").await.is_err());

    client.delete_trigger("ci/push").await.unwrap();
    let gone = client.trigger("ci/push").await.unwrap_err();
    assert_eq!(gone.status(), Some(404), "{gone}");
    let unknown = client
        .fire_trigger("ci/push", &input, None)
        .await
        .unwrap_err();
    assert_eq!(unknown.status(), Some(404), "{unknown}");
    assert_eq!(
        client.delete_trigger("ci/push").await.unwrap_err().status(),
        Some(404)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_named_with_a_slash_is_shown_paused_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let client = server(dir.path()).await;
    let spec = json!({
        "name": "nightly/report",
        "cron": "0 0 3 * * *",
        "workflow": {"tasks": [{"key": "report"}]}
    });
    let created = client.create_schedule(&spec).await.unwrap();
    assert_eq!(created.name, "nightly/report");
    assert!(!created.next.is_empty());
    assert_eq!(
        client.schedule("nightly/report").await.unwrap().spec.cron,
        "0 0 3 * * *"
    );
    let paused = client.pause_schedule("nightly/report", true).await.unwrap();
    assert!(paused.paused);
    assert!(paused.next.is_empty());
    let resumed = client
        .pause_schedule("nightly/report", false)
        .await
        .unwrap();
    assert!(!resumed.paused);
    assert_eq!(client.schedules().await.unwrap().len(), 1);
    client.delete_schedule("nightly/report").await.unwrap();
    assert_eq!(
        client
            .schedule("nightly/report")
            .await
            .unwrap_err()
            .status(),
        Some(404)
    );
}

/// A workflow's signals, graph and history read through the client, typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflows_signals_graph_and_history_are_read_typed() {
    let dir = tempfile::tempdir().unwrap();
    let client = server(dir.path()).await;
    let created = client
        .submit_workflow_json(&json!({"tasks": [
            {"key": "approve", "wait_for": {"signal": "go"}},
            {"key": "ship", "depends_on": ["approve"]}
        ]}))
        .await
        .unwrap();
    let wf = created.workflow;
    for i in 0..3 {
        client
            .signal(wf, "go", &json!({"n": i}), Some(&format!("go-{i}")))
            .await
            .unwrap();
    }
    let first = client.signals(wf, None, Some(2)).await.unwrap();
    assert_eq!(first.signals.len(), 2);
    let rest = client.signals(wf, first.next, None).await.unwrap();
    assert_eq!(rest.signals.len(), 1);
    assert_eq!(rest.next, None, "the last page has no next");

    let graph = client.workflow_graph(wf).await.unwrap();
    assert_eq!(graph.nodes.len(), 2);
    assert_eq!(graph.edges.len(), 1);

    let history = client.workflow_history(wf, None, Some(1)).await.unwrap();
    assert_eq!(history.tasks.len(), 1);
    let more = client
        .workflow_history(wf, history.next, None)
        .await
        .unwrap();
    assert_eq!(more.tasks.len(), 1);
    assert_ne!(more.tasks[0].task, history.tasks[0].task);
}
