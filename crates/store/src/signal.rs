//! Signals sent to workflows: kept until a task waiting for their name takes them.
//!
//! A signal is stored when it is sent ([`crate::Store::put_signal`]), then delivered by the
//! engine as a `signal_received` transition of each task waiting for it. Writing that
//! transition marks the signal delivered in the same commit (both backends do it in their
//! transition write), so a signal is never delivered, then kept for another waiter, after a
//! crash.

use baton_core::{Timestamp, WorkflowId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A signal to store.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSignal {
    pub workflow: WorkflowId,
    pub name: String,
    pub data: Value,
    pub reject: Option<String>,
    pub sent_by: String,
    /// Sending again with the same key (for the same workflow and name) stores nothing and
    /// returns the first signal.
    pub idempotency_key: Option<String>,
    /// Fingerprint of the request, so that reusing a key for another request is refused.
    pub request_hash: String,
    pub sent_at: Timestamp,
}

/// A stored signal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalRecord {
    /// Unique in the store, increasing in the order signals were stored.
    pub id: u64,
    pub workflow: WorkflowId,
    pub name: String,
    pub data: Value,
    pub reject: Option<String>,
    pub sent_by: String,
    pub idempotency_key: Option<String>,
    pub sent_at: Timestamp,
    /// When a waiting task first took it; `None` while it is kept.
    pub delivered_at: Option<Timestamp>,
}

/// What storing a signal did.
#[derive(Clone, Debug, PartialEq)]
pub struct PutSignal {
    pub signal: SignalRecord,
    /// `false`: its idempotency key was seen before, and this is the first signal.
    pub created: bool,
}
