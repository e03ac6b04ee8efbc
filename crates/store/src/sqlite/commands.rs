//! What each command does in the writer's transaction (each runs in its own savepoint, see
//! `writer.rs`), with the decisions `crate::decide` takes for both backends.

use std::collections::HashSet;

use baton_core::{
    ArtifactRef, Effect, Event, HistoryEntry, StateKind, Task, TaskId, TaskKey, Timestamp,
    WorkflowId,
};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use uuid::Uuid;

use super::counts::Counts;
use super::error::db;
use super::recent::Recent;
use crate::artifact::task_refs;
use crate::codec::{self, ts, HistoryRow, TaskRow};
use crate::decide::{self, Candidate};
use crate::{
    AgentRecord, ArtifactMeta, ClaimRequest, ControlWrite, Dependency, NewSignal, NewTask,
    PutArtifact, PutSignal, Released, ScheduleRecord, ScheduleWrite, SignalRecord, StoreError,
    SubmitBatch, SubmitOutcome, TransitionRecord, TriggerRecord, TriggerWrite, WorkflowRef,
};

/// Marks a signal delivered by the transition that takes it first.
const SIGNAL_DELIVERED_SQL: &str =
    "UPDATE signals SET delivered_at = ?2 WHERE id = ?1 AND delivered_at IS NULL";

/// The columns [`signal_row`] reads.
pub(super) const SIGNAL_COLUMNS: &str =
    "id, workflow_id, name, data, reject, sent_by, idempotency_key, sent_at, delivered_at";

/// A signal from a row of [`SIGNAL_COLUMNS`].
pub(super) fn signal_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SignalRecord> {
    signal_row_at(r, 0)
}

/// Refuses a write touching a workflow that retention is deleting (or has deleted), as one
/// that does not exist: nothing may reopen its tasks while they are deleted.
fn refuse_deleting(
    conn: &Connection,
    workflows: impl Iterator<Item = WorkflowId>,
) -> Result<(), StoreError> {
    let mut seen = std::collections::BTreeSet::new();
    for wf in workflows.filter(|w| seen.insert(*w)) {
        let live: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM workflows WHERE id = ?1 AND deleting IS NULL)",
            )
            .and_then(|mut s| s.query_row([wf.0], |r| r.get(0)))
            .map_err(db)?;
        if !live {
            return Err(StoreError::WorkflowNotFound(wf));
        }
    }
    Ok(())
}

/// Stores a signal, or finds the one its idempotency key stored.
pub(super) fn put_signal(conn: &Connection, s: &NewSignal) -> Result<PutSignal, StoreError> {
    refuse_deleting(conn, std::iter::once(s.workflow))?;
    if let Some(key) = &s.idempotency_key {
        let seen: Option<(String, SignalRecord)> = conn
            .prepare_cached(&format!(
                "SELECT request_hash, {SIGNAL_COLUMNS} FROM signals
                 WHERE workflow_id = ?1 AND name = ?2 AND idempotency_key = ?3"
            ))
            .and_then(|mut st| {
                st.query_row(params![s.workflow.0, s.name, key], |r| {
                    Ok((r.get(0)?, signal_row_at(r, 1)?))
                })
                .optional()
            })
            .map_err(db)?;
        if let Some((hash, signal)) = seen {
            if hash != s.request_hash {
                return Err(StoreError::IdempotencyMismatch { key: key.clone() });
            }
            return Ok(PutSignal {
                signal,
                created: false,
            });
        }
    }
    let data = serde_json::to_string(&s.data).expect("JSON serialises");
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO signals (workflow_id, name, data, reject, sent_by, idempotency_key,
                                  request_hash, sent_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        )
        .and_then(|mut st| {
            st.query_row(
                params![
                    s.workflow.0,
                    s.name,
                    data,
                    s.reject,
                    s.sent_by,
                    s.idempotency_key,
                    s.request_hash,
                    ts(s.sent_at)
                ],
                |r| r.get(0),
            )
        })
        .map_err(db)?;
    Ok(PutSignal {
        signal: SignalRecord {
            id: id as u64,
            workflow: s.workflow,
            name: s.name.clone(),
            data: s.data.clone(),
            reject: s.reject.clone(),
            sent_by: s.sent_by.clone(),
            idempotency_key: s.idempotency_key.clone(),
            sent_at: s.sent_at,
            delivered_at: None,
        },
        created: true,
    })
}

/// A signal from the columns of [`SIGNAL_COLUMNS`] starting at `at`.
fn signal_row_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<SignalRecord> {
    let data: String = r.get(at + 3)?;
    Ok(SignalRecord {
        id: r.get::<_, i64>(at)? as u64,
        workflow: WorkflowId(r.get(at + 1)?),
        name: r.get(at + 2)?,
        data: serde_json::from_str(&data).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                at + 3,
                rusqlite::types::Type::Text,
                Box::new(e),
            )
        })?,
        reject: r.get(at + 4)?,
        sent_by: r.get(at + 5)?,
        idempotency_key: r.get(at + 6)?,
        sent_at: Timestamp(r.get::<_, i64>(at + 7)? as u64),
        delivered_at: r
            .get::<_, Option<i64>>(at + 8)?
            .map(|t| Timestamp(t as u64)),
    })
}

/// A claim's candidates in one capability set, from the `tasks_ready` index, with their
/// versions (a copy [`Recent`] keeps stands for the row only at its own).
pub(super) const CLAIM_SQL: &str = "SELECT priority, turn, id, version FROM tasks
    WHERE state = 'pending' AND ready_at IS NOT NULL AND capset = ?1 ORDER BY priority DESC, turn, id LIMIT ?2";

/// A claim's candidate and the version its row was read at.
struct Versioned(Candidate, u64);

impl AsRef<Candidate> for Versioned {
    fn as_ref(&self) -> &Candidate {
        &self.0
    }
}

/// Creates the workflow (or checks the one it grows), its tasks and edges, then the
/// transitions.
pub(super) fn submit(
    conn: &Connection,
    batch: &SubmitBatch,
    deltas: &mut Counts,
    recent: &mut Recent,
) -> Result<SubmitOutcome, StoreError> {
    let workflow = match &batch.workflow {
        WorkflowRef::New(wf) => {
            if let Some(key) = &wf.idempotency_key {
                let seen: Option<(Uuid, String)> = conn
                    .prepare_cached(
                        "SELECT id, request_hash FROM workflows WHERE idempotency_key = ?1",
                    )
                    .and_then(|mut s| {
                        s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()
                    })
                    .map_err(db)?;
                if let Some((id, hash)) = seen {
                    if hash != wf.request_hash {
                        return Err(StoreError::IdempotencyMismatch { key: key.clone() });
                    }
                    let workflow = WorkflowId(id);
                    return Ok(SubmitOutcome::Existing {
                        workflow,
                        tasks: task_keys(conn, workflow)?,
                    });
                }
            }
            conn.prepare_cached(
                "INSERT INTO workflows (id, name, idempotency_key, request_hash, created_at,
                                        outputs, budgets)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    wf.id.0,
                    wf.name,
                    wf.idempotency_key,
                    wf.request_hash,
                    ts(wf.created_at),
                    wf.outputs,
                    codec::budgets_json(&wf.budgets)
                ])
            })
            .map_err(db)?;
            let mut label = conn
                .prepare_cached(
                    "INSERT INTO workflow_labels (workflow_id, key, value) VALUES (?1, ?2, ?3)",
                )
                .map_err(db)?;
            for (key, value) in &wf.labels {
                label.execute(params![wf.id.0, key, value]).map_err(db)?;
            }
            wf.id
        }
        WorkflowRef::Existing { id, paused } => {
            // A workflow retention is deleting takes no new task: it is gone already.
            let found: Option<bool> = conn
                .prepare_cached(
                    "SELECT paused IS NOT NULL FROM workflows WHERE id = ?1 AND deleting IS NULL",
                )
                .and_then(|mut s| s.query_row([id.0], |r| r.get(0)).optional())
                .map_err(db)?;
            match found {
                None => return Err(StoreError::WorkflowNotFound(*id)),
                Some(now) if now != *paused => return Err(StoreError::WorkflowPauseChanged(*id)),
                Some(_) => {}
            }
            *id
        }
    };
    let turns = super::flow::turns_of(conn, batch.tasks.iter().map(|n| &n.task))?;
    let mut capsets = HashSet::new();
    for new in &batch.tasks {
        let turn = turns.get(&new.task.id).copied();
        insert_task(conn, new, turn, &mut capsets, deltas)?;
        recent.wrote(&new.task);
    }
    let mut add_edge = conn
        .prepare_cached("INSERT INTO edges (dependency, dependent) VALUES (?1, ?2)")
        .map_err(db)?;
    // A dependent that waits for an open dependency must be waiting: one the batch released
    // was decided on a dependency since reopened.
    let mut count_open = conn
        .prepare_cached(
            "UPDATE tasks SET deps_open = deps_open + 1
             WHERE id = ?2 AND (SELECT state FROM tasks WHERE id = ?1) <> 'completed'
             RETURNING state",
        )
        .map_err(db)?;
    for edge in &batch.edges {
        add_edge
            .execute(params![edge.dependency.0, edge.dependent.0])
            .map_err(db)?;
        let state: Option<String> = count_open
            .query_row(params![edge.dependency.0, edge.dependent.0], |r| r.get(0))
            .optional()
            .map_err(db)?;
        if state.is_some_and(|s| s != "blocked" && s != "cancelled") {
            return Err(StoreError::DependencyReopened(edge.dependent));
        }
    }
    for record in &batch.transitions {
        write_transition(conn, record, deltas, recent)?;
    }
    Ok(SubmitOutcome::Created { workflow })
}

fn task_keys(
    conn: &Connection,
    workflow: WorkflowId,
) -> Result<Vec<(TaskKey, TaskId)>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT key, id FROM tasks WHERE workflow_id = ?1 ORDER BY id")
        .map_err(db)?;
    let rows = stmt
        .query_map([workflow.0], |r| {
            Ok((TaskKey(r.get(0)?), TaskId(r.get(1)?)))
        })
        .map_err(db)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db)
}

/// Stores a new task; `capsets` are those the submission has already made sure of.
fn insert_task(
    conn: &Connection,
    new: &NewTask,
    turn: Option<i64>,
    capsets: &mut HashSet<String>,
    deltas: &mut Counts,
) -> Result<(), StoreError> {
    let task = &new.task;
    let capset = codec::task_capset(task);
    if !capset.starts_with(codec::SIGNAL_CAPSET) && !capsets.contains(&capset) {
        capsets.insert(capset.clone());
        conn.prepare_cached("INSERT OR IGNORE INTO capsets (capset) VALUES (?1)")
            .and_then(|mut s| s.execute([&capset]))
            .map_err(db)?;
    }
    let row = TaskRow::of(task);
    let inserted = conn
        .prepare_cached(
            "INSERT INTO tasks (id, workflow_id, key, state, version, priority, capset, ready_at,
                                timer_at, lease_agent, deps_open, updated_at, snapshot, flow,
                                turn)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?12, ?13, ?14)",
        )
        .and_then(|mut s| {
            s.execute(params![
                row.id,
                task.workflow.0,
                task.spec.key.0,
                row.state,
                row.version,
                task.spec.priority,
                capset,
                row.ready_at,
                row.timer_at,
                row.lease_agent,
                row.updated_at,
                row.snapshot,
                row.flow,
                turn.unwrap_or(0),
            ])
        });
    match inserted {
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            return Err(StoreError::DuplicateKey {
                workflow: task.workflow,
                key: task.spec.key.clone(),
            })
        }
        other => other.map_err(db)?,
    };
    conn.prepare_cached("INSERT INTO task_specs (task_id, spec) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![task.id.0, codec::spec_json(task)]))
        .map_err(db)?;
    append_history(conn, task.id, &new.entry)?;
    write_outbox(conn, task.id, &new.outbox, new.entry.at)?;
    insert_refs(conn, task.id, &task_refs(task, false))?;
    deltas.created(task.workflow, task.kind());
    Ok(())
}

fn append_history(conn: &Connection, task: TaskId, entry: &HistoryEntry) -> Result<(), StoreError> {
    let h = HistoryRow::of(task, entry);
    conn.prepare_cached(
        "INSERT INTO history (task_id, seq, at, actor, event, fencing_token, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            h.task, h.seq, h.at, h.actor, h.event, h.token, h.payload
        ])
    })
    .map_err(db)?;
    Ok(())
}

fn write_outbox(
    conn: &Connection,
    task: TaskId,
    effects: &[Effect],
    at: Timestamp,
) -> Result<(), StoreError> {
    if effects.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached("INSERT INTO outbox (task_id, effect, created_at) VALUES (?1, ?2, ?3)")
        .map_err(db)?;
    for effect in effects {
        stmt.execute(params![task.0, codec::effect_json(effect), ts(at)])
            .map_err(db)?;
    }
    Ok(())
}

/// A transition's update of its task's row, by whether it takes the task out of its parking
/// (bit 0) and gives it a new turn (bit 1). `?9` is the version the row must be at.
const UPDATE_TASK_SQL: [&str; 4] = {
    macro_rules! update {
        ($($extra:literal),*) => {
            concat!(
                "UPDATE tasks SET state = ?2, version = ?3, ready_at = ?4, timer_at = ?5, ",
                "lease_agent = ?6, updated_at = ?7, snapshot = ?8, paused = ?10, flow = ?11",
                $($extra,)*
                " WHERE id = ?1 AND version = ?9"
            )
        };
    }
    [
        update!(),
        update!(", parked = NULL, parked_until = NULL, parked_ready = NULL"),
        update!(", turn = ?12"),
        update!(
            ", parked = NULL, parked_until = NULL, parked_ready = NULL",
            ", turn = ?12"
        ),
    ]
};

/// Compare-and-set on the version, then the row, the history entry, the outbox, and, on
/// completion, the dependents' open counts and the releases the commit can decide
/// ([`decide::release_in_commit`]), which it returns. A failed compare-and-set (`Conflict`,
/// `TaskNotFound`) has written nothing.
pub(super) fn write_transition(
    conn: &Connection,
    record: &TransitionRecord,
    deltas: &mut Counts,
    recent: &mut Recent,
) -> Result<Vec<Released>, StoreError> {
    write_chain(conn, std::slice::from_ref(record), deltas, recent)
}

/// Consecutive transitions of one task, each at the version after the one before (a claim
/// that starts what it assigns, [`decide::claimed`]), written as [`write_transition`] would
/// write them one by one, but with one update of the row: to the last, under a
/// compare-and-set on the first's expected version. Only the last may complete the task.
fn write_chain(
    conn: &Connection,
    records: &[TransitionRecord],
    deltas: &mut Counts,
    recent: &mut Recent,
) -> Result<Vec<Released>, StoreError> {
    let (last, before) = records.split_last().expect("a chain has a transition");
    debug_assert!(before.iter().zip(&records[1..]).all(|(a, b)| {
        a.task.id == b.task.id
            && a.entry.seq + 1 == b.entry.seq
            && !decide::releases_dependents(a.from, a.task.kind())
    }));
    let task = &last.task;
    let expected = decide::expected_version(&records[0]);
    let row = TaskRow::of(task);
    // The keys a transition gives back as stored are read before the row is rewritten.
    let mut flows = Vec::with_capacity(records.len());
    for record in records {
        let flow = decide::flow_change(record);
        let released = match &flow.releases {
            decide::Release::None => Vec::new(),
            decide::Release::Keys(keys) => keys.clone(),
            decide::Release::AsStored => super::flow::held_keys(conn, task.id)?,
        };
        flows.push((flow, released));
    }
    let mut turn = None;
    for record in records.iter().filter(|r| decide::takes_turn(r)) {
        let pass = super::flow::take_turns(conn, &record.task.fairness_group(), 1)?;
        turn = Some(decide::turn_of(pass));
    }
    // Compare-and-set in one statement: the row changes only at the expected version. The
    // parking columns and `turn` are named only when they can change, so that SQLite leaves
    // their indexes alone otherwise: only a pending task can be parked (`flow::park`), and any
    // transition takes it out of its parking (`ready_at` is the task's own again).
    let unpark = records[0].from == StateKind::Pending;
    let sql = UPDATE_TASK_SQL[usize::from(unpark) | usize::from(turn.is_some()) << 1];
    let columns: [&dyn rusqlite::ToSql; 12] = [
        &row.id,
        &row.state,
        &row.version,
        &row.ready_at,
        &row.timer_at,
        &row.lease_agent,
        &row.updated_at,
        &row.snapshot,
        &(expected as i64),
        &row.paused,
        &row.flow,
        &turn,
    ];
    let bound = if turn.is_some() { 12 } else { 11 };
    let changed = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.execute(&columns[..bound]))
        .map_err(db)?;
    if changed == 0 {
        let found: Option<i64> = conn
            .prepare_cached("SELECT version FROM tasks WHERE id = ?1")
            .and_then(|mut s| s.query_row([task.id.0], |r| r.get(0)).optional())
            .map_err(db)?;
        decide::check_version(task.id, expected, found.map(|v| v as u64))?;
        unreachable!(
            "task {}: at version {expected}, yet the update changed no row",
            task.id
        );
    }
    recent.wrote(task);
    let mut released = Vec::new();
    for (record, (flow, keys)) in records.iter().zip(flows) {
        let task = &record.task;
        let (from, to) = (record.from, task.kind());
        super::flow::write_change(conn, &flow, &keys, ts(record.entry.at))?;
        append_history(conn, task.id, &record.entry)?;
        if let Event::SignalReceived { id, .. } = &record.entry.event {
            conn.prepare_cached(SIGNAL_DELIVERED_SQL)
                .and_then(|mut s| s.execute(params![*id as i64, ts(record.entry.at)]))
                .map_err(db)?;
        }
        let mut dependents = None;
        if decide::releases_dependents(from, to) {
            dependents = Some(release_dependents(
                conn,
                record,
                deltas,
                recent,
                &mut released,
            )?);
            insert_refs(conn, task.id, &task_refs(task, true))?;
        }
        let outbox = decide::outbox(&record.outbox, dependents);
        write_outbox(conn, task.id, &outbox, record.entry.at)?;
        for (unit, amount) in &record.usage_added {
            conn.prepare_cached(
                "INSERT INTO workflow_usage (workflow_id, unit, micros) VALUES (?1, ?2, ?3)
                 ON CONFLICT (workflow_id, unit) DO UPDATE SET micros = micros + excluded.micros",
            )
            .and_then(|mut s| s.execute(params![task.workflow.0, unit, amount.0 as i64]))
            .map_err(db)?;
        }
        let superseded = matches!(record.entry.event, Event::Superseded { .. });
        if superseded {
            // No longer anyone's dependency: it leaves its dependents' open counts if it was in them.
            if from != StateKind::Completed {
                conn.prepare_cached(
                    "UPDATE tasks SET deps_open = deps_open - 1
                     WHERE id IN (SELECT dependent FROM edges WHERE dependency = ?1)",
                )
                .and_then(|mut s| s.execute([task.id.0]))
                .map_err(db)?;
            }
            conn.prepare_cached("DELETE FROM edges WHERE dependency = ?1")
                .and_then(|mut s| s.execute([task.id.0]))
                .map_err(db)?;
        }
        if decide::reopens_dependents(from, to) && !superseded {
            conn.prepare_cached(
                "UPDATE tasks SET deps_open = deps_open + 1
                 WHERE id IN (SELECT dependent FROM edges WHERE dependency = ?1)",
            )
            .and_then(|mut s| s.execute([task.id.0]))
            .map_err(db)?;
        }
        if let Event::Reopened { input: Some(_), .. } = &record.entry.event {
            conn.prepare_cached("UPDATE task_specs SET spec = ?2 WHERE task_id = ?1")
                .and_then(|mut s| s.execute(params![task.id.0, codec::spec_json(task)]))
                .map_err(db)?;
            insert_refs(conn, task.id, &task_refs(task, false))?;
        }
        deltas.moved(task.workflow, from, to);
    }
    Ok(released)
}

/// Takes the task `record` completes off its dependents' open counts, and releases those the
/// commit can decide ([`decide::release_in_commit`]) into `released`. Returns how many
/// dependents left with none open are the engine's to release.
fn release_dependents(
    conn: &Connection,
    record: &TransitionRecord,
    deltas: &mut Counts,
    recent: &mut Recent,
    released: &mut Vec<Released>,
) -> Result<usize, StoreError> {
    let task = &record.task;
    // Most tasks have no dependent: a lookup in `edges` spares them the update below, whose
    // subquery and `RETURNING` each build a temporary table.
    let depended_on: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM edges WHERE dependency = ?1)")
        .and_then(|mut s| s.query_row([task.id.0], |r| r.get(0)))
        .map_err(db)?;
    if !depended_on {
        return Ok(0);
    }
    let opened: Vec<(Uuid, i64, String)> = conn
        .prepare_cached(
            "UPDATE tasks SET deps_open = deps_open - 1
             WHERE id IN (SELECT dependent FROM edges WHERE dependency = ?1)
             RETURNING id, deps_open, state",
        )
        .and_then(|mut s| {
            s.query_map([task.id.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(db)?;
    let mut left = 0;
    for (id, open, state) in opened {
        if open != 0 || state != StateKind::Blocked.as_str() {
            continue;
        }
        let id = TaskId(id);
        let read = load_task(conn, id).and_then(|t| Ok((t, dependencies(conn, id)?)));
        let decided = match read {
            Ok((Some(dependent), edges)) => {
                decide::release_in_commit(&dependent, &edges, record.entry.at)
            }
            // A row that does not decode is left to the engine, which reports it; the
            // completion stands.
            Ok((None, _)) | Err(StoreError::Corrupt { .. }) => None,
            Err(e) => return Err(e),
        };
        match decided {
            Some((r, record)) => {
                // Not a completion, so it releases nothing in turn.
                write_transition(conn, &record, deltas, recent)?;
                released.push(r);
            }
            None => left += 1,
        }
    }
    Ok(left)
}

/// A task's dependencies in the graph, by key: their ids, states and last changes.
pub(super) fn dependencies(conn: &Connection, id: TaskId) -> Result<Vec<Dependency>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT t.key, t.id, t.state, t.updated_at FROM edges e
             JOIN tasks t ON t.id = e.dependency
             WHERE e.dependent = ?1 ORDER BY t.key",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([id.0], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Uuid>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (key, dep, state, updated_at) = row.map_err(db)?;
        out.push(Dependency {
            key: TaskKey(key),
            id: TaskId(dep),
            updated_at: Timestamp(updated_at as u64),
            state: codec::parse_state(TaskId(dep), &state)?,
        });
    }
    Ok(out)
}

/// Records that `task` refers to `refs` and marks them referenced (kept from the sweep). An
/// artifact missing here was swept after the engine checked it: the write fails. The sweep
/// runs in this same writer, so the check and the reference cannot interleave with it.
fn insert_refs(conn: &Connection, task: TaskId, refs: &[ArtifactRef]) -> Result<(), StoreError> {
    for artifact in refs {
        let marked = conn
            .prepare_cached("UPDATE artifacts SET referenced = 1 WHERE sha256 = ?1")
            .and_then(|mut s| s.execute([artifact.hex()]))
            .map_err(db)?;
        if marked == 0 {
            return Err(StoreError::ArtifactNotFound(*artifact));
        }
        conn.prepare_cached(
            "INSERT OR IGNORE INTO artifact_refs (artifact, task_id) VALUES (?1, ?2)",
        )
        .and_then(|mut s| s.execute(params![artifact.hex(), task.0]))
        .map_err(db)?;
    }
    Ok(())
}

/// An artifact's row, its file being in place: created, or its upload time refreshed.
pub(super) fn put_artifact(
    conn: &Connection,
    meta: &ArtifactMeta,
) -> Result<PutArtifact, StoreError> {
    let hex = meta.artifact.hex();
    let stored = load_artifact(conn, meta.artifact)?;
    if let Some(mut stored) = stored {
        let at = stored.uploaded_at.max(meta.uploaded_at);
        conn.prepare_cached("UPDATE artifacts SET uploaded_at = ?2 WHERE sha256 = ?1")
            .and_then(|mut s| s.execute(params![hex, ts(at)]))
            .map_err(db)?;
        stored.uploaded_at = at;
        return Ok(PutArtifact {
            meta: stored,
            created: false,
        });
    }
    conn.prepare_cached(
        "INSERT INTO artifacts (sha256, size, content_type, uploaded_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            hex,
            meta.size as i64,
            meta.content_type,
            ts(meta.uploaded_at)
        ])
    })
    .map_err(db)?;
    Ok(PutArtifact {
        meta: meta.clone(),
        created: true,
    })
}

/// Deletes the rows of up to `limit` unreferenced artifacts uploaded before `before`.
pub(super) fn sweep_artifacts(
    conn: &Connection,
    before: Timestamp,
    limit: usize,
) -> Result<Vec<ArtifactRef>, StoreError> {
    let hexes: Vec<String> = conn
        .prepare_cached(
            "SELECT sha256 FROM artifacts INDEXED BY artifacts_unreferenced
             WHERE referenced = 0 AND uploaded_at < ?1 ORDER BY uploaded_at LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![ts(before), limit as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(db)?;
    let mut out = Vec::with_capacity(hexes.len());
    for hex in hexes {
        conn.prepare_cached("DELETE FROM artifacts WHERE sha256 = ?1")
            .and_then(|mut s| s.execute([&hex]))
            .map_err(db)?;
        out.push(parse_artifact(&hex)?);
    }
    Ok(out)
}

pub(super) fn load_artifact(
    conn: &Connection,
    artifact: ArtifactRef,
) -> Result<Option<ArtifactMeta>, StoreError> {
    let row: Option<(i64, Option<String>, i64)> = conn
        .prepare_cached("SELECT size, content_type, uploaded_at FROM artifacts WHERE sha256 = ?1")
        .and_then(|mut s| {
            s.query_row([artifact.hex()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(db)?;
    Ok(row.map(|(size, content_type, at)| ArtifactMeta {
        artifact,
        size: size as u64,
        content_type,
        uploaded_at: Timestamp(at as u64),
    }))
}

fn parse_artifact(hex: &str) -> Result<ArtifactRef, StoreError> {
    hex.parse()
        .map_err(|e| StoreError::Backend(format!("stored artifact name {hex:?}: {e}")))
}

/// Assigns up to `leases.len()` pending tasks the agent can run. The writer is the only one,
/// so nothing else can take a candidate meanwhile. A candidate whose rate limit or
/// concurrency key has no room is parked and the claim reads on (see `crate::flow`).
pub(super) fn claim(
    conn: &Connection,
    request: &ClaimRequest,
    deltas: &mut Counts,
    recent: &mut Recent,
) -> Result<Vec<Task>, StoreError> {
    let held = match request.max_held {
        Some(_) => {
            let held: i64 = conn
                .prepare_cached("SELECT count(*) FROM tasks WHERE lease_agent = ?1")
                .and_then(|mut s| s.query_row([request.agent.0], |r| r.get(0)))
                .map_err(db)?;
            Some(held.max(0) as u64)
        }
        None => None,
    };
    let wanted = decide::claim_wanted(request, held);
    if wanted == 0 {
        return Ok(Vec::new());
    }
    let now = ts(request.now);
    super::flow::unpark_due(conn, now)?;
    let capsets: Vec<String> = {
        let mut stmt = conn
            .prepare_cached("SELECT capset FROM capsets")
            .map_err(db)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)?
    };
    let fitting: Vec<&String> = capsets
        .iter()
        .filter(|c| codec::capset_fits(c, &request.capabilities))
        .collect();
    let mut gate = decide::Gate::default();
    let mut claimed = Vec::with_capacity(wanted);
    let mut leases = request.leases.iter();
    let mut rounds = decide::Rounds::new(wanted);
    let mut last_turn = 0;
    while let Some(limit) = rounds.next(wanted - claimed.len()) {
        let mut candidates = Vec::new();
        let mut stmt = conn.prepare_cached(CLAIM_SQL).map_err(db)?;
        for capset in &fitting {
            let rows = stmt
                .query_map(params![capset, limit as i64], |r| {
                    Ok(Versioned(
                        Candidate {
                            priority: r.get(0)?,
                            turn: r.get(1)?,
                            id: r.get(2)?,
                        },
                        r.get::<_, i64>(3)? as u64,
                    ))
                })
                .map_err(db)?;
            for row in rows {
                candidates.push(row.map_err(db)?);
            }
        }
        decide::best(&mut candidates, limit);
        let mut parked = 0;
        for &Versioned(candidate, version) in &candidates {
            if claimed.len() == wanted {
                break;
            }
            let id = TaskId(candidate.id);
            let Some(task) = recent
                .pending(id, version)
                .map_or_else(|| load_task(conn, id), |t| Ok(Some(t)))?
            else {
                continue;
            };
            let Some(&lease) = leases.as_slice().first() else {
                break;
            };
            let Some(mut record) = decide::assignment(&task, request, lease, now) else {
                continue;
            };
            if let Some(flow) = task.flow() {
                super::flow::load_keys(conn, &mut gate.keys, &flow)?;
                match gate.admit(&flow, now) {
                    Ok(not_before) if not_before > ts(record.entry.at) => {
                        record = decide::assignment(&task, request, lease, not_before)
                            .expect("accepted a moment ago");
                    }
                    Ok(_) => {}
                    Err(park) => {
                        super::flow::park(conn, task.id, &park)?;
                        parked += 1;
                        continue;
                    }
                }
            }
            leases.next();
            let mut records = decide::claimed(record, request);
            write_chain(conn, &records, deltas, recent)?;
            claimed.extend(records.pop().map(|r| r.task));
            last_turn = last_turn.max(candidate.turn);
        }
        rounds.read(candidates.len(), parked);
    }
    super::flow::store_gate(conn, &gate)?;
    if !claimed.is_empty() {
        super::flow::claimed_turn(conn, last_turn)?;
    }
    Ok(claimed)
}

pub(super) fn ack_outbox(conn: &Connection, ids: &[i64]) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached("DELETE FROM outbox WHERE id = ?1")
        .map_err(db)?;
    for id in ids {
        stmt.execute([id]).map_err(db)?;
    }
    Ok(())
}

pub(super) fn upsert_agent(conn: &Connection, agent: &AgentRecord) -> Result<(), StoreError> {
    let caps = serde_json::to_string(&agent.capabilities).expect("capabilities serialise");
    conn.prepare_cached(
        "INSERT INTO agents (id, name, capabilities, concurrency, registered_at, last_seen,
                             registered_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name,
             capabilities = excluded.capabilities, concurrency = excluded.concurrency,
             last_seen = excluded.last_seen",
    )
    .and_then(|mut s| {
        s.execute(params![
            agent.id.0,
            agent.name,
            caps,
            agent.concurrency,
            ts(agent.registered_at),
            ts(agent.last_seen),
            agent.registered_by
        ])
    })
    .map_err(db)?;
    Ok(())
}

pub(super) fn load_task(conn: &Connection, id: TaskId) -> Result<Option<Task>, StoreError> {
    let row: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT t.snapshot, s.spec FROM tasks t JOIN task_specs s ON s.task_id = t.id
             WHERE t.id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([id.0], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db)?;
    row.map(|(snap, spec)| codec::decode_task(id, &snap, &spec))
        .transpose()
}

/// The columns [`schedule_row`] reads.
pub(super) const SCHEDULE_COLUMNS: &str = "name, spec, paused, next_fire_at, last_tick_at, \
    last_workflow, version, created_at, updated_at";

/// A schedule from a row of [`SCHEDULE_COLUMNS`].
pub(super) fn schedule_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        name: r.get(0)?,
        spec: r.get(1)?,
        paused: r.get(2)?,
        next_fire_at: Timestamp(r.get::<_, i64>(3)? as u64),
        last_tick_at: r.get::<_, Option<i64>>(4)?.map(|t| Timestamp(t as u64)),
        last_workflow: r.get::<_, Option<Uuid>>(5)?.map(WorkflowId),
        version: r.get::<_, i64>(6)? as u64,
        created_at: Timestamp(r.get::<_, i64>(7)? as u64),
        updated_at: Timestamp(r.get::<_, i64>(8)? as u64),
    })
}

pub(super) fn write_schedule(conn: &Connection, write: &ScheduleWrite) -> Result<bool, StoreError> {
    let changed = match write {
        ScheduleWrite::Create(s) => {
            let inserted = conn
                .prepare_cached(&format!(
                    "INSERT INTO schedules ({SCHEDULE_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (name) DO NOTHING"
                ))
                .and_then(|mut st| {
                    st.execute(params![
                        s.name,
                        s.spec,
                        s.paused,
                        ts(s.next_fire_at),
                        s.last_tick_at.map(ts),
                        s.last_workflow.map(|w| w.0),
                        s.version as i64,
                        ts(s.created_at),
                        ts(s.updated_at)
                    ])
                })
                .map_err(db)?;
            if inserted == 0 {
                return Err(StoreError::ScheduleExists(s.name.clone()));
            }
            inserted
        }
        ScheduleWrite::Update(s) => conn
            .prepare_cached(
                "UPDATE schedules SET spec = ?2, paused = ?3, next_fire_at = ?4, last_tick_at = ?5,
                     last_workflow = ?6, version = ?7, updated_at = ?8
                 WHERE name = ?1 AND version = ?9",
            )
            .and_then(|mut st| {
                st.execute(params![
                    s.name,
                    s.spec,
                    s.paused,
                    ts(s.next_fire_at),
                    s.last_tick_at.map(ts),
                    s.last_workflow.map(|w| w.0),
                    s.version as i64,
                    ts(s.updated_at),
                    s.version as i64 - 1
                ])
            })
            .map_err(db)?,
        ScheduleWrite::Delete { name, version } => conn
            .prepare_cached("DELETE FROM schedules WHERE name = ?1 AND version = ?2")
            .and_then(|mut st| st.execute(params![name, *version as i64]))
            .map_err(db)?,
    };
    Ok(changed == 1)
}

/// A trigger from a row of `name, template, created_at, updated_at`.
pub(super) fn trigger_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TriggerRecord> {
    Ok(TriggerRecord {
        name: r.get(0)?,
        template: r.get(1)?,
        created_at: Timestamp(r.get::<_, i64>(2)? as u64),
        updated_at: Timestamp(r.get::<_, i64>(3)? as u64),
    })
}

pub(super) fn write_trigger(conn: &Connection, write: &TriggerWrite) -> Result<bool, StoreError> {
    match write {
        TriggerWrite::Put(t) => {
            let existed: bool = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM triggers WHERE name = ?1)")
                .and_then(|mut s| s.query_row([&t.name], |r| r.get(0)))
                .map_err(db)?;
            conn.prepare_cached(
                "INSERT INTO triggers (name, template, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET template = excluded.template,
                     updated_at = excluded.updated_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    t.name,
                    t.template,
                    ts(t.created_at),
                    ts(t.updated_at)
                ])
            })
            .map_err(db)?;
            Ok(!existed)
        }
        TriggerWrite::Delete(name) => conn
            .prepare_cached("DELETE FROM triggers WHERE name = ?1")
            .and_then(|mut s| s.execute([name]))
            .map(|n| n == 1)
            .map_err(db),
    }
}

/// An operator's control: every transition (the first that fails fails it all: the savepoint
/// around it undoes the others), then the workflow's pause mark and the audit entry.
pub(super) fn control(
    conn: &Connection,
    write: &ControlWrite,
    deltas: &mut Counts,
    recent: &mut Recent,
) -> Result<Vec<Released>, StoreError> {
    let workflows = write
        .records
        .iter()
        .map(|r| r.task.workflow)
        .chain(write.workflow_pause.iter().map(|(w, _)| *w))
        .chain(write.budgets.iter().map(|(w, _)| *w));
    refuse_deleting(conn, workflows)?;
    let mut released = Vec::new();
    for record in &write.records {
        released.extend(write_transition(conn, record, deltas, recent)?);
    }
    if let Some((workflow, paused)) = &write.workflow_pause {
        conn.prepare_cached("UPDATE workflows SET paused = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![workflow.0, codec::pause_json(paused.as_ref())]))
            .map_err(db)?;
    }
    if let Some((workflow, budgets)) = &write.budgets {
        conn.prepare_cached("UPDATE workflows SET budgets = ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![workflow.0, codec::budgets_json(budgets)]))
            .map_err(db)?;
    }
    if let Some(a) = &write.audit {
        conn.prepare_cached(
            "INSERT INTO audit (at, actor, action, workflow_id, task_id, reason, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                ts(a.at),
                a.actor,
                a.action,
                a.workflow.map(|w| w.0),
                a.task.map(|t| t.0),
                a.reason,
                a.detail
            ])
        })
        .map_err(db)?;
    }
    Ok(released)
}
