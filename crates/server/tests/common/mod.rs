//! A real server on a free port, with a real store and a manual clock, driven by a real HTTP
//! client.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::Timestamp;
use baton_engine::{Clock, Engine, EngineConfig, ManualClock};
use baton_server::{AppState, Tokens};
use baton_store::AnyStore;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub mod require;

pub const T0: Timestamp = Timestamp(1_700_000_000_000);

pub struct TestServer {
    pub url: String,
    pub engine: Engine<AnyStore>,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub token: Option<String>,
    pub store_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

/// Where the tests' store lives: SQLite in a temporary directory, or PostgreSQL in a schema of
/// its own when `BATON_E2E_STORE=postgres` (then required: no server, the test fails).
pub async fn store_url() -> (String, Option<tempfile::TempDir>) {
    if std::env::var("BATON_E2E_STORE").as_deref() == Ok("postgres") {
        let base = require::postgres_url();
        let schema = format!("baton_e2e_{}", uuid::Uuid::now_v7().simple());
        let sep = if base.contains('?') { '&' } else { '?' };
        (format!("{base}{sep}schema={schema}"), None)
    } else {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("baton.db").display().to_string();
        (url, Some(dir))
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        let (url, dir) = store_url().await;
        TestServer::start_with(url, dir, Tokens::none(), Arc::new(ManualClock::new(T0))).await
    }

    pub async fn start_with(
        store_url: String,
        dir: Option<tempfile::TempDir>,
        tokens: Tokens,
        clock: Arc<ManualClock>,
    ) -> TestServer {
        let config = EngineConfig {
            agent_ttl_ms: 60_000,
            ..EngineConfig::default()
        };
        TestServer::start_with_config(store_url, dir, tokens, clock, config).await
    }

    pub async fn start_with_config(
        store_url: String,
        dir: Option<tempfile::TempDir>,
        tokens: Tokens,
        clock: Arc<ManualClock>,
        config: EngineConfig,
    ) -> TestServer {
        let store = AnyStore::open(&store_url).await.expect("store opens");
        let engine = Engine::new(store, Arc::clone(&clock) as Arc<dyn Clock>, config);
        engine.start();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = AppState::new(engine.clone(), tokens);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            baton_server::serve(listener, state, None, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            url,
            engine,
            clock,
            client: {
                baton_server::listen::install_crypto_provider();
                reqwest::Client::new()
            },
            token: None,
            store_url,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> (String, Option<tempfile::TempDir>, Arc<ManualClock>) {
        self.shutdown().await;
        (
            self.store_url.clone(),
            self._dir.take(),
            Arc::clone(&self.clock),
        )
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.engine.shutdown();
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self
            .auth(self.client.post(format!("{}{path}", self.url)).json(&body))
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self
            .auth(self.client.get(format!("{}{path}", self.url)))
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn counts(&self) -> Value {
        self.get("/v1/counts").await.1
    }

    pub async fn task(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/tasks/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn state_of(&self, id: &str) -> String {
        self.task(id).await["state"].as_str().unwrap().to_owned()
    }

    /// Polls until the task reaches `state`, for at most 10 s.
    pub async fn wait_state(&self, id: &str, state: &str) -> Value {
        let start = Instant::now();
        loop {
            let task = self.task(id).await;
            if task["state"] == state {
                return task;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "task {id} never reached {state}: {task:#}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Opens the transition event stream (`GET /v1/events`).
    pub async fn events(&self) -> reqwest::Response {
        self.client
            .get(format!("{}/v1/events", self.url))
            .send()
            .await
            .unwrap()
    }

    /// Starts a claim of one task for `agent` that waits up to `wait_ms` for work.
    pub fn claim_waiting(
        &self,
        agent: &str,
        wait_ms: u64,
    ) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
        let request = self
            .client
            .post(format!("{}/v1/agents/{agent}/claim", self.url))
            .json(&json!({"max": 1, "wait_ms": wait_ms}));
        tokio::spawn(request.send())
    }

    /// Polls `/metrics` until the unlabelled sample `name` satisfies `ok`, for at most 10 s.
    pub async fn wait_metric(&self, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let start = Instant::now();
        loop {
            let text = self
                .client
                .get(format!("{}/metrics", self.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok());
            if let Some(v) = value.filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name} stayed at {value:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn submit(&self, tasks: Value) -> Value {
        let (status, body) = self
            .post("/v1/workflows", json!({"name": "e2e", "tasks": tasks}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    pub async fn register(&self, name: &str, caps: &[&str], concurrency: u32) -> String {
        let (status, body) = self
            .post(
                "/v1/agents",
                json!({"name": name, "capabilities": caps, "concurrency": concurrency}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn claim(&self, agent: &str, max: usize) -> Vec<Value> {
        let (status, body) = self
            .post(&format!("/v1/agents/{agent}/claim"), json!({"max": max}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["tasks"].as_array().unwrap().clone()
    }

    pub async fn report(
        &self,
        claimed: &Value,
        agent: &str,
        what: &str,
        extra: Value,
    ) -> (StatusCode, Value) {
        let mut body = json!({"agent": agent, "token": claimed["token"]});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let task = claimed["task"].as_str().unwrap();
        self.post(&format!("/v1/tasks/{task}/{what}"), body).await
    }

    /// Claims up to `max` tasks for `agent`, waiting up to 10 s for one to be released.
    pub async fn claim_within(&self, agent: &str, max: usize) -> Vec<Value> {
        let (status, body) = self
            .post(
                &format!("/v1/agents/{agent}/claim"),
                json!({"max": max, "wait_ms": 10_000}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["tasks"].as_array().unwrap().clone()
    }

    /// Claims exactly one task for `agent`, waiting for it to be released.
    pub async fn claim_one(&self, agent: &str) -> Value {
        let tasks = self.claim_within(agent, 1).await;
        assert_eq!(tasks.len(), 1, "one task is released: {tasks:?}");
        tasks[0].clone()
    }

    /// Starts a claimed task and completes it with `result`.
    pub async fn complete(&self, claimed: &Value, agent: &str, result: Value) {
        let (s, b) = self.report(claimed, agent, "started", json!({})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = self
            .report(claimed, agent, "succeeded", json!({ "result": result }))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    /// `baton check` of the server's store finds nothing wrong.
    pub async fn assert_store_checks_clean(&self) {
        let report = baton_engine::check::check_store(self.engine.store(), |_| {})
            .await
            .unwrap();
        assert!(report.is_clean(), "{:?}", report.violations);
    }

    /// Starts and completes a claimed task.
    pub async fn finish(&self, claimed: &Value, agent: &str) {
        let (s, b) = self.report(claimed, agent, "started", json!({})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = self
            .report(
                claimed,
                agent,
                "succeeded",
                json!({"result": {"by": agent}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.engine.shutdown();
    }
}

pub fn task(key: &str, deps: &[&str]) -> Value {
    json!({"key": key, "depends_on": deps, "capabilities": ["work"],
           "timeouts": {"start_ms": 5000, "start_to_close_ms": 60000, "heartbeat_ms": 10000},
           "retry": {"max_attempts": 3, "initial_backoff_ms": 1000, "backoff_multiplier": 2.0,
                     "max_backoff_ms": 10000, "jitter": 0.0}})
}

/// A response kept whole: status, `Content-Type` and raw body.
pub struct RawResponse {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON, or `Null` if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl TestServer {
    /// Sends exactly what it is given: method, bearer token (or none; `self.token` is not
    /// used), content type (or none) and raw body bytes (or none).
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> RawResponse {
        let mut rb = self.client.request(method, format!("{}{path}", self.url));
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            rb = rb.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let res = rb.send().await.unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = res.bytes().await.unwrap().to_vec();
        RawResponse {
            status,
            content_type,
            body,
        }
    }

    /// `raw` with a JSON body, sent as `application/json`.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> RawResponse {
        self.raw(
            method,
            path,
            bearer,
            Some("application/json"),
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }
}

/// One Server-Sent Event: its type, id and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sse {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Reads `n` events (not keep-alive comments) from an event stream, for at most 10 s.
pub async fn read_sse(res: &mut reqwest::Response, buf: &mut String, n: usize) -> Vec<Sse> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut sse = Sse {
                event: "message".into(),
                id: None,
                data: String::new(),
            };
            let mut any = false;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    sse.event = v.trim().to_owned();
                    any = true;
                } else if let Some(v) = line.strip_prefix("id:") {
                    sse.id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    sse.data.push_str(v.trim_start());
                    any = true;
                }
            }
            if any {
                out.push(sse);
            }
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, res.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the stream ended after {out:?}: {other:?}"),
        }
    }
    out
}
