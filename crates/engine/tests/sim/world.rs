//! One simulated run: the real engine over the real SQLite store (wrapped in a fault-injecting
//! `Store`), a manual clock, and simulated agents and operators, all driven by one seeded
//! generator. Every action is awaited before the next is drawn, `engine.start()` is never
//! called (the simulation calls `tick()` where the watchdog and the effect runner would run),
//! and the store answers the calls the engine makes concurrently inside one action one at a
//! time in a fixed order (see `store.rs`), so a seed replays exactly.
//!
//! Actions (drawn with weights each step):
//! - a worker agent acts: registers, claims (up to its concurrency), starts, heartbeats,
//!   succeeds, fails (retryable or not), releases, adds sub-tasks (decomposition); and
//!   misbehaves by its profile: loses heartbeats, forgets a lease (holds it silently), reports
//!   twice, returns malformed results (`null` or none), reports success before starting;
//!   after a store failure it resends the same report later;
//! - a zombie report: an agent reports on a lease it no longer holds (stale token);
//! - a forged report: a report on a live lease with another agent's id or a wrong token;
//! - an agent stalls (stops reporting for a while, then comes back with whatever it held),
//!   crashes (stops for ever, holding its leases), or a new agent joins;
//! - an operator cancels a task or a workflow, retries a final failure (or tries to retry a
//!   task that is not one), or submits a workflow (a random DAG, sometimes with compensation,
//!   short timeouts, several retry policies; some tasks wait for a signal, with or without a
//!   timeout, some sleep, some are delayed by `delay_ms` or `not_before`; agents add such
//!   tasks too, as a decomposition asking for approval mid-run);
//! - an operator takes control of a random task: pauses it (sometimes taking it back from its
//!   agent at once), resumes it, skips it with a result, fails it for good, or reruns it and
//!   everything downstream (sometimes as a dry run); each is accepted exactly when the
//!   lifecycle allows it and leaves the task as asked; the drain resumes what is paused;
//! - an operator sends a signal to a workflow: before its task waits (kept), while it waits,
//!   after it ended, rejecting, again under a used idempotency key with the same body (applied
//!   once) or another body (refused);
//! - half the runs have a schedule firing a one-task workflow every 30 s, under a drawn
//!   overlap and catch-up policy;
//! - time passes (the compensation agent first finishes its work), and the engine ticks; or
//!   the wall clock steps back up to 30 s (an NTP correction), and the engine ticks;
//! - the process restarts: engine and store are dropped and the same file is reopened.
//!
//! Faults: the store fails writes before (not written) or after (written, the caller told it
//! failed) delegating, and fails some reads, at rates drawn per seed (some seeds have none).
//!
//! Checked while running: answers agree with what was asked (a success answered `Ok` is
//! `Completed` with that lease's token and result; a malformed result is never accepted; a
//! duplicate of an applied report is answered, not refused, and changes nothing); zombie and
//! forged reports never change the task; operators can always cancel a non-terminal task and
//! retry a final failure, and nothing else; a cancelled workflow has no task left running; a
//! claim never exceeds the agent's concurrency nor hands out a task it cannot run; after each
//! restart `check_store` is clean (its histories never go back in time, and no task started
//! before its dependencies completed, whatever the clock did); a sent signal is delivered to
//! every task waiting for it, each completed with its data or failed for good by its
//! rejection; after every round of the engine's work without faults, no task waits for a
//! signal its workflow keeps.
//!
//! At the end healthy agents drain the work (no faults, no restarts), then: `check_store` is
//! clean; every completed task has exactly one `execution_succeeded` since it was last reopened
//! (none when skipped) and every other task none;
//! every task is terminal; counts per state and paused (global and per workflow) equal the
//! tasks; every completion an agent or operator was told about still stands, unchanged, unless
//! a rerun reopened it since; every acknowledged signal is
//! stored as sent, one per idempotency key; a signal task completed by exactly one signal,
//! with its data, and every signal a history names is stored, delivered, under that name and
//! data; timers fire no earlier than their time, and a sleep completes with `slept_ms`; the
//! schedule fired each tick at most once, at or after its time, none after it was paused,
//! and (overlaps allowed, every missed tick kept) none was skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_core::{
    AgentId, AgentLostPolicy, Capability, CatchUp, CompensationSpec, ErrorReport, Event, EventKind,
    FencingToken, Overlap, RetryPolicy, ScheduleSpec, State, StateKind, Task, TaskId, TaskKey,
    TaskSpec, Timeouts, Timestamp, WaitFor, WorkflowId, WorkflowTemplate,
};
use baton_engine::check::check_store;
use baton_engine::{
    Clock, Engine, EngineConfig, EngineError, ManualClock, Operator, SeededIds, SignalInput,
    WorkflowRequest,
};
use baton_store::sqlite::{Durability, SqliteOptions, SqliteStore};
use baton_store::{StateCounts, Store, TaskFilter, PAGE_ROWS_MAX};
use serde_json::{json, Value};
use tempfile::TempDir;
use uuid::Uuid;

use super::rng::Rng;
use super::store::{FaultRates, Faults, FaultyStore};
use super::Trace;

/// Where every run's clock starts.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);
/// Liveness window of agents.
const AGENT_TTL_MS: u64 = 30_000;
/// Capabilities of ordinary tasks; compensation tasks need [`UNDO`].
const CAPS: [&str; 3] = ["a", "b", "c"];
const UNDO: &str = "undo";
/// Rounds of the final drain before the run is declared stuck.
const DRAIN_ROUNDS_MAX: usize = 400;
const WORKERS_MAX: usize = 8;
/// Most tasks per run: operators submit up to [`SUBMITTED_MAX`], decomposition and
/// compensation add the rest.
const TASKS_MAX: u64 = 45;
const SUBMITTED_MAX: u64 = 30;
/// The signals tasks wait for (`wait_for`) and operators send.
const SIGNALS: [&str; 2] = ["approve", "go"];
/// The run's schedule fires every [`SCHEDULE_EVERY_MS`].
const SCHEDULE: &str = "every-30s";
const SCHEDULE_CRON: &str = "*/30 * * * * *";
const SCHEDULE_EVERY_MS: u64 = 30_000;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// How one run is played.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// Steps before the drain; drawn from the seed (150 to 300) if `None`.
    pub steps: Option<usize>,
}

/// What one run did, to show that the faults and misbehaviours really happen.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub steps: u64,
    pub tasks: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub compensations: u64,
    pub subtasks: u64,
    pub restarts: u64,
    pub faults_before: u64,
    pub faults_after: u64,
    pub faults_read: u64,
    pub resends: u64,
    pub duplicates: u64,
    pub malformed: u64,
    pub zombie_reports: u64,
    pub forged_reports: u64,
    pub crashes: u64,
    pub stalls: u64,
    pub operator_cancels: u64,
    pub operator_retries: u64,
    pub pauses: u64,
    pub resumes: u64,
    pub skips: u64,
    pub forced_failures: u64,
    pub reruns: u64,
    pub drain_rounds: u64,
    pub clock_steps_back: u64,
    pub signal_tasks: u64,
    pub sleeps: u64,
    pub delayed: u64,
    pub signals_sent: u64,
    pub signals_repeated: u64,
    pub signals_kept: u64,
    pub signals_delivered: u64,
    pub kept_signals_taken: u64,
    pub signals_refused: u64,
    pub schedule_ticks: u64,
}

impl RunStats {
    pub fn add(&mut self, o: &RunStats) {
        self.steps += o.steps;
        self.tasks += o.tasks;
        self.completed += o.completed;
        self.failed += o.failed;
        self.cancelled += o.cancelled;
        self.compensations += o.compensations;
        self.subtasks += o.subtasks;
        self.restarts += o.restarts;
        self.faults_before += o.faults_before;
        self.faults_after += o.faults_after;
        self.faults_read += o.faults_read;
        self.resends += o.resends;
        self.duplicates += o.duplicates;
        self.malformed += o.malformed;
        self.zombie_reports += o.zombie_reports;
        self.forged_reports += o.forged_reports;
        self.crashes += o.crashes;
        self.stalls += o.stalls;
        self.operator_cancels += o.operator_cancels;
        self.operator_retries += o.operator_retries;
        self.pauses += o.pauses;
        self.resumes += o.resumes;
        self.skips += o.skips;
        self.forced_failures += o.forced_failures;
        self.reruns += o.reruns;
        self.drain_rounds += o.drain_rounds;
        self.clock_steps_back += o.clock_steps_back;
        self.signal_tasks += o.signal_tasks;
        self.sleeps += o.sleeps;
        self.delayed += o.delayed;
        self.signals_sent += o.signals_sent;
        self.signals_repeated += o.signals_repeated;
        self.signals_kept += o.signals_kept;
        self.signals_delivered += o.signals_delivered;
        self.kept_signals_taken += o.kept_signals_taken;
        self.signals_refused += o.signals_refused;
        self.schedule_ticks += o.schedule_ticks;
    }
}

pub struct Outcome {
    pub stats: RunStats,
}

pub struct Failure {
    pub message: String,
    pub trace_tail: String,
}

/// Plays one seeded run and checks its invariants.
pub async fn run(seed: u64, settings: Settings) -> Result<Outcome, Failure> {
    let mut sim = Sim::new(seed);
    match sim.play(settings).await {
        Ok(()) => {
            let stats = sim.stats();
            Ok(Outcome { stats })
        }
        Err(message) => Err(Failure {
            message,
            trace_tail: sim.trace.tail(120),
        }),
    }
}

/// The full trace of a run, for reading a failing seed.
pub async fn run_traced(seed: u64, settings: Settings) -> (Result<(), String>, String) {
    let mut sim = Sim::new(seed);
    let r = sim.play(settings).await;
    (r, sim.trace.tail(usize::MAX))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Worker,
    /// Well-behaved: the compensation agent and the final drainer.
    Service,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Alive,
    Stalled(Timestamp),
    Crashed,
}

/// How often a worker misbehaves, in permille of its decisions.
#[derive(Clone, Copy, Debug)]
struct Profile {
    malformed: u32,
    fail: u32,
    fatal: u32,
    dup: u32,
    hb_loss: u32,
    forget: u32,
    release: u32,
    subtasks: u32,
    premature: u32,
}

impl Profile {
    fn random(rng: &mut Rng) -> Profile {
        match rng.below(3) {
            0 => Profile {
                malformed: 0,
                fail: 40,
                fatal: 100,
                dup: 30,
                hb_loss: 20,
                forget: 0,
                release: 20,
                subtasks: 100,
                premature: 0,
            },
            1 => Profile {
                malformed: 60,
                fail: 150,
                fatal: 250,
                dup: 150,
                hb_loss: 200,
                forget: 30,
                release: 50,
                subtasks: 120,
                premature: 30,
            },
            _ => Profile {
                malformed: 150,
                fail: 300,
                fatal: 400,
                dup: 300,
                hb_loss: 400,
                forget: 80,
                release: 100,
                subtasks: 100,
                premature: 80,
            },
        }
    }

    fn service() -> Profile {
        Profile {
            malformed: 0,
            fail: 0,
            fatal: 0,
            dup: 0,
            hb_loss: 0,
            forget: 0,
            release: 0,
            subtasks: 0,
            premature: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Report {
    Started,
    Heartbeat,
    Succeeded(Value),
    /// A success without a usable result (`null` or none): must be refused.
    Malformed,
    Failed,
    Released,
}

impl Report {
    fn name(&self) -> &'static str {
        match self {
            Report::Started => "started",
            Report::Heartbeat => "heartbeat",
            Report::Succeeded(_) => "succeeded",
            Report::Malformed => "malformed-success",
            Report::Failed => "failed",
            Report::Released => "released",
        }
    }
}

/// A lease as the agent believes it holds it.
#[derive(Clone, Debug)]
struct Held {
    task: TaskId,
    token: FencingToken,
    started: bool,
    /// A report the store failed to answer: sent again before anything else.
    resend: Option<(Report, Event)>,
}

struct Agent {
    name: String,
    id: AgentId,
    caps: BTreeSet<Capability>,
    concurrency: u32,
    role: Role,
    status: Status,
    registered: bool,
    profile: Profile,
    held: Vec<Held>,
    /// Leases it once held and was told it lost or finished: for zombie reports.
    past: Vec<(TaskId, FencingToken)>,
}

/// A signal as an operator sent it.
#[derive(Clone, Debug, PartialEq)]
struct SentSignal {
    workflow: WorkflowId,
    name: String,
    input: SignalInput,
    id: Option<u64>,
}

/// What the engine answered to a report.
enum Answer {
    Applied(Box<Task>),
    Refused(Box<baton_core::Rejection>),
    StoreFailed,
}

struct Sim {
    seed: u64,
    rng: Rng,
    _dir: TempDir,
    path: PathBuf,
    clock: Arc<ManualClock>,
    ids: Arc<SeededIds>,
    faults: Arc<Faults>,
    trace: Arc<Trace>,
    engine: Option<Engine<FaultyStore>>,
    agents: Vec<Agent>,
    workflows: u32,
    next_sub: u32,
    /// Idempotency keys of signals sent: what was sent under each, and the stored signal's
    /// id once an answer named it.
    signal_keys: BTreeMap<String, SentSignal>,
    /// Signals whose sending was acknowledged, by id: never lost.
    acked_signals: BTreeMap<u64, SentSignal>,
    /// (signal, task) of every delivery a sender was told of.
    delivered: BTreeSet<(u64, TaskId)>,
    /// The schedule of this run, if it has one, and the ticks it had fired when paused.
    schedule: Option<ScheduleSpec>,
    ticks_when_paused: Option<Vec<u64>>,
    step: usize,
    labels: Mutex<HashMap<TaskId, String>>,
    names: Mutex<HashMap<WorkflowId, String>>,
    /// Completions agents were told about: token and version of the completed task.
    completions: BTreeMap<String, (TaskId, FencingToken, u64)>,
    /// Tasks of acknowledged submissions, and tasks an operator was told it cancelled.
    submitted: BTreeMap<String, TaskId>,
    cancelled: BTreeMap<String, TaskId>,
    counters: RunStats,
}

fn open(
    path: &Path,
    clock: &Arc<ManualClock>,
    ids: &Arc<SeededIds>,
    faults: &Arc<Faults>,
) -> Engine<FaultyStore> {
    // A restart here is a process crash, never a power loss: the store may skip the flush.
    let store = SqliteStore::open_with(
        path,
        SqliteOptions {
            durability: Durability::RisksLastCommitsOnPowerLoss,
            ..SqliteOptions::default()
        },
    )
    .expect("the store opens");
    let clock: Arc<dyn Clock> = clock.clone();
    Engine::with_ids(
        FaultyStore::new(store, Arc::clone(faults)),
        clock,
        ids.clone(),
        EngineConfig {
            agent_ttl_ms: AGENT_TTL_MS,
            ..EngineConfig::default()
        },
    )
}

fn code(e: &EngineError) -> String {
    match e {
        EngineError::Rejected(r) => format!("refused {}", r.refusal.code()),
        EngineError::Store(_) => "store error".into(),
        EngineError::Invalid { field, .. } => format!("invalid {field}"),
        EngineError::Graph(g) => format!("graph error ({})", graph_code(g)),
        other => format!("{other:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("error")
            .to_owned(),
    }
}

fn graph_code(g: &baton_core::DagError) -> &'static str {
    use baton_core::DagError as D;
    match g {
        D::DuplicateTask(_) => "duplicate task",
        D::UnknownDependency { .. } => "unknown dependency",
        D::DuplicateDependency { .. } => "duplicate dependency",
        D::Cycle(_) => "cycle",
        D::TooManyTasks => "too many tasks",
        D::UnknownTask(_) => "unknown task",
        _ => "other",
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let trace = Arc::new(Trace::new());
        let rates = match rng.below(4) {
            0 => FaultRates::default(),
            1 => FaultRates {
                write_before: 10,
                write_after: 10,
                read: 3,
            },
            2 => FaultRates {
                write_before: 30,
                write_after: 20,
                read: 5,
            },
            _ => FaultRates {
                write_before: 60,
                write_after: 40,
                read: 10,
            },
        };
        let faults = Arc::new(Faults::new(rng.fork(), rates, Arc::clone(&trace)));
        // In memory where the system offers it: the run tests the engine, not the disk.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        let path = dir.path().join("baton.db");
        let clock = Arc::new(ManualClock::new(T0));
        // Ids and seeds from the run's seed, kept across restarts: a seed replays exactly.
        let ids = Arc::new(SeededIds::new(seed));
        let engine = open(&path, &clock, &ids, &faults);
        trace.push(format!("seed {seed}: fault rates {rates:?}"));
        Sim {
            seed,
            rng,
            _dir: dir,
            path,
            clock,
            ids,
            faults,
            trace,
            engine: Some(engine),
            agents: Vec::new(),
            workflows: 0,
            next_sub: 0,
            signal_keys: BTreeMap::new(),
            acked_signals: BTreeMap::new(),
            delivered: BTreeSet::new(),
            schedule: None,
            ticks_when_paused: None,
            step: 0,
            labels: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            completions: BTreeMap::new(),
            submitted: BTreeMap::new(),
            cancelled: BTreeMap::new(),
            counters: RunStats::default(),
        }
    }

    fn engine(&self) -> Engine<FaultyStore> {
        self.engine.as_ref().expect("an engine is open").clone()
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn log(&self, line: impl AsRef<str>) {
        let t = self.now().ms_since(T0);
        self.trace
            .push(format!("{:>4} {:>7} {}", self.step, t, line.as_ref()));
    }

    fn stats(&self) -> RunStats {
        let mut s = self.counters.clone();
        s.faults_before = self
            .faults
            .before
            .load(std::sync::atomic::Ordering::Relaxed);
        s.faults_after = self.faults.after.load(std::sync::atomic::Ordering::Relaxed);
        s.faults_read = self.faults.reads.load(std::sync::atomic::Ordering::Relaxed);
        s
    }

    // ---- reading the truth (the real store, never faulty) ------------------------------

    async fn task(&self, id: TaskId) -> Task {
        let e = self.engine();
        e.store()
            .inner()
            .task(id)
            .await
            .expect("read")
            .expect("the task exists")
    }

    async fn all_tasks(&self) -> Vec<Task> {
        let e = self.engine();
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = e
                .store()
                .inner()
                .tasks(TaskFilter {
                    after,
                    limit: PAGE_ROWS_MAX,
                    ..TaskFilter::default()
                })
                .await
                .expect("tasks");
            let full = page.len() == PAGE_ROWS_MAX;
            after = page.last().map(|t| t.id);
            all.extend(page);
            if !full {
                return all;
            }
        }
    }

    async fn workflow_name(&self, id: WorkflowId) -> String {
        if let Some(n) = self.names.lock().unwrap().get(&id) {
            return n.clone();
        }
        let e = self.engine();
        let name = match e.store().inner().workflow(id).await.expect("read") {
            // A schedule's runs share a name: each is told apart by its tick.
            Some(w) => match w
                .idempotency_key
                .as_deref()
                .and_then(|k| k.rsplit_once(':'))
            {
                Some((_, tick))
                    if w.idempotency_key
                        .as_deref()
                        .unwrap_or("")
                        .starts_with("schedule:") =>
                {
                    let tick: u64 = tick.parse().unwrap_or(0);
                    format!("{}@{}", w.name, tick.saturating_sub(T0.0))
                }
                _ => w.name,
            },
            None => "?".into(),
        };
        self.names.lock().unwrap().insert(id, name.clone());
        name
    }

    /// `wf-3/t2`: a task as the trace names it, readable where ids are not.
    async fn label(&self, id: TaskId) -> String {
        if let Some(l) = self.labels.lock().unwrap().get(&id) {
            return l.clone();
        }
        let e = self.engine();
        let label = match e.store().inner().task(id).await.expect("read") {
            Some(t) => format!("{}/{}", self.workflow_name(t.workflow).await, t.spec.key),
            None => "?".into(),
        };
        self.labels.lock().unwrap().insert(id, label.clone());
        label
    }

    // ---- the run ------------------------------------------------------------------------

    async fn play(&mut self, settings: Settings) -> Result<(), String> {
        let steps = settings
            .steps
            .unwrap_or_else(|| self.rng.range(150, 300) as usize);
        for _ in 0..self.rng.range(3, 5) {
            self.new_worker();
        }
        self.agents.push(Agent {
            name: "undoer".into(),
            id: AgentId(Uuid::from_u128(0xd0_0000 + self.seed as u128)),
            caps: [Capability::from(UNDO)].into(),
            concurrency: 4,
            role: Role::Service,
            status: Status::Alive,
            registered: false,
            profile: Profile::service(),
            held: Vec::new(),
            past: Vec::new(),
        });
        if self.rng.chance(500) {
            self.create_schedule().await?;
        }
        for _ in 0..self.rng.range(2, 3) {
            self.submit().await?;
        }
        for step in 1..=steps {
            self.step = step;
            self.act().await?;
        }
        self.counters.steps = steps as u64;
        self.drain().await?;
        self.check_final().await
    }

    fn new_worker(&mut self) {
        let n = self.agents.len();
        let mut caps = BTreeSet::new();
        for c in CAPS {
            if self.rng.chance(500) {
                caps.insert(Capability::from(c));
            }
        }
        if caps.is_empty() {
            caps.insert(Capability::from(CAPS[self.rng.index(CAPS.len())]));
        }
        let profile = Profile::random(&mut self.rng);
        let concurrency = self.rng.range(1, 3) as u32;
        self.agents.push(Agent {
            name: format!("w{n}"),
            id: AgentId(Uuid::from_u128(0xa9_0000 + n as u128)),
            caps,
            concurrency,
            role: Role::Worker,
            status: Status::Alive,
            registered: false,
            profile,
            held: Vec::new(),
            past: Vec::new(),
        });
    }

    async fn act(&mut self) -> Result<(), String> {
        // worker, time, tick, zombie, forged, stall, crash, join, cancel task, cancel
        // workflow, retry, submit, signal, control (pause, resume, skip, fail, rerun), restart
        const WEIGHTS: [u32; 15] = [450, 180, 40, 40, 30, 20, 8, 8, 15, 4, 30, 30, 30, 30, 10];
        match self.rng.weighted(&WEIGHTS) {
            0 => {
                let workers: Vec<usize> = (0..self.agents.len())
                    .filter(|&i| self.agents[i].role == Role::Worker)
                    .collect();
                let i = *self.rng.pick(&workers).expect("workers");
                self.worker_acts(i).await
            }
            1 => self.time_passes().await,
            2 => self.tick().await,
            3 => self.zombie_report().await,
            4 => self.forged_report().await,
            5 => {
                self.stall();
                Ok(())
            }
            6 => {
                self.crash();
                Ok(())
            }
            7 => {
                if self.agents.len() < WORKERS_MAX + 1 {
                    self.new_worker();
                    self.log(format!("{} joins", self.agents.last().unwrap().name));
                }
                Ok(())
            }
            8 => self.cancel_task().await,
            9 => self.cancel_workflow().await,
            10 => self.retry_task().await,
            11 => self.submit().await,
            12 => self.send_signal().await,
            13 => self.control().await,
            _ => self.restart().await,
        }
    }

    // ---- agents -----------------------------------------------------------------------

    async fn register(&mut self, i: usize) -> bool {
        let a = &self.agents[i];
        let r = self
            .engine()
            .register_agent(Some(a.id), a.name.clone(), a.caps.clone(), a.concurrency)
            .await;
        let ok = r.is_ok();
        self.log(format!(
            "{} registers -> {}",
            a.name,
            r.map_or_else(|e| code(&e), |_| "ok".into())
        ));
        self.agents[i].registered = ok;
        ok
    }

    async fn worker_acts(&mut self, i: usize) -> Result<(), String> {
        match self.agents[i].status {
            Status::Crashed => return Ok(()),
            Status::Stalled(until) if self.now() < until => return Ok(()),
            Status::Stalled(_) => {
                self.agents[i].status = Status::Alive;
                self.log(format!("{} comes back", self.agents[i].name));
            }
            Status::Alive => {}
        }
        if !self.agents[i].registered {
            self.register(i).await;
            return Ok(());
        }
        let a = &self.agents[i];
        let room = (a.concurrency as usize).saturating_sub(a.held.len());
        if a.held.is_empty() || (room > 0 && self.rng.chance(350)) {
            self.claim(i).await.map(|_| ())
        } else {
            self.work(i).await
        }
    }

    /// Claims up to the agent's room; returns how many it got.
    async fn claim(&mut self, i: usize) -> Result<usize, String> {
        let a = &self.agents[i];
        let max = self.rng.range(1, u64::from(a.concurrency)) as usize;
        let (id, name, caps, concurrency) = (a.id, a.name.clone(), a.caps.clone(), a.concurrency);
        let r = self.engine().claim(id, max, Duration::ZERO).await;
        let tasks = match r {
            Ok(t) => t,
            Err(EngineError::Store(_)) => {
                self.log(format!("{name} claims -> store error"));
                return Ok(0);
            }
            Err(e) => return Err(format!("{name}'s claim failed unexpectedly: {e}")),
        };
        let mut got = Vec::new();
        for t in &tasks {
            let label = self.label(t.id).await;
            let lease = t.state.lease();
            ensure!(
                t.kind() == StateKind::Assigned && lease.is_some_and(|l| l.agent == id),
                "{name} was handed {label} in state {} with lease {lease:?}",
                t.kind()
            );
            ensure!(
                t.spec.capabilities.is_subset(&caps),
                "{name} (capabilities {caps:?}) was handed {label}, which needs {:?}",
                t.spec.capabilities
            );
            let token = lease.expect("checked").token;
            got.push(format!("{label}#{token}"));
            self.agents[i].held.push(Held {
                task: t.id,
                token,
                started: false,
                resend: None,
            });
        }
        ensure!(
            tasks.len() <= max,
            "{name} asked for {max} and got {}",
            tasks.len()
        );
        let held = self
            .engine()
            .store()
            .inner()
            .leased_to(id)
            .await
            .expect("read");
        ensure!(
            held.len() <= concurrency as usize,
            "{name} holds {} leases, beyond its concurrency {concurrency}",
            held.len()
        );
        self.log(format!("{name} claims {max} -> [{}]", got.join(", ")));
        Ok(tasks.len())
    }

    /// Sends one report about a lease the agent holds (or held) and keeps its view in step.
    async fn report(
        &mut self,
        i: usize,
        task: TaskId,
        token: FencingToken,
        kind: Report,
        event: Event,
    ) -> Result<Answer, String> {
        let res = self
            .engine()
            .report(task, event.clone(), Default::default())
            .await;
        let label = self.label(task).await;
        let name = self.agents[i].name.clone();
        let me = self.agents[i].id;
        self.log(format!(
            "{name} {} {label}#{token} -> {}",
            kind.name(),
            match &res {
                Ok(t) => format!("{} v{}", t.kind(), t.version),
                Err(e) => code(e),
            }
        ));
        let pos = self.agents[i]
            .held
            .iter()
            .position(|h| h.task == task && h.token == token);
        let drop_lease = |sim: &mut Sim| {
            if let Some(p) = pos {
                sim.agents[i].held.remove(p);
                sim.agents[i].past.push((task, token));
            }
        };
        match res {
            Ok(t) => {
                let mine = t
                    .state
                    .lease()
                    .is_some_and(|l| l.agent == me && l.token == token);
                match &kind {
                    Report::Started | Report::Heartbeat => ensure!(
                        t.kind() == StateKind::Executing && mine,
                        "{name}'s {} on {label} was answered with {} under lease {:?}",
                        kind.name(),
                        t.kind(),
                        t.state.lease()
                    ),
                    Report::Succeeded(v) => {
                        ensure!(
                            matches!(&t.state, State::Completed { result, token: done }
                                if result == v && *done == token),
                            "{name}'s success on {label} (token {token}) was answered with {:?}",
                            t.state
                        );
                        if let Some(&(id, tk, version)) = self.completions.get(&label) {
                            let same = id == task && tk == token && version == t.version;
                            // A rerun reopened it since: it completes again.
                            ensure!(
                                same || self.reopened_since(id, version).await,
                                "{label} completed twice: token {tk} v{version}, then token \
                                 {token} v{}",
                                t.version
                            );
                        }
                        self.completions
                            .insert(label.clone(), (task, token, t.version));
                    }
                    Report::Malformed => {
                        return Err(format!(
                            "{name}'s malformed success on {label} was accepted: {:?}",
                            t.state
                        ))
                    }
                    Report::Failed => ensure!(
                        matches!(&t.state, State::Failed { error, .. } if error.token == Some(token)),
                        "{name}'s failure on {label} was answered with {:?}",
                        t.state
                    ),
                    Report::Released => ensure!(
                        t.kind() == StateKind::Pending,
                        "{name}'s release of {label} was answered with {}",
                        t.kind()
                    ),
                }
                match kind {
                    Report::Started | Report::Heartbeat => {
                        if let Some(p) = pos {
                            self.agents[i].held[p].started = true;
                            self.agents[i].held[p].resend = None;
                        }
                    }
                    _ => drop_lease(self),
                }
                Ok(Answer::Applied(Box::new(t)))
            }
            Err(EngineError::Rejected(r)) => {
                ensure!(
                    !r.is_duplicate(),
                    "a duplicate is answered, never refused ({label})"
                );
                let keep = kind == Report::Malformed
                    && matches!(&r.refusal, baton_core::Refusal::GuardFailed { guard, .. }
                        if guard == "result present");
                if kind == Report::Malformed {
                    self.counters.malformed += 1;
                }
                if !keep {
                    drop_lease(self);
                }
                Ok(Answer::Refused(r))
            }
            Err(EngineError::Store(_)) => {
                if let Some(p) = pos {
                    if kind != Report::Malformed {
                        self.agents[i].held[p].resend = Some((kind, event));
                    }
                }
                Ok(Answer::StoreFailed)
            }
            Err(e) => Err(format!(
                "{name}'s {} report on {label} failed unexpectedly: {e}",
                kind.name()
            )),
        }
    }

    /// A worker does one thing with one of its leases.
    async fn work(&mut self, i: usize) -> Result<(), String> {
        let a = &self.agents[i];
        let held = a.held[self.rng.index(a.held.len())].clone();
        let p = a.profile;
        let (me, name) = (a.id, a.name.clone());
        if let Some((kind, event)) = held.resend {
            self.counters.resends += 1;
            self.report(i, held.task, held.token, kind, event).await?;
            return Ok(());
        }
        let (kind, event) = if !held.started {
            let go = 1_000 - p.forget - p.release - p.premature;
            match self.rng.weighted(&[go, p.forget, p.release, p.premature]) {
                0 => (
                    Report::Started,
                    Event::ExecutionStarted {
                        by_claim: false,
                        agent: me,
                        token: held.token,
                    },
                ),
                1 => {
                    let label = self.label(held.task).await;
                    self.log(format!("{name} forgets {label}#{}", held.token));
                    let a = &mut self.agents[i];
                    a.held
                        .retain(|h| h.task != held.task || h.token != held.token);
                    a.past.push((held.task, held.token));
                    return Ok(());
                }
                2 => (
                    Report::Released,
                    Event::AssignmentReleased {
                        agent: me,
                        token: held.token,
                    },
                ),
                _ => {
                    // Success before starting: no rule takes Assigned to Completed.
                    let event = Event::ExecutionSucceeded {
                        usage: Default::default(),
                        agent: me,
                        token: held.token,
                        result: Some(json!({"premature": true})),
                    };
                    return self
                        .expect_unchanged("a success before starting", held.task, event, None)
                        .await;
                }
            }
        } else {
            let choice = self
                .rng
                .weighted(&[300, 350, p.fail, p.release, p.subtasks]);
            match choice {
                0 => {
                    if self.rng.chance(p.hb_loss) {
                        let label = self.label(held.task).await;
                        self.log(format!("{name} loses a heartbeat on {label}"));
                        return Ok(());
                    }
                    (
                        Report::Heartbeat,
                        Event::Heartbeat {
                            usage: Default::default(),
                            agent: me,
                            token: held.token,
                            progress: self.rng.chance(500).then(|| json!({"step": self.step})),
                        },
                    )
                }
                1 => {
                    if self.rng.chance(p.malformed) {
                        let result = if self.rng.chance(500) {
                            None
                        } else {
                            Some(Value::Null)
                        };
                        (
                            Report::Malformed,
                            Event::ExecutionSucceeded {
                                usage: Default::default(),
                                agent: me,
                                token: held.token,
                                result,
                            },
                        )
                    } else {
                        let label = self.label(held.task).await;
                        // A float with all its digits: results must survive the store's JSON.
                        let score = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                        let v =
                            json!({"done": label, "by": name, "step": self.step, "score": score});
                        (
                            Report::Succeeded(v.clone()),
                            Event::ExecutionSucceeded {
                                usage: Default::default(),
                                agent: me,
                                token: held.token,
                                result: Some(v),
                            },
                        )
                    }
                }
                2 => {
                    let error = if self.rng.chance(p.fatal) {
                        if self.rng.chance(500) {
                            ErrorReport {
                                kind: "bad_input".into(),
                                message: "cannot be done".into(),
                                retryable: false,
                            }
                        } else {
                            ErrorReport {
                                kind: "fatal".into(),
                                message: "listed as non-retryable by some specs".into(),
                                retryable: true,
                            }
                        }
                    } else {
                        ErrorReport {
                            kind: "flaky".into(),
                            message: format!("flaked at step {}", self.step),
                            retryable: true,
                        }
                    };
                    (
                        Report::Failed,
                        Event::ExecutionFailed {
                            usage: Default::default(),
                            agent: me,
                            token: held.token,
                            error,
                        },
                    )
                }
                3 => (
                    Report::Released,
                    Event::AssignmentReleased {
                        agent: me,
                        token: held.token,
                    },
                ),
                _ => return self.add_subtasks(i, held).await,
            }
        };
        let first = self
            .report(i, held.task, held.token, kind.clone(), event.clone())
            .await?;
        if self.rng.chance(p.dup) {
            self.counters.duplicates += 1;
            let second = self
                .report(i, held.task, held.token, kind.clone(), event)
                .await?;
            let dedup = matches!(
                kind,
                Report::Started | Report::Succeeded(_) | Report::Failed
            );
            if let (true, Answer::Applied(t1)) = (dedup, &first) {
                let label = self.label(held.task).await;
                match second {
                    Answer::Applied(t2) => ensure!(
                        t2.version == t1.version,
                        "the duplicate {} on {label} was applied again (v{} -> v{})",
                        kind.name(),
                        t1.version,
                        t2.version
                    ),
                    Answer::Refused(r) => {
                        return Err(format!(
                            "the duplicate {} on {label} was refused: {r}",
                            kind.name()
                        ))
                    }
                    Answer::StoreFailed => {}
                }
            }
        }
        Ok(())
    }

    /// Decomposition by the agent executing `held`.
    async fn add_subtasks(&mut self, i: usize, held: Held) -> Result<(), String> {
        if self.total_tasks().await >= TASKS_MAX {
            return Ok(());
        }
        let parent = self.task(held.task).await;
        let e = self.engine();
        let existing: Vec<TaskKey> = e
            .store()
            .inner()
            .tasks(TaskFilter {
                workflow: Some(parent.workflow),
                limit: PAGE_ROWS_MAX,
                ..TaskFilter::default()
            })
            .await
            .expect("read")
            .into_iter()
            .map(|t| t.spec.key.clone())
            .collect();
        let n = self.rng.range(1, 3);
        let mut specs: Vec<TaskSpec> = Vec::new();
        for _ in 0..n {
            let key = format!("s{}", self.next_sub);
            self.next_sub += 1;
            let mut deps = Vec::new();
            for s in &specs {
                if self.rng.chance(300) {
                    deps.push(s.key.clone());
                }
            }
            for k in &existing {
                if deps.len() < 3 && self.rng.chance(60) {
                    deps.push(k.clone());
                }
            }
            specs.push(self.random_spec(&key, deps));
        }
        let keys: Vec<String> = specs.iter().map(|s| s.key.0.clone()).collect();
        let (me, name) = (self.agents[i].id, self.agents[i].name.clone());
        let label = self.label(held.task).await;
        let r = e.add_subtasks(held.task, me, held.token, specs).await;
        self.log(format!(
            "{name} adds [{}] under {label}#{} -> {}",
            keys.join(", "),
            held.token,
            match &r {
                Ok(_) => "ok".into(),
                Err(e) => code(e),
            }
        ));
        match r {
            Ok(added) => {
                ensure!(added.len() == keys.len(), "sub-tasks missing: {added:?}");
                self.counters.subtasks += added.len() as u64;
                Ok(())
            }
            Err(
                EngineError::Store(_)
                | EngineError::Rejected(_)
                | EngineError::Invalid { .. }
                | EngineError::Graph(_),
            ) => Ok(()),
            Err(e) => Err(format!(
                "adding sub-tasks to {label} failed unexpectedly: {e}"
            )),
        }
    }

    /// Sends a report that must change nothing; `unless` names a lease under which it would be
    /// legitimate (then it is not sent).
    async fn expect_unchanged(
        &mut self,
        what: &str,
        task: TaskId,
        event: Event,
        unless: Option<(AgentId, FencingToken)>,
    ) -> Result<(), String> {
        let before = self.task(task).await;
        let label = self.label(task).await;
        if let (Some((agent, token)), Some(l)) = (unless, before.state.lease()) {
            if l.agent == agent && l.token == token {
                return Ok(());
            }
        }
        let res = self
            .engine()
            .report(task, event.clone(), Default::default())
            .await;
        let after = self.task(task).await;
        self.log(format!(
            "{what}: {} on {label} ({} v{}, token {}) -> {}",
            event.kind(),
            before.kind(),
            before.version,
            before.fencing_token,
            match &res {
                Ok(t) => format!("answered {} v{}", t.kind(), t.version),
                Err(e) => code(e),
            }
        ));
        ensure!(
            after.version == before.version,
            "{what} changed {label}: {} v{} -> {} v{} by {event:?}",
            before.kind(),
            before.version,
            after.kind(),
            after.version
        );
        match res {
            Ok(_) | Err(EngineError::Rejected(_) | EngineError::Store(_)) => Ok(()),
            Err(e) => Err(format!("{what} on {label} failed unexpectedly: {e}")),
        }
    }

    /// An agent reports on a lease it lost or finished long ago.
    async fn zombie_report(&mut self) -> Result<(), String> {
        let candidates: Vec<usize> = (0..self.agents.len())
            .filter(|&i| {
                self.agents[i].status != Status::Crashed && !self.agents[i].past.is_empty()
            })
            .collect();
        let Some(&i) = self.rng.pick(&candidates) else {
            return Ok(());
        };
        let a = &self.agents[i];
        let (task, token) = a.past[self.rng.index(a.past.len())];
        let event = self.random_report(a.id, token);
        self.counters.zombie_reports += 1;
        let what = format!("zombie {}", self.agents[i].name);
        self.expect_unchanged(&what, task, event, Some((self.agents[i].id, token)))
            .await
    }

    /// A report on a live lease from another agent, or with a token from the past or future.
    async fn forged_report(&mut self) -> Result<(), String> {
        let leased: Vec<Task> = self
            .all_tasks()
            .await
            .into_iter()
            .filter(|t| t.state.lease().is_some())
            .collect();
        let Some(t) = self.rng.pick(&leased).cloned() else {
            return Ok(());
        };
        let lease = t.state.lease().expect("leased").clone();
        let others: Vec<AgentId> = self
            .agents
            .iter()
            .map(|a| a.id)
            .filter(|&a| a != lease.agent)
            .collect();
        let (agent, token, what) = match self.rng.below(3) {
            0 => (
                *self.rng.pick(&others).expect("several agents"),
                lease.token,
                "forged (another agent)",
            ),
            1 => (lease.agent, lease.token.next(), "forged (future token)"),
            _ => (
                lease.agent,
                FencingToken(lease.token.0.saturating_sub(1)),
                "forged (past token)",
            ),
        };
        let event = self.random_report(agent, token);
        self.counters.forged_reports += 1;
        self.expect_unchanged(what, t.id, event, None).await
    }

    fn random_report(&mut self, agent: AgentId, token: FencingToken) -> Event {
        match self.rng.below(5) {
            0 => Event::ExecutionStarted {
                agent,
                token,
                by_claim: false,
            },
            1 => Event::Heartbeat {
                usage: Default::default(),
                agent,
                token,
                progress: None,
            },
            2 => Event::ExecutionSucceeded {
                usage: Default::default(),
                agent,
                token,
                result: Some(json!({"zombie": self.step})),
            },
            3 => Event::ExecutionFailed {
                usage: Default::default(),
                agent,
                token,
                error: ErrorReport {
                    kind: "zombie".into(),
                    message: "late".into(),
                    retryable: self.rng.chance(500),
                },
            },
            _ => Event::AssignmentReleased { agent, token },
        }
    }

    fn alive_workers(&self) -> Vec<usize> {
        (0..self.agents.len())
            .filter(|&i| {
                self.agents[i].role == Role::Worker && self.agents[i].status == Status::Alive
            })
            .collect()
    }

    fn stall(&mut self) {
        let alive = self.alive_workers();
        if let Some(&i) = self.rng.pick(&alive) {
            let until = self.now().plus_ms(self.rng.range(2_000, 45_000));
            self.agents[i].status = Status::Stalled(until);
            self.counters.stalls += 1;
            self.log(format!(
                "{} stalls until {}",
                self.agents[i].name,
                until.ms_since(T0)
            ));
        }
    }

    fn crash(&mut self) {
        let alive = self.alive_workers();
        if alive.len() > 2 {
            let i = *self.rng.pick(&alive).expect("alive");
            self.agents[i].status = Status::Crashed;
            self.counters.crashes += 1;
            self.log(format!(
                "{} crashes holding {} leases",
                self.agents[i].name,
                self.agents[i].held.len()
            ));
        }
    }

    /// A well-behaved agent finishes everything it holds and everything it can claim.
    async fn serve(&mut self, i: usize) -> Result<(), String> {
        if !self.agents[i].registered && !self.register(i).await {
            return Ok(());
        }
        for _ in 0..64 {
            let Some(held) = self.agents[i].held.first().cloned() else {
                if self.claim(i).await? == 0 {
                    return Ok(());
                }
                continue;
            };
            let me = self.agents[i].id;
            let (kind, event) = match held.resend {
                Some(r) => r,
                None if !held.started => (
                    Report::Started,
                    Event::ExecutionStarted {
                        by_claim: false,
                        agent: me,
                        token: held.token,
                    },
                ),
                None => {
                    let label = self.label(held.task).await;
                    let v = json!({"done": label, "by": self.agents[i].name});
                    (
                        Report::Succeeded(v.clone()),
                        Event::ExecutionSucceeded {
                            usage: Default::default(),
                            agent: me,
                            token: held.token,
                            result: Some(v),
                        },
                    )
                }
            };
            if let Answer::StoreFailed = self.report(i, held.task, held.token, kind, event).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    fn service_agent(&mut self, name: &str) -> usize {
        if let Some(i) = self.agents.iter().position(|a| a.name == name) {
            return i;
        }
        self.agents.push(Agent {
            name: name.into(),
            id: AgentId(Uuid::from_u128(0xd1_0000 + self.agents.len() as u128)),
            caps: CAPS.iter().map(|&c| Capability::from(c)).collect(),
            concurrency: 64,
            role: Role::Service,
            status: Status::Alive,
            registered: false,
            profile: Profile::service(),
            held: Vec::new(),
            past: Vec::new(),
        });
        self.agents.len() - 1
    }

    // ---- time and the engine's own work -----------------------------------------------

    async fn time_passes(&mut self) -> Result<(), String> {
        // Compensation tasks are served before time moves, so they never fail: their retry
        // policy is the engine's default, whose jitter is drawn from real entropy.
        let undoer = self
            .agents
            .iter()
            .position(|a| a.name == "undoer")
            .expect("undoer");
        if !self.agents[undoer].held.is_empty() || self.undo_waiting().await {
            self.serve(undoer).await?;
        }
        if self.rng.chance(50) {
            // The wall clock is stepped back (an NTP correction, a VM resumed): deadlines come
            // later, nothing else may change.
            let back = self.rng.range(1, 30_000);
            self.clock.set(Timestamp(self.now().0 - back));
            self.counters.clock_steps_back += 1;
            self.log(format!("the clock steps back {back} ms"));
            return self.tick().await;
        }
        let ms = if self.rng.chance(100) {
            self.rng.range(5_000, 15_000)
        } else {
            self.rng.range(100, 4_000)
        };
        self.clock.advance(ms);
        self.log(format!("time passes: +{ms} ms"));
        self.tick().await
    }

    /// Whether a compensation task waits for the undoer (which, registered or not, may then
    /// be the only agent able to run it).
    async fn undo_waiting(&self) -> bool {
        let e = self.engine();
        let pending = e
            .store()
            .inner()
            .tasks(TaskFilter {
                state: Some(StateKind::Pending),
                limit: PAGE_ROWS_MAX,
                ..TaskFilter::default()
            })
            .await
            .expect("read");
        let undo = Capability::from(UNDO);
        pending.iter().any(|t| t.spec.capabilities.contains(&undo))
    }

    async fn tick(&mut self) -> Result<(), String> {
        match self.engine().tick().await {
            Ok(()) => {
                self.log("tick");
                Ok(())
            }
            Err(EngineError::Store(_)) => {
                self.log("tick -> store error");
                Ok(())
            }
            Err(e) => Err(format!("tick failed unexpectedly: {e}")),
        }
    }

    async fn restart(&mut self) -> Result<(), String> {
        drop(self.engine.take());
        self.engine = Some(open(&self.path, &self.clock, &self.ids, &self.faults));
        self.counters.restarts += 1;
        self.log("restart: engine and store dropped, the file reopened");
        // Recovery: the first round of the new process runs what the old one left undone.
        self.faults.set_enabled(false);
        let r = self.engine().tick().await;
        self.faults.set_enabled(true);
        if let Err(e) = r {
            return Err(format!("the first tick after a restart failed: {e}"));
        }
        self.no_kept_signal_waits("after a restart").await?;
        let report = check_store(self.engine().store().inner(), |_| {})
            .await
            .map_err(|e| format!("check_store: {e}"))?;
        self.violations(&report, "after a restart").await
    }

    async fn violations(
        &self,
        report: &baton_engine::check::CheckReport,
        when: &str,
    ) -> Result<(), String> {
        if report.is_clean() {
            return Ok(());
        }
        let mut lines = Vec::new();
        for v in &report.violations {
            let label = match v.task {
                Some(t) => self.label(t).await,
                None => "-".into(),
            };
            lines.push(format!("  {label}: {}", v.detail));
        }
        Err(format!(
            "check_store found {} violations {when}:\n{}",
            lines.len(),
            lines.join("\n")
        ))
    }

    // ---- operators ----------------------------------------------------------------------

    async fn total_tasks(&self) -> u64 {
        let e = self.engine();
        e.store()
            .inner()
            .counts(None)
            .await
            .expect("counts")
            .total()
    }

    async fn cancel_task(&mut self) -> Result<(), String> {
        let tasks = self.all_tasks().await;
        let Some(t) = self.rng.pick(&tasks).cloned() else {
            return Ok(());
        };
        let label = self.label(t.id).await;
        let r = self
            .engine()
            .cancel_task(t.id, "ops".into(), "simulated".into())
            .await;
        self.log(format!(
            "ops cancels {label} ({}) -> {}",
            t.kind(),
            r.as_ref().map_or_else(code, |t| t.kind().to_string())
        ));
        self.counters.operator_cancels += 1;
        match r {
            Ok(after) => {
                ensure!(
                    after.kind() == StateKind::Cancelled,
                    "cancelling {label} answered {}",
                    after.kind()
                );
                if matches!(
                    after.state,
                    State::Cancelled {
                        reason: baton_core::CancelReason::Operator { .. }
                    }
                ) {
                    self.cancelled.insert(label, t.id);
                }
            }
            Err(EngineError::Rejected(rej)) => ensure!(
                t.state.is_terminal(),
                "cancelling {label}, {}, was refused: {rej}",
                t.kind()
            ),
            Err(EngineError::Store(_)) => {}
            Err(e) => return Err(format!("cancelling {label} failed unexpectedly: {e}")),
        }
        Ok(())
    }

    async fn cancel_workflow(&mut self) -> Result<(), String> {
        let e = self.engine();
        let flows = e.store().inner().workflows(None, 100).await.expect("read");
        let Some(w) = self.rng.pick(&flows).cloned() else {
            return Ok(());
        };
        let r = e
            .cancel_workflow(w.id, "ops".into(), "simulated".into())
            .await;
        self.log(format!(
            "ops cancels workflow {} -> {}",
            w.name,
            r.as_ref().map_or_else(code, |n| format!("{n} cancelled"))
        ));
        self.counters.operator_cancels += 1;
        match r {
            Ok(_) => {
                for t in self.all_tasks().await {
                    if t.workflow == w.id {
                        let label = self.label(t.id).await;
                        ensure!(
                            t.state.is_terminal(),
                            "{label} is {} right after its workflow was cancelled",
                            t.kind()
                        );
                    }
                }
                Ok(())
            }
            Err(EngineError::Store(_)) => Ok(()),
            Err(e) => Err(format!("cancelling {} failed unexpectedly: {e}", w.name)),
        }
    }

    async fn retry_task(&mut self) -> Result<(), String> {
        let tasks = self.all_tasks().await;
        let finals: Vec<Task> = tasks
            .iter()
            .filter(|t| matches!(t.state, State::Failed { retry_at: None, .. }))
            .cloned()
            .collect();
        let pool = if !finals.is_empty() && self.rng.chance(800) {
            &finals
        } else {
            &tasks
        };
        let Some(t) = self.rng.pick(pool).cloned() else {
            return Ok(());
        };
        let label = self.label(t.id).await;
        let r = self.engine().retry_task(t.id, "ops".into()).await;
        self.log(format!(
            "ops retries {label} ({}) -> {}",
            t.kind(),
            r.as_ref().map_or_else(code, |t| t.kind().to_string())
        ));
        self.counters.operator_retries += 1;
        let final_failure = matches!(t.state, State::Failed { retry_at: None, .. });
        match r {
            // Blocked when it failed before an agent held it: it is released again.
            Ok(after) => ensure!(
                final_failure && matches!(after.kind(), StateKind::Pending | StateKind::Blocked),
                "retrying {label} ({}) answered {}",
                t.kind(),
                after.kind()
            ),
            Err(EngineError::Rejected(rej)) => ensure!(
                !final_failure,
                "retrying {label}, failed for good, was refused: {rej}"
            ),
            Err(EngineError::Store(_)) => {}
            Err(e) => return Err(format!("retrying {label} failed unexpectedly: {e}")),
        }
        Ok(())
    }

    /// An operator's control on a random task: pause (sometimes taking it back now), resume,
    /// skip, fail, rerun (sometimes a dry run), each accepted exactly when the lifecycle allows
    /// it and leaving the task as asked.
    async fn control(&mut self) -> Result<(), String> {
        let tasks = self.all_tasks().await;
        let Some(t) = self.rng.pick(&tasks).cloned() else {
            return Ok(());
        };
        let label = self.label(t.id).await;
        let op = Operator::new("ops", "simulated").expect("a reason");
        let e = self.engine();
        let ended = matches!(t.kind(), StateKind::Completed | StateKind::Cancelled);
        let leased = t.state.lease().is_some();
        let refused = |r: &Result<Task, EngineError>| match r {
            Err(EngineError::Rejected(_)) => Some(true),
            Err(_) => None,
            Ok(_) => Some(false),
        };
        match self.rng.index(6) {
            0 | 1 => {
                let now = self.rng.chance(400);
                let r = e.pause_task(t.id, op, now).await;
                self.log(format!(
                    "ops pauses {label} ({}, now: {now}) -> {}",
                    t.kind(),
                    r.as_ref().map_or_else(code, |t| t.kind().to_string())
                ));
                self.counters.pauses += 1;
                let may = !t.state.is_terminal() && (!t.is_paused() || (now && leased));
                if let Some(refused) = refused(&r) {
                    ensure!(
                        refused != may,
                        "pausing {label} ({:?}) answered {r:?}",
                        t.state
                    );
                }
                if let Ok(after) = &r {
                    ensure!(after.is_paused(), "{label} answered a pause unpaused");
                    ensure!(
                        !(now && after.state.lease().is_some()),
                        "{label} paused now but still leased"
                    );
                }
                if let Err(e @ (EngineError::Invalid { .. } | EngineError::TaskNotFound(_))) = &r {
                    return Err(format!("pausing {label} failed unexpectedly: {e}"));
                }
            }
            2 => {
                let r = e.resume_task(t.id, op).await;
                self.log(format!(
                    "ops resumes {label} ({}) -> {}",
                    t.kind(),
                    r.as_ref().map_or_else(code, |t| t.kind().to_string())
                ));
                self.counters.resumes += 1;
                if let Some(refused) = refused(&r) {
                    ensure!(refused != t.is_paused(), "resuming {label} answered {r:?}");
                }
                if let Ok(after) = &r {
                    ensure!(!after.is_paused(), "{label} still paused after a resume");
                }
            }
            3 => {
                let result = json!({"skipped": label});
                let r = e.skip_task(t.id, op, result.clone()).await;
                self.log(format!(
                    "ops skips {label} ({}) -> {}",
                    t.kind(),
                    r.as_ref().map_or_else(code, |t| t.kind().to_string())
                ));
                self.counters.skips += 1;
                if let Some(refused) = refused(&r) {
                    ensure!(
                        refused == ended,
                        "skipping {label} ({:?}) answered {r:?}",
                        t.state
                    );
                }
                if let Ok(after) = &r {
                    ensure!(
                        matches!(&after.state, State::Completed { result: got, .. } if *got == result),
                        "{label} skipped is {:?}",
                        after.state
                    );
                    if let State::Completed { token, .. } = after.state {
                        self.completions
                            .insert(label.clone(), (after.id, token, after.version));
                    }
                }
            }
            4 => {
                let r = e.fail_task(t.id, op, None).await;
                self.log(format!(
                    "ops fails {label} ({}) -> {}",
                    t.kind(),
                    r.as_ref().map_or_else(code, |t| t.kind().to_string())
                ));
                self.counters.forced_failures += 1;
                if let Some(refused) = refused(&r) {
                    ensure!(
                        refused == t.state.is_terminal(),
                        "failing {label} ({:?}) answered {r:?}",
                        t.state
                    );
                }
                if let Ok(after) = &r {
                    ensure!(
                        matches!(&after.state, State::Failed { retry_at: None, error } if error.kind == "forced"),
                        "{label} failed by an operator is {:?}",
                        after.state
                    );
                }
            }
            _ => {
                let dry_run = self.rng.chance(300);
                let r = e.rerun(t.id, op, None, dry_run).await;
                self.log(format!(
                    "ops reruns {label} ({}, dry run: {dry_run}) -> {}",
                    t.kind(),
                    r.as_ref()
                        .map_or_else(code, |p| format!("{} tasks", p.tasks.len()))
                ));
                self.counters.reruns += 1;
                match r {
                    Ok(plan) => {
                        ensure!(
                            plan.tasks.first().map(|r| r.id) == Some(t.id),
                            "the rerun of {label} does not start from it"
                        );
                        for r in &plan.tasks {
                            let now = self.task(r.id).await;
                            let name = self.label(r.id).await;
                            if dry_run {
                                ensure!(now.kind() == r.state, "a dry run moved {name}");
                            } else {
                                // Cancelled at once behind a dependency that has ended.
                                let behind = matches!(
                                    now.state,
                                    State::Cancelled {
                                        reason: baton_core::CancelReason::Upstream { .. }
                                    }
                                );
                                ensure!(
                                    now.kind() == StateKind::Blocked || behind,
                                    "{name} is {:?} right after a rerun",
                                    now.state
                                );
                            }
                        }
                    }
                    // Only a fan-out that expanded is refused, on the way down.
                    Err(EngineError::Rejected(rej)) => ensure!(
                        rej.code() == "conflict",
                        "rerunning {label} was refused: {rej}"
                    ),
                    Err(EngineError::Store(_)) => {}
                    Err(e) => return Err(format!("rerunning {label} failed unexpectedly: {e}")),
                }
            }
        }
        Ok(())
    }

    // ---- signals and schedules --------------------------------------------------------

    fn new_signal(&mut self, workflow: WorkflowId) -> SentSignal {
        let name = SIGNALS[self.rng.index(SIGNALS.len())].to_owned();
        let input = if self.rng.chance(120) {
            SignalInput::Reject(format!("no, at step {}", self.step))
        } else {
            SignalInput::Data(json!({ "approved": self.step }))
        };
        SentSignal {
            workflow,
            name,
            input,
            id: None,
        }
    }

    /// An operator sends a signal to a workflow: whether a task waits for it yet or not (then
    /// it is kept), without an idempotency key, under a new one, again under a used one with
    /// the same body (applied once), or under a used one with another body (refused).
    async fn send_signal(&mut self) -> Result<(), String> {
        let flows = self
            .engine()
            .store()
            .inner()
            .workflows(None, 100)
            .await
            .expect("read");
        let Some(w) = self.rng.pick(&flows).cloned() else {
            return Ok(());
        };
        let used: Vec<String> = self.signal_keys.keys().cloned().collect();
        let choice = self.rng.weighted(&[300, 450, 200, 50]);
        let (key, sent, conflict) = match self.rng.pick(&used).cloned() {
            Some(k) if choice >= 2 => {
                let first = self.signal_keys[&k].clone();
                if choice == 2 || first.id.is_none() {
                    (Some(k), first, false)
                } else {
                    let other = SentSignal {
                        input: SignalInput::Data(json!({ "other": self.step })),
                        ..first
                    };
                    (Some(k), other, true)
                }
            }
            _ if choice == 1 || choice >= 2 => {
                let k = format!("sig-{}", self.signal_keys.len());
                let sent = self.new_signal(w.id);
                self.signal_keys.insert(k.clone(), sent.clone());
                (Some(k), sent, false)
            }
            _ => (None, self.new_signal(w.id), false),
        };
        let flow = self.workflow_name(sent.workflow).await;
        // A task its delivery releases (a dependent of one it completes) starts waiting after
        // the signal was sent: only those waiting before must have taken it.
        let waiting_before: std::collections::HashSet<TaskId> = self
            .waiting_for(sent.workflow, &sent.name)
            .await
            .iter()
            .map(|t| t.id)
            .collect();
        let r = self
            .engine()
            .signal(
                sent.workflow,
                &sent.name,
                sent.input.clone(),
                "ops",
                key.clone(),
            )
            .await;
        self.log(format!(
            "ops signals {}/{} ({}, key {key:?}) -> {}",
            flow,
            sent.name,
            match &sent.input {
                SignalInput::Data(d) => d.to_string(),
                SignalInput::Reject(r) => format!("reject {r:?}"),
            },
            match &r {
                Ok(receipt) => format!(
                    "#{} created {} delivered to {}",
                    receipt.signal.id,
                    receipt.created,
                    receipt.delivered_to.len()
                ),
                Err(e) => code(e),
            }
        ));
        let receipt = match r {
            Ok(receipt) => receipt,
            Err(EngineError::IdempotencyMismatch { .. }) if conflict => {
                self.counters.signals_refused += 1;
                return Ok(());
            }
            Err(EngineError::Store(_)) => return Ok(()),
            Err(e) => return Err(format!("signalling {flow} failed unexpectedly: {e}")),
        };
        ensure!(
            !conflict,
            "{flow}: a used idempotency key with another body was accepted"
        );
        self.counters.signals_sent += 1;
        let id = receipt.signal.id;
        // Whether an earlier send with this key was answered: one that failed may have stored
        // the signal and failed before delivering it, and then this send delivers it (once).
        let mut answered_before = false;
        if let Some(k) = &key {
            let first = self.signal_keys.get_mut(k).expect("the key was recorded");
            answered_before = first.id.is_some();
            ensure!(
                first.id.is_none_or(|first| first == id),
                "{flow}: key {k} answered signal #{id}, it stored #{:?} before",
                first.id
            );
            first.id = Some(id);
        }
        if !receipt.created {
            self.counters.signals_repeated += 1;
            ensure!(
                receipt.delivered_to.is_empty() || !answered_before,
                "{flow}: a repeated signal was delivered again"
            );
        }
        self.acked_signals.insert(
            id,
            SentSignal {
                id: Some(id),
                ..sent.clone()
            },
        );
        for t in &receipt.delivered_to {
            let label = self.label(t.id).await;
            ensure!(
                t.workflow == sent.workflow
                    && t.spec
                        .wait_for
                        .as_ref()
                        .is_some_and(|w| w.signal == sent.name),
                "signal #{id} was delivered to {label}, which does not wait for it"
            );
            let took = match (&sent.input, &t.state) {
                (SignalInput::Data(d), State::Completed { result, .. }) => result == d,
                (SignalInput::Reject(_), State::Failed { error, retry_at }) => {
                    error.kind == "rejected" && retry_at.is_none()
                }
                _ => false,
            };
            ensure!(took, "{label} took signal #{id} and is {:?}", t.state);
            self.delivered.insert((id, t.id));
        }
        self.counters.signals_delivered += receipt.delivered_to.len() as u64;
        if receipt.created {
            if receipt.delivered_to.is_empty() {
                self.counters.signals_kept += 1;
            }
            let still = self.waiting_for(sent.workflow, &sent.name).await;
            if let Some(t) = still.iter().find(|t| waiting_before.contains(&t.id)) {
                let label = self.label(t.id).await;
                return Err(format!(
                    "{label} still waits for {} after signal #{id} was sent",
                    sent.name
                ));
            }
        }
        Ok(())
    }

    /// The tasks of `workflow` waiting for the signal `name` (a page), read from the store.
    async fn waiting_for(&self, workflow: WorkflowId, name: &str) -> Vec<Task> {
        self.engine()
            .store()
            .inner()
            .waiting_for_signal(
                TaskFilter {
                    workflow: Some(workflow),
                    limit: PAGE_ROWS_MAX,
                    ..TaskFilter::default()
                },
                Some(name.to_owned()),
            )
            .await
            .expect("read")
    }

    /// No task waits for a signal its workflow keeps undelivered: checked after a round of
    /// the engine's work without faults.
    async fn no_kept_signal_waits(&self, when: &str) -> Result<(), String> {
        let e = self.engine();
        let store = e.store().inner();
        for s in store.kept_signals(None, 10_000).await.expect("read") {
            let waiting = store
                .waiting_for_signal(
                    TaskFilter {
                        workflow: Some(s.workflow),
                        limit: 1,
                        ..TaskFilter::default()
                    },
                    Some(s.name.clone()),
                )
                .await
                .expect("read");
            if let Some(t) = waiting.first() {
                let label = self.label(t.id).await;
                return Err(format!(
                    "{label} waits for {} {when}, while its workflow keeps signal #{}",
                    s.name, s.id
                ));
            }
        }
        Ok(())
    }

    /// The run's schedule: its one-task workflow every 30 s, under a drawn overlap and
    /// catch-up policy.
    async fn create_schedule(&mut self) -> Result<(), String> {
        let overlap = [Overlap::Skip, Overlap::Allow, Overlap::CancelPrevious][self.rng.index(3)];
        let catch_up =
            [CatchUp::None, CatchUp::Latest, CatchUp::All { max: 1_000 }][self.rng.index(3)];
        let spec = ScheduleSpec {
            name: SCHEDULE.into(),
            cron: SCHEDULE_CRON.into(),
            timezone: "UTC".into(),
            workflow: WorkflowTemplate {
                budgets: Default::default(),
                name: "tick".into(),
                tasks: vec![TaskSpec {
                    capabilities: [Capability::from(CAPS[0])].into(),
                    timeouts: Timeouts {
                        start_ms: Some(5_000),
                        ..Timeouts::default()
                    },
                    ..TaskSpec::new("run")
                }],
                outputs: None,
                labels: Default::default(),
            },
            overlap,
            catch_up,
        };
        self.faults.set_enabled(false);
        let r = self.engine().create_schedule(spec.clone()).await;
        self.faults.set_enabled(true);
        self.log(format!(
            "ops creates schedule {SCHEDULE} ({overlap:?}, {catch_up:?}) -> {}",
            r.as_ref().map_or_else(code, |_| "ok".into())
        ));
        r.map_err(|e| format!("creating the schedule failed: {e}"))?;
        self.schedule = Some(spec);
        Ok(())
    }

    fn random_spec(&mut self, key: &str, depends_on: Vec<TaskKey>) -> TaskSpec {
        let now = self.now();
        let rng = &mut self.rng;
        let mut capabilities = BTreeSet::new();
        capabilities.insert(Capability::from(CAPS[rng.index(CAPS.len())]));
        if rng.chance(250) {
            capabilities.insert(Capability::from(CAPS[rng.index(CAPS.len())]));
        }
        let initial = rng.range(100, 2_000);
        let mut spec = TaskSpec {
            depends_on,
            capabilities,
            input: json!({ "key": key }),
            priority: rng.range(0, 2) as i32 - 1,
            retry: RetryPolicy {
                max_attempts: rng.range(1, 4) as u32,
                initial_backoff_ms: initial,
                backoff_multiplier: 2.0,
                max_backoff_ms: 10_000,
                // Jitter is drawn from the task's seed, which the engine takes from entropy.
                jitter: 0.0,
                non_retryable: if rng.chance(500) {
                    vec!["fatal".into()]
                } else {
                    Vec::new()
                },
            },
            timeouts: Timeouts {
                schedule_to_start_ms: rng.chance(200).then(|| rng.range(10_000, 60_000)),
                // Always armed: a claim whose answer was lost leaves the task assigned to an
                // agent that does not know it; the start deadline takes it back.
                start_ms: Some(rng.range(1_000, 8_000)),
                start_to_close_ms: rng.chance(600).then(|| rng.range(5_000, 60_000)),
                heartbeat_ms: rng.chance(700).then(|| rng.range(2_000, 10_000)),
            },
            on_agent_lost: if rng.chance(300) {
                AgentLostPolicy::Requeue
            } else {
                AgentLostPolicy::Fail
            },
            compensation: rng.chance(250).then(|| CompensationSpec {
                retry: None,
                timeouts: None,
                priority: None,
                key: TaskKey(format!("{key}.undo")),
                capabilities: [Capability::from(UNDO)].into(),
                input: json!({ "undo": key }),
            }),
            ..TaskSpec::new(key)
        };
        // Some tasks no agent runs: they wait for a signal or sleep; some wait for a timer
        // before an agent may take them.
        let no_agent = |spec: &mut TaskSpec| {
            spec.capabilities.clear();
            spec.timeouts = Timeouts::default();
            spec.on_agent_lost = AgentLostPolicy::default();
        };
        match rng.weighted(&[780, 90, 50, 80]) {
            1 => {
                spec.wait_for = Some(WaitFor {
                    signal: SIGNALS[rng.index(SIGNALS.len())].into(),
                    timeout_ms: rng.chance(400).then(|| rng.range(5_000, 40_000)),
                });
                no_agent(&mut spec);
            }
            2 => {
                spec.sleep_ms = Some(rng.range(100, 8_000));
                no_agent(&mut spec);
            }
            3 if rng.chance(500) => spec.delay_ms = Some(rng.range(100, 8_000)),
            3 => spec.not_before = Some(now.plus_ms(rng.range(0, 20_000))),
            _ => {}
        }
        // Some tasks an agent runs hold a concurrency key shared with others: its count must
        // stay exact through every fault, restart and control (`check_store` counts them).
        if !spec.capabilities.is_empty() && rng.chance(300) {
            spec.concurrency = vec![baton_core::ConcurrencyKey {
                key: format!("sim-{}", rng.range(0, 3)),
                max: rng.range(1, 4) as u32,
            }];
        }
        spec
    }

    async fn submit(&mut self) -> Result<(), String> {
        let room = SUBMITTED_MAX.saturating_sub(self.total_tasks().await);
        if room < 2 {
            return Ok(());
        }
        let name = format!("wf-{}", self.workflows);
        self.workflows += 1;
        let count = self.rng.range(2, 8).min(room);
        let mut tasks: Vec<TaskSpec> = Vec::new();
        for n in 0..count {
            let mut deps = Vec::new();
            for j in 0..n {
                if deps.len() < 3 && self.rng.chance(250) {
                    deps.push(TaskKey(format!("t{j}")));
                }
            }
            let spec = self.random_spec(&format!("t{n}"), deps);
            tasks.push(spec);
        }
        let req = WorkflowRequest {
            budgets: Default::default(),
            name: name.clone(),
            idempotency_key: Some(name.clone()),
            tasks,
            outputs: None,
            labels: Default::default(),
        };
        for attempt in 0..3 {
            let r = self.engine().submit_workflow(req.clone()).await;
            self.log(format!(
                "ops submits {name} ({count} tasks, attempt {attempt}) -> {}",
                r.as_ref()
                    .map_or_else(code, |r| format!("created {}", r.created))
            ));
            match r {
                Ok(receipt) => {
                    ensure!(
                        receipt.tasks.len() as u64 == count,
                        "{name}: {} tasks in the receipt",
                        receipt.tasks.len()
                    );
                    ensure!(
                        receipt.created || attempt > 0,
                        "{name} was new, but the receipt says it existed"
                    );
                    for (key, id) in receipt.tasks {
                        self.submitted.insert(format!("{name}/{key}"), id);
                    }
                    return Ok(());
                }
                Err(EngineError::Store(_)) => continue,
                Err(e) => return Err(format!("submitting {name} failed unexpectedly: {e}")),
            }
        }
        Ok(())
    }

    // ---- the end ------------------------------------------------------------------------

    /// Healthy agents finish the work: no faults, no restarts; the other agents go quiet and
    /// their leases come back through the watchdog.
    async fn drain(&mut self) -> Result<(), String> {
        self.step = 0;
        self.faults.set_enabled(false);
        self.log("drain: faults off, workers quiet");
        for a in &mut self.agents {
            if a.role == Role::Worker {
                a.status = Status::Crashed;
            }
        }
        if self.schedule.is_some() {
            let r = self.engine().pause_schedule(SCHEDULE, true).await;
            self.log(format!(
                "ops pauses schedule {SCHEDULE} -> {}",
                r.as_ref().map_or_else(code, |_| "ok".into())
            ));
            r.map_err(|e| format!("pausing the schedule failed: {e}"))?;
            self.ticks_when_paused = Some(self.schedule_ticks().await?);
        }
        // The operator lets everything paused go on.
        let e = self.engine();
        let flows = e.store().inner().workflows(None, 100).await.expect("read");
        for w in flows.iter().filter(|w| w.paused.is_some()) {
            let op = Operator::new("ops", "drain").expect("a reason");
            let r = e.resume_workflow(w.id, op).await;
            self.log(format!("ops resumes workflow {} -> {r:?}", w.name));
            r.map_err(|e| format!("resuming {} failed: {e}", w.name))?;
        }
        for t in self.all_tasks().await.iter().filter(|t| t.is_paused()) {
            let op = Operator::new("ops", "drain").expect("a reason");
            let label = self.label(t.id).await;
            let r = e.resume_task(t.id, op).await;
            self.log(format!(
                "ops resumes {label} -> {}",
                r.as_ref().map_or_else(code, |t| t.kind().to_string())
            ));
            r.map_err(|e| format!("resuming {label} failed: {e}"))?;
        }
        let drainer = self.service_agent("drainer");
        let undoer = self
            .agents
            .iter()
            .position(|a| a.name == "undoer")
            .expect("undoer");
        for round in 1..=DRAIN_ROUNDS_MAX {
            self.step = round;
            self.counters.drain_rounds += 1;
            self.tick().await?;
            self.no_kept_signal_waits("after a tick").await?;
            self.approve_waiting().await?;
            self.serve(undoer).await?;
            self.serve(drainer).await?;
            self.tick().await?;
            self.no_kept_signal_waits("after a tick").await?;
            let open: Vec<Task> = self
                .all_tasks()
                .await
                .into_iter()
                .filter(|t| !t.state.is_terminal())
                .collect();
            if open.is_empty() {
                return Ok(());
            }
            let now = self.now();
            let next = self
                .engine()
                .store()
                .inner()
                .next_timer()
                .await
                .expect("read");
            let ms = match next {
                Some(at) if at > now => at.ms_since(now).min(AGENT_TTL_MS + 1),
                _ => AGENT_TTL_MS + 1,
            }
            .max(1);
            self.clock.advance(ms);
            self.log(format!("drain: {} open, +{ms} ms", open.len()));
        }
        let mut stuck = Vec::new();
        for t in self.all_tasks().await {
            if !t.state.is_terminal() {
                let why = self.engine().wait_reason(&t).await.ok().flatten();
                let history = self
                    .engine()
                    .history(t.id, 0, 1_000)
                    .await
                    .unwrap_or_default();
                let events: Vec<String> = history
                    .iter()
                    .map(|h| format!("{}@{}", h.event.kind().as_str(), h.at.0))
                    .collect();
                stuck.push(format!(
                    "  {} {} v{}: {why:?}\n    history: {}",
                    self.label(t.id).await,
                    t.kind(),
                    t.version,
                    events.join(", ")
                ));
            }
        }
        Err(format!(
            "{} tasks still open after {DRAIN_ROUNDS_MAX} drain rounds:\n{}",
            stuck.len(),
            stuck.join("\n")
        ))
    }

    /// The drain's operator approves every task waiting for a signal.
    async fn approve_waiting(&mut self) -> Result<(), String> {
        let waiting = self
            .engine()
            .store()
            .inner()
            .waiting_for_signal(
                TaskFilter {
                    limit: PAGE_ROWS_MAX,
                    ..TaskFilter::default()
                },
                None,
            )
            .await
            .expect("read");
        let mut sent = BTreeSet::new();
        for t in waiting {
            let name = t.spec.wait_for.as_ref().expect("it waits").signal.clone();
            if !sent.insert((t.workflow, name.clone())) {
                continue;
            }
            let label = self.label(t.id).await;
            let data = json!({ "approved": "drain" });
            let r = self
                .engine()
                .signal(
                    t.workflow,
                    &name,
                    SignalInput::Data(data.clone()),
                    "drain",
                    None,
                )
                .await
                .map_err(|e| format!("approving {label} failed: {e}"))?;
            self.log(format!(
                "drain approves {label} ({name}) -> #{} delivered to {}",
                r.signal.id,
                r.delivered_to.len()
            ));
            self.acked_signals.insert(
                r.signal.id,
                SentSignal {
                    workflow: t.workflow,
                    name,
                    input: SignalInput::Data(data),
                    id: Some(r.signal.id),
                },
            );
        }
        Ok(())
    }

    /// Every acknowledged signal is stored as sent, and an idempotency key stored one signal;
    /// returns every stored signal by id.
    async fn check_signals(&self) -> Result<BTreeMap<u64, baton_store::SignalRecord>, String> {
        let e = self.engine();
        let store = e.store().inner();
        let mut all = BTreeMap::new();
        for w in store.workflows(None, 10_000).await.expect("read") {
            for s in store.signals(w.id, 0, 100_000).await.expect("read") {
                all.insert(s.id, s);
            }
        }
        for (id, sent) in &self.acked_signals {
            let stored = all
                .get(id)
                .ok_or_else(|| format!("signal #{id} was acknowledged but is not stored"))?;
            let (data, reject) = match &sent.input {
                SignalInput::Data(d) => (d.clone(), None),
                SignalInput::Reject(r) => (serde_json::Value::Null, Some(r.clone())),
            };
            ensure!(
                stored.workflow == sent.workflow
                    && stored.name == sent.name
                    && stored.data == data
                    && stored.reject == reject,
                "signal #{id} was sent as {sent:?}, stored as {stored:?}"
            );
        }
        let mut keys = BTreeSet::new();
        for s in all.values() {
            if let Some(k) = &s.idempotency_key {
                ensure!(
                    keys.insert((s.workflow, s.name.clone(), k.clone())),
                    "idempotency key {k} stored two signals"
                );
            }
        }
        Ok(all)
    }

    /// Whether a rerun reopened or superseded the task after it was at `version`.
    async fn reopened_since(&self, id: TaskId, version: u64) -> bool {
        let history = self
            .engine()
            .store()
            .inner()
            .history(id, version, 100_000)
            .await
            .expect("history");
        history
            .iter()
            .any(|h| matches!(h.event.kind(), EventKind::Reopened | EventKind::Superseded))
    }

    /// A task's waits in its history: a signal task completed by one signal, with that
    /// signal's data; a rejection is final; timers fire no earlier than their time.
    async fn check_waits(
        &mut self,
        label: &str,
        t: &Task,
        history: &[baton_core::HistoryEntry],
        signals: &BTreeMap<u64, baton_store::SignalRecord>,
    ) -> Result<(), String> {
        let mut taken = 0;
        let run = since_reopened(history);
        let skipped = run
            .last()
            .is_some_and(|h| h.event.kind() == EventKind::SkipRequested);
        let current = history.len() - run.len();
        for (i, h) in history.iter().enumerate() {
            if let Event::SignalReceived {
                signal,
                id,
                data,
                reject,
                ..
            } = &h.event
            {
                let s = signals
                    .get(id)
                    .ok_or_else(|| format!("{label} took signal #{id}, which is not stored"))?;
                ensure!(
                    t.spec
                        .wait_for
                        .as_ref()
                        .is_some_and(|w| &w.signal == signal)
                        && s.workflow == t.workflow
                        && &s.name == signal
                        && &s.data == data
                        && &s.reject == reject
                        && s.delivered_at.is_some(),
                    "{label} took signal #{id} as {signal} {data} {reject:?}; stored {s:?}"
                );
                if !self.delivered.contains(&(*id, t.id)) {
                    // Kept, and taken when the task began to wait (or by the sweep).
                    self.counters.kept_signals_taken += 1;
                }
                if reject.is_none() && i >= current {
                    taken += 1;
                    ensure!(
                        matches!(&t.state, State::Completed { result, .. } if result == data),
                        "{label} took signal #{id} with {data} and is {:?}",
                        t.state
                    );
                }
            }
        }
        if t.spec.wait_for.is_some() {
            let completed = usize::from(t.kind() == StateKind::Completed && !skipped);
            ensure!(
                taken == completed,
                "{label} is {} having taken {taken} signals",
                t.kind()
            );
        }
        if let State::Failed { error, retry_at } = &t.state {
            ensure!(
                error.kind != "rejected" || retry_at.is_none(),
                "{label} was rejected, yet a retry is due"
            );
        }
        for (i, h) in history.iter().enumerate() {
            if h.event.kind() != EventKind::TimerFired {
                continue;
            }
            // The timer started with the entry before it, not counting pauses: a paused
            // task's timers stand still, so the time paused is added.
            let mut paused_ms = 0;
            let mut resumed_at = None;
            let mut start = h.at;
            for p in history[..i].iter().rev() {
                match p.event.kind() {
                    EventKind::ResumeRequested => resumed_at = Some(p.at),
                    EventKind::PauseRequested => {
                        paused_ms += resumed_at.take().map_or(0, |r| r.ms_since(p.at));
                    }
                    _ => {
                        start = p.at;
                        break;
                    }
                }
            }
            let due = t
                .spec
                .delay_ms
                .or(t.spec.sleep_ms)
                .map_or(Timestamp(0), |ms| start.plus_ms(ms + paused_ms))
                .max(t.spec.not_before.unwrap_or(Timestamp(0)));
            ensure!(
                h.at >= due,
                "{label}'s timer fired at {} ms, before its time {} ms",
                h.at.ms_since(T0),
                due.ms_since(T0)
            );
        }
        if t.spec.sleep_ms.is_some() && t.kind() == StateKind::Completed && !skipped {
            ensure!(
                matches!(&t.state, State::Completed { result, .. } if *result == json!({ "slept_ms": t.spec.sleep_ms })),
                "{label} slept and completed with {:?}",
                t.state
            );
        }
        Ok(())
    }

    /// Every tick of the schedule submitted one workflow, at or after its time and before it
    /// was paused; with every tick kept and overlaps allowed, none is missing.
    async fn check_schedule(&mut self) -> Result<(), String> {
        let Some(spec) = self.schedule.clone() else {
            return Ok(());
        };
        let ticks = self.schedule_ticks().await?;
        self.counters.schedule_ticks = ticks.len() as u64;
        if let Some(paused) = &self.ticks_when_paused {
            ensure!(
                ticks == *paused,
                "the schedule fired {ticks:?} by the end, {paused:?} when it was paused"
            );
        }
        if let ([first, ..], [.., last]) = (ticks.as_slice(), ticks.as_slice()) {
            if spec.overlap == Overlap::Allow && matches!(spec.catch_up, CatchUp::All { .. }) {
                let expected: Vec<u64> = (*first..=*last)
                    .step_by(SCHEDULE_EVERY_MS as usize)
                    .collect();
                ensure!(
                    ticks == expected,
                    "the schedule's ticks {ticks:?} miss some of {expected:?}"
                );
                ensure!(
                    *first == (T0.0 / SCHEDULE_EVERY_MS + 1) * SCHEDULE_EVERY_MS,
                    "the schedule's first tick is {first}"
                );
            }
        }
        Ok(())
    }

    /// The ticks the schedule fired, in order: each a tick of its cron, submitted at or after
    /// its time.
    async fn schedule_ticks(&self) -> Result<Vec<u64>, String> {
        let e = self.engine();
        let store = e.store().inner();
        let prefix = format!("schedule:{SCHEDULE}:");
        let mut ticks = Vec::new();
        for w in store.workflows(None, 10_000).await.expect("read") {
            let Some(tick) = w
                .idempotency_key
                .as_deref()
                .and_then(|k| k.strip_prefix(&prefix))
            else {
                continue;
            };
            let tick: u64 = tick.parse().map_err(|_| format!("tick key {tick:?}"))?;
            ensure!(
                tick.is_multiple_of(SCHEDULE_EVERY_MS) && tick > T0.0 && tick <= w.created_at.0,
                "{}: tick {tick} submitted at {}",
                w.name,
                w.created_at.0
            );
            ticks.push(tick);
        }
        ticks.sort_unstable();
        Ok(ticks)
    }

    async fn check_final(&mut self) -> Result<(), String> {
        let e = self.engine();
        let store = e.store().inner();
        let report = check_store(store, |_| {})
            .await
            .map_err(|e| format!("check_store: {e}"))?;
        self.violations(&report, "at the end").await?;
        let tasks = self.all_tasks().await;
        let signals = self.check_signals().await?;
        self.check_schedule().await?;
        let mut tally = StateCounts::default();
        let mut per_flow: BTreeMap<WorkflowId, StateCounts> = BTreeMap::new();
        let mut finals = Vec::new();
        for t in &tasks {
            let label = self.label(t.id).await;
            ensure!(
                t.state.is_terminal(),
                "{label} is {} at the end of the run",
                t.kind()
            );
            tally.0[t.kind().index()] += 1;
            tally.1 += u64::from(t.is_paused());
            let retrying = u64::from(matches!(
                t.state,
                State::Failed {
                    retry_at: Some(_),
                    ..
                }
            ));
            tally.2 += retrying;
            let c = per_flow.entry(t.workflow).or_default();
            c.0[t.kind().index()] += 1;
            c.1 += u64::from(t.is_paused());
            c.2 += retrying;
            let history = store.history(t.id, 0, 100_000).await.expect("history");
            let run = since_reopened(&history);
            let successes = run
                .iter()
                .filter(|h| h.event.kind() == EventKind::ExecutionSucceeded)
                .count();
            let skipped = run
                .last()
                .is_some_and(|h| h.event.kind() == EventKind::SkipRequested);
            let by_agent = t.spec.wait_for.is_none() && t.spec.sleep_ms.is_none() && !skipped;
            let expected = usize::from(by_agent && t.kind() == StateKind::Completed);
            ensure!(
                successes == expected,
                "{label} is {} with {successes} successes in its history",
                t.kind()
            );
            self.check_waits(&label, t, &history, &signals).await?;
            self.counters.signal_tasks += u64::from(t.spec.wait_for.is_some());
            self.counters.sleeps += u64::from(t.spec.sleep_ms.is_some());
            self.counters.delayed +=
                u64::from(t.spec.delay_ms.is_some() || t.spec.not_before.is_some());
            match t.kind() {
                StateKind::Completed => self.counters.completed += 1,
                StateKind::Failed => self.counters.failed += 1,
                _ => self.counters.cancelled += 1,
            }
            if t.spec.key.0.ends_with(".undo") {
                self.counters.compensations += 1;
            }
            finals.push(format!(
                "final {label} {} v{} attempt {} token {}",
                t.kind(),
                t.version,
                t.attempt,
                t.fencing_token
            ));
        }
        self.counters.tasks = tasks.len() as u64;
        let counts = store.counts(None).await.expect("counts");
        ensure!(
            counts == tally,
            "counts per state (and paused) {:?} differ from the tasks {:?}",
            counts,
            tally
        );
        for (flow, c) in &per_flow {
            let stored = store.counts(Some(*flow)).await.expect("counts");
            let name = self.workflow_name(*flow).await;
            ensure!(
                stored == *c,
                "{name}: counts per state {:?} differ from its tasks {:?}",
                stored.0,
                c.0
            );
        }
        for (label, (id, token, version)) in &self.completions {
            let t = self.task(*id).await;
            if self.reopened_since(*id, *version).await {
                continue;
            }
            ensure!(
                matches!(&t.state, State::Completed { token: done, .. } if done == token)
                    && t.version == *version,
                "{label} was completed under token {token} at v{version}, now {:?} v{}",
                t.state,
                t.version
            );
        }
        for (label, id) in &self.submitted {
            let t = store.task(*id).await.expect("read");
            ensure!(
                t.is_some_and(|t| t.spec.key.0 == label.rsplit('/').next().unwrap_or("")),
                "{label} was acknowledged as submitted but is not in the store"
            );
        }
        for (label, id) in &self.cancelled {
            let t = self.task(*id).await;
            if self.reopened_since(*id, 0).await {
                continue;
            }
            ensure!(
                matches!(
                    t.state,
                    State::Cancelled {
                        reason: baton_core::CancelReason::Operator { .. }
                    }
                ),
                "{label} was cancelled by an operator, now {:?}",
                t.state
            );
        }
        ensure!(
            self.counters.signals_sent == 0 || self.acked_signals.len() as u64 > 0,
            "signals were acknowledged but none recorded"
        );
        finals.sort();
        for line in finals {
            self.trace.push(line);
        }
        Ok(())
    }
}

/// The entries of the task's current run: those after its last `reopened` or `superseded` (a
/// rerun), or all.
fn since_reopened(history: &[baton_core::HistoryEntry]) -> &[baton_core::HistoryEntry] {
    history
        .iter()
        .rposition(|h| matches!(h.event.kind(), EventKind::Reopened | EventKind::Superseded))
        .map_or(history, |i| &history[i + 1..])
}
