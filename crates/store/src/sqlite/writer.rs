//! The single writer thread: owns the read-write connection and the group commit. It runs
//! each command of a batch in its own savepoint inside one `BEGIN IMMEDIATE` transaction,
//! commits once, then answers.

use std::sync::Arc;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::mpsc;

use super::commands::{
    ack_outbox, claim, put_artifact, submit, sweep_artifacts, upsert_agent, write_transition,
};
use super::counts::Counts;
use super::error::db;
use super::recent::Recent;
use crate::batch::{gather, Command, Outcome};
use crate::{Released, Rerun, Stats, StoreError, TransitionRecord, BATCH_WRITES_MAX};

pub(super) struct Writer {
    conn: Connection,
    stats: Arc<Stats>,
    recent: Recent,
}

impl Writer {
    pub(super) fn new(conn: Connection, stats: Arc<Stats>) -> Writer {
        Writer {
            conn,
            stats,
            recent: Recent::default(),
        }
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

    /// Runs every command of the batch in one transaction and commits it: first one after
    /// another with no savepoint (each savepoint copies every page its command touches into
    /// a statement journal); if a command fails, the transaction is rolled back and the batch
    /// runs again with each command in its own savepoint, so that the failure is that
    /// command's alone. An error is the batch's: SQLite rolled the whole transaction back (a
    /// full disk does that), or the commit failed; nothing was written.
    fn commit_batch(
        &mut self,
        batch: &[Command],
        outcomes: &mut Vec<Outcome>,
    ) -> Result<(), StoreError> {
        let done = match self.run_batch(batch, outcomes, Isolation::None) {
            Ok(()) => return Ok(()),
            Err(Failed::Batch(e)) => Err(e),
            Err(Failed::Redo) => {
                self.stats.rerun(Rerun::Careful);
                outcomes.clear();
                self.run_batch(batch, outcomes, Isolation::Savepoints)
                    .map_err(|failed| match failed {
                        Failed::Batch(e) => e,
                        Failed::Redo => unreachable!("savepoints undo a command on their own"),
                    })
            }
        };
        // Writes were undone: the copies may hold a version never committed.
        self.recent.clear();
        done
    }

    fn run_batch(
        &mut self,
        batch: &[Command],
        outcomes: &mut Vec<Outcome>,
        isolation: Isolation,
    ) -> Result<(), Failed> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Failed::Batch(db(e)))?;
        let mut deltas = Counts::default();
        for cmd in batch {
            outcomes.push(run_command(
                &tx,
                cmd,
                &mut deltas,
                &mut self.recent,
                isolation,
            )?);
        }
        deltas.write(&tx).map_err(|e| Failed::Batch(db(e)))?;
        tx.commit().map_err(|e| Failed::Batch(db(e)))?;
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

/// How the commands of a batch are kept apart in its transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// Not at all: a command that fails ends the attempt ([`Failed::Redo`]).
    None,
    /// Each command in its own savepoint: one that fails is undone alone.
    Savepoints,
}

/// Why a batch's transaction did not commit.
enum Failed {
    /// A command failed with no savepoint to undo it alone: run the batch again with them.
    Redo,
    /// The batch failed as a whole.
    Batch(StoreError),
}

/// Runs one command, isolated as `isolation` says. The error is the batch's.
fn run_command(
    tx: &Transaction<'_>,
    cmd: &Command,
    deltas: &mut Counts,
    recent: &mut Recent,
    isolation: Isolation,
) -> Result<Outcome, Failed> {
    Ok(match cmd {
        Command::Submit(batch, _) => Outcome::Submit(savepoint(tx, deltas, isolation, |sp, d| {
            submit(sp, batch, d, recent)
        })?),
        Command::Apply(records, _) => {
            Outcome::Apply(apply_records(tx, records, deltas, recent, isolation)?)
        }
        Command::Claim(request, _) => Outcome::Claim(savepoint(tx, deltas, isolation, |sp, d| {
            claim(sp, request, d, recent)
        })?),
        Command::AckOutbox(ids, _) => Outcome::Done(savepoint(tx, deltas, isolation, |sp, _| {
            ack_outbox(sp, ids)
        })?),
        Command::UpsertAgent(agent, _) => {
            Outcome::Done(savepoint(tx, deltas, isolation, |sp, _| {
                upsert_agent(sp, agent)
            })?)
        }
        Command::PutArtifact(meta, _) => {
            Outcome::PutArtifact(savepoint(tx, deltas, isolation, |sp, _| {
                put_artifact(sp, meta)
            })?)
        }
        Command::PutSignal(signal, _) => {
            Outcome::PutSignal(savepoint(tx, deltas, isolation, |sp, _| {
                super::commands::put_signal(sp, signal)
            })?)
        }
        Command::WriteSchedule(write, _) => {
            Outcome::Written(savepoint(tx, deltas, isolation, |sp, _| {
                super::commands::write_schedule(sp, write)
            })?)
        }
        Command::WriteTrigger(write, _) => {
            Outcome::Written(savepoint(tx, deltas, isolation, |sp, _| {
                super::commands::write_trigger(sp, write)
            })?)
        }
        Command::WriteLimit(write, _) => {
            Outcome::Written(savepoint(tx, deltas, isolation, |sp, _| {
                super::flow::write_limit(sp, write)
            })?)
        }
        Command::Control(write, _) => {
            Outcome::Released(savepoint(tx, deltas, isolation, |sp, d| {
                super::commands::control(sp, write, d, recent)
            })?)
        }
        Command::RegisterAgent(agent, max, _) => {
            Outcome::Done(savepoint(tx, deltas, isolation, |sp, _| {
                super::retention::register_agent(sp, agent, *max)
            })?)
        }
        Command::GcWorkflows(batch, _) => {
            Outcome::Collected(savepoint(tx, deltas, isolation, |sp, d| {
                super::retention::gc_workflows(sp, batch, d, recent)
            })?)
        }
        Command::GcPrune(prune, _) => {
            Outcome::Pruned(savepoint(tx, deltas, isolation, |sp, _| {
                super::retention::gc_prune(sp, prune)
            })?)
        }
        Command::ReclaimSpace(pages, _) => {
            Outcome::Reclaimed(savepoint(tx, deltas, isolation, |sp, _| {
                super::retention::reclaim_space(sp, *pages)
            })?)
        }
        Command::SweepArtifacts(before, limit, _) => {
            Outcome::Swept(savepoint(tx, deltas, isolation, |sp, _| {
                sweep_artifacts(sp, *before, *limit)
            })?)
        }
    })
}

/// A command's transitions, each succeeding or failing on its own. A compare-and-set that
/// fails writes nothing, so a conflict needs no undoing; another error does. Without
/// savepoints it fails the attempt; with them, the transitions run together in one, and after
/// such an error again each in its own (one per transition costs a statement journal per page
/// each one touches).
fn apply_records(
    tx: &Transaction<'_>,
    records: &[TransitionRecord],
    deltas: &mut Counts,
    recent: &mut Recent,
    isolation: Isolation,
) -> Result<Vec<Result<Vec<Released>, StoreError>>, Failed> {
    let together = |sp: &Connection, d: &mut Counts| {
        let mut results = Vec::with_capacity(records.len());
        for record in records {
            match write_transition(sp, record, d, recent) {
                Ok(released) => results.push(Ok(released)),
                Err(e @ (StoreError::Conflict { .. } | StoreError::TaskNotFound(_))) => {
                    results.push(Err(e))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(results)
    };
    if isolation == Isolation::None || records.len() > 1 {
        if let Ok(results) = savepoint(tx, deltas, isolation, together)? {
            return Ok(results);
        }
    }
    records
        .iter()
        .map(|record| {
            savepoint(tx, deltas, isolation, |sp, d| {
                write_transition(sp, record, d, recent)
            })
        })
        .collect()
}

/// Runs `f`, isolated as `isolation` says. In a savepoint, an error undoes its writes and
/// counter changes and is the command's, unless SQLite rolled back the whole transaction
/// instead ([`Failed::Batch`]). Without one, an error is [`Failed::Redo`].
fn savepoint<T>(
    tx: &Transaction<'_>,
    deltas: &mut Counts,
    isolation: Isolation,
    f: impl FnOnce(&Connection, &mut Counts) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, Failed> {
    if isolation == Isolation::None {
        return match f(tx, deltas) {
            Ok(v) => Ok(Ok(v)),
            Err(e) if tx.is_autocommit() => Err(Failed::Batch(e)),
            Err(_) => Err(Failed::Redo),
        };
    }
    // Cached: parsing these anew for every write cost the single writer thread ~3%.
    tx.prepare_cached("SAVEPOINT cmd")
        .and_then(|mut s| s.execute([]))
        .map_err(|e| Failed::Batch(db(e)))?;
    let mut local = deltas.clone();
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
                Err(Failed::Batch(e))
            }
        }
    }
}
