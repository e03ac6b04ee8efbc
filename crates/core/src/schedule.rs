//! What a schedule is made of: a cron expression in a time zone, the workflow each tick
//! submits, and what to do when a tick finds the previous run still going or when ticks were
//! missed while nothing ran. The engine evaluates it; this is the data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::TaskSpec;

/// Most missed ticks `catch_up: all` may submit after downtime.
pub const CATCH_UP_MAX: u32 = 1_000;

/// A schedule as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleSpec {
    /// Unique among schedules: 1 to 128 letters, digits and `-_.:/`, but not `.` or `..`.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$")
    )]
    pub name: String,
    /// A cron expression with seconds: `SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK` (e.g.
    /// `0 30 9 * * MON-FRI`); five fields (no seconds) are read as second 0.
    pub cron: String,
    /// The IANA time zone the expression is read in (e.g. `Europe/Berlin`); `UTC` if absent.
    /// A local time skipped by a daylight-saving change fires at the first time after it; one
    /// that occurs twice fires once.
    #[serde(default = "utc")]
    pub timezone: String,
    /// The workflow each tick submits, with the idempotency key `schedule:NAME:TICK_MS`.
    pub workflow: WorkflowTemplate,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: CatchUp,
}

fn utc() -> String {
    "UTC".into()
}

/// The workflow a schedule (or a trigger) submits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowTemplate {
    /// At most 256 bytes.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub name: String,
    /// 1 to 100,000 tasks.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100000))]
    pub tasks: Vec<TaskSpec>,
    /// The workflow's outputs, as in `POST /v1/workflows`: name → template over its tasks'
    /// results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub outputs: Option<BTreeMap<String, Value>>,
    /// The labels of each workflow it submits (see `POST /v1/workflows`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::LabelsSchema))]
    pub labels: crate::Labels,
    /// The budgets of each workflow it submits (see `POST /v1/workflows`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::BudgetsSchema))]
    pub budgets: crate::Budgets,
}

/// What a tick does while the workflow of the previous tick is still running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Overlap {
    /// Skip the tick.
    #[default]
    Skip,
    /// Submit anyway: runs overlap.
    Allow,
    /// Cancel the previous run, then submit.
    CancelPrevious,
}

/// What happens to the ticks missed while no node ran (downtime), once one does again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CatchUp {
    /// Missed ticks are skipped.
    #[default]
    None,
    /// Only the latest missed tick is submitted.
    Latest,
    /// Every missed tick is submitted, oldest first, but no more than the latest `max` (at
    /// most 1,000).
    All {
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
        #[serde(deserialize_with = "crate::whole::de")]
        max: u32,
    },
}
