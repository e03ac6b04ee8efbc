//! Baton's durable state: tasks, their append-only histories, dependency edges with open
//! counts, workflows with idempotency keys, agents, and the effect outbox.
//!
//! Two backends implement [`Store`]: SQLite ([`sqlite::SqliteStore`], the embedded default: one
//! file, WAL, `synchronous=FULL`) and PostgreSQL ([`postgres::PgStore`], for several engine
//! nodes on one database). [`AnyStore`] picks one from a URL.
//!
//! Rules every backend keeps:
//! - A transition writes the task row and appends its history entry in one transaction, guarded
//!   by the task's version (compare-and-set): of two writers of the same version, one gets
//!   [`StoreError::Conflict`].
//! - Concurrent writes are gathered into one transaction and one disk flush (group commit); a
//!   caller is answered only once its write is durable.
//! - Completing a task decrements its dependents' open-dependency counts in the same
//!   transaction, so no completion is ever lost between commit and release.
//! - Hot paths (claims, timers, released tasks, counts per state) read indexes, never scan.
//!
//! The backends share their write path (`batch`: commands, batches, answers) and their
//! decisions (`decide`: the compare-and-set, the counter changes, which tasks a claim takes and
//! how they are assigned); each keeps its own SQL and I/O.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use baton_core::{
    AgentId, ArtifactRef, Budgets, Capability, Effect, Event, EventKind, HistoryEntry, Labels,
    LeaseId, Paused, Rejection, StateKind, Submission, Task, TaskId, TaskKey, Timestamp,
    Transition, Usage, WorkflowId,
};
use serde::{Deserialize, Serialize};

mod any;
pub mod artifact;
mod audit;
mod batch;
mod codec;
mod decide;
pub mod flow;
mod ids;
pub mod postgres;
mod redact;
pub mod retention;
pub mod schedule;
pub mod signal;
pub mod sqlite;
pub mod workload;

/// Longest notice payload [`Store::notify`] takes, in bytes (PostgreSQL's `NOTIFY` accepts
/// 8,000).
pub const NOTICE_BYTES_MAX: usize = 7_900;

pub use any::AnyStore;
pub use artifact::{
    ArtifactChunks, ArtifactMeta, ArtifactWriter, PutArtifact, StagedArtifact, ARTIFACT_CHUNK_BYTES,
};
pub use decide::FAIR_QUANTUM;
pub use flow::{FlowHold, LimitRecord, LimitWrite};
pub use ids::{IdMatches, IdSuffix, TaskIdMatch};
pub use redact::redact_url;
pub use retention::{
    ArtifactRefs, GcBatch, GcCandidate, GcCursor, GcDeleted, GcPage, GcPreview, GcPrune, GcPruned,
    GcScan,
};
pub use schedule::{ScheduleRecord, ScheduleWrite, TriggerRecord, TriggerWrite};
pub use signal::{NewSignal, PutSignal, SignalRecord};

/// Most writes gathered into one transaction.
pub const BATCH_WRITES_MAX: usize = 1_024;
/// Most writes waiting for the writer before callers wait for room.
pub const QUEUE_WRITES_MAX: usize = 8_192;
/// Most rows one read returns.
pub const PAGE_ROWS_MAX: usize = 1_000;

/// A new workflow, or the existing one tasks are added to.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkflowRef {
    New(NewWorkflow),
    /// An existing workflow, read as paused or not when the batch was decided (tasks created
    /// in a paused workflow are paused in the same batch): the batch fails with
    /// [`StoreError::WorkflowPauseChanged`] if that changed before it commits.
    Existing {
        id: WorkflowId,
        paused: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewWorkflow {
    pub id: WorkflowId,
    pub name: String,
    /// Resubmitting with the same key returns the first submission and writes nothing.
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request, so that reusing a key for another request is refused.
    pub request_hash: String,
    pub created_at: Timestamp,
    /// The workflow's declared outputs (templates over its tasks' results), as JSON.
    pub outputs: Option<String>,
    /// Its labels (checked by the caller), written with it in the same transaction.
    pub labels: Labels,
    /// Its budgets on what its agents spend (checked by the caller).
    pub budgets: Budgets,
}

/// One operator action, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Assigned by the store, increasing; 0 in a write.
    pub id: i64,
    pub at: Timestamp,
    /// The token's name that acted.
    pub actor: String,
    /// `pause`, `resume`, `skip`, `fail`, `rerun`, `cancel`, `retry`, `signal`.
    pub action: String,
    pub workflow: Option<WorkflowId>,
    pub task: Option<TaskId>,
    pub reason: String,
    /// What else the action carried and what it changed, as a JSON object.
    pub detail: String,
}

/// Which audit entries to read, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub workflow: Option<WorkflowId>,
    pub action: Option<String>,
    /// Entries at or after this time.
    pub since: Option<Timestamp>,
    /// Entries before this time.
    pub until: Option<Timestamp>,
    /// Entries with ids below this one (the last id of the previous page).
    pub before: Option<i64>,
    /// At most this many (at most [`PAGE_ROWS_MAX`]).
    pub limit: usize,
}

/// An operator's control, written in one transaction: every transition applies or none does,
/// with the workflow's pause mark and the audit entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlWrite {
    pub records: Vec<TransitionRecord>,
    /// A workflow paused (`Some`) or resumed (`None`).
    pub workflow_pause: Option<(WorkflowId, Option<Paused>)>,
    /// A workflow's budgets replaced.
    pub budgets: Option<(WorkflowId, Budgets)>,
    pub audit: Option<AuditEntry>,
}

/// A stored workflow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    pub id: WorkflowId,
    pub name: String,
    pub idempotency_key: Option<String>,
    pub created_at: Timestamp,
    /// The workflow's declared outputs (templates over its tasks' results), as JSON.
    pub outputs: Option<String>,
    pub labels: Labels,
    /// Set while an operator has paused the workflow: the tasks created in it start paused.
    pub paused: Option<Paused>,
    /// Its budgets on what its agents spend.
    pub budgets: Budgets,
}

/// A task created by `submitted`: the task and its first history entry.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    pub task: Task,
    pub entry: HistoryEntry,
    pub outbox: Vec<Effect>,
}

impl NewTask {
    /// The task `sub` creates at `at`, through the core's `submit`, with the transition.
    pub fn submitted(sub: Submission, at: Timestamp) -> Result<(NewTask, Transition), Rejection> {
        let t = baton_core::submit(&sub, at)?;
        let new = NewTask {
            task: t.task.clone(),
            entry: HistoryEntry {
                seq: 1,
                at,
                event: Event::Submitted(sub),
            },
            outbox: durable(&t.effects),
        };
        Ok((new, t))
    }
}

/// One history entry of a workflow's task without its event's data: what a timeline draws.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryMark {
    pub task: TaskId,
    pub seq: u64,
    pub at: Timestamp,
    pub event: EventKind,
}

/// Most tasks whose history one [`Store::workflow_history`] read returns: a page's rows are
/// bounded by this times a task's transitions (heartbeats left out), which its attempts bound.
pub const HISTORY_TASKS_PER_PAGE_MAX: usize = 500;

/// `dependent` waits for `dependency`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub dependency: TaskId,
    pub dependent: TaskId,
}

/// Everything a submission writes, in one transaction: the workflow (or the one it grows),
/// its new tasks, their edges, and transitions of existing tasks (decomposition's
/// `dependency_added`).
#[derive(Clone, Debug, PartialEq)]
pub struct SubmitBatch {
    pub workflow: WorkflowRef,
    pub tasks: Vec<NewTask>,
    pub edges: Vec<Edge>,
    pub transitions: Vec<TransitionRecord>,
}

/// What a submission did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    Created {
        workflow: WorkflowId,
    },
    /// The idempotency key was seen before: nothing was written; these are the first
    /// submission's workflow and tasks.
    Existing {
        workflow: WorkflowId,
        tasks: Vec<(TaskKey, TaskId)>,
    },
}

/// An accepted transition to persist: the task after it and its history entry, whose `seq`
/// is the new version. The write succeeds only if the stored version is `seq - 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct TransitionRecord {
    pub task: Task,
    /// The state it left: the stored task's at version `seq - 1`, which the write requires.
    pub from: StateKind,
    pub entry: HistoryEntry,
    /// Effects the engine must still carry out if it crashes after the commit.
    pub outbox: Vec<Effect>,
    /// What the event's usage report added: summed into the workflow's usage in the same
    /// transaction.
    pub usage_added: Usage,
}

impl TransitionRecord {
    /// The record of `t`, the transition `event` caused at `at`.
    ///
    /// # Panics
    /// If `t` created the task (`submitted`): that is a [`NewTask`], not a transition record.
    pub fn of(t: &Transition, event: Event, at: Timestamp) -> TransitionRecord {
        TransitionRecord {
            task: t.task.clone(),
            from: t.from.expect("a transition record is of an existing task"),
            entry: HistoryEntry {
                seq: t.task.version,
                at,
                event,
            },
            outbox: durable(&t.effects),
            usage_added: t.usage_added.clone(),
        }
    }

    /// Applies `event` to `task` at `at` through the core, and records the transition.
    pub fn apply(task: &Task, event: Event, at: Timestamp) -> Result<TransitionRecord, Rejection> {
        let t = baton_core::apply(task, &event, at)?;
        Ok(TransitionRecord::of(&t, event, at))
    }
}

/// A transition the store made itself in the commit of one it was given: the release
/// (`dependencies_met`) of a blocked dependent whose last open dependency that commit
/// completed, when the core accepts it there (the dependent has no input template to resolve
/// and no `for_each` to expand; those are left to the engine, through the outbox). The engine
/// carries it out like one of its own once the commit is durable: log line, metrics, span,
/// event and wake-ups.
#[derive(Clone, Debug)]
pub struct Released {
    pub transition: Transition,
    pub event: Event,
}

/// The effects that must survive a crash: stored in the outbox with their transition.
fn durable(effects: &[Effect]) -> Vec<Effect> {
    effects.iter().filter(|e| e.is_durable()).cloned().collect()
}

/// An agent asks for up to `leases.len()` tasks it can run.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimRequest {
    pub agent: AgentId,
    pub capabilities: BTreeSet<Capability>,
    /// One fresh lease id per task wanted.
    pub leases: Vec<LeaseId>,
    /// The most leases the agent may hold at once, counting those it holds already: enforced
    /// in the claim's transaction, so concurrent claims (from several engine nodes too) cannot
    /// exceed it. `None`: no limit.
    pub max_held: Option<u32>,
    pub now: Timestamp,
    /// Also start what is claimed: `execution_started` right after `agent_assigned`, two
    /// transitions (and history entries) in the claim's commit, for an agent that runs what it
    /// claims at once. Only tasks with a heartbeat deadline; the others stay assigned.
    pub start: bool,
}

/// Filter and page for listing tasks; pages are keyed by task id (time-ordered UUIDv7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub workflow: Option<WorkflowId>,
    pub state: Option<StateKind>,
    /// Return tasks with ids greater than this one.
    pub after: Option<TaskId>,
    pub limit: usize,
}

/// Every task a filter selects, read page by page in id order, [`PAGE_ROWS_MAX`] at a time:
/// `while let Some(page) = pages.next(&store).await? { … }`.
#[derive(Clone, Debug)]
pub struct TaskPages {
    filter: TaskFilter,
    done: bool,
}

impl TaskPages {
    /// From the start of `filter`'s selection (its `after` and `limit` are set here).
    pub fn new(filter: TaskFilter) -> TaskPages {
        TaskPages {
            filter: TaskFilter {
                after: None,
                limit: PAGE_ROWS_MAX,
                ..filter
            },
            done: false,
        }
    }

    /// The next page, or `None` once every selected task has been read.
    pub async fn next<S: Store>(&mut self, store: &S) -> Result<Option<Vec<Task>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = store.tasks(self.filter.clone()).await?;
        Ok(self.turn(page))
    }

    /// As [`TaskPages::next`], through [`Store::tasks_for_view`] (inputs not decoded).
    pub async fn next_for_view<S: Store>(
        &mut self,
        store: &S,
    ) -> Result<Option<Vec<Task>>, StoreError> {
        if self.done {
            return Ok(None);
        }
        let page = store.tasks_for_view(self.filter.clone()).await?;
        Ok(self.turn(page))
    }

    fn turn(&mut self, page: Vec<Task>) -> Option<Vec<Task>> {
        self.done = page.len() < self.filter.limit;
        self.filter.after = Some(page.last()?.id);
        Some(page)
    }
}

/// Tasks per state, indexed by [`StateKind::index`], how many of them are paused, and how many
/// of the failed ones have a retry scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCounts(pub [u64; 7], pub u64, #[serde(default)] pub u64);

impl StateCounts {
    pub fn get(&self, state: StateKind) -> u64 {
        self.0[state.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Of all the tasks counted, those an operator has paused (in whatever state).
    pub fn paused(&self) -> u64 {
        self.1
    }

    /// Of the failed tasks, those with a retry scheduled: the others have failed for good.
    pub fn retrying(&self) -> u64 {
        self.2
    }
}

/// A registered agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub id: AgentId,
    pub name: String,
    pub capabilities: BTreeSet<Capability>,
    pub concurrency: u32,
    pub registered_at: Timestamp,
    pub last_seen: Timestamp,
    /// Who first registered it: the token's name (`local` for loopback clients without
    /// tokens; empty for agents registered before this was recorded). Kept when it registers
    /// again; counted by [`Store::register_agent`]'s cap.
    #[serde(default)]
    pub registered_by: String,
}

/// A dependency of a task and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub key: TaskKey,
    pub id: TaskId,
    pub state: StateKind,
    /// When it last changed: for a completed dependency, when it completed.
    pub updated_at: Timestamp,
}

/// A task as its view shows it, read without decoding its input: a big input decoded as a
/// `serde_json::Value` costs several times its size, and a view only shows it.
#[derive(Clone, Debug)]
pub struct TaskForView {
    /// The task, with its spec's `input` left `null`: the input is in `spec_json`.
    pub task: Task,
    /// The spec as stored (JSON), input included.
    pub spec_json: Box<serde_json::value::RawValue>,
    /// The history entries asked for, oldest first; the `submitted` one shares `task`'s spec
    /// (whose input is `null`).
    pub history: Vec<HistoryEntry>,
}

/// An effect a committed transition asked for and the engine has not yet acknowledged.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxItem {
    pub id: i64,
    pub task: TaskId,
    pub effect: Effect,
}

/// A hot query whose plan tests check for index use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotPath {
    Claim,
    DueTimers,
    ReleaseDependents,
    ReleasedBlocked,
    Counts,
    /// [`Store::workflow_open`].
    WorkflowOpen,
}

/// Upper bounds of the group-commit batch-size histogram (writes per commit); a last bucket
/// counts the rest.
pub const BATCH_SIZE_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];
/// Upper bounds of the commit-latency histogram, in seconds; a last bucket counts the rest.
pub const COMMIT_SECONDS_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// What the store's commits looked like since it opened: counts, and histograms of batch size
/// and commit latency (per-bucket counts, not cumulative; the last entry is beyond the last
/// bound).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub commits: u64,
    pub writes: u64,
    pub commit_micros_sum: u64,
    pub batch_size_counts: [u64; 13],
    pub commit_seconds_counts: [u64; 13],
    /// Runs of a batch made again because the database aborted the previous one as a deadlock
    /// or serialization failure (PostgreSQL; always 0 on SQLite).
    pub reruns_contended: u64,
    /// Runs of a batch made again on a new connection because the previous one lost its
    /// connection before the COMMIT was sent (PostgreSQL; always 0 on SQLite).
    pub reruns_reconnected: u64,
    /// Runs of a batch made again one savepoint per command because a statement of its
    /// first run (pipelined on PostgreSQL, without savepoints on SQLite) failed.
    pub reruns_careful: u64,
}

/// Why a batch was run again; see the `reruns_*` counts of [`CommitStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rerun {
    Contended,
    Reconnected,
    Careful,
}

/// The counters behind [`CommitStats`], shared by the backends' writers.
#[derive(Default)]
pub(crate) struct Stats {
    commits: AtomicU64,
    writes: AtomicU64,
    commit_micros: AtomicU64,
    batch: [AtomicU64; 13],
    latency: [AtomicU64; 13],
    reruns: [AtomicU64; 3],
}

impl Stats {
    /// Records one successful commit of `writes` writes that took `elapsed`.
    pub(crate) fn record(&self, writes: usize, elapsed: std::time::Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        self.commit_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        let b = BATCH_SIZE_BUCKETS
            .iter()
            .position(|&le| writes as f64 <= le)
            .unwrap_or(BATCH_SIZE_BUCKETS.len());
        self.batch[b].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let l = COMMIT_SECONDS_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(COMMIT_SECONDS_BUCKETS.len());
        self.latency[l].fetch_add(1, Ordering::Relaxed);
    }

    /// Records that a batch is run again, and why.
    pub(crate) fn rerun(&self, why: Rerun) {
        self.reruns[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            commit_micros_sum: self.commit_micros.load(Ordering::Relaxed),
            batch_size_counts: std::array::from_fn(|i| self.batch[i].load(Ordering::Relaxed)),
            commit_seconds_counts: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
            reruns_contended: self.reruns[Rerun::Contended as usize].load(Ordering::Relaxed),
            reruns_reconnected: self.reruns[Rerun::Reconnected as usize].load(Ordering::Relaxed),
            reruns_careful: self.reruns[Rerun::Careful as usize].load(Ordering::Relaxed),
        }
    }
}

/// Why a store operation failed. Nothing is written when one fails, except that after
/// [`StoreError::OutcomeUnknown`] the write may have been.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("version conflict on task {task}: expected version {expected}, found {found:?}")]
    Conflict {
        task: TaskId,
        expected: u64,
        found: Option<u64>,
    },
    /// The workflow was paused or resumed after the batch read it: decide it again.
    #[error("workflow {0} was paused or resumed meanwhile")]
    WorkflowPauseChanged(WorkflowId),
    /// A task the batch releases depends on one that is no longer completed (a rerun reopened
    /// it after the batch read it): decide it again.
    #[error("task {0} was released on a dependency that is no longer completed")]
    DependencyReopened(TaskId),
    #[error("task {0} not found")]
    TaskNotFound(TaskId),
    #[error("workflow {0} not found")]
    WorkflowNotFound(WorkflowId),
    #[error("a task with key `{key}` already exists in workflow {workflow}")]
    DuplicateKey { workflow: WorkflowId, key: TaskKey },
    #[error("idempotency key {key:?} was already used for a different request")]
    IdempotencyMismatch { key: String },
    #[error("a schedule named `{0}` already exists")]
    ScheduleExists(String),
    /// A new agent would take its registrar past the agents it may have stored.
    #[error("`{registered_by}` has {max} agents registered, its limit")]
    TooManyAgents { registered_by: String, max: u32 },
    #[error("{path} is not a Baton store: {detail}")]
    NotABatonStore { path: String, detail: String },
    #[error(
        "the store's schema version {found} is newer than this binary supports ({supported}); \
         use a newer baton"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// A task or result refers to an artifact the store does not hold (it was never put, or
    /// swept since it was checked).
    #[error("artifact {0} does not exist")]
    ArtifactNotFound(ArtifactRef),
    #[error("stored data for task {task} cannot be decoded: {detail}")]
    Corrupt { task: TaskId, detail: String },
    #[error("invalid store URL {url:?}: {detail}")]
    InvalidUrl { url: String, detail: String },
    #[error("the store is closed")]
    Closed,
    /// The database cannot be reached, or the connection broke before the write was sent to
    /// be committed: nothing was written, and the same write may be sent again.
    #[error("the store is unavailable, nothing was written: {detail}")]
    Unavailable { detail: String },
    /// The connection broke while the commit was under way: the write may or may not have
    /// been committed. Read it back, or send it again if it is idempotent (reports are).
    #[error("the outcome of the write is unknown: {detail}")]
    OutcomeUnknown { detail: String },
    /// The disk holding the store (or its size quota) is full: nothing was written; writes
    /// fail until room is made.
    #[error("the store is full, nothing was written: {detail}")]
    Full { detail: String },
    /// Any other failure of the database: a statement it refused, a file it cannot read.
    #[error("storage failure: {0}")]
    Backend(String),
}

impl StoreError {
    /// What it read changed before it committed: read again and decide anew.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::Conflict { .. }
                | StoreError::WorkflowPauseChanged(_)
                | StoreError::DependencyReopened(_)
        )
    }
}

/// The interface the engine uses. Every write is durable when its future resolves `Ok`.
pub trait Store: Send + Sync {
    /// Creates a workflow's tasks and edges (or adds them to a running workflow) in one
    /// transaction; an idempotency key seen before returns the first result and writes nothing.
    fn submit(
        &self,
        batch: SubmitBatch,
    ) -> impl Future<Output = Result<SubmitOutcome, StoreError>> + Send;

    /// Persists one transition (compare-and-set on the version), with the releases it made
    /// in the same commit ([`Released`]).
    fn apply(
        &self,
        record: TransitionRecord,
    ) -> impl Future<Output = Result<Vec<Released>, StoreError>> + Send;

    /// Persists several transitions in one commit; each succeeds (with its [`Released`]) or
    /// conflicts on its own.
    fn apply_all(
        &self,
        records: Vec<TransitionRecord>,
    ) -> impl Future<Output = Result<Vec<Result<Vec<Released>, StoreError>>, StoreError>> + Send;

    /// Atomically assigns up to `leases.len()` (at most [`PAGE_ROWS_MAX`]) pending tasks the
    /// agent can run (highest priority first, then the earliest turn: each fairness group in
    /// turn, in the order its tasks became ready) whose rate limits and concurrency keys have
    /// room, and returns them assigned; candidates without room are parked (see `flow`). No
    /// task is ever handed out twice for the same attempt, across processes too.
    fn claim(
        &self,
        request: ClaimRequest,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send;

    fn task(&self, id: TaskId) -> impl Future<Output = Result<Option<Task>, StoreError>> + Send;

    fn task_by_key(
        &self,
        workflow: WorkflowId,
        key: TaskKey,
    ) -> impl Future<Output = Result<Option<Task>, StoreError>> + Send;

    /// History entries with `seq > after`, oldest first, at most `limit`.
    fn history(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, StoreError>> + Send;

    /// The task, its spec as stored and its history entries with `seq > history_after` (at
    /// most `history_max`, at most [`PAGE_ROWS_MAX`]), without decoding its input (see
    /// [`TaskForView`]); `None` if there is no such task.
    fn task_for_view(
        &self,
        id: TaskId,
        history_after: u64,
        history_max: usize,
    ) -> impl Future<Output = Result<Option<TaskForView>, StoreError>> + Send;

    fn tasks(
        &self,
        filter: TaskFilter,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send;

    /// As [`Store::tasks`], each task's spec with its `input` left `null`, not decoded: for
    /// lists and graphs, which do not show inputs (a page of 1,000 tasks with 1 MiB inputs
    /// would otherwise decode gigabytes of `serde_json::Value`s).
    fn tasks_for_view(
        &self,
        filter: TaskFilter,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send;

    /// Tasks per state, over the whole store or one workflow; read from maintained counters
    /// (global) or an index (per workflow), never by scanning all tasks.
    fn counts(
        &self,
        workflow: Option<WorkflowId>,
    ) -> impl Future<Output = Result<StateCounts, StoreError>> + Send;

    /// Whether a task of the workflow has not ended (blocked, pending, assigned or
    /// executing): a few index lookups, where [`Store::counts`] of a workflow reads an index
    /// entry per task.
    fn workflow_open(
        &self,
        workflow: WorkflowId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn workflow(
        &self,
        id: WorkflowId,
    ) -> impl Future<Output = Result<Option<WorkflowRecord>, StoreError>> + Send;

    /// Workflows newest first, keyed by id for paging: those with ids below `before`.
    fn workflows(
        &self,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<WorkflowRecord>, StoreError>> + Send;

    /// As [`Store::workflows`], only those carrying every label of `labels` (none: all). Read
    /// from the label index from the first label on, so a label few workflows carry costs
    /// few rows, not a scan of every workflow.
    fn workflows_labelled(
        &self,
        labels: &Labels,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<WorkflowRecord>, StoreError>> + Send;

    /// The tasks and workflows whose ids end in `suffix`, at most `limit` of each (at most
    /// [`PAGE_ROWS_MAX`]), in id order. It scans the ids: an operator's lookup, not a hot path.
    fn ids_ending(
        &self,
        suffix: IdSuffix,
        limit: usize,
    ) -> impl Future<Output = Result<IdMatches, StoreError>> + Send;

    /// The history of the workflow's tasks with ids greater than `after`, at most `tasks_max`
    /// tasks (at most [`HISTORY_TASKS_PER_PAGE_MAX`]) in id order, each task's entries in
    /// order; events' data is not read, and heartbeats are left out (a timeline does not
    /// draw them, and a long execution has thousands).
    fn workflow_history(
        &self,
        workflow: WorkflowId,
        after: Option<TaskId>,
        tasks_max: usize,
    ) -> impl Future<Output = Result<Vec<HistoryMark>, StoreError>> + Send;

    /// Decomposition in the workflow: each `subtasks_added` entry's task (the parent) and the
    /// keys of the sub-tasks it added.
    fn subtasks_added(
        &self,
        workflow: WorkflowId,
    ) -> impl Future<Output = Result<Vec<(TaskId, Vec<TaskKey>)>, StoreError>> + Send;

    /// Every dependency edge among the workflow's tasks.
    fn workflow_edges(
        &self,
        workflow: WorkflowId,
    ) -> impl Future<Output = Result<Vec<Edge>, StoreError>> + Send;

    fn dependencies(
        &self,
        id: TaskId,
    ) -> impl Future<Output = Result<Vec<Dependency>, StoreError>> + Send;

    fn dependents(
        &self,
        id: TaskId,
    ) -> impl Future<Output = Result<Vec<TaskId>, StoreError>> + Send;

    /// Tasks whose next deadline, retry or wake-up time is at or before `now`, earliest first
    /// (by time, then id), after the task `after` names with its time when given, read whole
    /// (the watchdog decides and commits them together while it reads the next page).
    fn due_timers(
        &self,
        now: Timestamp,
        after: Option<(Timestamp, TaskId)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send;

    /// The earliest armed deadline or retry time, if any.
    fn next_timer(&self) -> impl Future<Output = Result<Option<Timestamp>, StoreError>> + Send;

    /// `Blocked` tasks whose dependencies have all completed: to be sent `dependencies_met`.
    fn released_blocked(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TaskId>, StoreError>> + Send;

    fn outbox(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<OutboxItem>, StoreError>> + Send;

    fn ack_outbox(&self, ids: Vec<i64>) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn upsert_agent(
        &self,
        agent: AgentRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn agent(
        &self,
        id: AgentId,
    ) -> impl Future<Output = Result<Option<AgentRecord>, StoreError>> + Send;

    /// Registers an agent: a new one only while its registrar (`agent.registered_by`) has
    /// fewer than `max_per_registrar` agents stored, counted in the write's transaction
    /// ([`StoreError::TooManyAgents`] otherwise); an agent stored already is updated (its
    /// name, capabilities, concurrency and `last_seen`), keeping when and by whom it was
    /// first registered.
    fn register_agent(
        &self,
        agent: AgentRecord,
        max_per_registrar: u32,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Agents by id, after `after`, at most `limit` (and [`PAGE_ROWS_MAX`]).
    fn agents(
        &self,
        after: Option<AgentId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AgentRecord>, StoreError>> + Send;

    /// Agents holding a lease that were last seen before `seen_before` (at most `limit`):
    /// read from the leased tasks, so it costs what is leased, not every agent.
    fn silent_lease_holders(
        &self,
        seen_before: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AgentRecord>, StoreError>> + Send;

    /// Tasks currently leased to `agent`.
    fn leased_to(
        &self,
        agent: AgentId,
    ) -> impl Future<Output = Result<Vec<TaskId>, StoreError>> + Send;

    /// The backend's plan for a hot query, to check that it uses an index.
    fn query_plan(&self, path: HotPath) -> impl Future<Output = Result<String, StoreError>> + Send;

    fn stats(&self) -> CommitStats;

    /// Notices from every engine process sharing this store (this one's included), or `None`
    /// when no other process can share it. An empty notice means some may have been missed.
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<String>>;

    /// Sends a notice (at most [`NOTICE_BYTES_MAX`]) to every process sharing the store;
    /// nothing when no other process can share it.
    fn notify(&self, payload: String) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether this process is the one that runs the periodic work (watchdog, effects): at
    /// most one process at a time is; another takes over when it dies. Always `true` when no
    /// other process can share the store.
    fn try_lead(&self) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// A new staging file for an upload: written and hashed by the caller, then put with
    /// [`Store::put_artifact`]; invisible until then.
    fn stage_artifact(&self) -> Result<ArtifactWriter, StoreError>;

    /// Makes a staged artifact durable and visible (answered after the commit); an artifact
    /// stored already only has its upload time refreshed.
    fn put_artifact(
        &self,
        staged: StagedArtifact,
        content_type: Option<String>,
        now: Timestamp,
    ) -> impl Future<Output = Result<PutArtifact, StoreError>> + Send;

    fn artifact(
        &self,
        artifact: ArtifactRef,
    ) -> impl Future<Output = Result<Option<ArtifactMeta>, StoreError>> + Send;

    /// An artifact and its bytes, streamed.
    fn read_artifact(
        &self,
        artifact: ArtifactRef,
    ) -> impl Future<Output = Result<Option<(ArtifactMeta, ArtifactChunks)>, StoreError>> + Send;

    /// Those of `artifacts` the store does not hold.
    fn missing_artifacts(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> impl Future<Output = Result<Vec<ArtifactRef>, StoreError>> + Send;

    /// Deletes up to `limit` artifacts no task refers to whose latest upload is before
    /// `uploaded_before`, oldest first; returns them.
    fn sweep_artifacts(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ArtifactRef>, StoreError>> + Send;

    /// Stores a signal sent to a workflow (answered after the commit); an idempotency key
    /// seen before for the workflow and name stores nothing and returns the first signal, or
    /// [`StoreError::IdempotencyMismatch`] for a different request.
    fn put_signal(
        &self,
        signal: NewSignal,
    ) -> impl Future<Output = Result<PutSignal, StoreError>> + Send;

    /// The signals sent to a workflow after signal id `after`, oldest first, at most `limit`
    /// (and [`PAGE_ROWS_MAX`]).
    fn signals(
        &self,
        workflow: WorkflowId,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<SignalRecord>, StoreError>> + Send;

    /// Signals no task has taken yet, oldest first: of one workflow and name, or all.
    fn kept_signals(
        &self,
        of: Option<(WorkflowId, String)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<SignalRecord>, StoreError>> + Send;

    /// Pending tasks waiting for a signal, by id after `filter.after`: of one workflow (and
    /// signal name), or of all. `filter.state` is ignored.
    fn waiting_for_signal(
        &self,
        filter: TaskFilter,
        name: Option<String>,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send;

    /// Creates, changes or deletes a named rate limit; `true` if it existed. Tasks parked on it
    /// are looked at again by the next claims.
    fn write_limit(
        &self,
        write: LimitWrite,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every named rate limit, by key (at most [`PAGE_ROWS_MAX`]), their buckets as of `now`.
    fn limits(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<LimitRecord>, StoreError>> + Send;

    /// The first key of the task's flow control (its keys as filled in at its last transition)
    /// without room at `now`, if any: what keeps it from being handed out while pending.
    fn flow_hold(
        &self,
        task: TaskId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<FlowHold>, StoreError>> + Send;

    /// Every concurrency key some task holds now (assigned or executing), with how many (at
    /// most [`PAGE_ROWS_MAX`] keys).
    fn concurrency_held(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, StoreError>> + Send;

    /// Creates, updates or deletes a schedule; `false` when an update or a deletion found the
    /// schedule gone or at another version (nothing written).
    fn write_schedule(
        &self,
        write: ScheduleWrite,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn schedule(
        &self,
        name: String,
    ) -> impl Future<Output = Result<Option<ScheduleRecord>, StoreError>> + Send;

    /// Schedules by name, after `after`, at most `limit` (and [`PAGE_ROWS_MAX`]).
    fn schedules(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ScheduleRecord>, StoreError>> + Send;

    /// Schedules not paused whose next tick is at or before `now`, the earliest first.
    fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ScheduleRecord>, StoreError>> + Send;

    /// Creates or replaces a trigger (`true`: created), or deletes one (`true`: it existed).
    fn write_trigger(
        &self,
        write: TriggerWrite,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn trigger(
        &self,
        name: String,
    ) -> impl Future<Output = Result<Option<TriggerRecord>, StoreError>> + Send;

    /// Triggers by name, after `after`, at most `limit` (and [`PAGE_ROWS_MAX`]).
    fn triggers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<TriggerRecord>, StoreError>> + Send;

    /// Writes an operator's control in one transaction: all its transitions (each a
    /// compare-and-set; the first that fails fails the whole write, which then wrote nothing),
    /// the workflow's pause mark, the audit entry.
    /// What the workflow's agents have spent, per unit (nothing for a workflow without
    /// reports, or none).
    fn workflow_usage(
        &self,
        workflow: WorkflowId,
    ) -> impl Future<Output = Result<Usage, StoreError>> + Send;

    /// What the agents of every workflow carrying the label `(key, value)` have spent, per
    /// unit; of every workflow with `None`.
    fn usage_labelled(
        &self,
        label: Option<(String, String)>,
    ) -> impl Future<Output = Result<Usage, StoreError>> + Send;

    /// Writes an operator's control, with the releases its transitions made ([`Released`]).
    fn control(
        &self,
        write: ControlWrite,
    ) -> impl Future<Output = Result<Vec<Released>, StoreError>> + Send;

    /// Audit entries newest first, as `filter` selects them.
    fn audit(
        &self,
        filter: AuditFilter,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send;

    // ---- retention (see `retention`) ---------------------------------------------------

    /// A page of workflows created before the cutoff, oldest first, with those of them that
    /// have finished before it. Read only.
    fn gc_candidates(
        &self,
        scan: GcScan,
    ) -> impl Future<Output = Result<GcPage, StoreError>> + Send;

    /// Workflows retention has marked and not yet deleted, the earliest marked first.
    fn gc_marked(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<WorkflowId>, StoreError>> + Send;

    /// One batch of deletion, in one short transaction (see [`GcBatch`]).
    fn gc_workflows(
        &self,
        batch: GcBatch,
    ) -> impl Future<Output = Result<GcDeleted, StoreError>> + Send;

    /// What deleting these workflows would delete. Read only.
    fn gc_preview(
        &self,
        workflows: Vec<WorkflowId>,
    ) -> impl Future<Output = Result<GcPreview, StoreError>> + Send;

    /// How many tasks refer to each of these artifacts, with their latest upload (an artifact
    /// the store does not hold is left out). Read only.
    fn artifact_refs(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> impl Future<Output = Result<Vec<ArtifactRefs>, StoreError>> + Send;

    /// Deletes up to `prune.limit` rows of each kind [`GcPrune`] names; with `dry_run`,
    /// counts every row it would delete (not bounded by the limit) and changes nothing.
    fn gc_prune(
        &self,
        prune: GcPrune,
        dry_run: bool,
    ) -> impl Future<Output = Result<GcPruned, StoreError>> + Send;

    /// The latest turn a claim took, in passes (`fair_clock`).
    fn fair_clock(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Gives free space back to the file system after deletions, up to `pages_max` pages
    /// (SQLite: `PRAGMA incremental_vacuum`; PostgreSQL's autovacuum does it by itself, and
    /// this does nothing). Returns the pages given back.
    fn reclaim_space(&self, pages_max: u64)
        -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// What the store takes on disk, in bytes (SQLite: the database and its write-ahead log;
    /// PostgreSQL: the store's tables with their indexes and TOAST).
    fn size_bytes(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
