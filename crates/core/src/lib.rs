//! Baton's lifecycle core: the pure heart of the engine.
//!
//! A task follows a lifecycle given as a table ([`lifecycle::DEFAULT_RULES`]). The one entry
//! point, [`apply`], takes a task, an event and the current time and returns either a
//! [`Transition`] (the new task and the [`Effect`]s the engine must carry out) or a
//! [`Rejection`] that names the task, its state, the event and the rule that refused it.
//!
//! This crate performs no I/O, reads no clock and draws no randomness: time, ids and seeds
//! come in as arguments. So a task is always the fold of its history ([`replay`]), and the
//! whole engine can be simulated deterministically around it.

pub mod apply;
pub mod artifact;
pub mod dag;
pub mod diagram;
pub mod event;
pub mod flow;
pub mod ids;
pub mod labels;
pub mod lifecycle;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod replay;
pub mod retry;
pub mod schedule;
pub mod spec;
pub mod task;
pub mod template;
pub mod usage;
pub mod whole;

pub use apply::{
    apply, submit, wake_time, Effect, LeaseLoss, Refusal, Rejection, Transition, AGENT_LOST,
    REJECTED,
};
pub use artifact::{find_refs, refs_in, ArtifactRef, FoundRef, RefError};
pub use dag::{Dag, DagError, NodeStatus};
pub use diagram::DiagramFormat;
pub use event::{Actor, DependencyEnd, ErrorReport, Event, EventKind, Submission};
pub use flow::{ConcurrencyKey, Flow, Limit, RateUse};
pub use ids::{AgentId, Capability, FencingToken, LeaseId, TaskId, TaskKey, Timestamp, WorkflowId};
pub use labels::{has_labels, parse_label, validate_labels, Labels};
pub use lifecycle::{Cond, EffectKind, Guard, Lifecycle, Problem, Rule, DEFAULT, DEFAULT_RULES};
pub use replay::{replay, HistoryEntry, ReplayError};
pub use retry::backoff_ms;
pub use schedule::{CatchUp, Overlap, ScheduleSpec, WorkflowTemplate};
pub use spec::{
    AgentLostPolicy, CompensationSpec, RetryPolicy, SpecError, TaskSpec, Timeouts, WaitFor,
};
pub use task::{
    CancelReason, DeadlineKind, Deadlines, EnteredAt, Lease, Overruled, Paused, State, StateKind,
    Task, TaskError, Timer,
};
pub use template::{Unresolved, INPUT_UNRESOLVED};
pub use usage::{Amount, Budget, BudgetPolicy, Budgets, Usage};
