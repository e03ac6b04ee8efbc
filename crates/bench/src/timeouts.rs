//! `baton bench timeouts`: claim many tasks with a short start timeout, never start them, and
//! time the watchdog taking every lease back (`Assigned` → `Pending`), with the CPU it used;
//! then durable timers: many tasks whose `not_before` falls within one second, and how late
//! after it each becomes ready (`timer_fired`: `Blocked` → `Pending`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_client::Client;
use baton_core::{Capability, StateKind};
use baton_engine::EngineConfig;
use baton_store::{Store, TaskFilter, TaskPages, PAGE_ROWS_MAX};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::agents::CAPABILITY;
use super::throughput::{start_nodes, WORKFLOW_TASKS_MAX};
use super::{Common, Latency, Report, Target};

/// Most leases one agent may hold (the engine's limit on an agent's concurrency).
const AGENT_LEASES_MAX: usize = baton_engine::AGENT_CONCURRENCY_MAX as usize;
/// Tasks per claim.
const CLAIM_MAX: usize = baton_engine::CLAIM_TASKS_MAX;
/// Longest the watchdog may take to requeue everything after the last deadline.
const REQUEUE_LIMIT: Duration = Duration::from_secs(1_800);

#[derive(clap::Args, Debug)]
pub struct TimeoutsArgs {
    /// Tasks claimed and left to time out [default: 100000; 1000 with --quick].
    #[arg(long)]
    pub tasks: Option<usize>,
    /// The tasks' start timeout (assignment to `execution_started`), in ms; it must outlast
    /// claiming them all [default: 15000; 1000 with --quick].
    #[arg(long)]
    pub start_timeout_ms: Option<u64>,
    /// Tasks with a `not_before` within one second [default: as many as --tasks; 0 skips the
    /// timers].
    #[arg(long)]
    pub timers: Option<usize>,
}

pub async fn run(common: &Common, args: TimeoutsArgs) -> anyhow::Result<Report> {
    let tasks = super::size(args.tasks, common.quick, 1_000, 100_000);
    let start_ms = args
        .start_timeout_ms
        .unwrap_or(if common.quick { 1_000 } else { 15_000 });
    if tasks == 0 || start_ms == 0 {
        bail!("--tasks and --start-timeout-ms must be at least 1");
    }
    let mut r = Report::new("timeouts");
    let target = Target::new(common).await?;
    target.report_fsync(&mut r);
    // Agents must not be declared dead meanwhile: that would take the leases back too.
    let config = EngineConfig {
        agent_ttl_ms: 24 * 3_600_000,
        ..EngineConfig::default()
    };
    // As many timers as leases when only `--tasks` is given.
    let timers = super::size(args.timers.or(args.tasks), common.quick, 1_000, 100_000);
    let nodes = start_nodes(&target, 1, config).await?;
    let out = measure(&nodes[0], tasks, start_ms).await;
    let timed = match (&out, timers) {
        (Ok(_), 1..) => Some(measure_timers(&nodes[0], timers).await),
        _ => None,
    };
    for n in nodes {
        n.stop().await;
    }
    target.cleanup().await?;
    let mut out = out?;
    if let Some(timed) = timed {
        report_timers(&mut r, timed?);
    }

    r.param("store", target.kind())
        .param("tasks", tasks)
        .param("start_timeout_ms", start_ms);
    // Counted before the percentiles, which read a negative lag as 0.
    let early = out.lag_ms.iter().filter(|&&ms| ms < 0).count();
    let lag = Latency::of_ms(&mut out.lag_ms);
    r.figure("requeued", "tasks requeued", out.requeued, "")
        .figure(
            "requeued_before_deadline",
            "requeued before their deadline",
            early,
            "",
        )
        .float(
            "claim_s",
            "claiming them all",
            out.claiming.as_secs_f64(),
            "s",
        )
        .float(
            "deadline_spread_s",
            "first to last deadline",
            (out.last_deadline - out.first_deadline) as f64 / 1e3,
            "s",
        )
        .float(
            "requeue_after_last_deadline_ms",
            "last deadline to all requeued",
            out.all_requeued as f64 - out.last_deadline as f64,
            "ms",
        )
        .float("lag_p50_ms", "deadline to requeued p50", lag.p50, "ms")
        .float("lag_p99_ms", "deadline to requeued p99", lag.p99, "ms")
        .float("lag_max_ms", "deadline to requeued max", lag.max, "ms")
        .float(
            "requeues_per_s",
            "requeues/s (first deadline to all requeued)",
            out.requeued as f64 * 1e3 / (out.all_requeued - out.first_deadline).max(1) as f64,
            "/s",
        )
        .float(
            "cpu_s",
            "CPU time meanwhile (process)",
            out.cpu.as_secs_f64(),
            "s",
        )
        .float(
            "cpu_per_requeue_us",
            "CPU per requeue",
            out.cpu.as_secs_f64() * 1e6 / out.requeued.max(1) as f64,
            "µs",
        )
        .float(
            "cpu_utilisation",
            "CPU / wall time meanwhile",
            out.cpu.as_secs_f64() * 1e3 / (out.all_requeued - out.first_deadline).max(1) as f64,
            "cores",
        );
    r.note("CPU is this process's (getrusage) from the first deadline to the last requeue: the agents are idle then, so it is the engine's watchdog and store");
    if out.first_deadline < out.claims_done {
        r.note(format!(
            "the first deadline passed {} ms before claiming ended: raise --start-timeout-ms",
            out.claims_done - out.first_deadline
        ));
    }
    if out.requeued != tasks as u64 {
        r.fail(format!("{} of {tasks} tasks requeued", out.requeued));
    }
    if early > 0 {
        r.fail(format!("{early} tasks requeued before their deadline"));
    }
    Ok(r)
}

/// How late after its `not_before` each timer task became ready.
struct Timed {
    tasks: usize,
    /// Server clock: the first and the last `not_before`.
    window_ms: u64,
    submitting: Duration,
    ready: u64,
    lag_ms: Vec<i64>,
}

fn report_timers(r: &mut Report, mut t: Timed) {
    let early = t.lag_ms.iter().filter(|&&ms| ms < 0).count();
    let late = t.lag_ms.iter().filter(|&&ms| ms > 1_000).count();
    let lag = Latency::of_ms(&mut t.lag_ms);
    r.param("timers", t.tasks)
        .figure("timers_ready", "timer tasks ready", t.ready, "")
        .float(
            "timers_submit_s",
            "submitting the timer tasks",
            t.submitting.as_secs_f64(),
            "s",
        )
        .float(
            "timers_window_s",
            "first to last not_before",
            t.window_ms as f64 / 1e3,
            "s",
        )
        .float("timer_lag_p50_ms", "not_before to ready p50", lag.p50, "ms")
        .float("timer_lag_p99_ms", "not_before to ready p99", lag.p99, "ms")
        .float("timer_lag_max_ms", "not_before to ready max", lag.max, "ms")
        .figure(
            "timers_late",
            "ready more than 1 s after their time",
            late,
            "",
        );
    if t.ready != t.tasks as u64 {
        r.fail(format!(
            "{} of {} timer tasks became ready",
            t.ready, t.tasks
        ));
    }
    if early > 0 {
        r.fail(format!(
            "{early} timer tasks were ready before their not_before"
        ));
    }
}

/// Submits `tasks` tasks whose `not_before` spreads over one second, far enough ahead that
/// submitting them all ends first, then reads how late each became ready.
async fn measure_timers(node: &super::Node, tasks: usize) -> anyhow::Result<Timed> {
    let client = node.client()?;
    let engine = &node.engine;
    // Ample time to submit them all (about 20,000 tasks/s when measured), then one second.
    let start = engine.now().0 + 5_000 + tasks as u64 / 5;
    let at = |i: usize| start + (i as u64 * 1_000) / tasks as u64;
    let began = Instant::now();
    let mut next = 0;
    while next < tasks {
        let end = (next + WORKFLOW_TASKS_MAX).min(tasks);
        let specs: Vec<Value> = (next..end)
            .map(|i| {
                json!({
                    "key": format!("t{i}"),
                    "capabilities": ["nobody"],
                    "not_before": at(i),
                })
            })
            .collect();
        client
            .submit_workflow_json(&json!({"name": "bench-timers", "tasks": specs}))
            .await
            .context("submitting the timer tasks")?;
        next = end;
    }
    let submitting = began.elapsed();
    if engine.now().0 > start {
        bail!(
            "submitting {tasks} timer tasks took {:.1} s, past their first not_before: \
             measure fewer (--timers) or on a release build",
            submitting.as_secs_f64()
        );
    }
    let store = engine.store();
    let bar = super::progress(tasks as u64, "timers ready");
    let give_up = Instant::now() + Duration::from_millis(start - engine.now().0) + REQUEUE_LIMIT;
    loop {
        let blocked = store.counts(None).await?.get(StateKind::Blocked);
        bar.set_position(tasks as u64 - blocked.min(tasks as u64));
        if blocked == 0 || Instant::now() > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bar.finish_and_clear();
    let mut lag_ms = Vec::with_capacity(tasks);
    let mut ready = 0;
    let mut pages = TaskPages::new(TaskFilter {
        state: Some(StateKind::Pending),
        ..TaskFilter::default()
    });
    while let Some(page) = pages.next(store).await? {
        for t in &page {
            let (Some(nb), Some(p)) = (t.spec.not_before, t.entered_at.get(StateKind::Pending))
            else {
                continue;
            };
            ready += 1;
            lag_ms.push(p.0 as i64 - nb.0 as i64);
        }
        if page.len() < PAGE_ROWS_MAX {
            break;
        }
    }
    Ok(Timed {
        tasks,
        window_ms: at(tasks - 1) - start,
        submitting,
        ready,
        lag_ms,
    })
}

struct Outcome {
    claiming: Duration,
    /// Server clock, ms since the epoch.
    claims_done: u64,
    first_deadline: u64,
    last_deadline: u64,
    all_requeued: u64,
    requeued: u64,
    lag_ms: Vec<i64>,
    cpu: Duration,
}

async fn measure(node: &super::Node, tasks: usize, start_ms: u64) -> anyhow::Result<Outcome> {
    let client = node.client()?;
    let engine = &node.engine;
    let mut next = 0;
    while next < tasks {
        let end = (next + WORKFLOW_TASKS_MAX).min(tasks);
        let specs: Vec<Value> = (next..end)
            .map(|i| {
                json!({
                    "key": format!("t{i}"),
                    "capabilities": [CAPABILITY],
                    "timeouts": {"start_ms": start_ms},
                })
            })
            .collect();
        client
            .submit_workflow_json(&json!({"name": "bench-timeouts", "tasks": specs}))
            .await
            .context("submitting")?;
        next = end;
    }

    let bar = super::progress(tasks as u64, "claiming");
    let agents = tasks.div_ceil(AGENT_LEASES_MAX);
    let started = Instant::now();
    let mut claimers = JoinSet::new();
    for a in 0..agents {
        let share = AGENT_LEASES_MAX.min(tasks - a * AGENT_LEASES_MAX);
        let client = client.clone();
        let bar = bar.clone();
        claimers.spawn(claim_share(client, a, share, bar));
    }
    let mut first = u64::MAX;
    let mut last = 0;
    while let Some(r) = claimers.join_next().await {
        let (f, l) = r.context("a claimer")??;
        first = first.min(f);
        last = last.max(l);
    }
    let claiming = started.elapsed();
    let claims_done = engine.now().0;
    bar.finish_and_clear();

    // From the first deadline on, the watchdog works; measure its CPU until all are back.
    let wait = first.saturating_sub(engine.now().0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let cpu0 = super::cpu_time();
    let bar = super::progress(tasks as u64, "requeued");
    let store = engine.store();
    let give_up = Instant::now() + Duration::from_millis(last - first) + REQUEUE_LIMIT;
    let all_requeued = loop {
        let counts = store.counts(None).await?;
        bar.set_position(counts.get(StateKind::Pending));
        if counts.get(StateKind::Assigned) == 0 {
            break engine.now().0;
        }
        if Instant::now() > give_up {
            break engine.now().0;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let cpu = super::cpu_time().saturating_sub(cpu0);
    bar.finish_and_clear();

    let mut lag_ms = Vec::with_capacity(tasks);
    let mut requeued = 0;
    let mut pages = TaskPages::new(TaskFilter::default());
    while let Some(page) = pages.next(store).await? {
        for t in &page {
            if t.kind() != StateKind::Pending {
                continue;
            }
            if let (Some(a), Some(p)) = (
                t.entered_at.get(StateKind::Assigned),
                t.entered_at.get(StateKind::Pending),
            ) {
                if p > a {
                    requeued += 1;
                    lag_ms.push(p.0 as i64 - (a.0 + start_ms) as i64);
                }
            }
        }
        if page.len() < PAGE_ROWS_MAX {
            break;
        }
    }
    Ok(Outcome {
        claiming,
        claims_done,
        first_deadline: first,
        last_deadline: last,
        all_requeued,
        requeued,
        lag_ms,
        cpu,
    })
}

/// One agent claims `share` tasks; returns the earliest and latest start deadline it got.
async fn claim_share(
    client: Client,
    n: usize,
    share: usize,
    bar: indicatif::ProgressBar,
) -> anyhow::Result<(u64, u64)> {
    let view = client
        .register_agent(
            &format!("bench-timeouts-{n}"),
            &[Capability(CAPABILITY.into())],
            share as u32,
        )
        .await?;
    let mut got = 0;
    let (mut first, mut last) = (u64::MAX, 0);
    while got < share {
        let want = CLAIM_MAX.min(share - got);
        let claimed = client
            .claim(view.id, want, Duration::from_millis(1_000))
            .await?;
        if claimed.is_empty() {
            bail!("agent {n} found no task after {got} of {share}");
        }
        for t in &claimed {
            let d = t.deadlines.start.unwrap_or(0);
            first = first.min(d);
            last = last.max(d);
        }
        got += claimed.len();
        bar.inc(claimed.len() as u64);
    }
    Ok((first, last))
}
