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
//!   assignment each chosen task gets ([`assignment`]).

use baton_core::{Event, LeaseId, StateKind, Task, TaskId};
use uuid::Uuid;

use crate::{ClaimRequest, StoreError, TransitionRecord, PAGE_ROWS_MAX};

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
    pub(crate) ready_at: Option<i64>,
    pub(crate) id: Uuid,
}

/// Keeps the `wanted` best candidates, best first: the highest priority, then the longest
/// ready, then the lowest id. The candidates come from one index range per capability set, so
/// this merges those ranges.
pub(crate) fn best(candidates: &mut Vec<Candidate>, wanted: usize) {
    candidates.sort_unstable_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.ready_at.cmp(&b.ready_at))
            .then(a.id.cmp(&b.id))
    });
    candidates.truncate(wanted);
}

/// The transition assigning `task` to the claiming agent under `lease`, if the lifecycle
/// accepts it (a candidate is pending, so it does unless the task changed since it was read).
pub(crate) fn assignment(
    task: &Task,
    request: &ClaimRequest,
    lease: LeaseId,
) -> Option<TransitionRecord> {
    let event = Event::AgentAssigned {
        agent: request.agent,
        capabilities: request.capabilities.clone(),
        lease,
    };
    // Never stamped before the task's last change, whatever the clock did since.
    let at = request.now.max(task.updated_at);
    TransitionRecord::apply(task, event, at).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_merge_by_priority_then_readiness_then_id() {
        let c = |priority, ready_at, id| Candidate {
            priority,
            ready_at: Some(ready_at),
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
