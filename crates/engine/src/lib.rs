//! Baton's orchestration engine: intake of events, validation through `baton-core`, atomic
//! persistence through `baton-store`, then effects: waking agents, arming the watchdog,
//! releasing or failing dependents, retries, compensation.
//!
//! Invariants: nothing is acted on (answered, published, woken) before it is durable; every
//! decision is taken from the task's current version, and a lost compare-and-set is decided
//! again from the fresh version; durable effects run from the store's outbox, idempotently.

pub mod check;
mod clock;
mod cluster;
mod engine;
mod error;
mod metrics;
pub mod trace;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::validate_workflow;
pub use engine::{
    Engine, EngineConfig, OpenDependency, StreamPosition, Subscription, TransitionEvent,
    WaitReason, WorkflowReceipt, WorkflowRequest, AGENT_CAPABILITIES_MAX, AGENT_CONCURRENCY_MAX,
    CLAIM_TASKS_MAX, CLAIM_WAIT_MAX_MS, EVENT_BACKLOG_MAX, NAME_LEN_MAX,
};
pub use error::EngineError;
pub use metrics::Metrics;
