//! One run of a batch on a writer's connection ([`run_batch`]), and what each command does in
//! it: submissions, transitions, claims, outbox acknowledgements, agents.
//!
//! A run starts by locking, in id order, every task the batch's transitions name, and reads
//! their versions and states. Those rows stay locked until the commit, so a transition's
//! compare-and-set is checked against `known` (kept up to date as the batch writes) without a
//! round trip. Writes are queued in `pending` and sent together with the next statement whose
//! answer is needed ([`Run::read`]), or with the COMMIT: a batch costs a few round trips, not
//! a few per write. The decisions (the compare-and-set, which tasks a claim takes, their
//! assignments, the counter changes) are `crate::decide`'s, shared with SQLite.
//!
//! A command whose error can only be found after it wrote (a submission: a duplicate key
//! shows in the insert's answer) runs in the savepoint `cmd`; others find their errors before
//! writing and need none. A careful run (the fallback once a pipelined statement failed) puts
//! every command, and every record of an `apply_all`, in a savepoint and waits for its
//! answers, so that the statement that fails takes down its own command alone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;

use baton_core::{Effect, Event, StateKind, Task, TaskId, TaskKey};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use super::conn::{join_all, Conn, Step, RELEASE, ROLLBACK_TO, SAVEPOINT};
use super::error::{abort, commit_failed, get, pipelined, session_ended, Abort, Retry};
use crate::artifact::task_refs;
use crate::batch::{Command, Outcome};
use crate::codec::{self, ts, HistoryRow, TaskRow};
use crate::decide::{self, Bucket, Candidate, Deltas, Gate};
use crate::{
    AgentRecord, ClaimRequest, ControlWrite, Dependency, StoreError, SubmitBatch, SubmitOutcome,
    TransitionRecord, WorkflowRef,
};

#[cfg(test)]
mod tests;

/// A command's answer, or the reason its whole run is abandoned.
type Answer<T> = Result<Result<T, StoreError>, Abort>;

/// One run of a batch, in one transaction.
struct Run<'c> {
    c: &'c Conn,
    careful: bool,
    /// Version and state of every task the run has locked, as the run left them.
    known: HashMap<Uuid, (u64, StateKind)>,
    /// Writes queued, not yet sent.
    pending: Vec<Step<'c>>,
    /// How many times queued writes were sent: tells whether a savepoint went out.
    sends: u64,
    deltas: Deltas,
    /// Tasks that became ready, with their fairness groups: their turns are taken together at
    /// the commit, the groups' rows locked in one order by every writer.
    turns: Vec<(String, Uuid)>,
    /// The latest turn the run's claims took.
    claimed_turn: Option<i64>,
    /// Inside a command's savepoint: where to return if the command is rolled back.
    savepoint: Option<Savepoint>,
    /// Completions written by the command (or record) under way: `(task, at)`.
    staged: Vec<(Uuid, baton_core::Timestamp)>,
    /// Completions of the commands that succeeded, in order: their dependents are released
    /// at the end of the run ([`Run::release_completed`]).
    completions: Vec<Completion>,
}

/// A completion written in a run, by the command at `cmd` (its record `rec` for an apply).
struct Completion {
    cmd: usize,
    rec: Option<usize>,
    task: Uuid,
    at: baton_core::Timestamp,
}

/// The run's state when a savepoint was opened: the counters then, and the `known` entries
/// replaced since.
struct Savepoint {
    /// `Run::sends` when the SAVEPOINT was queued: while it is unchanged, the SAVEPOINT and
    /// everything the command queued after it are still unsent.
    sends: u64,
    deltas: Deltas,
    replaced: Vec<(Uuid, Option<(u64, StateKind)>)>,
}

/// Runs `batch` once, in one transaction, and commits it.
pub(super) async fn run_batch<'c>(
    c: &'c Conn,
    batch: &'c [Command],
    careful: bool,
) -> Result<Vec<Outcome>, Abort> {
    let mut named: Vec<Uuid> = Vec::new();
    for cmd in batch {
        match cmd {
            Command::Apply(records, _) => named.extend(records.iter().map(|r| r.task.id.0)),
            Command::Control(w, _) => named.extend(w.records.iter().map(|r| r.task.id.0)),
            Command::Submit(b, _) => named.extend(b.transitions.iter().map(|r| r.task.id.0)),
            _ => {}
        }
    }
    named.sort_unstable();
    named.dedup();
    let lock = async {
        if named.is_empty() {
            Ok(Vec::new())
        } else {
            c.client.query(&c.s.lock_batch, &[&named]).await
        }
    };
    let (begun, locked) = tokio::join!(c.client.batch_execute("BEGIN"), lock);
    begun.map_err(abort)?;
    let mut known = HashMap::with_capacity(named.len());
    for row in &locked.map_err(abort)? {
        let (Ok(id), Ok(version), Ok(state)) = (
            row.try_get::<_, Uuid>(0),
            row.try_get::<_, i64>(1),
            row.try_get::<_, &str>(2),
        ) else {
            continue;
        };
        // A row that does not decode is read again by the transition, which reports it.
        if let Some(state) = StateKind::parse(state) {
            known.insert(id, (version as u64, state));
        }
    }
    let mut run = Run {
        c,
        careful,
        known,
        pending: Vec::new(),
        sends: 0,
        deltas: Deltas::default(),
        turns: Vec::new(),
        claimed_turn: None,
        savepoint: None,
        staged: Vec::new(),
        completions: Vec::new(),
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for (index, cmd) in batch.iter().enumerate() {
        outcomes.push(run.command(index, cmd).await?);
    }
    run.release_completed(&mut outcomes).await?;
    run.commit().await?;
    Ok(outcomes)
}

impl<'c> Run<'c> {
    /// Keeps the completions staged by the command's transition (`index`, its record `rec`)
    /// if it succeeded; drops them if it was refused or rolled back.
    fn keep_staged(&mut self, cmd: usize, rec: Option<usize>, succeeded: bool) {
        for (task, at) in std::mem::take(&mut self.staged) {
            if succeeded {
                self.completions.push(Completion { cmd, rec, task, at });
            }
        }
    }

    async fn command(&mut self, index: usize, cmd: &'c Command) -> Result<Outcome, Abort> {
        let c = self.c;
        Ok(match cmd {
            Command::Submit(batch, _) => {
                self.open(true).await?;
                let out = self.submit(batch).await;
                let out = self.close(out).await?;
                debug_assert!(
                    self.staged.is_empty(),
                    "a submission's holds complete nothing"
                );
                Outcome::Submit(out)
            }
            Command::Apply(records, _) => {
                let mut results = Vec::with_capacity(records.len());
                for (rec, record) in records.iter().enumerate() {
                    self.open(false).await?;
                    let out = self.transition(record).await;
                    let out = self.close(out).await?;
                    self.keep_staged(index, Some(rec), out.is_ok());
                    results.push(out.map(|()| Vec::new()));
                }
                Outcome::Apply(results)
            }
            Command::Control(write, _) => {
                self.open(true).await?;
                let out = self.control(write).await;
                let out = self.close(out).await?;
                self.keep_staged(index, None, out.is_ok());
                Outcome::Released(out.map(|()| Vec::new()))
            }
            Command::Claim(request, _) => {
                self.open(false).await?;
                let out = self.claim(request).await;
                Outcome::Claim(self.close(out).await?)
            }
            Command::AckOutbox(ids, _) => {
                self.open(false).await?;
                if !ids.is_empty() {
                    self.pending.push(Box::pin(async move {
                        c.client.execute(&c.s.ack_outbox, &[ids]).await
                    }));
                }
                Outcome::Done(self.close(Ok(Ok(()))).await?)
            }
            Command::UpsertAgent(agent, _) => {
                self.open(false).await?;
                self.pending.push(upsert_agent(c, agent));
                Outcome::Done(self.close(Ok(Ok(()))).await?)
            }
            Command::PutArtifact(..) | Command::SweepArtifacts(..) => {
                unreachable!("PgStore writes artifacts in transactions of their own")
            }
            Command::RegisterAgent(..)
            | Command::GcWorkflows(..)
            | Command::GcPrune(..)
            | Command::ReclaimSpace(..) => {
                unreachable!("PgStore registers agents and collects in transactions of their own")
            }
            Command::PutSignal(..)
            | Command::WriteSchedule(..)
            | Command::WriteTrigger(..)
            | Command::WriteLimit(..) => {
                unreachable!("PgStore stores signals and schedules in transactions of their own")
            }
        })
    }

    /// Opens the savepoint `cmd` for the next command (or record) if it must be able to fail
    /// alone after writing: always in a careful run, and when `always`. The writes queued
    /// before are answered first, so that their failure is not taken for this command's; the
    /// SAVEPOINT itself is sent with the command's first statement.
    async fn open(&mut self, always: bool) -> Result<(), Abort> {
        if !(self.careful || always) {
            return Ok(());
        }
        debug_assert!(self.savepoint.is_none(), "savepoints are not nested");
        self.flush().await?;
        let c = self.c;
        self.pending.push(Box::pin(async move {
            c.client.batch_execute(SAVEPOINT).await.map(|()| 0)
        }));
        self.savepoint = Some(Savepoint {
            sends: self.sends,
            deltas: self.deltas,
            replaced: Vec::new(),
        });
        Ok(())
    }

    /// Closes the savepoint [`Run::open`] opened, if any: sends the command's writes with the
    /// RELEASE and waits for them. A command that failed, on its own or in a statement the
    /// database refused, is rolled back to the savepoint (its counter changes and versions
    /// too) and answered with its error; any other failure abandons the run.
    async fn close<T>(&mut self, out: Answer<T>) -> Answer<T> {
        let Some(savepoint) = self.savepoint.take() else {
            return out;
        };
        let unsent = self.sends == savepoint.sends;
        let out = match out {
            // Nothing but the SAVEPOINT queued: nothing to send.
            Ok(Ok(v)) if unsent && self.pending.len() == 1 => {
                self.pending.clear();
                return Ok(Ok(v));
            }
            Ok(Ok(v)) => {
                let c = self.c;
                self.pending.push(Box::pin(async move {
                    c.client.batch_execute(RELEASE).await.map(|()| 0)
                }));
                self.flush().await.map(|()| Ok(v))
            }
            failed => failed,
        };
        let error = match out {
            Ok(Ok(v)) => return Ok(Ok(v)),
            Ok(Err(e)) => e,
            Err(a) if a.retry == Retry::Carefully => StoreError::Backend(a.message),
            Err(a) => return Err(a),
        };
        // Never sent: dropping them drops the command's unsent writes.
        self.pending.clear();
        let sent = self.sends != savepoint.sends;
        if sent {
            self.c
                .client
                .batch_execute(ROLLBACK_TO)
                .await
                .map_err(abort)?;
        }
        self.deltas = savepoint.deltas;
        for (id, before) in savepoint.replaced.into_iter().rev() {
            match before {
                Some(v) => self.known.insert(id, v),
                None => self.known.remove(&id),
            };
        }
        Ok(Err(error))
    }

    /// Sends the queued writes and waits for their answers.
    async fn flush(&mut self) -> Result<(), Abort> {
        let steps = std::mem::take(&mut self.pending);
        self.sends += 1;
        for result in join_all(steps).await {
            result.map_err(pipelined)?;
        }
        Ok(())
    }

    /// Sends the queued writes, then `query`, back to back, and returns the query's answer.
    async fn read<T>(
        &mut self,
        query: impl Future<Output = Result<T, tokio_postgres::Error>> + Send,
    ) -> Result<T, Abort> {
        let steps = std::mem::take(&mut self.pending);
        self.sends += 1;
        let (results, answer) = tokio::join!(join_all(steps), query);
        for result in results {
            result.map_err(pipelined)?;
        }
        answer.map_err(pipelined)
    }

    /// Sends the queued writes, the counter changes and the COMMIT together. If any of them
    /// fails, PostgreSQL turns the COMMIT into a rollback.
    async fn commit(mut self) -> Result<(), Abort> {
        let c = self.c;
        let (states, changes): (Vec<&str>, Vec<i64>) = self
            .deltas
            .changes()
            .map(|(state, d)| (state.as_str(), d))
            .unzip();
        if !states.is_empty() {
            self.pending.push(Box::pin(async move {
                c.client
                    .execute(&c.s.add_counts, &[&c.shard, &states, &changes])
                    .await
            }));
        }
        if !self.turns.is_empty() {
            let (groups, ids): (Vec<String>, Vec<Uuid>) =
                std::mem::take(&mut self.turns).into_iter().unzip();
            self.pending.push(Box::pin(async move {
                c.client
                    .execute(&c.s.assign_turns, &[&groups, &ids, &decide::FAIR_QUANTUM])
                    .await
            }));
        }
        if let Some(turn) = self.claimed_turn {
            self.pending.push(Box::pin(async move {
                c.client
                    .execute(
                        &c.s.claimed_turn,
                        &[&c.shard, &(turn * decide::FAIR_QUANTUM)],
                    )
                    .await
            }));
        }
        let steps = std::mem::take(&mut self.pending);
        let (results, committed) = tokio::join!(join_all(steps), c.client.batch_execute("COMMIT"));
        for result in results {
            result.map_err(|e| match e.code() {
                _ if session_ended(&e) => commit_failed(e),
                // The server refused the statement, so it turned the COMMIT into a rollback.
                Some(_) if self.careful => abort(e),
                Some(_) => pipelined(e),
                None => commit_failed(e),
            })?;
        }
        committed.map_err(commit_failed)
    }

    /// Notes a task's version and state as this run leaves them.
    fn note(&mut self, task: &Task) {
        let before = self.known.insert(task.id.0, (task.version, task.kind()));
        if let Some(savepoint) = &mut self.savepoint {
            savepoint.replaced.push((task.id.0, before));
        }
    }

    /// A transition: the compare-and-set against the task's locked row, then its writes,
    /// queued. A completion is staged for [`Run::release_completed`].
    async fn transition(&mut self, record: &TransitionRecord) -> Answer<()> {
        let task = &record.task;
        let expected = decide::expected_version(record);
        let stored = match self.known.get(&task.id.0) {
            Some(&known) => Some(known),
            None => {
                // Not locked up front (created by this batch, or missing): lock it now.
                let c = self.c;
                let row = self
                    .read(c.client.query_opt(&c.s.lock_task, &[&task.id.0]))
                    .await?;
                let stored = row.map(|row| {
                    let version = get::<i64>(&row, 0)?;
                    let state = codec::parse_state(task.id, get(&row, 1)?)?;
                    Ok::<_, StoreError>((version as u64, state))
                });
                match stored.transpose() {
                    Ok(stored) => stored,
                    Err(e) => return Ok(Err(e)),
                }
            }
        };
        if let Err(e) = decide::check_version(task.id, expected, stored.map(|(v, _)| v)) {
            return Ok(Err(e));
        }
        let (_, from) = stored.expect("check_version found the task");
        self.write_transition(record, from);
        if decide::releases_dependents(from, record.task.kind()) {
            self.staged.push((record.task.id.0, record.entry.at));
        }
        Ok(Ok(()))
    }

    /// The completions of the run's commands that succeeded, once they all wrote (each took
    /// one off its dependents' open counts): each dependent of theirs left blocked with none
    /// open is released here, in the run's transaction, if the commit can decide it
    /// ([`decide::release_in_commit`]), and the release goes to the outcome of the command
    /// whose completion was its last (the latest in the run). A completion that leaves a
    /// dependent to the engine (an input to resolve, items to expand) puts its
    /// `ReleaseDependents` in the outbox. One round trip for the whole run, two if it releases.
    async fn release_completed(&mut self, outcomes: &mut [Outcome]) -> Result<(), Abort> {
        if self.completions.is_empty() {
            return Ok(());
        }
        let c = self.c;
        let completed: Vec<Uuid> = self.completions.iter().map(|d| d.task).collect();
        let rows = self
            .read(c.client.query(&c.s.released_by, &[&completed]))
            .await?;
        let mut left = vec![false; self.completions.len()];
        let mut ready = Vec::new();
        for row in &rows {
            let decoded = get::<Uuid>(row, 0)
                .and_then(|id| codec::decode_task(TaskId(id), get(row, 1)?, get(row, 2)?));
            match decoded {
                Ok(task) => ready.push(task),
                // A row that does not decode (the rows are read already) is left to the
                // engine, which reports it; the completions stand.
                Err(_) => left.iter_mut().for_each(|l| *l = true),
            }
        }
        let mut dependencies: HashMap<Uuid, Vec<Dependency>> = HashMap::new();
        if !ready.is_empty() {
            let ids: Vec<Uuid> = ready.iter().map(|t| t.id.0).collect();
            let edges = self
                .read(c.client.query(&c.s.dependencies_of, &[&ids]))
                .await?;
            for row in &edges {
                let decoded = (|| {
                    let dep = TaskId(get(row, 2)?);
                    Ok::<_, StoreError>((
                        get::<Uuid>(row, 0)?,
                        Dependency {
                            key: TaskKey(get(row, 1)?),
                            id: dep,
                            state: codec::parse_state(dep, get(row, 3)?)?,
                            updated_at: baton_core::Timestamp(get::<i64>(row, 4)? as u64),
                        },
                    ))
                })();
                if let Ok((dependent, d)) = decoded {
                    dependencies.entry(dependent).or_default().push(d);
                }
            }
        }
        let index: HashMap<Uuid, usize> = self
            .completions
            .iter()
            .enumerate()
            .map(|(i, d)| (d.task, i))
            .collect();
        for task in &ready {
            let edges = dependencies.remove(&task.id.0).unwrap_or_default();
            let Some(last) = edges.iter().filter_map(|d| index.get(&d.id.0)).max() else {
                continue;
            };
            let by = &self.completions[*last];
            let (cmd, rec, at) = (by.cmd, by.rec, by.at);
            match decide::release_in_commit(task, &edges, at) {
                Some((released, record)) => {
                    // Its row is locked (its open count was written in this run) and read
                    // after every write of the run.
                    self.write_transition(&record, StateKind::Blocked);
                    match (&mut outcomes[cmd], rec) {
                        (Outcome::Apply(results), Some(rec)) => {
                            if let Ok(r) = &mut results[rec] {
                                r.push(released);
                            }
                        }
                        (Outcome::Released(Ok(r)), None) => r.push(released),
                        _ => unreachable!("a completion is staged by a transition it answers"),
                    }
                }
                None => left[*last] = true,
            }
        }
        for (i, left) in left.into_iter().enumerate() {
            if left {
                let (task, at) = (self.completions[i].task, self.completions[i].at);
                self.queue_outbox(TaskId(task), &[Effect::ReleaseDependents], at);
            }
        }
        Ok(())
    }

    /// Queues a transition's durable effects for the outbox, but the `ReleaseDependents` of a
    /// task nobody depends on (it has nothing to release).
    fn queue_outbox(&mut self, task: TaskId, effects: &[Effect], at: baton_core::Timestamp) {
        let c = self.c;
        let mut o = Outbox::default();
        o.push(task, effects, at);
        let release = codec::effect_json(&Effect::ReleaseDependents);
        self.pending.push(Box::pin(async move {
            c.client
                .execute(
                    &c.s.insert_transition_outbox,
                    &[&o.tasks, &o.effects, &o.ats, &release],
                )
                .await
        }));
    }

    /// Queues the writes of a transition whose compare-and-set passed: the row, the history
    /// entry, the outbox, and, on completion, the dependents' open counts.
    fn write_transition(&mut self, record: &TransitionRecord, from: StateKind) {
        self.write_transitions(std::slice::from_ref(record), from);
    }

    /// Queues the writes of consecutive transitions of one task (a claim that starts what it
    /// assigns, [`decide::claimed`]) as [`Run::write_transition`] would one by one, but with one
    /// update of the row, to the last. Only the last may complete the task.
    fn write_transitions(&mut self, records: &[TransitionRecord], mut from: StateKind) {
        for (i, record) in records.iter().enumerate() {
            self.write_one(record, from, i + 1 == records.len());
            from = record.task.kind();
        }
    }

    /// A transition's writes; its row's only if `row` (the last of its chain).
    fn write_one(&mut self, record: &TransitionRecord, from: StateKind, row: bool) {
        let c = self.c;
        let task = &record.task;
        let to = task.kind();
        if decide::takes_turn(record) {
            self.turns.push((task.fairness_group(), task.id.0));
        }
        let flow = decide::flow_change(record);
        match flow.releases {
            decide::Release::None => {}
            decide::Release::Keys(keys) => {
                let at = ts(record.entry.at);
                let parked: Vec<String> = keys
                    .iter()
                    .map(|k| decide::parked_on_concurrency(k))
                    .collect();
                self.pending.push(Box::pin(async move {
                    c.client
                        .execute(&c.s.release_named_keys, &[&keys, &at])
                        .await
                }));
                self.pending.push(Box::pin(async move {
                    c.client
                        .execute(&c.s.unpark_named_released, &[&parked])
                        .await
                }));
            }
            decide::Release::AsStored => {
                // Read from the row before it is rewritten: the keys the task held.
                let id = task.id.0;
                let at = ts(record.entry.at);
                self.pending.push(Box::pin(async move {
                    c.client.execute(&c.s.release_keys, &[&id, &at]).await
                }));
                self.pending.push(Box::pin(async move {
                    c.client.execute(&c.s.unpark_released, &[&id]).await
                }));
            }
        }
        if row {
            let row = TaskRow::of(task);
            self.pending.push(Box::pin(async move {
                let params: [&(dyn ToSql + Sync); 10] = [
                    &row.id,
                    &row.state,
                    &row.version,
                    &row.ready_at,
                    &row.timer_at,
                    &row.lease_agent,
                    &row.updated_at,
                    &row.snapshot,
                    &row.paused,
                    &row.flow,
                ];
                c.client.execute(&c.s.update_task, &params).await
            }));
        }
        for (key, units) in flow.corrections {
            let now = ts(record.entry.at);
            let parked = decide::parked_on_rate(&key);
            self.pending.push(Box::pin(async move {
                c.client
                    .execute(&c.s.correct_limit, &[&key, &now, &units])
                    .await
            }));
            if units < 0 {
                self.pending.push(Box::pin(async move {
                    c.client
                        .execute(&c.s.unpark_refunded, &[&parked, &decide::UNPARK_ON_REFUND])
                        .await
                }));
            }
        }
        let h = HistoryRow::of(task.id, &record.entry);
        self.pending.push(Box::pin(async move {
            let params: [&(dyn ToSql + Sync); 7] = [
                &h.task, &h.seq, &h.at, &h.actor, &h.event, &h.token, &h.payload,
            ];
            c.client.execute(&c.s.insert_history, &params).await
        }));
        if let Event::SignalReceived { id, .. } = &record.entry.event {
            let (id, at) = (*id as i64, ts(record.entry.at));
            self.pending.push(Box::pin(async move {
                c.client.execute(&c.s.signal_delivered, &[&id, &at]).await
            }));
        }
        if !record.usage_added.is_empty() {
            let workflow = task.workflow.0;
            let units: Vec<String> = record.usage_added.keys().cloned().collect();
            let micros: Vec<i64> = record.usage_added.values().map(|a| a.0 as i64).collect();
            self.pending.push(Box::pin(async move {
                c.client
                    .execute(&c.s.add_usage, &[&workflow, &units, &micros])
                    .await
            }));
        }
        // A completion's `ReleaseDependents` is written by `release_completed` if the run
        // leaves any dependent to release (see `decide::outbox`).
        let completes = decide::releases_dependents(from, to);
        let outbox = if completes {
            decide::outbox(&record.outbox, Some(0))
        } else {
            std::borrow::Cow::Borrowed(record.outbox.as_slice())
        };
        if !outbox.is_empty() {
            self.queue_outbox(task.id, &outbox, record.entry.at);
        }
        if matches!(record.entry.event, Event::Superseded { .. }) {
            // No longer anyone's dependency: it leaves its dependents' open counts if it was in them.
            let (id, open) = (task.id.0, from != StateKind::Completed);
            self.pending.push(Box::pin(async move {
                if open {
                    c.client.execute(&c.s.release_dependents, &[&id]).await?;
                }
                c.client.execute(&c.s.detach_dependents, &[&id]).await
            }));
        }
        let superseded = matches!(record.entry.event, Event::Superseded { .. });
        if decide::reopens_dependents(from, to) && !superseded {
            let id = task.id.0;
            self.pending.push(Box::pin(async move {
                c.client.execute(&c.s.reopen_dependents, &[&id]).await
            }));
        }
        if let Event::Reopened { input: Some(_), .. } = &record.entry.event {
            let (id, spec) = (task.id.0, codec::spec_json(task));
            self.pending.push(Box::pin(async move {
                c.client.execute(&c.s.update_spec, &[&id, &spec]).await
            }));
            let refs = task_refs(task, false);
            if !refs.is_empty() {
                let artifacts: Vec<String> = refs.iter().map(|a| a.hex()).collect();
                let tasks = vec![id; artifacts.len()];
                self.refer(artifacts, tasks);
            }
        }
        if completes {
            let id = task.id.0;
            self.pending.push(Box::pin(async move {
                c.client.execute(&c.s.release_dependents, &[&id]).await
            }));
            let refs = task_refs(task, true);
            if !refs.is_empty() {
                let artifacts: Vec<String> = refs.iter().map(|a| a.hex()).collect();
                let tasks = vec![id; artifacts.len()];
                self.refer(artifacts, tasks);
            }
        }
        self.note(task);
        self.deltas.moved(from, to);
    }

    /// An operator's control, in the savepoint `cmd`: every transition, the first that fails
    /// failing it all, then the workflow's pause mark and the audit entry.
    async fn control(&mut self, write: &'c ControlWrite) -> Answer<()> {
        // A workflow retention is deleting is gone already: nothing may reopen its tasks.
        // Locked for share, so that retention's mark (which locks the row for update) commits
        // before this reads it, or waits for this control to commit and sees its changes.
        let mut workflows: Vec<Uuid> = write
            .records
            .iter()
            .map(|r| r.task.workflow.0)
            .chain(write.workflow_pause.iter().map(|(w, _)| w.0))
            .chain(write.budgets.iter().map(|(w, _)| w.0))
            .collect();
        workflows.sort_unstable();
        workflows.dedup();
        if !workflows.is_empty() {
            let c = self.c;
            let rows = self
                .read(
                    c.client
                        .query(&c.s.workflows_deleting_locked, &[&workflows]),
                )
                .await?;
            let live: HashSet<Uuid> = rows
                .iter()
                .filter(|r| !r.get::<_, bool>(1))
                .map(|r| r.get::<_, Uuid>(0))
                .collect();
            if let Some(gone) = workflows.iter().find(|w| !live.contains(w)) {
                return Ok(Err(StoreError::WorkflowNotFound(baton_core::WorkflowId(
                    *gone,
                ))));
            }
        }
        for record in &write.records {
            if let Err(e) = self.transition(record).await? {
                return Ok(Err(e));
            }
        }
        let c = self.c;
        if let Some((workflow, paused)) = &write.workflow_pause {
            let (id, paused) = (workflow.0, codec::pause_json(paused.as_ref()));
            self.pending.push(Box::pin(async move {
                c.client.execute(&c.s.pause_workflow, &[&id, &paused]).await
            }));
        }
        if let Some((workflow, budgets)) = &write.budgets {
            let (id, budgets) = (workflow.0, codec::budgets_json(budgets));
            self.pending.push(Box::pin(async move {
                c.client.execute(&c.s.set_budgets, &[&id, &budgets]).await
            }));
        }
        if let Some(a) = &write.audit {
            let workflow = a.workflow.map(|w| w.0);
            let task = a.task.map(|t| t.0);
            let at = ts(a.at);
            self.pending.push(Box::pin(async move {
                c.client
                    .execute(
                        &c.s.insert_audit,
                        &[
                            &at, &a.actor, &a.action, &workflow, &task, &a.reason, &a.detail,
                        ],
                    )
                    .await
            }));
        }
        Ok(Ok(()))
    }

    /// Queues the writes that record references to artifacts (`artifacts[i]` by `tasks[i]`):
    /// each artifact marked referenced (kept from the sweep), then the references, whose
    /// foreign key fails the write if an artifact was swept since the engine checked it.
    fn refer(&mut self, artifacts: Vec<String>, tasks: Vec<Uuid>) {
        let c = self.c;
        let mut distinct = artifacts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        self.pending.push(Box::pin(async move {
            c.client.execute(&c.s.mark_referenced, &[&distinct]).await
        }));
        self.pending.push(Box::pin(async move {
            c.client
                .execute(&c.s.insert_refs, &[&artifacts, &tasks])
                .await
        }));
    }

    /// Assigns up to `leases.len()` pending tasks the agent can run.
    ///
    /// Claims run in the batching writer rather than in a transaction of their own: many
    /// agents polling at once then share one commit, and `FOR UPDATE SKIP LOCKED` keeps them
    /// exclusive anyway: a candidate another transaction (another writer or process) holds is
    /// skipped, and one it has committed as assigned no longer matches `state = 'pending'`
    /// when rechecked. The locks of candidates that lose the merge across capability sets are
    /// held until the batch commits; other claims skip them meanwhile. Under a limit, the
    /// agent's row is locked before its leases are counted, so claims of one agent, from any
    /// process, count them one after the other.
    async fn claim(&mut self, request: &ClaimRequest) -> Answer<Vec<Task>> {
        let c = self.c;
        let agent = request.agent.0;
        let held = async {
            let Some(max_held) = request.max_held else {
                return Ok::<_, tokio_postgres::Error>(None);
            };
            let max_held = i64::from(max_held);
            let (locked, counted) = tokio::join!(
                async { c.client.query(&c.s.lock_agent, &[&agent]).await },
                async {
                    c.client
                        .query_one(&c.s.count_leases, &[&agent, &max_held])
                        .await
                },
            );
            locked?;
            Ok(Some(counted?.try_get::<_, i64>(0)?.max(0) as u64))
        };
        let (held, capsets) = self
            .read(async {
                let (held, capsets) = tokio::join!(held, c.client.query(&c.s.capsets, &[]));
                Ok((held?, capsets?))
            })
            .await?;
        let wanted = decide::claim_wanted(request, held);
        if wanted == 0 {
            return Ok(Ok(Vec::new()));
        }
        let mut fitting = Vec::new();
        for row in &capsets {
            match get::<String>(row, 0) {
                Ok(capset) if codec::capset_fits(&capset, &request.capabilities) => {
                    fitting.push(capset)
                }
                Ok(_) => {}
                Err(e) => return Ok(Err(e)),
            }
        }
        let now = ts(request.now);
        self.pending.push(Box::pin(async move {
            c.client
                .execute(&c.s.unpark_due, &[&now, &decide::UNPARK_DUE_MAX])
                .await
        }));
        let mut gate = Gate::default();
        let mut claimed = Vec::with_capacity(wanted);
        let mut leases = request.leases.iter();
        let mut rounds = decide::Rounds::new(wanted);
        while let Some(limit) = rounds.next(wanted - claimed.len()) {
            let (candidates, loaded) = match self.candidates(&fitting, limit).await? {
                Ok(found) => found,
                Err(e) => return Ok(Err(e)),
            };
            if let Err(e) = self.lock_keys(&mut gate, loaded.values()).await? {
                return Ok(Err(e));
            }
            let mut parked = 0;
            for candidate in &candidates {
                if claimed.len() == wanted {
                    break;
                }
                let Some(task) = loaded.get(&candidate.id) else {
                    continue;
                };
                let Some(&lease) = leases.as_slice().first() else {
                    break;
                };
                let Some(mut record) = decide::assignment(task, request, lease, now) else {
                    continue;
                };
                if let Some(flow) = task.flow() {
                    match gate.admit(&flow, now) {
                        Ok(not_before) if not_before > ts(record.entry.at) => {
                            record = decide::assignment(task, request, lease, not_before)
                                .expect("accepted a moment ago");
                        }
                        Ok(_) => {}
                        Err(park) => {
                            let id = task.id.0;
                            self.pending.push(Box::pin(async move {
                                c.client
                                    .execute(&c.s.park_task, &[&id, &park.parked, &park.until])
                                    .await
                            }));
                            parked += 1;
                            continue;
                        }
                    }
                }
                leases.next();
                let mut records = decide::claimed(record, request);
                self.write_transitions(&records, task.kind());
                claimed.extend(records.pop().map(|r| r.task));
                self.claimed_turn = self.claimed_turn.max(Some(candidate.turn));
            }
            rounds.read(candidates.len(), parked);
        }
        for key in &gate.drawn {
            let b = gate.keys.buckets[key];
            let key = key.clone();
            self.pending.push(Box::pin(async move {
                c.client
                    .execute(&c.s.store_bucket, &[&key, &b.level, &b.refilled_at])
                    .await
            }));
        }
        if !gate.taken.is_empty() {
            let (keys, counts): (Vec<String>, Vec<i64>) = gate.taken.into_iter().unzip();
            self.pending.push(Box::pin(async move {
                c.client.execute(&c.s.take_keys, &[&keys, &counts]).await
            }));
        }
        Ok(Ok(claimed))
    }

    /// The best `limit` pending candidates over the capability sets `fitting`, locked (those
    /// another transaction holds skipped), best first, and the tasks they are.
    async fn candidates(
        &mut self,
        fitting: &[String],
        limit: usize,
    ) -> Answer<(Vec<Candidate>, HashMap<Uuid, Task>)> {
        let c = self.c;
        let limit_sql = limit as i64;
        let rows = self
            .read(async {
                let selects = fitting
                    .iter()
                    .map(|capset| {
                        Box::pin(async move {
                            c.client
                                .query(&c.s.claim_candidates, &[capset, &limit_sql])
                                .await
                        })
                            as std::pin::Pin<Box<dyn Future<Output = _> + Send + '_>>
                    })
                    .collect();
                join_all(selects)
                    .await
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
        let mut candidates = Vec::new();
        for row in rows.iter().flatten() {
            let decoded = (|| {
                Ok::<_, StoreError>(Candidate {
                    priority: get(row, 0)?,
                    turn: get(row, 1)?,
                    id: get(row, 2)?,
                })
            })();
            match decoded {
                Ok(candidate) => candidates.push(candidate),
                Err(e) => return Ok(Err(e)),
            }
        }
        decide::best(&mut candidates, limit);
        let ids: Vec<Uuid> = candidates.iter().map(|c| c.id).collect();
        let loaded = if ids.is_empty() {
            HashMap::new()
        } else {
            let rows = self.read(c.client.query(&c.s.load_tasks, &[&ids])).await?;
            match decode_tasks(&rows) {
                Ok(tasks) => tasks.into_iter().map(|t| (t.id.0, t)).collect(),
                Err(e) => return Ok(Err(e)),
            }
        };
        Ok(Ok((candidates, loaded)))
    }

    /// Reads into the gate, locked until the batch commits, the rows of the keys `tasks` name
    /// that it has not read yet: claims on every node then count and draw one after the other.
    /// Rows are locked in key order; a concurrency key gets a row (at 0) to lock if it has none.
    async fn lock_keys(
        &mut self,
        gate: &mut Gate,
        tasks: impl Iterator<Item = &Task>,
    ) -> Answer<()> {
        let c = self.c;
        let (mut limits, mut keys) = (BTreeSet::new(), BTreeSet::new());
        for flow in tasks.filter_map(|t| t.flow()) {
            for (key, _) in flow.rate {
                if !gate.keys.buckets.contains_key(&key) {
                    limits.insert(key);
                }
            }
            for (key, _) in flow.concurrency {
                if !gate.keys.held.contains_key(&key) {
                    keys.insert(key);
                }
            }
        }
        if limits.is_empty() && keys.is_empty() {
            return Ok(Ok(()));
        }
        let (limits, keys): (Vec<String>, Vec<String>) =
            (limits.into_iter().collect(), keys.into_iter().collect());
        let (buckets, held) = self
            .read(async {
                let (b, h) = tokio::join!(
                    async { c.client.query(&c.s.lock_limits, &[&limits]).await },
                    async { c.client.query(&c.s.lock_held, &[&keys]).await },
                );
                Ok((b?, h?))
            })
            .await?;
        let decoded = (|| {
            for row in &buckets {
                gate.keys.buckets.insert(
                    get(row, 0)?,
                    Bucket {
                        units: get(row, 1)?,
                        per_ms: get(row, 2)?,
                        level: get(row, 3)?,
                        refilled_at: get(row, 4)?,
                    },
                );
            }
            for row in &held {
                gate.keys.held.insert(get(row, 0)?, get(row, 1)?);
                gate.keys.freed.insert(get(row, 0)?, get(row, 2)?);
            }
            Ok::<_, StoreError>(())
        })();
        Ok(decoded)
    }

    /// Creates the workflow (or checks the one it grows), its tasks and edges, then the
    /// transitions. Runs in the savepoint `cmd`.
    async fn submit(&mut self, batch: &SubmitBatch) -> Answer<SubmitOutcome> {
        let c = self.c;
        let workflow = match &batch.workflow {
            WorkflowRef::New(wf) => {
                let created_at = ts(wf.created_at);
                let budgets = codec::budgets_json(&wf.budgets);
                let params: [&(dyn ToSql + Sync); 7] = [
                    &wf.id.0,
                    &wf.name,
                    &wf.idempotency_key,
                    &wf.request_hash,
                    &created_at,
                    &wf.outputs,
                    &budgets,
                ];
                if let Some(key) = &wf.idempotency_key {
                    let key_param: [&(dyn ToSql + Sync); 1] = [key];
                    let find = || c.client.query_opt(&c.s.find_idempotent, &key_param);
                    if let Some(row) = self.read(find()).await? {
                        return self.existing(key, &wf.request_hash, &row).await;
                    }
                    let insert = c.client.execute(&c.s.insert_keyed_workflow, &params);
                    if self.read(insert).await? == 0 {
                        // Another transaction took the key since the lookup and has committed.
                        let Some(row) = self.read(find()).await? else {
                            return Ok(Err(StoreError::Backend(format!(
                                "idempotency key {key:?} is taken but its workflow is not visible"
                            ))));
                        };
                        return self.existing(key, &wf.request_hash, &row).await;
                    }
                } else {
                    self.read(c.client.execute(&c.s.insert_workflow, &params))
                        .await?;
                }
                if !wf.labels.is_empty() {
                    let (keys, values): (Vec<&String>, Vec<&String>) = wf.labels.iter().unzip();
                    self.read(
                        c.client
                            .execute(&c.s.insert_labels, &[&wf.id.0, &keys, &values]),
                    )
                    .await?;
                }
                wf.id
            }
            WorkflowRef::Existing { id, paused } => {
                // Locked for share: a pause or resume of the workflow commits before this
                // batch reads it, or waits for it to commit.
                let found = self
                    .read(c.client.query_opt(&c.s.workflow_paused_locked, &[&id.0]))
                    .await?;
                match found.map(|row| row.get::<_, bool>(0)) {
                    None => return Ok(Err(StoreError::WorkflowNotFound(*id))),
                    Some(now) if now != *paused => {
                        return Ok(Err(StoreError::WorkflowPauseChanged(*id)))
                    }
                    Some(_) => {}
                }
                *id
            }
        };
        if let Err(e) = self.insert_tasks_and_edges(batch).await? {
            return Ok(Err(e));
        }
        for record in &batch.transitions {
            if let Err(e) = self.transition(record).await? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(SubmitOutcome::Created { workflow }))
    }

    /// The answer to a submission whose idempotency key names the workflow in `row`.
    async fn existing(&mut self, key: &str, hash: &str, row: &Row) -> Answer<SubmitOutcome> {
        let c = self.c;
        let stored = get::<Uuid>(row, 0).and_then(|id| Ok((id, get::<&str>(row, 1)?)));
        let (id, stored_hash) = match stored {
            Ok(stored) => stored,
            Err(e) => return Ok(Err(e)),
        };
        if stored_hash != hash {
            return Ok(Err(StoreError::IdempotencyMismatch {
                key: key.to_owned(),
            }));
        }
        let rows = self.read(c.client.query(&c.s.task_keys, &[&id])).await?;
        let tasks = rows
            .iter()
            .map(|row| Ok((TaskKey(get(row, 0)?), TaskId(get(row, 1)?))))
            .collect::<Result<Vec<_>, StoreError>>();
        Ok(tasks.map(|tasks| SubmitOutcome::Existing {
            workflow: baton_core::WorkflowId(id),
            tasks,
        }))
    }

    /// The new tasks (with their specs, first history entries and outbox rows) and the edges,
    /// as one pipelined round of multi-row statements. The first task whose row could not be
    /// inserted (its key or id already exists) makes the submission a
    /// [`StoreError::DuplicateKey`].
    async fn insert_tasks_and_edges(&mut self, batch: &SubmitBatch) -> Answer<()> {
        let c = self.c;
        for new in &batch.tasks {
            if codec::ready_at(&new.task).is_some() {
                self.turns.push((new.task.fairness_group(), new.task.id.0));
            }
        }
        let rows = NewRows::of(batch);
        let n = batch.tasks.len();
        let cl = &c.client;
        let s = &c.s;
        let inserted = async {
            if n == 0 {
                return Ok(Vec::new());
            }
            let r = &rows;
            cl.query(
                &s.insert_tasks,
                &[
                    &r.ids,
                    &r.workflows,
                    &r.keys,
                    &r.states,
                    &r.versions,
                    &r.priorities,
                    &r.capsets,
                    &r.ready,
                    &r.timers,
                    &r.leases,
                    &r.updated,
                    &r.snapshots,
                    &r.flows,
                ],
            )
            .await
        };
        let r = &rows;
        let released_open = std::sync::Mutex::new(None);
        let mut steps: Vec<Step<'_>> = Vec::new();
        if n > 0 {
            steps.push(Box::pin(async move {
                cl.execute(&s.insert_capsets, &[&r.distinct_capsets]).await
            }));
            steps.push(Box::pin(async move {
                cl.execute(&s.insert_specs, &[&r.ids, &r.specs]).await
            }));
            steps.push(Box::pin(async {
                let params: [&(dyn ToSql + Sync); 7] = [
                    &r.ids,
                    &r.seqs,
                    &r.ats,
                    &r.actors,
                    &r.events,
                    &r.tokens,
                    &r.payloads,
                ];
                cl.execute(&s.insert_histories, &params).await
            }));
        }
        if !r.outbox.tasks.is_empty() {
            let o = &r.outbox;
            steps.push(Box::pin(async move {
                cl.execute(&s.insert_outbox, &[&o.tasks, &o.effects, &o.ats])
                    .await
            }));
        }
        // A dependent that waits for an open dependency must be waiting: one the batch
        // released was decided on a dependency since reopened (its id is answered).
        if !batch.edges.is_empty() {
            let e = (&r.dependencies, &r.dependents);
            steps.push(Box::pin(async move {
                cl.execute(&s.insert_edges, &[e.0, e.1]).await
            }));
            let released_open = &released_open;
            steps.push(Box::pin(async move {
                let rows = cl.query(&s.count_open, &[e.0, e.1]).await?;
                if let Some(row) = rows.first() {
                    *released_open.lock().expect("not poisoned") = Some(row.get::<_, Uuid>(0));
                }
                Ok(rows.len() as u64)
            }));
        }
        // The tasks first: the statements after them refer to their rows.
        let (inserted, results) = self
            .read(async { Ok::<_, tokio_postgres::Error>(tokio::join!(inserted, join_all(steps))) })
            .await?;
        let inserted = inserted.map_err(pipelined)?;
        let inserted: HashSet<Uuid> = match inserted.iter().map(|r| get::<Uuid>(r, 0)).collect() {
            Ok(ids) => ids,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(dup) = batch
            .tasks
            .iter()
            .find(|t| !inserted.contains(&t.task.id.0))
        {
            return Ok(Err(StoreError::DuplicateKey {
                workflow: dup.task.workflow,
                key: dup.task.spec.key.clone(),
            }));
        }
        for result in results {
            result.map_err(pipelined)?;
        }
        if let Some(id) = released_open.into_inner().expect("not poisoned") {
            return Ok(Err(StoreError::DependencyReopened(TaskId(id))));
        }
        for new in &batch.tasks {
            self.deltas.created(new.task.kind());
        }
        if !rows.ref_artifacts.is_empty() {
            self.refer(rows.ref_artifacts, rows.ref_tasks);
        }
        Ok(Ok(()))
    }
}

/// An agent's registration or refresh, as a queued write.
fn upsert_agent<'c>(c: &'c Conn, agent: &'c AgentRecord) -> Step<'c> {
    let caps = serde_json::to_string(&agent.capabilities).expect("capabilities serialise");
    Box::pin(async move {
        let concurrency = i64::from(agent.concurrency);
        let (registered, seen) = (ts(agent.registered_at), ts(agent.last_seen));
        let params: [&(dyn ToSql + Sync); 7] = [
            &agent.id.0,
            &agent.name,
            &caps,
            &concurrency,
            &registered,
            &seen,
            &agent.registered_by,
        ];
        c.client.execute(&c.s.upsert_agent, &params).await
    })
}

/// Outbox rows as the columns of one multi-row insert.
#[derive(Default)]
struct Outbox {
    tasks: Vec<Uuid>,
    effects: Vec<String>,
    ats: Vec<i64>,
}

impl Outbox {
    fn push(&mut self, task: TaskId, effects: &[baton_core::Effect], at: baton_core::Timestamp) {
        for effect in effects {
            self.tasks.push(task.0);
            self.effects.push(codec::effect_json(effect));
            self.ats.push(ts(at));
        }
    }
}

/// A submission's new rows as the columns of multi-row inserts.
struct NewRows<'b> {
    ids: Vec<Uuid>,
    workflows: Vec<Uuid>,
    keys: Vec<&'b str>,
    states: Vec<&'static str>,
    versions: Vec<i64>,
    priorities: Vec<i32>,
    capsets: Vec<String>,
    distinct_capsets: Vec<String>,
    ready: Vec<Option<i64>>,
    timers: Vec<Option<i64>>,
    leases: Vec<Option<Uuid>>,
    updated: Vec<i64>,
    snapshots: Vec<String>,
    flows: Vec<Option<String>>,
    specs: Vec<String>,
    seqs: Vec<i64>,
    ats: Vec<i64>,
    actors: Vec<String>,
    events: Vec<&'static str>,
    tokens: Vec<Option<i64>>,
    payloads: Vec<String>,
    outbox: Outbox,
    dependencies: Vec<Uuid>,
    dependents: Vec<Uuid>,
    /// References to artifacts: `ref_artifacts[i]` (hex) by `ref_tasks[i]`.
    ref_artifacts: Vec<String>,
    ref_tasks: Vec<Uuid>,
}

impl<'b> NewRows<'b> {
    fn of(batch: &'b SubmitBatch) -> NewRows<'b> {
        let n = batch.tasks.len();
        let mut r = NewRows {
            ids: Vec::with_capacity(n),
            workflows: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            states: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            priorities: Vec::with_capacity(n),
            capsets: Vec::with_capacity(n),
            distinct_capsets: Vec::new(),
            ready: Vec::with_capacity(n),
            timers: Vec::with_capacity(n),
            leases: Vec::with_capacity(n),
            updated: Vec::with_capacity(n),
            snapshots: Vec::with_capacity(n),
            flows: Vec::with_capacity(n),
            specs: Vec::with_capacity(n),
            seqs: Vec::with_capacity(n),
            ats: Vec::with_capacity(n),
            actors: Vec::with_capacity(n),
            events: Vec::with_capacity(n),
            tokens: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            outbox: Outbox::default(),
            dependencies: batch.edges.iter().map(|e| e.dependency.0).collect(),
            dependents: batch.edges.iter().map(|e| e.dependent.0).collect(),
            ref_artifacts: Vec::new(),
            ref_tasks: Vec::new(),
        };
        for new in &batch.tasks {
            let task = &new.task;
            let row = TaskRow::of(task);
            r.ids.push(row.id);
            r.workflows.push(task.workflow.0);
            r.keys.push(task.spec.key.0.as_str());
            r.states.push(row.state);
            r.versions.push(row.version);
            r.priorities.push(task.spec.priority);
            r.capsets.push(codec::task_capset(task));
            r.ready.push(row.ready_at);
            r.timers.push(row.timer_at);
            r.leases.push(row.lease_agent);
            r.updated.push(row.updated_at);
            r.snapshots.push(row.snapshot);
            r.flows.push(row.flow);
            r.specs.push(codec::spec_json(task));
            let h = HistoryRow::of(task.id, &new.entry);
            r.seqs.push(h.seq);
            r.ats.push(h.at);
            r.actors.push(h.actor);
            r.events.push(h.event);
            r.tokens.push(h.token);
            r.payloads.push(h.payload);
            r.outbox.push(task.id, &new.outbox, new.entry.at);
            for artifact in task_refs(task, false) {
                r.ref_artifacts.push(artifact.hex());
                r.ref_tasks.push(task.id.0);
            }
        }
        r.distinct_capsets = r
            .capsets
            .iter()
            .filter(|c| !c.starts_with(codec::SIGNAL_CAPSET))
            .cloned()
            .collect();
        r.distinct_capsets.sort_unstable();
        r.distinct_capsets.dedup();
        r
    }
}

/// Tasks from rows of `id, snapshot, spec`.
pub(super) fn decode_tasks(rows: &[Row]) -> Result<Vec<Task>, StoreError> {
    rows.iter()
        .map(|row| {
            let id = TaskId(get(row, 0)?);
            codec::decode_task(id, get(row, 1)?, get(row, 2)?)
        })
        .collect()
}
