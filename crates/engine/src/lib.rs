//! Baton's orchestration engine: intake of events, validation through `baton-core`, atomic
//! persistence through `baton-store`, then effects: waking agents, arming the watchdog,
//! releasing or failing dependents, retries, compensation.
//!
//! Invariants: nothing is acted on (answered, published, woken) before it is durable; every
//! decision is taken from the task's current version, and a lost compare-and-set is decided
//! again from the fresh version; durable effects run from the store's outbox, idempotently.
//!
//! Modules, by concern: `engine` (the shared state, start and stop), `intake`, `agents`,
//! `transition`, `control`, `events` (+ `stream`, its data), `background`, `retention`,
//! `views`; `cluster` holds what nodes sharing a store tell each other.

mod agents;
mod alarm;
mod artifacts;
mod background;
mod budgets;
pub mod check;
mod clock;
mod cluster;
mod control;
mod ending;
mod engine;
mod error;
mod events;
mod fanout;
mod flow;
mod ids;
mod intake;
mod leased;
mod metrics;
mod outcome;
mod retention;
mod schedules;
mod signals;
mod stream;
pub mod trace;
mod transition;
mod triggers;
mod upstream;
mod views;

pub use agents::{
    AGENTS_PER_TOKEN_MAX_DEFAULT, AGENT_CAPABILITIES_MAX, AGENT_CONCURRENCY_MAX, CLAIM_TASKS_MAX,
    CLAIM_WAIT_MAX_MS, LOCAL_REGISTRAR,
};
pub use artifacts::{
    ArtifactUpload, ARTIFACTS_PER_SWEEP_MAX, ARTIFACT_BYTES_MAX_DEFAULT,
    ARTIFACT_SWEEP_INTERVAL_MS, ARTIFACT_UNREFERENCED_GRACE_MS_DEFAULT,
};
pub use budgets::{check_budgets, BUDGET_ACTOR, BUDGET_EXCEEDED};
pub use clock::{Clock, ManualClock, SystemClock};
pub use control::{
    Operator, RerunPlan, RerunTask, ERROR_KIND_LEN_MAX, ERROR_MESSAGE_LEN_MAX, REASON_LEN_MAX,
};
pub use ending::{WorkflowEvent, ENDING_CHECK_MS};
pub use engine::{Engine, EngineConfig};
pub use error::EngineError;
pub use fanout::FOR_EACH_RESULTS_BYTES_MAX;
pub use flow::{check_limit_key, LIMITS_MAX};
pub use ids::{IdSource, RandomIds, SeededIds};
pub use intake::{validate_workflow, WorkflowReceipt, WorkflowRequest, NAME_LEN_MAX};
pub use metrics::{ConnectionOpen, Metrics};
pub use outcome::{WorkflowOutcome, WorkflowStatus};
pub use retention::{
    GcOptions, GcReport, AGENT_RETENTION_MS_DEFAULT, AUDIT_RETAIN_MS_DEFAULT,
    CONCURRENCY_KEY_IDLE_MS, GC_ROWS_PER_PRUNE, GC_TASKS_PER_BATCH, GC_VACUUM_PAGES_PER_BATCH,
    GC_WORKFLOWS_PER_SCAN, RETAIN_MS_DEFAULT, RETENTION_INTERVAL_MS,
};
pub use schedules::{ScheduleInfo, NEXT_FIRES_SHOWN, SCHEDULE_MISSED_AFTER_MS};
pub use signals::{SignalInput, SignalReceipt, KEPT_SIGNALS_SWEEP_MS, REJECT_REASON_LEN_MAX};
pub use stream::{StreamPosition, Subscription, TransitionEvent, EVENT_BACKLOG_MAX};
pub use transition::ReportContext;
pub use triggers::TriggerInfo;
pub use upstream::{json_bytes, Upstream, PAYLOAD_BYTES_MAX_DEFAULT, UPSTREAM_BYTES_PER_CLAIM_MAX};
pub use views::{OpenDependency, TaskDetail, WaitReason, WorkflowGraph};

/// The store's types the engine's read model answers with, so that its callers (the API)
/// need not depend on the store.
pub mod read {
    pub use baton_store::{
        AgentRecord, AnyStore, ArtifactChunks, ArtifactMeta, AuditEntry, AuditFilter, Dependency,
        Edge, HistoryMark, IdMatches, IdSuffix, LimitRecord, PutArtifact, ScheduleRecord,
        SignalRecord, StateCounts, TaskFilter, WorkflowRecord, HISTORY_TASKS_PER_PAGE_MAX,
        PAGE_ROWS_MAX,
    };
}
