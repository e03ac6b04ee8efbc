//! Events: what happened to a task, sent by an agent, an operator or the engine. Each carries the
//! evidence its guards check (the reporter's fencing token, the result payload, the dependencies
//! seen completed), so that applying it needs nothing but the task, the event and `now`.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::usage::Usage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::Timestamp;
use crate::ids::{AgentId, Capability, FencingToken, LeaseId, TaskId, TaskKey, WorkflowId};
use crate::spec::TaskSpec;
use crate::task::{DeadlineKind, Task, Timer};
use crate::template::Unresolved;

/// An error as an agent reports a failure (or an operator fails a task).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorReport {
    /// What went wrong, as a short name: retry policies name the kinds not to retry
    /// (`retry.non_retryable`). A report or an operator gives 1 to 128 bytes.
    pub kind: String,
    /// What happened. A report or an operator gives at most 32,768 bytes.
    pub message: String,
    /// `true` if absent.
    #[serde(default = "yes")]
    #[cfg_attr(feature = "openapi", schema(required = false, default = true))]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

/// The data of a `submitted` event: everything a new task is made of. (Its schema is the
/// API's view of it: the spec is given once, in the task's `spec`, and the seed, a full
/// 64-bit number, as a decimal string.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Submission {
    pub task: TaskId,
    pub workflow: WorkflowId,
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub spec: Arc<TaskSpec>,
    /// The dependencies already completed at submission: the evidence for `dependencies met`.
    pub completed: Vec<TaskKey>,
    /// Seed of the retry jitter, drawn by the engine.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "13390120589237510612"))]
    pub seed: u64,
    /// When the dependencies are met at submission and the input is a template: the input
    /// resolved (see [`crate::template`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// When the dependencies are met at submission: the reference of the template that found
    /// nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<Unresolved>,
}

/// A dependency as the evidence of `upstream_revived` sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DependencyEnd {
    pub key: TaskKey,
    /// It ended failed (no retry left) or cancelled: the task cannot run while it stands.
    pub ended: bool,
}

/// Something that happened to one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Event {
    /// The task is created.
    Submitted(Submission),
    /// Decomposition: the task must now also wait for `dependency`.
    DependencyAdded { dependency: TaskKey },
    /// Decomposition, on the parent: the agent executing the task added these sub-tasks to
    /// its workflow (the task's dependents now also wait for them).
    SubtasksAdded {
        agent: AgentId,
        token: FencingToken,
        tasks: Vec<TaskKey>,
    },
    /// Every dependency completed; `completed` is the evidence. For a task whose input is a
    /// template, the engine resolves it against the dependencies' results and records the
    /// outcome here: the `input` the task runs with, or the reference that found nothing.
    DependenciesMet {
        completed: Vec<TaskKey>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unresolved: Option<Unresolved>,
        /// For a task expanded by its `for_each`: the results of the tasks it expanded into,
        /// in element order, which become its result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        results: Option<Vec<Value>>,
    },
    /// Fan-out, on a `for_each` task whose dependencies completed (`completed`, the evidence):
    /// the tasks it expanded into (`KEY[0]`, `KEY[1]`, … in element order), created in the same
    /// commit, which it now waits for; none for an empty array; or the reference that found
    /// no array to expand.
    ForEachExpanded {
        completed: Vec<TaskKey>,
        tasks: Vec<TaskKey>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unresolved: Option<Unresolved>,
    },
    /// `upstream`, a dependency, ended `Failed` or `Cancelled`.
    UpstreamFailed { upstream: TaskKey },
    /// `upstream`, whose failure cancelled this task, was retried by an operator.
    /// `dependencies` is the evidence: every dependency of the task in the workflow's graph
    /// (sub-tasks added while it was cancelled included) and whether it has ended failed or
    /// cancelled for good.
    UpstreamRevived {
        upstream: TaskKey,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dependencies: Vec<DependencyEnd>,
    },
    /// The engine leased the task to `agent`, which offers `capabilities`.
    AgentAssigned {
        agent: AgentId,
        capabilities: BTreeSet<Capability>,
        lease: LeaseId,
    },
    ExecutionStarted {
        agent: AgentId,
        token: FencingToken,
        /// Started by the claim that assigned the task (`start`), not by the agent's own
        /// report: its first heartbeat is due within the start timeout, which a lost claim
        /// answer would otherwise have had to outlast.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        by_claim: bool,
    },
    Heartbeat {
        agent: AgentId,
        token: FencingToken,
        /// The agent's progress; `None` or `null` leaves the last one reported.
        progress: Option<Value>,
        /// What the agent has spent so far under this lease (cumulative).
        #[serde(default, skip_serializing_if = "Usage::is_empty")]
        #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, f64>))]
        usage: Usage,
    },
    ExecutionSucceeded {
        agent: AgentId,
        token: FencingToken,
        result: Option<Value>,
        #[serde(default, skip_serializing_if = "Usage::is_empty")]
        #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, f64>))]
        usage: Usage,
    },
    ExecutionFailed {
        agent: AgentId,
        token: FencingToken,
        error: ErrorReport,
        #[serde(default, skip_serializing_if = "Usage::is_empty")]
        #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, f64>))]
        usage: Usage,
    },
    /// The agent gives the task back without failing it.
    AssignmentReleased { agent: AgentId, token: FencingToken },
    /// The engine declared the lease holder dead (no keep-alive within its liveness window).
    AgentLost { agent: AgentId, token: FencingToken },
    /// The watchdog saw `deadline` pass.
    TimeoutExpired { deadline: DeadlineKind },
    /// The engine starts the next attempt once the backoff has passed.
    Retry,
    /// An operator reopens a task that failed for good, with a fresh budget of attempts.
    RetryRequested { requested_by: String },
    CancelRequested {
        requested_by: String,
        reason: String,
    },
    /// A signal sent to the task's workflow (`signal`, the one its `wait_for` names), delivered
    /// to the task waiting for it: its `data` completes the task, or its `reject` reason fails
    /// it (error kind `rejected`).
    SignalReceived {
        signal: String,
        /// The signal's number among those sent to the workflow, from 1.
        id: u64,
        #[serde(default)]
        data: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reject: Option<String>,
        sent_by: String,
    },
    /// The task's wake-up time passed: its delay (`not_before`, `delay_ms`) or its sleep.
    TimerFired,
    /// An operator pauses the task: no agent is handed it and its timers stop counting until it
    /// is resumed. An agent already running it finishes, unless `now` takes it back at once.
    PauseRequested {
        requested_by: String,
        reason: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        now: bool,
    },
    /// An operator resumes a paused task; its timers count again from the time they had left.
    ResumeRequested {
        requested_by: String,
        reason: String,
    },
    /// An operator completes the task with `result` in place of an agent (a person did the work,
    /// or it is not needed): its dependents proceed.
    SkipRequested {
        requested_by: String,
        reason: String,
        result: Value,
    },
    /// An operator fails the task for good, with `error` (kind `forced` and the reason when
    /// absent): no retry follows, its dependents are cancelled and it compensates.
    FailRequested {
        requested_by: String,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorReport>,
    },
    /// An operator reruns the task (`root`), or a task downstream of it, from the start: it waits
    /// for its dependencies again and runs with fresh attempts. `input`, on the root only,
    /// replaces its spec's input. A fan-out that expanded expands anew (its items superseded),
    /// unless `keep_items`: the rerun started from one of its items, and it gathers them again.
    Reopened {
        requested_by: String,
        reason: String,
        root: TaskKey,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep_items: bool,
        /// Dependencies it no longer waits for: sub-tasks that an earlier run of a task
        /// upstream added, which this rerun superseded.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        retired: Vec<TaskKey>,
    },
    /// A rerun reached `parent`, the fan-out this task is an item of or the task that added it
    /// as a sub-task: this run of it no longer counts (it is cancelled, its lease revoked, and
    /// it is no longer anyone's dependency). The fan-out's next expansion, or the parent
    /// adding it again, reopens it.
    Superseded {
        requested_by: String,
        reason: String,
        parent: TaskKey,
    },
}

/// An event's name without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    Submitted,
    DependencyAdded,
    SubtasksAdded,
    DependenciesMet,
    ForEachExpanded,
    UpstreamFailed,
    UpstreamRevived,
    AgentAssigned,
    ExecutionStarted,
    Heartbeat,
    ExecutionSucceeded,
    ExecutionFailed,
    AssignmentReleased,
    AgentLost,
    TimeoutExpired,
    Retry,
    RetryRequested,
    CancelRequested,
    SignalReceived,
    TimerFired,
    PauseRequested,
    ResumeRequested,
    SkipRequested,
    FailRequested,
    Reopened,
    Superseded,
}

impl EventKind {
    pub const ALL: [EventKind; 26] = [
        EventKind::Submitted,
        EventKind::DependencyAdded,
        EventKind::SubtasksAdded,
        EventKind::DependenciesMet,
        EventKind::ForEachExpanded,
        EventKind::UpstreamFailed,
        EventKind::UpstreamRevived,
        EventKind::AgentAssigned,
        EventKind::ExecutionStarted,
        EventKind::Heartbeat,
        EventKind::ExecutionSucceeded,
        EventKind::ExecutionFailed,
        EventKind::AssignmentReleased,
        EventKind::AgentLost,
        EventKind::TimeoutExpired,
        EventKind::Retry,
        EventKind::RetryRequested,
        EventKind::CancelRequested,
        EventKind::SignalReceived,
        EventKind::TimerFired,
        EventKind::PauseRequested,
        EventKind::ResumeRequested,
        EventKind::SkipRequested,
        EventKind::FailRequested,
        EventKind::Reopened,
        EventKind::Superseded,
    ];

    /// The kind named `name` (as [`EventKind::as_str`] writes it).
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Submitted => "submitted",
            EventKind::DependencyAdded => "dependency_added",
            EventKind::SubtasksAdded => "subtasks_added",
            EventKind::DependenciesMet => "dependencies_met",
            EventKind::ForEachExpanded => "for_each_expanded",
            EventKind::UpstreamFailed => "upstream_failed",
            EventKind::UpstreamRevived => "upstream_revived",
            EventKind::AgentAssigned => "agent_assigned",
            EventKind::ExecutionStarted => "execution_started",
            EventKind::Heartbeat => "heartbeat",
            EventKind::ExecutionSucceeded => "execution_succeeded",
            EventKind::ExecutionFailed => "execution_failed",
            EventKind::AssignmentReleased => "assignment_released",
            EventKind::AgentLost => "agent_lost",
            EventKind::TimeoutExpired => "timeout_expired",
            EventKind::Retry => "retry",
            EventKind::RetryRequested => "retry_requested",
            EventKind::CancelRequested => "cancel_requested",
            EventKind::SignalReceived => "signal_received",
            EventKind::TimerFired => "timer_fired",
            EventKind::PauseRequested => "pause_requested",
            EventKind::ResumeRequested => "resume_requested",
            EventKind::SkipRequested => "skip_requested",
            EventKind::FailRequested => "fail_requested",
            EventKind::Reopened => "reopened",
            EventKind::Superseded => "superseded",
        }
    }
}

impl EventKind {
    /// What the event asks, in words, for refusals people read ("an operator's retry").
    pub fn in_words(self) -> &'static str {
        match self {
            EventKind::Submitted => "a submission",
            EventKind::DependencyAdded => "a new dependency",
            EventKind::SubtasksAdded => "new sub-tasks",
            EventKind::DependenciesMet => "its release (dependencies met)",
            EventKind::ForEachExpanded => "its fan-out (for_each)",
            EventKind::UpstreamFailed => "a failed upstream",
            EventKind::UpstreamRevived => "a revived upstream",
            EventKind::AgentAssigned => "an assignment to an agent",
            EventKind::ExecutionStarted => "a start report",
            EventKind::Heartbeat => "a heartbeat",
            EventKind::ExecutionSucceeded => "a success report",
            EventKind::ExecutionFailed => "a failure report",
            EventKind::AssignmentReleased => "a release by its agent",
            EventKind::AgentLost => "the loss of its agent",
            EventKind::TimeoutExpired => "a deadline passing",
            EventKind::Retry => "its scheduled retry",
            EventKind::RetryRequested => "an operator's retry",
            EventKind::CancelRequested => "a cancellation",
            EventKind::SignalReceived => "a signal",
            EventKind::TimerFired => "its timer",
            EventKind::PauseRequested => "a pause",
            EventKind::ResumeRequested => "a resume",
            EventKind::SkipRequested => "a skip",
            EventKind::FailRequested => "an operator's failure",
            EventKind::Reopened => "a rerun",
            EventKind::Superseded => "a rerun of the task that created it",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who sent an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "actor", rename_all = "snake_case")]
pub enum Actor {
    Agent { agent: AgentId },
    Operator { name: String },
    Engine,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Submitted(_) => EventKind::Submitted,
            Event::DependencyAdded { .. } => EventKind::DependencyAdded,
            Event::SubtasksAdded { .. } => EventKind::SubtasksAdded,
            Event::DependenciesMet { .. } => EventKind::DependenciesMet,
            Event::ForEachExpanded { .. } => EventKind::ForEachExpanded,
            Event::UpstreamFailed { .. } => EventKind::UpstreamFailed,
            Event::UpstreamRevived { .. } => EventKind::UpstreamRevived,
            Event::AgentAssigned { .. } => EventKind::AgentAssigned,
            Event::ExecutionStarted { .. } => EventKind::ExecutionStarted,
            Event::Heartbeat { .. } => EventKind::Heartbeat,
            Event::ExecutionSucceeded { .. } => EventKind::ExecutionSucceeded,
            Event::ExecutionFailed { .. } => EventKind::ExecutionFailed,
            Event::AssignmentReleased { .. } => EventKind::AssignmentReleased,
            Event::AgentLost { .. } => EventKind::AgentLost,
            Event::TimeoutExpired { .. } => EventKind::TimeoutExpired,
            Event::Retry => EventKind::Retry,
            Event::RetryRequested { .. } => EventKind::RetryRequested,
            Event::CancelRequested { .. } => EventKind::CancelRequested,
            Event::SignalReceived { .. } => EventKind::SignalReceived,
            Event::TimerFired => EventKind::TimerFired,
            Event::PauseRequested { .. } => EventKind::PauseRequested,
            Event::ResumeRequested { .. } => EventKind::ResumeRequested,
            Event::SkipRequested { .. } => EventKind::SkipRequested,
            Event::FailRequested { .. } => EventKind::FailRequested,
            Event::Reopened { .. } => EventKind::Reopened,
            Event::Superseded { .. } => EventKind::Superseded,
        }
    }

    pub fn actor(&self) -> Actor {
        match self {
            Event::ExecutionStarted { agent, .. }
            | Event::Heartbeat { agent, .. }
            | Event::ExecutionSucceeded { agent, .. }
            | Event::ExecutionFailed { agent, .. }
            | Event::AssignmentReleased { agent, .. }
            | Event::SubtasksAdded { agent, .. } => Actor::Agent { agent: *agent },
            Event::RetryRequested { requested_by }
            | Event::CancelRequested { requested_by, .. }
            | Event::PauseRequested { requested_by, .. }
            | Event::ResumeRequested { requested_by, .. }
            | Event::SkipRequested { requested_by, .. }
            | Event::FailRequested { requested_by, .. }
            | Event::Reopened { requested_by, .. }
            | Event::Superseded { requested_by, .. }
            | Event::SignalReceived {
                sent_by: requested_by,
                ..
            } => Actor::Operator {
                name: requested_by.clone(),
            },
            _ => Actor::Engine,
        }
    }

    /// An operator's control (pause, resume, skip, fail, rerun): who asked and why.
    pub fn control(&self) -> Option<(&str, &str)> {
        match self {
            Event::PauseRequested {
                requested_by,
                reason,
                ..
            }
            | Event::ResumeRequested {
                requested_by,
                reason,
            }
            | Event::SkipRequested {
                requested_by,
                reason,
                ..
            }
            | Event::FailRequested {
                requested_by,
                reason,
                ..
            }
            | Event::Reopened {
                requested_by,
                reason,
                ..
            }
            | Event::Superseded {
                requested_by,
                reason,
                ..
            } => Some((requested_by, reason)),
            _ => None,
        }
    }

    /// The agent's usage report an event carries (cumulative under its lease), if any.
    pub fn usage(&self) -> Option<&Usage> {
        match self {
            Event::Heartbeat { usage, .. }
            | Event::ExecutionSucceeded { usage, .. }
            | Event::ExecutionFailed { usage, .. } => Some(usage),
            _ => None,
        }
    }

    /// The evidence that the task's input (or fan-out) could not be resolved, if any.
    pub fn unresolved(&self) -> Option<&Unresolved> {
        match self {
            Event::Submitted(sub) => sub.unresolved.as_ref(),
            Event::DependenciesMet { unresolved, .. }
            | Event::ForEachExpanded { unresolved, .. } => unresolved.as_ref(),
            _ => None,
        }
    }

    /// The lease an event is about (agent and fencing token): agent reports, and the engine's
    /// `agent_lost`.
    pub fn report(&self) -> Option<(AgentId, FencingToken)> {
        match self {
            Event::AgentLost { agent, token }
            | Event::ExecutionStarted { agent, token, .. }
            | Event::Heartbeat { agent, token, .. }
            | Event::ExecutionSucceeded { agent, token, .. }
            | Event::ExecutionFailed { agent, token, .. }
            | Event::AssignmentReleased { agent, token }
            | Event::SubtasksAdded { agent, token, .. } => Some((*agent, *token)),
            _ => None,
        }
    }
}

impl Task {
    /// The event the watchdog sends when it finds the task's timer due at `now`: `retry` once
    /// the backoff has passed, `timer_fired` at its wake-up, `timeout_expired` for a passed
    /// deadline; `None` when nothing is
    /// due (the task changed since the timer was read).
    pub fn on_timer(&self, now: Timestamp) -> Option<Event> {
        match self.next_timer()? {
            (_, at) if at > now => None,
            (Timer::Retry, _) => Some(Event::Retry),
            (Timer::Wake, _) => Some(Event::TimerFired),
            (Timer::Deadline(deadline), _) => Some(Event::TimeoutExpired { deadline }),
            (Timer::Frozen, _) => None,
        }
    }
}
