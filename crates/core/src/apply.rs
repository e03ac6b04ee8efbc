//! The transition function: `apply(task, event, now) -> Transition | Rejection`.
//!
//! It looks up the rules for the task's state and the event in the lifecycle table, evaluates
//! their guards, and fires the one whose guards hold: the new task is built from the rule's
//! target state and the event's data, and the rule's effect kinds are instantiated as
//! [`Effect`]s. Nothing here reads a clock, draws randomness or performs I/O.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, Submission};
use crate::ids::{AgentId, Capability, FencingToken, LeaseId, TaskId, TaskKey, Timestamp};
use crate::lifecycle::{Cond, EffectKind, Guard, Lifecycle, Rule, DEFAULT};
use crate::retry::backoff_ms;
use crate::spec::{AgentLostPolicy, CompensationSpec, SpecError, TaskSpec};
use crate::task::{
    CancelReason, DeadlineKind, Deadlines, EnteredAt, Lease, Overruled, Paused, State, StateKind,
    Task, TaskError,
};
use crate::template::{is_template, Unresolved, INPUT_UNRESOLVED};
use crate::usage::{take_report, Usage};

/// What a transition asks the engine to do once it is durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// The task is ready: wake agents waiting for these capabilities.
    WakeAgents {
        capabilities: BTreeSet<Capability>,
    },
    ArmDeadline {
        kind: DeadlineKind,
        at: Timestamp,
    },
    DisarmDeadline {
        kind: DeadlineKind,
    },
    /// The lease ended normally; the agent's slot is free.
    EndLease {
        agent: AgentId,
        lease: LeaseId,
    },
    /// The lease was taken away; the agent must stop working on the task.
    RevokeLease {
        agent: AgentId,
        lease: LeaseId,
        token: FencingToken,
    },
    /// The task completed: release the dependents with nothing left open.
    ReleaseDependents,
    /// The task ended failed or cancelled: send `upstream_failed` to its dependents.
    FailDependents,
    /// The task was reopened: send `upstream_revived` to the dependents its failure cancelled.
    ReviveDependents,
    /// The task waits for its dependencies again: send it `upstream_failed` if one has ended.
    CheckUpstream,
    /// Send `retry` at `at`; the next attempt is `attempt`.
    ScheduleRetry {
        at: Timestamp,
        attempt: u32,
    },
    /// Submit the compensation task into the task's workflow (boxed: the other effects are
    /// small, and every transition carries a vector of them).
    Compensate {
        spec: Box<CompensationSpec>,
    },
    /// The task waits for `signal`: deliver the oldest one its workflow kept, if any.
    AwaitSignal {
        signal: String,
    },
    /// The task wakes at `at` (a delay or a sleep).
    ArmWake {
        at: Timestamp,
    },
}

impl Effect {
    /// Whether the effect must survive a crash: it changes other tasks (dependents,
    /// compensation), so it is stored in the outbox with its transition and carried out from
    /// there. The others (wake-ups, timers, leases) follow from the stored state again.
    pub fn is_durable(&self) -> bool {
        matches!(
            self,
            Effect::ReleaseDependents
                | Effect::FailDependents
                | Effect::ReviveDependents
                | Effect::CheckUpstream
                | Effect::Compensate { .. }
                | Effect::AwaitSignal { .. }
        )
    }
}

/// An accepted event: the task after it, the rule that fired, and the effects to carry out.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub task: Task,
    /// `None` when the event created the task.
    pub from: Option<StateKind>,
    pub rule: &'static Rule,
    pub effects: Vec<Effect>,
    /// What the event's usage report added to the task's (and so its workflow's) spending.
    pub usage_added: Usage,
}

/// Why an event was refused. Nothing changes when an event is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// No rule accepts the event from the task's state.
    NotAccepted { accepted: Vec<EventKind> },
    /// Rules exist, but a guard of the closest one does not hold.
    GuardFailed { guard: String, detail: String },
    /// The report's lease is not the task's current lease: the agent must stop working on
    /// the task. `loss` says why.
    StaleLease {
        reported: FencingToken,
        current: FencingToken,
        loss: LeaseLoss,
    },
    /// The same report was already applied; answer it as before.
    Duplicate,
    /// The event contradicts what the task already recorded.
    Conflict { detail: String },
    /// The submitted spec is out of bounds.
    InvalidSpec { field: String, expected: String },
    /// An operator took the report's lease away, or ended or reopened the task (`by_event`):
    /// the agent must stop working on it.
    Overruled {
        by_event: EventKind,
        by: String,
        reason: String,
    },
}

impl Refusal {
    /// Stable machine-readable code, e.g. `guard_failed` or `stale_lease`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotAccepted { .. } => "not_accepted",
            Refusal::GuardFailed { .. } => "guard_failed",
            Refusal::StaleLease { .. } => "stale_lease",
            Refusal::Duplicate => "duplicate",
            Refusal::Conflict { .. } => "conflict",
            Refusal::InvalidSpec { .. } => "invalid_spec",
            Refusal::Overruled { by_event, .. } => match by_event {
                EventKind::SkipRequested => "task_skipped",
                EventKind::FailRequested => "task_failed_by_operator",
                EventKind::Reopened => "task_rerun",
                EventKind::Superseded => "task_superseded",
                _ => "task_paused",
            },
        }
    }
}

/// Why a report's lease is not the task's current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseLoss {
    /// A newer assignment holds the task.
    Superseded,
    /// The lease ended or was taken back (a deadline passed, the agent was declared dead, it
    /// gave the task back) and the task has not been assigned again.
    Revoked,
    /// The lease is another agent's.
    OtherAgent,
    /// No lease with this token was ever issued.
    NeverIssued,
}

/// A refused event, naming the task, its state, the event and the rule that refused it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct Rejection {
    pub task: TaskId,
    /// `None` when the task does not exist yet.
    pub state: Option<StateKind>,
    pub event: EventKind,
    pub refusal: Refusal,
}

impl Rejection {
    pub fn is_duplicate(&self) -> bool {
        self.refusal == Refusal::Duplicate
    }

    /// Stable machine-readable code: the refusal's, except that an event a cancelled task
    /// does not accept is `task_cancelled` (what an agent or operator acts on).
    pub fn code(&self) -> &'static str {
        match &self.refusal {
            Refusal::NotAccepted { .. } if self.state == Some(StateKind::Cancelled) => {
                "task_cancelled"
            }
            other => other.code(),
        }
    }
}

impl Rejection {
    /// A refused operator's retry in an operator's words: what the task is, what a retry
    /// needs, and whether the task can still be cancelled.
    fn retry_refused(&self) -> Option<String> {
        let state = self.state?;
        let (is, cancellable) = match (&self.refusal, state) {
            (Refusal::NotAccepted { accepted }, _) => (
                match state {
                    StateKind::Blocked => {
                        "is blocked (waiting for its dependencies, a signal or a timer), not failed"
                    }
                    StateKind::Pending => "is pending (ready, waiting for an agent), not failed",
                    StateKind::Assigned => "is assigned to an agent, not failed",
                    StateKind::Executing => "is executing on an agent, not failed",
                    StateKind::Completed => "completed",
                    StateKind::Failed => "failed",
                    StateKind::Cancelled => "was cancelled, which is final",
                },
                accepted.contains(&EventKind::CancelRequested),
            ),
            (Refusal::GuardFailed { .. }, StateKind::Failed) => (
                "failed, but not for good: its next attempt is already scheduled",
                true,
            ),
            _ => return None,
        };
        let then = if cancellable {
            "; it can still be cancelled"
        } else {
            ""
        };
        Some(format!(
            "task {} {is}: only a task that failed for good can be retried{then}",
            self.task
        ))
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.event == EventKind::RetryRequested {
            if let Some(text) = self.retry_refused() {
                return f.write_str(&text);
            }
        }
        let state = self.state.map_or("new", StateKind::name);
        write!(f, "task {} ({state}) refused `{}`: ", self.task, self.event)?;
        match &self.refusal {
            // A completed task takes nothing but an operator's rerun.
            Refusal::NotAccepted { accepted }
                if accepted.is_empty() || self.state == Some(StateKind::Completed) =>
            {
                let lower = state.to_lowercase();
                let rerun = if accepted.contains(&EventKind::Reopened) {
                    " (an operator can still rerun it)"
                } else {
                    ""
                };
                write!(
                    f,
                    "the task is {lower}, which is final: it cannot take {}{rerun}",
                    self.event.in_words()
                )
            }
            Refusal::NotAccepted { accepted } => {
                let lower = state.to_lowercase();
                let mut words: Vec<&str> = accepted.iter().map(|e| e.in_words()).collect();
                let last = words.pop().unwrap_or_default();
                let list = if words.is_empty() {
                    last.to_owned()
                } else {
                    format!("{} or {last}", words.join(", "))
                };
                write!(
                    f,
                    "a {lower} task cannot take {}; it takes only {list}",
                    self.event.in_words(),
                )
            }
            Refusal::GuardFailed { guard, detail } => write!(f, "guard `{guard}` failed: {detail}"),
            Refusal::StaleLease {
                reported,
                current,
                loss,
            } => match loss {
                LeaseLoss::Superseded => write!(
                    f,
                    "the report's lease (fencing token {reported}) was superseded by token \
                     {current}; a newer assignment owns this task"
                ),
                LeaseLoss::Revoked => write!(
                    f,
                    "the report's lease (fencing token {reported}) has ended: the task was \
                     taken back or given back and is {state} now; stop working on it"
                ),
                LeaseLoss::OtherAgent => write!(
                    f,
                    "the lease with fencing token {reported} belongs to another agent"
                ),
                LeaseLoss::NeverIssued if *current == FencingToken(0) => {
                    f.write_str("no lease was ever issued for this task: claim it first")
                }
                LeaseLoss::NeverIssued => write!(
                    f,
                    "no lease with fencing token {reported} was issued for this task (the \
                     latest is {current})"
                ),
            },
            Refusal::Duplicate => f.write_str("the same report was already applied"),
            Refusal::Conflict { detail } => f.write_str(detail),
            Refusal::InvalidSpec { field, expected } => {
                write!(f, "invalid `{field}`: expected {expected}")
            }
            Refusal::Overruled {
                by_event,
                by,
                reason,
            } => {
                let what = match by_event {
                    EventKind::SkipRequested => "skipped (completed with an operator's result)",
                    EventKind::FailRequested => "failed for good by an operator",
                    EventKind::Reopened => "reopened for a rerun",
                    EventKind::Superseded => "superseded by a rerun of the task that created it",
                    _ => "paused and taken back from its agent",
                };
                write!(
                    f,
                    "the task was {what} by {by} ({reason}); the report's lease no longer \
                     counts: stop working on it"
                )
            }
        }
    }
}

/// Creates a task from its `submitted` event, with the default lifecycle.
pub fn submit(submission: &Submission, now: Timestamp) -> Result<Transition, Rejection> {
    DEFAULT.submit(submission, now)
}

/// Applies `event` to `task` at `now`, with the default lifecycle.
pub fn apply(task: &Task, event: &Event, now: Timestamp) -> Result<Transition, Rejection> {
    DEFAULT.apply(task, event, now)
}

impl Lifecycle {
    /// Creates a task from its `submitted` event.
    pub fn submit(&self, sub: &Submission, now: Timestamp) -> Result<Transition, Rejection> {
        let reject = |refusal| Rejection {
            task: sub.task,
            state: None,
            event: EventKind::Submitted,
            refusal,
        };
        sub.spec
            .validate()
            .map_err(|SpecError { field, expected }| {
                reject(Refusal::InvalidSpec { field, expected })
            })?;
        let met = first_missing(&sub.spec.depends_on, &sub.completed).is_none();
        let resolves = met && sub.spec.for_each.is_none();
        if let Some(refusal) = resolution_mismatch(
            &sub.spec,
            resolves,
            sub.input.as_ref(),
            sub.unresolved.as_ref(),
        ) {
            return Err(reject(refusal));
        }
        let event = Event::Submitted(sub.clone());
        let rule = self.select(None, None, &event, now).map_err(reject)?;
        let mut task = Task {
            id: sub.task,
            workflow: sub.workflow,
            spec: Arc::clone(&sub.spec),
            dependencies: sub.spec.depends_on.clone(),
            state: State::Blocked,
            version: 1,
            attempt: 1,
            attempts_allowed: sub.spec.retry.max_attempts,
            fencing_token: FencingToken(0),
            deadlines: Deadlines::default(),
            errors: Vec::new(),
            entered_at: EnteredAt::default(),
            created_at: now,
            updated_at: now,
            seed: sub.seed,
            input: sub.input.clone(),
            expanded: None,
            usage: Usage::new(),
            lease_usage: Usage::new(),
            wake_at: None,
            paused: None,
            overruled: None,
        };
        task.state = enter(rule, &task, &event, now, now);
        task.wake_at = wake_after(rule, &task, now);
        if let State::Failed { error, .. } = &task.state {
            task.errors.push(error.clone());
        }
        task.entered_at.0[rule.to.index()] = Some(now);
        if rule.has_effect(EffectKind::Timers) {
            task.deadlines = deadlines_after(rule, &Deadlines::default(), &sub.spec, now);
        }
        let effects = effects(rule, None, &task);
        Ok(Transition {
            task,
            from: None,
            rule,
            effects,
            usage_added: Usage::new(),
        })
    }

    /// Applies `event` to `task` at `now`: the new task and its effects, or why not.
    pub fn apply(
        &self,
        task: &Task,
        event: &Event,
        now: Timestamp,
    ) -> Result<Transition, Rejection> {
        let from = task.kind();
        let reject = |refusal| Rejection {
            task: task.id,
            state: Some(from),
            event: event.kind(),
            refusal,
        };
        if let Some(refusal) = precheck(task, event) {
            return Err(reject(refusal));
        }
        let rule = self
            .select(Some(from), Some(task), event, now)
            .map_err(reject)?;

        let mut next = task.clone();
        next.version += 1;
        next.updated_at = now;
        let usage_added = match event.usage() {
            Some(reported) => take_report(&mut next.usage, &mut next.lease_usage, reported),
            None => Usage::new(),
        };
        match event {
            Event::AgentAssigned { .. } => {
                next.fencing_token = task.fencing_token.next();
                next.lease_usage.clear();
            }
            Event::DependencyAdded { dependency } => next.dependencies.push(dependency.clone()),
            Event::UpstreamRevived { dependencies, .. } => {
                // Dependencies in the graph but not in its list (added by decomposition while
                // it was cancelled, before that was recorded on it) join it now.
                for d in dependencies {
                    if !next.dependencies.contains(&d.key) {
                        next.dependencies.push(d.key.clone());
                    }
                }
            }
            Event::DependenciesMet {
                input: Some(input), ..
            } => next.input = Some(input.clone()),
            Event::ForEachExpanded { tasks, .. } if rule.to != StateKind::Failed => {
                next.dependencies.extend(tasks.iter().cloned());
                next.expanded = Some(tasks.len() as u32);
            }
            Event::Retry => next.attempt += 1,
            Event::RetryRequested { .. } => {
                next.attempt += 1;
                next.attempts_allowed = task.attempt + task.spec.retry.max_attempts;
            }
            Event::PauseRequested {
                requested_by,
                reason,
                ..
            } if task.paused.is_none() => {
                next.paused = Some(Paused {
                    by: requested_by.clone(),
                    reason: reason.clone(),
                    at: now,
                    frozen_at: None,
                })
            }
            Event::Reopened {
                input,
                keep_items,
                retired,
                ..
            } => {
                next.dependencies.retain(|k| !retired.contains(k));
                next.attempt += 1;
                next.attempts_allowed = task.attempt + task.spec.retry.max_attempts;
                next.input = None;
                next.wake_at = None;
                // A fan-out expands again: its items (superseded in the same commit) are no
                // longer its dependencies until its next expansion.
                if let Some(n) = next.expanded.filter(|_| !keep_items) {
                    next.expanded = None;
                    let items: Vec<TaskKey> = (0..n as usize)
                        .map(|i| crate::template::item_key(&task.spec.key, i))
                        .collect();
                    next.dependencies.retain(|k| !items.contains(k));
                }
                // `null` is no new input: it reads back so from the history's JSON.
                if let Some(input) = input.as_ref().filter(|v| !v.is_null()) {
                    next.spec = Arc::new(TaskSpec {
                        input: input.clone(),
                        ..(*task.spec).clone()
                    });
                }
            }
            _ => {}
        }
        // A paused task's timers stop once no agent runs it: they are armed from the moment
        // they stopped, and a resume moves them on by the time the pause lasted.
        let leased = matches!(rule.to, StateKind::Assigned | StateKind::Executing);
        let clock = match next.paused.as_mut() {
            Some(p) if !leased => *p.frozen_at.get_or_insert(now),
            _ => now,
        };
        let holds = matches!(
            event,
            Event::PauseRequested { .. } | Event::ResumeRequested { .. }
        ) && rule.from == Some(rule.to);
        if holds {
            // A pause or resume leaves the task where it is, timers and all.
            if let Event::ResumeRequested { .. } = event {
                let frozen = task.paused.as_ref().and_then(|p| p.frozen_at);
                next.paused = None;
                if let Some(frozen) = frozen {
                    resume_timers(&mut next, now.0.saturating_sub(frozen.0));
                }
            }
        } else {
            next.state = enter(rule, &next, event, now, clock);
            next.wake_at = wake_after(rule, &next, clock);
            if let State::Failed { error, .. } = &next.state {
                next.errors.push(error.clone());
            }
            if rule.has_effect(EffectKind::Timers) {
                next.deadlines = deadlines_after(rule, &task.deadlines, &task.spec, clock);
                // Nobody confirmed that the claim's answer arrived: the agent's first heartbeat
                // (or outcome) is due within the start timeout, as a start report would be.
                if let Event::ExecutionStarted { by_claim: true, .. } = event {
                    if let Some(start_ms) = task.spec.timeouts.start_ms {
                        let due = clock.plus_ms(start_ms);
                        next.deadlines.heartbeat = next.deadlines.heartbeat.map(|h| h.min(due));
                    }
                }
            }
        }
        if next.state.is_terminal() {
            next.paused = None;
        }
        if let Some((by, reason)) = event.control() {
            let overrules = rule.has_effect(EffectKind::RevokeLease)
                || !matches!(
                    event,
                    Event::PauseRequested { .. } | Event::ResumeRequested { .. }
                );
            if overrules {
                next.overruled = Some(Overruled {
                    by_event: event.kind(),
                    by: by.to_owned(),
                    reason: reason.to_owned(),
                    token: task.fencing_token,
                });
            }
        }
        if rule.from != Some(rule.to) {
            next.entered_at.0[rule.to.index()] = Some(now);
        }
        let effects = effects(rule, Some(task), &next);
        Ok(Transition {
            task: next,
            from: Some(from),
            rule,
            effects,
            usage_added,
        })
    }

    /// The rule that fires, or the refusal of the rule that came closest to firing.
    fn select(
        &self,
        from: Option<StateKind>,
        task: Option<&Task>,
        event: &Event,
        now: Timestamp,
    ) -> Result<&'static Rule, Refusal> {
        let mut closest: Option<(usize, Guard, String)> = None;
        for rule in self.rules_for(from, event.kind()) {
            let mut failed = None;
            for (passed, guard) in rule.guards.iter().enumerate() {
                let outcome = eval(guard.cond, task, event, now);
                if outcome.is_ok() != guard.holds {
                    let detail = outcome
                        .err()
                        .unwrap_or_else(|| format!("`{}` must not hold", guard.cond.label()));
                    failed = Some((passed, *guard, detail));
                    break;
                }
            }
            match failed {
                None => return Ok(rule),
                Some(f) if closest.as_ref().is_none_or(|c| f.0 > c.0) => closest = Some(f),
                Some(_) => {}
            }
        }
        match closest {
            Some((_, guard, detail)) => Err(Refusal::GuardFailed {
                guard: guard.to_string(),
                detail,
            }),
            None => Err(Refusal::NotAccepted {
                accepted: from
                    .map(|s| self.events_from(s).into_iter().collect())
                    .unwrap_or_default(),
            }),
        }
    }
}

/// Refusals that come before the table: duplicates, stale leases and contradictions.
fn precheck(task: &Task, event: &Event) -> Option<Refusal> {
    if let Some(reported) = event.usage() {
        let units = reported
            .keys()
            .filter(|u| !task.usage.contains_key(*u))
            .count()
            + task.usage.len();
        if units > crate::usage::UNITS_MAX {
            return Some(Refusal::InvalidSpec {
                field: "usage".into(),
                expected: format!(
                    "at most {} units a task, all reports together (it has {})",
                    crate::usage::UNITS_MAX,
                    task.usage.len()
                ),
            });
        }
    }
    if let (Some((_, token)), Some(o)) = (event.report(), &task.overruled) {
        let current = task.state.lease().is_some_and(|l| l.token == token);
        if o.token == token && !current {
            return Some(Refusal::Overruled {
                by_event: o.by_event,
                by: o.by.clone(),
                reason: o.reason.clone(),
            });
        }
    }
    match (event, &task.state) {
        (Event::Reopened { root, input, .. }, _) => {
            if input.is_some() && *root != task.spec.key {
                Some(Refusal::Conflict {
                    detail: format!(
                        "only the task a rerun starts from (`{root}`) takes a new input"
                    ),
                })
            } else {
                None
            }
        }
        (Event::Submitted(_), _) => Some(Refusal::Conflict {
            detail: "the task already exists".into(),
        }),
        (
            Event::ExecutionSucceeded { token, result, .. },
            State::Completed {
                token: done,
                result: kept,
            },
        ) if token == done => Some(if result.as_ref() == Some(kept) {
            Refusal::Duplicate
        } else {
            Refusal::Conflict {
                detail: "this lease already completed the task with a different result".into(),
            }
        }),
        (Event::ExecutionStarted { token, .. }, State::Executing { lease, .. })
            if *token == lease.token =>
        {
            Some(Refusal::Duplicate)
        }
        (Event::ExecutionFailed { token, error, .. }, State::Failed { error: kept, .. })
            if kept.token == Some(*token) =>
        {
            Some(
                if kept.kind == error.kind && kept.message == error.message {
                    Refusal::Duplicate
                } else {
                    Refusal::Conflict {
                        detail: "this lease already reported a different failure".into(),
                    }
                },
            )
        }
        (Event::CancelRequested { .. }, State::Cancelled { .. }) => Some(Refusal::Duplicate),
        (Event::DependenciesMet { .. }, State::Blocked) if task.wake_at.is_some() => {
            Some(Refusal::Duplicate)
        }
        (
            Event::DependenciesMet {
                input,
                unresolved,
                results,
                ..
            },
            State::Blocked,
        ) => match (task.expanded, results) {
            (Some(_), Some(_)) if unresolved.is_some() || input.is_some() => {
                Some(Refusal::Conflict {
                    detail: "the release of an expanded task carries its items' results, or \
                             why they cannot be gathered, not both"
                        .into(),
                })
            }
            (Some(_), None) if unresolved.is_none() => Some(Refusal::Conflict {
                detail: "the release of an expanded task must carry its items' results".into(),
            }),
            (Some(_), _) => None,
            (None, Some(_)) => Some(Refusal::Conflict {
                detail: "only an expanded for_each task completes with its items' results".into(),
            }),
            (None, None) => resolution_mismatch(
                &task.spec,
                task.spec.for_each.is_none(),
                input.as_ref(),
                unresolved.as_ref(),
            ),
        },
        (
            Event::ForEachExpanded {
                tasks, unresolved, ..
            },
            State::Blocked,
        ) => {
            let numbered = tasks
                .iter()
                .enumerate()
                .all(|(i, k)| *k == crate::template::item_key(&task.spec.key, i));
            (!numbered || (unresolved.is_some() && !tasks.is_empty())).then(|| Refusal::Conflict {
                detail: format!(
                    "a fan-out's tasks are `{0}[0]`, `{0}[1]`, … in element order, and \
                         none when it found no array",
                    task.spec.key
                ),
            })
        }
        (Event::DependencyAdded { dependency }, _) if task.dependencies.contains(dependency) => {
            Some(Refusal::Duplicate)
        }
        _ => event.report().and_then(|(agent, token)| {
            lease_loss(task, agent, token).map(|loss| Refusal::StaleLease {
                reported: token,
                current: task.fencing_token,
                loss,
            })
        }),
    }
}

/// Whether the event that makes the task ready carries exactly the evidence its input needs:
/// a template's resolution (the input, or the reference that found nothing) when the
/// dependencies are `met`, and nothing for a plain input.
fn resolution_mismatch(
    spec: &TaskSpec,
    met: bool,
    input: Option<&serde_json::Value>,
    unresolved: Option<&Unresolved>,
) -> Option<Refusal> {
    let template = is_template(&spec.input);
    let given = match (input, unresolved) {
        (None, None) => false,
        (Some(_), None) | (None, Some(_)) => true,
        (Some(_), Some(_)) => {
            return Some(Refusal::Conflict {
                detail: "the event carries both a resolved input and an unresolved reference"
                    .into(),
            })
        }
    };
    match (template && met, given) {
        (true, false) => Some(Refusal::Conflict {
            detail: "the task's input is a template: the event must carry its resolution".into(),
        }),
        (false, true) => Some(Refusal::Conflict {
            detail: "the event carries an input resolution the task does not need".into(),
        }),
        _ => None,
    }
}

/// The one judgement of a report (an agent's, or the engine's `agent_lost`) against the
/// task's lease: `None` when the report
/// holds the current lease, or the task has ended (completed or cancelled: the table refuses
/// the report for that), else why the lease is not the agent's.
fn lease_loss(task: &Task, agent: AgentId, token: FencingToken) -> Option<LeaseLoss> {
    if token < task.fencing_token {
        return Some(LeaseLoss::Superseded);
    }
    if token > task.fencing_token {
        return Some(LeaseLoss::NeverIssued);
    }
    match task.state.lease() {
        Some(lease) if lease.agent == agent => None,
        Some(_) => Some(LeaseLoss::OtherAgent),
        None if matches!(task.kind(), StateKind::Completed | StateKind::Cancelled) => None,
        None if token == FencingToken(0) => Some(LeaseLoss::NeverIssued),
        None => Some(LeaseLoss::Revoked),
    }
}

/// Evaluates one condition: `Ok` if it holds, otherwise why not, in words a user can act on.
fn eval(cond: Cond, task: Option<&Task>, event: &Event, now: Timestamp) -> Result<(), String> {
    match cond {
        Cond::DependenciesMet => {
            let (deps, completed) = match (event, task) {
                (Event::Submitted(sub), _) => (&sub.spec.depends_on, &sub.completed),
                (Event::DependenciesMet { completed, .. }, Some(t))
                | (Event::ForEachExpanded { completed, .. }, Some(t)) => {
                    (&t.dependencies, completed)
                }
                _ => return Err("the event carries no dependency evidence".into()),
            };
            match first_missing(deps, completed) {
                Some(dep) => Err(format!("dependency `{dep}` has not completed")),
                None => Ok(()),
            }
        }
        Cond::IsDependency => match (event, task) {
            (Event::UpstreamFailed { upstream }, Some(t)) if t.dependencies.contains(upstream) => {
                Ok(())
            }
            (Event::UpstreamFailed { upstream }, _) => {
                Err(format!("`{upstream}` is not a dependency of this task"))
            }
            _ => Err("the event names no upstream task".into()),
        },
        Cond::CancelledByUpstream => match (event, task.map(|t| &t.state)) {
            (
                Event::UpstreamRevived { upstream, .. },
                Some(State::Cancelled {
                    reason: CancelReason::Upstream { upstream: cause },
                }),
            ) if upstream == cause => Ok(()),
            (Event::UpstreamRevived { upstream, .. }, _) => Err(format!(
                "the task was not cancelled because `{upstream}` failed"
            )),
            _ => Err("the event names no upstream task".into()),
        },
        Cond::OtherUpstreamEnded => match other_upstream_ended(event) {
            Some(_) => Ok(()),
            None => Err("no other dependency has ended".into()),
        },
        Cond::HasCapabilities => match (event, task) {
            (Event::AgentAssigned { capabilities, .. }, Some(t)) => {
                match t.spec.capabilities.difference(capabilities).next() {
                    Some(missing) => Err(format!("the agent lacks capability `{missing}`")),
                    None => Ok(()),
                }
            }
            _ => Err("the event names no agent".into()),
        },
        Cond::LeaseCurrent => {
            let Some((agent, token)) = event.report() else {
                return Err("the event is not an agent's report".into());
            };
            match task.map(|t| (t, lease_loss(t, agent, token))) {
                Some((t, None)) if t.state.lease().is_some() => Ok(()),
                _ => Err(format!(
                    "fencing token {token} is not the task's current lease"
                )),
            }
        }
        Cond::HasResult => match event {
            Event::ExecutionSucceeded {
                result: Some(v), ..
            } if !v.is_null() => Ok(()),
            _ => Err("a result payload is required to complete a task".into()),
        },
        Cond::RetryAllowed => {
            let Some(t) = task else {
                return Err("there is no task to retry".into());
            };
            let (kind, retryable) = failure_kind(event)?;
            if t.attempt >= t.attempts_allowed {
                Err(format!(
                    "attempt {} of {} was the last",
                    t.attempt, t.attempts_allowed
                ))
            } else if !retryable {
                Err("the error was reported as not retryable".into())
            } else if t.spec.retry.non_retryable.iter().any(|k| *k == kind) {
                Err(format!("error kind `{kind}` is listed as non-retryable"))
            } else {
                Ok(())
            }
        }
        Cond::RetryScheduled => match task.map(|t| &t.state) {
            Some(State::Failed {
                retry_at: Some(_), ..
            }) => Ok(()),
            _ => Err("no retry is scheduled: the failure is final".into()),
        },
        Cond::BackoffElapsed => match task.map(|t| &t.state) {
            Some(State::Failed {
                retry_at: Some(at), ..
            }) if *at <= now => Ok(()),
            Some(State::Failed {
                retry_at: Some(at), ..
            }) => Err(format!("the backoff runs until {at}; it is {now}")),
            _ => Err("no retry is scheduled".into()),
        },
        Cond::DeadlinePassed => {
            let Event::TimeoutExpired { deadline } = event else {
                return Err("the event names no deadline".into());
            };
            match task.and_then(|t| t.deadlines.get(*deadline)) {
                None => Err(format!("the {deadline} deadline is not armed")),
                Some(at) if at > now => Err(format!(
                    "the {deadline} deadline is at {at}, not yet passed at {now}"
                )),
                Some(_) => Ok(()),
            }
        }
        Cond::RequeueOnAgentLost => match task.map(|t| t.spec.on_agent_lost) {
            Some(AgentLostPolicy::Requeue) => Ok(()),
            _ => Err("the task's policy fails it when its agent is lost".into()),
        },
        Cond::InputResolved => match event.unresolved() {
            Some(u) => Err(u.message()),
            None => Ok(()),
        },
        Cond::AwaitsRelease => match task {
            Some(t) if t.spec.for_each.is_some() => Ok(()),
            Some(t) if t.input.is_none() && is_template(&t.spec.input) => Ok(()),
            Some(t) if t.errors.last().is_some_and(|e| e.token.is_none()) => Ok(()),
            _ => Err(
                "the task ran under a lease, and its input needs no resolution or is resolved"
                    .into(),
            ),
        },
        Cond::AwaitsExpansion => {
            let (spec, expanded) = match (event, task) {
                (Event::Submitted(sub), _) => (&sub.spec, None),
                (_, Some(t)) => (&t.spec, t.expanded),
                _ => return Err("there is no task".into()),
            };
            match (&spec.for_each, expanded) {
                (Some(_), None) => Ok(()),
                (Some(_), Some(_)) => Err("the task has expanded already".into()),
                (None, _) => Err("the task has no for_each".into()),
            }
        }
        Cond::Expanded => match task.and_then(|t| t.expanded) {
            Some(_) => Ok(()),
            None => Err("the task has not expanded into tasks".into()),
        },
        Cond::HasItems => match event {
            Event::ForEachExpanded { tasks, .. } if !tasks.is_empty() => Ok(()),
            _ => Err("the fan-out found no element".into()),
        },
        Cond::Delayed => {
            let spec = match (event, task) {
                (Event::Submitted(sub), _) => &sub.spec,
                (_, Some(t)) => &t.spec,
                _ => return Err("there is no task".into()),
            };
            match wake_time(spec, now) {
                Some(_) => Ok(()),
                None => Err("the task has no delay ahead of it and does not sleep".into()),
            }
        }
        Cond::WakeDue => match task.and_then(|t| t.wake_at) {
            Some(at) if at <= now => Ok(()),
            Some(at) => Err(format!("the task wakes at {at}; it is {now}")),
            None => Err("the task has no wake-up set".into()),
        },
        Cond::Sleeps => match task.and_then(|t| t.spec.sleep_ms) {
            Some(_) => Ok(()),
            None => Err("the task does not sleep".into()),
        },
        Cond::WaitsForSignal => match (task.and_then(|t| t.spec.wait_for.as_ref()), event) {
            (Some(wait), Event::SignalReceived { signal, .. }) if *signal != wait.signal => {
                Err(format!(
                    "the task waits for signal `{}`, not `{signal}`",
                    wait.signal
                ))
            }
            (Some(_), _) => Ok(()),
            (None, _) => Err("the task waits for no signal".into()),
        },
        Cond::Rejects => match event {
            Event::SignalReceived {
                reject: Some(_), ..
            } => Ok(()),
            _ => Err("the signal does not reject".into()),
        },
        Cond::Paused => match task.and_then(|t| t.paused.as_ref()) {
            Some(_) => Ok(()),
            None => Err("the task is not paused".into()),
        },
        Cond::PausesNow => match event {
            Event::PauseRequested { now: true, .. } => Ok(()),
            _ => Err("the pause lets the agent finish".into()),
        },
        Cond::TimeoutRequeues => match event {
            Event::TimeoutExpired {
                deadline: DeadlineKind::Start,
            } => Ok(()),
            _ => Err("only the start deadline takes a task back".into()),
        },
    }
}

/// The first dependency that the `upstream_revived` evidence says has ended, other than the
/// one revived.
fn other_upstream_ended(event: &Event) -> Option<&TaskKey> {
    let Event::UpstreamRevived {
        upstream,
        dependencies,
    } = event
    else {
        return None;
    };
    dependencies
        .iter()
        .find(|d| d.ended && d.key != *upstream)
        .map(|d| &d.key)
}

/// Error kind recorded when an executing task's agent is declared dead.
pub const AGENT_LOST: &str = "agent_lost";
/// Error kind recorded when a signal rejects what its task waited for.
pub const REJECTED: &str = "rejected";
/// Error kind recorded when an operator fails a task without naming one.
pub const FORCED: &str = "forced";

/// When a task released at `now` wakes, if it waits for a timer at all: the end of its sleep,
/// or the later of its `not_before` and its `delay_ms` from now when that is ahead.
pub fn wake_time(spec: &TaskSpec, now: Timestamp) -> Option<Timestamp> {
    if let Some(ms) = spec.sleep_ms {
        return Some(now.plus_ms(ms));
    }
    let delayed = now.plus_ms(spec.delay_ms.unwrap_or(0));
    let at = spec.not_before.map_or(delayed, |nb| nb.max(delayed));
    (at > now).then_some(at)
}

/// The task's wake-up after `rule`: set by the rules that delay a released task, kept while it
/// stays blocked, gone once it leaves.
fn wake_after(rule: &Rule, task: &Task, now: Timestamp) -> Option<Timestamp> {
    if rule.to != StateKind::Blocked {
        None
    } else if rule.guards.contains(&Guard {
        cond: Cond::Delayed,
        holds: true,
    }) {
        wake_time(&task.spec, now)
    } else {
        task.wake_at
    }
}

/// Moves a resumed task's stopped timers on by `ms`, the time its pause held them: each fires
/// with the time it had left when it stopped.
fn resume_timers(task: &mut Task, ms: u64) {
    for kind in DeadlineKind::ALL {
        let at = task.deadlines.get(kind).map(|at| at.plus_ms(ms));
        task.deadlines.set(kind, at);
    }
    task.wake_at = task.wake_at.map(|at| at.plus_ms(ms));
    if let State::Failed {
        retry_at: Some(at), ..
    } = &mut task.state
    {
        *at = at.plus_ms(ms);
    }
}

/// The first of `deps` not in `completed`, in time linear in both.
fn first_missing<'a>(deps: &'a [TaskKey], completed: &[TaskKey]) -> Option<&'a TaskKey> {
    if deps.is_empty() {
        return None;
    }
    if completed.len() <= 16 {
        return deps.iter().find(|d| !completed.contains(d));
    }
    let done: HashSet<&TaskKey> = completed.iter().collect();
    deps.iter().find(|d| !done.contains(d))
}

/// The error kind and retryability of the failure an event reports.
fn failure_kind(event: &Event) -> Result<(Cow<'_, str>, bool), String> {
    match event {
        Event::ExecutionFailed { error, .. } => Ok((Cow::Borrowed(&error.kind), error.retryable)),
        Event::TimeoutExpired { deadline } => Ok((Cow::Borrowed(deadline.error_kind()), true)),
        Event::AgentLost { .. } => Ok((Cow::Borrowed(AGENT_LOST), true)),
        _ => Err("the event reports no failure".into()),
    }
}

/// The state a rule enters, with its data taken from the event. `task` already carries the
/// rule's bookkeeping (new fencing token, attempt).
fn enter(rule: &Rule, task: &Task, event: &Event, now: Timestamp, clock: Timestamp) -> State {
    match rule.to {
        StateKind::Blocked => State::Blocked,
        StateKind::Pending => State::Pending,
        StateKind::Assigned => {
            let Event::AgentAssigned { agent, lease, .. } = event else {
                unreachable!("rule {rule} enters Assigned without an assignment");
            };
            State::Assigned {
                lease: Lease {
                    id: *lease,
                    agent: *agent,
                    token: task.fencing_token,
                    granted_at: now,
                },
            }
        }
        StateKind::Executing => {
            let (lease, progress) = match &task.state {
                State::Assigned { lease } => (lease.clone(), None),
                State::Executing { lease, progress } => (lease.clone(), progress.clone()),
                other => unreachable!("rule {rule} enters Executing from {other:?}"),
            };
            // A null progress reports nothing new, as an absent one: JSON does not tell them
            // apart, so replaying a stored history must not either.
            let progress = match event {
                Event::Heartbeat {
                    progress: Some(p), ..
                } if !p.is_null() => Some(p.clone()),
                _ => progress,
            };
            State::Executing { lease, progress }
        }
        StateKind::Completed => match event {
            Event::ExecutionSucceeded {
                token,
                result: Some(result),
                ..
            } => State::Completed {
                result: result.clone(),
                token: *token,
            },
            // A fan-out completes with its items' results, by no lease.
            Event::DependenciesMet {
                results: Some(results),
                ..
            } => State::Completed {
                result: serde_json::Value::Array(results.clone()),
                token: task.fencing_token,
            },
            Event::ForEachExpanded { .. } => State::Completed {
                result: serde_json::Value::Array(Vec::new()),
                token: task.fencing_token,
            },
            Event::SignalReceived { data, .. } => State::Completed {
                result: data.clone(),
                token: task.fencing_token,
            },
            Event::SkipRequested { result, .. } => State::Completed {
                result: result.clone(),
                token: task.fencing_token,
            },
            Event::TimerFired => State::Completed {
                result: serde_json::json!({ "slept_ms": task.spec.sleep_ms.unwrap_or(0) }),
                token: task.fencing_token,
            },
            other => unreachable!("rule {rule} completes without a result: {other:?}"),
        },
        StateKind::Failed => {
            let error = failure(task, event, now);
            let retry_at = rule
                .has_effect(EffectKind::ScheduleRetry)
                .then(|| clock.plus_ms(backoff_ms(&task.spec.retry, task.attempt, task.seed)));
            State::Failed { error, retry_at }
        }
        StateKind::Cancelled => State::Cancelled {
            reason: match event {
                Event::CancelRequested {
                    requested_by,
                    reason,
                } => CancelReason::Operator {
                    requested_by: requested_by.clone(),
                    reason: reason.clone(),
                },
                Event::UpstreamFailed { upstream } => CancelReason::Upstream {
                    upstream: upstream.clone(),
                },
                Event::Superseded { parent, .. } => CancelReason::Superseded {
                    parent: parent.clone(),
                },
                Event::UpstreamRevived { .. } => CancelReason::Upstream {
                    upstream: other_upstream_ended(event)
                        .unwrap_or_else(|| {
                            unreachable!("rule {rule} fired without an ended upstream")
                        })
                        .clone(),
                },
                // Recorded on a task that stays cancelled, for the same reason.
                _ if rule.from == Some(StateKind::Cancelled) => match &task.state {
                    State::Cancelled { reason } => reason.clone(),
                    other => unreachable!("rule {rule} from Cancelled on {other:?}"),
                },
                other => unreachable!("rule {rule} cancels on {other:?}"),
            },
        },
    }
}

fn failure(task: &Task, event: &Event, now: Timestamp) -> TaskError {
    let token = task.state.lease().map(|l| l.token);
    match event {
        Event::ExecutionFailed { token, error, .. } => TaskError {
            attempt: task.attempt,
            kind: error.kind.clone(),
            message: error.message.clone(),
            retryable: error.retryable,
            token: Some(*token),
            at: now,
        },
        Event::TimeoutExpired { deadline } => TaskError {
            attempt: task.attempt,
            kind: deadline.error_kind().to_owned(),
            message: format!("the {deadline} deadline passed"),
            retryable: true,
            token,
            at: now,
        },
        Event::AgentLost { agent, .. } => TaskError {
            attempt: task.attempt,
            kind: AGENT_LOST.to_owned(),
            message: format!("agent {agent} was declared dead while holding the lease"),
            retryable: true,
            token,
            at: now,
        },
        Event::SignalReceived {
            signal,
            reject: Some(reason),
            sent_by,
            ..
        } => TaskError {
            attempt: task.attempt,
            kind: REJECTED.to_owned(),
            message: format!("signal `{signal}` from {sent_by} rejected it: {reason}"),
            retryable: false,
            token: None,
            at: now,
        },
        Event::FailRequested {
            requested_by,
            reason,
            error,
        } => TaskError {
            attempt: task.attempt,
            kind: error
                .as_ref()
                .map_or_else(|| FORCED.to_owned(), |e| e.kind.clone()),
            message: match error {
                Some(e) => e.message.clone(),
                None => format!("failed by {requested_by}: {reason}"),
            },
            retryable: false,
            token,
            at: now,
        },
        other => match other.unresolved() {
            Some(u) => TaskError {
                attempt: task.attempt,
                kind: INPUT_UNRESOLVED.to_owned(),
                message: u.message(),
                retryable: false,
                token: None,
                at: now,
            },
            None => unreachable!("no failure in {other:?}"),
        },
    }
}

/// The deadlines armed after `rule` fires. `ScheduleToStart` survives a requeue from
/// `Assigned`; `StartToClose` survives heartbeats; the heartbeat deadline restarts with each.
fn deadlines_after(rule: &Rule, old: &Deadlines, spec: &TaskSpec, now: Timestamp) -> Deadlines {
    let t = &spec.timeouts;
    let arm = |ms: Option<u64>| ms.map(|ms| now.plus_ms(ms));
    match rule.to {
        StateKind::Pending if spec.wait_for.is_some() => Deadlines {
            signal: arm(spec.wait_for.as_ref().and_then(|w| w.timeout_ms)),
            ..Deadlines::default()
        },
        StateKind::Pending => Deadlines {
            schedule_to_start: old
                .schedule_to_start
                .or_else(|| arm(t.schedule_to_start_ms)),
            ..Deadlines::default()
        },
        StateKind::Assigned => Deadlines {
            schedule_to_start: old.schedule_to_start,
            start: arm(t.start_ms),
            ..Deadlines::default()
        },
        StateKind::Executing => Deadlines {
            start_to_close: old.start_to_close.or_else(|| arm(t.start_to_close_ms)),
            heartbeat: arm(t.heartbeat_ms),
            ..Deadlines::default()
        },
        _ => Deadlines::default(),
    }
}

/// Instantiates the rule's effect kinds with data from the task before and after.
fn effects(rule: &Rule, old: Option<&Task>, new: &Task) -> Vec<Effect> {
    let mut out = Vec::with_capacity(rule.effects.len() + 2);
    let old_lease = old.and_then(|t| t.state.lease());
    for kind in rule.effects {
        match kind {
            // A signal task's "agent" is its signal: one may have been kept for it.
            EffectKind::WakeAgents => match &new.spec.wait_for {
                Some(wait) => out.push(Effect::AwaitSignal {
                    signal: wait.signal.clone(),
                }),
                None => out.push(Effect::WakeAgents {
                    capabilities: new.spec.capabilities.clone(),
                }),
            },
            EffectKind::Timers => {
                if let Some(at) = new
                    .wake_at
                    .filter(|&at| old.and_then(|t| t.wake_at) != Some(at))
                {
                    out.push(Effect::ArmWake { at });
                }
                let before = old.map(|t| t.deadlines).unwrap_or_default();
                for k in DeadlineKind::ALL {
                    match (before.get(k), new.deadlines.get(k)) {
                        (a, Some(at)) if a != Some(at) => {
                            out.push(Effect::ArmDeadline { kind: k, at })
                        }
                        (Some(_), None) => out.push(Effect::DisarmDeadline { kind: k }),
                        _ => {}
                    }
                }
            }
            EffectKind::EndLease => {
                if let Some(l) = old_lease {
                    out.push(Effect::EndLease {
                        agent: l.agent,
                        lease: l.id,
                    });
                }
            }
            EffectKind::RevokeLease => {
                if let Some(l) = old_lease {
                    out.push(Effect::RevokeLease {
                        agent: l.agent,
                        lease: l.id,
                        token: l.token,
                    });
                }
            }
            EffectKind::ReleaseDependents => out.push(Effect::ReleaseDependents),
            EffectKind::FailDependents => out.push(Effect::FailDependents),
            EffectKind::ReviveDependents => out.push(Effect::ReviveDependents),
            EffectKind::CheckUpstream => out.push(Effect::CheckUpstream),
            EffectKind::ScheduleRetry => {
                if let State::Failed {
                    retry_at: Some(at), ..
                } = new.state
                {
                    out.push(Effect::ScheduleRetry {
                        at,
                        attempt: new.attempt + 1,
                    });
                }
            }
            EffectKind::Compensate => match &new.spec.compensation {
                // An expanded fan-out's items compensate for themselves, each with its own.
                Some(_) if new.expanded.is_some_and(|n| n > 0) => {}
                Some(spec) => out.push(Effect::Compensate {
                    spec: Box::new(spec.clone()),
                }),
                None => {}
            },
        }
    }
    out
}
