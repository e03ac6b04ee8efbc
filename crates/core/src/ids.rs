//! Identifiers, tokens and time as newtypes, so that a task id can never be passed where an agent
//! id is expected and a fencing token is never confused with a version.
//!
//! The core never creates random ids or reads a clock: ids and `now` come in from the caller.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id!(
    /// Globally unique id of a task (UUIDv7, made by the engine).
    TaskId
);
uuid_id!(
    /// Globally unique id of a workflow (UUIDv7, made by the engine).
    WorkflowId
);
uuid_id!(
    /// Id of a registered agent.
    AgentId
);
uuid_id!(
    /// Id of one lease: one agent's time-bounded right to work on one task.
    LeaseId
);

/// The user's name for a task, unique within its workflow; dependencies refer to tasks by key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskKey(pub String);

impl TaskKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TaskKey {
    fn from(s: &str) -> Self {
        TaskKey(s.to_owned())
    }
}

/// A capability an agent offers and a task requires, such as `summarize` or `gpu`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capability(pub String);

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Capability {
    fn from(s: &str) -> Self {
        Capability(s.to_owned())
    }
}

/// Fencing token of a lease. Every assignment of a task issues a larger token than the one
/// before, so a report carrying an older token comes from a lease that is no longer current.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FencingToken(pub u64);

impl FencingToken {
    pub fn next(self) -> FencingToken {
        FencingToken(self.0 + 1)
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A point in time: milliseconds since the Unix epoch. The core only ever receives it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Later than any time a timer is armed for: what a paused task's stopped timers are due.
    /// It fits an `i64`, as the stores keep it.
    pub const NEVER: Timestamp = Timestamp(i64::MAX as u64);

    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn ms_since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// For [`crate::whole`]: a time read from a request.
impl From<u64> for Timestamp {
    fn from(ms: u64) -> Timestamp {
        Timestamp(ms)
    }
}

impl TryFrom<i64> for Timestamp {
    type Error = std::num::TryFromIntError;

    fn try_from(ms: i64) -> Result<Timestamp, Self::Error> {
        u64::try_from(ms).map(Timestamp)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
