//! `baton bench SCENARIO` (this crate is the library the `baton` binary delegates to): measured
//! runs of the real thing. Each scenario starts its own
//! engine and HTTP server (in this process, on `127.0.0.1:0`, unless it says otherwise) on a
//! SQLite store in a temporary directory, or with `--store postgres://…` in a fresh schema
//! dropped afterwards, and drives agents over real HTTP with keep-alive (the Rust client).
//! It prints a table, or with `--output json` one JSON record: scenario, parameters, machine
//! cores, figures.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_engine::{Engine, EngineConfig, SystemClock};
use baton_server::{AppState, Tokens};
use baton_store::AnyStore;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

mod agents;
mod child;
mod crash;
mod dag;
mod fairness;
mod micro;
mod reads;
mod retention;
mod scale;
mod throughput;
mod timeouts;

/// Measures Baton: throughput, DAG release latency, timeouts, scale, retention, the core, the
/// store, crashes.
#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

/// What every scenario accepts.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// Store: SQLite in a temporary directory by default; `postgres://…` runs in a fresh
    /// schema (`baton_bench_<uuid>`), dropped afterwards.
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,
    /// Small sizes that run in seconds (explicit sizes still win).
    #[arg(long, global = true)]
    pub quick: bool,
    /// Directory for the temporary SQLite stores [default: the system's temporary directory].
    #[arg(long, global = true, value_name = "DIR")]
    pub temp_dir: Option<std::path::PathBuf>,
}

#[derive(clap::Subcommand)]
enum Scenario {
    /// Independent no-op tasks end to end: tasks/s, claim-to-complete latency, peak RSS.
    Throughput(throughput::ThroughputArgs),
    /// A workflow of fan-outs, fan-ins and chains: release latency, makespan vs independent.
    Dag(dag::DagArgs),
    /// A small workflow submitted behind a big backlog: how soon it finishes (claims take from
    /// each fairness group in turn).
    Fairness(fairness::FairnessArgs),
    /// Leases expiring by the thousand: how fast the watchdog requeues them, at what CPU cost.
    Timeouts(timeouts::TimeoutsArgs),
    /// A store holding many finished tasks: start time, RSS, claim and counts latency.
    Scale(scale::ScaleArgs),
    /// A steady workload under a short retention: the store's size on disk over time, flat
    /// once the first workflows outlive the retention.
    Retention(retention::RetentionArgs),
    /// Pure transitions/s of the core (`baton_core::apply`): the ceiling.
    Core(micro::CoreArgs),
    /// Durable transitions/s with group commit, beside raw SQLite and the disk's fsync/s.
    Store(micro::StoreArgs),
    /// Concurrent reads of tasks with big inputs from a child `baton serve`: its peak and
    /// settled RSS, the bytes of one answer.
    Reads(reads::ReadsArgs),
    /// `baton serve` as a child killed with SIGKILL again and again while agents work; then
    /// the invariant checker. Exits non-zero on any violation.
    Crash(crash::CrashArgs),
}

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

/// Runs a scenario and prints its report. The scenarios that run `baton serve` as a child
/// process (`scale`, `crash`, `reads`) start this process's own executable: call it from `baton`.
pub fn run(args: BenchArgs, output: Output) -> anyhow::Result<ExitCode> {
    init_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let common = args.common;
    let report = runtime.block_on(async {
        match args.scenario {
            Scenario::Throughput(a) => throughput::run(&common, a).await,
            Scenario::Dag(a) => dag::run(&common, a).await,
            Scenario::Fairness(a) => fairness::run(&common, a).await,
            Scenario::Timeouts(a) => timeouts::run(&common, a).await,
            Scenario::Scale(a) => scale::run(&common, a).await,
            Scenario::Retention(a) => retention::run(&common, a).await,
            Scenario::Core(a) => micro::core(&common, a).await,
            Scenario::Store(a) => micro::store(&common, a).await,
            Scenario::Crash(a) => crash::run(&common, a).await,
            Scenario::Reads(a) => reads::run(&common, a).await,
        }
    })?;
    report.print(output)?;
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &report.failed {
            eprintln!("FAILED: {f}");
        }
        ExitCode::FAILURE
    })
}

/// Warnings and errors only (the engine's line per transition would cost more than the work).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

// ---- the report ---------------------------------------------------------------------------

/// What a scenario measured.
pub struct Report {
    scenario: &'static str,
    parameters: Map<String, Value>,
    figures: Vec<Figure>,
    notes: Vec<String>,
    /// Checks that failed: the run exits non-zero.
    failed: Vec<String>,
}

struct Figure {
    key: String,
    label: String,
    value: Value,
    unit: &'static str,
}

impl Report {
    pub fn new(scenario: &'static str) -> Report {
        Report {
            scenario,
            parameters: Map::new(),
            figures: Vec::new(),
            notes: Vec::new(),
            failed: Vec::new(),
        }
    }

    pub fn param(&mut self, key: &str, value: impl Into<Value>) -> &mut Report {
        self.parameters.insert(key.to_owned(), value.into());
        self
    }

    /// A figure: `key` in the JSON, `label` in the table.
    pub fn figure(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        value: impl Into<Value>,
        unit: &'static str,
    ) -> &mut Report {
        self.figures.push(Figure {
            key: key.into(),
            label: label.into(),
            value: value.into(),
            unit,
        });
        self
    }

    /// A float figure rounded to 3 significant decimals for reading.
    pub fn float(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> &mut Report {
        self.figure(key, label, round(value), unit)
    }

    /// p50, p99 and max of latency samples, in milliseconds.
    pub fn latencies(&mut self, key: &str, label: &str, samples: &mut [Duration]) -> &mut Report {
        let l = Latency::of(samples);
        self.float(format!("{key}_p50_ms"), format!("{label} p50"), l.p50, "ms");
        self.float(format!("{key}_p99_ms"), format!("{label} p99"), l.p99, "ms");
        self.float(format!("{key}_max_ms"), format!("{label} max"), l.max, "ms");
        self
    }

    pub fn note(&mut self, text: impl Into<String>) -> &mut Report {
        self.notes.push(text.into());
        self
    }

    /// Records a failed check (the run then exits non-zero).
    pub fn fail(&mut self, text: impl Into<String>) -> &mut Report {
        self.failed.push(text.into());
        self
    }

    pub fn json(&self) -> Value {
        let figures: Map<String, Value> = self
            .figures
            .iter()
            .map(|f| (f.key.clone(), f.value.clone()))
            .collect();
        json!({
            "scenario": self.scenario,
            "parameters": self.parameters,
            "machine": {
                "cores": cores(),
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
            },
            "figures": figures,
            "notes": self.notes,
            "ok": self.failed.is_empty(),
            "failed": self.failed,
        })
    }

    fn print(&self, output: Output) -> anyhow::Result<()> {
        if output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&self.json())?);
            return Ok(());
        }
        let params: Vec<String> = self
            .parameters
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        println!(
            "baton bench {} ({}; {} cores)",
            self.scenario,
            params.join(", "),
            cores()
        );
        let width = self
            .figures
            .iter()
            .map(|f| f.label.chars().count())
            .max()
            .unwrap_or(0);
        for f in &self.figures {
            let value = match &f.value {
                Value::Number(n) => match n.as_f64() {
                    Some(x) if n.is_f64() => format_number(x),
                    _ => n.to_string(),
                },
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("  {:<width$}  {:>14} {}", f.label, value, f.unit);
        }
        for n in &self.notes {
            println!("  note: {n}");
        }
        for f in &self.failed {
            println!("  FAILED: {f}");
        }
        Ok(())
    }
}

fn format_number(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Rounds for reading: 3 decimals below 1,000, whole numbers above.
pub fn round(x: f64) -> f64 {
    if !x.is_finite() {
        return 0.0;
    }
    if x.abs() >= 1000.0 {
        x.round()
    } else {
        (x * 1000.0).round() / 1000.0
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Percentiles of latency samples, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(samples: &mut [Duration]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |p: usize| {
            let i = (samples.len() * p / 100).min(samples.len() - 1);
            samples[i].as_secs_f64() * 1e3
        };
        Latency {
            p50: at(50),
            p99: at(99),
            max: samples[samples.len() - 1].as_secs_f64() * 1e3,
        }
    }

    /// Of samples already in milliseconds.
    pub fn of_ms(samples: &mut [i64]) -> Latency {
        let mut d: Vec<Duration> = samples
            .iter()
            .map(|&ms| Duration::from_millis(ms.max(0) as u64))
            .collect();
        Latency::of(&mut d)
    }
}

// ---- the process ----------------------------------------------------------------------------

/// Peak resident set of this process (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    proc_status_kib("self", "VmHWM:") as f64 / 1024.0
}

/// A field of `/proc/PID/status` in KiB (0 where there is no `/proc`).
pub fn proc_status_kib(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) this process has used so far.
pub fn cpu_time() -> Duration {
    #[cfg(unix)]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage fills the struct we own; RUSAGE_SELF is always valid.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
        if rc == 0 {
            // SAFETY: initialised by the successful call above.
            let u = unsafe { usage.assume_init() };
            let tv = |t: libc::timeval| {
                Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
            };
            return tv(u.ru_utime) + tv(u.ru_stime);
        }
    }
    Duration::ZERO
}

/// A progress bar on stderr (drawn only on a terminal).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("a valid template"),
    );
    bar.set_message(what.to_owned());
    bar
}

// ---- stores ---------------------------------------------------------------------------------

/// Where a scenario's store lives: a temporary SQLite directory, or a fresh PostgreSQL schema.
pub enum Target {
    Sqlite(tempfile::TempDir),
    Postgres { base: String, schema: String },
}

impl Target {
    pub async fn new(common: &Common) -> anyhow::Result<Target> {
        match &common.store {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                if url.contains("schema=") {
                    bail!("--store must not name a schema: the bench makes a fresh one");
                }
                Ok(Target::Postgres {
                    base: url.clone(),
                    schema: format!("baton_bench_{}", uuid::Uuid::new_v4().simple()),
                })
            }
            Some(other) => {
                bail!("--store takes a postgres:// URL (SQLite is the default), not {other:?}")
            }
            None => {
                let mut b = tempfile::Builder::new();
                b.prefix("baton-bench-");
                let dir = match &common.temp_dir {
                    Some(d) => b.tempdir_in(d),
                    None => b.tempdir(),
                }
                .context("creating a temporary directory")?;
                Ok(Target::Sqlite(dir))
            }
        }
    }

    /// The disk's fsync rate where the SQLite store lives, measured for half a second (`None`
    /// for PostgreSQL). On a shared disk it varies from run to run, and every commit pays one.
    pub fn fsync_probe(&self) -> Option<f64> {
        match self {
            Target::Sqlite(dir) => {
                micro::fsyncs_per_second(dir.path(), Duration::from_millis(500)).ok()
            }
            Target::Postgres { .. } => None,
        }
    }

    /// Adds the probe's figure to a report.
    pub fn report_fsync(&self, r: &mut Report) {
        if let Some(f) = self.fsync_probe() {
            r.float(
                "disk_fsync_per_s",
                "disk fsync/s just before (4 KiB + fdatasync)",
                f,
                "/s",
            );
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Target::Postgres { .. })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Sqlite(_) => "sqlite",
            Target::Postgres { .. } => "postgres",
        }
    }

    /// The URL `AnyStore::open` and `baton serve --store` take.
    pub fn url(&self) -> String {
        match self {
            Target::Sqlite(dir) => dir.path().join("baton.db").display().to_string(),
            Target::Postgres { base, schema } => {
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}schema={schema}")
            }
        }
    }

    pub async fn open(&self) -> anyhow::Result<AnyStore> {
        AnyStore::open(&self.url())
            .await
            .with_context(|| format!("opening the {} store", self.kind()))
    }

    /// Drops the PostgreSQL schema (a temporary directory goes when dropped).
    pub async fn cleanup(&self) -> anyhow::Result<()> {
        if let Target::Postgres { base, schema } = self {
            let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
                .await
                .context("connecting to PostgreSQL to drop the bench schema")?;
            let conn = tokio::spawn(conn);
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                .await
                .with_context(|| format!("dropping schema {schema}"))?;
            drop(client);
            let _ = conn.await;
        }
        Ok(())
    }
}

/// An engine and its HTTP server in this process.
pub struct Node {
    pub base: String,
    pub engine: Engine<AnyStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    pub async fn start(store: AnyStore, config: EngineConfig) -> anyhow::Result<Node> {
        let engine = Engine::new(store, Arc::new(SystemClock), config);
        let loops = engine.start();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("listening on 127.0.0.1:0")?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(baton_server::serve(
            listener,
            AppState::new(engine.clone(), Tokens::none()),
            None,
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Node {
            base,
            engine,
            stop: Some(stop),
            server: Some(server),
            loops,
        })
    }

    pub fn client(&self) -> anyhow::Result<baton_client::Client> {
        Ok(baton_client::Client::new(&self.base)?)
    }

    /// Stops the server and the engine's loops (bounded).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                self.engine.shutdown();
            }
        }
        self.engine.shutdown();
        for l in self.loops.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), l).await;
        }
    }
}

/// Waits until `done()` or `limit` passes, looking every `every`.
pub async fn wait_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= give_up {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// The size to use: explicit, else the quick or the full default.
pub fn size(explicit: Option<usize>, quick: bool, quick_default: usize, full: usize) -> usize {
    explicit.unwrap_or(if quick { quick_default } else { full })
}
