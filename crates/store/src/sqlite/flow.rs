//! Flow control in SQLite (see `crate::flow`): the key rows a claim reads and writes, parking
//! and unparking, the keys a transition takes or gives back, and limit changes. All run on the
//! writer's connection, the only one that writes, so a claim's reads cannot go stale.

use std::collections::HashMap;

use baton_core::{Flow, TaskId};
use rusqlite::{params, Connection, OptionalExtension};

use super::error::db;
use crate::codec::{self, ts};
use crate::decide::{self, Bucket, FlowChange, Gate, Park, UNPARK_DUE_MAX};
use crate::flow::KeyStates;
use crate::{LimitWrite, StoreError};

const UNPARK: &str = "parked = NULL, parked_until = NULL, ready_at = parked_ready, \
                      parked_ready = NULL";

fn bucket_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Bucket> {
    Ok(Bucket {
        units: r.get(at)?,
        per_ms: r.get(at + 1)?,
        level: r.get(at + 2)?,
        refilled_at: r.get(at + 3)?,
    })
}

/// Reads into `states` the rows of the keys of `flow` it does not hold yet.
pub(super) fn load_keys(
    conn: &Connection,
    states: &mut KeyStates,
    flow: &Flow,
) -> Result<(), StoreError> {
    for (key, _) in &flow.rate {
        if states.buckets.contains_key(key) {
            continue;
        }
        let bucket = conn
            .prepare_cached("SELECT units, per_ms, level, refilled_at FROM limits WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| bucket_row(r, 0)).optional())
            .map_err(db)?;
        if let Some(b) = bucket {
            states.buckets.insert(key.clone(), b);
        }
    }
    for (key, _) in &flow.concurrency {
        if states.held.contains_key(key) {
            continue;
        }
        let row: Option<(i64, i64)> = conn
            .prepare_cached("SELECT held, freed_at FROM concurrency_held WHERE key = ?1")
            .and_then(|mut s| {
                s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(db)?;
        let (held, freed) = row.unwrap_or((0, 0));
        states.held.insert(key.clone(), held);
        states.freed.insert(key.clone(), freed);
    }
    Ok(())
}

/// Takes a pending task out of the claim index until `park.until` (or a freed slot).
pub(super) fn park(conn: &Connection, task: TaskId, park: &Park) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE tasks SET parked = ?2, parked_until = ?3, parked_ready = ready_at, ready_at = NULL
         WHERE id = ?1 AND state = 'pending' AND ready_at IS NOT NULL",
    )
    .and_then(|mut s| s.execute(params![task.0, park.parked, park.until]))
    .map_err(db)?;
    Ok(())
}

/// Puts back into the claim index the parked tasks whose time came (at most
/// [`UNPARK_DUE_MAX`], the earliest first).
pub(super) fn unpark_due(conn: &Connection, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "UPDATE tasks SET {UNPARK} WHERE id IN (
             SELECT id FROM tasks WHERE parked IS NOT NULL AND parked_until <= ?1
             ORDER BY parked_until, id LIMIT ?2)"
    ))
    .and_then(|mut s| s.execute(params![now, UNPARK_DUE_MAX]))
    .map_err(db)?;
    Ok(())
}

/// Writes back what the claim changed: the buckets it drew from, the keys it counted tasks in.
pub(super) fn store_gate(conn: &Connection, gate: &Gate) -> Result<(), StoreError> {
    for key in &gate.drawn {
        let b = &gate.keys.buckets[key];
        conn.prepare_cached("UPDATE limits SET level = ?2, refilled_at = ?3 WHERE key = ?1")
            .and_then(|mut s| s.execute(params![key, b.level, b.refilled_at]))
            .map_err(db)?;
    }
    for (key, n) in &gate.taken {
        conn.prepare_cached(
            "INSERT INTO concurrency_held (key, held) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET held = held + excluded.held",
        )
        .and_then(|mut s| s.execute(params![key, n]))
        .map_err(db)?;
    }
    Ok(())
}

/// The task's flow as its row holds it (its keys as filled in at its last write).
pub(super) fn task_flow(conn: &Connection, task: TaskId) -> Result<Option<Flow>, StoreError> {
    let flow: Option<String> = conn
        .prepare_cached("SELECT flow FROM tasks WHERE id = ?1")
        .and_then(|mut s| s.query_row([task.0], |r| r.get(0)).optional())
        .map_err(db)?
        .flatten();
    flow.as_deref().map(codec::parse_flow).transpose()
}

/// The keys the task's row says it holds: read before a transition that gives them back
/// rewrites the row.
pub(super) fn held_keys(conn: &Connection, task: TaskId) -> Result<Vec<String>, StoreError> {
    Ok(task_flow(conn, task)?
        .map(|f| f.concurrency.into_iter().map(|(k, _)| k).collect())
        .unwrap_or_default())
}

/// Writes what a transition changes in its task's keys; `released` are the keys it held
/// before, when it gives them back. Each freed slot unparks the best task parked on its key.
pub(super) fn write_change(
    conn: &Connection,
    change: &FlowChange,
    released: &[String],
    now: i64,
) -> Result<(), StoreError> {
    for key in released {
        conn.prepare_cached(
            "UPDATE concurrency_held SET held = held - 1, freed_at = max(freed_at, ?2)
             WHERE key = ?1",
        )
        .and_then(|mut s| s.execute(params![key, now]))
        .map_err(db)?;
        conn.prepare_cached(&format!(
            "UPDATE tasks SET {UNPARK} WHERE id IN (
                 SELECT id FROM tasks WHERE parked = ?1
                 ORDER BY priority DESC, turn, id LIMIT 1)"
        ))
        .and_then(|mut s| s.execute([decide::parked_on_concurrency(key)]))
        .map_err(db)?;
    }
    for (key, units) in &change.corrections {
        let bucket = conn
            .prepare_cached("SELECT units, per_ms, level, refilled_at FROM limits WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| bucket_row(r, 0)).optional())
            .map_err(db)?;
        if let Some(mut b) = bucket {
            b.correct(*units, now);
            conn.prepare_cached("UPDATE limits SET level = ?2, refilled_at = ?3 WHERE key = ?1")
                .and_then(|mut s| s.execute(params![key, b.level, b.refilled_at]))
                .map_err(db)?;
            if *units < 0 {
                conn.prepare_cached(&format!(
                    "UPDATE tasks SET {UNPARK} WHERE id IN (
                         SELECT id FROM tasks WHERE parked = ?1
                         ORDER BY priority DESC, turn, id LIMIT ?2)"
                ))
                .and_then(|mut s| {
                    s.execute(params![
                        decide::parked_on_rate(key),
                        decide::UNPARK_ON_REFUND
                    ])
                })
                .map_err(db)?;
            }
        }
    }
    Ok(())
}

/// Creates, changes or deletes a limit; its parked tasks are looked at again by the next
/// claims. `true` if it existed.
pub(super) fn write_limit(conn: &Connection, write: &LimitWrite) -> Result<bool, StoreError> {
    let now = ts(write.now);
    let stored = conn
        .prepare_cached("SELECT units, per_ms, level, refilled_at FROM limits WHERE key = ?1")
        .and_then(|mut s| s.query_row([&write.key], |r| bucket_row(r, 0)).optional())
        .map_err(db)?;
    match &write.limit {
        Some(limit) => {
            let b = match stored {
                Some(b) => b.resized(limit, now),
                None => Bucket::full(limit, now),
            };
            conn.prepare_cached(
                "INSERT INTO limits (key, units, per_ms, level, refilled_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (key) DO UPDATE SET units = excluded.units,
                     per_ms = excluded.per_ms, level = excluded.level,
                     refilled_at = excluded.refilled_at, updated_at = excluded.updated_at",
            )
            .and_then(|mut s| {
                s.execute(params![
                    write.key,
                    b.units,
                    b.per_ms,
                    b.level,
                    b.refilled_at,
                    now
                ])
            })
            .map_err(db)?;
        }
        None => {
            conn.prepare_cached("DELETE FROM limits WHERE key = ?1")
                .and_then(|mut s| s.execute([&write.key]))
                .map_err(db)?;
        }
    }
    conn.prepare_cached("UPDATE tasks SET parked_until = ?2 WHERE parked = ?1")
        .and_then(|mut s| s.execute(params![decide::parked_on_rate(&write.key), now]))
        .map_err(db)?;
    Ok(stored.is_some())
}

/// Every limit with its bucket's row and how many tasks are parked on it.
pub(super) fn limits(conn: &Connection) -> Result<Vec<(String, Bucket, u64, i64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT l.key, l.units, l.per_ms, l.level, l.refilled_at, l.updated_at,
                    (SELECT count(*) FROM tasks t WHERE t.parked = 'rate:' || l.key)
             FROM limits l ORDER BY l.key LIMIT ?1",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([crate::PAGE_ROWS_MAX as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                bucket_row(r, 1)?,
                r.get::<_, i64>(6)?.max(0) as u64,
                r.get::<_, i64>(5)?,
            ))
        })
        .map_err(db)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
}

/// Counts `n` more tasks in `group`'s line; the pass of the last of them (the first is `n - 1`
/// before it; see `decide::turn_of`).
pub(super) fn take_turns(conn: &Connection, group: &str, n: i64) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO fair_groups (grp, pass)
         VALUES (?1, (SELECT coalesce(max(pass), 0) FROM fair_clock) + ?2)
         ON CONFLICT (grp) DO UPDATE
             SET pass = max(pass, (SELECT coalesce(max(pass), 0) FROM fair_clock)) + ?2
         RETURNING pass",
    )
    .and_then(|mut s| s.query_row(params![group, n], |r| r.get(0)))
    .map_err(db)
}

/// The turns of the tasks a submission creates ready, by task, in submission order per group.
pub(super) fn turns_of<'t>(
    conn: &Connection,
    tasks: impl Iterator<Item = &'t baton_core::Task> + Clone,
) -> Result<HashMap<TaskId, i64>, StoreError> {
    let mut next = HashMap::new();
    for (group, n) in decide::turns_wanted(tasks.clone()) {
        let last = take_turns(conn, &group, n)?;
        next.insert(group, last - n + 1);
    }
    let mut turns = HashMap::new();
    for task in tasks.filter(|t| codec::ready_at(t).is_some()) {
        let pass = next.get_mut(&task.fairness_group()).expect("counted above");
        turns.insert(task.id, decide::turn_of(*pass));
        *pass += 1;
    }
    Ok(turns)
}

/// Claims took tasks up to `turn`: later groups join the line there.
pub(super) fn claimed_turn(conn: &Connection, turn: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO fair_clock (shard, pass) VALUES (0, ?1)
         ON CONFLICT (shard) DO UPDATE SET pass = max(pass, excluded.pass)",
    )
    .and_then(|mut s| s.execute([turn * decide::FAIR_QUANTUM]))
    .map_err(db)?;
    Ok(())
}
