//! The [`Store`] trait for [`SqliteStore`]: reads on the read connections; writes queued for
//! the writer thread.

use std::future::Future;

use baton_core::Usage;
use std::sync::Arc;

use baton_core::{
    AgentId, ArtifactRef, HistoryEntry, Labels, StateKind, Task, TaskId, TaskKey, TaskSpec,
    Timestamp, WorkflowId,
};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::commands::{
    load_artifact, load_task, schedule_row, signal_row, trigger_row, CLAIM_SQL, SCHEDULE_COLUMNS,
    SIGNAL_COLUMNS,
};
use super::error::db;
use super::open::SqliteStore;
use crate::artifact::{io_error, CHUNKS_AHEAD_MAX};
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
    ARTIFACT_CHUNK_BYTES, HISTORY_TASKS_PER_PAGE_MAX, PAGE_ROWS_MAX,
};

/// The columns [`workflow_row`] reads, from `workflows` (qualified: a label query joins
/// `workflow_labels`); the labels gathered into a JSON object.
const WORKFLOW_COLUMNS: &str = "workflows.id, workflows.name, workflows.idempotency_key,
    workflows.created_at, workflows.outputs,
    (SELECT json_group_object(wl.key, wl.value) FROM workflow_labels wl
     WHERE wl.workflow_id = workflows.id),
    workflows.paused, workflows.budgets";

/// A workflow from a row of [`WORKFLOW_COLUMNS`].
fn workflow_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WorkflowRecord> {
    let labels: Option<String> = r.get(5)?;
    let labels = match labels {
        None => Labels::new(),
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
        })?,
    };
    Ok(WorkflowRecord {
        id: WorkflowId(r.get(0)?),
        name: r.get(1)?,
        idempotency_key: r.get(2)?,
        created_at: Timestamp(r.get::<_, i64>(3)? as u64),
        outputs: r.get(4)?,
        labels,
        paused: codec::decode_pause(r.get(6)?),
        budgets: codec::decode_budgets(r.get(7)?),
    })
}

/// How a task is decoded from its `snapshot` and `spec` columns.
type Decode = fn(TaskId, &str, &str) -> Result<Task, StoreError>;

fn load_tasks(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
    decode: Decode,
) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let rows = stmt
        .query_map(args, |r| {
            Ok((
                TaskId(r.get(0)?),
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, snap, spec) = row.map_err(db)?;
        out.push(decode(id, &snap, &spec)?);
    }
    Ok(out)
}

/// History entries with `seq > after`. The `submitted` entry's spec is `spec` when given (the
/// task's own, already read); otherwise it is read from `task_specs`.
fn read_history(
    conn: &Connection,
    id: TaskId,
    after: u64,
    limit: usize,
    spec: Option<&Arc<TaskSpec>>,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let limit = limit.min(PAGE_ROWS_MAX) as i64;
    let sql = if spec.is_some() {
        "SELECT h.seq, h.at, h.event, h.payload, NULL FROM history h
         WHERE h.task_id = ?1 AND h.seq > ?2 ORDER BY h.seq LIMIT ?3"
    } else {
        "SELECT h.seq, h.at, h.event, h.payload, s.spec FROM history h
         LEFT JOIN task_specs s ON h.event = 'submitted' AND s.task_id = h.task_id
         WHERE h.task_id = ?1 AND h.seq > ?2 ORDER BY h.seq LIMIT ?3"
    };
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = stmt
        .query(params![id.0, after.min(i64::MAX as u64) as i64, limit])
        .map_err(db)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db)? {
        let text = |i: usize| -> Result<Option<&str>, StoreError> {
            r.get_ref(i)
                .and_then(|v| v.as_str_or_null().map_err(Into::into))
                .map_err(db)
        };
        let seq_at = (r.get(0).map_err(db)?, r.get(1).map_err(db)?);
        let (Some(event), Some(payload)) = (text(2)?, text(3)?) else {
            return Err(StoreError::Corrupt {
                task: id,
                detail: format!("history entry {} has no event or payload", seq_at.0),
            });
        };
        let entry = codec::decode_history_entry(id, seq_at, event, payload, || match spec {
            Some(spec) => Ok(Arc::clone(spec)),
            None => codec::decode_spec(id, text(4)?),
        })?;
        out.push(entry);
    }
    Ok(out)
}

/// A page of tasks, each decoded with `decode`.
fn list_tasks(c: &Connection, filter: TaskFilter, decode: Decode) -> Result<Vec<Task>, StoreError> {
    let limit = filter.limit.clamp(1, PAGE_ROWS_MAX) as i64;
    let after = filter.after.map(|t| t.0).unwrap_or(Uuid::nil());
    let from = |tasks: &str| {
        format!(
            "SELECT t.id, t.snapshot, s.spec FROM {tasks} JOIN task_specs s ON s.task_id = t.id"
        )
    };
    let select = from("tasks t");
    match (filter.workflow, filter.state) {
        (Some(wf), Some(st)) => {
            let index = by_workflow_or_state(c, wf, st)?;
            let select = from(&format!("tasks t INDEXED BY {index}"));
            load_tasks(
                c,
                &format!("{select} WHERE t.workflow_id = ?1 AND t.state = ?2 AND t.id > ?3 ORDER BY t.id LIMIT ?4"),
                &[&wf.0, &st.as_str(), &after, &limit],
                decode,
            )
        }
        (Some(wf), None) => load_tasks(
            c,
            &format!("{select} WHERE t.workflow_id = ?1 AND t.id > ?2 ORDER BY t.id LIMIT ?3"),
            &[&wf.0, &after, &limit],
            decode,
        ),
        (None, Some(st)) => load_tasks(
            c,
            &format!("{select} WHERE t.state = ?1 AND t.id > ?2 ORDER BY t.id LIMIT ?3"),
            &[&st.as_str(), &after, &limit],
            decode,
        ),
        (None, None) => load_tasks(
            c,
            &format!("{select} WHERE t.id > ?1 ORDER BY t.id LIMIT ?2"),
            &[&after, &limit],
            decode,
        ),
    }
}

/// The index a page of a workflow's tasks in one state reads, in id order, keeping the rows
/// that match: the workflow's tasks (`tasks_by_workflow`) or the state's (`tasks_by_state`),
/// whichever holds fewer rows, so that a page never reads more than the smaller of the two.
fn by_workflow_or_state(
    c: &Connection,
    workflow: WorkflowId,
    state: StateKind,
) -> Result<&'static str, StoreError> {
    let (in_workflow, in_state): (i64, i64) = c
        .prepare_cached(
            "SELECT (SELECT coalesce(sum(n), 0) FROM workflow_counts WHERE workflow_id = ?1),
                    (SELECT coalesce(sum(n), 0) FROM state_counts WHERE state = ?2)",
        )
        .and_then(|mut s| {
            s.query_row(params![workflow.0, state.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .map_err(db)?;
    Ok(if in_state < in_workflow {
        "tasks_by_state"
    } else {
        "tasks_by_workflow"
    })
}

/// The columns [`agent_row`] reads.
const AGENT_COLUMNS: &str =
    "id, name, capabilities, concurrency, registered_at, last_seen, registered_by";

type AgentRow = (Uuid, String, String, u32, i64, i64, String);

fn agent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn decode_agent(row: AgentRow) -> Result<AgentRecord, StoreError> {
    let (id, name, caps, concurrency, registered, seen, registered_by) = row;
    Ok(AgentRecord {
        id: AgentId(id),
        name,
        capabilities: serde_json::from_str(&caps)
            .map_err(|e| StoreError::Backend(format!("agent {id} capabilities: {e}")))?,
        concurrency,
        registered_at: Timestamp(registered as u64),
        last_seen: Timestamp(seen as u64),
        registered_by,
    })
}

/// Decodes every agent row `stmt` answers for `params`.
fn agent_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<AgentRecord>, StoreError> {
    let rows = stmt.query_map(params, agent_row).map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode_agent(row.map_err(db)?)?);
    }
    Ok(out)
}

const TIMERS_SQL: &str = "SELECT t.id, t.snapshot, s.spec FROM tasks t
    JOIN task_specs s ON s.task_id = t.id
    WHERE t.timer_at IS NOT NULL AND t.timer_at <= ?1 AND (t.timer_at, t.id) > (?2, ?3)
    ORDER BY t.timer_at, t.id LIMIT ?4";
const DEPENDENTS_SQL: &str = "SELECT dependent FROM edges WHERE dependency = ?1 ORDER BY dependent";
/// Named index: without statistics SQLite prefers `tasks_by_state`, which reads every blocked
/// task to find the few whose count reached zero.
const RELEASED_SQL: &str = "SELECT id FROM tasks INDEXED BY tasks_released
    WHERE state = 'blocked' AND deps_open = 0 AND timer_at IS NULL ORDER BY id LIMIT ?1";
/// The pending tasks waiting for a signal: the predicate of the indexes `tasks_waiting` and
/// `tasks_waiting_by_workflow` (migration 013) term for term, which SQLite needs to use them.
const WAITING: &str = "t.state = 'pending' AND t.ready_at IS NOT NULL \
                       AND t.capset >= '!signal:' AND t.capset < '!signal;'";
const COUNTS_SQL: &str = "SELECT state, n FROM state_counts";
/// Whether a task of the workflow has not ended: a lookup per open state in
/// `workflow_counts`.
const WORKFLOW_OPEN_SQL: &str =
    "SELECT EXISTS (SELECT 1 FROM workflow_counts WHERE workflow_id = ?1
     AND state IN ('blocked', 'pending', 'assigned', 'executing') AND n > 0)";

impl Store for SqliteStore {
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
        self.read_point(move |c| load_task(c, id)).await
    }

    async fn task_by_key(
        &self,
        workflow: WorkflowId,
        key: TaskKey,
    ) -> Result<Option<Task>, StoreError> {
        self.read_point(move |c| {
            let id: Option<Uuid> = c
                .prepare_cached("SELECT id FROM tasks WHERE workflow_id = ?1 AND key = ?2")
                .and_then(|mut s| {
                    s.query_row(params![workflow.0, key.0], |r| r.get(0))
                        .optional()
                })
                .map_err(db)?;
            match id {
                Some(id) => load_task(c, TaskId(id)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn history(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.read(move |c| read_history(c, id, after, limit, None))
            .await
    }

    async fn task_for_view(
        &self,
        id: TaskId,
        history_after: u64,
        history_max: usize,
    ) -> Result<Option<TaskForView>, StoreError> {
        self.read(move |c| {
            let row: Option<(String, String)> = c
                .prepare_cached(
                    "SELECT t.snapshot, s.spec FROM tasks t JOIN task_specs s ON s.task_id = t.id
                     WHERE t.id = ?1",
                )
                .and_then(|mut s| {
                    s.query_row([id.0], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(db)?;
            let Some((snapshot, spec)) = row else {
                return Ok(None);
            };
            let (task, spec_json) = codec::decode_task_without_input(id, &snapshot, spec)?;
            let history = read_history(c, id, history_after, history_max, Some(&task.spec))?;
            Ok(Some(TaskForView {
                task,
                spec_json,
                history,
            }))
        })
        .await
    }

    async fn tasks(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.read(move |c| list_tasks(c, filter, codec::decode_task))
            .await
    }

    async fn tasks_for_view(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.read(move |c| list_tasks(c, filter, codec::decode_task_sans_input))
            .await
    }

    async fn counts(&self, workflow: Option<WorkflowId>) -> Result<StateCounts, StoreError> {
        self.read(move |c| {
            let mut counts = StateCounts::default();
            let mut put = |state: String, n: i64| -> Result<(), StoreError> {
                let kind = StateKind::parse(&state)
                    .ok_or_else(|| StoreError::Backend(format!("unknown state {state:?} in counts")))?;
                counts.0[kind.index()] = n.max(0) as u64;
                Ok(())
            };
            match workflow {
                None => {
                    let mut stmt = c.prepare_cached(COUNTS_SQL).map_err(db)?;
                    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db)?;
                    for row in rows {
                        let (s, n) = row.map_err(db)?;
                        put(s, n)?;
                    }
                }
                Some(wf) => {
                    let mut stmt = c
                        .prepare_cached("SELECT state, n FROM workflow_counts WHERE workflow_id = ?1")
                        .map_err(db)?;
                    let rows = stmt.query_map([wf.0], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db)?;
                    for row in rows {
                        let (s, n) = row.map_err(db)?;
                        put(s, n)?;
                    }
                }
            }
            // Paused tasks are few and indexed apart (`tasks_paused`): counted, not kept.
            let paused: i64 = match workflow {
                None => c.prepare_cached("SELECT count(*) FROM tasks INDEXED BY tasks_paused WHERE paused = 1")
                    .and_then(|mut s| s.query_row([], |r| r.get(0))),
                Some(wf) => c.prepare_cached("SELECT count(*) FROM tasks INDEXED BY tasks_paused WHERE workflow_id = ?1 AND paused = 1")
                    .and_then(|mut s| s.query_row([wf.0], |r| r.get(0))),
            }
            .map_err(db)?;
            counts.1 = paused.max(0) as u64;
            // Failed with a retry scheduled: a timer, indexed apart (`tasks_retrying`).
            let retrying: i64 = match workflow {
                None => c.prepare_cached("SELECT count(*) FROM tasks INDEXED BY tasks_retrying WHERE state = 'failed' AND timer_at IS NOT NULL")
                    .and_then(|mut s| s.query_row([], |r| r.get(0))),
                Some(wf) => c.prepare_cached("SELECT count(*) FROM tasks INDEXED BY tasks_retrying WHERE workflow_id = ?1 AND state = 'failed' AND timer_at IS NOT NULL")
                    .and_then(|mut s| s.query_row([wf.0], |r| r.get(0))),
            }
            .map_err(db)?;
            counts.2 = retrying.max(0) as u64;
            Ok(counts)
        })
        .await
    }

    async fn workflow_open(&self, workflow: WorkflowId) -> Result<bool, StoreError> {
        self.read_point(move |c| {
            c.prepare_cached(WORKFLOW_OPEN_SQL)
                .and_then(|mut s| s.query_row([workflow.0], |r| r.get(0)))
                .map_err(db)
        })
        .await
    }

    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowRecord>, StoreError> {
        self.read_point(move |c| {
            c.prepare_cached(&format!(
                "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflows.id = ?1
                 AND workflows.deleting IS NULL"
            ))
            .and_then(|mut s| s.query_row([id.0], workflow_row).optional())
            .map_err(db)
        })
        .await
    }

    async fn workflows(
        &self,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let before = before.map(|w| w.0).unwrap_or(Uuid::max());
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflows.id < ?1 AND workflows.deleting IS NULL
                     ORDER BY workflows.id DESC LIMIT ?2"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![before, limit], workflow_row)
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)
        })
        .await
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
        let (key, value) = (key.clone(), value.clone());
        let all = serde_json::to_string(labels).expect("labels serialise");
        let n = labels.len() as i64;
        self.read(move |c| {
            // The first label walks its index range newest first; the others are looked up
            // per workflow (at most 16 rows by its primary key).
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflow_labels l
                     JOIN workflows ON workflows.id = l.workflow_id AND workflows.deleting IS NULL
                     WHERE l.key = ?1 AND l.value = ?2 AND l.workflow_id < ?3
                       AND (SELECT count(*) FROM json_each(?4) j
                            JOIN workflow_labels m ON m.workflow_id = l.workflow_id
                                 AND m.key = j.key AND m.value = j.value) = ?5
                     ORDER BY l.workflow_id DESC LIMIT ?6"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![key, value, before, all, n, limit], workflow_row)
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)
        })
        .await
    }

    async fn ids_ending(&self, suffix: IdSuffix, limit: usize) -> Result<IdMatches, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        // The ids are 16-byte blobs; `hex` spells them in upper case.
        let pattern = format!("%{}", suffix.as_str().to_ascii_uppercase());
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, workflow_id, key FROM tasks
                     WHERE hex(id) LIKE ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(db)?;
            let tasks = stmt
                .query_map(params![pattern, limit], |r| {
                    Ok(TaskIdMatch {
                        id: TaskId(r.get(0)?),
                        workflow: WorkflowId(r.get(1)?),
                        key: TaskKey(r.get(2)?),
                    })
                })
                .map_err(db)?
                .collect::<rusqlite::Result<_>>()
                .map_err(db)?;
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE hex(workflows.id) LIKE ?1
                     ORDER BY workflows.id LIMIT ?2"
                ))
                .map_err(db)?;
            let workflows = stmt
                .query_map(params![pattern, limit], workflow_row)
                .map_err(db)?
                .collect::<rusqlite::Result<_>>()
                .map_err(db)?;
            Ok(IdMatches { tasks, workflows })
        })
        .await
    }

    async fn workflow_history(
        &self,
        workflow: WorkflowId,
        after: Option<TaskId>,
        tasks_max: usize,
    ) -> Result<Vec<HistoryMark>, StoreError> {
        let limit = tasks_max.clamp(1, HISTORY_TASKS_PER_PAGE_MAX) as i64;
        let after = after.map(|t| t.0).unwrap_or(Uuid::nil());
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT h.task_id, h.seq, h.at, h.event FROM history h
                     WHERE h.task_id IN (SELECT id FROM tasks WHERE workflow_id = ?1 AND id > ?2
                                         ORDER BY id LIMIT ?3)
                       AND h.event <> 'heartbeat'
                     ORDER BY h.task_id, h.seq",
                )
                .map_err(db)?;
            let mut rows = stmt.query(params![workflow.0, after, limit]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(db)? {
                let task = TaskId(r.get(0).map_err(db)?);
                let seq: i64 = r.get(1).map_err(db)?;
                let at: i64 = r.get(2).map_err(db)?;
                let name: String = r.get(3).map_err(db)?;
                out.push(codec::history_mark(task, seq, at, &name)?);
            }
            Ok(out)
        })
        .await
    }

    async fn subtasks_added(
        &self,
        workflow: WorkflowId,
    ) -> Result<Vec<(TaskId, Vec<TaskKey>)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT h.task_id, h.seq, h.payload FROM tasks t
                     JOIN history h ON h.task_id = t.id
                     WHERE t.workflow_id = ?1 AND h.event = 'subtasks_added'
                     ORDER BY h.task_id, h.seq",
                )
                .map_err(db)?;
            let mut rows = stmt.query([workflow.0]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(db)? {
                let task = TaskId(r.get(0).map_err(db)?);
                let seq: i64 = r.get(1).map_err(db)?;
                let payload: String = r.get(2).map_err(db)?;
                out.push((task, codec::subtask_keys(task, seq, &payload)?));
            }
            Ok(out)
        })
        .await
    }

    async fn workflow_edges(&self, workflow: WorkflowId) -> Result<Vec<Edge>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT e.dependency, e.dependent FROM tasks t
                     JOIN edges e ON e.dependent = t.id WHERE t.workflow_id = ?1",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([workflow.0], |r| {
                    Ok(Edge {
                        dependency: TaskId(r.get(0)?),
                        dependent: TaskId(r.get(1)?),
                    })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)
        })
        .await
    }

    async fn dependencies(&self, id: TaskId) -> Result<Vec<Dependency>, StoreError> {
        self.read(move |c| super::commands::dependencies(c, id))
            .await
    }

    async fn dependents(&self, id: TaskId) -> Result<Vec<TaskId>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(DEPENDENTS_SQL).map_err(db)?;
            let rows = stmt
                .query_map([id.0], |r| r.get::<_, Uuid>(0))
                .map_err(db)?;
            rows.map(|r| r.map(TaskId).map_err(db)).collect()
        })
        .await
    }

    async fn due_timers(
        &self,
        now: Timestamp,
        after: Option<(Timestamp, TaskId)>,
        limit: usize,
    ) -> Result<Vec<Task>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        let (at, id) = after.map_or((-1, Uuid::nil()), |(at, id)| (ts(at), id.0));
        self.read(move |c| {
            load_tasks(
                c,
                TIMERS_SQL,
                params![ts(now), at, id, limit],
                codec::decode_task,
            )
        })
        .await
    }

    async fn next_timer(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read_point(|c| {
            c.query_row(
                "SELECT min(timer_at) FROM tasks WHERE timer_at IS NOT NULL",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|t| t.map(|t| Timestamp(t as u64)))
            .map_err(db)
        })
        .await
    }

    async fn released_blocked(&self, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(RELEASED_SQL).map_err(db)?;
            let rows = stmt
                .query_map([limit], |r| r.get::<_, Uuid>(0))
                .map_err(db)?;
            rows.map(|r| r.map(TaskId).map_err(db)).collect()
        })
        .await
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT id, task_id, effect FROM outbox ORDER BY id LIMIT ?1")
                .map_err(db)?;
            let rows = stmt
                .query_map([limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Uuid>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, task, effect) = row.map_err(db)?;
                out.push(OutboxItem {
                    id,
                    task: TaskId(task),
                    effect: serde_json::from_str(&effect).map_err(|e| StoreError::Corrupt {
                        task: TaskId(task),
                        detail: format!("outbox item {id}: {e}"),
                    })?,
                });
            }
            Ok(out)
        })
        .await
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
        self.read_point(move |c| {
            let row = c
                .prepare_cached(&format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?1"))
                .and_then(|mut s| s.query_row([id.0], agent_row).optional())
                .map_err(db)?;
            row.map(decode_agent).transpose()
        })
        .await
    }

    async fn register_agent(
        &self,
        agent: AgentRecord,
        max_per_registrar: u32,
    ) -> Result<(), StoreError> {
        self.writes.register_agent(agent, max_per_registrar).await
    }

    async fn agents(
        &self,
        after: Option<AgentId>,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let after = after.map(|a| a.0).unwrap_or(Uuid::nil());
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents WHERE id > ?1 ORDER BY id LIMIT ?2"
                ))
                .map_err(db)?;
            agent_rows(&mut stmt, params![after, limit])
        })
        .await
    }

    async fn silent_lease_holders(
        &self,
        seen_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {AGENT_COLUMNS} FROM agents
                     WHERE id IN (SELECT DISTINCT lease_agent FROM tasks INDEXED BY tasks_by_agent
                                  WHERE lease_agent IS NOT NULL)
                       AND last_seen < ?1
                     ORDER BY id LIMIT ?2"
                ))
                .map_err(db)?;
            agent_rows(&mut stmt, params![ts(seen_before), limit])
        })
        .await
    }

    async fn leased_to(&self, agent: AgentId) -> Result<Vec<TaskId>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT id FROM tasks WHERE lease_agent = ?1 ORDER BY id")
                .map_err(db)?;
            let rows = stmt
                .query_map([agent.0], |r| r.get::<_, Uuid>(0))
                .map_err(db)?;
            rows.map(|r| r.map(TaskId).map_err(db)).collect()
        })
        .await
    }

    async fn query_plan(&self, path: HotPath) -> Result<String, StoreError> {
        self.read(move |c| {
            let (sql, args): (&str, Vec<Box<dyn rusqlite::ToSql>>) = match path {
                HotPath::Claim => (CLAIM_SQL, vec![Box::new("write"), Box::new(10)]),
                HotPath::DueTimers => (
                    TIMERS_SQL,
                    vec![
                        Box::new(0i64),
                        Box::new(-1i64),
                        Box::new(Uuid::nil()),
                        Box::new(10),
                    ],
                ),
                HotPath::ReleaseDependents => (DEPENDENTS_SQL, vec![Box::new(Uuid::nil())]),
                HotPath::ReleasedBlocked => (RELEASED_SQL, vec![Box::new(10)]),
                HotPath::Counts => (COUNTS_SQL, vec![]),
                HotPath::WorkflowOpen => (WORKFLOW_OPEN_SQL, vec![Box::new(Uuid::nil())]),
            };
            let mut stmt = c
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .map_err(db)?;
            let params: Vec<&dyn rusqlite::ToSql> = args.iter().map(|b| b.as_ref()).collect();
            let rows = stmt
                .query_map(params.as_slice(), |r| r.get::<_, String>(3))
                .map_err(db)?;
            let lines: Vec<String> = rows.collect::<rusqlite::Result<_>>().map_err(db)?;
            Ok(lines.join("\n"))
        })
        .await
    }

    fn stats(&self) -> CommitStats {
        self.stats.snapshot()
    }

    /// One process owns an SQLite store: nobody to hear from.
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }

    async fn notify(&self, _payload: String) -> Result<(), StoreError> {
        Ok(())
    }

    async fn try_lead(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn stage_artifact(&self) -> Result<ArtifactWriter, StoreError> {
        ArtifactWriter::create(&self.artifacts.staging())
    }

    async fn put_artifact(
        &self,
        staged: StagedArtifact,
        content_type: Option<String>,
        now: Timestamp,
    ) -> Result<PutArtifact, StoreError> {
        let files = Arc::clone(&self.artifacts);
        let _locked = files.lock.lock().await;
        let meta = ArtifactMeta {
            artifact: staged.artifact,
            size: staged.size,
            content_type,
            uploaded_at: now,
        };
        if self.artifact(staged.artifact).await?.is_none() {
            // Crash-safe: the staged file was fsynced; the rename is atomic and made durable
            // before the row that makes the artifact visible is committed. A crash between
            // the two leaves a file no row names, which the next upload takes over.
            let target = files.path(staged.artifact);
            let from = staged.path.clone();
            tokio::task::spawn_blocking(move || {
                let dir = target.parent().expect("an artifact's path has a directory");
                std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
                std::fs::rename(&from, &target).map_err(|e| io_error("move", &from, e))?;
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_error("sync", dir, e))
            })
            .await
            .map_err(|_| StoreError::Closed)??;
        }
        drop(staged);
        self.writes.put_artifact(meta).await
    }

    async fn artifact(&self, artifact: ArtifactRef) -> Result<Option<ArtifactMeta>, StoreError> {
        self.read_point(move |conn| load_artifact(conn, artifact))
            .await
    }

    async fn read_artifact(
        &self,
        artifact: ArtifactRef,
    ) -> Result<Option<(ArtifactMeta, ArtifactChunks)>, StoreError> {
        let Some(meta) = self.artifact(artifact).await? else {
            return Ok(None);
        };
        let path = self.artifacts.path(artifact);
        let opened = tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
            Ok(f) => Ok(Some(f)),
            // Swept between the row and the file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("open", &path, e)),
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        let Some(mut file) = opened else {
            return Ok(None);
        };
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD_MAX);
        let path = self.artifacts.path(artifact);
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            loop {
                let mut chunk = vec![0u8; ARTIFACT_CHUNK_BYTES];
                let mut filled = 0;
                while filled < chunk.len() {
                    match file.read(&mut chunk[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.blocking_send(Err(io_error("read", &path, e)));
                            return;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                chunk.truncate(filled);
                // The reader went away: stop reading.
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
        });
        Ok(Some((meta, rx)))
    }

    async fn missing_artifacts(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT 1 FROM artifacts WHERE sha256 = ?1")
                .map_err(db)?;
            let mut missing = Vec::new();
            for a in artifacts {
                if !stmt.exists([a.hex()]).map_err(db)? {
                    missing.push(a);
                }
            }
            Ok(missing)
        })
        .await
    }

    async fn sweep_artifacts(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        let files = Arc::clone(&self.artifacts);
        let _locked = files.lock.lock().await;
        let swept = self.writes.sweep_artifacts(uploaded_before, limit).await?;
        let paths: Vec<_> = swept.iter().map(|a| files.path(*a)).collect();
        // Rows first, then files: a crash between leaves files no row names, never a row
        // without its file.
        tokio::task::spawn_blocking(move || {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        })
        .await
        .map_err(|_| StoreError::Closed)?;
        Ok(swept)
    }

    async fn put_signal(&self, signal: NewSignal) -> Result<PutSignal, StoreError> {
        self.writes.put_signal(signal).await
    }

    async fn signals(
        &self,
        workflow: WorkflowId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {SIGNAL_COLUMNS} FROM signals WHERE workflow_id = ?1 AND id > ?2
                     ORDER BY id LIMIT ?3"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![workflow.0, after as i64, limit], signal_row)
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)
        })
        .await
    }

    async fn kept_signals(
        &self,
        of: Option<(WorkflowId, String)>,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let kept = |sql: &str, args: &[&dyn rusqlite::ToSql]| {
                let mut stmt = c.prepare_cached(sql).map_err(db)?;
                let rows = stmt.query_map(args, signal_row).map_err(db)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            };
            match of {
                Some((wf, name)) => kept(
                    &format!(
                        "SELECT {SIGNAL_COLUMNS} FROM signals INDEXED BY signals_kept
                         WHERE workflow_id = ?1 AND name = ?2 AND delivered_at IS NULL
                         ORDER BY id LIMIT ?3"
                    ),
                    &[&wf.0, &name, &limit],
                ),
                None => kept(
                    &format!(
                        "SELECT {SIGNAL_COLUMNS} FROM signals INDEXED BY signals_kept
                         WHERE delivered_at IS NULL ORDER BY id LIMIT ?1"
                    ),
                    &[&limit],
                ),
            }
        })
        .await
    }

    async fn waiting_for_signal(
        &self,
        filter: TaskFilter,
        name: Option<String>,
    ) -> Result<Vec<Task>, StoreError> {
        let limit = filter.limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let after = filter.after.map(|t| t.0).unwrap_or(Uuid::nil());
        self.read(move |c| {
            // Named: without statistics, SQLite prefers `tasks_by_state` (every pending task).
            let select = |index: &str| {
                format!(
                    "SELECT t.id, t.snapshot, s.spec FROM tasks t INDEXED BY {index}
                     JOIN task_specs s ON s.task_id = t.id"
                )
            };
            let (by_workflow, all) = (
                select("tasks_waiting_by_workflow"),
                select("tasks_waiting"),
            );
            match (filter.workflow, name) {
                (Some(wf), Some(name)) => load_tasks(
                    c,
                    &format!("{by_workflow} WHERE t.workflow_id = ?1 AND {WAITING} AND t.capset = ?2 AND t.id > ?3 ORDER BY t.id LIMIT ?4"),
                    &[&wf.0, &format!("{}{name}", codec::SIGNAL_CAPSET), &after, &limit],
                    codec::decode_task,
                ),
                (Some(wf), None) => load_tasks(
                    c,
                    &format!("{by_workflow} WHERE t.workflow_id = ?1 AND {WAITING} AND t.id > ?2 ORDER BY t.id LIMIT ?3"),
                    &[&wf.0, &after, &limit],
                    codec::decode_task,
                ),
                (None, _) => load_tasks(
                    c,
                    &format!("{all} WHERE {WAITING} AND t.id > ?1 ORDER BY t.id LIMIT ?2"),
                    &[&after, &limit],
                    codec::decode_task,
                ),
            }
        })
        .await
    }

    async fn write_limit(&self, write: crate::LimitWrite) -> Result<bool, StoreError> {
        self.writes.write_limit(write).await
    }

    async fn limits(&self, now: Timestamp) -> Result<Vec<crate::LimitRecord>, StoreError> {
        let rows = self.read(super::flow::limits).await?;
        Ok(rows
            .into_iter()
            .map(|(key, bucket, parked, updated)| {
                crate::flow::limit_record(key, bucket, parked, updated, now)
            })
            .collect())
    }

    async fn flow_hold(
        &self,
        task: TaskId,
        now: Timestamp,
    ) -> Result<Option<crate::FlowHold>, StoreError> {
        self.read(move |c| {
            let Some(flow) = super::flow::task_flow(c, task)? else {
                return Ok(None);
            };
            let mut states = crate::flow::KeyStates::default();
            super::flow::load_keys(c, &mut states, &flow)?;
            Ok(states.hold(&flow, now))
        })
        .await
    }

    async fn concurrency_held(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT key, held FROM concurrency_held WHERE held <> 0 ORDER BY key LIMIT ?1",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([PAGE_ROWS_MAX as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
        })
        .await
    }

    async fn write_schedule(&self, write: ScheduleWrite) -> Result<bool, StoreError> {
        self.writes.write_schedule(write).await
    }

    async fn schedule(&self, name: String) -> Result<Option<ScheduleRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?1"
            ))
            .and_then(|mut s| s.query_row([name], schedule_row).optional())
            .map_err(db)
        })
        .await
    }

    async fn schedules(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        // Every name sorts after the empty one: names have at least one character.
        let after = after.unwrap_or_default();
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name > ?1 ORDER BY name LIMIT ?2"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![after, limit], schedule_row)
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)
        })
        .await
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules
                     WHERE paused = 0 AND next_fire_at <= ?1 ORDER BY next_fire_at LIMIT ?2"
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map(params![ts(now), limit], schedule_row)
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)
        })
        .await
    }

    async fn write_trigger(&self, write: TriggerWrite) -> Result<bool, StoreError> {
        self.writes.write_trigger(write).await
    }

    async fn trigger(&self, name: String) -> Result<Option<TriggerRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT name, template, created_at, updated_at FROM triggers WHERE name = ?1",
            )
            .and_then(|mut s| s.query_row([name], trigger_row).optional())
            .map_err(db)
        })
        .await
    }

    async fn triggers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<TriggerRecord>, StoreError> {
        let after = after.unwrap_or_default();
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT name, template, created_at, updated_at FROM triggers
                     WHERE name > ?1 ORDER BY name LIMIT ?2",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![after, limit], trigger_row)
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)
        })
        .await
    }

    async fn control(&self, write: ControlWrite) -> Result<Vec<Released>, StoreError> {
        self.writes.control(write).await
    }

    async fn workflow_usage(&self, workflow: WorkflowId) -> Result<Usage, StoreError> {
        self.read_point(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT unit, micros FROM workflow_usage WHERE workflow_id = ?1")
                .map_err(db)?;
            let rows = stmt
                .query_map([workflow.0], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db)?;
            Ok(codec::usage_of(
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)?,
            ))
        })
        .await
    }

    async fn usage_labelled(&self, label: Option<(String, String)>) -> Result<Usage, StoreError> {
        self.read(move |c| {
            let rows = match &label {
                None => c
                    .prepare_cached("SELECT unit, sum(micros) FROM workflow_usage GROUP BY unit")
                    .and_then(|mut s| {
                        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }),
                Some((key, value)) => c
                    .prepare_cached(
                        "SELECT u.unit, sum(u.micros) FROM workflow_labels l
                         JOIN workflow_usage u ON u.workflow_id = l.workflow_id
                         WHERE l.key = ?1 AND l.value = ?2 GROUP BY u.unit",
                    )
                    .and_then(|mut s| {
                        s.query_map([key, value], |r| Ok((r.get(0)?, r.get(1)?)))?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }),
            }
            .map_err(db)?;
            Ok(codec::usage_of(rows))
        })
        .await
    }

    async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = filter.limit.clamp(1, PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let (sql, values) = audit_query(&filter, limit, |n| format!("?{n}"));
            let mut stmt = c.prepare_cached(&sql).map_err(db)?;
            let params: Vec<&dyn rusqlite::ToSql> = values
                .iter()
                .map(|v| match v {
                    AuditParam::Text(t) => t as &dyn rusqlite::ToSql,
                    AuditParam::Workflow(w) => w,
                    AuditParam::Int(i) => i,
                })
                .collect();
            let rows = stmt
                .query_map(params.as_slice(), |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at: Timestamp(r.get::<_, i64>(1)? as u64),
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        workflow: r.get::<_, Option<Uuid>>(4)?.map(WorkflowId),
                        task: r.get::<_, Option<Uuid>>(5)?.map(TaskId),
                        reason: r.get(6)?,
                        detail: r.get(7)?,
                    })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)
        })
        .await
    }

    async fn gc_candidates(&self, scan: GcScan) -> Result<GcPage, StoreError> {
        self.read(move |c| super::retention::gc_candidates(c, &scan))
            .await
    }

    async fn gc_marked(&self, limit: usize) -> Result<Vec<WorkflowId>, StoreError> {
        self.read(move |c| super::retention::gc_marked(c, limit))
            .await
    }

    async fn gc_workflows(&self, batch: GcBatch) -> Result<GcDeleted, StoreError> {
        self.writes.gc_workflows(batch).await
    }

    async fn gc_preview(&self, workflows: Vec<WorkflowId>) -> Result<GcPreview, StoreError> {
        self.read(move |c| super::retention::gc_preview(c, &workflows))
            .await
    }

    async fn artifact_refs(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<ArtifactRefs>, StoreError> {
        self.read(move |c| super::retention::artifact_refs(c, &artifacts))
            .await
    }

    async fn gc_prune(&self, prune: GcPrune, dry_run: bool) -> Result<GcPruned, StoreError> {
        if dry_run {
            self.read(move |c| super::retention::gc_prune_count(c, &prune))
                .await
        } else {
            self.writes.gc_prune(prune).await
        }
    }

    async fn fair_clock(&self) -> Result<i64, StoreError> {
        self.read_point(|c| {
            c.prepare_cached("SELECT coalesce(max(pass), 0) FROM fair_clock")
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(db)
        })
        .await
    }

    async fn reclaim_space(&self, pages_max: u64) -> Result<u64, StoreError> {
        self.writes.reclaim_space(pages_max).await
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.file_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::WAITING;

    /// The indexes' predicate is the queries' (unqualified), and its range the codec's prefix.
    #[test]
    fn the_waiting_indexes_state_the_queries_predicate() {
        let predicate = WAITING
            .replace("t.", "")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let migration = include_str!("013_waiting_index.sql");
        assert_eq!(migration.matches(&predicate).count(), 2, "{predicate}");
        let prefix = crate::codec::SIGNAL_CAPSET;
        assert!(WAITING.contains(&format!(">= '{prefix}'")));
        let end = format!("{};", prefix.trim_end_matches(':'));
        assert!(WAITING.contains(&format!("< '{end}'")));
    }
}
