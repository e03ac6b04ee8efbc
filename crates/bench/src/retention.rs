//! `baton bench retention`: a steady workload (workflows submitted at a fixed pace, worked
//! by agents) under a short retention, the store's size on disk sampled as it runs: once the
//! first workflows outlive the retention, what is deleted makes room for what comes, and the
//! size stays flat. `--retain 0` runs the same without retention, for the contrast.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_core::StateKind;
use baton_engine::{EngineConfig, GcOptions};
use baton_store::Store;
use serde_json::{json, Value};

use super::agents::{Fleet, FleetConfig, Shared};
use super::throughput::{start_nodes, task_spec};
use super::{Common, Report, Target};

const MIB: f64 = 1024.0 * 1024.0;
/// How often the bench vacuums a PostgreSQL store whose server runs no autovacuum.
const VACUUM_EVERY: Duration = Duration::from_secs(10);

/// A task that runs `VACUUM` on the schema's tables every [`VACUUM_EVERY`] until told to
/// stop, when the server's autovacuum is off (what a test server may turn off); `None` when
/// autovacuum runs.
async fn vacuum_if_autovacuum_is_off(
    base: &str,
    schema: &str,
) -> anyhow::Result<
    Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
> {
    let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(conn);
    let on: String = client.query_one("SHOW autovacuum", &[]).await?.get(0);
    if on != "off" {
        return Ok(None);
    }
    let tables: Vec<String> = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename",
            &[&schema],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let schema = schema.to_owned();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(VACUUM_EVERY) => {}
                _ = &mut stopped => return,
            }
            for t in &tables {
                let _ = client
                    .batch_execute(&format!("VACUUM \"{schema}\".\"{t}\""))
                    .await;
            }
        }
    });
    Ok(Some((stop, task)))
}

#[derive(clap::Args, Debug)]
pub struct RetentionArgs {
    /// How long the workload runs, in seconds [default: 180; 30 with --quick].
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// Workflows submitted per second.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Tasks per workflow.
    #[arg(long, default_value_t = 100)]
    pub tasks: usize,
    /// Bytes of each task's input (the bulk of what a task stores).
    #[arg(long, default_value_t = 1_024)]
    pub input_bytes: usize,
    /// Workflows are deleted this long after they finished (`baton serve --retain`, in ms
    /// here); 0 keeps them, for the contrast.
    #[arg(long, default_value_t = 10_000)]
    pub retain_ms: u64,
    /// How often the node runs a retention pass (the server's is a minute).
    #[arg(long, default_value_t = 2_000)]
    pub gc_every_ms: u64,
    /// How often the store's size is sampled.
    #[arg(long, default_value_t = 5_000)]
    pub sample_ms: u64,
    /// Agents, each claiming a batch at a time.
    #[arg(long, default_value_t = 4)]
    pub agents: usize,
    /// Tasks per claim.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub batch: u32,
}

/// One sample of the store while the workload runs.
struct Sample {
    at: Duration,
    bytes: u64,
    tasks: u64,
}

pub async fn run(common: &Common, args: RetentionArgs) -> anyhow::Result<Report> {
    let duration =
        Duration::from_secs(
            super::size(args.duration_s.map(|s| s as usize), common.quick, 30, 180) as u64,
        );
    if args.rate <= 0.0 || args.tasks == 0 || args.agents == 0 || args.sample_ms == 0 {
        bail!("--rate, --tasks, --agents and --sample-ms must be above 0");
    }
    let workflows = (args.rate * duration.as_secs_f64()).ceil() as u64;
    let total = workflows * args.tasks as u64;
    let target = Target::new(common).await?;
    let mut r = Report::new("retention");
    target.report_fsync(&mut r);
    let config = EngineConfig {
        retain_ms: args.retain_ms,
        retention_interval_ms: args.gc_every_ms.max(1),
        ..EngineConfig::default()
    };
    let nodes = start_nodes(&target, 1, config).await?;
    let client = nodes[0].client()?;
    let shared = Arc::new(Shared::default());
    let bar = super::progress(total, "retention");
    let fleet = Fleet::start(
        std::slice::from_ref(&client),
        FleetConfig {
            agents: args.agents,
            batch: args.batch as usize,
            expected: total,
            probe_claims: false,
            plain: false,
        },
        Arc::clone(&shared),
        bar.clone(),
    )
    .await?;
    let input = json!({ "text": "x".repeat(args.input_bytes) });
    let specs: Vec<Value> = (0..args.tasks)
        .map(|i| task_spec(&format!("t{i}"), Some(&json!({ "input": input }))))
        .collect();
    let body = json!({ "name": "steady", "tasks": specs });
    let engine = nodes[0].engine.clone();
    let vacuum = match &target {
        Target::Postgres { base, schema } => vacuum_if_autovacuum_is_off(base, schema).await?,
        Target::Sqlite(_) => None,
    };
    if vacuum.is_some() {
        r.note(format!(
            "PostgreSQL's autovacuum is off on this server: the bench runs VACUUM on the store's \
             tables every {} s, as autovacuum would",
            VACUUM_EVERY.as_secs()
        ));
    }
    let started = Instant::now();
    let pace = Duration::from_secs_f64(1.0 / args.rate);
    let sample_every = Duration::from_millis(args.sample_ms);
    let mut samples = Vec::new();
    let mut next_sample = Duration::ZERO;
    for n in 0..workflows {
        let due = pace.mul_f64(n as f64);
        let now = started.elapsed();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        if started.elapsed() >= next_sample {
            samples.push(sample(&engine, started.elapsed()).await?);
            next_sample += sample_every;
        }
        client
            .submit_workflow_json(&body)
            .await
            .context("submitting a workflow")?;
        shared
            .submitted
            .fetch_add(args.tasks as u64, Ordering::Relaxed);
    }
    let submitting = started.elapsed();
    let (all_done, _) = fleet.finish(duration + Duration::from_secs(600)).await;
    bar.finish_and_clear();
    samples.push(sample(&engine, started.elapsed()).await?);
    // Once everything has outlived the retention, one more pass: what is left is what the
    // retention keeps.
    if args.retain_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.retain_ms + 100)).await;
        engine.collect(GcOptions::default()).await?;
    }
    if let Some((stop, task)) = vacuum {
        let _ = stop.send(());
        let _ = task.await;
    }
    let settled = sample(&engine, started.elapsed()).await?;
    let completed = engine.store().counts(None).await?;
    let metrics = engine.metrics_text().await?;
    let deleted = metric(
        &metrics,
        "baton_retention_deleted_total{kind=\"workflows\"}",
    );
    let deleted_tasks = metric(&metrics, "baton_retention_deleted_total{kind=\"tasks\"}");
    let errors = shared.errors.load(Ordering::Relaxed);
    let first_error = shared.first_error.lock().expect("error lock").clone();
    for n in nodes {
        n.stop().await;
    }
    target.cleanup().await?;

    r.param("store", target.kind())
        .param("duration_s", duration.as_secs())
        .param("rate", args.rate)
        .param("tasks", args.tasks)
        .param("input_bytes", args.input_bytes)
        .param("retain_ms", args.retain_ms)
        .param("gc_every_ms", args.gc_every_ms)
        .param("agents", args.agents);
    // Warm-up: until the first workflows outlive the retention (and a pass ran); the rest
    // is the steady state, split in halves.
    let warm = Duration::from_millis(args.retain_ms + 2 * args.gc_every_ms);
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm).collect();
    let half = steady.len() / 2;
    let peak = |xs: &[&Sample]| xs.iter().map(|s| s.bytes).max().unwrap_or(0);
    let (first, second) = (peak(&steady[..half]), peak(&steady[half..]));
    r.float(
        "tasks_per_s",
        "tasks per second (the pace kept)",
        total as f64 / submitting.max(Duration::from_millis(1)).as_secs_f64(),
        "tasks/s",
    )
    .figure("tasks_submitted", "tasks submitted", total, "")
    .figure(
        "workflows_deleted",
        "workflows deleted by retention",
        deleted,
        "",
    )
    .figure(
        "tasks_deleted",
        "tasks deleted by retention",
        deleted_tasks,
        "",
    )
    .float(
        "store_mib_first_half_peak",
        "store size, steady state, first half: peak",
        first as f64 / MIB,
        "MiB",
    )
    .float(
        "store_mib_second_half_peak",
        "store size, steady state, second half: peak",
        second as f64 / MIB,
        "MiB",
    )
    .float(
        "store_growth_pct",
        "growth from the first half's peak to the second's",
        if first == 0 {
            0.0
        } else {
            (second as f64 / first as f64 - 1.0) * 100.0
        },
        "%",
    )
    .float(
        "store_mib_end",
        "store size once the last workflows outlived the retention",
        settled.bytes as f64 / MIB,
        "MiB",
    )
    .figure("tasks_stored_end", "tasks stored then", settled.tasks, "")
    .figure(
        "samples",
        "samples [s, MiB, tasks stored]",
        Value::Array(
            samples
                .iter()
                .map(|s| json!([s.at.as_secs(), super::round(s.bytes as f64 / MIB), s.tasks]))
                .collect(),
        ),
        "",
    );
    if args.retain_ms == 0 {
        r.note("--retain-ms 0: nothing is deleted, the store grows with the work");
    }
    if let Some(e) = first_error {
        r.note(format!("{errors} request errors, the first: {e}"));
    }
    let done = completed.get(StateKind::Completed) + deleted_tasks;
    if !all_done || done != total {
        r.fail(format!(
            "{done} of {total} tasks completed (stored {} + deleted {deleted_tasks})",
            completed.get(StateKind::Completed)
        ));
    }
    if args.retain_ms > 0 && completed.total() != settled.tasks {
        r.fail("the counts and the sample disagree");
    }
    Ok(r)
}

async fn sample(
    engine: &baton_engine::Engine<baton_store::AnyStore>,
    at: Duration,
) -> anyhow::Result<Sample> {
    let store = engine.store();
    Ok(Sample {
        at,
        bytes: store.size_bytes().await?,
        tasks: store.counts(None).await?.total(),
    })
}

/// A counter's value in the metrics text (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
