//! `baton bench throughput`: independent no-op tasks end to end over HTTP.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_client::Client;
use baton_core::StateKind;
use baton_engine::EngineConfig;
use baton_store::{AnyStore, Store, TaskFilter, TaskPages, PAGE_ROWS_MAX};
use serde_json::{json, Value};

use super::agents::{Fleet, FleetConfig, Measured, Shared, CAPABILITY};
use super::child::{store_args, Serve};
use super::{Common, Node, Report, Target};

/// Most tasks per submitted workflow.
pub const WORKFLOW_TASKS_MAX: usize = 10_000;
/// Longest a run may take before it is reported unfinished.
const RUN_LIMIT: Duration = Duration::from_secs(3_600);

#[derive(clap::Args, Debug)]
pub struct ThroughputArgs {
    /// Independent tasks to run [default: 100000; 2000 with --quick].
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Agents, each claiming a batch at a time.
    #[arg(long, default_value_t = 8)]
    pub agents: usize,
    /// Tasks per claim (the agent's concurrency).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub batch: u32,
    /// Engine + server instances sharing the store (PostgreSQL only); agents are spread
    /// across them round-robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub nodes: u32,
    /// Submit at this many tasks/s (small workflows at a steady pace) instead of all at once:
    /// latency at a given load, e.g. half the measured maximum.
    #[arg(long, value_name = "TASKS_PER_S")]
    pub rate: Option<f64>,
    /// Flow control on: every task draws a unit from one rate limit and holds one concurrency
    /// key, both set wide enough never to hold a task back, so the figures are its overhead.
    #[arg(long)]
    pub flow: bool,
    /// Agents speak the plain four-request protocol (claim, started, succeeded, each its own
    /// request) instead of starting on claim and batching their reports.
    #[arg(long)]
    pub plain: bool,
    /// Run the server as a child `baton serve` (this binary) instead of in this process, and
    /// report that process's own peak RSS; the agents and the submitter stay here.
    #[arg(long)]
    pub child: bool,
}

/// The rate limit and concurrency key every task names with `--flow`.
pub const FLOW_KEY: &str = "bench";

impl ThroughputArgs {
    /// The flow control each task declares, if on: a key no fuller than the agents can hold.
    fn flow(&self) -> Option<Value> {
        self.flow.then(|| {
            let max = self.agents as u64 * u64::from(self.batch);
            json!({
                "rate": [{"key": FLOW_KEY}],
                "concurrency": [{"key": FLOW_KEY, "max": max}],
            })
        })
    }
}

pub async fn run(common: &Common, args: ThroughputArgs) -> anyhow::Result<Report> {
    let tasks = super::size(args.tasks, common.quick, 2_000, 100_000);
    if tasks == 0 || args.agents == 0 {
        bail!("--tasks and --agents must be at least 1");
    }
    if args.child && args.nodes > 1 {
        bail!("--child runs one server: leave --nodes at 1");
    }
    let target = Target::new(common).await?;
    if args.nodes > 1 && !target.is_postgres() {
        bail!("--nodes above 1 needs a shared store: pass --store postgres://…");
    }
    let mut r = Report::new("throughput");
    target.report_fsync(&mut r);
    let flow = args.flow();
    let out = if args.child {
        on_child(&target, &args, tasks, flow).await
    } else {
        in_process(&target, &args, tasks, flow).await
    };
    target.cleanup().await?;
    let (out, server_rss) = out?;

    r.param("store", target.kind())
        .param("tasks", tasks)
        .param("agents", args.agents)
        .param("batch", args.batch)
        .param("nodes", args.nodes)
        .param("rate", args.rate.map_or(Value::Null, |x| json!(x)))
        .param("flow", args.flow)
        .param("plain", args.plain)
        .param("server", if args.child { "child" } else { "in-process" });
    let completed = out.completed;
    out.figures(&mut r);
    match server_rss {
        Some(rss) => {
            r.float("server_peak_rss_mib", "peak RSS of baton serve", rss, "MiB");
        }
        None => {
            r.float(
                "peak_rss_mib",
                "peak RSS (whole process)",
                super::peak_rss_mib(),
                "MiB",
            );
            r.note("the server runs in this process: peak RSS includes the agents and their HTTP clients (--child measures the server alone)");
        }
    }
    if completed != tasks as u64 {
        r.fail(format!("{completed} of {tasks} tasks completed"));
    }
    Ok(r)
}

/// The run on a child `baton serve`; with the child's peak RSS in MiB.
async fn on_child(
    target: &Target,
    args: &ThroughputArgs,
    tasks: usize,
    flow: Option<Value>,
) -> anyhow::Result<(Outcome, Option<f64>)> {
    let log =
        std::env::temp_dir().join(format!("baton-bench-throughput-{}.log", std::process::id()));
    let serve = Serve::start("127.0.0.1:0", &store_args(target), &[], &log).await?;
    let out = drive(Servers::Child(&serve), args, tasks, flow).await;
    let rss = serve.status_mib("VmHWM:");
    serve.stop(Duration::from_secs(30)).await?;
    let mut out = out?;
    // Once the child stopped: a SQLite store has one server at a time.
    out.queue_wait_ms = ready_to_assigned(&target.open().await?).await?;
    Ok((out, Some(rss)))
}

/// The run on engines and servers in this process.
async fn in_process(
    target: &Target,
    args: &ThroughputArgs,
    tasks: usize,
    flow: Option<Value>,
) -> anyhow::Result<(Outcome, Option<f64>)> {
    let nodes = start_nodes(target, args.nodes as usize, EngineConfig::default()).await?;
    let out = async {
        let mut out = drive(Servers::InProcess(&nodes), args, tasks, flow).await?;
        out.queue_wait_ms = ready_to_assigned(nodes[0].engine.store()).await?;
        anyhow::Ok(out)
    }
    .await;
    for n in nodes {
        n.stop().await;
    }
    Ok((out?, None))
}

/// Sets the bench's rate limit if flow control is on, then runs the tasks.
async fn drive(
    servers: Servers<'_>,
    args: &ThroughputArgs,
    tasks: usize,
    flow: Option<Value>,
) -> anyhow::Result<Outcome> {
    if flow.is_some() {
        // A billion a second: present on every claim, never short.
        servers.clients()?[0]
            .set_limit(FLOW_KEY, 1_000_000_000, 1_000)
            .await
            .context("setting the bench's rate limit")?;
    }
    independent(
        &servers,
        tasks,
        args.agents,
        args.batch as usize,
        args.rate,
        flow,
        args.plain,
    )
    .await
}

/// Starts `n` engine + server instances on the target's store.
pub async fn start_nodes(
    target: &Target,
    n: usize,
    config: EngineConfig,
) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let store = target.open().await?;
        nodes.push(Node::start(store, config.clone()).await?);
    }
    Ok(nodes)
}

/// What a run of independent tasks measured.
pub struct Outcome {
    pub completed: u64,
    /// From sending the first submission to the last completion's acknowledgement.
    pub elapsed: Duration,
    /// Sending every submission.
    pub submitting: Duration,
    pub measured: Measured,
    /// Ready (`entered_at.pending`) to assigned (`entered_at.assigned`), server clock, ms.
    pub queue_wait_ms: Vec<i64>,
    pub writes_per_commit: f64,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Outcome {
    pub fn tasks_per_s(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }

    fn figures(mut self, r: &mut Report) {
        r.float("tasks_per_s", "end to end", self.tasks_per_s(), "tasks/s")
            .float(
                "elapsed_s",
                "first submit to last completion",
                self.elapsed.as_secs_f64(),
                "s",
            )
            .float("submit_s", "submitting", self.submitting.as_secs_f64(), "s")
            .figure("completed", "tasks completed", self.completed, "")
            .latencies(
                "claim_to_complete",
                "claim to complete",
                &mut self.measured.claim_to_complete,
            )
            .latencies(
                "claim",
                "claim round trip (work waiting)",
                &mut self.measured.claim_rtt,
            )
            .figure("claims", "claims", self.measured.claims, "");
        let q = super::Latency::of_ms(&mut self.queue_wait_ms);
        r.float(
            "ready_to_assigned_p50_ms",
            "ready to assigned p50",
            q.p50,
            "ms",
        )
        .float(
            "ready_to_assigned_p99_ms",
            "ready to assigned p99",
            q.p99,
            "ms",
        )
        .float(
            "writes_per_commit",
            "writes per commit",
            self.writes_per_commit,
            "",
        )
        .figure("errors", "request errors", self.errors, "");
        if let Some(e) = self.first_error {
            r.note(format!("first error: {e}"));
        }
    }
}

/// The servers a run's agents talk to.
pub enum Servers<'a> {
    /// Engines and HTTP servers in this process.
    InProcess(&'a [Node]),
    /// A child `baton serve`.
    Child(&'a Serve),
}

impl Servers<'_> {
    fn clients(&self) -> anyhow::Result<Vec<Client>> {
        match self {
            Servers::InProcess(nodes) => nodes.iter().map(Node::client).collect(),
            Servers::Child(serve) => Ok(vec![Client::new(&serve.base)?]),
        }
    }

    /// Writes and commits of the store so far: from the engines, or from the child's
    /// `baton_store_commit_batch_size` histogram.
    async fn commit_stats(&self) -> anyhow::Result<(u64, u64)> {
        match self {
            Servers::InProcess(nodes) => Ok(nodes.iter().fold((0, 0), |(w, c), n| {
                let stats = n.engine.store().stats();
                (w + stats.writes, c + stats.commits)
            })),
            Servers::Child(_) => {
                let text = self.clients()?[0].metrics().await?;
                let sample = |name: &str| -> anyhow::Result<u64> {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(|v| v as u64)
                        .with_context(|| format!("{name} missing from /metrics"))
                };
                Ok((
                    sample("baton_store_commit_batch_size_sum")?,
                    sample("baton_store_commit_batch_size_count")?,
                ))
            }
        }
    }
}

/// Runs `tasks` independent no-op tasks through `servers` with `agents` agents; each task's
/// spec gets the fields of `extra` (flow control). `queue_wait_ms` is left to the caller (a
/// child server's store is read once it has stopped).
pub async fn independent(
    servers: &Servers<'_>,
    tasks: usize,
    agents: usize,
    batch: usize,
    rate: Option<f64>,
    extra: Option<Value>,
    plain: bool,
) -> anyhow::Result<Outcome> {
    let clients = servers.clients()?;
    let shared = Arc::new(Shared::default());
    let bar = super::progress(tasks as u64, "throughput");
    let fleet = Fleet::start(
        &clients,
        FleetConfig {
            agents,
            batch,
            expected: tasks as u64,
            probe_claims: true,
            plain,
        },
        Arc::clone(&shared),
        bar.clone(),
    )
    .await?;
    let (writes_before, commits_before) = servers.commit_stats().await?;
    let started = Instant::now();
    let submitter = tokio::spawn(submit_all(
        clients.clone(),
        tasks,
        rate,
        extra,
        Arc::clone(&shared),
    ));
    let (all_done, measured) = fleet.finish(RUN_LIMIT).await;
    bar.finish_and_clear();
    let submitting = submitter.await.context("the submitter")??;
    let done_at = shared
        .done_at
        .lock()
        .expect("done lock")
        .unwrap_or_else(Instant::now);
    let elapsed = done_at.duration_since(started);
    let (writes, commits) = servers.commit_stats().await?;
    let completed = clients[0].counts(None).await?.completed;
    if !all_done {
        eprintln!("not every task completed within {RUN_LIMIT:?}");
    }
    let first_error = shared.first_error.lock().expect("error lock").clone();
    Ok(Outcome {
        completed,
        elapsed,
        submitting,
        measured,
        queue_wait_ms: Vec::new(),
        writes_per_commit: (writes - writes_before) as f64
            / (commits - commits_before).max(1) as f64,
        errors: shared.errors.load(Ordering::Relaxed),
        first_error,
    })
}

/// Submits `tasks` no-op tasks in workflows of at most [`WORKFLOW_TASKS_MAX`], round-robin
/// over the clients; paced at `rate` tasks/s if given. Returns how long it took.
async fn submit_all(
    clients: Vec<Client>,
    tasks: usize,
    rate: Option<f64>,
    extra: Option<Value>,
    shared: Arc<Shared>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let chunk = match rate {
        Some(r) if r > 0.0 => ((r / 100.0).ceil() as usize).clamp(1, WORKFLOW_TASKS_MAX),
        _ => WORKFLOW_TASKS_MAX,
    };
    let mut next = 0usize;
    let mut n = 0usize;
    while next < tasks {
        let end = (next + chunk).min(tasks);
        if let Some(r) = rate.filter(|r| *r > 0.0) {
            let due = started + Duration::from_secs_f64(next as f64 / r);
            tokio::time::sleep_until(due.into()).await;
        }
        let specs: Vec<Value> = (next..end)
            .map(|i| task_spec(&format!("t{i}"), extra.as_ref()))
            .collect();
        clients[n % clients.len()]
            .submit_workflow_json(&json!({"name": format!("bench-{n}"), "tasks": specs}))
            .await
            .context("submitting a workflow")?;
        shared
            .submitted
            .fetch_add((end - next) as u64, Ordering::Relaxed);
        next = end;
        n += 1;
    }
    Ok(started.elapsed())
}

/// A no-op task's spec, with the fields of `extra` if given.
pub fn task_spec(key: &str, extra: Option<&Value>) -> Value {
    let mut spec = json!({"key": key, "capabilities": [CAPABILITY]});
    for (k, v) in extra.and_then(Value::as_object).into_iter().flatten() {
        spec[k] = v.clone();
    }
    spec
}

/// For every task assigned at least once: ready to assigned, in ms (server clock).
pub async fn ready_to_assigned(store: &AnyStore) -> anyhow::Result<Vec<i64>> {
    let mut out = Vec::new();
    let mut pages = TaskPages::new(TaskFilter::default());
    while let Some(page) = pages.next(store).await? {
        for t in &page {
            if let (Some(p), Some(a)) = (
                t.entered_at.get(StateKind::Pending),
                t.entered_at.get(StateKind::Assigned),
            ) {
                out.push(a.0 as i64 - p.0 as i64);
            }
        }
        if page.len() < PAGE_ROWS_MAX {
            break;
        }
    }
    Ok(out)
}
