//! The single writer thread: owns the read-write connection and the group commit. It runs
//! each command of a batch in its own savepoint inside one `BEGIN IMMEDIATE` transaction,
//! commits once, then answers.

use std::sync::Arc;

use baton_core::StateKind;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use tokio::sync::mpsc;

use super::commands::{
    ack_outbox, claim, put_artifact, submit, sweep_artifacts, upsert_agent, write_transition,
};
use super::error::db;
use crate::batch::{gather, Command, Outcome};
use crate::decide::Deltas;
use crate::{Stats, StoreError, TransitionRecord, BATCH_WRITES_MAX};

pub(super) struct Writer {
    conn: Connection,
    stats: Arc<Stats>,
}

impl Writer {
    pub(super) fn new(conn: Connection, stats: Arc<Stats>) -> Writer {
        Writer { conn, stats }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(BATCH_WRITES_MAX);
        let mut outcomes = Vec::with_capacity(BATCH_WRITES_MAX);
        while let Some(first) = rx.blocking_recv() {
            let writes = gather(first, &mut rx, &mut batch);
            let started = std::time::Instant::now();
            match self.commit_batch(&batch, &mut outcomes) {
                Ok(()) => {
                    self.stats.record(writes, started.elapsed());
                    assert_eq!(outcomes.len(), batch.len(), "one outcome per command");
                    for (cmd, outcome) in batch.drain(..).zip(outcomes.drain(..)) {
                        cmd.answer(outcome);
                    }
                }
                Err(e) => {
                    outcomes.clear();
                    for cmd in batch.drain(..) {
                        cmd.fail(&e);
                    }
                }
            }
        }
    }

    /// Runs every command of the batch in one transaction and commits it. An error is the
    /// batch's: SQLite rolled the whole transaction back (a full disk does that), or the
    /// commit failed; nothing was written.
    fn commit_batch(
        &mut self,
        batch: &[Command],
        outcomes: &mut Vec<Outcome>,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut deltas = Deltas::default();
        for cmd in batch {
            outcomes.push(run_command(&tx, cmd, &mut deltas)?);
        }
        write_deltas(&tx, &deltas).map_err(db)?;
        tx.commit().map_err(db)?;
        if batch.iter().any(|c| matches!(c, Command::ReclaimSpace(..))) {
            // The pages given back leave the file at a checkpoint, and the log is cut back
            // to nothing: the store's size on disk falls now. Best effort: a reader still on
            // an older snapshot keeps part of the log until the next checkpoint.
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        Ok(())
    }
}

/// Runs one command, each of its writes in its own savepoint. The error is the batch's.
fn run_command(
    tx: &Transaction<'_>,
    cmd: &Command,
    deltas: &mut Deltas,
) -> Result<Outcome, StoreError> {
    Ok(match cmd {
        Command::Submit(batch, _) => {
            Outcome::Submit(savepoint(tx, deltas, |sp, d| submit(sp, batch, d))?)
        }
        Command::Apply(records, _) => Outcome::Apply(apply_records(tx, records, deltas)?),
        Command::Claim(request, _) => {
            Outcome::Claim(savepoint(tx, deltas, |sp, d| claim(sp, request, d))?)
        }
        Command::AckOutbox(ids, _) => {
            Outcome::Done(savepoint(tx, deltas, |sp, _| ack_outbox(sp, ids))?)
        }
        Command::UpsertAgent(agent, _) => {
            Outcome::Done(savepoint(tx, deltas, |sp, _| upsert_agent(sp, agent))?)
        }
        Command::PutArtifact(meta, _) => {
            Outcome::PutArtifact(savepoint(tx, deltas, |sp, _| put_artifact(sp, meta))?)
        }
        Command::PutSignal(signal, _) => Outcome::PutSignal(savepoint(tx, deltas, |sp, _| {
            super::commands::put_signal(sp, signal)
        })?),
        Command::WriteSchedule(write, _) => Outcome::Written(savepoint(tx, deltas, |sp, _| {
            super::commands::write_schedule(sp, write)
        })?),
        Command::WriteTrigger(write, _) => Outcome::Written(savepoint(tx, deltas, |sp, _| {
            super::commands::write_trigger(sp, write)
        })?),
        Command::WriteLimit(write, _) => Outcome::Written(savepoint(tx, deltas, |sp, _| {
            super::flow::write_limit(sp, write)
        })?),
        Command::Control(write, _) => Outcome::Done(savepoint(tx, deltas, |sp, d| {
            super::commands::control(sp, write, d)
        })?),
        Command::RegisterAgent(agent, max, _) => Outcome::Done(savepoint(tx, deltas, |sp, _| {
            super::retention::register_agent(sp, agent, *max)
        })?),
        Command::GcWorkflows(batch, _) => Outcome::Collected(savepoint(tx, deltas, |sp, d| {
            super::retention::gc_workflows(sp, batch, d)
        })?),
        Command::GcPrune(prune, _) => Outcome::Pruned(savepoint(tx, deltas, |sp, _| {
            super::retention::gc_prune(sp, prune)
        })?),
        Command::ReclaimSpace(pages, _) => Outcome::Reclaimed(savepoint(tx, deltas, |sp, _| {
            super::retention::reclaim_space(sp, *pages)
        })?),
        Command::SweepArtifacts(before, limit, _) => {
            Outcome::Swept(savepoint(tx, deltas, |sp, _| {
                sweep_artifacts(sp, *before, *limit)
            })?)
        }
    })
}

/// A command's transitions, each succeeding or failing on its own, under one savepoint: a
/// compare-and-set that fails writes nothing, so only another error needs undoing, and then
/// they run again each in its own savepoint (one per transition costs a statement journal
/// per page each one touches).
fn apply_records(
    tx: &Transaction<'_>,
    records: &[TransitionRecord],
    deltas: &mut Deltas,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    if records.len() > 1 {
        let together = savepoint(tx, deltas, |sp, d| {
            let mut results = Vec::with_capacity(records.len());
            for record in records {
                match write_transition(sp, record, d) {
                    Ok(()) => results.push(Ok(())),
                    Err(e @ (StoreError::Conflict { .. } | StoreError::TaskNotFound(_))) => {
                        results.push(Err(e))
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(results)
        })?;
        if let Ok(results) = together {
            return Ok(results);
        }
    }
    records
        .iter()
        .map(|record| savepoint(tx, deltas, |sp, d| write_transition(sp, record, d)))
        .collect()
}

/// Runs `f` in a savepoint: on error its writes and counter changes are undone, and the
/// error is the command's. If SQLite rolled back the whole transaction instead, the error is
/// the batch's (the outer one).
fn savepoint<T>(
    tx: &Transaction<'_>,
    deltas: &mut Deltas,
    f: impl FnOnce(&Connection, &mut Deltas) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    // Cached: parsing these anew for every write cost the single writer thread ~3%.
    tx.prepare_cached("SAVEPOINT cmd")
        .and_then(|mut s| s.execute([]))
        .map_err(db)?;
    let mut local = *deltas;
    let out = f(tx, &mut local).and_then(|v| {
        tx.prepare_cached("RELEASE cmd")
            .and_then(|mut s| s.execute([]))
            .map_err(db)?;
        Ok(v)
    });
    match out {
        Ok(v) => {
            *deltas = local;
            Ok(Ok(v))
        }
        Err(e) => {
            let undone =
                !tx.is_autocommit() && tx.execute_batch("ROLLBACK TO cmd; RELEASE cmd").is_ok();
            if undone {
                Ok(Err(e))
            } else {
                Err(e)
            }
        }
    }
}

fn write_deltas(tx: &Transaction<'_>, deltas: &Deltas) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO state_counts (state, n) VALUES (?1, ?2)
         ON CONFLICT (state) DO UPDATE SET n = n + excluded.n",
    )?;
    for (state, d) in deltas.changes() {
        stmt.execute(params![StateKind::as_str(state), d])?;
    }
    Ok(())
}
