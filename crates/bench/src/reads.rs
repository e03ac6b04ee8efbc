//! `baton bench reads`: what reading tasks with big inputs costs the server. Starts `baton
//! serve` as a child process, submits tasks whose inputs are `--input-bytes` of JSON (each in a
//! workflow of its own), then fires `--concurrency` concurrent reads (each reader `--rounds`
//! times) of one kind (`--read`: a task's view `GET /v1/tasks/{id}`, a list of every task
//! `GET /v1/tasks`, or a workflow's graph `GET /v1/workflows/{id}/graph`) and
//! reports the child's peak RSS during the reads (`VmHWM`, reset after the submissions through
//! `/proc/PID/clear_refs`), its RSS `--settle-s` seconds later, the bytes of one answer and how
//! many times an answer carries the task's input. It checks every answer (the task's own
//! input in its view, every task in a list, the task in its workflow's graph), never the
//! figures.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_client::Client;
use serde_json::{json, Value};
use uuid::Uuid;

use super::child::{store_args, Serve};
use super::{Common, Latency, Report, Target};

#[derive(clap::Args, Debug)]
pub struct ReadsArgs {
    /// Reads in flight at once [default: 64; 8 with --quick].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Bytes of each task's input, as JSON [default: 1048576; 65536 with --quick].
    #[arg(long)]
    pub input_bytes: Option<usize>,
    /// Tasks submitted; reader i reads task i, i + concurrency, … [default: the concurrency].
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Reads each reader makes, one after the other [default: 4; 2 with --quick].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// The inputs' shape: `records` (an array of small objects, as structured data is) or
    /// `text` (one long string).
    #[arg(long, value_enum, default_value_t = Shape::Records)]
    pub input_shape: Shape,
    /// What each read asks for: `task` (`GET /v1/tasks/{id}`, which shows the input), `list`
    /// (`GET /v1/tasks?limit=TASKS`, at most 1,000) or `graph` (`GET /v1/workflows/{id}/graph`),
    /// which do not.
    #[arg(long, value_enum, default_value_t = Read::Task)]
    pub read: Read,
    /// Seconds to wait after the reads before the settled RSS is read [default: 10; 1 with
    /// --quick].
    #[arg(long)]
    pub settle_s: Option<u64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Records,
    Text,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    Task,
    List,
    Graph,
}

impl Read {
    fn name(self) -> &'static str {
        match self {
            Read::Task => "task",
            Read::List => "list",
            Read::Graph => "graph",
        }
    }
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Records => "records",
            Shape::Text => "text",
        }
    }
}

pub async fn run(common: &Common, args: ReadsArgs) -> anyhow::Result<Report> {
    let concurrency = super::size(args.concurrency, common.quick, 8, 64);
    let input_bytes = super::size(args.input_bytes, common.quick, 65_536, 1_048_576);
    let tasks = args.tasks.unwrap_or(concurrency);
    let rounds = super::size(args.rounds, common.quick, 2, 4);
    let settle = Duration::from_secs(args.settle_s.unwrap_or(if common.quick { 1 } else { 10 }));
    if concurrency == 0 || tasks == 0 || rounds == 0 {
        bail!("--concurrency, --tasks and --rounds must be at least 1");
    }
    let target = Target::new(common).await?;
    let log = std::env::temp_dir().join(format!("baton-bench-reads-{}.log", std::process::id()));
    // The input's JSON is a little over `--input-bytes`: the server takes up to twice that
    // (within its 8 MiB ceiling).
    let payload_max = (2 * input_bytes)
        .clamp(1_048_576, 8 * 1_048_576)
        .to_string();
    let serve = Serve::start(
        "127.0.0.1:0",
        &store_args(&target),
        &["--payload-bytes-max", &payload_max],
        &log,
    )
    .await;
    let measured = match serve {
        Ok(serve) => {
            let m = measure(
                &serve,
                &args,
                concurrency,
                input_bytes,
                tasks,
                rounds,
                settle,
            )
            .await;
            serve.stop(Duration::from_secs(10)).await?;
            m
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&log);
    target.cleanup().await?;
    let m = measured?;

    let mut r = Report::new("reads");
    r.param("store", target.kind())
        .param("concurrency", concurrency)
        .param("input_bytes", input_bytes)
        .param("input_shape", args.input_shape.name())
        .param("read", args.read.name())
        .param("tasks", tasks)
        .param("rounds", rounds)
        .param("settle_s", settle.as_secs())
        .param("server", "child process (baton serve)");
    r.figure("reads", "reads answered", m.reads, "")
        .figure("errors", "reads that failed", m.errors, "")
        .figure(
            "input_json_bytes",
            "one task's input (JSON)",
            m.input_json_bytes,
            "B",
        )
        .figure("answer_bytes", "one answer", m.answer_bytes, "B")
        .figure(
            "input_copies_per_answer",
            "copies of the input in one answer",
            m.copies,
            "",
        )
        .float("rss_start_mib", "RSS after start", m.rss_start, "MiB")
        .float(
            "rss_idle_mib",
            "RSS after the submissions, before the reads",
            m.rss_idle,
            "MiB",
        )
        .float(
            "peak_rss_mib",
            "peak RSS during the reads",
            m.rss_peak,
            "MiB",
        )
        .float(
            "settled_rss_mib",
            format!("RSS {} s after the reads", settle.as_secs()),
            m.rss_settled,
            "MiB",
        )
        .float(
            "elapsed_s",
            "reads, first sent to last answered",
            m.elapsed.as_secs_f64(),
            "s",
        )
        .float(
            "reads_per_s",
            "  reads/s",
            m.reads as f64 / m.elapsed.as_secs_f64().max(1e-9),
            "/s",
        )
        .float("read_p50_ms", "read p50", m.latency.p50, "ms")
        .float("read_p99_ms", "read p99", m.latency.p99, "ms")
        .float("read_max_ms", "read max", m.latency.max, "ms");
    if !m.peak_is_reads_only {
        r.note("the peak is the process's since it started: /proc/PID/clear_refs could not be written to reset it after the submissions");
    }
    r.note("RSS is the child `baton serve`'s (/proc/PID/status: VmRSS, and VmHWM reset after the submissions)");
    let expected = (concurrency * rounds) as u64;
    if m.reads != expected || m.errors != 0 {
        r.fail(format!(
            "{} reads answered and {} failed, expected {expected} answered",
            m.reads, m.errors
        ));
    }
    for f in m.wrong {
        r.fail(f);
    }
    Ok(r)
}

struct Measured {
    reads: u64,
    errors: u64,
    wrong: Vec<String>,
    input_json_bytes: u64,
    answer_bytes: u64,
    copies: u64,
    rss_start: f64,
    rss_idle: f64,
    rss_peak: f64,
    rss_settled: f64,
    peak_is_reads_only: bool,
    elapsed: Duration,
    latency: Latency,
}

/// A task's input of about `bytes` of JSON, carrying `marker` once (so that its copies in an
/// answer can be counted).
fn input(shape: Shape, bytes: usize, marker: &str) -> Value {
    match shape {
        Shape::Text => {
            let text = "lorem ipsum dolor sit amet ".repeat(bytes / 27 + 1);
            json!({"marker": marker, "text": &text[..bytes.saturating_sub(marker.len() + 30)]})
        }
        Shape::Records => {
            let mut records = Vec::new();
            // The JSON's length so far: the wrapper, then each record and its comma.
            let mut len = marker.len() + 26;
            while len < bytes {
                let record = json!({"i": records.len(), "name": format!("record {:08}", records.len()), "score": 0.5, "ok": true});
                len += record.to_string().len() + 1;
                records.push(record);
            }
            json!({"marker": marker, "records": records})
        }
    }
}

async fn measure(
    serve: &Serve,
    args: &ReadsArgs,
    concurrency: usize,
    input_bytes: usize,
    tasks: usize,
    rounds: usize,
    settle: Duration,
) -> anyhow::Result<Measured> {
    let (shape, read) = (args.input_shape, args.read);
    let rss_start = serve.status_mib("VmRSS:");
    let client = Client::new(&serve.base)?;
    let bar = super::progress(tasks as u64, "submitting");
    let mut ids = Vec::with_capacity(tasks);
    let mut input_json_bytes = 0;
    for i in 0..tasks {
        let marker = format!("baton-bench-reads-{}", Uuid::new_v4().simple());
        let input = input(shape, input_bytes, &marker);
        input_json_bytes = serde_json::to_string(&input)?.len() as u64;
        let created = client
            .submit_workflow_json(&json!({
                "name": format!("bench-reads-{i}"),
                // No agent offers it: the task stays pending, its history short.
                "tasks": [{"key": "big", "capabilities": ["bench-reads-nobody"], "input": input}],
            }))
            .await
            .context("submitting a task with a big input")?;
        let id = *created.tasks.get("big").context("the created task's id")?;
        ids.push(Submitted {
            task: id,
            workflow: created.workflow,
            marker,
        });
        bar.set_position(i as u64 + 1);
    }
    bar.finish_and_clear();
    drop(client);
    // Let what the submissions used go back before the reads are measured.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = serve.status_mib("VmRSS:");
    let peak_is_reads_only = serve.reset_peak_rss();

    let ids = std::sync::Arc::new(ids);
    let started = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    for reader in 0..concurrency {
        let client = Client::new(&serve.base)?;
        let ids = std::sync::Arc::clone(&ids);
        readers.spawn(async move {
            let mut out = Vec::with_capacity(rounds);
            for round in 0..rounds {
                let task = &ids[(reader + round * concurrency) % ids.len()];
                let path = match read {
                    Read::Task => format!("/v1/tasks/{}", task.task),
                    Read::List => format!("/v1/tasks?limit={}", ids.len().min(LIST_MAX)),
                    Read::Graph => format!("/v1/workflows/{}/graph", task.workflow),
                };
                let sent = Instant::now();
                let got = client.get_json(&path).await;
                let checked = got.map(|b| check(read, &b, task, ids.len().min(LIST_MAX)));
                out.push((sent.elapsed(), checked));
            }
            out
        });
    }
    let mut latencies = Vec::with_capacity(concurrency * rounds);
    let (mut reads, mut errors, mut wrong) = (0, 0, Vec::new());
    let (mut answer_bytes, mut copies) = (0, 0);
    while let Some(joined) = readers.join_next().await {
        for (took, got) in joined.context("a reader panicked")? {
            match got {
                Ok(Ok((bytes, n))) => {
                    reads += 1;
                    latencies.push(took);
                    answer_bytes = bytes;
                    copies = n;
                }
                Ok(Err(e)) => {
                    reads += 1;
                    if wrong.len() < 5 {
                        wrong.push(e);
                    }
                }
                Err(e) => {
                    errors += 1;
                    if wrong.len() < 5 {
                        wrong.push(format!("a read failed: {e}"));
                    }
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let rss_peak = serve.status_mib("VmHWM:");
    tokio::time::sleep(settle).await;
    let rss_settled = serve.status_mib("VmRSS:");
    Ok(Measured {
        reads,
        errors,
        wrong,
        input_json_bytes,
        answer_bytes,
        copies,
        rss_start,
        rss_idle,
        rss_peak,
        rss_settled,
        peak_is_reads_only,
        elapsed,
        latency: Latency::of(&mut latencies),
    })
}

/// Most tasks a list read asks for (the server's page limit).
const LIST_MAX: usize = 1_000;

/// A task submitted for the reads, and the marker its input carries.
struct Submitted {
    task: Uuid,
    workflow: Uuid,
    marker: String,
}

#[derive(serde::Deserialize)]
struct ListAnswer {
    tasks: Vec<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct GraphAnswer {
    nodes: Vec<GraphNode>,
}

#[derive(serde::Deserialize)]
struct GraphNode {
    id: Uuid,
}

/// What [`check`] reads of an answer; the rest is skipped unread, so that checking costs the
/// bench (which shares the machine with the server) little.
#[derive(serde::Deserialize)]
struct Answer {
    id: Uuid,
    spec: AnswerSpec,
}

#[derive(serde::Deserialize)]
struct AnswerSpec {
    input: AnswerInput,
}

#[derive(serde::Deserialize)]
struct AnswerInput {
    marker: String,
}

/// Checks an answer: valid JSON, and for a task's view the task asked for with its input's
/// marker in `spec.input`; for a list, `listed` tasks; for a graph, the task's workflow (one
/// node, the task). Returns its size and how many times it carries the marker (the input's
/// copies).
fn check(read: Read, answer: &[u8], task: &Submitted, listed: usize) -> Result<(u64, u64), String> {
    let id = task.task;
    let bad =
        |e: serde_json::Error| format!("the {} answer for task {id} is wrong: {e}", read.name());
    match read {
        Read::Task => {
            let view: Answer = serde_json::from_slice(answer).map_err(bad)?;
            if view.id != id {
                return Err(format!("asked for task {id}, got {}", view.id));
            }
            if view.spec.input.marker != task.marker {
                return Err(format!("task {id}'s answer does not carry its input"));
            }
        }
        Read::List => {
            let list: ListAnswer = serde_json::from_slice(answer).map_err(bad)?;
            if list.tasks.len() != listed {
                return Err(format!("listed {} tasks, not {listed}", list.tasks.len()));
            }
        }
        Read::Graph => {
            let graph: GraphAnswer = serde_json::from_slice(answer).map_err(bad)?;
            if graph.nodes.len() != 1 || graph.nodes[0].id != id {
                return Err(format!(
                    "the graph of task {id}'s workflow is not that task"
                ));
            }
        }
    }
    let copies = count(answer, task.marker.as_bytes());
    Ok((answer.len() as u64, copies))
}

fn count(haystack: &[u8], needle: &[u8]) -> u64 {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count() as u64
}
