//! `baton bench core` and `baton bench store`: the ceilings under the end-to-end figures. The
//! pure core's transitions/s; durable transitions/s of the store with group commit at a few
//! concurrency levels, beside raw SQLite writing comparable rows in transactions of the same
//! size, and the disk's own fsync rate.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_core::{
    apply, submit, AgentId, Capability, Event, FencingToken, LeaseId, StateKind, Submission, Task,
    TaskId, TaskSpec, Timestamp, WorkflowId,
};
use baton_store::{workload, TransitionRecord};
use serde_json::json;
use uuid::Uuid;

use super::{Common, Report, Target};

#[derive(clap::Args, Debug)]
pub struct CoreArgs {
    /// How long to loop, in ms [default: 3000; 300 with --quick].
    #[arg(long)]
    pub millis: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// Concurrent writers to measure at (each level is about the group-commit batch size)
    /// [default: 1,4,16,64,256; 1,16 with --quick].
    #[arg(long, value_delimiter = ',')]
    pub writers: Vec<usize>,
    /// How long each level runs, in ms [default: 3000; 300 with --quick].
    #[arg(long)]
    pub millis: Option<u64>,
}

// ---- core -----------------------------------------------------------------------------------

const AGENT: AgentId = AgentId(Uuid::from_u128(0xa6e7));

fn caps() -> BTreeSet<Capability> {
    BTreeSet::from([Capability::from("llm"), Capability::from("summarize")])
}

/// The four events that take a pending task to completion.
fn happy_path() -> [(Event, Timestamp); 4] {
    let token = FencingToken(1);
    [
        (
            Event::AgentAssigned {
                agent: AGENT,
                capabilities: caps(),
                lease: LeaseId(Uuid::from_u128(3)),
            },
            Timestamp(1_000),
        ),
        (
            Event::ExecutionStarted {
                by_claim: false,
                agent: AGENT,
                token,
            },
            Timestamp(1_010),
        ),
        (
            Event::Heartbeat {
                usage: Default::default(),
                agent: AGENT,
                token,
                progress: Some(json!({ "done": 0.5 })),
            },
            Timestamp(5_000),
        ),
        (
            Event::ExecutionSucceeded {
                usage: Default::default(),
                agent: AGENT,
                token,
                result: Some(json!({ "summary": "fine" })),
            },
            Timestamp(9_000),
        ),
    ]
}

fn pending_task() -> anyhow::Result<Task> {
    let mut spec = TaskSpec::new("summarize");
    spec.capabilities = caps();
    spec.input = json!({ "document": "s3://bucket/report.pdf", "words": 200 });
    let sub = Submission {
        task: TaskId(Uuid::from_u128(1)),
        workflow: WorkflowId(Uuid::from_u128(2)),
        spec: Arc::new(spec),
        completed: Vec::new(),
        seed: 42,
        input: None,
        unresolved: None,
    };
    Ok(submit(&sub, Timestamp(0))?.task)
}

pub async fn core(common: &Common, args: CoreArgs) -> anyhow::Result<Report> {
    let span = Duration::from_millis(
        args.millis
            .unwrap_or(if common.quick { 300 } else { 3_000 }),
    );
    let pending = pending_task()?;
    let events = happy_path();
    let run = |pending: &Task| -> anyhow::Result<Task> {
        let (first, rest) = events.split_first().expect("four events");
        let mut task = apply(pending, &first.0, first.1)
            .map_err(|r| anyhow::anyhow!("{r}"))?
            .task;
        for (event, at) in rest {
            task = apply(&task, event, *at)
                .map_err(|r| anyhow::anyhow!("{r}"))?
                .task;
        }
        Ok(task)
    };
    if run(&pending)?.kind() != StateKind::Completed {
        bail!("the happy path does not complete the task");
    }
    // Warm up, then loop in rounds of 1,000 paths between clock reads.
    for _ in 0..1_000 {
        std::hint::black_box(run(std::hint::black_box(&pending))?);
    }
    let started = Instant::now();
    let mut paths = 0u64;
    while started.elapsed() < span {
        for _ in 0..1_000 {
            std::hint::black_box(run(std::hint::black_box(&pending))?);
        }
        paths += 1_000;
    }
    let secs = started.elapsed().as_secs_f64();
    let transitions = paths * events.len() as u64;
    let mut r = Report::new("core");
    r.param("millis", span.as_millis() as u64)
        .param("threads", 1);
    r.float(
        "transitions_per_s",
        "transitions/s (one thread)",
        transitions as f64 / secs,
        "/s",
    )
    .float(
        "ns_per_transition",
        "per transition",
        secs * 1e9 / transitions as f64,
        "ns",
    )
    .figure("transitions", "transitions applied", transitions, "");
    r.note("one task's happy path (agent_assigned, execution_started, heartbeat, execution_succeeded) through baton_core::apply (as `cargo bench -p baton-core`'s apply_happy_path), each apply building the next task");
    Ok(r)
}

// ---- store ----------------------------------------------------------------------------------

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

fn bench_caps() -> BTreeSet<Capability> {
    BTreeSet::from([Capability::from("bench")])
}

fn record(task: &Task, event: Event) -> anyhow::Result<TransitionRecord> {
    Ok(TransitionRecord::apply(task, event, now())?)
}

/// Raw fsync rate of the disk under `dir`: 4 KiB appends, each followed by `fdatasync`.
pub fn fsyncs_per_second(dir: &std::path::Path, span: Duration) -> anyhow::Result<f64> {
    let path = dir.join("fsync.probe");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .context("creating the fsync probe")?;
    let block = [7u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < span {
        file.write_all(&block)?;
        file.sync_data()?;
        n += 1;
    }
    let _ = std::fs::remove_file(path);
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Raw SQLite at the same batch size, with the store's own settings (WAL,
/// `synchronous=FULL`): each write updates a task-like row (id, version, state, timer, a JSON
/// snapshot of the same size, two indexes) and appends a history-like row, in transactions of
/// `per_commit` writes. Returns writes/s.
fn raw_sqlite(
    path: &std::path::Path,
    per_commit: usize,
    span: Duration,
    snapshot_len: usize,
    event_len: usize,
) -> anyhow::Result<f64> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         CREATE TABLE t (id BLOB PRIMARY KEY, version INTEGER NOT NULL, state TEXT NOT NULL,
                         timer_at INTEGER, snapshot TEXT NOT NULL) WITHOUT ROWID;
         CREATE INDEX t_timer ON t (timer_at) WHERE timer_at IS NOT NULL;
         CREATE INDEX t_state ON t (state, id);
         CREATE TABLE h (task_id BLOB NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,
                         event TEXT NOT NULL, payload TEXT NOT NULL,
                         PRIMARY KEY (task_id, seq)) WITHOUT ROWID;",
    )?;
    let snapshot = "s".repeat(snapshot_len);
    let payload = "p".repeat(event_len);
    let ids: Vec<[u8; 16]> = (0..per_commit)
        .map(|_| *Uuid::now_v7().as_bytes())
        .collect();
    {
        let tx = conn.transaction()?;
        for id in &ids {
            tx.execute(
                "INSERT INTO t (id, version, state, timer_at, snapshot) VALUES (?1, 1, 'executing', 0, ?2)",
                rusqlite::params![&id[..], snapshot],
            )?;
        }
        tx.commit()?;
    }
    let started = Instant::now();
    let mut version = 1i64;
    let mut writes = 0u64;
    while started.elapsed() < span {
        version += 1;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut up = tx.prepare_cached(
                "UPDATE t SET version = ?2, state = 'executing', timer_at = ?3, snapshot = ?4 WHERE id = ?1",
            )?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO h (task_id, seq, at, event, payload) VALUES (?1, ?2, ?3, 'heartbeat', ?4)",
            )?;
            for id in &ids {
                up.execute(rusqlite::params![&id[..], version, version, snapshot])?;
                ins.execute(rusqlite::params![&id[..], version, version, payload])?;
            }
        }
        tx.commit()?;
        writes += per_commit as u64;
    }
    Ok(writes as f64 / started.elapsed().as_secs_f64())
}

pub async fn store(common: &Common, args: StoreArgs) -> anyhow::Result<Report> {
    let quick = common.quick;
    let span = Duration::from_millis(args.millis.unwrap_or(if quick { 300 } else { 3_000 }));
    let levels = if args.writers.is_empty() {
        if quick {
            vec![1, 16]
        } else {
            vec![1, 4, 16, 64, 256]
        }
    } else {
        args.writers.clone()
    };
    if levels.iter().any(|&w| w == 0 || w > 10_000) {
        bail!("--writers takes levels between 1 and 10000");
    }
    let fsync_dir = match Target::new(&Common {
        store: None,
        ..common.clone()
    })
    .await?
    {
        Target::Sqlite(dir) => dir,
        Target::Postgres { .. } => unreachable!("no --store given"),
    };
    let fsyncs = fsyncs_per_second(fsync_dir.path(), span)?;
    let mut r = Report::new("store");
    let mut kind = "sqlite";
    r.float(
        "disk_fsync_per_s",
        "disk: 4 KiB append + fdatasync",
        fsyncs,
        "/s",
    );
    // Representative row sizes: a heartbeat's snapshot and event as the store writes them.
    let (snap_len, event_len) = row_sizes()?;
    for &w in &levels {
        let target = Target::new(common).await?;
        kind = target.kind();
        let store = Arc::new(target.open().await?);
        // The disk's speed drifts within seconds on a shared machine: the store and raw SQLite
        // take turns in short rounds, and each reports its median round.
        let mut store_rounds = Vec::with_capacity(ROUNDS);
        let mut raw_rounds = Vec::with_capacity(ROUNDS);
        let mut per_commit = 0.0;
        let slice = span / ROUNDS as u32;
        for round in 0..ROUNDS {
            let (tps, batch) =
                match workload::concurrent_heartbeats(Arc::clone(&store), w, slice).await {
                    Ok(out) => out,
                    Err(e) => {
                        drop(store);
                        target.cleanup().await?;
                        return Err(e.into());
                    }
                };
            store_rounds.push(tps);
            per_commit += batch / ROUNDS as f64;
            if !target.is_postgres() {
                let raw = raw_sqlite(
                    &fsync_dir.path().join(format!("raw-{w}-{round}.db")),
                    batch.round().max(1.0) as usize,
                    slice,
                    snap_len,
                    event_len,
                )?;
                raw_rounds.push(raw);
            }
        }
        drop(store);
        target.cleanup().await?;
        let tps = median(&mut store_rounds);
        r.float(
            format!("w{w}_transitions_per_s"),
            format!("{w:>4} writers: durable transitions/s"),
            tps,
            "/s",
        )
        .float(
            format!("w{w}_writes_per_commit"),
            format!("{w:>4} writers: writes per commit"),
            per_commit,
            "",
        );
        if !raw_rounds.is_empty() {
            let raw = median(&mut raw_rounds);
            r.float(
                format!("w{w}_raw_sqlite_per_s"),
                format!("{w:>4} writers: raw SQLite, same writes/commit"),
                raw,
                "/s",
            )
            .float(
                format!("w{w}_raw_ratio"),
                format!("{w:>4} writers: raw SQLite / store"),
                raw / tps,
                "×",
            );
        }
    }
    r.param("store", kind)
        .param("writers", json!(levels))
        .param("millis", span.as_millis() as u64)
        .param("snapshot_bytes", snap_len)
        .param("event_bytes", event_len);
    r.note("store: each writer heartbeats its own leased task and waits for the write to be durable (synchronous=FULL) before the next; concurrent writes share a commit");
    r.note("raw SQLite: per write, one UPDATE of an indexed row with a snapshot of the same size plus one history INSERT, in transactions of the store's measured writes per commit, same pragmas; the two take turns in 3 rounds per level and each figure is the median round");
    Ok(r)
}

/// Rounds per level of `baton bench store`.
const ROUNDS: usize = 3;

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// The sizes of a heartbeat's stored snapshot and event JSON.
fn row_sizes() -> anyhow::Result<(usize, usize)> {
    let mut spec = TaskSpec::new("t0");
    spec.capabilities = bench_caps();
    let sub = Submission {
        task: TaskId(Uuid::now_v7()),
        workflow: WorkflowId(Uuid::now_v7()),
        spec: Arc::new(spec),
        completed: Vec::new(),
        seed: 1,
        input: None,
        unresolved: None,
    };
    let task = submit(&sub, now())?.task;
    let agent = AgentId(Uuid::now_v7());
    let assigned = record(
        &task,
        Event::AgentAssigned {
            agent,
            capabilities: bench_caps(),
            lease: LeaseId(Uuid::now_v7()),
        },
    )?;
    let token = assigned.task.fencing_token;
    let started = record(
        &assigned.task,
        Event::ExecutionStarted {
            agent,
            token,
            by_claim: false,
        },
    )?;
    let beat = record(
        &started.task,
        Event::Heartbeat {
            usage: Default::default(),
            agent,
            token,
            progress: Some(json!(1)),
        },
    )?;
    // The snapshot holds the task without its spec.
    let mut task = serde_json::to_value(&beat.task)?;
    if let Some(o) = task.as_object_mut() {
        o.remove("spec");
    }
    Ok((
        serde_json::to_string(&task)?.len(),
        serde_json::to_string(&beat.entry.event)?.len(),
    ))
}
