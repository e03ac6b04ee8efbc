//! The demo's agents: tokio tasks in this process that talk to Baton over its HTTP API with
//! the Rust client, exactly as remote agents would. Each has its capabilities and a
//! concurrency limit; what it does for a task follows the task's input.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_client::wire::ClaimedTask;
use baton_client::{Client, ClientError};
use baton_core::{Capability, ErrorReport, StateKind};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::scenario::{self, Fault, FORBIDDEN_KIND, STALL_MAX_MS, TRANSIENT_KIND};

/// The demo's agents: name, capability, concurrency.
pub const FLEET: &[(&str, &str, u32)] = &[
    ("planner", "planner", 4),
    ("researcher-1", "researcher", 4),
    ("researcher-2", "researcher", 4),
    ("researcher-3", "researcher", 4),
    ("writer", "writer", 4),
    ("reviewer", "reviewer", 2),
    ("publisher", "publisher", 2),
];
/// How long one claim waits for work; bounds how long stopping an idle agent takes.
const CLAIM_WAIT: Duration = Duration::from_millis(250);
/// Wait before claiming again after a refused or failed claim.
const CLAIM_RETRY: Duration = Duration::from_millis(200);
/// Shortest and longest simulated work, in milliseconds.
const WORK_MIN_MS: u64 = 20;
const WORK_SPREAD_MS: u64 = 60;
/// How often the stalled researcher looks whether its task was taken back.
const STALL_POLL: Duration = Duration::from_millis(50);
/// Longest the fleet waits for running handlers when it stops.
const DRAIN: Duration = Duration::from_millis(STALL_MAX_MS + 5_000);
/// Most report errors kept to show in the summary.
const ERRORS_KEPT_MAX: usize = 5;

/// What the agents saw that the server does not record.
#[derive(Default)]
pub struct AgentStats {
    /// Reports refused because the lease had been taken back (the stalled researcher's late
    /// result).
    pub late_reports_refused: AtomicU64,
    /// Reports that failed for any other reason.
    pub report_errors: AtomicU64,
    pub errors: Mutex<Vec<String>>,
}

impl AgentStats {
    fn error(&self, what: String) {
        self.report_errors.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < ERRORS_KEPT_MAX {
            kept.push(what);
        }
    }
}

/// The running agents.
pub struct Fleet {
    stop: watch::Sender<bool>,
    agents: JoinSet<()>,
}

impl Fleet {
    /// Registers every agent of [`FLEET`] and starts them.
    pub async fn start(client: &Client, stats: Arc<AgentStats>) -> anyhow::Result<Fleet> {
        let (stop, stopped) = watch::channel(false);
        let mut agents = JoinSet::new();
        for (name, capability, concurrency) in FLEET {
            let capabilities = [Capability((*capability).to_owned())];
            let view = client
                .register_agent(name, &capabilities, *concurrency)
                .await?;
            let agent = Arc::new(DemoAgent {
                client: client.clone(),
                id: view.id,
                name,
                stats: Arc::clone(&stats),
            });
            agents.spawn(agent.run(*concurrency as usize, stopped.clone()));
        }
        Ok(Fleet { stop, agents })
    }

    /// Stops claiming and waits (bounded) for the handlers still running.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        let drained = async { while self.agents.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN, drained).await.is_err() {
            self.agents.abort_all();
        }
    }
}

struct DemoAgent {
    client: Client,
    id: Uuid,
    name: &'static str,
    stats: Arc<AgentStats>,
}

/// What a handler decided.
enum Work {
    Done(Value),
    Failed(ErrorReport),
    /// Say nothing until the lease is gone, then report anyway.
    Stall(Value),
}

impl DemoAgent {
    async fn run(self: Arc<Self>, concurrency: usize, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(concurrency));
        let mut running = JoinSet::new();
        loop {
            while running.try_join_next().is_some() {}
            if *stop.borrow() {
                break;
            }
            let first = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = stop.wait_for(|s| *s) => break,
            };
            let mut permits = vec![first];
            while let Ok(p) = Arc::clone(&slots).try_acquire_owned() {
                permits.push(p);
            }
            match self.client.claim(self.id, permits.len(), CLAIM_WAIT).await {
                Ok(tasks) => {
                    let stopping = *stop.borrow();
                    for task in tasks {
                        let permit = permits.pop().expect("no more tasks than permits");
                        let agent = Arc::clone(&self);
                        running.spawn(async move {
                            if stopping {
                                agent.report(
                                    "released",
                                    agent.client.released(&task, agent.id).await,
                                );
                            } else {
                                agent.handle(task).await;
                            }
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    self.stats
                        .error(format!("{} could not claim: {e}", self.name));
                    tokio::time::sleep(CLAIM_RETRY).await;
                }
            }
        }
        while running.join_next().await.is_some() {}
    }

    async fn handle(&self, task: ClaimedTask) {
        match self.client.started(&task, self.id).await {
            Ok(answer) if !answer.cancelled => {}
            other => return self.report("started", other),
        }
        let work = match self.work(&task).await {
            Ok(work) => work,
            Err(e) => Work::Failed(ErrorReport {
                kind: "agent_error".into(),
                message: e.to_string(),
                retryable: true,
            }),
        };
        match work {
            Work::Done(result) => {
                let answer = self.client.succeeded(&task, self.id, result).await;
                self.report("succeeded", answer);
            }
            Work::Failed(error) => {
                let answer = self.client.failed(&task, self.id, error).await;
                self.report("failed", answer);
            }
            Work::Stall(result) => {
                self.stall(&task).await;
                match self.client.succeeded(&task, self.id, result).await {
                    // `stale_lease` if another attempt holds the task by now; `not_accepted`
                    // if it waits for its retry, with no lease at all.
                    Err(e) if e.status() == Some(409) => {
                        self.stats
                            .late_reports_refused
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    other => self.report("late succeeded", other),
                }
            }
        }
    }

    /// Sends nothing about the task (no heartbeat, no report) until the watchdog has taken it
    /// back, as a hung agent would; only reads, which do not renew a lease, to know when.
    async fn stall(&self, task: &ClaimedTask) {
        let give_up = tokio::time::Instant::now() + Duration::from_millis(STALL_MAX_MS);
        while tokio::time::Instant::now() < give_up {
            tokio::time::sleep(STALL_POLL).await;
            match self.client.task(task.task).await {
                Ok(view)
                    if view.state == StateKind::Executing && view.fencing_token == task.token => {}
                _ => return,
            }
        }
    }

    fn report<T>(&self, what: &str, answer: Result<T, ClientError>) {
        if let Err(e) = answer {
            self.stats
                .error(format!("{}: {what} refused: {e}", self.name));
        }
    }

    async fn work(&self, task: &ClaimedTask) -> Result<Work, ClientError> {
        let input = &task.input;
        if input.get("compensates").is_some() {
            return Ok(Work::Done(self.undo(task).await));
        }
        let kind = input["kind"].as_str().unwrap_or_default();
        Ok(match kind {
            "plan" => Work::Done(self.plan(task).await?),
            "plan_section" => Work::Done(self.plan_section(task).await?),
            "research" => self.research(task).await,
            "write" => Work::Done(self.write(task).await?),
            "review" => Work::Done(self.review(task).await?),
            "publish" => Work::Done(self.publish(task).await?),
            other => Work::Failed(ErrorReport {
                kind: "unknown_kind".into(),
                message: format!("{} does not know tasks of kind {other:?}", self.name),
                retryable: false,
            }),
        })
    }

    async fn plan(&self, task: &ClaimedTask) -> Result<Value, ClientError> {
        think(&task.key).await;
        let plans = scenario::section_plans(&task.input);
        self.client.subtasks(task, self.id, &plans).await?;
        Ok(json!({
            "goal": task.input["goal"],
            "sections": plans.iter().map(|p| p.key.0.clone()).collect::<Vec<_>>(),
        }))
    }

    async fn plan_section(&self, task: &ClaimedTask) -> Result<Value, ClientError> {
        think(&task.key).await;
        let specs = scenario::section_tasks(&task.input);
        self.client.subtasks(task, self.id, &specs).await?;
        Ok(json!({
            "topic": task.input["topic"],
            "steps": specs.iter().map(|s| s.key.0.clone()).collect::<Vec<_>>(),
        }))
    }

    async fn research(&self, task: &ClaimedTask) -> Work {
        think(&task.key).await;
        let topic = task.input["topic"].as_str().unwrap_or_default();
        let question = task.input["question"].as_str().unwrap_or_default();
        let notes = json!({
            "topic": topic,
            "question": question,
            "notes": [
                format!("{topic}: {question}, as the latest filings describe it"),
                format!("{topic}: {question}, as practitioners see it"),
            ],
            "sources": 2 + digest(&task.key) % 4,
        });
        match Fault::of(&task.input) {
            Some(Fault::Flaky(n)) if task.attempt <= n => Work::Failed(ErrorReport {
                kind: TRANSIENT_KIND.into(),
                message: format!("the search API answered 429 (attempt {})", task.attempt),
                retryable: true,
            }),
            Some(Fault::Stall) if task.attempt == 1 => Work::Stall(notes),
            Some(Fault::Forbidden) => Work::Failed(ErrorReport {
                kind: FORBIDDEN_KIND.into(),
                message: format!("the licence of the only source on {question} forbids quoting it"),
                retryable: false,
            }),
            _ => Work::Done(notes),
        }
    }

    async fn write(&self, task: &ClaimedTask) -> Result<Value, ClientError> {
        let research = self.inputs(task).await?;
        think(&task.key).await;
        let notes: Vec<Value> = research
            .iter()
            .flat_map(|r| r["notes"].as_array().cloned().unwrap_or_default())
            .collect();
        let sources: u64 = research.iter().filter_map(|r| r["sources"].as_u64()).sum();
        Ok(json!({
            "title": format!("The state of {}", task.input["topic"].as_str().unwrap_or_default()),
            "paragraphs": notes.len(),
            "words": task.input["words"],
            "sources": sources,
        }))
    }

    async fn review(&self, task: &ClaimedTask) -> Result<Value, ClientError> {
        let drafts = self.inputs(task).await?;
        think(&task.key).await;
        let sources = drafts
            .first()
            .and_then(|d| d["sources"].as_u64())
            .unwrap_or(0);
        Ok(json!({
            "approved": sources > 0,
            "score": 3 + digest(&task.key) % 3,
            "comments": ["tighten the introduction", "cite the primary sources"],
        }))
    }

    async fn publish(&self, task: &ClaimedTask) -> Result<Value, ClientError> {
        let reviews = self.inputs(task).await?;
        think(&task.key).await;
        let approved = reviews
            .iter()
            .all(|r| r["approved"].as_bool() == Some(true));
        let slug = task.key.trim_end_matches("/publish");
        Ok(json!({
            "published": approved,
            "url": format!("https://briefing.example/{slug}"),
        }))
    }

    async fn undo(&self, task: &ClaimedTask) -> Value {
        think(&task.key).await;
        json!({
            "compensated": task.input["compensates"],
            "released": task.input["input"]["release"],
            "notes_discarded": true,
        })
    }

    /// The results of the task's dependencies, read over the API: how a writer gets its
    /// research.
    async fn inputs(&self, task: &ClaimedTask) -> Result<Vec<Value>, ClientError> {
        let view = self.client.task(task.task).await?;
        let mut results = Vec::with_capacity(view.dependencies.len());
        for dep in &view.dependencies {
            let dep = self.client.task(dep.id).await?;
            results.push(dep.result.unwrap_or(Value::Null));
        }
        Ok(results)
    }
}

/// Simulated work: a short pause that depends on the task.
async fn think(key: &str) {
    let ms = WORK_MIN_MS + digest(key) % WORK_SPREAD_MS;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// A stable number from a key (FNV-1a), so runs look alike.
fn digest(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
