//! Schedules as stored: the spec (JSON, read by the engine), whether it is paused, and where
//! it stands: the next tick to fire and the workflow the last one submitted. Every change is a
//! compare-and-set on `version`, so two nodes firing the same tick cannot both move it on.

use baton_core::{Timestamp, WorkflowId};

/// A stored schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRecord {
    pub name: String,
    /// The schedule's spec, as JSON.
    pub spec: String,
    pub paused: bool,
    /// The next tick to fire (milliseconds since the epoch).
    pub next_fire_at: Timestamp,
    /// The last tick that submitted a workflow, and that workflow.
    pub last_tick_at: Option<Timestamp>,
    pub last_workflow: Option<WorkflowId>,
    /// 1 when created, one more with each change.
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A change to the schedules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleWrite {
    /// A new schedule; refused with [`crate::StoreError::ScheduleExists`] if the name is taken.
    Create(ScheduleRecord),
    /// The schedule as it is to be: written only if the stored one is at `version - 1`.
    Update(ScheduleRecord),
    /// Deletes the schedule at this version.
    Delete { name: String, version: u64 },
}

/// A stored trigger: a named workflow template that `POST /v1/triggers/{name}` submits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerRecord {
    pub name: String,
    /// The workflow template, as JSON.
    pub template: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A change to the triggers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TriggerWrite {
    /// Creates the trigger, or replaces its template (keeping when it was created).
    Put(TriggerRecord),
    Delete(String),
}
