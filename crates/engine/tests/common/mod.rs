//! A test harness around the engine: the real SQLite store in a temporary directory, a manual
//! clock, and helpers that play an agent (claim, start, succeed, fail) through the public API.
//! Time only moves when a test moves it; timers, liveness and effects run only in `tick`.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use baton_core::{
    replay, AgentId, Capability, ErrorReport, Event, EventKind, HistoryEntry, RetryPolicy,
    StateKind, Task, TaskId, TaskKey, TaskSpec, Timestamp, WorkflowId,
};
use baton_engine::{Clock, Engine, EngineConfig, ManualClock, WorkflowReceipt, WorkflowRequest};
use baton_store::sqlite::SqliteStore;
use baton_store::{StateCounts, Store, TaskFilter, PAGE_ROWS_MAX};
use serde_json::{json, Value};
use tempfile::TempDir;
use uuid::Uuid;

#[path = "../../../store/tests/common/require.rs"]
pub mod require;

/// Where every test's clock starts.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

pub fn caps(names: &[&str]) -> BTreeSet<Capability> {
    names.iter().map(|&n| Capability::from(n)).collect()
}

pub fn key(k: &str) -> TaskKey {
    TaskKey::from(k)
}

/// A task needing capability `work`, depending on `deps`, with default policies.
pub fn spec(k: &str, deps: &[&str]) -> TaskSpec {
    TaskSpec {
        depends_on: deps.iter().map(|&d| key(d)).collect(),
        capabilities: caps(&["work"]),
        input: json!({ "key": k }),
        ..TaskSpec::new(k)
    }
}

/// A retry policy without jitter, so that retry times are exact.
pub fn retry(max_attempts: u32, initial_backoff_ms: u64) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff_ms,
        backoff_multiplier: 2.0,
        max_backoff_ms: 60_000,
        jitter: 0.0,
        non_retryable: Vec::new(),
    }
}

pub fn request(specs: Vec<TaskSpec>) -> WorkflowRequest {
    WorkflowRequest {
        budgets: Default::default(),
        name: "test".into(),
        idempotency_key: None,
        tasks: specs,
        outputs: None,
        labels: Default::default(),
    }
}

/// A submitted workflow: its id and its task ids by key.
pub struct Flow {
    pub id: WorkflowId,
    pub ids: HashMap<String, TaskId>,
    pub receipt: WorkflowReceipt,
}

impl Flow {
    pub fn id(&self, k: &str) -> TaskId {
        *self
            .ids
            .get(k)
            .unwrap_or_else(|| panic!("no task `{k}` in the workflow"))
    }
}

pub struct Harness {
    pub dir: TempDir,
    pub clock: Arc<ManualClock>,
    pub config: EngineConfig,
    pub engine: Engine<SqliteStore>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_config(EngineConfig::default())
    }

    pub fn with_config(config: EngineConfig) -> Harness {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let clock = Arc::new(ManualClock::new(T0));
        let engine = open_engine(&db_path(&dir), &clock, &config);
        Harness {
            dir,
            clock,
            config,
            engine,
        }
    }

    /// Drops the engine and its store, then opens the same SQLite file with a new engine, as a
    /// restarted process would. The clock keeps its time.
    pub fn restart(self) -> Harness {
        let Harness {
            dir,
            clock,
            config,
            engine,
        } = self;
        drop(engine);
        let engine = open_engine(&db_path(&dir), &clock, &config);
        Harness {
            dir,
            clock,
            config,
            engine,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn advance(&self, ms: u64) {
        self.clock.advance(ms);
    }

    pub fn set(&self, at: Timestamp) {
        self.clock.set(at);
    }

    /// One watchdog round, then effects until quiet.
    pub async fn tick(&self) {
        self.engine.tick().await.expect("tick");
    }

    pub async fn submit(&self, specs: Vec<TaskSpec>) -> Flow {
        let receipt = self
            .engine
            .submit_workflow(request(specs))
            .await
            .expect("the workflow is accepted");
        flow(receipt)
    }

    pub async fn agent(&self, name: &str, capabilities: &[&str], concurrency: u32) -> AgentId {
        self.engine
            .register_agent(None, name.into(), caps(capabilities), concurrency)
            .await
            .expect("the agent registers")
            .id
    }

    /// Claims without waiting.
    pub async fn claim(&self, agent: AgentId, max: usize) -> Vec<Task> {
        self.engine
            .claim(agent, max, Duration::ZERO)
            .await
            .expect("claim")
    }

    /// Claims exactly one task, which must be `expected`.
    pub async fn claim_only(&self, agent: AgentId, expected: TaskId) -> Task {
        let claimed = self.claim(agent, 1).await;
        assert_eq!(
            claimed.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![expected],
            "the claim hands out the expected task"
        );
        claimed.into_iter().next().unwrap()
    }

    pub async fn start(&self, task: &Task) -> Task {
        self.report(task.id, started(task)).await.expect("started")
    }

    pub async fn succeed(&self, task: &Task) -> Task {
        self.report(task.id, succeeded(task))
            .await
            .expect("succeeded")
    }

    pub async fn fail(&self, task: &Task, kind: &str, retryable: bool) -> Task {
        self.report(task.id, failed(task, kind, retryable))
            .await
            .expect("failed")
    }

    pub async fn report(
        &self,
        id: TaskId,
        event: Event,
    ) -> Result<Task, baton_engine::EngineError> {
        self.engine.report(id, event, Default::default()).await
    }

    /// Claims the task (which must be the one handed out), starts it and completes it.
    pub async fn run(&self, agent: AgentId, id: TaskId) -> Task {
        let claimed = self.claim_only(agent, id).await;
        let started = self.start(&claimed).await;
        self.succeed(&started).await
    }

    pub async fn task(&self, id: TaskId) -> Task {
        self.engine
            .store()
            .task(id)
            .await
            .expect("read")
            .expect("the task exists")
    }

    pub async fn state(&self, id: TaskId) -> StateKind {
        self.task(id).await.kind()
    }

    pub async fn history(&self, id: TaskId) -> Vec<HistoryEntry> {
        self.engine.history(id, 0, 1_000).await.expect("history")
    }

    /// The event kinds of a task's history, oldest first.
    pub async fn events(&self, id: TaskId) -> Vec<EventKind> {
        self.history(id)
            .await
            .iter()
            .map(|e| e.event.kind())
            .collect()
    }

    pub async fn counts(&self, workflow: Option<WorkflowId>) -> StateCounts {
        self.engine.store().counts(workflow).await.expect("counts")
    }

    pub async fn by_key(&self, workflow: WorkflowId, k: &str) -> Option<Task> {
        self.engine
            .store()
            .task_by_key(workflow, key(k))
            .await
            .expect("read")
    }
}

impl Harness {
    /// Every task of the workflow, in id order.
    pub async fn workflow_tasks(&self, workflow: WorkflowId) -> Vec<Task> {
        self.engine
            .store()
            .tasks(TaskFilter {
                workflow: Some(workflow),
                limit: PAGE_ROWS_MAX,
                ..TaskFilter::default()
            })
            .await
            .expect("tasks")
    }

    /// Every stored task of the workflow is the fold of its stored history.
    pub async fn assert_replays(&self, workflow: WorkflowId) {
        for task in self.workflow_tasks(workflow).await {
            let history = self.history(task.id).await;
            let replayed = replay(&history)
                .unwrap_or_else(|e| panic!("task {} does not replay: {e}", task.spec.key));
            assert_eq!(
                replayed, task,
                "task {} replays to its stored state",
                task.spec.key
            );
        }
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("baton.db")
}

fn open_engine(
    path: &std::path::Path,
    clock: &Arc<ManualClock>,
    config: &EngineConfig,
) -> Engine<SqliteStore> {
    let store = SqliteStore::open(path).expect("the store opens");
    let clock: Arc<dyn Clock> = clock.clone();
    Engine::new(store, clock, config.clone())
}

pub fn flow(receipt: WorkflowReceipt) -> Flow {
    Flow {
        id: receipt.workflow,
        ids: receipt
            .tasks
            .iter()
            .map(|(k, id)| (k.0.clone(), *id))
            .collect(),
        receipt,
    }
}

/// The lease holder and fencing token of a leased task.
pub fn lease(task: &Task) -> (AgentId, baton_core::FencingToken) {
    let lease = task
        .state
        .lease()
        .unwrap_or_else(|| panic!("task {} is {}, not leased", task.spec.key, task.kind()));
    (lease.agent, lease.token)
}

pub fn started(task: &Task) -> Event {
    let (agent, token) = lease(task);
    Event::ExecutionStarted {
        agent,
        token,
        by_claim: false,
    }
}

pub fn succeeded(task: &Task) -> Event {
    let (agent, token) = lease(task);
    Event::ExecutionSucceeded {
        usage: Default::default(),
        agent,
        token,
        result: Some(result_of(task)),
    }
}

pub fn result_of(task: &Task) -> Value {
    json!({ "done": task.spec.key.0 })
}

pub fn failed(task: &Task, kind: &str, retryable: bool) -> Event {
    let (agent, token) = lease(task);
    Event::ExecutionFailed {
        usage: Default::default(),
        agent,
        token,
        error: ErrorReport {
            kind: kind.into(),
            message: format!("{kind} on attempt {}", task.attempt),
            retryable,
        },
    }
}

pub fn count(events: &[EventKind], kind: EventKind) -> usize {
    events.iter().filter(|&&e| e == kind).count()
}

/// A fixed agent id, for tests that need to know it up front.
pub fn agent_id(n: u128) -> AgentId {
    AgentId(Uuid::from_u128(0xa9e0_0000 + n))
}

/// Polls `check` every 10 ms for at most 10 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1_000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}
