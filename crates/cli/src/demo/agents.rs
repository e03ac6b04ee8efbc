//! The demo's agents: tokio tasks in this process that talk to Baton over its HTTP API with
//! the Rust client, exactly as remote agents would. Each has its capabilities and a
//! concurrency limit; what it does for a task follows the task's input.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_client::{
    Call, Client, ClientError, Observer, Runner, RunnerConfig, RunnerEvent, StopHandle, TaskContext,
};
use baton_core::{Capability, ErrorReport, StateKind};
use serde_json::{json, Value};
use tokio::task::JoinSet;

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

impl Observer for AgentStats {
    fn event(&self, event: RunnerEvent<'_>) {
        match event {
            // `stale_lease` if another attempt holds the task by now; `not_accepted` if it
            // waits for its retry, with no lease at all: the stalled researcher's late result.
            RunnerEvent::Lost {
                call: Call::Succeeded,
                error: Some(e),
                ..
            } if e.status() == Some(409) => {
                self.late_reports_refused.fetch_add(1, Ordering::Relaxed);
            }
            RunnerEvent::Lost {
                task,
                call,
                error: Some(e),
                ..
            } => self.error(format!("{}: {} refused: {e}", task.key, call.as_str())),
            RunnerEvent::Retrying { call, error, .. } | RunnerEvent::Error { call, error, .. } => {
                self.error(format!("{} failed: {error}", call.as_str()))
            }
            _ => {}
        }
    }
}

/// The running agents.
pub struct Fleet {
    stops: Vec<StopHandle>,
    agents: JoinSet<()>,
}

impl Fleet {
    /// Registers every agent of [`FLEET`] and starts them; each spends about `pace_ms` on a
    /// task.
    pub async fn start(
        client: &Client,
        stats: Arc<AgentStats>,
        pace_ms: u64,
    ) -> anyhow::Result<Fleet> {
        let mut agents = JoinSet::new();
        let mut stops = Vec::new();
        for (name, capability, concurrency) in FLEET {
            let mut c = RunnerConfig::new(
                *name,
                vec![Capability((*capability).to_owned())],
                *concurrency,
            );
            c.claim_wait = CLAIM_WAIT;
            c.keepalive = None;
            c.grace = DRAIN;
            c.backoff_min = CLAIM_RETRY;
            c.backoff_max = CLAIM_RETRY;
            let mut runner = Runner::new(vec![client.clone()], c).observed(stats.clone());
            // Registered here, so that every agent is known before the workflow is submitted.
            runner.register().await?;
            stops.push(runner.stop_handle());
            let agent = Arc::new(DemoAgent { name, pace_ms });
            agents.spawn(async move {
                let run = runner.run(move |ctx| {
                    let agent = Arc::clone(&agent);
                    async move { agent.handle(ctx).await }
                });
                let _ = run.await;
            });
        }
        Ok(Fleet { stops, agents })
    }

    /// Stops claiming and waits (bounded) for the handlers still running.
    pub async fn stop(mut self) {
        for stop in &self.stops {
            stop.stop();
        }
        let drained = async { while self.agents.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN + CLAIM_WAIT, drained)
            .await
            .is_err()
        {
            self.agents.abort_all();
        }
    }
}

struct DemoAgent {
    name: &'static str,
    /// About how long a task takes, in milliseconds.
    pace_ms: u64,
}

/// What a handler decided.
enum Work {
    Done(Value),
    Failed(ErrorReport),
    /// Say nothing until the lease is gone, then report anyway.
    Stall(Value),
}

impl DemoAgent {
    async fn handle(&self, ctx: TaskContext) -> Result<Value, ErrorReport> {
        let work = match self.work(&ctx).await {
            Ok(work) => work,
            Err(e) => Work::Failed(ErrorReport {
                kind: "agent_error".into(),
                message: e.to_string(),
                retryable: true,
            }),
        };
        match work {
            Work::Done(result) => Ok(result),
            Work::Failed(error) => Err(error),
            Work::Stall(result) => {
                ctx.pause_heartbeats();
                stall(&ctx).await;
                Ok(result)
            }
        }
    }

    async fn work(&self, ctx: &TaskContext) -> Result<Work, ClientError> {
        let task = ctx.task();
        let input = &task.input;
        if input.get("compensates").is_some() {
            return Ok(Work::Done(self.undo(ctx).await));
        }
        let kind = input["kind"].as_str().unwrap_or_default();
        Ok(match kind {
            "plan" => Work::Done(self.plan(ctx).await?),
            "plan_section" => Work::Done(self.plan_section(ctx).await?),
            "research" => self.research(ctx).await,
            "write" => Work::Done(self.write(ctx).await?),
            "review" => Work::Done(self.review(ctx).await?),
            "publish" => Work::Done(self.publish(ctx).await?),
            "outline" => Work::Done(self.outline(ctx).await),
            "cover_line" => Work::Done(self.cover_line(ctx).await),
            other => Work::Failed(ErrorReport {
                kind: "unknown_kind".into(),
                message: format!("{} does not know tasks of kind {other:?}", self.name),
                retryable: false,
            }),
        })
    }

    async fn plan(&self, ctx: &TaskContext) -> Result<Value, ClientError> {
        let task = ctx.task();
        self.think(&task.key).await;
        let plans = scenario::section_plans(&task.input);
        ctx.add_subtasks(&plans).await?;
        Ok(json!({
            "goal": task.input["goal"],
            "sections": plans.iter().map(|p| p.key.0.clone()).collect::<Vec<_>>(),
        }))
    }

    async fn plan_section(&self, ctx: &TaskContext) -> Result<Value, ClientError> {
        let task = ctx.task();
        self.think(&task.key).await;
        let specs = scenario::section_tasks(&task.input);
        ctx.add_subtasks(&specs).await?;
        Ok(json!({
            "topic": task.input["topic"],
            "steps": specs.iter().map(|s| s.key.0.clone()).collect::<Vec<_>>(),
        }))
    }

    async fn research(&self, ctx: &TaskContext) -> Work {
        let task = ctx.task();
        self.think(&task.key).await;
        spend(ctx, 600 + digest(&task.key) % 600);
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

    async fn write(&self, ctx: &TaskContext) -> Result<Value, ClientError> {
        let task = ctx.task();
        let research = self.inputs(ctx).await?;
        self.think(&task.key).await;
        spend(ctx, 1_500 + digest(&task.key) % 1_000);
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

    async fn review(&self, ctx: &TaskContext) -> Result<Value, ClientError> {
        let task = ctx.task();
        let drafts = self.inputs(ctx).await?;
        self.think(&task.key).await;
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

    async fn publish(&self, ctx: &TaskContext) -> Result<Value, ClientError> {
        let task = ctx.task();
        let reviews = self.inputs(ctx).await?;
        self.think(&task.key).await;
        let approved = reviews
            .iter()
            .all(|r| r["approved"].as_bool() == Some(true));
        let slug = task.key.trim_end_matches("/publish");
        Ok(json!({
            "published": approved,
            "url": format!("https://briefing.example/{slug}"),
        }))
    }

    async fn outline(&self, ctx: &TaskContext) -> Value {
        let task = ctx.task();
        self.think(&task.key).await;
        json!({"goal": task.input["goal"], "topics": task.input["topics"]})
    }

    /// One line of the cover, from the outline's goal and its topic, both resolved by Baton
    /// into the input (`goal` from the outline's result, `item` from the fan-out).
    async fn cover_line(&self, ctx: &TaskContext) -> Value {
        let task = ctx.task();
        self.think(&task.key).await;
        let topic = task.input["item"].as_str().unwrap_or("a topic");
        let goal = task.input["goal"].as_str().unwrap_or("the briefing");
        json!(format!("{goal}: where {topic} stands this quarter"))
    }

    async fn undo(&self, ctx: &TaskContext) -> Value {
        let task = ctx.task();
        self.think(&task.key).await;
        json!({
            "compensated": task.input["compensates"],
            "released": task.input["input"]["release"],
            "notes_discarded": true,
        })
    }

    /// Simulated work: a pause that depends on the task, from half the pace to one and a
    /// half times it.
    async fn think(&self, key: &str) {
        if self.pace_ms == 0 {
            return;
        }
        let ms = self.pace_ms / 2 + digest(key) % (self.pace_ms + 1);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// The results of the task's dependencies, in key order: how a writer gets its research.
    /// They come with the claim (`upstream`); one withheld over the answer's size budget is
    /// read with one request.
    async fn inputs(&self, ctx: &TaskContext) -> Result<Vec<Value>, ClientError> {
        let mut results = Vec::with_capacity(ctx.task().upstream.len());
        for key in ctx.task().upstream.keys() {
            results.push(ctx.upstream(key).await?.unwrap_or(Value::Null));
        }
        Ok(results)
    }
}

/// Sends nothing about the task (no heartbeat, no report) until the watchdog has taken it
/// back, as a hung agent would; only reads, which do not renew a lease, to know when.
async fn stall(ctx: &TaskContext) {
    let task = ctx.task();
    let give_up = tokio::time::Instant::now() + Duration::from_millis(STALL_MAX_MS);
    while tokio::time::Instant::now() < give_up {
        tokio::time::sleep(STALL_POLL).await;
        match ctx.client().task(task.task).await {
            Ok(view) if view.state == StateKind::Executing && view.fencing_token == task.token => {}
            _ => return,
        }
    }
}

/// A stable number from a key (FNV-1a), so runs look alike.
fn digest(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// What a model call would cost: `tokens`, at 10 usd per million.
fn spend(ctx: &TaskContext, tokens: u64) {
    ctx.report_usage("tokens", tokens as f64);
    ctx.report_usage("usd", tokens as f64 * 1e-5);
}
