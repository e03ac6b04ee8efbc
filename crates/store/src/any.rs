//! A store chosen at run time from a URL: a path or `sqlite://PATH` for SQLite,
//! `postgres://…` or `postgresql://…` for PostgreSQL.

use baton_core::Usage;
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

impl Store for AnyStore {
    async fn submit(&self, batch: SubmitBatch) -> Result<SubmitOutcome, StoreError> {
        delegate!(self, s => s.submit(batch).await)
    }

    async fn apply(&self, record: TransitionRecord) -> Result<Vec<Released>, StoreError> {
        delegate!(self, s => s.apply(record).await)
    }

    async fn apply_all(
        &self,
        records: Vec<TransitionRecord>,
    ) -> Result<Vec<Result<Vec<Released>, StoreError>>, StoreError> {
        delegate!(self, s => s.apply_all(records).await)
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Task>, StoreError> {
        delegate!(self, s => s.claim(request).await)
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        delegate!(self, s => s.task(id).await)
    }

    async fn task_by_key(
        &self,
        workflow: WorkflowId,
        key: TaskKey,
    ) -> Result<Option<Task>, StoreError> {
        delegate!(self, s => s.task_by_key(workflow, key).await)
    }

    async fn history(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        delegate!(self, s => s.history(id, after, limit).await)
    }

    async fn task_for_view(
        &self,
        id: TaskId,
        history_after: u64,
        history_max: usize,
    ) -> Result<Option<TaskForView>, StoreError> {
        delegate!(self, s => s.task_for_view(id, history_after, history_max).await)
    }

    async fn tasks(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        delegate!(self, s => s.tasks(filter).await)
    }

    async fn tasks_for_view(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        delegate!(self, s => s.tasks_for_view(filter).await)
    }

    async fn counts(&self, workflow: Option<WorkflowId>) -> Result<StateCounts, StoreError> {
        delegate!(self, s => s.counts(workflow).await)
    }

    async fn workflow_open(&self, workflow: WorkflowId) -> Result<bool, StoreError> {
        delegate!(self, s => s.workflow_open(workflow).await)
    }

    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowRecord>, StoreError> {
        delegate!(self, s => s.workflow(id).await)
    }

    async fn workflows(
        &self,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        delegate!(self, s => s.workflows(before, limit).await)
    }

    async fn workflows_labelled(
        &self,
        labels: &Labels,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        delegate!(self, s => s.workflows_labelled(labels, before, limit).await)
    }

    async fn ids_ending(&self, suffix: IdSuffix, limit: usize) -> Result<IdMatches, StoreError> {
        delegate!(self, s => s.ids_ending(suffix, limit).await)
    }

    async fn workflow_history(
        &self,
        workflow: WorkflowId,
        after: Option<TaskId>,
        tasks_max: usize,
    ) -> Result<Vec<HistoryMark>, StoreError> {
        delegate!(self, s => s.workflow_history(workflow, after, tasks_max).await)
    }

    async fn subtasks_added(
        &self,
        workflow: WorkflowId,
    ) -> Result<Vec<(TaskId, Vec<TaskKey>)>, StoreError> {
        delegate!(self, s => s.subtasks_added(workflow).await)
    }

    async fn workflow_edges(&self, workflow: WorkflowId) -> Result<Vec<Edge>, StoreError> {
        delegate!(self, s => s.workflow_edges(workflow).await)
    }

    async fn dependencies(&self, id: TaskId) -> Result<Vec<Dependency>, StoreError> {
        delegate!(self, s => s.dependencies(id).await)
    }

    async fn dependents(&self, id: TaskId) -> Result<Vec<TaskId>, StoreError> {
        delegate!(self, s => s.dependents(id).await)
    }

    async fn due_timers(
        &self,
        now: Timestamp,
        after: Option<(Timestamp, TaskId)>,
        limit: usize,
    ) -> Result<Vec<Task>, StoreError> {
        delegate!(self, s => s.due_timers(now, after, limit).await)
    }

    async fn next_timer(&self) -> Result<Option<Timestamp>, StoreError> {
        delegate!(self, s => s.next_timer().await)
    }

    async fn released_blocked(&self, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        delegate!(self, s => s.released_blocked(limit).await)
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        delegate!(self, s => s.outbox(limit).await)
    }

    async fn ack_outbox(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        delegate!(self, s => s.ack_outbox(ids).await)
    }

    async fn upsert_agent(&self, agent: AgentRecord) -> Result<(), StoreError> {
        delegate!(self, s => s.upsert_agent(agent).await)
    }

    async fn agent(&self, id: AgentId) -> Result<Option<AgentRecord>, StoreError> {
        delegate!(self, s => s.agent(id).await)
    }

    async fn register_agent(
        &self,
        agent: AgentRecord,
        max_per_registrar: u32,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.register_agent(agent, max_per_registrar).await)
    }

    async fn agents(
        &self,
        after: Option<AgentId>,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        delegate!(self, s => s.agents(after, limit).await)
    }

    async fn silent_lease_holders(
        &self,
        seen_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        delegate!(self, s => s.silent_lease_holders(seen_before, limit).await)
    }

    async fn leased_to(&self, agent: AgentId) -> Result<Vec<TaskId>, StoreError> {
        delegate!(self, s => s.leased_to(agent).await)
    }

    async fn query_plan(&self, path: HotPath) -> Result<String, StoreError> {
        delegate!(self, s => s.query_plan(path).await)
    }

    fn stats(&self) -> CommitStats {
        delegate!(self, s => s.stats())
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        delegate!(self, s => s.notices())
    }

    async fn notify(&self, payload: String) -> Result<(), StoreError> {
        delegate!(self, s => s.notify(payload).await)
    }

    async fn try_lead(&self) -> Result<bool, StoreError> {
        delegate!(self, s => s.try_lead().await)
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
        delegate!(self, s => s.put_artifact(staged, content_type, now).await)
    }

    async fn artifact(&self, artifact: ArtifactRef) -> Result<Option<ArtifactMeta>, StoreError> {
        delegate!(self, s => s.artifact(artifact).await)
    }

    async fn read_artifact(
        &self,
        artifact: ArtifactRef,
    ) -> Result<Option<(ArtifactMeta, ArtifactChunks)>, StoreError> {
        delegate!(self, s => s.read_artifact(artifact).await)
    }

    async fn missing_artifacts(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        delegate!(self, s => s.missing_artifacts(artifacts).await)
    }

    async fn sweep_artifacts(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        delegate!(self, s => s.sweep_artifacts(uploaded_before, limit).await)
    }

    async fn put_signal(&self, signal: NewSignal) -> Result<PutSignal, StoreError> {
        delegate!(self, s => s.put_signal(signal).await)
    }

    async fn signals(
        &self,
        workflow: WorkflowId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        delegate!(self, s => s.signals(workflow, after, limit).await)
    }

    async fn kept_signals(
        &self,
        of: Option<(WorkflowId, String)>,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        delegate!(self, s => s.kept_signals(of, limit).await)
    }

    async fn waiting_for_signal(
        &self,
        filter: TaskFilter,
        name: Option<String>,
    ) -> Result<Vec<Task>, StoreError> {
        delegate!(self, s => s.waiting_for_signal(filter, name).await)
    }
    async fn write_limit(&self, write: crate::LimitWrite) -> Result<bool, StoreError> {
        delegate!(self, s => s.write_limit(write).await)
    }

    async fn limits(&self, now: Timestamp) -> Result<Vec<crate::LimitRecord>, StoreError> {
        delegate!(self, s => s.limits(now).await)
    }

    async fn flow_hold(
        &self,
        task: baton_core::TaskId,
        now: Timestamp,
    ) -> Result<Option<crate::FlowHold>, StoreError> {
        delegate!(self, s => s.flow_hold(task, now).await)
    }

    async fn concurrency_held(&self) -> Result<Vec<(String, u64)>, StoreError> {
        delegate!(self, s => s.concurrency_held().await)
    }

    async fn write_schedule(&self, write: ScheduleWrite) -> Result<bool, StoreError> {
        delegate!(self, s => s.write_schedule(write).await)
    }

    async fn schedule(&self, name: String) -> Result<Option<ScheduleRecord>, StoreError> {
        delegate!(self, s => s.schedule(name).await)
    }

    async fn schedules(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        delegate!(self, s => s.schedules(after, limit).await)
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        delegate!(self, s => s.due_schedules(now, limit).await)
    }
    async fn write_trigger(&self, write: TriggerWrite) -> Result<bool, StoreError> {
        delegate!(self, s => s.write_trigger(write).await)
    }

    async fn trigger(&self, name: String) -> Result<Option<TriggerRecord>, StoreError> {
        delegate!(self, s => s.trigger(name).await)
    }

    async fn triggers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<TriggerRecord>, StoreError> {
        delegate!(self, s => s.triggers(after, limit).await)
    }

    async fn control(&self, write: ControlWrite) -> Result<Vec<Released>, StoreError> {
        delegate!(self, s => s.control(write).await)
    }

    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        delegate!(self, s => s.audit(filter).await)
    }

    async fn workflow_usage(&self, workflow: WorkflowId) -> Result<Usage, StoreError> {
        delegate!(self, s => s.workflow_usage(workflow).await)
    }

    async fn usage_labelled(&self, label: Option<(String, String)>) -> Result<Usage, StoreError> {
        delegate!(self, s => s.usage_labelled(label).await)
    }

    async fn gc_candidates(&self, scan: GcScan) -> Result<GcPage, StoreError> {
        delegate!(self, s => s.gc_candidates(scan).await)
    }

    async fn gc_marked(&self, limit: usize) -> Result<Vec<WorkflowId>, StoreError> {
        delegate!(self, s => s.gc_marked(limit).await)
    }

    async fn gc_workflows(&self, batch: GcBatch) -> Result<GcDeleted, StoreError> {
        delegate!(self, s => s.gc_workflows(batch).await)
    }

    async fn gc_preview(&self, workflows: Vec<WorkflowId>) -> Result<GcPreview, StoreError> {
        delegate!(self, s => s.gc_preview(workflows).await)
    }

    async fn artifact_refs(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<ArtifactRefs>, StoreError> {
        delegate!(self, s => s.artifact_refs(artifacts).await)
    }

    async fn gc_prune(&self, prune: GcPrune, dry_run: bool) -> Result<GcPruned, StoreError> {
        delegate!(self, s => s.gc_prune(prune, dry_run).await)
    }

    async fn fair_clock(&self) -> Result<i64, StoreError> {
        delegate!(self, s => s.fair_clock().await)
    }

    async fn reclaim_space(&self, pages_max: u64) -> Result<u64, StoreError> {
        delegate!(self, s => s.reclaim_space(pages_max).await)
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        delegate!(self, s => s.size_bytes().await)
    }
}
