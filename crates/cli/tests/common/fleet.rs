//! Agents (`baton_client::Runner`) that work a workflow through one or several `baton serve`
//! nodes, retrying through killed nodes and unavailable stores, with a ledger of every report
//! the server acknowledged;
//! and the checks made against the store afterwards: every task terminal, every acknowledged
//! report in its task's history, no task completed twice. Shared by the cluster and torture
//! tests (included with `#[path]`, so the other test binaries do not build it).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::wire::ClaimedTask;
use baton_client::{
    Call, Client, ClientError, Observer, Runner, RunnerConfig, RunnerEvent, StopHandle, TaskContext,
};
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

pub use crate::common::require::postgres_url as pg_url;

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
    /// `None` when no server answers: the test is skipped (return).
    pub fn new(prefix: &str) -> Option<PgSchema> {
        crate::common::require::postgres()?;
        Some(PgSchema {
            name: format!("{prefix}{}", Uuid::now_v7().simple()),
        })
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

/// Whether trying again (elsewhere, a little later) may help.
pub fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        ClientError::Api(p) => p.status == 503,
        _ => false,
    }
}

/// One agent's view of the ledger: records what the server acknowledged to this agent, under
/// the id the server gave it (a new one if a node that forgot it registered it again).
struct Witness {
    agent: std::sync::Mutex<Uuid>,
    ledger: Arc<Ledger>,
}

impl Witness {
    fn ack(&self, task: &ClaimedTask, kind: EventKind, version: Option<u64>) {
        self.ledger.ack(Ack {
            task: task.task,
            kind,
            agent: *self.agent.lock().unwrap(),
            token: task.token,
            lease: (kind == EventKind::AgentAssigned).then_some(task.lease),
            version,
        });
    }
}

impl Observer for Witness {
    fn event(&self, event: RunnerEvent<'_>) {
        match event {
            RunnerEvent::Claimed { tasks, .. } => {
                for task in tasks {
                    self.ack(task, EventKind::AgentAssigned, None);
                }
            }
            RunnerEvent::Started { task, answer } => {
                self.ack(task, EventKind::ExecutionStarted, Some(answer.version))
            }
            RunnerEvent::Reported {
                task, call, answer, ..
            } => {
                let kind = match call {
                    Call::Succeeded => EventKind::ExecutionSucceeded,
                    Call::Failed => EventKind::ExecutionFailed,
                    _ => EventKind::AssignmentReleased,
                };
                self.ack(task, kind, Some(answer.version));
            }
            // The lease moved on (a start timeout took the task back while the node was
            // down, say): the runner drops the task.
            RunnerEvent::Lost { error: Some(e), .. } if e.status() == Some(409) => {
                self.ledger.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            RunnerEvent::Lost {
                task,
                call,
                reason,
                error,
            } => self.ledger.unexpected(format!(
                "{} of {}: {reason} ({error:?})",
                call.as_str(),
                task.task
            )),
            RunnerEvent::Retrying { error, call, .. } => match error {
                ClientError::Transport { .. } => {
                    self.ledger.transport_errors.fetch_add(1, Ordering::Relaxed);
                }
                e if e.status() == Some(503) => {
                    self.ledger.unavailable.fetch_add(1, Ordering::Relaxed);
                }
                e => self.ledger.unexpected(format!("{}: {e}", call.as_str())),
            },
            RunnerEvent::Error { task, call, error } => self.ledger.unexpected(format!(
                "{} of {:?}: {error}",
                call.as_str(),
                task.map(|t| t.task)
            )),
            RunnerEvent::Registered(view) => *self.agent.lock().unwrap() = view.id,
        }
    }
}

/// One agent (a [`Runner`]): claims, starts and completes tasks; fails the first attempt of
/// every [`FAIL_EVERY`]th; retries every call through connection errors and 503s, moving on
/// to the next node; with `hop`, it also moves to the next node before every call.
fn agent(k: usize, nodes: &[Client], hop: bool, ledger: &Arc<Ledger>) -> Runner {
    let mut c = RunnerConfig::new(
        format!("agent-{k}"),
        vec![Capability(CAPABILITY.into())],
        CLAIM_MAX as u32,
    );
    c.claim_wait = CLAIM_WAIT;
    c.claim_max = CLAIM_MAX;
    c.keepalive = None;
    c.grace = Duration::ZERO;
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.patience = CALL_PATIENCE;
    c.rotate_nodes = hop;
    let witness = Arc::new(Witness {
        agent: std::sync::Mutex::new(Uuid::nil()),
        ledger: Arc::clone(ledger),
    });
    Runner::new(nodes.to_vec(), c)
        .starting_at(k)
        .observed(witness)
}

/// Fails the first attempt of every [`FAIL_EVERY`]th task; completes the others.
async fn work(ctx: TaskContext) -> Result<serde_json::Value, ErrorReport> {
    let task = ctx.task();
    let i = task.input["i"].as_u64().unwrap_or(0);
    if i % FAIL_EVERY == 3 && task.attempt == 1 {
        return Err(ErrorReport {
            kind: "flaky".into(),
            message: "the first attempt fails".into(),
            retryable: true,
        });
    }
    Ok(json!({ "i": i, "agent": ctx.agent() }))
}

/// Agents at work on a runtime of their own.
pub struct Fleet {
    pub ledger: Arc<Ledger>,
    stops: Vec<StopHandle>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Starts `agents` agents on `rt`; agent `k` starts on node `k % urls.len()`; with `hop`
    /// each moves to the next node before every call.
    pub fn start(rt: &tokio::runtime::Runtime, urls: &[String], agents: usize, hop: bool) -> Fleet {
        let nodes: Vec<Client> = urls
            .iter()
            .map(|u| Client::new(u).expect("a valid URL"))
            .collect();
        let ledger = Arc::new(Ledger::default());
        let mut stops = Vec::new();
        let handles = (0..agents)
            .map(|k| {
                let runner = agent(k, &nodes, hop, &ledger);
                stops.push(runner.stop_handle());
                let ledger = Arc::clone(&ledger);
                rt.spawn(async move {
                    if let Err(e) = runner.run(work).await {
                        ledger.unexpected(format!("agent-{k}: {e}"));
                    }
                })
            })
            .collect();
        Fleet {
            ledger,
            stops,
            handles,
        }
    }

    /// Tells the agents to stop and waits (bounded) until they have.
    pub fn stop(self, rt: &tokio::runtime::Runtime) -> Arc<Ledger> {
        for stop in &self.stops {
            stop.stop_now();
        }
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
