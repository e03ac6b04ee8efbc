//! A `Store` that injects faults: it delegates to a real `SqliteStore` but, drawing from the
//! run's seeded generator, fails some writes with `StoreError::Backend` either before
//! delegating (nothing is written) or after (the write is committed, but the caller is told it
//! failed, as when a connection drops before the answer arrives), and fails a few reads. It
//! never delays anything in real time.
//!
//! It also makes the store deterministic: the engine runs some transitions concurrently (a
//! tick's due timers and released tasks), and SQLite's reader threads and writer thread would
//! answer them in an order that depends on timing. Here calls take a ticket when first polled
//! (in the engine's deterministic polling order) and run one at a time in ticket order, so each
//! sees exactly the calls before it, as a single-threaded store would.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use baton_core::{ArtifactRef, HistoryEntry, Task, TaskId, TaskKey, Timestamp, WorkflowId};
use baton_store::sqlite::SqliteStore;
use baton_store::{
    AgentRecord, ArtifactChunks, ArtifactMeta, ArtifactWriter, ClaimRequest, CommitStats,
    Dependency, Edge, HotPath, IdMatches, IdSuffix, NewSignal, OutboxItem, PutArtifact, PutSignal,
    ScheduleRecord, ScheduleWrite, SignalRecord, StagedArtifact, StateCounts, Store, StoreError,
    SubmitBatch, SubmitOutcome, TaskFilter, TaskForView, TransitionRecord, TriggerRecord,
    TriggerWrite, WorkflowRecord,
};

use super::rng::Rng;
use super::Trace;

/// How often faults strike, in permille of calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultRates {
    pub write_before: u32,
    pub write_after: u32,
    pub read: u32,
}

/// The fault plan shared by every incarnation of the store in one run.
pub struct Faults {
    rng: Mutex<Rng>,
    rates: FaultRates,
    enabled: AtomicBool,
    trace: Arc<Trace>,
    /// Every call goes to the trace (`BATON_SIM_TRACE_STORE=1`), to find where two runs part.
    verbose: bool,
    pub before: AtomicU64,
    pub after: AtomicU64,
    pub reads: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Before,
    After,
}

impl Faults {
    pub fn new(rng: Rng, rates: FaultRates, trace: Arc<Trace>) -> Faults {
        Faults {
            rng: Mutex::new(rng),
            rates,
            enabled: AtomicBool::new(true),
            trace,
            verbose: std::env::var_os("BATON_SIM_TRACE_STORE").is_some(),
            before: AtomicU64::new(0),
            after: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    fn write(&self, op: &str) -> Fault {
        if self.verbose {
            self.trace.push(format!("  . {op}"));
        }
        if !self.enabled.load(Ordering::SeqCst) {
            return Fault::None;
        }
        let mut rng = self.rng.lock().expect("fault rng");
        let x = rng.below(1_000) as u32;
        drop(rng);
        if x < self.rates.write_before {
            self.before.fetch_add(1, Ordering::Relaxed);
            self.trace.push(format!("  ! fault before {op}"));
            Fault::Before
        } else if x < self.rates.write_before + self.rates.write_after {
            self.after.fetch_add(1, Ordering::Relaxed);
            self.trace.push(format!("  ! fault after {op}"));
            Fault::After
        } else {
            Fault::None
        }
    }

    fn read(&self, op: &str) -> Result<(), StoreError> {
        if self.verbose {
            self.trace.push(format!("  . {op}"));
        }
        if !self.enabled.load(Ordering::SeqCst) || self.rates.read == 0 {
            return Ok(());
        }
        let hit = self.rng.lock().expect("fault rng").chance(self.rates.read);
        if hit {
            self.reads.fetch_add(1, Ordering::Relaxed);
            self.trace.push(format!("  ! fault on read {op}"));
            return Err(injected(op));
        }
        Ok(())
    }
}

fn injected(op: &str) -> StoreError {
    StoreError::Backend(format!("injected fault in {op}"))
}

/// Calls run one at a time, in the order of their tickets.
#[derive(Default)]
struct Turns {
    state: Mutex<TurnState>,
    moved: Notify,
}

#[derive(Default)]
struct TurnState {
    issued: u64,
    /// The ticket whose call may run.
    current: u64,
    /// Tickets given up before their turn (their future was dropped).
    abandoned: BTreeSet<u64>,
}

impl Turns {
    fn issue(&self) -> u64 {
        let mut s = self.state.lock().expect("turns");
        s.issued += 1;
        s.issued - 1
    }

    fn is_turn(&self, ticket: u64) -> bool {
        self.state.lock().expect("turns").current == ticket
    }

    fn finish(&self, ticket: u64) {
        let mut s = self.state.lock().expect("turns");
        if s.current == ticket {
            s.current += 1;
            loop {
                let next = s.current;
                if !s.abandoned.remove(&next) {
                    break;
                }
                s.current += 1;
            }
        } else {
            s.abandoned.insert(ticket);
        }
        drop(s);
        self.moved.notify_waiters();
    }
}

/// Ends a ticket however its call ends (a dropped future must not block the ones after it).
struct Ticket<'a> {
    turns: &'a Turns,
    n: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.turns.finish(self.n);
    }
}

/// The fault-injecting store.
pub struct FaultyStore {
    inner: SqliteStore,
    faults: Arc<Faults>,
    turns: Turns,
}

impl FaultyStore {
    pub fn new(inner: SqliteStore, faults: Arc<Faults>) -> FaultyStore {
        FaultyStore {
            inner,
            faults,
            turns: Turns::default(),
        }
    }

    /// The real store, for the simulation's own reads and checks (never faulty).
    pub fn inner(&self) -> &SqliteStore {
        &self.inner
    }

    /// Waits until every call issued before this one has finished; the call runs while the
    /// returned ticket lives. Every call yields once first, so that all the futures the engine
    /// polls together take their tickets in its polling order before any of them runs.
    async fn turn(&self) -> Ticket<'_> {
        let ticket = Ticket {
            turns: &self.turns,
            n: self.turns.issue(),
        };
        tokio::task::yield_now().await;
        loop {
            let moved = self.turns.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.turns.is_turn(ticket.n) {
                return ticket;
            }
            moved.await;
        }
    }

    async fn write<T>(
        &self,
        op: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let _turn = self.turn().await;
        match self.faults.write(op) {
            // The call's future is dropped unpolled: nothing reaches the database.
            Fault::Before => Err(injected(op)),
            Fault::None => call.await,
            // Committed (if it succeeded), but the caller hears a failure.
            Fault::After => call.await.and(Err(injected(op))),
        }
    }

    async fn read<T>(
        &self,
        op: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let _turn = self.turn().await;
        self.faults.read(op)?;
        call.await
    }
}

impl Store for FaultyStore {
    async fn submit(&self, batch: SubmitBatch) -> Result<SubmitOutcome, StoreError> {
        self.write("submit", self.inner.submit(batch)).await
    }

    async fn apply(
        &self,
        record: TransitionRecord,
    ) -> Result<Vec<baton_store::Released>, StoreError> {
        self.write("apply", self.inner.apply(record)).await
    }

    async fn apply_all(
        &self,
        records: Vec<TransitionRecord>,
    ) -> Result<Vec<Result<Vec<baton_store::Released>, StoreError>>, StoreError> {
        self.write("apply_all", self.inner.apply_all(records)).await
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Task>, StoreError> {
        self.write("claim", self.inner.claim(request)).await
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        let t = self.read("task", self.inner.task(id)).await;
        if self.faults.verbose {
            if let Ok(Some(t)) = &t {
                self.faults.trace.push(format!(
                    "    = {} {:?} v{} {:?} {:?}",
                    t.spec.key, t.state, t.version, t.deadlines, t.spec.retry
                ));
            }
        }
        t
    }

    async fn task_by_key(
        &self,
        workflow: WorkflowId,
        key: TaskKey,
    ) -> Result<Option<Task>, StoreError> {
        self.read("task_by_key", self.inner.task_by_key(workflow, key))
            .await
    }

    async fn history(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.read("history", self.inner.history(id, after, limit))
            .await
    }

    async fn task_for_view(
        &self,
        id: TaskId,
        history_after: u64,
        history_max: usize,
    ) -> Result<Option<TaskForView>, StoreError> {
        self.read(
            "task_for_view",
            self.inner.task_for_view(id, history_after, history_max),
        )
        .await
    }

    async fn tasks(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.read("tasks", self.inner.tasks(filter)).await
    }

    async fn tasks_for_view(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.read("tasks_for_view", self.inner.tasks_for_view(filter))
            .await
    }

    async fn counts(&self, workflow: Option<WorkflowId>) -> Result<StateCounts, StoreError> {
        self.read("counts", self.inner.counts(workflow)).await
    }

    async fn workflow_open(&self, workflow: WorkflowId) -> Result<bool, StoreError> {
        self.read("workflow_open", self.inner.workflow_open(workflow))
            .await
    }

    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowRecord>, StoreError> {
        self.read("workflow", self.inner.workflow(id)).await
    }

    async fn workflows(
        &self,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        self.read("workflows", self.inner.workflows(before, limit))
            .await
    }

    async fn workflows_labelled(
        &self,
        labels: &baton_core::Labels,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        self.read(
            "workflows_labelled",
            self.inner.workflows_labelled(labels, before, limit),
        )
        .await
    }

    async fn ids_ending(&self, suffix: IdSuffix, limit: usize) -> Result<IdMatches, StoreError> {
        self.read("ids_ending", self.inner.ids_ending(suffix, limit))
            .await
    }

    async fn workflow_history(
        &self,
        workflow: WorkflowId,
        after: Option<TaskId>,
        tasks_max: usize,
    ) -> Result<Vec<baton_store::HistoryMark>, StoreError> {
        self.read(
            "workflow_history",
            self.inner.workflow_history(workflow, after, tasks_max),
        )
        .await
    }

    async fn subtasks_added(
        &self,
        workflow: WorkflowId,
    ) -> Result<Vec<(TaskId, Vec<TaskKey>)>, StoreError> {
        self.read("subtasks_added", self.inner.subtasks_added(workflow))
            .await
    }

    async fn workflow_edges(&self, workflow: WorkflowId) -> Result<Vec<Edge>, StoreError> {
        self.read("workflow_edges", self.inner.workflow_edges(workflow))
            .await
    }

    async fn dependencies(&self, id: TaskId) -> Result<Vec<Dependency>, StoreError> {
        self.read("dependencies", self.inner.dependencies(id)).await
    }

    async fn dependents(&self, id: TaskId) -> Result<Vec<TaskId>, StoreError> {
        self.read("dependents", self.inner.dependents(id)).await
    }

    async fn due_timers(
        &self,
        now: Timestamp,
        after: Option<(Timestamp, TaskId)>,
        limit: usize,
    ) -> Result<Vec<Task>, StoreError> {
        let due = self
            .read("due_timers", self.inner.due_timers(now, after, limit))
            .await;
        if self.faults.verbose {
            if let Ok(d) = &due {
                let at: Vec<u64> = d
                    .iter()
                    .filter_map(|t| t.next_timer().map(|(_, at)| at.0 % 1_000_000))
                    .collect();
                self.faults
                    .trace
                    .push(format!("    = due at {} -> {at:?}", now.0 % 1_000_000));
            }
        }
        due
    }

    async fn next_timer(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read("next_timer", self.inner.next_timer()).await
    }

    async fn released_blocked(&self, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        self.read("released_blocked", self.inner.released_blocked(limit))
            .await
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.read("outbox", self.inner.outbox(limit)).await
    }

    async fn ack_outbox(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.write("ack_outbox", self.inner.ack_outbox(ids)).await
    }

    async fn upsert_agent(&self, agent: AgentRecord) -> Result<(), StoreError> {
        self.write("upsert_agent", self.inner.upsert_agent(agent))
            .await
    }

    async fn agent(&self, id: baton_core::AgentId) -> Result<Option<AgentRecord>, StoreError> {
        self.read("agent", self.inner.agent(id)).await
    }

    async fn register_agent(&self, agent: AgentRecord, max: u32) -> Result<(), StoreError> {
        self.write("register_agent", self.inner.register_agent(agent, max))
            .await
    }

    async fn agents(
        &self,
        after: Option<baton_core::AgentId>,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        self.read("agents", self.inner.agents(after, limit)).await
    }

    async fn silent_lease_holders(
        &self,
        seen_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        self.read(
            "silent_lease_holders",
            self.inner.silent_lease_holders(seen_before, limit),
        )
        .await
    }

    async fn leased_to(&self, agent: baton_core::AgentId) -> Result<Vec<TaskId>, StoreError> {
        self.read("leased_to", self.inner.leased_to(agent)).await
    }

    async fn query_plan(&self, path: HotPath) -> Result<String, StoreError> {
        self.inner.query_plan(path).await
    }

    fn stats(&self) -> CommitStats {
        self.inner.stats()
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        self.inner.notices()
    }

    async fn notify(&self, payload: String) -> Result<(), StoreError> {
        self.inner.notify(payload).await
    }

    async fn try_lead(&self) -> Result<bool, StoreError> {
        self.inner.try_lead().await
    }

    // The simulation uses no artifacts: these pass straight through, without faults.
    fn stage_artifact(&self) -> Result<ArtifactWriter, StoreError> {
        self.inner.stage_artifact()
    }

    async fn put_artifact(
        &self,
        staged: StagedArtifact,
        content_type: Option<String>,
        now: Timestamp,
    ) -> Result<PutArtifact, StoreError> {
        self.inner.put_artifact(staged, content_type, now).await
    }

    async fn artifact(&self, artifact: ArtifactRef) -> Result<Option<ArtifactMeta>, StoreError> {
        self.inner.artifact(artifact).await
    }

    async fn read_artifact(
        &self,
        artifact: ArtifactRef,
    ) -> Result<Option<(ArtifactMeta, ArtifactChunks)>, StoreError> {
        self.inner.read_artifact(artifact).await
    }

    async fn missing_artifacts(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        self.inner.missing_artifacts(artifacts).await
    }

    async fn sweep_artifacts(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        self.inner.sweep_artifacts(uploaded_before, limit).await
    }

    async fn put_signal(&self, signal: NewSignal) -> Result<PutSignal, StoreError> {
        self.write("put_signal", self.inner.put_signal(signal))
            .await
    }

    async fn signals(
        &self,
        workflow: WorkflowId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        self.read("signals", self.inner.signals(workflow, after, limit))
            .await
    }

    async fn kept_signals(
        &self,
        of: Option<(WorkflowId, String)>,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        self.read("kept_signals", self.inner.kept_signals(of, limit))
            .await
    }

    async fn waiting_for_signal(
        &self,
        filter: TaskFilter,
        name: Option<String>,
    ) -> Result<Vec<Task>, StoreError> {
        self.read(
            "waiting_for_signal",
            self.inner.waiting_for_signal(filter, name),
        )
        .await
    }
    async fn write_limit(&self, write: baton_store::LimitWrite) -> Result<bool, StoreError> {
        self.write("write_limit", self.inner.write_limit(write))
            .await
    }

    async fn limits(
        &self,
        now: baton_core::Timestamp,
    ) -> Result<Vec<baton_store::LimitRecord>, StoreError> {
        self.read("limits", self.inner.limits(now)).await
    }

    async fn flow_hold(
        &self,
        task: baton_core::TaskId,
        now: baton_core::Timestamp,
    ) -> Result<Option<baton_store::FlowHold>, StoreError> {
        self.read("flow_hold", self.inner.flow_hold(task, now))
            .await
    }

    async fn concurrency_held(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read("concurrency_held", self.inner.concurrency_held())
            .await
    }

    async fn write_schedule(&self, write: ScheduleWrite) -> Result<bool, StoreError> {
        self.write("write_schedule", self.inner.write_schedule(write))
            .await
    }

    async fn schedule(&self, name: String) -> Result<Option<ScheduleRecord>, StoreError> {
        self.read("schedule", self.inner.schedule(name)).await
    }

    async fn schedules(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.read("schedules", self.inner.schedules(after, limit))
            .await
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.read("due_schedules", self.inner.due_schedules(now, limit))
            .await
    }
    async fn write_trigger(&self, write: TriggerWrite) -> Result<bool, StoreError> {
        self.inner.write_trigger(write).await
    }

    async fn trigger(&self, name: String) -> Result<Option<TriggerRecord>, StoreError> {
        self.inner.trigger(name).await
    }

    async fn triggers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<TriggerRecord>, StoreError> {
        self.inner.triggers(after, limit).await
    }

    async fn control(
        &self,
        write: baton_store::ControlWrite,
    ) -> Result<Vec<baton_store::Released>, StoreError> {
        self.write("control", self.inner.control(write)).await
    }

    async fn audit(
        &self,
        filter: baton_store::AuditFilter,
    ) -> Result<Vec<baton_store::AuditEntry>, StoreError> {
        self.read("audit", self.inner.audit(filter)).await
    }

    async fn workflow_usage(
        &self,
        workflow: baton_core::WorkflowId,
    ) -> Result<baton_core::Usage, StoreError> {
        self.read("workflow_usage", self.inner.workflow_usage(workflow))
            .await
    }

    async fn usage_labelled(
        &self,
        label: Option<(String, String)>,
    ) -> Result<baton_core::Usage, StoreError> {
        self.read("usage_labelled", self.inner.usage_labelled(label))
            .await
    }

    async fn gc_candidates(
        &self,
        scan: baton_store::GcScan,
    ) -> Result<baton_store::GcPage, StoreError> {
        self.read("gc_candidates", self.inner.gc_candidates(scan))
            .await
    }

    async fn gc_marked(&self, limit: usize) -> Result<Vec<WorkflowId>, StoreError> {
        self.read("gc_marked", self.inner.gc_marked(limit)).await
    }

    async fn gc_workflows(
        &self,
        batch: baton_store::GcBatch,
    ) -> Result<baton_store::GcDeleted, StoreError> {
        self.write("gc_workflows", self.inner.gc_workflows(batch))
            .await
    }

    async fn gc_preview(
        &self,
        workflows: Vec<WorkflowId>,
    ) -> Result<baton_store::GcPreview, StoreError> {
        self.read("gc_preview", self.inner.gc_preview(workflows))
            .await
    }

    async fn artifact_refs(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<baton_store::ArtifactRefs>, StoreError> {
        self.read("artifact_refs", self.inner.artifact_refs(artifacts))
            .await
    }

    async fn gc_prune(
        &self,
        prune: baton_store::GcPrune,
        dry_run: bool,
    ) -> Result<baton_store::GcPruned, StoreError> {
        if dry_run {
            self.read("gc_prune", self.inner.gc_prune(prune, true))
                .await
        } else {
            self.write("gc_prune", self.inner.gc_prune(prune, false))
                .await
        }
    }

    async fn fair_clock(&self) -> Result<i64, StoreError> {
        self.read("fair_clock", self.inner.fair_clock()).await
    }

    async fn reclaim_space(&self, pages_max: u64) -> Result<u64, StoreError> {
        self.write("reclaim_space", self.inner.reclaim_space(pages_max))
            .await
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        self.read("size_bytes", self.inner.size_bytes()).await
    }
}
