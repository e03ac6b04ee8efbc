//! The [`Store`] trait for [`PgStore`]: reads on the pool; writes queued for the writers.

use std::future::Future;

use baton_core::Usage;
use std::sync::Arc;

use baton_core::{
    AgentId, ArtifactRef, HistoryEntry, Labels, StateKind, Task, TaskId, TaskKey, TaskSpec,
    Timestamp, WorkflowId,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::commands::decode_tasks;
use super::conn::CLAIM_SQL;
use super::connect::PgStore;
use super::error::{db, get};
use crate::audit::{audit_query, AuditParam};
use crate::codec::{self, ts};
use crate::Released;
use crate::{
    AgentRecord, ArtifactChunks, ArtifactMeta, ArtifactRefs, ArtifactWriter, AuditEntry,
    AuditFilter, ClaimRequest, CommitStats, ControlWrite, Dependency, Edge, GcBatch, GcDeleted,
    GcPage, GcPreview, GcPrune, GcPruned, GcScan, HistoryMark, HotPath, IdMatches, IdSuffix,
    NewSignal, OutboxItem, PutArtifact, PutSignal, ScheduleRecord, ScheduleWrite, SignalRecord,
    StagedArtifact, StateCounts, Store, StoreError, SubmitBatch, SubmitOutcome, TaskFilter,
    TaskForView, TaskIdMatch, TransitionRecord, TriggerRecord, TriggerWrite, WorkflowRecord,
    HISTORY_TASKS_PER_PAGE_MAX, PAGE_ROWS_MAX,
};

const TASK_COLUMNS: &str = "SELECT t.id, t.snapshot, s.spec FROM tasks t
                            JOIN task_specs s ON s.task_id = t.id";
/// The columns [`workflow_row`] reads, from `workflows` (qualified: a label query joins
/// `workflow_labels`); the labels gathered into a JSON object (NULL: none).
const WORKFLOW_COLUMNS: &str = "workflows.id, workflows.name, workflows.idempotency_key,
    workflows.created_at, workflows.outputs,
    (SELECT jsonb_object_agg(wl.key, wl.value) FROM workflow_labels wl
     WHERE wl.workflow_id = workflows.id)::text,
    workflows.paused, workflows.budgets";

/// A workflow from a row of [`WORKFLOW_COLUMNS`].
fn workflow_row(row: &Row) -> Result<WorkflowRecord, StoreError> {
    let labels = match get::<Option<String>>(row, 5)? {
        None => Labels::new(),
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| StoreError::Backend(format!("a workflow's labels: {e}")))?,
    };
    Ok(WorkflowRecord {
        id: WorkflowId(get(row, 0)?),
        name: get(row, 1)?,
        idempotency_key: get(row, 2)?,
        created_at: Timestamp(get::<i64>(row, 3)? as u64),
        outputs: get(row, 4)?,
        labels,
        paused: codec::decode_pause(get(row, 6)?),
        budgets: codec::decode_budgets(get(row, 7)?),
    })
}

const TIMERS_SQL: &str = "SELECT t.id, t.snapshot, s.spec FROM tasks t
    JOIN task_specs s ON s.task_id = t.id
    WHERE t.timer_at IS NOT NULL AND t.timer_at <= $1 AND (t.timer_at, t.id) > ($2, $3)
    ORDER BY t.timer_at, t.id LIMIT $4";
const DEPENDENTS_SQL: &str = "SELECT dependent FROM edges WHERE dependency = $1 ORDER BY dependent";
const RELEASED_SQL: &str =
    "SELECT id FROM tasks WHERE state = 'blocked' AND deps_open = 0 AND timer_at IS NULL ORDER BY id LIMIT $1";
const COUNTS_SQL: &str = "SELECT state, sum(n)::int8 FROM state_counts GROUP BY state";
/// Whether a task of the workflow has not ended: a lookup per open state in
/// `tasks_by_workflow`.
const WORKFLOW_OPEN_SQL: &str = "SELECT EXISTS (SELECT 1 FROM tasks WHERE workflow_id = $1
     AND state IN ('blocked', 'pending', 'assigned', 'executing'))";
const AGENT_COLUMNS: &str = "SELECT id, name, capabilities, concurrency, registered_at, last_seen,
                                    registered_by FROM agents";

fn decode_agent(row: &Row) -> Result<AgentRecord, StoreError> {
    let id: Uuid = get(row, 0)?;
    let concurrency: i64 = get(row, 3)?;
    Ok(AgentRecord {
        id: AgentId(id),
        name: get(row, 1)?,
        capabilities: serde_json::from_str(get(row, 2)?)
            .map_err(|e| StoreError::Backend(format!("agent {id} capabilities: {e}")))?,
        concurrency: u32::try_from(concurrency)
            .map_err(|_| StoreError::Backend(format!("agent {id} concurrency {concurrency}")))?,
        registered_at: Timestamp(get::<i64>(row, 4)? as u64),
        last_seen: Timestamp(get::<i64>(row, 5)? as u64),
        registered_by: get(row, 6)?,
    })
}

/// The `after` and `limit` parameters of a history page.
fn page(after: u64, limit: usize) -> (i64, i64) {
    (
        after.min(i64::MAX as u64) as i64,
        limit.min(PAGE_ROWS_MAX) as i64,
    )
}

/// History entries from rows of `seq, at, event, payload, spec`. The `submitted` entry's spec
/// is `spec` when given (the task's own, already read); otherwise the row's.
fn decode_history(
    id: TaskId,
    rows: &[Row],
    spec: Option<&Arc<TaskSpec>>,
) -> Result<Vec<HistoryEntry>, StoreError> {
    rows.iter()
        .map(|row| {
            let seq_at = (get(row, 0)?, get(row, 1)?);
            codec::decode_history_entry(id, seq_at, get(row, 2)?, get(row, 3)?, || match spec {
                Some(spec) => Ok(Arc::clone(spec)),
                None => codec::decode_spec(id, get(row, 4)?),
            })
        })
        .collect()
}

impl PgStore {
    /// The rows (`id, snapshot, spec`) of a page of tasks.
    async fn task_rows(&self, filter: TaskFilter) -> Result<Vec<Row>, StoreError> {
        let limit = filter.limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let after = filter.after.map(|t| t.0).unwrap_or(Uuid::nil());
        let rows = match (filter.workflow, filter.state) {
            (Some(wf), Some(st)) => {
                self.query(
                    &format!(
                        "{TASK_COLUMNS} WHERE t.workflow_id = $1 AND t.state = $2 AND t.id > $3
                         ORDER BY t.id LIMIT $4"
                    ),
                    &[&wf.0, &st.as_str(), &after, &limit],
                )
                .await?
            }
            (Some(wf), None) => {
                self.query(
                    &format!(
                        "{TASK_COLUMNS} WHERE t.workflow_id = $1 AND t.id > $2 ORDER BY t.id LIMIT $3"
                    ),
                    &[&wf.0, &after, &limit],
                )
                .await?
            }
            (None, Some(st)) => {
                self.query(
                    &format!("{TASK_COLUMNS} WHERE t.state = $1 AND t.id > $2 ORDER BY t.id LIMIT $3"),
                    &[&st.as_str(), &after, &limit],
                )
                .await?
            }
            (None, None) => {
                self.query(
                    &format!("{TASK_COLUMNS} WHERE t.id > $1 ORDER BY t.id LIMIT $2"),
                    &[&after, &limit],
                )
                .await?
            }
        };
        Ok(rows)
    }
}

fn ids(rows: &[Row]) -> Result<Vec<TaskId>, StoreError> {
    rows.iter().map(|r| get(r, 0).map(TaskId)).collect()
}

impl Store for PgStore {
    fn submit(
        &self,
        batch: SubmitBatch,
    ) -> impl Future<Output = Result<SubmitOutcome, StoreError>> + Send {
        self.writes.submit(batch)
    }

    fn apply(
        &self,
        record: TransitionRecord,
    ) -> impl Future<Output = Result<Vec<Released>, StoreError>> + Send {
        self.writes.apply(record)
    }

    fn apply_all(
        &self,
        records: Vec<TransitionRecord>,
    ) -> impl Future<Output = Result<Vec<Result<Vec<Released>, StoreError>>, StoreError>> + Send
    {
        self.writes.apply_all(records)
    }

    fn claim(
        &self,
        request: ClaimRequest,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send {
        self.writes.claim(request)
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        let rows = self
            .query(&format!("{TASK_COLUMNS} WHERE t.id = $1"), &[&id.0])
            .await?;
        Ok(decode_tasks(&rows)?.pop())
    }

    async fn task_by_key(
        &self,
        workflow: WorkflowId,
        key: TaskKey,
    ) -> Result<Option<Task>, StoreError> {
        let rows = self
            .query(
                &format!("{TASK_COLUMNS} WHERE t.workflow_id = $1 AND t.key = $2"),
                &[&workflow.0, &key.0],
            )
            .await?;
        Ok(decode_tasks(&rows)?.pop())
    }

    async fn history(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let (after, limit) = page(after, limit);
        let rows = self
            .query(
                "SELECT h.seq, h.at, h.event, h.payload, s.spec FROM history h
                 LEFT JOIN task_specs s ON h.event = 'submitted' AND s.task_id = h.task_id
                 WHERE h.task_id = $1 AND h.seq > $2 ORDER BY h.seq LIMIT $3",
                &[&id.0, &after, &limit],
            )
            .await?;
        decode_history(id, &rows, None)
    }

    async fn task_for_view(
        &self,
        id: TaskId,
        history_after: u64,
        history_max: usize,
    ) -> Result<Option<TaskForView>, StoreError> {
        let rows = self
            .query(&format!("{TASK_COLUMNS} WHERE t.id = $1"), &[&id.0])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let (task, spec_json) =
            codec::decode_task_without_input(id, get(row, 1)?, get::<String>(row, 2)?)?;
        drop(rows);
        let (after, limit) = page(history_after, history_max);
        let rows = self
            .query(
                "SELECT seq, at, event, payload, NULL::text FROM history
                 WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&id.0, &after, &limit],
            )
            .await?;
        let history = decode_history(id, &rows, Some(&task.spec))?;
        Ok(Some(TaskForView {
            task,
            spec_json,
            history,
        }))
    }

    async fn tasks(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        decode_tasks(&self.task_rows(filter).await?)
    }

    async fn tasks_for_view(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.task_rows(filter)
            .await?
            .iter()
            .map(|row| {
                let id = TaskId(get(row, 0)?);
                codec::decode_task_sans_input(id, get(row, 1)?, get(row, 2)?)
            })
            .collect()
    }

    async fn workflow_open(&self, workflow: WorkflowId) -> Result<bool, StoreError> {
        let rows = self.query(WORKFLOW_OPEN_SQL, &[&workflow.0]).await?;
        match rows.first() {
            Some(row) => get(row, 0),
            None => Ok(false),
        }
    }

    async fn counts(&self, workflow: Option<WorkflowId>) -> Result<StateCounts, StoreError> {
        let rows = match workflow {
            None => self.query(COUNTS_SQL, &[]).await?,
            Some(wf) => {
                self.query(
                    "SELECT state, count(*) FROM tasks WHERE workflow_id = $1 GROUP BY state",
                    &[&wf.0],
                )
                .await?
            }
        };
        let mut counts = StateCounts::default();
        for row in &rows {
            let state: &str = get(row, 0)?;
            let n: i64 = get(row, 1)?;
            let kind = StateKind::parse(state)
                .ok_or_else(|| StoreError::Backend(format!("unknown state {state:?} in counts")))?;
            counts.0[kind.index()] = n.max(0) as u64;
        }
        // Paused tasks are few and indexed apart (`tasks_paused`): counted, not kept.
        let paused = match workflow {
            None => {
                self.query("SELECT count(*) FROM tasks WHERE paused", &[])
                    .await?
            }
            Some(wf) => {
                self.query(
                    "SELECT count(*) FROM tasks WHERE workflow_id = $1 AND paused",
                    &[&wf.0],
                )
                .await?
            }
        };
        if let Some(row) = paused.first() {
            counts.1 = get::<i64>(row, 0)?.max(0) as u64;
        }
        // Failed with a retry scheduled: a timer, indexed apart (`tasks_retrying`).
        let retrying = match workflow {
            None => {
                self.query(
                    "SELECT count(*) FROM tasks WHERE state = 'failed' AND timer_at IS NOT NULL",
                    &[],
                )
                .await?
            }
            Some(wf) => {
                self.query(
                    "SELECT count(*) FROM tasks
                     WHERE workflow_id = $1 AND state = 'failed' AND timer_at IS NOT NULL",
                    &[&wf.0],
                )
                .await?
            }
        };
        if let Some(row) = retrying.first() {
            counts.2 = get::<i64>(row, 0)?.max(0) as u64;
        }
        Ok(counts)
    }

    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowRecord>, StoreError> {
        let rows = self
            .query(
                &format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflows.id = $1
                 AND workflows.deleting IS NULL"
                ),
                &[&id.0],
            )
            .await?;
        rows.first().map(workflow_row).transpose()
    }

    async fn workflows(
        &self,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let before = before.map(|w| w.0).unwrap_or(Uuid::max());
        let rows = self
            .query(
                &format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflows.id < $1 AND workflows.deleting IS NULL
                     ORDER BY workflows.id DESC LIMIT $2"
                ),
                &[&before, &limit],
            )
            .await?;
        rows.iter().map(workflow_row).collect()
    }

    async fn workflows_labelled(
        &self,
        labels: &Labels,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        let Some((key, value)) = labels.iter().next() else {
            return self.workflows(before, limit).await;
        };
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let before = before.map(|w| w.0).unwrap_or(Uuid::max());
        let all = serde_json::to_string(labels).expect("labels serialise");
        let n = labels.len() as i64;
        // The first label walks its index range newest first; the others are looked up per
        // workflow (at most 16 rows by its primary key).
        let rows = self
            .query(
                &format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflow_labels l
                     JOIN workflows ON workflows.id = l.workflow_id AND workflows.deleting IS NULL
                     WHERE l.key = $1 AND l.value = $2 AND l.workflow_id < $3
                       AND (SELECT count(*) FROM jsonb_each_text($4::text::jsonb) j
                            JOIN workflow_labels m ON m.workflow_id = l.workflow_id
                                 AND m.key = j.key AND m.value = j.value) = $5
                     ORDER BY l.workflow_id DESC LIMIT $6"
                ),
                &[key, value, &before, &all, &n, &limit],
            )
            .await?;
        rows.iter().map(workflow_row).collect()
    }

    async fn ids_ending(&self, suffix: IdSuffix, limit: usize) -> Result<IdMatches, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let digits = suffix.len() as i32;
        let suffix = suffix.as_str();
        let tasks = self
            .query(
                "SELECT id, workflow_id, key FROM tasks
                 WHERE right(replace(id::text, '-', ''), $2) = $1 ORDER BY id LIMIT $3",
                &[&suffix, &digits, &limit],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(TaskIdMatch {
                    id: TaskId(get(row, 0)?),
                    workflow: WorkflowId(get(row, 1)?),
                    key: TaskKey(get(row, 2)?),
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let workflows = self
            .query(
                &format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflows
                     WHERE right(replace(workflows.id::text, '-', ''), $2) = $1
                     ORDER BY workflows.id LIMIT $3"
                ),
                &[&suffix, &digits, &limit],
            )
            .await?
            .iter()
            .map(workflow_row)
            .collect::<Result<_, StoreError>>()?;
        Ok(IdMatches { tasks, workflows })
    }

    async fn workflow_history(
        &self,
        workflow: WorkflowId,
        after: Option<TaskId>,
        tasks_max: usize,
    ) -> Result<Vec<HistoryMark>, StoreError> {
        let limit = tasks_max.clamp(1, HISTORY_TASKS_PER_PAGE_MAX) as i64;
        let after = after.map(|t| t.0).unwrap_or(Uuid::nil());
        let rows = self
            .query(
                "SELECT h.task_id, h.seq, h.at, h.event FROM history h
                 WHERE h.task_id IN (SELECT id FROM tasks WHERE workflow_id = $1 AND id > $2
                                     ORDER BY id LIMIT $3)
                   AND h.event <> 'heartbeat'
                 ORDER BY h.task_id, h.seq",
                &[&workflow.0, &after, &limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let task = TaskId(get(row, 0)?);
                let name: String = get(row, 3)?;
                codec::history_mark(task, get(row, 1)?, get(row, 2)?, &name)
            })
            .collect()
    }

    async fn subtasks_added(
        &self,
        workflow: WorkflowId,
    ) -> Result<Vec<(TaskId, Vec<TaskKey>)>, StoreError> {
        let rows = self
            .query(
                "SELECT h.task_id, h.seq, h.payload FROM tasks t
                 JOIN history h ON h.task_id = t.id
                 WHERE t.workflow_id = $1 AND h.event = 'subtasks_added'
                 ORDER BY h.task_id, h.seq",
                &[&workflow.0],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let task = TaskId(get(row, 0)?);
                let payload: String = get(row, 2)?;
                Ok((task, codec::subtask_keys(task, get(row, 1)?, &payload)?))
            })
            .collect()
    }

    async fn workflow_edges(&self, workflow: WorkflowId) -> Result<Vec<Edge>, StoreError> {
        let rows = self
            .query(
                "SELECT e.dependency, e.dependent FROM tasks t
                 JOIN edges e ON e.dependent = t.id WHERE t.workflow_id = $1",
                &[&workflow.0],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Edge {
                    dependency: TaskId(get(row, 0)?),
                    dependent: TaskId(get(row, 1)?),
                })
            })
            .collect()
    }

    async fn dependencies(&self, id: TaskId) -> Result<Vec<Dependency>, StoreError> {
        let rows = self
            .query(
                "SELECT t.key, t.id, t.state, t.updated_at FROM edges e
                 JOIN tasks t ON t.id = e.dependency
                 WHERE e.dependent = $1 ORDER BY t.key",
                &[&id.0],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let dep = TaskId(get(row, 1)?);
                Ok(Dependency {
                    key: TaskKey(get(row, 0)?),
                    id: dep,
                    state: codec::parse_state(dep, get(row, 2)?)?,
                    updated_at: Timestamp(get::<i64>(row, 3)? as u64),
                })
            })
            .collect()
    }

    async fn dependents(&self, id: TaskId) -> Result<Vec<TaskId>, StoreError> {
        ids(&self.query(DEPENDENTS_SQL, &[&id.0]).await?)
    }

    async fn due_timers(
        &self,
        now: Timestamp,
        after: Option<(Timestamp, TaskId)>,
        limit: usize,
    ) -> Result<Vec<Task>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        let (at, id) = after.map_or((-1, Uuid::nil()), |(at, id)| (ts(at), id.0));
        decode_tasks(
            &self
                .query(TIMERS_SQL, &[&ts(now), &at, &id, &limit])
                .await?,
        )
    }

    async fn next_timer(&self) -> Result<Option<Timestamp>, StoreError> {
        let rows = self
            .query(
                "SELECT min(timer_at) FROM tasks WHERE timer_at IS NOT NULL",
                &[],
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(get::<Option<i64>>(row, 0)?.map(|t| Timestamp(t as u64))),
            None => Ok(None),
        }
    }

    async fn released_blocked(&self, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        ids(&self.query(RELEASED_SQL, &[&limit]).await?)
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        let rows = self
            .query(
                "SELECT id, task_id, effect FROM outbox ORDER BY id LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let id: i64 = get(row, 0)?;
                let task = TaskId(get(row, 1)?);
                let effect =
                    serde_json::from_str(get(row, 2)?).map_err(|e| StoreError::Corrupt {
                        task,
                        detail: format!("outbox item {id}: {e}"),
                    })?;
                Ok(OutboxItem { id, task, effect })
            })
            .collect()
    }

    async fn ack_outbox(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.writes.ack_outbox(ids).await
    }

    fn upsert_agent(
        &self,
        agent: AgentRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.writes.upsert_agent(agent)
    }

    async fn agent(&self, id: AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let rows = self
            .query(&format!("{AGENT_COLUMNS} WHERE id = $1"), &[&id.0])
            .await?;
        rows.first().map(decode_agent).transpose()
    }

    async fn register_agent(
        &self,
        agent: AgentRecord,
        max_per_registrar: u32,
    ) -> Result<(), StoreError> {
        self.register_agent_row(agent, max_per_registrar).await
    }

    async fn agents(
        &self,
        after: Option<AgentId>,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let after = after.map(|a| a.0).unwrap_or(Uuid::nil());
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let rows = self
            .query(
                &format!("{AGENT_COLUMNS} WHERE id > $1 ORDER BY id LIMIT $2"),
                &[&after, &limit],
            )
            .await?;
        rows.iter().map(decode_agent).collect()
    }

    async fn silent_lease_holders(
        &self,
        seen_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let rows = self
            .query(
                &format!(
                    "{AGENT_COLUMNS}
                     WHERE id IN (SELECT DISTINCT lease_agent FROM tasks
                                  WHERE lease_agent IS NOT NULL)
                       AND last_seen < $1
                     ORDER BY id LIMIT $2"
                ),
                &[&ts(seen_before), &limit],
            )
            .await?;
        rows.iter().map(decode_agent).collect()
    }

    async fn leased_to(&self, agent: AgentId) -> Result<Vec<TaskId>, StoreError> {
        ids(&self
            .query(
                "SELECT id FROM tasks WHERE lease_agent = $1 ORDER BY id",
                &[&agent.0],
            )
            .await?)
    }

    /// The plan is made with sequential scans disabled for its transaction: on the tiny tables
    /// of a test the planner rightly prefers reading the whole table, which says nothing about
    /// production. With scans priced out, the plan names the index that serves the query, or
    /// still shows a sequential scan if none can.
    async fn query_plan(&self, path: HotPath) -> Result<String, StoreError> {
        let nil = Uuid::nil();
        let (sql, params): (&str, Vec<&(dyn ToSql + Sync)>) = match path {
            HotPath::Claim => (CLAIM_SQL, vec![&"write", &10i64]),
            HotPath::DueTimers => (TIMERS_SQL, vec![&0i64, &-1i64, &nil, &10i64]),
            HotPath::ReleaseDependents => (DEPENDENTS_SQL, vec![&nil]),
            HotPath::ReleasedBlocked => (RELEASED_SQL, vec![&10i64]),
            HotPath::Counts => (COUNTS_SQL, vec![]),
            HotPath::WorkflowOpen => (WORKFLOW_OPEN_SQL, vec![&nil]),
        };
        let mut client = self.reader().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute("SET LOCAL enable_seqscan = off")
            .await
            .map_err(db)?;
        let rows = tx
            .query(&format!("EXPLAIN {sql}"), &params)
            .await
            .map_err(db)?;
        let lines: Vec<String> = rows.iter().map(|r| get(r, 0)).collect::<Result<_, _>>()?;
        tx.rollback().await.map_err(db)?;
        Ok(lines.join("\n"))
    }

    fn stats(&self) -> CommitStats {
        self.stats.snapshot()
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        Some(self.cluster.subscribe())
    }

    async fn notify(&self, payload: String) -> Result<(), StoreError> {
        let client = self.reader().await?;
        self.cluster.publish(&client, &payload).await
    }

    async fn try_lead(&self) -> Result<bool, StoreError> {
        self.cluster.try_lead().await
    }

    fn stage_artifact(&self) -> Result<ArtifactWriter, StoreError> {
        ArtifactWriter::create(&super::artifacts::staging_dir())
    }

    async fn put_artifact(
        &self,
        staged: StagedArtifact,
        content_type: Option<String>,
        now: Timestamp,
    ) -> Result<PutArtifact, StoreError> {
        self.put_artifact_row(staged, content_type, now).await
    }

    async fn artifact(&self, artifact: ArtifactRef) -> Result<Option<ArtifactMeta>, StoreError> {
        self.artifact_row(artifact).await
    }

    async fn read_artifact(
        &self,
        artifact: ArtifactRef,
    ) -> Result<Option<(ArtifactMeta, ArtifactChunks)>, StoreError> {
        self.artifact_chunks(artifact).await
    }

    async fn missing_artifacts(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        self.missing_artifact_rows(artifacts).await
    }

    async fn sweep_artifacts(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        self.sweep_artifact_rows(uploaded_before, limit).await
    }

    async fn put_signal(&self, signal: NewSignal) -> Result<PutSignal, StoreError> {
        self.put_signal_row(signal).await
    }

    async fn signals(
        &self,
        workflow: WorkflowId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        self.signal_rows(workflow, after, limit).await
    }

    async fn kept_signals(
        &self,
        of: Option<(WorkflowId, String)>,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        self.kept_signal_rows(of, limit).await
    }

    async fn waiting_for_signal(
        &self,
        filter: TaskFilter,
        name: Option<String>,
    ) -> Result<Vec<Task>, StoreError> {
        self.waiting_rows(filter, name).await
    }

    async fn write_limit(&self, write: crate::LimitWrite) -> Result<bool, StoreError> {
        self.write_limit_row(write).await
    }

    async fn limits(&self, now: Timestamp) -> Result<Vec<crate::LimitRecord>, StoreError> {
        self.limit_rows(now).await
    }

    async fn flow_hold(
        &self,
        task: TaskId,
        now: Timestamp,
    ) -> Result<Option<crate::FlowHold>, StoreError> {
        self.flow_hold_of(task, now).await
    }

    async fn concurrency_held(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self
            .query(
                "SELECT key, held FROM concurrency_held WHERE held <> 0 ORDER BY key LIMIT $1",
                &[&(PAGE_ROWS_MAX as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((get(r, 0)?, get::<i64>(r, 1)?.max(0) as u64)))
            .collect()
    }

    async fn write_schedule(&self, write: ScheduleWrite) -> Result<bool, StoreError> {
        self.write_schedule_row(write).await
    }

    async fn schedule(&self, name: String) -> Result<Option<ScheduleRecord>, StoreError> {
        self.schedule_row(name).await
    }

    async fn schedules(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.schedule_rows(after, limit).await
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.due_schedule_rows(now, limit).await
    }

    async fn write_trigger(&self, write: TriggerWrite) -> Result<bool, StoreError> {
        self.write_trigger_row(write).await
    }

    async fn trigger(&self, name: String) -> Result<Option<TriggerRecord>, StoreError> {
        self.trigger_row(name).await
    }

    async fn triggers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<TriggerRecord>, StoreError> {
        self.trigger_rows(after, limit).await
    }

    async fn control(&self, write: ControlWrite) -> Result<Vec<Released>, StoreError> {
        self.writes.control(write).await
    }

    async fn workflow_usage(&self, workflow: WorkflowId) -> Result<Usage, StoreError> {
        let rows = self
            .query(
                "SELECT unit, micros FROM workflow_usage WHERE workflow_id = $1",
                &[&workflow.0],
            )
            .await?;
        let pairs = rows
            .iter()
            .map(|r| Ok((get::<String>(r, 0)?, get::<i64>(r, 1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(codec::usage_of(pairs))
    }

    async fn usage_labelled(&self, label: Option<(String, String)>) -> Result<Usage, StoreError> {
        let rows = match &label {
            None => {
                self.query(
                    "SELECT unit, sum(micros)::int8 FROM workflow_usage GROUP BY unit",
                    &[],
                )
                .await?
            }
            Some((key, value)) => {
                self.query(
                    "SELECT u.unit, sum(u.micros)::int8 FROM workflow_labels l
                     JOIN workflow_usage u ON u.workflow_id = l.workflow_id
                     WHERE l.key = $1 AND l.value = $2 GROUP BY u.unit",
                    &[key, value],
                )
                .await?
            }
        };
        let pairs = rows
            .iter()
            .map(|r| Ok((get::<String>(r, 0)?, get::<i64>(r, 1)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(codec::usage_of(pairs))
    }

    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = filter.limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let (sql, values) = audit_query(&filter, limit, |n| format!("${n}"));
        let params: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|v| match v {
                AuditParam::Text(t) => t as &(dyn ToSql + Sync),
                AuditParam::Workflow(w) => w,
                AuditParam::Int(i) => i,
            })
            .collect();
        let rows = self.query(&sql, &params).await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: get(row, 0)?,
                    at: Timestamp(get::<i64>(row, 1)? as u64),
                    actor: get(row, 2)?,
                    action: get(row, 3)?,
                    workflow: get::<Option<Uuid>>(row, 4)?.map(WorkflowId),
                    task: get::<Option<Uuid>>(row, 5)?.map(TaskId),
                    reason: get(row, 6)?,
                    detail: get(row, 7)?,
                })
            })
            .collect()
    }

    async fn gc_candidates(&self, scan: GcScan) -> Result<GcPage, StoreError> {
        self.gc_candidate_rows(scan).await
    }

    async fn gc_marked(&self, limit: usize) -> Result<Vec<WorkflowId>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let rows = self
            .query(
                "SELECT id FROM workflows WHERE deleting IS NOT NULL
                 ORDER BY deleting, id LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.iter().map(|r| get(r, 0).map(WorkflowId)).collect()
    }

    async fn gc_workflows(&self, batch: GcBatch) -> Result<GcDeleted, StoreError> {
        self.gc_batch(batch).await
    }

    async fn gc_preview(&self, workflows: Vec<WorkflowId>) -> Result<GcPreview, StoreError> {
        self.gc_preview_rows(workflows).await
    }

    async fn artifact_refs(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<ArtifactRefs>, StoreError> {
        self.artifact_ref_rows(artifacts).await
    }

    async fn gc_prune(&self, prune: GcPrune, dry_run: bool) -> Result<GcPruned, StoreError> {
        self.gc_prune_rows(prune, dry_run).await
    }

    async fn fair_clock(&self) -> Result<i64, StoreError> {
        let rows = self
            .query("SELECT coalesce(max(pass), 0)::int8 FROM fair_clock", &[])
            .await?;
        get(&rows[0], 0)
    }

    async fn reclaim_space(&self, _pages_max: u64) -> Result<u64, StoreError> {
        // Autovacuum marks dead rows' space free for new rows; nothing to do here.
        Ok(0)
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        let rows = self
            .query(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                &[],
            )
            .await?;
        Ok(get::<i64>(&rows[0], 0)?.max(0) as u64)
    }
}
