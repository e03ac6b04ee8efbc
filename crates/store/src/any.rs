//! A store chosen at run time from a URL: a path or `sqlite://PATH` for SQLite,
//! `postgres://…` or `postgresql://…` for PostgreSQL.

use baton_core::Usage;
use futures_util::future::Either;
use std::future::Future;
use std::path::Path;

use baton_core::{
    AgentId, ArtifactRef, HistoryEntry, Labels, Task, TaskId, TaskKey, Timestamp, WorkflowId,
};

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::Released;
use crate::{
    AgentRecord, ArtifactChunks, ArtifactMeta, ArtifactRefs, ArtifactWriter, AuditEntry,
    AuditFilter, ClaimRequest, CommitStats, ControlWrite, Dependency, Edge, GcBatch, GcDeleted,
    GcPage, GcPreview, GcPrune, GcPruned, GcScan, HistoryMark, HotPath, IdMatches, IdSuffix,
    NewSignal, OutboxItem, PutArtifact, PutSignal, ScheduleRecord, ScheduleWrite, SignalRecord,
    StagedArtifact, StateCounts, Store, StoreError, SubmitBatch, SubmitOutcome, TaskFilter,
    TaskForView, TransitionRecord, TriggerRecord, TriggerWrite, WorkflowRecord,
};

/// One of the backends, chosen by [`AnyStore::open`].
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl AnyStore {
    /// Opens the store a URL names: `postgres://…` or `postgresql://…` for PostgreSQL;
    /// `sqlite://PATH` or a plain path for SQLite. A PostgreSQL store uses the server's
    /// default schema; [`PgStore::open_with`] chooses another.
    pub async fn open(url: &str) -> Result<AnyStore, StoreError> {
        AnyStore::open_with(url, crate::sqlite::SqliteOptions::default()).await
    }

    /// As [`AnyStore::open`], an SQLite store with `sqlite`'s options.
    pub async fn open_with(
        url: &str,
        sqlite: crate::sqlite::SqliteOptions,
    ) -> Result<AnyStore, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(AnyStore::Postgres(PgStore::open(url).await?));
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        if path.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: url.to_owned(),
                detail: "expected a file path after sqlite://".into(),
            });
        }
        Ok(AnyStore::Sqlite(SqliteStore::open_with(
            Path::new(path),
            sqlite,
        )?))
    }
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => $call,
            AnyStore::Postgres($store) => $call,
        }
    };
}

/// [`delegate!`] for a call answered later: SQLite's future is awaited in place, and
/// PostgreSQL's boxed, as its client's futures take kilobytes (a task's read 2 KiB against
/// SQLite's 192 bytes) that every future awaiting the store (an agent's report, a claim)
/// would otherwise carry whichever store runs. One allocation is nothing beside a round trip to
/// the database.
macro_rules! delegate_await {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => $call.await,
            AnyStore::Postgres($store) => Box::pin($call).await,
        }
    };
}

/// [`delegate!`] for a write: the backend's future itself, not one around it. A write's
/// arguments are moved into its command before its future is made (`batch::Queue`), so the
/// future stays small; an `async fn` here would hold the arguments again in its own.
macro_rules! delegate_write {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => Either::Left($call),
            AnyStore::Postgres($store) => Either::Right($call),
        }
    };
}

impl Store for AnyStore {
    fn submit(
        &self,
        batch: SubmitBatch,
    ) -> impl Future<Output = Result<SubmitOutcome, StoreError>> + Send {
        delegate_write!(self, s => s.submit(batch))
    }

    fn apply(
        &self,
        record: TransitionRecord,
    ) -> impl Future<Output = Result<Vec<Released>, StoreError>> + Send {
        delegate_write!(self, s => s.apply(record))
    }

    fn apply_all(
        &self,
        records: Vec<TransitionRecord>,
    ) -> impl Future<Output = Result<Vec<Result<Vec<Released>, StoreError>>, StoreError>> + Send
    {
        delegate_write!(self, s => s.apply_all(records))
    }

    fn claim(
        &self,
        request: ClaimRequest,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send {
        delegate_write!(self, s => s.claim(request))
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        delegate_await!(self, s => s.task(id))
    }

    async fn task_by_key(
        &self,
        workflow: WorkflowId,
        key: TaskKey,
    ) -> Result<Option<Task>, StoreError> {
        delegate_await!(self, s => s.task_by_key(workflow, key))
    }

    async fn history(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        delegate_await!(self, s => s.history(id, after, limit))
    }

    async fn task_for_view(
        &self,
        id: TaskId,
        history_after: u64,
        history_max: usize,
    ) -> Result<Option<TaskForView>, StoreError> {
        delegate_await!(self, s => s.task_for_view(id, history_after, history_max))
    }

    async fn tasks(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        delegate_await!(self, s => s.tasks(filter))
    }

    async fn tasks_for_view(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        delegate_await!(self, s => s.tasks_for_view(filter))
    }

    async fn counts(&self, workflow: Option<WorkflowId>) -> Result<StateCounts, StoreError> {
        delegate_await!(self, s => s.counts(workflow))
    }

    async fn workflow_open(&self, workflow: WorkflowId) -> Result<bool, StoreError> {
        delegate_await!(self, s => s.workflow_open(workflow))
    }

    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowRecord>, StoreError> {
        delegate_await!(self, s => s.workflow(id))
    }

    async fn workflows(
        &self,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        delegate_await!(self, s => s.workflows(before, limit))
    }

    async fn workflows_labelled(
        &self,
        labels: &Labels,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        delegate_await!(self, s => s.workflows_labelled(labels, before, limit))
    }

    async fn ids_ending(&self, suffix: IdSuffix, limit: usize) -> Result<IdMatches, StoreError> {
        delegate_await!(self, s => s.ids_ending(suffix, limit))
    }

    async fn workflow_history(
        &self,
        workflow: WorkflowId,
        after: Option<TaskId>,
        tasks_max: usize,
    ) -> Result<Vec<HistoryMark>, StoreError> {
        delegate_await!(self, s => s.workflow_history(workflow, after, tasks_max))
    }

    async fn subtasks_added(
        &self,
        workflow: WorkflowId,
    ) -> Result<Vec<(TaskId, Vec<TaskKey>)>, StoreError> {
        delegate_await!(self, s => s.subtasks_added(workflow))
    }

    async fn workflow_edges(&self, workflow: WorkflowId) -> Result<Vec<Edge>, StoreError> {
        delegate_await!(self, s => s.workflow_edges(workflow))
    }

    async fn dependencies(&self, id: TaskId) -> Result<Vec<Dependency>, StoreError> {
        delegate_await!(self, s => s.dependencies(id))
    }

    async fn dependents(&self, id: TaskId) -> Result<Vec<TaskId>, StoreError> {
        delegate_await!(self, s => s.dependents(id))
    }

    async fn due_timers(
        &self,
        now: Timestamp,
        after: Option<(Timestamp, TaskId)>,
        limit: usize,
    ) -> Result<Vec<Task>, StoreError> {
        delegate_await!(self, s => s.due_timers(now, after, limit))
    }

    async fn next_timer(&self) -> Result<Option<Timestamp>, StoreError> {
        delegate_await!(self, s => s.next_timer())
    }

    async fn released_blocked(&self, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        delegate_await!(self, s => s.released_blocked(limit))
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        delegate_await!(self, s => s.outbox(limit))
    }

    async fn ack_outbox(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        delegate_await!(self, s => s.ack_outbox(ids))
    }

    fn upsert_agent(
        &self,
        agent: AgentRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        delegate_write!(self, s => s.upsert_agent(agent))
    }

    async fn agent(&self, id: AgentId) -> Result<Option<AgentRecord>, StoreError> {
        delegate_await!(self, s => s.agent(id))
    }

    async fn register_agent(
        &self,
        agent: AgentRecord,
        max_per_registrar: u32,
    ) -> Result<(), StoreError> {
        delegate_await!(self, s => s.register_agent(agent, max_per_registrar))
    }

    async fn agents(
        &self,
        after: Option<AgentId>,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        delegate_await!(self, s => s.agents(after, limit))
    }

    async fn silent_lease_holders(
        &self,
        seen_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        delegate_await!(self, s => s.silent_lease_holders(seen_before, limit))
    }

    async fn leased_to(&self, agent: AgentId) -> Result<Vec<TaskId>, StoreError> {
        delegate_await!(self, s => s.leased_to(agent))
    }

    async fn query_plan(&self, path: HotPath) -> Result<String, StoreError> {
        delegate_await!(self, s => s.query_plan(path))
    }

    fn stats(&self) -> CommitStats {
        delegate!(self, s => s.stats())
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        delegate!(self, s => s.notices())
    }

    async fn notify(&self, payload: String) -> Result<(), StoreError> {
        delegate_await!(self, s => s.notify(payload))
    }

    async fn try_lead(&self) -> Result<bool, StoreError> {
        delegate_await!(self, s => s.try_lead())
    }

    fn stage_artifact(&self) -> Result<ArtifactWriter, StoreError> {
        delegate!(self, s => s.stage_artifact())
    }

    async fn put_artifact(
        &self,
        staged: StagedArtifact,
        content_type: Option<String>,
        now: Timestamp,
    ) -> Result<PutArtifact, StoreError> {
        delegate_await!(self, s => s.put_artifact(staged, content_type, now))
    }

    async fn artifact(&self, artifact: ArtifactRef) -> Result<Option<ArtifactMeta>, StoreError> {
        delegate_await!(self, s => s.artifact(artifact))
    }

    async fn read_artifact(
        &self,
        artifact: ArtifactRef,
    ) -> Result<Option<(ArtifactMeta, ArtifactChunks)>, StoreError> {
        delegate_await!(self, s => s.read_artifact(artifact))
    }

    async fn missing_artifacts(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        delegate_await!(self, s => s.missing_artifacts(artifacts))
    }

    async fn sweep_artifacts(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        delegate_await!(self, s => s.sweep_artifacts(uploaded_before, limit))
    }

    async fn put_signal(&self, signal: NewSignal) -> Result<PutSignal, StoreError> {
        delegate_await!(self, s => s.put_signal(signal))
    }

    async fn signals(
        &self,
        workflow: WorkflowId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        delegate_await!(self, s => s.signals(workflow, after, limit))
    }

    async fn kept_signals(
        &self,
        of: Option<(WorkflowId, String)>,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        delegate_await!(self, s => s.kept_signals(of, limit))
    }

    async fn waiting_for_signal(
        &self,
        filter: TaskFilter,
        name: Option<String>,
    ) -> Result<Vec<Task>, StoreError> {
        delegate_await!(self, s => s.waiting_for_signal(filter, name))
    }
    async fn write_limit(&self, write: crate::LimitWrite) -> Result<bool, StoreError> {
        delegate_await!(self, s => s.write_limit(write))
    }

    async fn limits(&self, now: Timestamp) -> Result<Vec<crate::LimitRecord>, StoreError> {
        delegate_await!(self, s => s.limits(now))
    }

    async fn flow_hold(
        &self,
        task: baton_core::TaskId,
        now: Timestamp,
    ) -> Result<Option<crate::FlowHold>, StoreError> {
        delegate_await!(self, s => s.flow_hold(task, now))
    }

    async fn concurrency_held(&self) -> Result<Vec<(String, u64)>, StoreError> {
        delegate_await!(self, s => s.concurrency_held())
    }

    async fn write_schedule(&self, write: ScheduleWrite) -> Result<bool, StoreError> {
        delegate_await!(self, s => s.write_schedule(write))
    }

    async fn schedule(&self, name: String) -> Result<Option<ScheduleRecord>, StoreError> {
        delegate_await!(self, s => s.schedule(name))
    }

    async fn schedules(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        delegate_await!(self, s => s.schedules(after, limit))
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        delegate_await!(self, s => s.due_schedules(now, limit))
    }
    async fn write_trigger(&self, write: TriggerWrite) -> Result<bool, StoreError> {
        delegate_await!(self, s => s.write_trigger(write))
    }

    async fn trigger(&self, name: String) -> Result<Option<TriggerRecord>, StoreError> {
        delegate_await!(self, s => s.trigger(name))
    }

    async fn triggers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<TriggerRecord>, StoreError> {
        delegate_await!(self, s => s.triggers(after, limit))
    }

    async fn control(&self, write: ControlWrite) -> Result<Vec<Released>, StoreError> {
        delegate_await!(self, s => s.control(write))
    }

    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        delegate_await!(self, s => s.audit(filter))
    }

    async fn workflow_usage(&self, workflow: WorkflowId) -> Result<Usage, StoreError> {
        delegate_await!(self, s => s.workflow_usage(workflow))
    }

    async fn usage_labelled(&self, label: Option<(String, String)>) -> Result<Usage, StoreError> {
        delegate_await!(self, s => s.usage_labelled(label))
    }

    async fn gc_candidates(&self, scan: GcScan) -> Result<GcPage, StoreError> {
        delegate_await!(self, s => s.gc_candidates(scan))
    }

    async fn gc_marked(&self, limit: usize) -> Result<Vec<WorkflowId>, StoreError> {
        delegate_await!(self, s => s.gc_marked(limit))
    }

    async fn gc_workflows(&self, batch: GcBatch) -> Result<GcDeleted, StoreError> {
        delegate_await!(self, s => s.gc_workflows(batch))
    }

    async fn gc_preview(&self, workflows: Vec<WorkflowId>) -> Result<GcPreview, StoreError> {
        delegate_await!(self, s => s.gc_preview(workflows))
    }

    async fn artifact_refs(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<ArtifactRefs>, StoreError> {
        delegate_await!(self, s => s.artifact_refs(artifacts))
    }

    async fn gc_prune(&self, prune: GcPrune, dry_run: bool) -> Result<GcPruned, StoreError> {
        delegate_await!(self, s => s.gc_prune(prune, dry_run))
    }

    async fn fair_clock(&self) -> Result<i64, StoreError> {
        delegate_await!(self, s => s.fair_clock())
    }

    async fn reclaim_space(&self, pages_max: u64) -> Result<u64, StoreError> {
        delegate_await!(self, s => s.reclaim_space(pages_max))
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        delegate_await!(self, s => s.size_bytes())
    }
}
