//! The client's artifact helpers against a real engine and server: uploads from memory and
//! from a file (streamed), downloads checked against their address into memory or a file, and
//! the server's refusals as typed errors.

use std::sync::Arc;

use baton_client::{artifact_ref, Client};
use baton_engine::{Engine, EngineConfig, SystemClock};
use baton_server::{AppState, Tokens};
use baton_store::AnyStore;

/// A server on a fresh SQLite store whose artifacts are at most `limit` bytes.
async fn server(dir: &std::path::Path, limit: u64) -> Client {
    let store = AnyStore::open(&dir.join("baton.db").display().to_string())
        .await
        .expect("the store opens");
    let config = EngineConfig {
        artifact_bytes_max: limit,
        ..EngineConfig::default()
    };
    let engine = Engine::new(store, Arc::new(SystemClock), config);
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
async fn artifacts_go_up_from_memory_or_a_file_and_come_back_checked() {
    let dir = tempfile::tempdir().unwrap();
    let client = server(dir.path(), 8 * 1024 * 1024).await;

    let stored = client
        .put_artifact(b"hello".to_vec(), Some("text/plain"))
        .await
        .unwrap();
    assert!(stored.created);
    assert_eq!(
        stored.artifact,
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    let down = client.artifact(&stored.artifact).await.unwrap();
    assert_eq!(down.content_type.as_deref(), Some("text/plain"));
    assert_eq!(down.size, Some(5));
    assert_eq!(down.bytes().await.unwrap(), b"hello");

    // A file of several chunks, streamed up and saved down.
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 3).map(|i| (i % 253) as u8).collect();
    let src = dir.path().join("in.bin");
    std::fs::write(&src, &data).unwrap();
    let stored = client.put_artifact_file(&src, None).await.unwrap();
    assert_eq!(stored.size, data.len() as u64);
    let again = client.put_artifact(data.clone(), None).await.unwrap();
    assert_eq!(again.artifact, stored.artifact);
    assert!(!again.created);
    let out = dir.path().join("out.bin");
    let n = client
        .artifact(&stored.artifact)
        .await
        .unwrap()
        .save(&out)
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert!(std::fs::read(&out).unwrap() == data);

    // Referred to in a submission with the helper's value.
    let created = client
        .submit_workflow_json(&serde_json::json!({
            "tasks": [{"key": "a", "input": {"doc": artifact_ref(&stored.artifact)}}]
        }))
        .await
        .unwrap();
    assert!(created.created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_back_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let client = server(dir.path(), 1024).await;
    let src = dir.path().join("big.bin");
    std::fs::write(&src, vec![7u8; 1025]).unwrap();
    let e = client.put_artifact_file(&src, None).await.unwrap_err();
    assert_eq!(e.code(), Some("artifact_too_large"), "{e}");
    let e = client
        .put_artifact(vec![7u8; 1025], None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("artifact_too_large"), "{e}");

    let missing = format!("sha256:{}", "a".repeat(64));
    let e = client.artifact(&missing).await.err().unwrap();
    assert_eq!(e.code(), Some("artifact_not_found"), "{e}");
    let e = client.artifact("nope").await.err().unwrap();
    assert_eq!(e.code(), Some("artifact_ref_invalid"), "{e}");

    let e = client
        .submit_workflow_json(&serde_json::json!({
            "tasks": [{"key": "a", "input": artifact_ref(&missing)}]
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("artifact_not_found"), "{e}");
    assert_eq!(
        e.problem().unwrap().field.as_deref(),
        Some("tasks[0].input")
    );
}
