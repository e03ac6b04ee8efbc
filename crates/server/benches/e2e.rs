//! End-to-end throughput over real HTTP: a server with the embedded SQLite store (every write
//! durable), no-op agents claiming in batches, each task started and completed. Reports tasks/s
//! from submission to the last completion, and claim-to-complete latency.
//!
//! `cargo bench -p baton-server --bench e2e` (full size); under `cargo test` it runs small.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_engine::{Engine, EngineConfig, SystemClock};
use baton_server::{AppState, Tokens};
use baton_store::{AnyStore, Store};
use serde_json::{json, Value};

const AGENTS: usize = 8;
const CLAIM_BATCH: usize = 32;

async fn post(client: &reqwest::Client, url: &str, body: Value) -> Value {
    let res = client.post(url).json(&body).send().await.expect("request");
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let tasks: usize = if full { 20_000 } else { 400 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::open(&dir.path().join("bench.db").display().to_string())
            .await
            .unwrap();
        let engine = Engine::new(store, Arc::new(SystemClock), EngineConfig::default());
        engine.start();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(engine.clone(), Tokens::none());
        tokio::spawn(baton_server::serve(listener, state, None, std::future::pending()));
        baton_server::listen::install_crypto_provider();
        let client = reqwest::Client::new();

        let started = Instant::now();
        for chunk in (0..tasks).collect::<Vec<_>>().chunks(1_000) {
            let specs: Vec<Value> = chunk
                .iter()
                .map(|i| json!({"key": format!("t{i}"), "capabilities": ["noop"]}))
                .collect();
            post(&client, &format!("{base}/v1/workflows"), json!({"tasks": specs})).await;
        }
        let submitted = started.elapsed();

        let mut agents = Vec::new();
        for n in 0..AGENTS {
            let client = client.clone();
            let base = base.clone();
            agents.push(tokio::spawn(async move {
                let agent = post(
                    &client,
                    &format!("{base}/v1/agents"),
                    json!({"name": format!("noop-{n}"), "capabilities": ["noop"], "concurrency": CLAIM_BATCH}),
                )
                .await["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let mut latencies = Vec::new();
                loop {
                    let claimed = post(
                        &client,
                        &format!("{base}/v1/agents/{agent}/claim"),
                        json!({"max": CLAIM_BATCH, "wait_ms": 200}),
                    )
                    .await;
                    let batch = claimed["tasks"].as_array().cloned().unwrap_or_default();
                    if batch.is_empty() {
                        return latencies;
                    }
                    let at = Instant::now();
                    let runs = batch.into_iter().map(|t| {
                        let client = client.clone();
                        let base = base.clone();
                        let agent = agent.clone();
                        async move {
                            let id = t["task"].as_str().unwrap();
                            let lease = json!({"agent": agent, "token": t["token"]});
                            post(&client, &format!("{base}/v1/tasks/{id}/started"), lease.clone()).await;
                            let mut done = lease;
                            done["result"] = json!({"ok": true});
                            post(&client, &format!("{base}/v1/tasks/{id}/succeeded"), done).await;
                            at.elapsed()
                        }
                    });
                    latencies.extend(futures_util::future::join_all(runs).await);
                }
            }));
        }
        let mut latencies: Vec<Duration> = Vec::new();
        for a in agents {
            latencies.extend(a.await.unwrap());
        }
        let elapsed = started.elapsed();
        let counts = client.get(format!("{base}/v1/counts")).send().await.unwrap().json::<Value>().await.unwrap();
        assert_eq!(counts["completed"], tasks as u64, "{counts}");
        latencies.sort();
        let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
        let stats = engine.store().stats();
        println!(
            "e2e sqlite: {tasks} tasks, {AGENTS} agents claiming {CLAIM_BATCH} at a time: \
             {:.0} tasks/s end to end (submit {:?}, total {:?}); claim-to-complete p50 {:?} \
             p99 {:?} max {:?}; {:.1} writes/commit",
            tasks as f64 / elapsed.as_secs_f64(),
            submitted,
            elapsed,
            pct(50),
            pct(99),
            latencies.last().unwrap(),
            stats.writes as f64 / stats.commits.max(1) as f64,
        );
        engine.shutdown();
    });
}
