//! `Runner` against a real engine and HTTP server in this process (SQLite in a temporary
//! directory): the concurrency bound, progress and a task cancelled under a running handler,
//! a graceful stop that lets one handler finish and releases the other, and an agent
//! registered again (through connection errors) when the server it talks to has forgotten it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_client::wire::TaskView;
use baton_client::{Cancel, Client, Observer, Runner, RunnerConfig, RunnerEvent, TaskContext};
use baton_core::{Capability, StateKind, TaskSpec};
use baton_engine::{Engine, EngineConfig, SystemClock};
use baton_server::{AppState, Tokens};
use baton_store::AnyStore;
use serde_json::json;
use uuid::Uuid;

/// Longest a scenario waits for something to happen.
const WAIT_MAX: Duration = Duration::from_secs(30);

/// An engine and its HTTP server on a store in `dir`.
struct Node {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    engine: Engine<AnyStore>,
}

impl Node {
    async fn start(dir: &std::path::Path, addr: &str) -> Node {
        let store = AnyStore::open(&dir.join("baton.db").display().to_string())
            .await
            .expect("the store opens");
        let engine = Engine::new(store, Arc::new(SystemClock), EngineConfig::default());
        engine.start();
        let listener = tokio::net::TcpListener::bind(addr).await.expect("a port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(baton_server::serve(
            listener,
            AppState::new(engine.clone(), Tokens::none()),
            None,
            async {
                let _ = stopped.await;
            },
        ));
        Node {
            url,
            stop,
            server,
            engine,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.url).unwrap()
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(WAIT_MAX, self.server).await;
        self.engine.shutdown();
    }
}

fn config(name: &str, concurrency: u32) -> RunnerConfig {
    let mut c = RunnerConfig::new(name, vec![Capability("work".into())], concurrency);
    c.claim_wait = Duration::from_millis(200);
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(100);
    c
}

fn spec(key: &str, input: serde_json::Value) -> TaskSpec {
    let mut spec = TaskSpec::new(key);
    spec.capabilities = [Capability("work".into())].into();
    spec.input = input;
    spec
}

async fn submit(client: &Client, tasks: &[TaskSpec]) -> Vec<Uuid> {
    let created = client.submit_workflow("test", None, tasks).await.unwrap();
    tasks.iter().map(|t| created.tasks[&t.key.0]).collect()
}

/// Waits until the task is in one of `states`.
async fn task_in(client: &Client, id: Uuid, states: &[StateKind]) -> TaskView {
    let give_up = tokio::time::Instant::now() + WAIT_MAX;
    loop {
        let view = client.task(id).await.unwrap();
        if states.contains(&view.state) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "task {id} is {:?}, not in {states:?}",
            view.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the runner told its observer, in short.
#[derive(Default)]
struct Seen {
    events: Mutex<Vec<String>>,
    registered: AtomicU64,
    retried: AtomicU64,
}

impl Seen {
    fn saw(&self, prefix: &str) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|e| e.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl Observer for Seen {
    fn event(&self, event: RunnerEvent<'_>) {
        let line = match event {
            RunnerEvent::Registered(_) => {
                self.registered.fetch_add(1, Ordering::Relaxed);
                "registered".to_owned()
            }
            RunnerEvent::Claimed { tasks, .. } => format!("claimed {}", tasks.len()),
            RunnerEvent::Started { task, .. } => format!("started {}", task.key),
            RunnerEvent::Reported { task, call, .. } => {
                format!("reported {} {}", call.as_str(), task.key)
            }
            RunnerEvent::Lost { task, call, .. } => format!("lost {} {}", call.as_str(), task.key),
            RunnerEvent::Retrying { call, .. } => {
                self.retried.fetch_add(1, Ordering::Relaxed);
                format!("retrying {}", call.as_str())
            }
            RunnerEvent::Error { call, error, .. } => format!("error {}: {error}", call.as_str()),
        };
        self.events.lock().unwrap().push(line);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_tasks_run_at_once_than_the_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "127.0.0.1:0").await;
    let client = node.client();
    let tasks: Vec<TaskSpec> = (0..8).map(|i| spec(&format!("t{i}"), json!(i))).collect();
    let ids = submit(&client, &tasks).await;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let runner = Runner::new(vec![client.clone()], config("bounded", 3));
    let stop = runner.stop_handle();
    let (r, m) = (Arc::clone(&running), Arc::clone(&most));
    let agent = tokio::spawn(runner.run(move |ctx: TaskContext| {
        let (running, most) = (Arc::clone(&r), Arc::clone(&m));
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(json!({ "doubled": ctx.task().input.as_u64().unwrap() * 2 }))
        }
    }));
    for (i, id) in ids.iter().enumerate() {
        let view = task_in(&client, *id, &[StateKind::Completed]).await;
        assert_eq!(view.result, Some(json!({ "doubled": i * 2 })));
    }
    stop.stop();
    agent.await.unwrap().expect("a clean stop");
    assert_eq!(most.load(Ordering::SeqCst), 3, "three at once, never more");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_cancelled_under_its_handler_is_abandoned_and_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "127.0.0.1:0").await;
    let client = node.client();
    let mut long = spec("long", json!(null));
    // Heartbeats every third of a second: the first answer after the cancel says so.
    long.timeouts.heartbeat_ms = Some(1_000);
    let ids = submit(&client, &[long]).await;
    let seen = Arc::new(Seen::default());
    let runner = Runner::new(vec![client.clone()], config("cancelled", 1)).observed(seen.clone());
    let stop = runner.stop_handle();
    let (told_tx, mut told) = tokio::sync::mpsc::channel(1);
    let agent = tokio::spawn(runner.run(move |ctx: TaskContext| {
        let told = told_tx.clone();
        async move {
            let answer = ctx.progress(json!({"step": 1})).await.unwrap();
            assert_eq!(answer.state, StateKind::Executing);
            let why = ctx.cancelled().await;
            told.send(why).await.unwrap();
            Ok(json!({"too": "late"}))
        }
    }));
    task_in(&client, ids[0], &[StateKind::Executing]).await;
    client
        .cancel_task(ids[0], "no longer needed")
        .await
        .unwrap();
    let why = tokio::time::timeout(WAIT_MAX, told.recv())
        .await
        .expect("the handler is told")
        .unwrap();
    assert!(matches!(why, Cancel::Lost(_)), "{why:?}");
    stop.stop();
    agent.await.unwrap().expect("a clean stop");
    assert_eq!(
        seen.saw("lost heartbeat long").len(),
        1,
        "{:?}",
        seen.saw("")
    );
    assert!(seen.saw("reported").is_empty(), "{:?}", seen.saw(""));
    let view = client.task(ids[0]).await.unwrap();
    assert_eq!(view.state, StateKind::Cancelled);
    assert_eq!(view.result, None);
    let history = serde_json::to_string(&view.history).unwrap();
    assert!(
        history.contains(r#"{"step":1}"#),
        "the progress sent: {history}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_lets_handlers_finish_within_the_grace_then_releases_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "127.0.0.1:0").await;
    let client = node.client();
    let ids = submit(
        &client,
        &[spec("quick", json!("quick")), spec("slow", json!("slow"))],
    )
    .await;
    let mut c = config("stopping", 2);
    c.grace = Duration::from_millis(1_000);
    let seen = Arc::new(Seen::default());
    let runner = Runner::new(vec![client.clone()], c).observed(seen.clone());
    let stop = runner.stop_handle();
    let agent = tokio::spawn(runner.run(|ctx: TaskContext| async move {
        if ctx.task().input == json!("quick") {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Ok(json!({"done": true}));
        }
        let why = ctx.cancelled().await;
        assert_eq!(why, Cancel::Shutdown);
        Ok(json!({"never": "reported"}))
    }));
    task_in(&client, ids[0], &[StateKind::Executing]).await;
    task_in(&client, ids[1], &[StateKind::Executing]).await;
    stop.stop();
    agent.await.unwrap().expect("a clean stop");
    let quick = client.task(ids[0]).await.unwrap();
    assert_eq!(
        quick.state,
        StateKind::Completed,
        "finished within the grace"
    );
    let slow = client.task(ids[1]).await.unwrap();
    assert_eq!(slow.state, StateKind::Pending, "released: {slow:#?}");
    assert_eq!(slow.attempt, 1, "a release uses no attempt");
    assert_eq!(seen.saw("reported released slow").len(), 1);
    node.shutdown().await;
}

/// The agent a task was last assigned to, from its history.
async fn assigned_to(client: &Client, task: Uuid) -> Uuid {
    let view = client.task(task).await.unwrap();
    let entry = view
        .history
        .iter()
        .rev()
        .find(|h| h.event == baton_core::EventKind::AgentAssigned)
        .expect("assigned");
    serde_json::from_value(entry.data["agent"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_the_server_forgot_is_registered_again() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = Node::start(first.path(), "127.0.0.1:0").await;
    let addr = node.url.trim_start_matches("http://").to_owned();
    let client = node.client();
    let seen = Arc::new(Seen::default());
    let runner = Runner::new(vec![client.clone()], config("forgotten", 1)).observed(seen.clone());
    let stop = runner.stop_handle();
    let agent = tokio::spawn(runner.run(|_| async { Ok(json!({})) }));
    let ids = submit(&client, &[spec("before", json!(1))]).await;
    task_in(&client, ids[0], &[StateKind::Completed]).await;
    let first_agent = assigned_to(&client, ids[0]).await;

    // The same address, a fresh store: the agent's claims fail to connect, then are refused
    // as from an unknown agent.
    node.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let node = Node::start(second.path(), &addr).await;
    let ids = submit(&client, &[spec("after", json!(2))]).await;
    task_in(&client, ids[0], &[StateKind::Completed]).await;
    // It registered as a new agent: the server makes ids, and refuses one it does not know.
    let after = assigned_to(&client, ids[0]).await;
    assert_ne!(after, first_agent);
    let refused = client
        .reregister_agent(first_agent, "forgotten", &[], 1)
        .await
        .expect_err("an id no agent has");
    assert_eq!(refused.code(), Some("agent_not_found"));
    stop.stop();
    agent.await.unwrap().expect("a clean stop");
    assert_eq!(seen.registered.load(Ordering::Relaxed), 2);
    assert!(
        seen.retried.load(Ordering::Relaxed) >= 1,
        "{:?}",
        seen.saw("")
    );
    assert_eq!(seen.saw("reported succeeded").len(), 2);
    assert!(seen.saw("error").is_empty(), "{:?}", seen.saw("error"));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_reads_its_dependencies_results_withheld_ones_included() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "127.0.0.1:0").await;
    let client = node.client();
    // Five results of 0.9 MiB: one claim answer carries 4 MiB, so one is withheld.
    let parts: Vec<String> = (0..5).map(|i| format!("part-{i}")).collect();
    let mut tasks: Vec<TaskSpec> = parts.iter().map(|p| spec(p, json!(p))).collect();
    let mut join = spec("join", json!(null));
    join.depends_on = parts.iter().map(|p| p.as_str().into()).collect();
    tasks.push(join);
    let ids = submit(&client, &tasks).await;
    let big = "w".repeat(900 * 1024);
    let runner = Runner::new(vec![client.clone()], config("joiner", 1));
    let stop = runner.stop_handle();
    let agent = tokio::spawn(runner.run(move |ctx: TaskContext| {
        let big = big.clone();
        async move {
            if ctx.task().key != "join" {
                return Ok(json!({ "part": ctx.task().input, "text": big }));
            }
            let withheld = ctx
                .task()
                .upstream
                .values()
                .filter(|u| u.result.is_none())
                .count();
            let mut parts = Vec::new();
            for key in ctx.task().upstream.keys() {
                let result = ctx
                    .upstream(key)
                    .await
                    .unwrap()
                    .expect("a completed dependency");
                assert_eq!(result["text"].as_str().map(str::len), Some(900 * 1024));
                parts.push(result["part"].clone());
            }
            assert!(ctx.upstream("not-a-dependency").await.unwrap().is_none());
            Ok(json!({ "parts": parts, "withheld": withheld }))
        }
    }));
    let view = task_in(&client, ids[5], &[StateKind::Completed]).await;
    assert_eq!(
        view.result,
        Some(json!({ "parts": parts, "withheld": 1 })),
        "every result read, the withheld one with one more request"
    );
    stop.stop();
    agent.await.unwrap().expect("a clean stop");
    node.shutdown().await;
}

/// Requests the node answered on `route` with 200, from its `/metrics`.
async fn answered(node: &Node, method: &str, route: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", node.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(
        "baton_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"200\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// By default a runner starts what it claims in the claim and sends its reports in batches:
/// every task completes with one `execution_started`, by the agent, and no report goes to a
/// task's own endpoint. With both off it speaks the four-request protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_starts_on_claim_and_batches_its_reports_unless_told_not_to() {
    for fast in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(dir.path(), "127.0.0.1:0").await;
        let client = node.client();
        let tasks: Vec<TaskSpec> = (0..40).map(|i| spec(&format!("t{i}"), json!(i))).collect();
        let ids = submit(&client, &tasks).await;
        let mut c = config("fast", 8);
        c.start_on_claim = fast;
        c.batch_reports = fast;
        let runner = Runner::new(vec![client.clone()], c);
        let stop = runner.stop_handle();
        let agent = tokio::spawn(runner.run(|ctx: TaskContext| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(json!({"doubled": ctx.task().input.as_u64().unwrap() * 2}))
        }));
        for (i, id) in ids.iter().enumerate() {
            let view = task_in(&client, *id, &[StateKind::Completed]).await;
            assert_eq!(view.result, Some(json!({"doubled": i * 2})));
            let started: Vec<_> = view
                .history
                .iter()
                .filter(|h| h.event == baton_core::EventKind::ExecutionStarted)
                .collect();
            assert_eq!(started.len(), 1, "{:?}", view.history);
            assert_eq!(started[0].actor["actor"], "agent", "{:?}", started[0].actor);
        }
        stop.stop();
        agent.await.unwrap().unwrap();
        let batches = answered(&node, "POST", "/v1/reports").await;
        let single = answered(&node, "POST", "/v1/tasks/{id}/succeeded").await
            + answered(&node, "POST", "/v1/tasks/{id}/started").await;
        if fast {
            assert!(batches >= 1, "{batches} batches");
            assert!(batches < 40, "reports shared requests: {batches} batches");
            assert_eq!(single, 0);
        } else {
            assert_eq!((batches, single), (0, 80));
        }
        node.shutdown().await;
    }
}

/// Batched reports stay under the server's body limit whatever the results weigh: sixteen
/// results of 600 KB finishing together (9.6 MB, past the 8 MiB limit in one request) all land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_are_batched_under_the_body_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "127.0.0.1:0").await;
    let client = node.client();
    let tasks: Vec<TaskSpec> = (0..16).map(|i| spec(&format!("t{i}"), json!(i))).collect();
    let ids = submit(&client, &tasks).await;
    let mut c = config("heavy", 16);
    c.claim_min_slots = 16;
    let runner = Runner::new(vec![client.clone()], c);
    let stop = runner.stop_handle();
    let gate = Arc::new(tokio::sync::Barrier::new(16));
    let agent = tokio::spawn(runner.run(move |ctx: TaskContext| {
        let gate = Arc::clone(&gate);
        async move {
            gate.wait().await;
            let n = ctx.task().input.as_u64().unwrap();
            Ok(json!({"n": n, "text": "x".repeat(600_000)}))
        }
    }));
    for (i, id) in ids.iter().enumerate() {
        let view = task_in(&client, *id, &[StateKind::Completed, StateKind::Failed]).await;
        let result = view.result.expect("completed with its result");
        assert_eq!(result["n"], i as u64);
        assert_eq!(result["text"].as_str().unwrap().len(), 600_000);
    }
    stop.stop();
    agent.await.unwrap().unwrap();
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_error_message_is_cut_so_the_failure_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "127.0.0.1:0").await;
    let client = node.client();
    let ids = submit(&client, &[spec("t", json!(1))]).await;
    let runner = Runner::new(vec![client.clone()], config("failing", 1));
    let stop = runner.stop_handle();
    let agent = tokio::spawn(runner.run(|_ctx: TaskContext| async move {
        // 10,000 characters of 4 bytes: 40,000 bytes, over the server's 32,768.
        Err(baton_core::ErrorReport {
            kind: "crashed".into(),
            message: "\u{1F4A5}".repeat(10_000),
            retryable: false,
        })
    }));
    let view = task_in(&client, ids[0], &[StateKind::Failed]).await;
    stop.stop();
    agent.await.unwrap().expect("a clean stop");
    let message = view.errors[0]["message"].as_str().expect("a message");
    assert_eq!(message.chars().count(), 8_192);
    assert!(message.ends_with("\u{1F4A5}…"), "cut, and said so");
    node.shutdown().await;
}
