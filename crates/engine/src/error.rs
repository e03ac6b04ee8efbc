//! What the engine answers when it refuses a request or cannot serve it.

use baton_core::{AgentId, ArtifactRef, DagError, Rejection, TaskId, WorkflowId};
use baton_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A request field is out of bounds: which one, and what was expected.
    #[error("invalid `{field}`: expected {expected}")]
    Invalid { field: String, expected: String },
    /// The workflow's dependency graph is refused (unknown or duplicate task, cycle).
    #[error("invalid workflow: {0}")]
    Graph(#[from] DagError),
    #[error("task {0} not found")]
    TaskNotFound(TaskId),
    #[error("workflow {0} not found")]
    WorkflowNotFound(WorkflowId),
    #[error("agent {0} is not registered")]
    AgentNotFound(AgentId),
    /// A payload is over its named limit.
    #[error("`{field}` is {bytes} bytes, over the limit of {limit_bytes} bytes ({limit})")]
    TooLarge {
        field: String,
        bytes: u64,
        limit_bytes: u64,
        /// The limit's name (the setting that raises it).
        limit: &'static str,
    },
    /// An artifact that does not exist: read (`field` is `None`), or referred to by a payload
    /// at `field`.
    #[error("{}", match field {
        Some(f) => format!("`{f}` refers to artifact {artifact}, which does not exist; upload it first (PUT /v1/artifacts)"),
        None => format!("artifact {artifact} does not exist"),
    })]
    ArtifactNotFound {
        artifact: ArtifactRef,
        field: Option<String>,
    },
    /// An object with a `$artifact` key that is not a valid reference.
    #[error("`{field}` is not a valid artifact reference: expected {expected}")]
    ArtifactRefInvalid { field: String, expected: String },
    /// The lifecycle refused the event.
    #[error("{0}")]
    Rejected(Box<Rejection>),
    #[error("idempotency key {key:?} was already used for a different request")]
    IdempotencyMismatch { key: String },
    #[error("schedule `{0}` not found")]
    ScheduleNotFound(String),
    #[error("trigger `{0}` not found")]
    TriggerNotFound(String),
    #[error("rate limit `{0}` not found")]
    LimitNotFound(String),
    #[error("a schedule named `{0}` already exists")]
    ScheduleExists(String),
    /// The schedule kept changing under us (its ticks firing); the caller may retry.
    #[error("schedule `{0}` is changing too fast; try again")]
    ScheduleContended(String),
    /// The task kept changing under us; the caller may retry.
    #[error("task {0} is changing too fast; try again")]
    Contended(TaskId),
    /// A budget of the workflow is reached (its text): it stays paused until the budget is
    /// raised.
    #[error("{0}: raise the budget (PUT /v1/workflows/{{id}}/budgets) before resuming")]
    BudgetReached(String),
    /// A registrar (a token) has as many agents stored as it may: another registers once
    /// the agent retention deleted one of its silent agents.
    #[error(
        "`{registered_by}` has {max} agents registered, its limit: re-register one of them \
         with its `id`, or wait for the agent retention to delete silent ones"
    )]
    TooManyAgents { registered_by: String, max: u32 },
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::IdempotencyMismatch { key } => EngineError::IdempotencyMismatch { key },
            StoreError::ScheduleExists(name) => EngineError::ScheduleExists(name),
            StoreError::TooManyAgents { registered_by, max } => {
                EngineError::TooManyAgents { registered_by, max }
            }
            StoreError::TaskNotFound(id) => EngineError::TaskNotFound(id),
            StoreError::WorkflowNotFound(id) => EngineError::WorkflowNotFound(id),
            // Swept after the engine checked it (a race the store refuses).
            StoreError::ArtifactNotFound(artifact) => EngineError::ArtifactNotFound {
                artifact,
                field: Some("artifact".into()),
            },
            other => EngineError::Store(other),
        }
    }
}

impl From<Rejection> for EngineError {
    fn from(r: Rejection) -> Self {
        EngineError::Rejected(Box::new(r))
    }
}

impl EngineError {
    pub fn invalid(field: impl Into<String>, expected: impl Into<String>) -> EngineError {
        EngineError::Invalid {
            field: field.into(),
            expected: expected.into(),
        }
    }
}
