//! The lifecycle as data: one table of rules `from --event[guards]--> to / effects`, read by
//! [`crate::apply`], checked by [`Lifecycle::check`] and drawn by [`crate::diagram`].
//!
//! Guards are named conditions with a polarity. Two rules for the same state and event must
//! each require opposite polarities of one condition, so at most one of them can fire: that is
//! what makes the lifecycle deterministic, and `check` proves it for the table.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use crate::event::EventKind;
use crate::task::StateKind;

/// A named precondition, evaluated against the task, the event and `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cond {
    /// The event's evidence covers every dependency of the task.
    DependenciesMet,
    /// The event's upstream task is one of the task's dependencies.
    IsDependency,
    /// The task was cancelled because of the event's upstream task.
    CancelledByUpstream,
    /// Another dependency of the task has ended failed or cancelled (per the event's
    /// evidence), so reviving the task would leave it blocked for ever.
    OtherUpstreamEnded,
    /// The assigned agent offers every capability the task requires.
    HasCapabilities,
    /// The reporter holds the task's current lease (same agent, same fencing token).
    LeaseCurrent,
    /// The report carries a result payload.
    HasResult,
    /// The failure may be retried: attempts are left, the error is retryable and its kind is
    /// not listed as non-retryable.
    RetryAllowed,
    /// The task is `Failed` with a retry scheduled.
    RetryScheduled,
    /// The scheduled retry's backoff has passed.
    BackoffElapsed,
    /// The deadline named by the event is armed and has passed.
    DeadlinePassed,
    /// The deadline that passed is the start deadline, which takes the task back instead of
    /// failing it.
    TimeoutRequeues,
    /// The task's spec asks to requeue it, not fail it, when its agent is lost.
    RequeueOnAgentLost,
    /// Every reference of the task's input template found something (per the event's
    /// evidence: the resolved input, or the reference that found nothing). A plain input
    /// always resolves.
    InputResolved,
    /// The task must be released again before it runs: its input is a template that has not
    /// been resolved, it fans out (`for_each`), or its last failure came before any agent
    /// held it (a deadline or a rejection while it waited, an operator's failure while it was
    /// blocked or pending), so its dependencies may not all have completed.
    AwaitsRelease,
    /// The task fans out (`for_each`) and has not expanded yet: no agent runs it.
    AwaitsExpansion,
    /// The task has expanded into the tasks of its `for_each`.
    Expanded,
    /// The fan-out found elements to expand into.
    HasItems,
    /// Once released the task waits for a timer: its `not_before` is ahead, it has a
    /// `delay_ms`, or it sleeps (`sleep_ms`).
    Delayed,
    /// The task's wake-up time has come.
    WakeDue,
    /// The task sleeps (`sleep_ms`): it completes by itself when it wakes.
    Sleeps,
    /// The task waits for a signal (`wait_for`), and a `signal_received` names that signal.
    WaitsForSignal,
    /// The signal rejects what the task waited for.
    Rejects,
    /// An operator has paused the task.
    Paused,
    /// The pause takes the task back from its agent at once (`now`).
    PausesNow,
}

impl Cond {
    /// Short label, used in diagrams.
    pub fn label(self) -> &'static str {
        match self {
            Cond::DependenciesMet => "dependencies met",
            Cond::IsDependency => "is a dependency",
            Cond::CancelledByUpstream => "cancelled by it",
            Cond::OtherUpstreamEnded => "another upstream ended",
            Cond::HasCapabilities => "capable agent",
            Cond::LeaseCurrent => "current lease",
            Cond::HasResult => "result present",
            Cond::RetryAllowed => "retry allowed",
            Cond::RetryScheduled => "retry scheduled",
            Cond::BackoffElapsed => "backoff elapsed",
            Cond::DeadlinePassed => "deadline passed",
            Cond::TimeoutRequeues => "start deadline",
            Cond::RequeueOnAgentLost => "requeue on agent loss",
            Cond::InputResolved => "input resolved",
            Cond::AwaitsRelease => "awaits release",
            Cond::AwaitsExpansion => "fans out",
            Cond::Expanded => "expanded",
            Cond::HasItems => "has items",
            Cond::Delayed => "delayed",
            Cond::WakeDue => "wake-up due",
            Cond::Sleeps => "sleeps",
            Cond::WaitsForSignal => "waits for the signal",
            Cond::Rejects => "rejects",
            Cond::Paused => "paused",
            Cond::PausesNow => "now",
        }
    }
}

/// A condition that must hold (`holds: true`) or must not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Guard {
    pub cond: Cond,
    pub holds: bool,
}

const fn is(cond: Cond) -> Guard {
    Guard { cond, holds: true }
}

const fn not(cond: Cond) -> Guard {
    Guard { cond, holds: false }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.holds {
            f.write_str(self.cond.label())
        } else {
            write!(f, "not {}", self.cond.label())
        }
    }
}

/// What a rule asks the engine to do; instantiated with data as [`crate::Effect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EffectKind {
    /// Wake agents waiting for work with the task's capabilities.
    WakeAgents,
    /// Arm and disarm watchdog deadlines to match the new state.
    Timers,
    /// The lease ended normally; the agent's slot is free.
    EndLease,
    /// The lease was taken away; tell the agent to stop.
    RevokeLease,
    /// Count this completion for the dependents; release those with nothing left open.
    ReleaseDependents,
    /// Send `upstream_failed` to the dependents that are not yet terminal.
    FailDependents,
    /// Send `upstream_revived` to the dependents this task's failure cancelled.
    ReviveDependents,
    /// Send `retry` when the backoff has passed.
    ScheduleRetry,
    /// The task waits for its dependencies again (a rerun, an operator's retry): if one has
    /// ended failed or cancelled meanwhile, it is cancelled by it (its retry revives it).
    CheckUpstream,
    /// Submit the task's compensation task, if it declares one.
    Compensate,
}

/// One legal move of the lifecycle.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// `None` for the rules that create a task (`submitted`).
    pub from: Option<StateKind>,
    pub event: EventKind,
    pub guards: &'static [Guard],
    pub to: StateKind,
    pub effects: &'static [EffectKind],
    /// Reopens a terminal task: only an operator's retry, or its consequence.
    pub reopens: bool,
}

impl Rule {
    pub fn has_effect(&self, effect: EffectKind) -> bool {
        self.effects.contains(&effect)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.from {
            Some(from) => write!(f, "{from} --{}", self.event)?,
            None => write!(f, "(new) --{}", self.event)?,
        }
        if !self.guards.is_empty() {
            let guards: Vec<String> = self.guards.iter().map(|g| g.to_string()).collect();
            write!(f, "[{}]", guards.join(", "))?;
        }
        write!(f, "--> {}", self.to)
    }
}

/// When a state is terminal: no event from an agent or the engine leaves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminality {
    Never,
    Always,
    /// `Failed` is terminal once no retry is scheduled.
    UnlessRetryScheduled,
}

pub fn terminality(state: StateKind) -> Terminality {
    match state {
        StateKind::Completed | StateKind::Cancelled => Terminality::Always,
        StateKind::Failed => Terminality::UnlessRetryScheduled,
        _ => Terminality::Never,
    }
}

/// A set of rules.
#[derive(Debug)]
pub struct Lifecycle {
    pub rules: &'static [Rule],
}

use EffectKind::*;
use EventKind as E;
use StateKind as S;

const fn rule(
    from: Option<StateKind>,
    event: EventKind,
    guards: &'static [Guard],
    to: StateKind,
    effects: &'static [EffectKind],
) -> Rule {
    Rule {
        from,
        event,
        guards,
        to,
        effects,
        reopens: false,
    }
}

const fn reopen(
    from: StateKind,
    event: EventKind,
    guards: &'static [Guard],
    to: StateKind,
    effects: &'static [EffectKind],
) -> Rule {
    Rule {
        from: Some(from),
        event,
        guards,
        to,
        effects,
        reopens: true,
    }
}

const FINAL_FAILURE: &[EffectKind] = &[Timers, FailDependents, Compensate];
const FINAL_FAILURE_REVOKED: &[EffectKind] = &[RevokeLease, Timers, FailDependents, Compensate];
const FINAL_FAILURE_ENDED: &[EffectKind] = &[EndLease, Timers, FailDependents, Compensate];

/// The default lifecycle, as in DESIGN.md.
#[rustfmt::skip]
pub static DEFAULT_RULES: &[Rule] = &[
    // Creation.
    rule(None, E::Submitted, &[is(Cond::DependenciesMet), not(Cond::AwaitsExpansion), is(Cond::InputResolved), not(Cond::Delayed)], S::Pending, &[WakeAgents, Timers]),
    // Released but delayed, or asleep: it waits for its wake-up.
    rule(None, E::Submitted, &[is(Cond::DependenciesMet), not(Cond::AwaitsExpansion), is(Cond::InputResolved), is(Cond::Delayed)], S::Blocked, &[Timers]),
    rule(None, E::Submitted, &[not(Cond::DependenciesMet)], S::Blocked, &[]),
    rule(None, E::Submitted, &[is(Cond::DependenciesMet), not(Cond::AwaitsExpansion), not(Cond::InputResolved)], S::Failed, FINAL_FAILURE),
    // A fan-out waits to be expanded by its release, whatever its dependencies.
    rule(None, E::Submitted, &[is(Cond::DependenciesMet), is(Cond::AwaitsExpansion)], S::Blocked, &[]),
    // Waiting for dependencies.
    rule(Some(S::Blocked), E::DependencyAdded, &[], S::Blocked, &[]),
    rule(Some(S::Blocked), E::DependenciesMet, &[is(Cond::DependenciesMet), not(Cond::AwaitsExpansion), not(Cond::Expanded), is(Cond::InputResolved), not(Cond::Delayed)], S::Pending, &[WakeAgents, Timers]),
    rule(Some(S::Blocked), E::DependenciesMet, &[is(Cond::DependenciesMet), not(Cond::AwaitsExpansion), not(Cond::Expanded), is(Cond::InputResolved), is(Cond::Delayed)], S::Blocked, &[Timers]),
    // Durable timers: a delayed task becomes ready when it wakes; a sleeping one completes.
    rule(Some(S::Blocked), E::TimerFired, &[not(Cond::Paused), is(Cond::WakeDue), not(Cond::Sleeps)], S::Pending, &[WakeAgents, Timers]),
    rule(Some(S::Blocked), E::TimerFired, &[not(Cond::Paused), is(Cond::WakeDue), is(Cond::Sleeps)], S::Completed, &[Timers, ReleaseDependents]),
    // An input template found nothing in the results: the task cannot run, whatever retries.
    rule(Some(S::Blocked), E::DependenciesMet, &[is(Cond::DependenciesMet), not(Cond::AwaitsExpansion), not(Cond::Expanded), not(Cond::InputResolved)], S::Failed, FINAL_FAILURE),
    // Fan-out: the release of a `for_each` task expands it into one task per element, which it
    // then waits for; once they have all completed, it completes with their results.
    rule(Some(S::Blocked), E::ForEachExpanded, &[is(Cond::DependenciesMet), is(Cond::AwaitsExpansion), is(Cond::InputResolved), is(Cond::HasItems)], S::Blocked, &[]),
    rule(Some(S::Blocked), E::ForEachExpanded, &[is(Cond::DependenciesMet), is(Cond::AwaitsExpansion), is(Cond::InputResolved), not(Cond::HasItems)], S::Completed, &[ReleaseDependents]),
    rule(Some(S::Blocked), E::ForEachExpanded, &[is(Cond::DependenciesMet), is(Cond::AwaitsExpansion), not(Cond::InputResolved)], S::Failed, FINAL_FAILURE),
    rule(Some(S::Blocked), E::DependenciesMet, &[is(Cond::DependenciesMet), is(Cond::Expanded), is(Cond::InputResolved)], S::Completed, &[ReleaseDependents]),
    rule(Some(S::Blocked), E::DependenciesMet, &[is(Cond::DependenciesMet), is(Cond::Expanded), not(Cond::InputResolved)], S::Failed, FINAL_FAILURE),
    rule(Some(S::Blocked), E::UpstreamFailed, &[is(Cond::IsDependency)], S::Cancelled, &[FailDependents, Compensate]),
    rule(Some(S::Blocked), E::CancelRequested, &[], S::Cancelled, &[FailDependents, Compensate]),
    // Ready.
    rule(Some(S::Pending), E::AgentAssigned, &[not(Cond::Paused), not(Cond::WaitsForSignal), is(Cond::HasCapabilities)], S::Assigned, &[Timers]),
    // A signal task is ready when it waits for its signal, which completes it or rejects it.
    rule(Some(S::Pending), E::SignalReceived, &[not(Cond::Paused), is(Cond::WaitsForSignal), not(Cond::Rejects)], S::Completed, &[Timers, ReleaseDependents]),
    rule(Some(S::Pending), E::SignalReceived, &[not(Cond::Paused), is(Cond::WaitsForSignal), is(Cond::Rejects)], S::Failed, FINAL_FAILURE),
    rule(Some(S::Pending), E::TimeoutExpired, &[not(Cond::Paused), is(Cond::DeadlinePassed), is(Cond::RetryAllowed)], S::Failed, &[Timers, ScheduleRetry]),
    rule(Some(S::Pending), E::TimeoutExpired, &[not(Cond::Paused), is(Cond::DeadlinePassed), not(Cond::RetryAllowed)], S::Failed, FINAL_FAILURE),
    rule(Some(S::Pending), E::CancelRequested, &[], S::Cancelled, FINAL_FAILURE),
    // Leased, not yet started.
    rule(Some(S::Assigned), E::ExecutionStarted, &[is(Cond::LeaseCurrent)], S::Executing, &[Timers]),
    rule(Some(S::Assigned), E::AssignmentReleased, &[is(Cond::LeaseCurrent)], S::Pending, &[EndLease, WakeAgents, Timers]),
    rule(Some(S::Assigned), E::TimeoutExpired, &[is(Cond::DeadlinePassed), is(Cond::TimeoutRequeues)], S::Pending, &[RevokeLease, WakeAgents, Timers]),
    rule(Some(S::Assigned), E::TimeoutExpired, &[is(Cond::DeadlinePassed), not(Cond::TimeoutRequeues), is(Cond::RetryAllowed)], S::Failed, &[RevokeLease, Timers, ScheduleRetry]),
    rule(Some(S::Assigned), E::TimeoutExpired, &[is(Cond::DeadlinePassed), not(Cond::TimeoutRequeues), not(Cond::RetryAllowed)], S::Failed, FINAL_FAILURE_REVOKED),
    rule(Some(S::Assigned), E::AgentLost, &[is(Cond::LeaseCurrent)], S::Pending, &[RevokeLease, WakeAgents, Timers]),
    rule(Some(S::Assigned), E::CancelRequested, &[], S::Cancelled, FINAL_FAILURE_REVOKED),
    // Executing.
    rule(Some(S::Executing), E::Heartbeat, &[is(Cond::LeaseCurrent)], S::Executing, &[Timers]),
    rule(Some(S::Executing), E::SubtasksAdded, &[is(Cond::LeaseCurrent)], S::Executing, &[]),
    rule(Some(S::Executing), E::ExecutionSucceeded, &[is(Cond::LeaseCurrent), is(Cond::HasResult)], S::Completed, &[EndLease, Timers, ReleaseDependents]),
    rule(Some(S::Executing), E::ExecutionFailed, &[is(Cond::LeaseCurrent), is(Cond::RetryAllowed)], S::Failed, &[EndLease, Timers, ScheduleRetry]),
    rule(Some(S::Executing), E::ExecutionFailed, &[is(Cond::LeaseCurrent), not(Cond::RetryAllowed)], S::Failed, FINAL_FAILURE_ENDED),
    rule(Some(S::Executing), E::AssignmentReleased, &[is(Cond::LeaseCurrent)], S::Pending, &[EndLease, WakeAgents, Timers]),
    rule(Some(S::Executing), E::TimeoutExpired, &[is(Cond::DeadlinePassed), is(Cond::RetryAllowed)], S::Failed, &[RevokeLease, Timers, ScheduleRetry]),
    rule(Some(S::Executing), E::TimeoutExpired, &[is(Cond::DeadlinePassed), not(Cond::RetryAllowed)], S::Failed, FINAL_FAILURE_REVOKED),
    rule(Some(S::Executing), E::AgentLost, &[is(Cond::LeaseCurrent), is(Cond::RequeueOnAgentLost)], S::Pending, &[RevokeLease, WakeAgents, Timers]),
    rule(Some(S::Executing), E::AgentLost, &[is(Cond::LeaseCurrent), not(Cond::RequeueOnAgentLost), is(Cond::RetryAllowed)], S::Failed, &[RevokeLease, Timers, ScheduleRetry]),
    rule(Some(S::Executing), E::AgentLost, &[is(Cond::LeaseCurrent), not(Cond::RequeueOnAgentLost), not(Cond::RetryAllowed)], S::Failed, FINAL_FAILURE_REVOKED),
    rule(Some(S::Executing), E::CancelRequested, &[], S::Cancelled, FINAL_FAILURE_REVOKED),
    // Failed, waiting for a retry.
    rule(Some(S::Failed), E::Retry, &[not(Cond::Paused), is(Cond::RetryScheduled), is(Cond::BackoffElapsed)], S::Pending, &[WakeAgents, Timers]),
    rule(Some(S::Failed), E::CancelRequested, &[is(Cond::RetryScheduled)], S::Cancelled, FINAL_FAILURE),
    // Reopening by an operator.
    reopen(S::Failed, E::RetryRequested, &[not(Cond::RetryScheduled), not(Cond::AwaitsRelease)], S::Pending, &[WakeAgents, Timers, ReviveDependents]),
    // It failed before an agent held it (its input never resolved, it waited too long, an
    // operator failed it): it waits to be released again, which decides its release afresh.
    reopen(S::Failed, E::RetryRequested, &[not(Cond::RetryScheduled), is(Cond::AwaitsRelease)], S::Blocked, &[ReviveDependents, CheckUpstream]),
    // The upstream that revived it may have ended again meanwhile (cancelled while the revival
    // was on its way): CheckUpstream cancels it again then.
    reopen(S::Cancelled, E::UpstreamRevived, &[is(Cond::CancelledByUpstream), not(Cond::OtherUpstreamEnded)], S::Blocked, &[ReviveDependents, CheckUpstream]),
    // Revived while another upstream has ended: it stays cancelled, now naming that one (whose
    // own revival brings it back).
    reopen(S::Cancelled, E::UpstreamRevived, &[is(Cond::CancelledByUpstream), is(Cond::OtherUpstreamEnded)], S::Cancelled, &[]),
    // Decomposition under a cancelled dependent: it records the new dependency, so that a
    // revival finds it waiting for the sub-tasks too.
    rule(Some(S::Cancelled), E::DependencyAdded, &[], S::Cancelled, &[]),
    // Operators in control. A pause holds the task where it is: no agent is handed it and its
    // timers stop; an agent running it finishes, unless the pause takes it back `now`.
    rule(Some(S::Blocked), E::PauseRequested, &[not(Cond::Paused)], S::Blocked, &[]),
    rule(Some(S::Pending), E::PauseRequested, &[not(Cond::Paused)], S::Pending, &[]),
    rule(Some(S::Assigned), E::PauseRequested, &[not(Cond::PausesNow), not(Cond::Paused)], S::Assigned, &[]),
    rule(Some(S::Assigned), E::PauseRequested, &[is(Cond::PausesNow)], S::Pending, &[RevokeLease, Timers]),
    rule(Some(S::Executing), E::PauseRequested, &[not(Cond::PausesNow), not(Cond::Paused)], S::Executing, &[]),
    rule(Some(S::Executing), E::PauseRequested, &[is(Cond::PausesNow)], S::Pending, &[RevokeLease, Timers]),
    rule(Some(S::Failed), E::PauseRequested, &[is(Cond::RetryScheduled), not(Cond::Paused)], S::Failed, &[]),
    // A resume re-arms the stopped timers with the time they had left.
    rule(Some(S::Blocked), E::ResumeRequested, &[is(Cond::Paused)], S::Blocked, &[Timers]),
    rule(Some(S::Pending), E::ResumeRequested, &[is(Cond::Paused)], S::Pending, &[WakeAgents, Timers]),
    rule(Some(S::Assigned), E::ResumeRequested, &[is(Cond::Paused)], S::Assigned, &[]),
    rule(Some(S::Executing), E::ResumeRequested, &[is(Cond::Paused)], S::Executing, &[]),
    rule(Some(S::Failed), E::ResumeRequested, &[is(Cond::RetryScheduled), is(Cond::Paused)], S::Failed, &[Timers, ScheduleRetry]),
    // A skip completes the task with the operator's result; its dependents proceed.
    rule(Some(S::Blocked), E::SkipRequested, &[], S::Completed, &[Timers, ReleaseDependents]),
    rule(Some(S::Pending), E::SkipRequested, &[], S::Completed, &[Timers, ReleaseDependents]),
    rule(Some(S::Assigned), E::SkipRequested, &[], S::Completed, &[RevokeLease, Timers, ReleaseDependents]),
    rule(Some(S::Executing), E::SkipRequested, &[], S::Completed, &[RevokeLease, Timers, ReleaseDependents]),
    rule(Some(S::Failed), E::SkipRequested, &[is(Cond::RetryScheduled)], S::Completed, &[Timers, ReleaseDependents]),
    reopen(S::Failed, E::SkipRequested, &[not(Cond::RetryScheduled)], S::Completed, &[ReviveDependents, ReleaseDependents]),
    // An operator's failure is final.
    rule(Some(S::Blocked), E::FailRequested, &[], S::Failed, FINAL_FAILURE),
    rule(Some(S::Pending), E::FailRequested, &[], S::Failed, FINAL_FAILURE),
    rule(Some(S::Assigned), E::FailRequested, &[], S::Failed, FINAL_FAILURE_REVOKED),
    rule(Some(S::Executing), E::FailRequested, &[], S::Failed, FINAL_FAILURE_REVOKED),
    rule(Some(S::Failed), E::FailRequested, &[is(Cond::RetryScheduled)], S::Failed, FINAL_FAILURE),
    // A rerun reopens the task from wherever it is: it waits for its dependencies again.
    reopen(S::Blocked, E::Reopened, &[], S::Blocked, &[Timers, CheckUpstream]),
    reopen(S::Pending, E::Reopened, &[], S::Blocked, &[Timers, CheckUpstream]),
    reopen(S::Assigned, E::Reopened, &[], S::Blocked, &[RevokeLease, Timers, CheckUpstream]),
    reopen(S::Executing, E::Reopened, &[], S::Blocked, &[RevokeLease, Timers, CheckUpstream]),
    reopen(S::Completed, E::Reopened, &[], S::Blocked, &[CheckUpstream]),
    reopen(S::Failed, E::Reopened, &[is(Cond::RetryScheduled)], S::Blocked, &[Timers, CheckUpstream]),
    reopen(S::Failed, E::Reopened, &[not(Cond::RetryScheduled)], S::Blocked, &[CheckUpstream]),
    reopen(S::Cancelled, E::Reopened, &[], S::Blocked, &[CheckUpstream]),
    // A rerun through a fan-out supersedes its items, wherever they are: none compensates, as a
    // rerun's tasks do not; the fan-out's next expansion reopens those its new list still has.
    rule(Some(S::Blocked), E::Superseded, &[], S::Cancelled, &[Timers]),
    rule(Some(S::Pending), E::Superseded, &[], S::Cancelled, &[Timers]),
    rule(Some(S::Assigned), E::Superseded, &[], S::Cancelled, &[RevokeLease, Timers]),
    rule(Some(S::Executing), E::Superseded, &[], S::Cancelled, &[RevokeLease, Timers]),
    rule(Some(S::Failed), E::Superseded, &[is(Cond::RetryScheduled)], S::Cancelled, &[Timers]),
    reopen(S::Failed, E::Superseded, &[not(Cond::RetryScheduled)], S::Cancelled, &[]),
    reopen(S::Completed, E::Superseded, &[], S::Cancelled, &[]),
    reopen(S::Cancelled, E::Superseded, &[], S::Cancelled, &[]),
];

/// The default lifecycle.
pub static DEFAULT: Lifecycle = Lifecycle {
    rules: DEFAULT_RULES,
};

/// Something wrong with a lifecycle table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    Unreachable(StateKind),
    /// No path leads from this state to a terminal state.
    DeadEnd(StateKind),
    /// A terminal state has a rule out that is not an operator's reopening.
    TerminalExit(String),
    /// Two rules for the same state and event can both fire.
    Ambiguous(String, String),
    /// A non-terminal state cannot be cancelled.
    NotCancellable(StateKind),
    /// No rule uses this event.
    UnusedEvent(EventKind),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreachable(s) => write!(f, "state {s} is unreachable from submission"),
            Problem::DeadEnd(s) => write!(f, "state {s} has no path to a terminal state"),
            Problem::TerminalExit(r) => {
                write!(f, "rule {r} leaves a terminal state without reopening it")
            }
            Problem::Ambiguous(a, b) => write!(
                f,
                "rules {a} and {b} can both fire: their guards are not mutually exclusive"
            ),
            Problem::NotCancellable(s) => {
                write!(
                    f,
                    "state {s} is not terminal but accepts no cancel_requested"
                )
            }
            Problem::UnusedEvent(e) => write!(f, "no rule uses event {e}"),
        }
    }
}

impl Lifecycle {
    /// The rules that may fire for `event` in `from` (`None`: a new task), in table order.
    pub fn rules_for(
        &self,
        from: Option<StateKind>,
        event: EventKind,
    ) -> impl Iterator<Item = &'static Rule> {
        self.rules
            .iter()
            .filter(move |r| r.from == from && r.event == event)
    }

    /// Events that some rule accepts from `from`.
    pub fn events_from(&self, from: StateKind) -> BTreeSet<EventKind> {
        self.rules
            .iter()
            .filter(|r| r.from == Some(from))
            .map(|r| r.event)
            .collect()
    }

    /// Checks the table: every state reachable, no dead ends, terminal states without exits
    /// (but reopening), every non-terminal state cancellable, every event used, and no two
    /// rules for one state and event that can both fire. Empty means sound.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let reachable = self.reachable();
        for s in StateKind::ALL {
            if !reachable.contains(&s) {
                problems.push(Problem::Unreachable(s));
            }
        }
        let finishing = self.can_finish();
        for s in StateKind::ALL {
            if !finishing.contains(&s) {
                problems.push(Problem::DeadEnd(s));
            }
        }
        for r in self.rules {
            let Some(from) = r.from else { continue };
            if r.to == from && !r.reopens {
                // Recording something on a task that stays where it is leaves nothing.
                continue;
            }
            let exits = match terminality(from) {
                Terminality::Never => false,
                Terminality::Always => !r.reopens,
                Terminality::UnlessRetryScheduled => {
                    let while_retrying = r.guards.contains(&is(Cond::RetryScheduled));
                    let reopening_final =
                        r.reopens && r.guards.contains(&not(Cond::RetryScheduled));
                    !(while_retrying || reopening_final)
                }
            };
            if exits {
                problems.push(Problem::TerminalExit(r.to_string()));
            }
        }
        for s in StateKind::ALL {
            let cancellable = match terminality(s) {
                Terminality::Always => true,
                Terminality::Never => {
                    self.rules_for(Some(s), EventKind::CancelRequested).count() > 0
                }
                Terminality::UnlessRetryScheduled => self
                    .rules_for(Some(s), EventKind::CancelRequested)
                    .any(|r| r.guards.contains(&is(Cond::RetryScheduled))),
            };
            if !cancellable {
                problems.push(Problem::NotCancellable(s));
            }
        }
        for e in EventKind::ALL {
            if !self.rules.iter().any(|r| r.event == e) {
                problems.push(Problem::UnusedEvent(e));
            }
        }
        for (i, a) in self.rules.iter().enumerate() {
            for b in &self.rules[i + 1..] {
                if a.from == b.from && a.event == b.event && !exclusive(a.guards, b.guards) {
                    problems.push(Problem::Ambiguous(a.to_string(), b.to_string()));
                }
            }
        }
        problems
    }

    fn reachable(&self) -> BTreeSet<StateKind> {
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<StateKind> = self
            .rules
            .iter()
            .filter(|r| r.from.is_none())
            .map(|r| r.to)
            .collect();
        while let Some(s) = queue.pop_front() {
            if seen.insert(s) {
                queue.extend(
                    self.rules
                        .iter()
                        .filter(|r| r.from == Some(s))
                        .map(|r| r.to),
                );
            }
        }
        seen
    }

    /// States from which some terminal state can be reached.
    fn can_finish(&self) -> BTreeSet<StateKind> {
        let mut done: BTreeSet<StateKind> = StateKind::ALL
            .into_iter()
            .filter(|&s| terminality(s) != Terminality::Never)
            .collect();
        loop {
            let before = done.len();
            for r in self.rules {
                if let Some(from) = r.from {
                    if done.contains(&r.to) {
                        done.insert(from);
                    }
                }
            }
            if done.len() == before {
                return done;
            }
        }
    }
}

/// Two guard lists exclude each other when one requires a condition the other forbids.
fn exclusive(a: &[Guard], b: &[Guard]) -> bool {
    a.iter().any(|ga| {
        b.iter()
            .any(|gb| ga.cond == gb.cond && ga.holds != gb.holds)
    })
}
