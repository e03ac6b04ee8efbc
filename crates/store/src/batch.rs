//! The write path both backends share: each write is a [`Command`] sent to the backend's
//! writer through one bounded queue ([`Queue`]); a writer gathers the commands waiting into a
//! batch ([`gather`]), runs them in one transaction, and answers each caller with its
//! [`Outcome`] only once the batch committed, or with the batch's error if it did not.
//!
//! Whatever runs the batch (SQLite's writer thread, PostgreSQL's writer tasks), a command is
//! answered exactly once, with an outcome of its own kind.

use std::future::Future;

use baton_core::{ArtifactRef, Task, Timestamp};
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::{
    AgentRecord, ArtifactMeta, ClaimRequest, ControlWrite, GcBatch, GcDeleted, GcPrune, GcPruned,
    LimitWrite, NewSignal, PutArtifact, PutSignal, Released, ScheduleWrite, StoreError,
    SubmitBatch, SubmitOutcome, TransitionRecord, TriggerWrite, BATCH_WRITES_MAX, QUEUE_WRITES_MAX,
};

/// Where a command's caller waits for its answer.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write, as queued for the writer.
pub(crate) enum Command {
    Submit(Box<SubmitBatch>, Reply<SubmitOutcome>),
    Apply(
        Vec<TransitionRecord>,
        Reply<Vec<Result<Vec<Released>, StoreError>>>,
    ),
    Claim(ClaimRequest, Reply<Vec<Task>>),
    AckOutbox(Vec<i64>, Reply<()>),
    UpsertAgent(AgentRecord, Reply<()>),
    /// A registration under its registrar's cap (SQLite; PostgreSQL registers in a
    /// transaction of its own, under an advisory lock per registrar).
    RegisterAgent(AgentRecord, u32, Reply<()>),
    /// A batch of retention's deletion (SQLite; PostgreSQL deletes in transactions of their
    /// own).
    GcWorkflows(Box<GcBatch>, Reply<GcDeleted>),
    /// Retention's pruning (SQLite, as `GcWorkflows`).
    GcPrune(Box<GcPrune>, Reply<GcPruned>),
    /// Up to so many free pages given back to the file system (SQLite).
    ReclaimSpace(u64, Reply<u64>),
    /// An artifact's row, once its bytes are in place (SQLite; PostgreSQL writes artifacts in
    /// transactions of their own, the bytes with the row).
    PutArtifact(ArtifactMeta, Reply<PutArtifact>),
    /// Deletes the rows of up to `limit` unreferenced artifacts uploaded before the time
    /// (SQLite, as `PutArtifact`).
    SweepArtifacts(Timestamp, usize, Reply<Vec<ArtifactRef>>),
    /// A signal (SQLite; PostgreSQL stores signals in transactions of their own).
    PutSignal(Box<NewSignal>, Reply<PutSignal>),
    /// A change to a schedule (SQLite; PostgreSQL writes schedules in transactions of their
    /// own).
    WriteSchedule(Box<ScheduleWrite>, Reply<bool>),
    /// A change to a trigger (SQLite, as `WriteSchedule`).
    WriteTrigger(Box<TriggerWrite>, Reply<bool>),
    /// An operator's control: its transitions, all or none, with its marks.
    Control(Box<ControlWrite>, Reply<Vec<Released>>),
    /// A change to a named rate limit (SQLite, as `WriteSchedule`).
    WriteLimit(Box<LimitWrite>, Reply<bool>),
}

/// What one command produced in a batch, sent to its caller once the batch committed.
pub(crate) enum Outcome {
    Submit(Result<SubmitOutcome, StoreError>),
    Apply(Vec<Result<Vec<Released>, StoreError>>),
    Released(Result<Vec<Released>, StoreError>),
    Claim(Result<Vec<Task>, StoreError>),
    Done(Result<(), StoreError>),
    PutArtifact(Result<PutArtifact, StoreError>),
    Swept(Result<Vec<ArtifactRef>, StoreError>),
    PutSignal(Result<PutSignal, StoreError>),
    Written(Result<bool, StoreError>),
    Collected(Result<GcDeleted, StoreError>),
    Pruned(Result<GcPruned, StoreError>),
    Reclaimed(Result<u64, StoreError>),
}

impl Command {
    /// How many writes the command counts for in a batch's [`BATCH_WRITES_MAX`].
    pub(crate) fn writes(&self) -> usize {
        match self {
            Command::Submit(b, _) => b.tasks.len() + b.transitions.len(),
            Command::Apply(r, _) => r.len(),
            Command::Control(w, _) => w.records.len() + 1,
            Command::Claim(r, _) => r.leases.len(),
            // Each deleted task counts like a write: retention shares a batch with little else.
            Command::GcWorkflows(b, _) => b.tasks_max.max(1),
            Command::GcPrune(p, _) => p.limit.max(1),
            Command::AckOutbox(..)
            | Command::RegisterAgent(..)
            | Command::ReclaimSpace(..)
            | Command::UpsertAgent(..)
            | Command::PutArtifact(..)
            | Command::SweepArtifacts(..)
            | Command::PutSignal(..)
            | Command::WriteSchedule(..)
            | Command::WriteTrigger(..)
            | Command::WriteLimit(..) => 1,
        }
    }

    /// Answers the caller once the batch committed.
    ///
    /// # Panics
    /// If `outcome` is of another kind of command: the writers produce one outcome per
    /// command, of its kind, so that would be a bug in a writer.
    pub(crate) fn answer(self, outcome: Outcome) {
        // A caller that stopped waiting (dropped its future) needs no answer.
        match (self, outcome) {
            (Command::Submit(_, r), Outcome::Submit(o)) => drop(r.send(o)),
            (Command::Apply(_, r), Outcome::Apply(o)) => drop(r.send(Ok(o))),
            (Command::Claim(_, r), Outcome::Claim(o)) => drop(r.send(o)),
            (Command::AckOutbox(_, r), Outcome::Done(o))
            | (Command::UpsertAgent(_, r), Outcome::Done(o))
            | (Command::RegisterAgent(_, _, r), Outcome::Done(o)) => drop(r.send(o)),
            (Command::Control(_, r), Outcome::Released(o)) => drop(r.send(o)),
            (Command::PutArtifact(_, r), Outcome::PutArtifact(o)) => drop(r.send(o)),
            (Command::GcWorkflows(_, r), Outcome::Collected(o)) => drop(r.send(o)),
            (Command::GcPrune(_, r), Outcome::Pruned(o)) => drop(r.send(o)),
            (Command::ReclaimSpace(_, r), Outcome::Reclaimed(o)) => drop(r.send(o)),
            (Command::SweepArtifacts(_, _, r), Outcome::Swept(o)) => drop(r.send(o)),
            (Command::PutSignal(_, r), Outcome::PutSignal(o)) => drop(r.send(o)),
            (Command::WriteSchedule(_, r), Outcome::Written(o))
            | (Command::WriteTrigger(_, r), Outcome::Written(o))
            | (Command::WriteLimit(_, r), Outcome::Written(o)) => drop(r.send(o)),
            _ => unreachable!("a writer answered a command with another kind's outcome"),
        }
    }

    /// Answers the caller with the error that kept its batch from committing.
    pub(crate) fn fail(self, error: &StoreError) {
        let e = error.clone();
        match self {
            Command::Submit(_, r) => drop(r.send(Err(e))),
            Command::Apply(_, r) => drop(r.send(Err(e))),
            Command::Claim(_, r) => drop(r.send(Err(e))),
            Command::AckOutbox(_, r)
            | Command::UpsertAgent(_, r)
            | Command::RegisterAgent(_, _, r) => drop(r.send(Err(e))),
            Command::Control(_, r) => drop(r.send(Err(e))),
            Command::GcWorkflows(_, r) => drop(r.send(Err(e))),
            Command::GcPrune(_, r) => drop(r.send(Err(e))),
            Command::ReclaimSpace(_, r) => drop(r.send(Err(e))),
            Command::PutArtifact(_, r) => drop(r.send(Err(e))),
            Command::SweepArtifacts(_, _, r) => drop(r.send(Err(e))),
            Command::PutSignal(_, r) => drop(r.send(Err(e))),
            Command::WriteSchedule(_, r)
            | Command::WriteTrigger(_, r)
            | Command::WriteLimit(_, r) => drop(r.send(Err(e))),
        }
    }
}

/// Adds to `batch` the commands waiting behind `first`, up to [`BATCH_WRITES_MAX`] writes,
/// without waiting for more; returns the batch's writes.
pub(crate) fn gather(
    first: Command,
    rx: &mut mpsc::Receiver<Command>,
    batch: &mut Vec<Command>,
) -> usize {
    let mut writes = first.writes();
    batch.push(first);
    while writes < BATCH_WRITES_MAX {
        match rx.try_recv() {
            Ok(cmd) => {
                writes += cmd.writes();
                batch.push(cmd);
            }
            Err(_) => break,
        }
    }
    writes
}

/// The callers' end of the writer's queue, holding at most [`QUEUE_WRITES_MAX`] commands.
pub(crate) struct Queue(mpsc::Sender<Command>);

impl Queue {
    /// A queue and the receiving end its writer drains.
    pub(crate) fn new() -> (Queue, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(QUEUE_WRITES_MAX);
        (Queue(tx), rx)
    }

    /// Queues the command `make` builds, and answers once the writer did. The command is
    /// built before the future is, so the future holds only the command (its payload on the
    /// heap) and not the caller's arguments: a write's future stays small in every caller's.
    fn write<'a, T: 'a>(
        &'a self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> impl Future<Output = Result<T, StoreError>> + 'a {
        let (tx, rx) = oneshot::channel();
        let command = make(tx);
        async move {
            self.0.send(command).await.map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        }
    }

    pub(crate) fn submit(
        &self,
        batch: SubmitBatch,
    ) -> impl Future<Output = Result<SubmitOutcome, StoreError>> + '_ {
        batch.transitions.iter().for_each(check_record);
        self.write(|r| Command::Submit(Box::new(batch), r))
    }

    pub(crate) fn apply(
        &self,
        record: TransitionRecord,
    ) -> impl Future<Output = Result<Vec<Released>, StoreError>> + '_ {
        // `map`, not an `async` block: a block would hold the future it awaits twice.
        self.apply_all(vec![record]).map(|results| {
            let mut results = results?;
            let result = results.pop();
            assert!(results.is_empty(), "one answer per record");
            result.expect("one answer per record")
        })
    }

    pub(crate) fn apply_all(
        &self,
        records: Vec<TransitionRecord>,
    ) -> impl Future<Output = Result<Vec<Result<Vec<Released>, StoreError>>, StoreError>> + '_ {
        records.iter().for_each(check_record);
        let n = records.len();
        self.write(|r| Command::Apply(records, r))
            .map(move |results| {
                let results = results?;
                assert_eq!(results.len(), n, "a writer answers every record");
                Ok(results)
            })
    }

    pub(crate) fn claim(
        &self,
        request: ClaimRequest,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + '_ {
        self.write(|r| Command::Claim(request, r))
    }

    pub(crate) async fn ack_outbox(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.write(|r| Command::AckOutbox(ids, r)).await
    }

    pub(crate) fn upsert_agent(
        &self,
        agent: AgentRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + '_ {
        self.write(|r| Command::UpsertAgent(agent, r))
    }

    pub(crate) async fn register_agent(
        &self,
        agent: AgentRecord,
        max_per_registrar: u32,
    ) -> Result<(), StoreError> {
        self.write(|r| Command::RegisterAgent(agent, max_per_registrar, r))
            .await
    }

    pub(crate) async fn gc_workflows(&self, batch: GcBatch) -> Result<GcDeleted, StoreError> {
        self.write(|r| Command::GcWorkflows(Box::new(batch), r))
            .await
    }

    pub(crate) async fn gc_prune(&self, prune: GcPrune) -> Result<GcPruned, StoreError> {
        self.write(|r| Command::GcPrune(Box::new(prune), r)).await
    }

    pub(crate) async fn reclaim_space(&self, pages_max: u64) -> Result<u64, StoreError> {
        self.write(|r| Command::ReclaimSpace(pages_max, r)).await
    }

    pub(crate) async fn put_artifact(&self, meta: ArtifactMeta) -> Result<PutArtifact, StoreError> {
        self.write(|r| Command::PutArtifact(meta, r)).await
    }

    pub(crate) async fn put_signal(&self, signal: NewSignal) -> Result<PutSignal, StoreError> {
        self.write(|r| Command::PutSignal(Box::new(signal), r))
            .await
    }

    pub(crate) async fn write_schedule(&self, write: ScheduleWrite) -> Result<bool, StoreError> {
        self.write(|r| Command::WriteSchedule(Box::new(write), r))
            .await
    }

    pub(crate) async fn write_limit(&self, write: LimitWrite) -> Result<bool, StoreError> {
        self.write(|r| Command::WriteLimit(Box::new(write), r))
            .await
    }

    pub(crate) async fn control(&self, write: ControlWrite) -> Result<Vec<Released>, StoreError> {
        write.records.iter().for_each(check_record);
        self.write(|r| Command::Control(Box::new(write), r)).await
    }

    pub(crate) async fn write_trigger(&self, write: TriggerWrite) -> Result<bool, StoreError> {
        self.write(|r| Command::WriteTrigger(Box::new(write), r))
            .await
    }

    pub(crate) async fn sweep_artifacts(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        self.write(|r| Command::SweepArtifacts(uploaded_before, limit, r))
            .await
    }
}

/// Checks, in the caller, that a record is one [`TransitionRecord::of`] could have made: its
/// history entry numbers the task's new version, which follows a stored one.
///
/// # Panics
/// If it is not: the caller built the record by hand and got it wrong. Panicking here, not in
/// a writer, keeps the store serving every other caller.
fn check_record(record: &TransitionRecord) {
    assert!(
        record.entry.seq == record.task.version && record.task.version >= 2,
        "task {}: a transition record's history entry ({}) must number the task's new \
         version ({}), which follows the version `submitted` made (1)",
        record.task.id,
        record.entry.seq,
        record.task.version,
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use baton_core::{Event, Timestamp};

    use super::*;
    use crate::workload;

    fn record() -> TransitionRecord {
        let batch =
            workload::independent_tasks(1, &BTreeSet::new(), Timestamp(1)).expect("valid tasks");
        let cancel = Event::CancelRequested {
            requested_by: "ops".into(),
            reason: "test".into(),
        };
        TransitionRecord::apply(&batch.tasks[0].task, cancel, Timestamp(2)).expect("accepted")
    }

    #[test]
    fn a_record_made_by_the_core_passes() {
        check_record(&record());
    }

    #[test]
    #[should_panic(expected = "must number the task's new version")]
    fn a_record_whose_entry_is_not_the_new_version_panics_in_the_caller() {
        let mut r = record();
        r.entry.seq += 1;
        check_record(&r);
    }
}
