//! A task's snapshot: its state (one enum variant per state, carrying that state's data), the
//! lease and fencing token, attempts, deadlines, errors and when it entered each state.
//!
//! A `Task` is only ever produced by [`crate::submit`] and [`crate::apply`], so it is always the
//! fold of its history.

use std::fmt;
use std::sync::Arc;

use crate::usage::Usage;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{AgentId, FencingToken, LeaseId, TaskId, TaskKey, Timestamp, WorkflowId};
use crate::spec::TaskSpec;

/// A task's state without its data: what the lifecycle table and counters talk about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StateKind {
    Blocked,
    Pending,
    Assigned,
    Executing,
    Completed,
    Failed,
    Cancelled,
}

impl StateKind {
    pub const ALL: [StateKind; 7] = [
        StateKind::Blocked,
        StateKind::Pending,
        StateKind::Assigned,
        StateKind::Executing,
        StateKind::Completed,
        StateKind::Failed,
        StateKind::Cancelled,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StateKind::Blocked => "Blocked",
            StateKind::Pending => "Pending",
            StateKind::Assigned => "Assigned",
            StateKind::Executing => "Executing",
            StateKind::Completed => "Completed",
            StateKind::Failed => "Failed",
            StateKind::Cancelled => "Cancelled",
        }
    }

    /// Stable snake_case name, as stored and sent over the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Blocked => "blocked",
            StateKind::Pending => "pending",
            StateKind::Assigned => "assigned",
            StateKind::Executing => "executing",
            StateKind::Completed => "completed",
            StateKind::Failed => "failed",
            StateKind::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<StateKind> {
        StateKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The right of one agent to work on one task for one attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    pub agent: AgentId,
    pub token: FencingToken,
    pub granted_at: Timestamp,
}

/// Why a task was cancelled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum CancelReason {
    /// An operator (or the system on an operator's behalf) asked for it.
    Operator {
        requested_by: String,
        reason: String,
    },
    /// A dependency ended `Failed` or `Cancelled`, so this task can never run.
    Upstream { upstream: TaskKey },
    /// A rerun reached `parent`, the fan-out this task was an item of or the task that added it
    /// as a sub-task: this run of it no longer counts (the fan-out's next expansion, or the
    /// parent adding it again, reopens it).
    Superseded { parent: TaskKey },
}

/// One failed attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    pub attempt: u32,
    /// Machine-readable kind, matched against `retry.non_retryable`; timeouts use
    /// `timeout.<deadline>`.
    pub kind: String,
    pub message: String,
    /// The reporter's opinion; `false` fails the task at once.
    pub retryable: bool,
    /// Token of the lease the failure happened under, if the task was leased.
    pub token: Option<FencingToken>,
    pub at: Timestamp,
}

/// A task's state with the data that belongs to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Waiting for dependencies to complete.
    Blocked,
    /// Ready and waiting for an agent.
    Pending,
    Assigned {
        lease: Lease,
    },
    Executing {
        lease: Lease,
        /// The last progress an agent reported with a heartbeat.
        progress: Option<Value>,
    },
    Completed {
        result: Value,
        /// Token of the lease that completed the task.
        token: FencingToken,
    },
    /// The last attempt failed. With `retry_at` set a new attempt follows once it passes; without
    /// it the failure is final.
    Failed {
        error: TaskError,
        retry_at: Option<Timestamp>,
    },
    Cancelled {
        reason: CancelReason,
    },
}

impl State {
    pub fn kind(&self) -> StateKind {
        match self {
            State::Blocked => StateKind::Blocked,
            State::Pending => StateKind::Pending,
            State::Assigned { .. } => StateKind::Assigned,
            State::Executing { .. } => StateKind::Executing,
            State::Completed { .. } => StateKind::Completed,
            State::Failed { .. } => StateKind::Failed,
            State::Cancelled { .. } => StateKind::Cancelled,
        }
    }

    pub fn lease(&self) -> Option<&Lease> {
        match self {
            State::Assigned { lease } | State::Executing { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// No event from an agent or the engine can move the task any more. An operator may still
    /// reopen a final `Failed` task (`retry_requested`), and a retried upstream revives the
    /// tasks its failure cancelled (`upstream_revived`).
    pub fn is_terminal(&self) -> bool {
        match self {
            State::Completed { .. } | State::Cancelled { .. } => true,
            State::Failed { retry_at, .. } => retry_at.is_none(),
            _ => false,
        }
    }
}

/// Which watchdog deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeadlineKind {
    ScheduleToStart,
    Start,
    StartToClose,
    Heartbeat,
    /// A signal task's wait (`wait_for.timeout_ms`).
    Signal,
}

impl DeadlineKind {
    pub const ALL: [DeadlineKind; 5] = [
        DeadlineKind::ScheduleToStart,
        DeadlineKind::Start,
        DeadlineKind::StartToClose,
        DeadlineKind::Heartbeat,
        DeadlineKind::Signal,
    ];

    /// The error kind a failure by this deadline records, for `retry.non_retryable`.
    pub fn error_kind(self) -> &'static str {
        match self {
            DeadlineKind::ScheduleToStart => "timeout.schedule_to_start",
            DeadlineKind::Start => "timeout.start",
            DeadlineKind::StartToClose => "timeout.start_to_close",
            DeadlineKind::Heartbeat => "timeout.heartbeat",
            DeadlineKind::Signal => "timeout.signal",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineKind::ScheduleToStart => "schedule_to_start",
            DeadlineKind::Start => "start",
            DeadlineKind::StartToClose => "start_to_close",
            DeadlineKind::Heartbeat => "heartbeat",
            DeadlineKind::Signal => "signal",
        }
    }
}

impl fmt::Display for DeadlineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The armed watchdog deadlines of a task; what is armed follows from the state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadlines {
    pub schedule_to_start: Option<Timestamp>,
    pub start: Option<Timestamp>,
    pub start_to_close: Option<Timestamp>,
    pub heartbeat: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Timestamp>,
}

impl Deadlines {
    pub fn get(&self, kind: DeadlineKind) -> Option<Timestamp> {
        match kind {
            DeadlineKind::ScheduleToStart => self.schedule_to_start,
            DeadlineKind::Start => self.start,
            DeadlineKind::StartToClose => self.start_to_close,
            DeadlineKind::Heartbeat => self.heartbeat,
            DeadlineKind::Signal => self.signal,
        }
    }

    pub fn set(&mut self, kind: DeadlineKind, at: Option<Timestamp>) {
        let slot = match kind {
            DeadlineKind::ScheduleToStart => &mut self.schedule_to_start,
            DeadlineKind::Start => &mut self.start,
            DeadlineKind::StartToClose => &mut self.start_to_close,
            DeadlineKind::Heartbeat => &mut self.heartbeat,
            DeadlineKind::Signal => &mut self.signal,
        };
        *slot = at;
    }

    /// The earliest armed deadline: what the watchdog index is keyed on.
    pub fn next(&self) -> Option<(DeadlineKind, Timestamp)> {
        DeadlineKind::ALL
            .into_iter()
            .filter_map(|k| self.get(k).map(|at| (k, at)))
            .min_by_key(|&(_, at)| at)
    }
}

/// What a task's next timer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// An armed watchdog deadline.
    Deadline(DeadlineKind),
    /// The scheduled retry of a failed attempt.
    Retry,
    /// The end of a released task's delay (`not_before`, `delay_ms`) or sleep (`sleep_ms`).
    Wake,
    /// The timers of a paused task, stopped until it is resumed: due [`Timestamp::NEVER`].
    Frozen,
}

/// An operator's pause on a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub by: String,
    pub reason: String,
    pub at: Timestamp,
    /// When its timers stopped counting: at the pause, or when an agent still running it then
    /// let it go. `None` while an agent runs it (its deadlines still count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_at: Option<Timestamp>,
}

/// The last operator control that ended or took away an agent's lease (or reopened the task):
/// a later report under that lease is refused naming it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overruled {
    /// `pause_requested`, `skip_requested`, `fail_requested` or `reopened`.
    pub by_event: crate::event::EventKind,
    pub by: String,
    pub reason: String,
    /// The fencing token of the lease it overruled (the latest issued then).
    pub token: FencingToken,
}

/// When the task last entered each state, indexed by [`StateKind::index`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnteredAt(pub [Option<Timestamp>; 7]);

impl EnteredAt {
    pub fn get(&self, kind: StateKind) -> Option<Timestamp> {
        self.0[kind.index()]
    }
}

/// A task: its identity, its spec, and where it stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub workflow: WorkflowId,
    pub spec: Arc<TaskSpec>,
    /// Keys of every dependency: the spec's, plus those added by decomposition.
    pub dependencies: Vec<TaskKey>,
    pub state: State,
    /// Count of history entries applied; the compare-and-set guard for the store.
    pub version: u64,
    /// The current attempt, from 1.
    pub attempt: u32,
    /// Attempts this task may use in all: `spec.retry.max_attempts`, raised when an operator
    /// retries a task that failed for good.
    pub attempts_allowed: u32,
    /// The highest fencing token issued for this task; 0 before the first assignment.
    pub fencing_token: FencingToken,
    pub deadlines: Deadlines,
    /// Every failed attempt, oldest first.
    pub errors: Vec<TaskError>,
    pub entered_at: EnteredAt,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Seed of the retry jitter, chosen by the engine at submission.
    pub seed: u64,
    /// The input the task runs with, when its spec's input is a template: resolved when the
    /// task became ready. `None` for a plain input (the spec's) or a template not yet resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// For a `for_each` task once expanded: how many tasks it expanded into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expanded: Option<u32>,
    /// For a released task that is delayed (`not_before`, `delay_ms`) or sleeps (`sleep_ms`):
    /// when it wakes. Set while it is `Blocked` after its release, `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<Timestamp>,
    /// Set while an operator has paused the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Paused>,
    /// The operator control that last overruled an agent's lease on the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overruled: Option<Overruled>,
    /// What its agents reported spending, all attempts together.
    #[serde(default, skip_serializing_if = "Usage::is_empty")]
    pub usage: Usage,
    /// What the agent holding the current lease has reported so far (reports are cumulative
    /// per lease).
    #[serde(default, skip_serializing_if = "Usage::is_empty")]
    pub lease_usage: Usage,
}

impl Task {
    /// The input the agent is handed: the resolved template, or the spec's plain input.
    /// `None` while a template waits for its dependencies.
    pub fn input(&self) -> Option<&Value> {
        match &self.input {
            Some(resolved) => Some(resolved),
            None if crate::template::is_template(&self.spec.input) => None,
            None => Some(&self.spec.input),
        }
    }

    /// The next moment the watchdog must look at the task: its earliest armed deadline, its
    /// scheduled retry or its wake-up. The store indexes timers on this moment and the engine fires the event
    /// [`Task::on_timer`] chooses, so both read the same rule.
    pub fn next_timer(&self) -> Option<(Timer, Timestamp)> {
        let timer = self.running_timer()?;
        match self.paused.as_ref().and_then(|p| p.frozen_at) {
            Some(_) => Some((Timer::Frozen, Timestamp::NEVER)),
            None => Some(timer),
        }
    }

    /// The next timer as if the task were not paused.
    fn running_timer(&self) -> Option<(Timer, Timestamp)> {
        let deadline = self
            .deadlines
            .next()
            .map(|(kind, at)| (Timer::Deadline(kind), at));
        let retry = match self.state {
            State::Failed {
                retry_at: Some(at), ..
            } => Some((Timer::Retry, at)),
            _ => self.wake_at.map(|at| (Timer::Wake, at)),
        };
        match (deadline, retry) {
            (Some(d), Some(r)) => Some(if r.1 < d.1 { r } else { d }),
            (d, r) => d.or(r),
        }
    }

    pub fn kind(&self) -> StateKind {
        self.state.kind()
    }

    /// Whether an operator has paused the task.
    pub fn is_paused(&self) -> bool {
        self.paused.is_some()
    }

    pub fn attempts_left(&self) -> u32 {
        self.attempts_allowed.saturating_sub(self.attempt)
    }
}
