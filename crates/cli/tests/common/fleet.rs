//! Agents that work a workflow through one or several `baton serve` nodes, retrying through
//! killed nodes and unavailable stores, with a ledger of every report the server acknowledged;
//! and the checks made against the store afterwards: every task terminal, every acknowledged
//! report in its task's history, no task completed twice. Shared by the cluster and torture
//! tests (included with `#[path]`, so the other test binaries do not build it).

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::wire::ClaimedTask;
use baton_client::{Client, ClientError};
use baton_core::{
    Capability, ErrorReport, Event, EventKind, RetryPolicy, StateKind, TaskKey, TaskSpec, Timeouts,
    WorkflowId,
};
use baton_store::{AnyStore, Store, TaskFilter, TaskPages};
use serde_json::json;
use uuid::Uuid;

/// The capability every task of [`workflow`] requires.
pub const CAPABILITY: &str = "work";
/// Tasks claimed at once, and an agent's concurrency.
const CLAIM_MAX: usize = 4;
/// A claim's long poll: short, so that agents notice the end quickly.
const CLAIM_WAIT: Duration = Duration::from_millis(500);
/// Longest an agent keeps retrying one call through unreachable or unavailable nodes.
const CALL_PATIENCE: Duration = Duration::from_secs(60);
/// Every this many tasks, one fails its first attempt (and is retried).
const FAIL_EVERY: u64 = 10;

/// The PostgreSQL server the tests use.
pub fn pg_url() -> String {
    std::env::var("BATON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A number from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Runs `sql` (simple query protocol) on the test server; returns the rows as text.
pub fn pg_exec(sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("PostgreSQL is reachable (run .ci/postgres): {e}"))?;
            tokio::spawn(conn);
            let messages = client
                .simple_query(&sql)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
            Ok(messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect())
        })
    })
    .join()
    .expect("the admin thread does not panic")
}

/// A schema of its own for a test, named `PREFIX<uuid>`, dropped (with everything in it) when
/// this is dropped: declare it before the nodes, so they are killed first.
pub struct PgSchema {
    pub name: String,
}

impl PgSchema {
    pub fn new(prefix: &str) -> PgSchema {
        PgSchema {
            name: format!("{prefix}{}", Uuid::now_v7().simple()),
        }
    }

    /// The store URL of this schema (on `base`, the test server by default).
    pub fn url(&self) -> String {
        self.url_on(&pg_url())
    }

    pub fn url_on(&self, base: &str) -> String {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}schema={}", self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Err(e) = pg_exec(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name)) {
            eprintln!("cannot drop schema {}: {e}", self.name);
        }
    }
}

/// `n` tasks `t0..t{n-1}` with some dependencies (even tasks depend on the task 40 before,
/// every fifth on the task 97 before: chains 50 deep at 2,000 tasks), three attempts each with
/// a short backoff, and a `start_ms` deadline so that tasks whose claim answer was lost in a
/// crash come back.
pub fn workflow(n: usize, start_ms: u64) -> Vec<TaskSpec> {
    (0..n)
        .map(|i| {
            let mut spec = TaskSpec::new(format!("t{i}"));
            spec.capabilities = [Capability(CAPABILITY.into())].into();
            spec.input = json!({ "i": i });
            if i >= 40 && i % 2 == 0 {
                spec.depends_on.push(TaskKey(format!("t{}", i - 40)));
            }
            if i >= 97 && i % 5 == 0 {
                spec.depends_on.push(TaskKey(format!("t{}", i - 97)));
            }
            spec.retry = RetryPolicy {
                max_attempts: 3,
                initial_backoff_ms: 100,
                backoff_multiplier: 2.0,
                max_backoff_ms: 1_000,
                jitter: 0.0,
                non_retryable: Vec::new(),
            };
            spec.timeouts = Timeouts {
                schedule_to_start_ms: None,
                start_ms: Some(start_ms),
                start_to_close_ms: None,
                heartbeat_ms: None,
            };
            spec
        })
        .collect()
}

/// A report the server acknowledged (a 2xx answer).
#[derive(Clone, Debug)]
pub struct Ack {
    pub task: Uuid,
    pub kind: EventKind,
    pub agent: Uuid,
    pub token: u64,
    /// The lease a claim handed out.
    pub lease: Option<Uuid>,
    /// The task's version in the answer (claims answer none).
    pub version: Option<u64>,
}

/// What the agents saw.
#[derive(Default)]
pub struct Ledger {
    acks: Mutex<Vec<Ack>>,
    unexpected: Mutex<Vec<String>>,
    /// Successes acknowledged (a duplicate's answer included).
    pub succeeded: AtomicU64,
    /// Calls retried after a connection error.
    pub transport_errors: AtomicU64,
    /// Calls retried after a 503.
    pub unavailable: AtomicU64,
    /// Reports refused with 409 (the lease had moved on, e.g. after a start timeout).
    pub conflicts: AtomicU64,
}

impl Ledger {
    fn ack(&self, ack: Ack) {
        if ack.kind == EventKind::ExecutionSucceeded {
            self.succeeded.fetch_add(1, Ordering::Relaxed);
        }
        self.acks.lock().unwrap().push(ack);
    }

    fn unexpected(&self, what: String) {
        eprintln!("unexpected: {what}");
        self.unexpected.lock().unwrap().push(what);
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    /// Answers no test expects (anything but a 2xx, a 409 on a report, a 503 or a broken
    /// connection).
    pub fn unexpected_answers(&self) -> Vec<String> {
        self.unexpected.lock().unwrap().clone()
    }

    pub fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
    }
}

/// Why a call did not get a 2xx answer.
enum Failed {
    /// The server refused (4xx other than what retrying fixes).
    Refused(ClientError),
    /// The agents were told to stop.
    Stopped,
    /// No node answered within [`CALL_PATIENCE`].
    GaveUp(String),
}

/// Whether trying again (elsewhere, a little later) may help.
pub fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        ClientError::Api(p) => p.status == 503,
        _ => false,
    }
}

/// One agent: claims, starts and completes tasks; fails the first attempt of every
/// [`FAIL_EVERY`]th; retries every call through connection errors and 503s, moving on to the
/// next node; with `hop`, it also moves to the next node before every call.
struct Agent {
    id: Uuid,
    name: String,
    nodes: Arc<Vec<Client>>,
    cursor: usize,
    hop: bool,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
}

impl Agent {
    async fn call<T, F, Fut>(&mut self, what: &str, f: F) -> Result<T, Failed>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = baton_client::Result<T>>,
    {
        let started = Instant::now();
        let mut failures = 0u32;
        loop {
            if self.hop {
                self.cursor += 1;
            }
            let client = self.nodes[self.cursor % self.nodes.len()].clone();
            match f(client).await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) => {
                    match &e {
                        ClientError::Transport { .. } => &self.ledger.transport_errors,
                        _ => &self.ledger.unavailable,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    if self.stop.load(Ordering::Relaxed) {
                        return Err(Failed::Stopped);
                    }
                    if started.elapsed() > CALL_PATIENCE {
                        return Err(Failed::GaveUp(format!(
                            "{what}: no node answered within {CALL_PATIENCE:?}: {e}"
                        )));
                    }
                    if !self.hop {
                        self.cursor += 1;
                    }
                    failures += 1;
                    let pause = 10u64.saturating_mul(1 << failures.min(5)).min(200);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(Failed::Refused(e)),
            }
        }
    }

    async fn run(mut self) {
        let (id, name) = (self.id, self.name.clone());
        let caps = [Capability(CAPABILITY.into())];
        let registered = self
            .call("register", |c| {
                let (name, caps) = (&name, &caps);
                async move { c.reregister_agent(id, name, caps, CLAIM_MAX as u32).await }
            })
            .await;
        match registered {
            Ok(_) => {}
            Err(Failed::Stopped) => return,
            Err(Failed::Refused(e)) => return self.ledger.unexpected(format!("register: {e}")),
            Err(Failed::GaveUp(e)) => return self.ledger.unexpected(e),
        }
        while !self.stop.load(Ordering::Relaxed) {
            let claimed = self
                .call("claim", |c| async move {
                    c.claim(id, CLAIM_MAX, CLAIM_WAIT).await
                })
                .await;
            let tasks = match claimed {
                Ok(tasks) => tasks,
                Err(Failed::Stopped) => return,
                Err(Failed::Refused(e)) => {
                    self.ledger.unexpected(format!("claim: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(Failed::GaveUp(e)) => {
                    self.ledger.unexpected(e);
                    continue;
                }
            };
            for task in &tasks {
                self.ledger.ack(Ack {
                    task: task.task,
                    kind: EventKind::AgentAssigned,
                    agent: id,
                    token: task.token,
                    lease: Some(task.lease),
                    version: None,
                });
            }
            for task in &tasks {
                if !self.work(task).await {
                    return;
                }
            }
        }
    }

    /// Starts and ends one task; `false` once told to stop.
    async fn work(&mut self, task: &ClaimedTask) -> bool {
        let id = self.id;
        let started = self
            .call("started", |c| async move { c.started(task, id).await })
            .await;
        if !self.answered(task, EventKind::ExecutionStarted, "started", started) {
            return !self.stop.load(Ordering::Relaxed);
        }
        let i = task.input["i"].as_u64().unwrap_or(0);
        let (kind, what, ended) = if i % FAIL_EVERY == 3 && task.attempt == 1 {
            let error = ErrorReport {
                kind: "flaky".into(),
                message: "the first attempt fails".into(),
                retryable: true,
            };
            let ended = self
                .call("failed", |c| {
                    let error = error.clone();
                    async move { c.failed(task, id, error).await }
                })
                .await;
            (EventKind::ExecutionFailed, "failed", ended)
        } else {
            let result = json!({ "i": i, "agent": id });
            let ended = self
                .call("succeeded", |c| {
                    let result = result.clone();
                    async move { c.succeeded(task, id, result).await }
                })
                .await;
            (EventKind::ExecutionSucceeded, "succeeded", ended)
        };
        self.answered(task, kind, what, ended);
        !self.stop.load(Ordering::Relaxed)
    }

    /// Records an acknowledged report; `false` if it was not acknowledged.
    fn answered(
        &self,
        task: &ClaimedTask,
        kind: EventKind,
        what: &str,
        answer: Result<baton_client::wire::ReportAnswer, Failed>,
    ) -> bool {
        match answer {
            Ok(answer) => {
                self.ledger.ack(Ack {
                    task: task.task,
                    kind,
                    agent: self.id,
                    token: task.token,
                    lease: None,
                    version: Some(answer.version),
                });
                true
            }
            // The lease moved on (a start timeout took the task back while the node was
            // down, say): drop the task.
            Err(Failed::Refused(e)) if e.status() == Some(409) => {
                self.ledger.conflicts.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(Failed::Refused(e)) => {
                self.ledger
                    .unexpected(format!("{what} of {}: {e}", task.task));
                false
            }
            Err(Failed::GaveUp(e)) => {
                self.ledger.unexpected(e);
                false
            }
            Err(Failed::Stopped) => false,
        }
    }
}

/// Agents at work on a runtime of their own.
pub struct Fleet {
    pub ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Starts `agents` agents on `rt`; agent `k` starts on node `k % urls.len()`; with `hop`
    /// each moves to the next node before every call.
    pub fn start(rt: &tokio::runtime::Runtime, urls: &[String], agents: usize, hop: bool) -> Fleet {
        let nodes: Arc<Vec<Client>> = Arc::new(
            urls.iter()
                .map(|u| Client::new(u).expect("a valid URL"))
                .collect(),
        );
        let ledger = Arc::new(Ledger::default());
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..agents)
            .map(|k| {
                let agent = Agent {
                    id: Uuid::new_v4(),
                    name: format!("agent-{k}"),
                    nodes: Arc::clone(&nodes),
                    cursor: k,
                    hop,
                    ledger: Arc::clone(&ledger),
                    stop: Arc::clone(&stop),
                };
                rt.spawn(agent.run())
            })
            .collect();
        Fleet {
            ledger,
            stop,
            handles,
        }
    }

    /// Tells the agents to stop and waits (bounded) until they have.
    pub fn stop(self, rt: &tokio::runtime::Runtime) -> Arc<Ledger> {
        self.stop.store(true, Ordering::Relaxed);
        rt.block_on(async {
            for h in self.handles {
                tokio::time::timeout(Duration::from_secs(60), h)
                    .await
                    .expect("an agent stops within a minute of being told")
                    .expect("an agent does not panic");
            }
        });
        self.ledger
    }
}

/// Submits the workflow through the first node that answers (with an idempotency key, so a
/// retry after a lost answer returns the same workflow).
pub async fn submit(urls: &[String], tasks: &[TaskSpec]) -> Uuid {
    let key = format!("wf-{}", Uuid::new_v4());
    let deadline = Instant::now() + CALL_PATIENCE;
    let mut k = 0;
    loop {
        let client = Client::new(&urls[k % urls.len()]).expect("a valid URL");
        match client.submit_workflow("work", Some(&key), tasks).await {
            Ok(created) => return created.workflow,
            Err(e) if retryable(&e) && Instant::now() < deadline => {
                k += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the workflow is accepted: {e}"),
        }
    }
}

/// Tasks of the workflow that have ended, and in all, asked of any node that answers.
pub async fn progress(urls: &[String], workflow: Uuid) -> Option<(u64, u64)> {
    for url in urls {
        let client = Client::new(url).expect("a valid URL");
        if let Ok(c) = client.counts(Some(workflow)).await {
            return Some((c.completed + c.failed + c.cancelled, c.total));
        }
    }
    None
}

/// What the store holds after a run.
#[derive(Debug, Default)]
pub struct Verified {
    pub tasks: usize,
    pub completed: usize,
    pub history_entries: usize,
    pub acks: usize,
    pub retried_tasks: usize,
}

/// Checks the workflow in the store: every task completed, exactly one success in each
/// history, and every acknowledged report (`acks`) in its task's history at or before the
/// version it was answered with, that version at most the task's. Panics with the first
/// violations found.
pub async fn verify(store: &AnyStore, workflow: Uuid, acks: &[Ack]) -> Verified {
    let mut tasks = Vec::new();
    let mut pages = TaskPages::new(TaskFilter {
        workflow: Some(WorkflowId(workflow)),
        ..TaskFilter::default()
    });
    while let Some(page) = pages.next(store).await.expect("the tasks are read") {
        tasks.extend(page);
    }
    let mut verified = Verified {
        tasks: tasks.len(),
        acks: acks.len(),
        ..Verified::default()
    };
    let mut violations = Vec::new();
    let mut histories = HashMap::new();
    for task in &tasks {
        let history = store
            .history(task.id, 0, 10_000)
            .await
            .expect("the history is read");
        verified.history_entries += history.len();
        if task.kind() == StateKind::Completed {
            verified.completed += 1;
        } else {
            violations.push(format!(
                "task {} ({}) ended {}, not completed",
                task.id,
                task.spec.key,
                task.kind()
            ));
        }
        if task.attempt > 1 {
            verified.retried_tasks += 1;
        }
        let successes = history
            .iter()
            .filter(|h| h.event.kind() == EventKind::ExecutionSucceeded)
            .count();
        if successes != usize::from(task.kind() == StateKind::Completed) {
            violations.push(format!(
                "task {} ({}) is {} with {successes} successes in its history",
                task.id,
                task.spec.key,
                task.kind()
            ));
        }
        histories.insert(task.id.0, (task.version, history));
    }
    for ack in acks {
        let Some((version, history)) = histories.get(&ack.task) else {
            violations.push(format!("acknowledged {ack:?} for a task not in the store"));
            continue;
        };
        if ack.version.is_some_and(|v| v > *version) {
            violations.push(format!(
                "acknowledged {ack:?} but the task is at version {version}"
            ));
        }
        let found = history.iter().any(|h| {
            let same = match &h.event {
                Event::AgentAssigned { agent, lease, .. } => {
                    ack.kind == EventKind::AgentAssigned
                        && agent.0 == ack.agent
                        && Some(lease.0) == ack.lease
                }
                other => {
                    other.kind() == ack.kind
                        && other
                            .report()
                            .is_some_and(|(a, t)| a.0 == ack.agent && t.0 == ack.token)
                }
            };
            same && ack.version.is_none_or(|v| h.seq <= v)
        });
        if !found {
            violations.push(format!("acknowledged {ack:?} is not in the task's history"));
        }
    }
    assert!(
        violations.is_empty(),
        "{} violations, the first: {:#?}",
        violations.len(),
        &violations[..violations.len().min(20)]
    );
    verified
}
