//! `baton bench scale`: does a big store cost anything on the hot paths? Builds a store of N
//! finished tasks through the store API directly (the fast path, not HTTP), then starts
//! `baton serve` on it as a child process and measures its start time, RSS, claim latency
//! and counts latency, beside the same on an empty store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_client::Client;
use baton_core::{
    AgentId, Capability, Event, FencingToken, LeaseId, Submission, Task, TaskId, TaskSpec,
    Timestamp, WorkflowId,
};
use baton_store::{NewTask, NewWorkflow, Store, SubmitBatch, TransitionRecord, WorkflowRef};
use serde_json::json;
use uuid::Uuid;

use super::agents::CAPABILITY;
use super::child::{store_args, Serve};
use super::{Common, Latency, Report, Target};

/// Tasks written per store transaction while building.
const BUILD_BATCH: usize = 5_000;

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// Finished tasks in the big store [default: 1000000; 2000 with --quick].
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Claims and counts timed on each store [default: 500; 100 with --quick].
    #[arg(long)]
    pub probes: Option<usize>,
}

pub async fn run(common: &Common, args: ScaleArgs) -> anyhow::Result<Report> {
    let tasks = super::size(args.tasks, common.quick, 2_000, 1_000_000);
    let probes = super::size(args.probes, common.quick, 100, 500);
    if probes == 0 {
        bail!("--probes must be at least 1");
    }

    let empty_target = Target::new(common).await?;
    // Created (migrated) beforehand, as the big one is: both starts open an existing store.
    drop(empty_target.open().await?);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let empty = probe(&empty_target, probes).await;
    empty_target.cleanup().await?;
    let empty = empty?;

    let big_target = Target::new(common).await?;
    let built = build(&big_target, tasks).await;
    let big = match built {
        Ok(b) => probe(&big_target, probes).await.map(|p| (b, p)),
        Err(e) => Err(e),
    };
    let file_mib = match &big_target {
        Target::Sqlite(dir) => dir_size(dir.path()) as f64 / (1024.0 * 1024.0),
        Target::Postgres { .. } => 0.0,
    };
    big_target.cleanup().await?;
    let (building, big) = big?;

    let mut r = Report::new("scale");
    r.param("store", big_target.kind())
        .param("tasks", tasks)
        .param("probes", probes)
        .param("server", "child process (baton serve)");
    r.float(
        "build_s",
        "building the big store",
        building.as_secs_f64(),
        "s",
    )
    .float(
        "build_tasks_per_s",
        "  finished tasks written",
        tasks as f64 / building.as_secs_f64(),
        "tasks/s",
    );
    if file_mib > 0.0 {
        r.float("store_mib", "  SQLite files", file_mib, "MiB");
    }
    for (name, p) in [("empty", &empty), ("big", &big)] {
        let label = if name == "empty" {
            "empty store:".to_owned()
        } else {
            format!("{tasks} tasks:")
        };
        r.float(
            format!("{name}_start_ms"),
            format!("{label} server start"),
            p.start_ms,
            "ms",
        )
        .float(
            format!("{name}_rss_mib"),
            format!("{label} RSS after start"),
            p.rss_start,
            "MiB",
        )
        .float(
            format!("{name}_peak_rss_mib"),
            format!("{label} peak RSS after probes"),
            p.rss_peak,
            "MiB",
        )
        .float(
            format!("{name}_claim_p50_ms"),
            format!("{label} claim p50"),
            p.claim.p50,
            "ms",
        )
        .float(
            format!("{name}_claim_p99_ms"),
            format!("{label} claim p99"),
            p.claim.p99,
            "ms",
        )
        .float(
            format!("{name}_counts_p50_ms"),
            format!("{label} counts p50"),
            p.counts.p50,
            "ms",
        )
        .float(
            format!("{name}_counts_p99_ms"),
            format!("{label} counts p99"),
            p.counts.p99,
            "ms",
        )
        .figure(
            format!("{name}_total"),
            format!("{label} tasks counted"),
            p.total,
            "",
        )
        .figure(
            format!("{name}_completed"),
            format!("{label} tasks completed"),
            p.completed,
            "",
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    r.float(
        "claim_p50_ratio",
        "claim p50, big / empty",
        ratio(big.claim.p50, empty.claim.p50),
        "",
    )
    .float(
        "counts_p50_ratio",
        "counts p50, big / empty",
        ratio(big.counts.p50, empty.counts.p50),
        "",
    )
    .float(
        "rss_ratio",
        "RSS after start, big / empty",
        ratio(big.rss_start, empty.rss_start),
        "",
    );
    r.note("each probe is one HTTP round trip to a child `baton serve` (claim of one task with wait_ms 0, or GET /v1/counts); the big store's tasks were written through Store::submit + apply_all");
    if big.total != (tasks + probes) as u64 || empty.total != probes as u64 {
        r.fail(format!(
            "counted {} and {} tasks, expected {} and {probes}",
            big.total,
            empty.total,
            tasks + probes
        ));
    }
    Ok(r)
}

/// Writes `tasks` finished tasks (submitted, assigned, started, succeeded: full histories).
async fn build(target: &Target, tasks: usize) -> anyhow::Result<Duration> {
    let store = target.open().await?;
    let bar = super::progress(tasks as u64, "building");
    let started = Instant::now();
    let agent = AgentId(Uuid::now_v7());
    let caps = BTreeSet::from([Capability(CAPABILITY.into())]);
    let mut done = 0;
    while done < tasks {
        let n = BUILD_BATCH.min(tasks - done);
        let now = now();
        let workflow = WorkflowId(Uuid::now_v7());
        let mut new = Vec::with_capacity(n);
        let mut records = Vec::with_capacity(3 * n);
        for i in done..done + n {
            let mut spec = TaskSpec::new(format!("t{i}"));
            spec.capabilities = caps.clone();
            let sub = Submission {
                task: TaskId(Uuid::now_v7()),
                workflow,
                spec: Arc::new(spec),
                completed: Vec::new(),
                seed: i as u64,
                input: None,
                unresolved: None,
            };
            let (created, t) = NewTask::submitted(sub, now)?;
            let mut task = t.task;
            new.push(created);
            let token = FencingToken(task.fencing_token.0 + 1);
            for event in [
                Event::AgentAssigned {
                    agent,
                    capabilities: caps.clone(),
                    lease: LeaseId(Uuid::now_v7()),
                },
                Event::ExecutionStarted {
                    agent,
                    token,
                    by_claim: false,
                },
                Event::ExecutionSucceeded {
                    usage: Default::default(),
                    agent,
                    token,
                    result: Some(json!({"i": i})),
                },
            ] {
                let rec = record(&task, event, now)?;
                task = rec.task.clone();
                records.push(rec);
            }
        }
        store
            .submit(SubmitBatch {
                workflow: WorkflowRef::New(NewWorkflow {
                    budgets: Default::default(),
                    id: workflow,
                    name: "bench-scale".into(),
                    idempotency_key: None,
                    request_hash: String::new(),
                    created_at: now,
                    outputs: None,
                    labels: Default::default(),
                }),
                tasks: new,
                edges: Vec::new(),
                transitions: Vec::new(),
            })
            .await?;
        for r in store.apply_all(records).await? {
            r.context("writing a transition")?;
        }
        done += n;
        bar.set_position(done as u64);
    }
    bar.finish_and_clear();
    let took = started.elapsed();
    drop(store);
    // Let the SQLite writer thread close its connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(took)
}

fn record(task: &Task, event: Event, at: Timestamp) -> anyhow::Result<TransitionRecord> {
    Ok(TransitionRecord::apply(task, event, at)?)
}

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

struct Probe {
    start_ms: f64,
    rss_start: f64,
    rss_peak: f64,
    claim: Latency,
    counts: Latency,
    total: u64,
    /// Completed tasks after the probes (each probe completes one).
    completed: u64,
}

/// Starts `baton serve` on the store and times it.
async fn probe(target: &Target, probes: usize) -> anyhow::Result<Probe> {
    let log = std::env::temp_dir().join(format!("baton-bench-scale-{}.log", std::process::id()));
    let serve = Serve::start("127.0.0.1:0", &store_args(target), &[], &log).await?;
    let out = probe_running(&serve, probes).await;
    serve.stop(Duration::from_secs(10)).await?;
    let _ = std::fs::remove_file(&log);
    out
}

async fn probe_running(serve: &Serve, probes: usize) -> anyhow::Result<Probe> {
    let start_ms = serve.start_time.as_secs_f64() * 1e3;
    let rss_start = serve.status_mib("VmRSS:");
    let client = Client::new(&serve.base)?;
    let agent = client
        .register_agent("bench-scale", &[Capability(CAPABILITY.into())], 1)
        .await?;
    let specs: Vec<serde_json::Value> = (0..probes)
        .map(|i| json!({"key": format!("probe{i}"), "capabilities": [CAPABILITY]}))
        .collect();
    client
        .submit_workflow_json(&json!({"name": "bench-scale-probes", "tasks": specs}))
        .await?;
    let mut claims = Vec::with_capacity(probes);
    for _ in 0..probes {
        let sent = Instant::now();
        let got = client.claim(agent.id, 1, Duration::ZERO).await?;
        claims.push(sent.elapsed());
        let Some(task) = got.first() else {
            bail!("a claim found no probe task");
        };
        client.started(task, agent.id).await?;
        client.succeeded(task, agent.id, json!({})).await?;
    }
    let mut counts = Vec::with_capacity(probes);
    let mut last = baton_client::wire::Counts::default();
    for _ in 0..probes {
        let sent = Instant::now();
        last = client.counts(None).await?;
        counts.push(sent.elapsed());
    }
    Ok(Probe {
        start_ms,
        rss_start,
        rss_peak: serve.status_mib("VmHWM:"),
        claim: Latency::of(&mut claims),
        counts: Latency::of(&mut counts),
        total: last.total,
        completed: last.completed,
    })
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
