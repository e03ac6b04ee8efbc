//! The decisions of a write, taken once for both backends: plain functions over what a backend
//! read, so that SQLite's synchronous writer thread and PostgreSQL's pipelined writer tasks
//! share them without an abstraction over their I/O. Each backend reads (its own SQL, its own
//! round trips), calls these, and writes what they decided.
//!
//! - A transition: the version the stored task must have ([`expected_version`]), the
//!   compare-and-set ([`check_version`]), whether it releases dependents
//!   ([`releases_dependents`]), and the counter changes ([`Deltas`]).
//! - A claim: how many tasks the agent may take ([`claim_wanted`]), the order among the
//!   candidates of every capability set it can run ([`Candidate`], [`best`]), and the
//!   assignment each chosen task gets ([`assignment`]); flow control: whether a candidate's
//!   rate limits and concurrency keys have room ([`Gate`], [`Bucket`]), and what a transition
//!   changes in them ([`flow_change`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use baton_core::{template, Effect, Event, Flow, LeaseId, StateKind, Task, TaskId, Timestamp};
use uuid::Uuid;

use crate::flow::KeyStates;
use crate::{
    codec, ClaimRequest, Dependency, Released, StoreError, TransitionRecord, PAGE_ROWS_MAX,
};

/// Most tasks one claim assigns.
pub(crate) const CLAIM_TASKS_MAX: usize = PAGE_ROWS_MAX;

/// Changes to the per-state counters (`state_counts`), gathered over a batch and written with
/// it, so that a batch touches each counter row once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Deltas([i64; 7]);

impl Deltas {
    /// A task was created in `state`.
    pub(crate) fn created(&mut self, state: StateKind) {
        self.0[state.index()] += 1;
    }

    /// A task in `state` was deleted (by retention).
    pub(crate) fn removed(&mut self, state: StateKind) {
        self.0[state.index()] -= 1;
    }

    /// A task went from `from` to `to`.
    pub(crate) fn moved(&mut self, from: StateKind, to: StateKind) {
        self.0[from.index()] -= 1;
        self.0[to.index()] += 1;
    }

    /// The states whose count changed, and by how much.
    pub(crate) fn changes(&self) -> impl Iterator<Item = (StateKind, i64)> + '_ {
        StateKind::ALL
            .into_iter()
            .map(|s| (s, self.0[s.index()]))
            .filter(|&(_, d)| d != 0)
    }
}

/// The version the stored task must have for `record` to apply: the one before its entry's.
/// Records are checked when they are queued (`batch::Queue`), so this cannot underflow.
pub(crate) fn expected_version(record: &TransitionRecord) -> u64 {
    debug_assert_eq!(record.entry.seq, record.task.version, "checked when queued");
    record.entry.seq - 1
}

/// The compare-and-set: the stored task (its version, `None` if there is none) must be at
/// `expected` for the transition to apply.
pub(crate) fn check_version(
    task: TaskId,
    expected: u64,
    stored: Option<u64>,
) -> Result<(), StoreError> {
    match stored {
        None => Err(StoreError::TaskNotFound(task)),
        Some(v) if v != expected => Err(StoreError::Conflict {
            task,
            expected,
            found: Some(v),
        }),
        Some(_) => Ok(()),
    }
}

/// Whether a transition from `from` to `to` completes the task, and so takes one off its
/// dependents' open counts (`deps_open`).
pub(crate) fn releases_dependents(from: StateKind, to: StateKind) -> bool {
    to == StateKind::Completed && from != StateKind::Completed
}

/// The durable effects a transition stores in the outbox. `dependents` is how many of the
/// tasks it completed a dependency of are left for the engine to release (`None` if it
/// completed none): blocked, with no dependency open, and not released in the same commit
/// ([`release_in_commit`]). With none left, its `ReleaseDependents` is left out (the open
/// counts are the durable record of what to release; the outbox only says when to look).
pub(crate) fn outbox(effects: &[Effect], dependents: Option<usize>) -> Cow<'_, [Effect]> {
    if dependents == Some(0) && effects.contains(&Effect::ReleaseDependents) {
        Cow::Owned(
            effects
                .iter()
                .filter(|e| **e != Effect::ReleaseDependents)
                .cloned()
                .collect(),
        )
    } else {
        Cow::Borrowed(effects)
    }
}

/// The release of `dependent`, decided in the commit that completed its last open dependency
/// at `at`, from `dependencies` (its edges as that commit leaves them), if it can be decided
/// there: the dependent is blocked, has no input template to resolve against its
/// dependencies' results and no `for_each` to expand, and the core accepts the event. The
/// others are the engine's (the outbox tells it to look). Stamped no earlier than the
/// dependent's last change or its dependencies' completions.
pub(crate) fn release_in_commit(
    dependent: &Task,
    dependencies: &[Dependency],
    at: Timestamp,
) -> Option<(Released, TransitionRecord)> {
    if dependent.kind() != StateKind::Blocked
        || dependent.spec.for_each.is_some()
        || template::is_template(&dependent.spec.input)
    {
        return None;
    }
    let at = dependencies
        .iter()
        .map(|d| d.updated_at)
        .fold(at.max(dependent.updated_at), Timestamp::max);
    let event = Event::DependenciesMet {
        completed: dependencies
            .iter()
            .filter(|d| d.state == StateKind::Completed)
            .map(|d| d.key.clone())
            .collect(),
        input: None,
        unresolved: None,
        results: None,
    };
    let transition = baton_core::apply(dependent, &event, at).ok()?;
    let record = TransitionRecord::of(&transition, event.clone(), at);
    Some((Released { transition, event }, record))
}

/// Whether a transition from `from` to `to` reopens a completed task (a rerun), and so adds one
/// to its dependents' open counts again.
pub(crate) fn reopens_dependents(from: StateKind, to: StateKind) -> bool {
    from == StateKind::Completed && to != StateKind::Completed
}

/// How many tasks a claim may take: what it asks for, at most [`CLAIM_TASKS_MAX`], and no
/// more than the agent's limit leaves given the `held` leases (counted only when it has one).
pub(crate) fn claim_wanted(request: &ClaimRequest, held: Option<u64>) -> usize {
    let room = match (request.max_held, held) {
        (Some(max), Some(held)) => u64::from(max).saturating_sub(held) as usize,
        (Some(_), None) => unreachable!("a claim under a limit counts the agent's leases"),
        (None, _) => usize::MAX,
    };
    request.leases.len().min(CLAIM_TASKS_MAX).min(room)
}

/// A pending task a claim could take, as the `tasks_ready` index orders it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) priority: i32,
    pub(crate) turn: i64,
    pub(crate) id: Uuid,
}

impl AsRef<Candidate> for Candidate {
    fn as_ref(&self) -> &Candidate {
        self
    }
}

/// Keeps the `wanted` best candidates, best first: the highest priority, then the earliest
/// turn (see [`takes_turn`]), then the lowest id. The candidates come from one index range per
/// capability set, so this merges those ranges.
pub(crate) fn best<C: AsRef<Candidate>>(candidates: &mut Vec<C>, wanted: usize) {
    candidates.sort_unstable_by(|a, b| {
        let (a, b) = (a.as_ref(), b.as_ref());
        b.priority
            .cmp(&a.priority)
            .then(a.turn.cmp(&b.turn))
            .then(a.id.cmp(&b.id))
    });
    candidates.truncate(wanted);
}

/// Tasks of one fairness group that share a turn: claims take up to this many of a group
/// before the next group's, so that a claim's tasks mostly come from one group (whose rows lie
/// together) while no group waits behind another for long. Groups count their tasks in
/// `fair_groups.pass`, and `fair_clock` holds the latest turn a claim took in the same units
/// (`turn × FAIR_QUANTUM`).
pub const FAIR_QUANTUM: i64 = 32;

/// The turn of a group's task numbered `pass` (from 1): passes 1 to `FAIR_QUANTUM` share turn 0.
pub(crate) fn turn_of(pass: i64) -> i64 {
    (pass - 1).div_euclid(FAIR_QUANTUM)
}

/// Whether the task written by `record` gets a new turn: it became ready (claimable), so it
/// joins the end of its fairness group's line. A group's next turn is one after its last, and
/// never before the latest turn a claim took: among ready tasks of equal priority, claims then
/// take from every group in turn (a round robin), and a group that arrives late joins at the
/// head of the line rather than behind every task waiting.
pub(crate) fn takes_turn(record: &TransitionRecord) -> bool {
    codec::ready_at(&record.task).is_some()
        && (record.from != StateKind::Pending
            || matches!(record.entry.event, Event::ResumeRequested { .. }))
}

/// How many turns each fairness group needs for `tasks` created ready, groups in order (the
/// order in which their rows are locked on PostgreSQL).
pub(crate) fn turns_wanted<'t>(tasks: impl Iterator<Item = &'t Task>) -> Vec<(String, i64)> {
    let mut wanted = std::collections::BTreeMap::new();
    for task in tasks.filter(|t| codec::ready_at(t).is_some()) {
        *wanted.entry(task.fairness_group()).or_insert(0) += 1;
    }
    wanted.into_iter().collect()
}

/// The transition assigning `task` to the claiming agent under `lease`, if the lifecycle
/// accepts it (a candidate is pending, so it does unless the task changed since it was read).
pub(crate) fn assignment(
    task: &Task,
    request: &ClaimRequest,
    lease: LeaseId,
    not_before: i64,
) -> Option<TransitionRecord> {
    let event = Event::AgentAssigned {
        agent: request.agent,
        capabilities: request.capabilities.clone(),
        lease,
    };
    // Never stamped before the task's last change, whatever the clock did since, nor before
    // the moment its keys had room (another node's clock may be ahead).
    let at = request
        .now
        .max(task.updated_at)
        .max(baton_core::Timestamp(not_before.max(0) as u64));
    TransitionRecord::apply(task, event, at).ok()
}

/// What a claim writes for the task `assigned` holds: that assignment, then, for a claim that
/// starts what it takes, the agent's start under the new lease at the same moment (`by_claim`:
/// the first heartbeat is due within the start timeout). Only a task with a heartbeat deadline
/// is started so: should the claim's answer be lost, that deadline takes the task back as soon
/// as the start deadline would have taken back an assigned one; without it, nothing would.
/// Both are written with one update of the task's row, to the last (each its own history
/// entry).
pub(crate) fn claimed(assigned: TransitionRecord, request: &ClaimRequest) -> Vec<TransitionRecord> {
    let started = (request.start && assigned.task.spec.timeouts.heartbeat_ms.is_some())
        .then(|| assigned.task.state.lease().map(|l| l.token))
        .flatten()
        .and_then(|token| {
            let event = Event::ExecutionStarted {
                by_claim: true,
                agent: request.agent,
                token,
            };
            TransitionRecord::apply(&assigned.task, event, assigned.entry.at).ok()
        });
    std::iter::once(assigned).chain(started).collect()
}

/// Most candidates one claim reads, over all its rounds: a claim that finds tasks whose keys
/// have no room parks them and reads on, up to this many.
pub(crate) const CLAIM_SCAN_MAX: usize = 256;
/// Most rounds of candidates one claim reads.
pub(crate) const CLAIM_ROUNDS_MAX: usize = 4;
/// Most parked tasks one claim unparks because their time came.
pub(crate) const UNPARK_DUE_MAX: i64 = 256;
/// Most tasks parked on a limit that units given back (a correction) unpark at once.
pub(crate) const UNPARK_ON_REFUND: i64 = 64;
/// How long a task parked on a full concurrency key stays parked at most: a slot freed
/// unparks the best one at once; this only bounds a wake-up that was missed.
pub(crate) const CONCURRENCY_RECHECK_MS: i64 = 60_000;

/// What `tasks.parked` holds for a task parked on a rate limit.
pub(crate) fn parked_on_rate(key: &str) -> String {
    format!("rate:{key}")
}

/// What `tasks.parked` holds for a task parked on a concurrency key.
pub(crate) fn parked_on_concurrency(key: &str) -> String {
    format!("concurrency:{key}")
}

/// A rate limit's bucket as stored: `level` counts `units × per_ms` per unit (each millisecond
/// refills `units` of them), so refills are exact integers; full at `units × per_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub(crate) units: i64,
    pub(crate) per_ms: i64,
    pub(crate) level: i64,
    pub(crate) refilled_at: i64,
}

impl Bucket {
    /// A full bucket for a new limit.
    pub(crate) fn full(limit: &baton_core::Limit, now: i64) -> Bucket {
        let (units, per_ms) = (limit.units as i64, limit.per_ms as i64);
        Bucket {
            units,
            per_ms,
            level: units * per_ms,
            refilled_at: now,
        }
    }

    /// The bucket under a changed limit: what had been drawn from it stays drawn, so a bigger
    /// limit has its extra units at once and a smaller one may start in debt.
    pub(crate) fn resized(self, limit: &baton_core::Limit, now: i64) -> Bucket {
        let mut b = self;
        b.refill(now);
        let (units, per_ms) = (limit.units as i64, limit.per_ms as i64);
        let drawn = (b.capacity() - b.level + b.per_ms - 1).div_euclid(b.per_ms.max(1));
        Bucket {
            units,
            per_ms,
            level: ((units - drawn) * per_ms).clamp(-units * per_ms, units * per_ms),
            refilled_at: now,
        }
    }

    fn capacity(&self) -> i64 {
        self.units * self.per_ms
    }

    pub(crate) fn refill(&mut self, now: i64) {
        if now > self.refilled_at {
            let added = (now - self.refilled_at).saturating_mul(self.units);
            self.level = self.level.saturating_add(added).min(self.capacity());
            self.refilled_at = now;
        }
    }

    /// What drawing `units` takes (never more than a full bucket, so that a task asking for
    /// more than a changed limit holds still runs, alone, when it is full).
    fn need(&self, units: u64) -> i64 {
        (units as i64).min(self.units) * self.per_ms
    }

    /// Whole units available now (after [`Bucket::refill`]).
    pub(crate) fn available(&self) -> i64 {
        self.level.max(0) / self.per_ms
    }

    /// The first millisecond at which the bucket holds `level` (it refills `units` a ms).
    fn time_of(&self, level: i64) -> i64 {
        let short = level - self.level;
        if short <= 0 {
            self.refilled_at
        } else {
            self.refilled_at + (short + self.units - 1) / self.units
        }
    }

    /// When the bucket will hold what drawing `units` takes, if it does not now.
    pub(crate) fn short_until(&self, units: u64) -> Option<i64> {
        let need = self.need(units);
        (self.level < need).then(|| self.time_of(need))
    }

    /// When the bucket is full again.
    pub(crate) fn full_at(&self) -> i64 {
        self.time_of(self.capacity())
    }

    /// Charges (or gives back, when negative) `units` after the fact, keeping the debt under
    /// one full bucket.
    pub(crate) fn correct(&mut self, units: i64, now: i64) {
        self.refill(now);
        let cap = self.capacity();
        self.level = (self.level - units.saturating_mul(self.per_ms)).clamp(-cap, cap);
    }
}

/// Why a candidate stays pending: the key (as `tasks.parked` holds it) and when claims look at
/// it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Park {
    pub(crate) parked: String,
    pub(crate) until: i64,
}

/// The state of every key a claim's candidates name, read (and on PostgreSQL locked) in the
/// claim's transaction, and what the claim changed in it.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// The keys' rows as read (a name without a limit, deleted since, limits nothing).
    pub(crate) keys: KeyStates,
    /// Units promised to tasks parked by this claim, per limit: each parked task wakes when
    /// the bucket has its units beyond those parked before it.
    reserved: HashMap<String, i64>,
    /// Limits whose bucket this claim changed.
    pub(crate) drawn: BTreeSet<String>,
    /// Tasks this claim handed out per concurrency key, written once at its end.
    pub(crate) taken: BTreeMap<String, i64>,
}

impl Gate {
    /// Hands the task out (drawing from its limits, counting it in its keys) or parks it on
    /// the first key without room. Handed out, the answer is the earliest its assignment may be
    /// stamped: not before its keys had room (a slot freed, a bucket refilled), by whichever
    /// node's clock said so.
    pub(crate) fn admit(&mut self, flow: &Flow, now: i64) -> Result<i64, Park> {
        for (key, max) in &flow.concurrency {
            if self.keys.held.get(key).copied().unwrap_or(0) >= i64::from(*max) {
                return Err(Park {
                    parked: parked_on_concurrency(key),
                    until: now + CONCURRENCY_RECHECK_MS,
                });
            }
        }
        for (key, units) in &flow.rate {
            let Some(bucket) = self.keys.buckets.get_mut(key) else {
                continue;
            };
            bucket.refill(now);
            let need = bucket.need(*units);
            if bucket.level < need {
                let reserved = self.reserved.entry(key.clone()).or_insert(0);
                *reserved += need;
                return Err(Park {
                    parked: parked_on_rate(key),
                    until: bucket.time_of(*reserved).max(now + 1),
                });
            }
        }
        let mut not_before = now;
        for (key, units) in &flow.rate {
            if let Some(bucket) = self.keys.buckets.get_mut(key) {
                bucket.level -= bucket.need(*units);
                not_before = not_before.max(bucket.refilled_at);
                self.drawn.insert(key.clone());
            }
        }
        for (key, _) in &flow.concurrency {
            *self.keys.held.entry(key.clone()).or_insert(0) += 1;
            *self.taken.entry(key.clone()).or_insert(0) += 1;
            not_before = not_before.max(self.keys.freed.get(key).copied().unwrap_or(0));
        }
        Ok(not_before)
    }
}

/// The rounds of candidates a claim reads: the first as many as it wants; another, four times
/// larger, only if the last parked some and did not fill the claim, until
/// [`CLAIM_ROUNDS_MAX`] rounds or [`CLAIM_SCAN_MAX`] candidates.
#[derive(Debug)]
pub(crate) struct Rounds {
    next: usize,
    asked: usize,
    scanned: usize,
    rounds: usize,
    done: bool,
}

impl Rounds {
    pub(crate) fn new(wanted: usize) -> Rounds {
        Rounds {
            next: wanted,
            asked: 0,
            scanned: 0,
            rounds: 0,
            done: false,
        }
    }

    /// How many candidates the next round reads, if there is one; `missing` is how many tasks
    /// the claim still wants.
    pub(crate) fn next(&mut self, missing: usize) -> Option<usize> {
        if self.done || missing == 0 || self.rounds == CLAIM_ROUNDS_MAX {
            return None;
        }
        let room = CLAIM_SCAN_MAX.saturating_sub(self.scanned);
        self.asked = self.next.max(missing).min(room);
        (room > 0).then_some(self.asked)
    }

    /// A round read `read` candidates and parked `parked` of them; fewer than it asked for
    /// were all there were.
    pub(crate) fn read(&mut self, read: usize, parked: usize) {
        self.rounds += 1;
        self.scanned += read;
        self.done = parked == 0 || read < self.asked;
        self.next = self.next.saturating_mul(4);
    }
}

/// Whether a task in `state` holds its concurrency keys.
pub(crate) fn holds_keys(state: StateKind) -> bool {
    matches!(state, StateKind::Assigned | StateKind::Executing)
}

/// What a transition changes in the keys of the task's flow: the concurrency keys it gives
/// back, and the rate limits corrected by what its ended attempt reported. (Keys are taken only
/// by claims, which count them per claim: [`Gate::taken`].)
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FlowChange {
    pub(crate) releases: Release,
    pub(crate) corrections: Vec<(String, i64)>,
}

/// The concurrency keys a transition gives back.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) enum Release {
    #[default]
    None,
    /// These, written in the spec as they are.
    Keys(Vec<String>),
    /// Those its row's `flow` holds: the keys name values of its input, which may have
    /// changed since they were filled in (a rerun with a new input).
    AsStored,
}

pub(crate) fn flow_change(record: &TransitionRecord) -> FlowChange {
    let task = &record.task;
    if task.spec.rate.is_empty() && task.spec.concurrency.is_empty() {
        return FlowChange::default();
    }
    let ended = holds_keys(record.from) && !holds_keys(task.kind());
    if !ended {
        return FlowChange::default();
    }
    let keys = &task.spec.concurrency;
    FlowChange {
        releases: if keys.is_empty() {
            Release::None
        } else if keys.iter().any(|k| k.key.contains('{')) {
            Release::AsStored
        } else {
            Release::Keys(keys.iter().map(|k| k.key.clone()).collect())
        },
        corrections: task.rate_corrections(&task.lease_usage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_merge_by_priority_then_turn_then_id() {
        let c = |priority, turn, id| Candidate {
            priority,
            turn,
            id: Uuid::from_u128(id),
        };
        let mut all = vec![c(0, 5, 1), c(2, 9, 2), c(0, 1, 3), c(2, 9, 0), c(1, 0, 4)];
        best(&mut all, 4);
        assert_eq!(all, vec![c(2, 9, 0), c(2, 9, 2), c(1, 0, 4), c(0, 1, 3)]);
    }

    #[test]
    fn deltas_list_only_the_states_that_changed() {
        let mut d = Deltas::default();
        d.created(StateKind::Pending);
        d.moved(StateKind::Pending, StateKind::Assigned);
        d.moved(StateKind::Blocked, StateKind::Pending);
        let changes: Vec<_> = d.changes().collect();
        assert_eq!(
            changes,
            vec![
                (StateKind::Blocked, -1),
                (StateKind::Pending, 1),
                (StateKind::Assigned, 1)
            ]
        );
    }
}
