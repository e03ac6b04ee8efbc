//! Retention in SQLite (see `crate::retention`): the scan for finished workflows (on a read
//! connection), and the batches that delete them and prune (on the writer's connection, the
//! only one that writes, so a batch's checks cannot go stale before it writes).

use std::collections::BTreeSet;

use baton_core::{ArtifactRef, StateKind, TaskId, Timestamp, WorkflowId};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::counts::Counts;
use super::error::db;
use super::recent::Recent;
use crate::codec::ts;
use crate::{
    AgentRecord, ArtifactRefs, GcBatch, GcCandidate, GcDeleted, GcPage, GcPreview, GcPrune,
    GcPruned, GcScan, StoreError, PAGE_ROWS_MAX,
};

/// Marked workflows one batch deletes tasks of, at most.
const MARKED_PER_BATCH_MAX: i64 = 64;

/// Registers an agent under its registrar's cap; see `Store::register_agent`.
pub(super) fn register_agent(
    conn: &Connection,
    agent: &AgentRecord,
    max: u32,
) -> Result<(), StoreError> {
    let caps = serde_json::to_string(&agent.capabilities).expect("capabilities serialise");
    let updated = conn
        .prepare_cached(
            "UPDATE agents SET name = ?2, capabilities = ?3, concurrency = ?4, last_seen = ?5
             WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                agent.id.0,
                agent.name,
                caps,
                agent.concurrency,
                ts(agent.last_seen)
            ])
        })
        .map_err(db)?;
    if updated > 0 {
        return Ok(());
    }
    let stored: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM agents INDEXED BY agents_by_registrar
                                   WHERE registered_by = ?1 LIMIT ?2)",
        )
        .and_then(|mut s| s.query_row(params![agent.registered_by, max], |r| r.get(0)))
        .map_err(db)?;
    if stored >= i64::from(max) {
        return Err(StoreError::TooManyAgents {
            registered_by: agent.registered_by.clone(),
            max,
        });
    }
    conn.prepare_cached(
        "INSERT INTO agents (id, name, capabilities, concurrency, registered_at, last_seen,
                             registered_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
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

/// Whether the workflow has finished before `cutoff` (see `crate::retention`): its task
/// count and when its last task changed, or `None`. The cheap checks (indexed, stopping at
/// the first row) come first; a workflow still running costs no more.
pub(super) fn finished(
    conn: &Connection,
    id: Uuid,
    created_at: i64,
    cutoff: i64,
) -> Result<Option<(u64, i64)>, StoreError> {
    let exists = |sql: &str| -> Result<bool, StoreError> {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.query_row([id], |r| r.get(0)))
            .map_err(db)
    };
    if exists(
        "SELECT EXISTS (SELECT 1 FROM workflow_counts
                        WHERE workflow_id = ?1 AND n > 0
                          AND state IN ('blocked', 'pending', 'assigned', 'executing'))",
    )? || exists(
        "SELECT EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_retrying
                        WHERE workflow_id = ?1 AND state = 'failed' AND timer_at IS NOT NULL)",
    )? || exists(
        "SELECT EXISTS (SELECT 1 FROM tasks INDEXED BY tasks_paused
                        WHERE workflow_id = ?1 AND paused = 1)",
    )? {
        return Ok(None);
    }
    let (tasks, last): (i64, Option<i64>) = conn
        .prepare_cached(
            "SELECT count(*), max(updated_at) FROM tasks INDEXED BY tasks_by_workflow
             WHERE workflow_id = ?1",
        )
        .and_then(|mut s| s.query_row([id], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(db)?;
    let last = last.unwrap_or(created_at);
    if last >= cutoff {
        return Ok(None);
    }
    if exists(
        "SELECT EXISTS (SELECT 1 FROM outbox INDEXED BY outbox_by_task
                        WHERE task_id IN (SELECT id FROM tasks WHERE workflow_id = ?1))",
    )? {
        return Ok(None);
    }
    Ok(Some((tasks.max(0) as u64, last)))
}

/// A page of the scan for finished workflows.
pub(super) fn gc_candidates(conn: &Connection, scan: &GcScan) -> Result<GcPage, StoreError> {
    let cutoff = ts(scan.finished_before);
    let limit = scan.limit.clamp(1, PAGE_ROWS_MAX);
    let (after_at, after_id) = match scan.after {
        Some((at, id)) => (ts(at), id.0),
        None => (-1, Uuid::nil()),
    };
    let rows: Vec<(Uuid, String, Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT id, name, idempotency_key, created_at FROM workflows
             INDEXED BY workflows_by_created
             WHERE created_at < ?1 AND (created_at, id) > (?2, ?3)
               AND deleting IS NULL AND paused IS NULL
             ORDER BY created_at, id LIMIT ?4",
        )
        .and_then(|mut s| {
            s.query_map(params![cutoff, after_at, after_id, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()
        })
        .map_err(db)?;
    let next = (rows.len() == limit)
        .then(|| {
            rows.last()
                .map(|r| (Timestamp(r.3 as u64), WorkflowId(r.0)))
        })
        .flatten();
    let mut candidates = Vec::new();
    for (id, name, idempotency_key, created_at) in rows {
        if let Some((tasks, last)) = finished(conn, id, created_at, cutoff)? {
            candidates.push(GcCandidate {
                workflow: WorkflowId(id),
                name,
                idempotency_key,
                created_at: Timestamp(created_at as u64),
                finished_at: Timestamp(last as u64),
                tasks,
            });
        }
    }
    Ok(GcPage { candidates, next })
}

pub(super) fn gc_marked(conn: &Connection, limit: usize) -> Result<Vec<WorkflowId>, StoreError> {
    conn.prepare_cached(
        "SELECT id FROM workflows INDEXED BY workflows_deleting
         WHERE deleting IS NOT NULL ORDER BY deleting, id LIMIT ?1",
    )
    .and_then(|mut s| {
        s.query_map([limit.clamp(1, PAGE_ROWS_MAX) as i64], |r| {
            r.get::<_, Uuid>(0).map(WorkflowId)
        })?
        .collect::<rusqlite::Result<_>>()
    })
    .map_err(db)
}

/// One batch of deletion (see `GcBatch`), in the writer's transaction.
pub(super) fn gc_workflows(
    conn: &Connection,
    batch: &GcBatch,
    deltas: &mut Counts,
    recent: &mut Recent,
) -> Result<GcDeleted, StoreError> {
    let mut out = GcDeleted::default();
    let cutoff = ts(batch.finished_before);
    for wf in &batch.mark {
        let row: Option<(i64, bool)> = conn
            .prepare_cached(
                "SELECT created_at, deleting IS NULL AND paused IS NULL FROM workflows
                 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([wf.0], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(db)?;
        let Some((created_at, live)) = row else {
            continue;
        };
        if live && finished(conn, wf.0, created_at, cutoff)?.is_some() {
            conn.prepare_cached("UPDATE workflows SET deleting = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![wf.0, ts(batch.now)]))
                .map_err(db)?;
            out.marked.push(*wf);
        }
    }
    let marked: Vec<Uuid> = conn
        .prepare_cached(
            "SELECT id FROM workflows INDEXED BY workflows_deleting
             WHERE deleting IS NOT NULL ORDER BY deleting, id LIMIT ?1",
        )
        .and_then(|mut s| {
            s.query_map([MARKED_PER_BATCH_MAX], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(db)?;
    let mut budget = batch.tasks_max.max(1);
    let mut released = BTreeSet::new();
    for wf in marked {
        if budget == 0 {
            break;
        }
        let tasks: Vec<(Uuid, String)> = conn
            .prepare_cached(
                "SELECT id, state FROM tasks INDEXED BY tasks_by_workflow
                 WHERE workflow_id = ?1 LIMIT ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![wf, budget as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(db)?;
        budget -= tasks.len();
        for (id, state) in &tasks {
            delete_task(
                conn,
                WorkflowId(wf),
                *id,
                state,
                deltas,
                &mut out,
                &mut released,
            )?;
            recent.forget(TaskId(*id));
        }
        if budget > 0 {
            // Fewer tasks than asked for: none is left.
            delete_workflow(conn, wf, deltas, &mut out)?;
        }
    }
    for hex in released {
        let unreferenced = conn
            .prepare_cached(
                "UPDATE artifacts SET referenced = 0
                 WHERE sha256 = ?1 AND referenced = 1
                   AND NOT EXISTS (SELECT 1 FROM artifact_refs WHERE artifact = ?1)",
            )
            .and_then(|mut s| s.execute([&hex]))
            .map_err(db)?;
        out.artifacts_released += unreferenced as u64;
    }
    out.more = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM workflows INDEXED BY workflows_deleting
                            WHERE deleting IS NOT NULL)",
        )
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db)?;
    Ok(out)
}

/// Deletes a task with everything that is its own; the artifacts it referred to go to
/// `released`, to be looked at once the batch's tasks are gone.
fn delete_task(
    conn: &Connection,
    workflow: WorkflowId,
    id: Uuid,
    state: &str,
    deltas: &mut Counts,
    out: &mut GcDeleted,
    released: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    let state = StateKind::parse(state)
        .ok_or_else(|| StoreError::Backend(format!("task {id} has an unknown state {state:?}")))?;
    let run = |sql: &str| -> Result<usize, StoreError> {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([id]))
            .map_err(db)
    };
    out.history += run("DELETE FROM history WHERE task_id = ?1")? as u64;
    run("DELETE FROM task_specs WHERE task_id = ?1")?;
    run("DELETE FROM edges WHERE dependency = ?1")?;
    run("DELETE FROM edges WHERE dependent = ?1")?;
    run("DELETE FROM outbox WHERE task_id = ?1")?;
    let refs: Vec<String> = conn
        .prepare_cached("SELECT artifact FROM artifact_refs INDEXED BY artifact_refs_by_task WHERE task_id = ?1")
        .and_then(|mut s| {
            s.query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(db)?;
    if !refs.is_empty() {
        run("DELETE FROM artifact_refs WHERE task_id = ?1")?;
        released.extend(refs);
    }
    run("DELETE FROM tasks WHERE id = ?1")?;
    deltas.removed(workflow, state);
    out.tasks += 1;
    Ok(())
}

/// Deletes a marked workflow whose tasks are gone, with its labels, usage and signals.
fn delete_workflow(
    conn: &Connection,
    id: Uuid,
    deltas: &mut Counts,
    out: &mut GcDeleted,
) -> Result<(), StoreError> {
    let run = |sql: &str| -> Result<usize, StoreError> {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([id]))
            .map_err(db)
    };
    run("DELETE FROM workflow_labels WHERE workflow_id = ?1")?;
    run("DELETE FROM workflow_usage WHERE workflow_id = ?1")?;
    run("DELETE FROM workflow_counts WHERE workflow_id = ?1")?;
    deltas.deleted(WorkflowId(id));
    out.signals += run("DELETE FROM signals WHERE workflow_id = ?1")? as u64;
    // Its own fairness group (its tasks without a fairness key): no task can join it again.
    conn.prepare_cached("DELETE FROM fair_groups WHERE grp = ?1")
        .and_then(|mut s| s.execute([workflow_group(id)]))
        .map_err(db)?;
    run("DELETE FROM workflows WHERE id = ?1")?;
    out.workflows.push(WorkflowId(id));
    Ok(())
}

/// The fairness group of a workflow's tasks without a fairness key (`Task::fairness_group`).
fn workflow_group(id: Uuid) -> String {
    format!("workflow:{}", WorkflowId(id))
}

/// What deleting the workflows would delete.
pub(super) fn gc_preview(
    conn: &Connection,
    workflows: &[WorkflowId],
) -> Result<GcPreview, StoreError> {
    let mut out = GcPreview::default();
    let mut refs: std::collections::BTreeMap<String, u64> = Default::default();
    for wf in workflows {
        let count = |sql: &str| -> Result<u64, StoreError> {
            conn.prepare_cached(sql)
                .and_then(|mut s| s.query_row([wf.0], |r| r.get::<_, i64>(0)))
                .map(|n| n.max(0) as u64)
                .map_err(db)
        };
        out.tasks += count("SELECT count(*) FROM tasks WHERE workflow_id = ?1")?;
        out.history += count(
            "SELECT count(*) FROM history h JOIN tasks t ON h.task_id = t.id
             WHERE t.workflow_id = ?1",
        )?;
        out.signals += count("SELECT count(*) FROM signals WHERE workflow_id = ?1")?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT r.artifact, count(*) FROM artifact_refs r JOIN tasks t ON r.task_id = t.id
                 WHERE t.workflow_id = ?1 GROUP BY r.artifact",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([wf.0], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(db)?;
        for row in rows {
            let (hex, n) = row.map_err(db)?;
            *refs.entry(hex).or_default() += n.max(0) as u64;
        }
    }
    for (hex, n) in refs {
        out.artifact_refs.push((parse_artifact(&hex)?, n));
    }
    Ok(out)
}

pub(super) fn artifact_refs(
    conn: &Connection,
    artifacts: &[ArtifactRef],
) -> Result<Vec<ArtifactRefs>, StoreError> {
    let mut out = Vec::with_capacity(artifacts.len());
    for artifact in artifacts {
        let row: Option<(i64, i64)> = conn
            .prepare_cached(
                "SELECT uploaded_at, (SELECT count(*) FROM artifact_refs WHERE artifact = ?1)
                 FROM artifacts WHERE sha256 = ?1",
            )
            .and_then(|mut s| {
                s.query_row([artifact.hex()], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(db)?;
        if let Some((uploaded_at, refs)) = row {
            out.push(ArtifactRefs {
                artifact: *artifact,
                refs: refs.max(0) as u64,
                uploaded_at: Timestamp(uploaded_at.max(0) as u64),
            });
        }
    }
    Ok(out)
}

fn parse_artifact(hex: &str) -> Result<ArtifactRef, StoreError> {
    hex.parse()
        .map_err(|e| StoreError::Backend(format!("stored artifact name {hex:?}: {e}")))
}

/// Deletes up to `prune.limit` rows of each kind, in the writer's transaction.
pub(super) fn gc_prune(conn: &Connection, prune: &GcPrune) -> Result<GcPruned, StoreError> {
    let limit = prune.limit.max(1) as i64;
    let mut out = GcPruned::default();
    if let Some(before) = prune.agents_seen_before {
        out.agents = conn
            .prepare_cached(
                "DELETE FROM agents WHERE id IN (
                     SELECT a.id FROM agents a INDEXED BY agents_by_last_seen
                     WHERE a.last_seen < ?1
                       AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.lease_agent = a.id)
                     ORDER BY a.last_seen, a.id LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![ts(before), limit]))
            .map_err(db)? as u64;
    }
    if let Some(before) = prune.audit_before {
        // Entries are numbered in the order they were written, which is their time's order
        // but for clocks stepped back: the oldest are read by id, a page at a time, and one
        // written late with an earlier time goes once the page reaches it.
        out.audit = conn
            .prepare_cached(
                "DELETE FROM audit WHERE id IN (
                     SELECT id FROM (SELECT id, at FROM audit ORDER BY id LIMIT ?2)
                     WHERE at < ?1)",
            )
            .and_then(|mut s| s.execute(params![ts(before), limit]))
            .map_err(db)? as u64;
    }
    if let Some(upto) = prune.fair_pass_upto {
        out.fair_groups = conn
            .prepare_cached(
                "DELETE FROM fair_groups WHERE grp IN (
                     SELECT grp FROM fair_groups WHERE pass <= ?1 LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![upto, limit]))
            .map_err(db)? as u64;
    }
    out.concurrency_keys = conn
        .prepare_cached(
            "DELETE FROM concurrency_held WHERE key IN (
                 SELECT key FROM concurrency_held WHERE held = 0 AND freed_at < ?1 LIMIT ?2)",
        )
        .and_then(|mut s| s.execute(params![ts(prune.concurrency_freed_before), limit]))
        .map_err(db)? as u64;
    Ok(out)
}

/// What `gc_prune` would delete, all of it, on a read connection.
pub(super) fn gc_prune_count(conn: &Connection, prune: &GcPrune) -> Result<GcPruned, StoreError> {
    let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> Result<u64, StoreError> {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.query_row(p, |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
            .map_err(db)
    };
    let mut out = GcPruned::default();
    if let Some(before) = prune.agents_seen_before {
        out.agents = count(
            "SELECT count(*) FROM agents a INDEXED BY agents_by_last_seen
             WHERE a.last_seen < ?1
               AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.lease_agent = a.id)",
            &[&ts(before)],
        )?;
    }
    if let Some(before) = prune.audit_before {
        out.audit = count("SELECT count(*) FROM audit WHERE at < ?1", &[&ts(before)])?;
    }
    if let Some(upto) = prune.fair_pass_upto {
        out.fair_groups = count(
            "SELECT count(*) FROM fair_groups WHERE pass <= ?1",
            &[&upto],
        )?;
    }
    out.concurrency_keys = count(
        "SELECT count(*) FROM concurrency_held WHERE held = 0 AND freed_at < ?1",
        &[&ts(prune.concurrency_freed_before)],
    )?;
    out.artifacts = count(
        "SELECT count(*) FROM artifacts INDEXED BY artifacts_unreferenced
         WHERE referenced = 0 AND uploaded_at < ?1",
        &[&ts(prune.artifacts_uploaded_before)],
    )?;
    Ok(out)
}

/// Gives up to `pages_max` free pages back to the file system (they leave the file at the
/// next checkpoint); the pages given back.
pub(super) fn reclaim_space(conn: &Connection, pages_max: u64) -> Result<u64, StoreError> {
    let free = |conn: &Connection| -> Result<i64, StoreError> {
        conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .map_err(db)
    };
    let before = free(conn)?;
    if before == 0 {
        return Ok(0);
    }
    // The pragma answers a row per page it gives back: it runs as far as it is stepped.
    let mut stmt = conn
        .prepare(&format!(
            "PRAGMA incremental_vacuum({})",
            pages_max.clamp(1, i32::MAX as u64)
        ))
        .map_err(db)?;
    let mut rows = stmt.query([]).map_err(db)?;
    while rows.next().map_err(db)?.is_some() {}
    drop(rows);
    Ok(before.saturating_sub(free(conn)?).max(0) as u64)
}
