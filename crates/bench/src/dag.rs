//! `baton bench dag`: one workflow of repeated blocks (a task fans out to parallel chains that
//! fan back in to the next block's root). Measures how long a dependent waits between its last
//! dependency completing and becoming claimable, and the makespan against the same number of
//! independent tasks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_core::{StateKind, Task, WorkflowId};
use baton_engine::EngineConfig;
use baton_store::{TaskFilter, TaskPages};
use serde_json::{json, Value};

use super::agents::{Fleet, FleetConfig, Shared, CAPABILITY};
use super::throughput::{independent, start_nodes};
use super::{Common, Latency, Report, Target};

const RUN_LIMIT: Duration = Duration::from_secs(3_600);

#[derive(clap::Args, Debug)]
pub struct DagArgs {
    /// About how many tasks the workflow has [default: 10000; 300 with --quick].
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Agents working the tasks over HTTP.
    #[arg(long, default_value_t = 8)]
    pub agents: usize,
    /// Tasks per claim (the agent's concurrency).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub batch: u32,
}

/// The workflow's shape.
struct Shape {
    /// Parallel chains per block.
    width: usize,
    /// Tasks per chain.
    length: usize,
    blocks: usize,
}

impl Shape {
    fn for_tasks(n: usize) -> Shape {
        let (width, length) = if n >= 2_000 { (50, 20) } else { (10, 5) };
        let per_block = (width * length + 1) as f64;
        let blocks = ((n.saturating_sub(1) as f64 / per_block).round() as usize).max(1);
        Shape {
            width,
            length,
            blocks,
        }
    }

    fn tasks(&self) -> usize {
        1 + self.blocks * (self.width * self.length + 1)
    }

    /// Tasks on the longest path.
    fn critical_path(&self) -> usize {
        1 + self.blocks * (self.length + 1)
    }

    fn specs(&self) -> Vec<Value> {
        let mut specs = vec![json!({"key": "j0", "capabilities": [CAPABILITY]})];
        for b in 0..self.blocks {
            let mut ends = Vec::with_capacity(self.width);
            for c in 0..self.width {
                for s in 0..self.length {
                    let dep = if s == 0 {
                        format!("j{b}")
                    } else {
                        format!("b{b}/c{c}/s{}", s - 1)
                    };
                    specs.push(json!({
                        "key": format!("b{b}/c{c}/s{s}"),
                        "depends_on": [dep],
                        "capabilities": [CAPABILITY],
                    }));
                }
                ends.push(format!("b{b}/c{c}/s{}", self.length - 1));
            }
            specs.push(json!({
                "key": format!("j{}", b + 1),
                "depends_on": ends,
                "capabilities": [CAPABILITY],
            }));
        }
        specs
    }
}

pub async fn run(common: &Common, args: DagArgs) -> anyhow::Result<Report> {
    let wanted = super::size(args.tasks, common.quick, 300, 10_000);
    if wanted < 2 {
        bail!("--tasks must be at least 2");
    }
    let shape = Shape::for_tasks(wanted);
    let tasks = shape.tasks();
    if tasks > baton_core::dag::TASKS_PER_WORKFLOW_MAX {
        bail!(
            "a workflow holds at most {} tasks",
            baton_core::dag::TASKS_PER_WORKFLOW_MAX
        );
    }
    let batch = args.batch as usize;

    // The graph.
    let mut r = Report::new("dag");
    let target = Target::new(common).await?;
    target.report_fsync(&mut r);
    let nodes = start_nodes(&target, 1, EngineConfig::default()).await?;
    let graph = run_graph(&nodes[0], &shape, args.agents, batch).await;
    for n in nodes {
        n.stop().await;
    }
    target.cleanup().await?;
    let graph = graph?;

    // The same number of independent tasks, on a fresh store.
    let target = Target::new(common).await?;
    let nodes = start_nodes(&target, 1, EngineConfig::default()).await?;
    let flat = independent(&nodes, tasks, args.agents, batch, None).await;
    for n in nodes {
        n.stop().await;
    }
    target.cleanup().await?;
    let flat = flat?;

    r.param("store", target.kind())
        .param("tasks", tasks)
        .param("agents", args.agents)
        .param("batch", batch)
        .param("chains_per_block", shape.width)
        .param("chain_length", shape.length)
        .param("blocks", shape.blocks)
        .param("critical_path", shape.critical_path());
    let mut all = graph.release_ms.clone();
    let l = Latency::of_ms(&mut all);
    let mut fan_in = graph.fan_in_ms.clone();
    let f = Latency::of_ms(&mut fan_in);
    r.float(
        "release_p50_ms",
        "last dependency completed to claimable p50",
        l.p50,
        "ms",
    )
    .float(
        "release_p99_ms",
        "last dependency completed to claimable p99",
        l.p99,
        "ms",
    )
    .float(
        "release_max_ms",
        "last dependency completed to claimable max",
        l.max,
        "ms",
    )
    .float(
        "fan_in_release_p50_ms",
        "  of fan-in tasks, p50",
        f.p50,
        "ms",
    )
    .float(
        "fan_in_release_max_ms",
        "  of fan-in tasks, max",
        f.max,
        "ms",
    )
    .float(
        "makespan_s",
        "makespan of the graph",
        graph.makespan.as_secs_f64(),
        "s",
    )
    .float(
        "independent_makespan_s",
        "makespan of as many independent tasks",
        flat.elapsed.as_secs_f64(),
        "s",
    )
    .float(
        "makespan_ratio",
        "graph / independent",
        graph.makespan.as_secs_f64() / flat.elapsed.as_secs_f64(),
        "",
    )
    .float(
        "critical_path_step_ms",
        "makespan per task on the critical path",
        graph.makespan.as_secs_f64() * 1e3 / shape.critical_path() as f64,
        "ms",
    )
    .figure("completed", "graph tasks completed", graph.completed, "")
    .figure(
        "independent_completed",
        "independent tasks completed",
        flat.completed,
        "",
    )
    .figure("errors", "request errors", graph.errors + flat.errors, "");
    r.note("release latency: the dependent's entered_at.pending minus the latest entered_at.completed of its dependencies (server clock, ms), as GET /v1/tasks/{id} shows them");
    if graph.completed != tasks as u64 || flat.completed != tasks as u64 {
        r.fail(format!(
            "completed {} (graph) and {} (independent) of {tasks}",
            graph.completed, flat.completed
        ));
    }
    Ok(r)
}

struct GraphOutcome {
    makespan: Duration,
    completed: u64,
    release_ms: Vec<i64>,
    fan_in_ms: Vec<i64>,
    errors: u64,
}

async fn run_graph(
    node: &super::Node,
    shape: &Shape,
    agents: usize,
    batch: usize,
) -> anyhow::Result<GraphOutcome> {
    let client = node.client()?;
    let tasks = shape.tasks();
    let shared = Arc::new(Shared::default());
    let bar = super::progress(tasks as u64, "dag");
    let fleet = Fleet::start(
        std::slice::from_ref(&client),
        FleetConfig {
            agents,
            batch,
            expected: tasks as u64,
            probe_claims: false,
        },
        Arc::clone(&shared),
        bar.clone(),
    )
    .await?;
    let body = json!({"name": "bench-dag", "tasks": shape.specs()});
    let started = Instant::now();
    let created = client
        .submit_workflow_json(&body)
        .await
        .context("submitting the graph")?;
    let (_, _) = fleet.finish(RUN_LIMIT).await;
    bar.finish_and_clear();
    let done_at = shared
        .done_at
        .lock()
        .expect("done lock")
        .unwrap_or_else(Instant::now);
    let store = node.engine.store();
    let all = workflow_tasks(store, WorkflowId(created.workflow)).await?;
    let by_key: HashMap<&str, &Task> = all.iter().map(|t| (t.spec.key.0.as_str(), t)).collect();
    let mut release_ms = Vec::new();
    let mut fan_in_ms = Vec::new();
    let mut completed = 0;
    for t in &all {
        if t.kind() == StateKind::Completed {
            completed += 1;
        }
        if t.spec.depends_on.is_empty() {
            continue;
        }
        let last = t
            .spec
            .depends_on
            .iter()
            .filter_map(|d| by_key.get(d.0.as_str()))
            .filter_map(|d| d.entered_at.get(StateKind::Completed))
            .max();
        if let (Some(last), Some(ready)) = (last, t.entered_at.get(StateKind::Pending)) {
            let ms = ready.0 as i64 - last.0 as i64;
            release_ms.push(ms);
            if t.spec.depends_on.len() > 1 {
                fan_in_ms.push(ms);
            }
        }
    }
    Ok(GraphOutcome {
        makespan: done_at.duration_since(started),
        completed,
        release_ms,
        fan_in_ms,
        errors: shared.errors.load(std::sync::atomic::Ordering::Relaxed),
    })
}

async fn workflow_tasks(
    store: &baton_store::AnyStore,
    workflow: WorkflowId,
) -> anyhow::Result<Vec<Task>> {
    let mut all = Vec::new();
    let mut pages = TaskPages::new(TaskFilter {
        workflow: Some(workflow),
        ..TaskFilter::default()
    });
    while let Some(page) = pages.next(store).await? {
        all.extend(page);
    }
    Ok(all)
}
