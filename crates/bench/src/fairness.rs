//! `baton bench fairness`: a small workflow submitted behind a big backlog. Claims take from
//! each fairness group in turn, so the small one should finish in about the time its own tasks
//! take, not after the backlog.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_core::{StateKind, WorkflowId};
use baton_engine::EngineConfig;
use baton_store::{Store, TaskFilter, TaskPages};
use serde_json::json;

use super::agents::{Fleet, FleetConfig, Shared};
use super::throughput::{start_nodes, task_spec, WORKFLOW_TASKS_MAX};
use super::{Common, Report, Target};

/// Longest a run may take before it is reported unfinished.
const RUN_LIMIT: Duration = Duration::from_secs(3_600);
/// What the issue asks of the small workflow: done within this long of its submission.
const SMALL_TARGET: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct FairnessArgs {
    /// Tasks of the backlog, submitted first as workflows of 10,000 sharing one fairness key
    /// (one group, as one big workflow would be) [default: 100000; 5000 with --quick].
    #[arg(long)]
    pub big: Option<usize>,
    /// Tasks of the small workflow, submitted after the backlog.
    #[arg(long, default_value_t = 10)]
    pub small: usize,
    /// Wait this long after the backlog was accepted before submitting the small workflow.
    #[arg(long, default_value_t = 1_000)]
    pub after_ms: u64,
    /// Agents, each claiming a batch at a time.
    #[arg(long, default_value_t = 8)]
    pub agents: usize,
    /// Tasks per claim.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub batch: u32,
}

pub async fn run(common: &Common, args: FairnessArgs) -> anyhow::Result<Report> {
    let big = super::size(args.big, common.quick, 5_000, 100_000);
    if big == 0 || args.small == 0 || args.agents == 0 {
        bail!("--big, --small and --agents must be at least 1");
    }
    let target = Target::new(common).await?;
    let mut r = Report::new("fairness");
    target.report_fsync(&mut r);
    let nodes = start_nodes(&target, 1, EngineConfig::default()).await?;
    let client = nodes[0].client()?;
    let shared = Arc::new(Shared::default());
    let total = (big + args.small) as u64;
    let bar = super::progress(total, "fairness");
    let fleet = Fleet::start(
        std::slice::from_ref(&client),
        FleetConfig {
            agents: args.agents,
            batch: args.batch as usize,
            expected: total,
            probe_claims: true,
            plain: false,
        },
        Arc::clone(&shared),
        bar.clone(),
    )
    .await?;
    let started = Instant::now();
    let grouped = json!({"fairness_key": "backlog"});
    let mut next = 0;
    while next < big {
        let end = (next + WORKFLOW_TASKS_MAX).min(big);
        let specs: Vec<_> = (next..end)
            .map(|i| task_spec(&format!("t{i}"), Some(&grouped)))
            .collect();
        client
            .submit_workflow_json(&json!({"name": "backlog", "tasks": specs}))
            .await
            .context("submitting the backlog")?;
        shared
            .submitted
            .fetch_add((end - next) as u64, Ordering::Relaxed);
        next = end;
    }
    let backlog_submitted = started.elapsed();
    tokio::time::sleep(Duration::from_millis(args.after_ms)).await;
    let ahead = big as u64 - shared.completed.load(Ordering::Relaxed).min(big as u64);
    let specs: Vec<_> = (0..args.small)
        .map(|i| task_spec(&format!("s{i}"), None))
        .collect();
    let small = client
        .submit_workflow_json(&json!({"name": "small", "tasks": specs}))
        .await
        .context("submitting the small workflow")?;
    shared
        .submitted
        .fetch_add(args.small as u64, Ordering::Relaxed);
    let (all_done, _) = fleet.finish(RUN_LIMIT).await;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let store = nodes[0].engine.store();
    let small_id = WorkflowId(small.workflow);
    let created = store
        .workflow(small_id)
        .await?
        .context("the small workflow")?
        .created_at;
    let mut small_done = 0;
    let mut pages = TaskPages::new(TaskFilter {
        workflow: Some(small_id),
        ..TaskFilter::default()
    });
    while let Some(page) = pages.next(store).await? {
        for t in &page {
            let done = t
                .entered_at
                .get(StateKind::Completed)
                .context("a small task unfinished")?;
            small_done = small_done.max(done.0);
        }
    }
    let makespan = Duration::from_millis(small_done.saturating_sub(created.0));
    let completed = store.counts(None).await?.get(StateKind::Completed);
    for n in nodes {
        n.stop().await;
    }
    target.cleanup().await?;

    r.param("store", target.kind())
        .param("big", big)
        .param("small", args.small)
        .param("after_ms", args.after_ms)
        .param("agents", args.agents)
        .param("batch", args.batch);
    r.float(
        "small_makespan_s",
        "small workflow: submitted to its last task completed (server clock)",
        makespan.as_secs_f64(),
        "s",
    )
    .figure(
        "backlog_ahead",
        "backlog tasks not yet completed when it was submitted",
        ahead,
        "",
    )
    .float(
        "tasks_per_s",
        "all tasks, end to end",
        completed as f64 / elapsed.as_secs_f64(),
        "tasks/s",
    )
    .float(
        "backlog_submit_s",
        "submitting the backlog",
        backlog_submitted.as_secs_f64(),
        "s",
    )
    .figure("completed", "tasks completed", completed, "");
    r.note(format!(
        "in submission order the small workflow would wait for the {ahead} backlog tasks ahead \
         of it; target: done within {} s",
        SMALL_TARGET.as_secs()
    ));
    if !all_done || completed != total {
        r.fail(format!("{completed} of {total} tasks completed"));
    }
    Ok(r)
}
