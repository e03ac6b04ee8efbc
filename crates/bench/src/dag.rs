//! `baton bench dag`: one workflow of repeated blocks (a task fans out to parallel chains that
//! fan back in to the next block's root). Measures how long a dependent waits between its last
//! dependency completing and becoming claimable, and the makespan against the same number of
//! independent tasks. Then a map: one planner whose result is an array, a `for_each` over it
//! and a join after it; measures the expansion (the planner's completion to its items created)
//! and the gathering of the items' results (the last item's completion to the join's release).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_core::{StateKind, Task, WorkflowId};
use baton_engine::EngineConfig;
use baton_store::{TaskFilter, TaskPages};
use serde_json::{json, Value};

use super::agents::{Fleet, FleetConfig, Shared, CAPABILITY};
use super::throughput::{independent, start_nodes, Servers};
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
    /// Elements of the map scenario's `for_each` [default: 10000; 300 with --quick]; 0 skips
    /// it.
    #[arg(long)]
    pub map_items: Option<usize>,
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
    let flat = independent(
        &Servers::InProcess(&nodes),
        tasks,
        args.agents,
        batch,
        None,
        None,
        false,
    )
    .await;
    for n in nodes {
        n.stop().await;
    }
    target.cleanup().await?;
    let flat = flat?;

    // The map: a planner, a fan-out over its result, a join; on a fresh store.
    let items = super::size(args.map_items, common.quick, 300, 10_000);
    if items > baton_core::template::FOR_EACH_ITEMS_MAX {
        bail!(
            "--map-items: at most {} (FOR_EACH_ITEMS_MAX)",
            baton_core::template::FOR_EACH_ITEMS_MAX
        );
    }
    let map = if items > 0 {
        let target = Target::new(common).await?;
        let nodes = start_nodes(&target, 1, EngineConfig::default()).await?;
        let map = run_map(&nodes[0], items, args.agents, batch).await;
        for n in nodes {
            n.stop().await;
        }
        target.cleanup().await?;
        Some(map?)
    } else {
        None
    };

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
    if let Some(map) = &map {
        r.param("map_items", items)
            .float(
                "map_expansion_ms",
                "map: planner's success acknowledged to its items created",
                map.expansion_ms as f64,
                "ms",
            )
            .float(
                "map_gather_ms",
                "map: last item completed to the map completed (results gathered)",
                map.gather_ms as f64,
                "ms",
            )
            .float(
                "map_join_release_ms",
                "map: map completed to the join claimable",
                map.join_release_ms as f64,
                "ms",
            )
            .float(
                "map_makespan_s",
                "map: makespan, planner to join completed",
                map.makespan.as_secs_f64(),
                "s",
            )
            .figure(
                "map_completed",
                "map items completed",
                map.items_completed,
                "",
            )
            .figure(
                "map_join_results",
                "results the join was handed (upstream)",
                map.join_results,
                "",
            );
        if map.items_completed != items as u64 || map.join_results != items as u64 {
            r.fail(format!(
                "map: {} of {items} items completed, the join was handed {} results",
                map.items_completed, map.join_results
            ));
        }
    }
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
            plain: false,
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
    let done_at = finish(fleet, &bar, &shared).await;
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

struct MapOutcome {
    expansion_ms: i64,
    gather_ms: i64,
    join_release_ms: i64,
    makespan: Duration,
    items_completed: u64,
    join_results: u64,
}

/// Capability of the map scenario's planner, which the bench itself works (its result is the
/// array the map expands over); the fleet works the items and the join.
const PLANNER: &str = "bench-planner";

async fn run_map(
    node: &super::Node,
    items: usize,
    agents: usize,
    batch: usize,
) -> anyhow::Result<MapOutcome> {
    let client = node.client()?;
    let shared = Arc::new(Shared::default());
    let bar = super::progress(items as u64 + 1, "map");
    let fleet = Fleet::start(
        std::slice::from_ref(&client),
        FleetConfig {
            agents,
            batch,
            expected: items as u64 + 1,
            probe_claims: false,
            plain: false,
        },
        Arc::clone(&shared),
        bar.clone(),
    )
    .await?;
    let body = json!({"name": "bench-map", "tasks": [
        {"key": "plan", "capabilities": [PLANNER]},
        {"key": "map", "depends_on": ["plan"], "capabilities": [CAPABILITY],
         "for_each": {"$from": "plan", "pointer": "/items"}, "input": {"n": 1}},
        {"key": "join", "depends_on": ["map"], "capabilities": [CAPABILITY]},
    ]});
    let started = Instant::now();
    let created = client
        .submit_workflow_json(&body)
        .await
        .context("submitting the map")?;
    let planner = client
        .register_agent(
            "bench-planner",
            &[baton_core::Capability(PLANNER.into())],
            1,
        )
        .await?;
    let plan = client
        .claim(planner.id, 1, Duration::from_secs(10))
        .await?
        .pop()
        .context("the planner claims the plan")?;
    client.started(&plan, planner.id).await?;
    let elements: Vec<usize> = (0..items).collect();
    client
        .succeeded(&plan, planner.id, json!({ "items": elements }))
        .await?;
    // Expansion, as a client sees it: from the planner's success acknowledged to every item
    // created (the effect runner's wake-up, the expansion's read and its one commit).
    let reported = Instant::now();
    while client.counts(Some(created.workflow)).await?.total < items as u64 + 3 {
        if reported.elapsed() > RUN_LIMIT {
            bail!("the map never expanded");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let expansion = reported.elapsed();
    let done_at = finish(fleet, &bar, &shared).await;
    let store = node.engine.store();
    let all = workflow_tasks(store, WorkflowId(created.workflow)).await?;
    let by_key: HashMap<&str, &Task> = all.iter().map(|t| (t.spec.key.0.as_str(), t)).collect();
    let get = |key: &str| by_key.get(key).copied().context(format!("no task {key}"));
    let (map, join) = (get("map")?, get("join")?);
    let at = |t: &Task, s: StateKind| t.entered_at.get(s).map_or(0, |at| at.0 as i64);
    let item_tasks: Vec<&Task> = all
        .iter()
        .filter(|t| t.spec.key.0.starts_with("map["))
        .collect();
    let last_item = item_tasks
        .iter()
        .filter_map(|t| t.entered_at.get(StateKind::Completed))
        .map(|at| at.0 as i64)
        .max()
        .unwrap_or(0);
    let join_results = match &map.state {
        baton_core::State::Completed { result, .. } => {
            result.as_array().map_or(0, |a| a.len() as u64)
        }
        _ => 0,
    };
    Ok(MapOutcome {
        expansion_ms: expansion.as_millis() as i64,
        gather_ms: at(map, StateKind::Completed) - last_item,
        join_release_ms: at(join, StateKind::Pending) - at(map, StateKind::Completed),
        makespan: done_at.duration_since(started),
        items_completed: item_tasks
            .iter()
            .filter(|t| t.kind() == StateKind::Completed)
            .count() as u64,
        join_results,
    })
}

/// Waits for the fleet to complete what it expected; when the last completion happened.
async fn finish(fleet: Fleet, bar: &indicatif::ProgressBar, shared: &Shared) -> Instant {
    let (_, _) = fleet.finish(RUN_LIMIT).await;
    bar.finish_and_clear();
    shared
        .done_at
        .lock()
        .expect("done lock")
        .unwrap_or_else(Instant::now)
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
