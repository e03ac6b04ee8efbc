//! The JSON that crosses the wire: request bodies, query parameters and responses of the `/v1`
//! API, shared by the server (which derives their JSON schemas with the `openapi` feature) and
//! its clients. No behaviour lives here.

use std::collections::{BTreeMap, BTreeSet};

use baton_core::{
    Capability, ErrorReport, EventKind, ScheduleSpec, StateKind, Task, TaskSpec, WorkflowTemplate,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A workflow: tasks with their dependencies, submitted together.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitWorkflow {
    /// At most 256 bytes.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub name: String,
    /// Resubmitting with the same key returns the first submission (1 to 256 bytes).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub idempotency_key: Option<String>,
    /// 1 to 100,000 tasks.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100000))]
    pub tasks: Vec<TaskSpec>,
    /// The workflow's result once every task has completed (`GET /v1/workflows/{id}` shows it
    /// as `result`): a map of names to values, where any value may be a reference to a task's
    /// result, `{"$from": "KEY", "pointer": "/json/pointer"}` (KEY any task of the workflow),
    /// as in a task's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub outputs: Option<BTreeMap<String, Value>>,
    /// Labels the workflow carries for its whole life, `{"tenant": "acme"}`: at most 16, keys
    /// of 1 to 63 characters among `a-z0-9_.-`, values of 1 to 255 bytes. Workflows are listed
    /// by label (`GET /v1/workflows?label=tenant:acme`), and a token scoped to labels sees only
    /// the workflows carrying them (its submissions get them added).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::LabelsSchema))]
    pub labels: BTreeMap<String, String>,
    /// Budgets on what the workflow's agents report spending (`usage` on heartbeats and
    /// results), per unit: `{"usd": {"limit": 5, "policy": "pause"}, "tokens": {"limit":
    /// 200000}}`. Once a unit's total reaches its limit, `pause` (the default) pauses the
    /// workflow and takes its running tasks back from their agents (their next report is
    /// refused with `task_paused`; an operator raises the budget, `PUT
    /// /v1/workflows/{id}/budgets`, then resumes it), `fail` fails its open tasks (error kind `budget_exceeded`), `cancel`
    /// cancels them. Unit names: 1 to 64 of `a-z0-9_.-`; at most 32 units.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::BudgetsSchema))]
    pub budgets: BTreeMap<String, baton_core::Budget>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowCreated {
    pub workflow: Uuid,
    /// `false` when an earlier submission with the same idempotency key is returned.
    pub created: bool,
    /// Task ids by key.
    pub tasks: BTreeMap<String, Uuid>,
}

/// One task, submitted as a workflow of its own.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitTask {
    /// Resubmitting with the same key returns the first submission (1 to 256 bytes).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub idempotency_key: Option<String>,
    pub task: TaskSpec,
    /// The labels of the workflow it makes (as in `POST /v1/workflows`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::LabelsSchema))]
    pub labels: BTreeMap<String, String>,
    /// The budgets of the workflow it makes (as in `POST /v1/workflows`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::BudgetsSchema))]
    pub budgets: BTreeMap<String, baton_core::Budget>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskCreated {
    pub workflow: Uuid,
    pub task: Uuid,
    pub created: bool,
}

/// Tasks per state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    pub blocked: u64,
    pub pending: u64,
    pub assigned: u64,
    pub executing: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub total: u64,
    /// Of the tasks above, how many an operator has paused (they keep their state).
    #[serde(default)]
    pub paused: u64,
    /// Of the `failed` tasks, those with a retry scheduled: `failed - retrying` have failed for
    /// good, so nothing is left to run once blocked, pending, assigned, executing and retrying
    /// are all 0.
    #[serde(default)]
    pub retrying: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowView {
    pub id: Uuid,
    pub name: String,
    pub idempotency_key: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub counts: Counts,
    /// `running` while a task has not ended (it waits, runs, or has a retry scheduled); then
    /// `completed` (every task completed), `failed` (one failed for good) or `cancelled`.
    pub status: WorkflowStatusView,
    /// The declared `outputs`, as submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub outputs: Option<Value>,
    /// Once the workflow has ended, the declared `outputs` with every reference resolved (in
    /// `GET /v1/workflows/{id}`, not in lists): a failed workflow has one too when the tasks
    /// its outputs refer to completed. Absent without outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The output reference that found nothing (the task did not complete, or its result
    /// lacks what the pointer names), if one did: then there is no `result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub unresolved: Option<Value>,
    /// Its labels, as submitted (absent: none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::LabelsSchema))]
    pub labels: BTreeMap<String, String>,
    /// Set while an operator has paused the workflow (`POST /v1/workflows/{id}/pause`): tasks
    /// created in it then start paused too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseView>,
    /// What its agents have reported spending, per unit, all tasks and attempts together
    /// (absent: nothing reported).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::UsageSchema))]
    pub usage: baton_core::Usage,
    /// Its budgets per unit (absent: none); see `POST /v1/workflows`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::BudgetsSchema))]
    pub budgets: BTreeMap<String, baton_core::Budget>,
}

/// `PUT /v1/workflows/{id}/budgets`: the workflow's budgets, replaced as a whole.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BudgetsBody {
    /// Why (required, 1 to 1,024 bytes, not only white space): every operator action is
    /// audited with its reason.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 1024,
            pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub reason: String,
    /// The budgets per unit (an empty map removes them), as in `POST /v1/workflows`.
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::BudgetsSchema))]
    pub budgets: BTreeMap<String, baton_core::Budget>,
}

/// Query of `GET /v1/usage`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only workflows carrying this label, `key:value` (e.g. a tenant's).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9_.-]{1,63}[:=][^\x00-\x1f\x7f-\x9f]{1,255}$")
    )]
    #[cfg_attr(
        feature = "openapi",
        param(pattern = r"^[a-z0-9_.-]{1,63}[:=][^\x00-\x1f\x7f-\x9f]{1,255}$")
    )]
    pub label: Option<String>,
}

/// What agents have reported spending, per unit.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageView {
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::UsageSchema))]
    pub usage: baton_core::Usage,
}

/// An operator's pause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PauseView {
    /// The name of the token that paused it.
    pub by: String,
    pub reason: String,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
}

/// `POST /v1/tasks/{id}/pause` and `POST /v1/workflows/{id}/pause`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    /// Why (required, 1 to 1,024 bytes, not only white space): every operator action is
    /// audited with its reason.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 1024,
            pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub reason: String,
    /// Take a task an agent holds back at once: its lease is revoked and the agent's next
    /// report (a heartbeat) is refused with `task_paused`. Without it, a running agent finishes.
    #[serde(default)]
    pub now: bool,
}

/// `POST /v1/tasks/{id}/resume` and `POST /v1/workflows/{id}/resume`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    /// Why (required, 1 to 1,024 bytes, not only white space): every operator action is
    /// audited with its reason.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 1024,
            pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub reason: String,
}

/// `POST /v1/tasks/{id}/skip`: complete the task with this result in place of an agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SkipBody {
    /// Why (required, 1 to 1,024 bytes, not only white space): every operator action is
    /// audited with its reason.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 1024,
            pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub reason: String,
    /// The task's result: any JSON value but null. Its dependents see it as any result.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub result: Value,
}

/// `POST /v1/tasks/{id}/fail`: fail the task for good (no retry; its dependents are cancelled
/// and it compensates).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    /// Why (required, 1 to 1,024 bytes, not only white space): every operator action is
    /// audited with its reason.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 1024,
            pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub reason: String,
    /// The error recorded; by default kind `forced` and a message naming who and why.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<ReportedError>))]
    pub error: Option<ErrorReport>,
}

/// The error of a failure report (`POST /v1/tasks/{id}/failed`) or of an operator's `fail`: an
/// [`ErrorReport`] whose `kind` is 1 to 128 bytes and `message` at most 32,768 bytes, or the
/// request is refused. (In a batch, such
/// a report is refused on its own: `ReportBatch` documents the plain `ErrorReport`.) For the
/// document only.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ReportedError {
    /// What went wrong, as a short name (1 to 128 bytes): retry policies name the kinds not
    /// to retry (`retry.non_retryable`).
    #[schema(min_length = 1, max_length = 128)]
    kind: String,
    /// What happened, for the people and the compensation that read it: at most 32,768 bytes
    /// (the SDKs cut a longer one to 8,192 characters). Every attempt's error is kept with the
    /// task.
    #[schema(max_length = 32768)]
    message: String,
    /// `true` if absent.
    #[schema(required = false, default = true)]
    retryable: bool,
}

/// `POST /v1/tasks/{id}/rerun`: run the task and everything downstream of it again.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RerunBody {
    /// Why (required, 1 to 1,024 bytes, not only white space): every operator action is
    /// audited with its reason.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 1024,
            pattern = r"[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
        )
    )]
    pub reason: String,
    /// A new input for the task (not for those downstream), checked as at submission:
    /// templates may refer to its dependencies only.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub input: Option<Value>,
    /// Only say what would rerun; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a rerun reopened (or would, with `dry_run`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RerunAnswer {
    /// `false` for a dry run.
    pub applied: bool,
    /// The task first, then everything downstream of it, breadth first, each with its state
    /// before the rerun.
    pub tasks: Vec<RerunTaskView>,
    /// The tasks that earlier runs of `tasks` created and that no longer count, each with its
    /// state before the rerun: the items of the fan-outs that expand anew, and the sub-tasks
    /// the tasks added by decomposition (with what depends on them outside the rerun). They
    /// are cancelled (reason `superseded`; a running agent loses its lease with
    /// `task_superseded`). A fan-out's next expansion reopens the items its new list still
    /// has, with their new input; a task that adds a superseded sub-task again (same spec but
    /// for its input) reopens it.
    #[serde(default)]
    pub superseded: Vec<RerunTaskView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RerunTaskView {
    pub id: Uuid,
    pub key: String,
    pub state: StateKind,
}

/// A workflow paused or resumed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowControlAnswer {
    pub workflow: Uuid,
    /// How many of its tasks the action changed.
    pub tasks_changed: usize,
}

/// `GET /v1/audit`: filters, all optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only actions by this token name.
    pub actor: Option<String>,
    /// Only actions on this workflow (or its tasks).
    pub workflow: Option<Uuid>,
    /// Only this action: `pause`, `resume`, `skip`, `fail`, `rerun`, `cancel`, `retry`,
    /// `signal`.
    pub action: Option<String>,
    /// Only actions at or after this time (ms since the epoch).
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    #[cfg_attr(feature = "openapi", param(maximum = 9223372036854775807_u64))]
    pub since: Option<u64>,
    /// Only actions before this time (ms since the epoch).
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    #[cfg_attr(feature = "openapi", param(maximum = 9223372036854775807_u64))]
    pub until: Option<u64>,
    /// Entries older than this id: the `next` of the previous page.
    pub before: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<usize>,
}

/// One operator action.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntryView {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// The name of the token that acted.
    pub actor: String,
    pub action: String,
    pub workflow: Option<Uuid>,
    /// The task acted on, for an action on one task.
    pub task: Option<Uuid>,
    pub reason: String,
    /// What else the action carried and what it changed (`tasks_changed`, `now`, …).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: Value,
}

/// A page of the audit log, newest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditEntryView>,
    /// Pass as `before` for the next (older) page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

/// Where a workflow stands as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatusView {
    Running,
    Completed,
    Failed,
    Cancelled,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why (optional, at most 1,024 bytes): recorded in the `cancel_requested` entry and the
    /// audit log.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelledCount {
    pub cancelled: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub workflow: Option<Uuid>,
    /// Only tasks in this state.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<StateKind>))]
    #[cfg_attr(feature = "openapi", param(value_type = Option<StateKind>, inline))]
    pub state: Option<String>,
    /// Return tasks after this id (the `next` of the previous page).
    pub after: Option<Uuid>,
    /// At most this many (1 to 1000, default 100).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSummary {
    pub id: Uuid,
    pub workflow: Uuid,
    pub key: String,
    pub state: StateKind,
    pub attempt: u32,
    pub version: u64,
    pub priority: i32,
    pub updated_at: u64,
    /// Whether an operator has paused the task (`GET /v1/tasks/{id}` says by whom and why);
    /// absent when not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskList {
    pub tasks: Vec<TaskSummary>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Uuid>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseView {
    pub id: Uuid,
    pub agent: Uuid,
    #[serde(deserialize_with = "baton_core::whole::int64")]
    pub token: u64,
    pub granted_at: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadlinesView {
    pub schedule_to_start: Option<u64>,
    pub start: Option<u64>,
    pub start_to_close: Option<u64>,
    pub heartbeat: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DependencyView {
    pub key: String,
    pub id: Uuid,
    pub state: StateKind,
}

/// A task with everything known about it. Its input is in `spec` only: the `submitted`
/// entry of `history` does not repeat the spec.
///
/// `S` is how the spec is held: decoded ([`TaskSpec`], what clients read), or as the server
/// sends it, the JSON it stored (a big input is never decoded to be shown).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskView<S = TaskSpec> {
    pub id: Uuid,
    pub workflow: Uuid,
    pub key: String,
    pub state: StateKind,
    /// The state with its data (lease, result, error, retry time, cancel reason).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: Value,
    pub version: u64,
    pub attempt: u32,
    pub attempts_allowed: u32,
    pub fencing_token: u64,
    /// The task as submitted, input included.
    #[cfg_attr(feature = "openapi", schema(value_type = TaskSpec))]
    pub spec: S,
    /// For a task whose `spec.input` is a template (values `{"$from": KEY, "pointer":
    /// "/json/pointer"}` standing for a dependency's result, `{"$literal": …}` for an object
    /// written as is): the input resolved when the task became ready, which is what its agent
    /// is handed. Absent for a plain input (the agent gets `spec.input`) and while a template
    /// waits for its dependencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Any JSON value.
    pub result: Option<Value>,
    /// Every failed attempt, oldest first.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub errors: Vec<Value>,
    /// Set while an operator has paused the task: `by` (the token's name), `reason`, `at` (ms
    /// since the epoch). A paused task is not handed to agents and its timers stand still; an
    /// agent already running it may finish (unless the pause took it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<PauseView>,
    /// What its agents have reported spending, per unit, all attempts together (absent:
    /// nothing reported).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::UsageSchema))]
    pub usage: baton_core::Usage,
    /// The operator's control that last took an agent's lease away or ended the task (a skip,
    /// a failure, a rerun, a pause with `now`): `event`, `by`, `reason`. A late report under
    /// that lease is refused naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub overruled: Option<Value>,
    pub lease: Option<LeaseView>,
    pub deadlines: DeadlinesView,
    /// When the task last entered each state (ms since the epoch).
    pub entered_at: BTreeMap<String, u64>,
    /// Why a task that has not ended is waiting; absent once it has ended.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub waiting: Option<Value>,
    pub dependencies: Vec<DependencyView>,
    pub dependents: Vec<Uuid>,
    /// The compensation task this task's failure or cancellation created, once it exists.
    pub compensation: Option<Uuid>,
    /// The task this one compensates, for a compensation task.
    pub compensates: Option<Uuid>,
    /// The dependency whose failure cancelled this task.
    pub upstream_cause: Option<Uuid>,
    /// The first entries of the history (at most 1,000; `GET /v1/tasks/{id}/history` pages
    /// through all of them), oldest first.
    pub history: Vec<HistoryEntry>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// One entry of a task's history: one transition, in the order the task went through them.
/// The same shape in a task's view and in `GET /v1/tasks/{id}/history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    /// Its place in the task's history, from 1; the task's `version` after it.
    pub seq: u64,
    /// When it was recorded (ms since the epoch).
    pub at: u64,
    /// Who sent the event: an agent, an operator (the token's name) or the engine.
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::Actor))]
    pub actor: Value,
    /// The event's kind (`data.event`).
    pub event: baton_core::EventKind,
    /// The event with its own fields, tagged by `event`. A `submitted` event leaves out the
    /// spec (the task's `spec` gives it, input included) and gives `seed` as a string.
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::Event))]
    pub data: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Entries with a sequence number above this.
    pub after: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryBody {}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct CountsQuery {
    pub workflow: Option<Uuid>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    /// Re-register an existing agent under its id.
    #[serde(default)]
    pub id: Option<Uuid>,
    /// 1 to 256 bytes. An agent token may register only the agents it names.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub name: String,
    /// What it can run (at most 64).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Capability>, max_items = 64))]
    pub capabilities: BTreeSet<Capability>,
    /// Tasks it may hold at once, 1 to 10,000: by default 1 for a new agent, and what it had
    /// for one re-registered under its `id`.
    #[serde(default, deserialize_with = "baton_core::whole::opt")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub concurrency: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentView {
    pub id: Uuid,
    pub name: String,
    pub capabilities: BTreeSet<Capability>,
    pub concurrency: u32,
    pub online: bool,
    pub registered_at: u64,
    pub last_seen: u64,
    /// Tasks it holds leases on.
    pub leased: Vec<Uuid>,
    /// Silence after which the agent is declared dead and loses its leases: keep alive well
    /// within it.
    #[serde(default)]
    pub liveness_ms: u64,
    /// The token that first registered it (`local` for loopback clients without tokens;
    /// empty for agents registered before this was recorded): each token may have at most
    /// so many agents (`baton serve --agents-per-token-max`). An agent silent for the agent
    /// retention is deleted.
    #[serde(default)]
    pub registered_by: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct AgentsQuery {
    /// Agents after this id (the `next` of the previous page).
    pub after: Option<Uuid>,
    /// At most this many (1 to 1000, default 100).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<usize>,
}

/// A page of agents, by id.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentList {
    pub agents: Vec<AgentView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Uuid>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Most tasks to take, 1 to 256 (default 1).
    #[serde(default, deserialize_with = "baton_core::whole::opt")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 256))]
    pub max: Option<usize>,
    /// How long to wait for work when none is ready, at most 60,000 ms (long poll; default 0).
    #[serde(default, deserialize_with = "baton_core::whole::opt")]
    #[cfg_attr(feature = "openapi", schema(maximum = 60000))]
    pub wait_ms: Option<u64>,
    /// Also start each task handed out that has a heartbeat deadline (`execution_started` in
    /// the claim's commit): it comes back executing (`started: true`), and the agent sends no
    /// `started` report. A task without one comes back assigned, to be started as usual.
    #[serde(default)]
    pub start: bool,
}

/// A task handed to an agent, with its lease.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedTask {
    pub task: Uuid,
    pub workflow: Uuid,
    pub key: String,
    pub attempt: u32,
    pub lease: Uuid,
    /// Send it back with every report; a newer assignment makes it stale.
    pub token: u64,
    /// The task's input: any JSON value, with its templates resolved (every `{"$from": …}`
    /// replaced by what it refers to in a dependency's result).
    pub input: Value,
    pub deadlines: DeadlinesView,
    /// W3C trace context: the workflow's trace, this task's span.
    pub traceparent: String,
    /// Stable across redeliveries of this attempt: use it to make side effects idempotent.
    pub idempotency_key: String,
    /// The capabilities the task requires (a subset of the agent's).
    #[serde(default)]
    pub capabilities: BTreeSet<Capability>,
    /// Longest silence allowed between heartbeats once started, if the task has that deadline.
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    /// The server's clock (ms since the epoch) when it answered: deadlines are on this clock.
    #[serde(default)]
    pub now: u64,
    /// The results of the task's dependencies, by dependency key. One claim answer carries at
    /// most 4 MiB of them over all its tasks; a result past that is withheld (`result` absent,
    /// `withheld_bytes` says its size): read it with `GET /v1/tasks/{id}/upstream?key=KEY`.
    #[serde(default)]
    pub upstream: BTreeMap<String, UpstreamResult>,
    /// The claim started it (`start`): it is executing, and needs no `started` report.
    #[serde(default)]
    pub started: bool,
    /// The task's version as the claim left it.
    #[serde(default)]
    pub version: u64,
}

/// The input of a compensation task, which Baton submits when a task that declares a
/// `compensation` fails for good or is cancelled. The failed task's upstream results are read
/// with `GET /v1/tasks/{task}/upstream`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompensationInput {
    /// The key of the task compensated.
    pub compensates: String,
    /// The id of the task compensated.
    pub task: Uuid,
    /// The `input` its `compensation` spec declares.
    pub input: Value,
    /// The compensated task's own input.
    #[serde(default)]
    pub task_input: Value,
    /// Every failed attempt of the compensated task, oldest first (none if it was cancelled
    /// before failing).
    #[serde(default)]
    pub errors: Vec<Value>,
    /// The last of `errors`, if any.
    pub error: Option<Value>,
}

/// A dependency's result, handed down the graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpstreamResult {
    /// The dependency's task id.
    pub task: Uuid,
    /// The result its successful attempt reported; absent when withheld from a claim answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// When the result is withheld: its size in bytes of JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld_bytes: Option<u64>,
}

/// Query of `GET /v1/tasks/{id}/upstream`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct UpstreamQuery {
    /// Only this dependency's result.
    pub key: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Claimed {
    pub tasks: Vec<ClaimedTask>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseReport {
    pub agent: Uuid,
    #[serde(deserialize_with = "baton_core::whole::int64")]
    pub token: u64,
    /// The agent's trace context for this report, if it has one.
    #[serde(default)]
    pub traceparent: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatReport {
    pub agent: Uuid,
    #[serde(deserialize_with = "baton_core::whole::int64")]
    pub token: u64,
    /// Any JSON value.
    #[serde(default)]
    pub progress: Option<Value>,
    /// What the agent has spent so far under this lease, per unit, e.g. `{"tokens": 1532,
    /// "usd": 0.012}`: cumulative (send the running total; a report sent again counts once),
    /// numbers from 0 to 1e12 with at most six decimals counted. Summed per task and workflow
    /// (`usage` on both) and checked against the workflow's `budgets`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::UsageSchema))]
    pub usage: baton_core::Usage,
    #[serde(default)]
    pub traceparent: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SuccessReport {
    pub agent: Uuid,
    #[serde(deserialize_with = "baton_core::whole::int64")]
    pub token: u64,
    /// Any JSON value but `null`.
    pub result: Value,
    /// What the agent has spent so far under this lease, per unit, e.g. `{"tokens": 1532,
    /// "usd": 0.012}`: cumulative (send the running total; a report sent again counts once),
    /// numbers from 0 to 1e12 with at most six decimals counted. Summed per task and workflow
    /// (`usage` on both) and checked against the workflow's `budgets`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::UsageSchema))]
    pub usage: baton_core::Usage,
    #[serde(default)]
    pub traceparent: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FailureReport {
    pub agent: Uuid,
    #[serde(deserialize_with = "baton_core::whole::int64")]
    pub token: u64,
    #[cfg_attr(feature = "openapi", schema(value_type = ReportedError))]
    pub error: ErrorReport,
    /// What the agent has spent so far under this lease, per unit, e.g. `{"tokens": 1532,
    /// "usd": 0.012}`: cumulative (send the running total; a report sent again counts once),
    /// numbers from 0 to 1e12 with at most six decimals counted. Summed per task and workflow
    /// (`usage` on both) and checked against the workflow's `budgets`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::UsageSchema))]
    pub usage: baton_core::Usage,
    #[serde(default)]
    pub traceparent: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubtasksReport {
    pub agent: Uuid,
    #[serde(deserialize_with = "baton_core::whole::int64")]
    pub token: u64,
    /// At least one task.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub tasks: Vec<TaskSpec>,
}

/// Most reports one `POST /v1/reports` carries.
pub const REPORTS_PER_BATCH_MAX: usize = 256;

/// Many agents' reports in one request (`POST /v1/reports`), each applied as its own
/// transition and answered on its own.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportBatch {
    /// 1 to 256 reports. Reports on one task are applied in their order; others at once.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 256))]
    pub reports: Vec<Report>,
}

/// One report of a batch: the body of `POST /v1/tasks/{task}/{report}`, with the task and the
/// report's name beside it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "report", rename_all = "snake_case", deny_unknown_fields)]
pub enum Report {
    /// As `POST /v1/tasks/{task}/started`.
    Started {
        task: Uuid,
        agent: Uuid,
        #[serde(deserialize_with = "baton_core::whole::int64")]
        token: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// As `POST /v1/tasks/{task}/heartbeat`.
    Heartbeat {
        task: Uuid,
        agent: Uuid,
        #[serde(deserialize_with = "baton_core::whole::int64")]
        token: u64,
        /// Any JSON value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<Value>,
        /// Cumulative spending under this lease, as on a heartbeat.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::UsageSchema))]
        usage: baton_core::Usage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// As `POST /v1/tasks/{task}/succeeded`.
    Succeeded {
        task: Uuid,
        agent: Uuid,
        #[serde(deserialize_with = "baton_core::whole::int64")]
        token: u64,
        /// Any JSON value but `null`.
        result: Value,
        /// Cumulative spending under this lease, as on a heartbeat.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::UsageSchema))]
        usage: baton_core::Usage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// As `POST /v1/tasks/{task}/failed`.
    Failed {
        task: Uuid,
        agent: Uuid,
        #[serde(deserialize_with = "baton_core::whole::int64")]
        token: u64,
        error: ErrorReport,
        /// Cumulative spending under this lease, as on a heartbeat.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        #[cfg_attr(feature = "openapi", schema(value_type = baton_core::openapi::UsageSchema))]
        usage: baton_core::Usage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// As `POST /v1/tasks/{task}/released`.
    Released {
        task: Uuid,
        agent: Uuid,
        #[serde(deserialize_with = "baton_core::whole::int64")]
        token: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
}

impl Report {
    /// The task reported on.
    pub fn task(&self) -> Uuid {
        match self {
            Report::Started { task, .. }
            | Report::Heartbeat { task, .. }
            | Report::Succeeded { task, .. }
            | Report::Failed { task, .. }
            | Report::Released { task, .. } => *task,
        }
    }

    /// The lease's fencing token.
    pub fn token(&self) -> u64 {
        match self {
            Report::Started { token, .. }
            | Report::Heartbeat { token, .. }
            | Report::Succeeded { token, .. }
            | Report::Failed { token, .. }
            | Report::Released { token, .. } => *token,
        }
    }

    /// The agent reporting.
    pub fn agent(&self) -> Uuid {
        match self {
            Report::Started { agent, .. }
            | Report::Heartbeat { agent, .. }
            | Report::Succeeded { agent, .. }
            | Report::Failed { agent, .. }
            | Report::Released { agent, .. } => *agent,
        }
    }
}

/// The answers to a batch, in the order of its reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportBatchAnswer {
    pub answers: Vec<ReportOutcome>,
}

/// What one report of a batch got: `answer` as its own request would have been answered
/// (`status` 200), or the `problem` its own request would have been refused with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportOutcome {
    pub task: Uuid,
    /// The HTTP status the report alone would have been answered with.
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<ReportAnswer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<ProblemDoc>,
}

/// Where a task stands after a report.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportAnswer {
    pub task: Uuid,
    pub state: StateKind,
    pub version: u64,
    pub attempt: u32,
    pub token: u64,
    /// The task was cancelled: stop working on it.
    pub cancelled: bool,
    pub deadlines: DeadlinesView,
    /// The server's clock (ms since the epoch) when it answered: deadlines are on this clock.
    #[serde(default)]
    pub now: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this workflow's transitions.
    pub workflow: Option<Uuid>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct LifecycleQuery {
    /// `mermaid` (default), `dot`, or `json` for the rules themselves.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<LifecycleFormat>))]
    #[cfg_attr(feature = "openapi", param(value_type = Option<LifecycleFormat>, inline))]
    pub format: Option<String>,
}

/// What `GET /v1/lifecycle` answers: a Mermaid or DOT diagram (`text/plain`), or the rules as
/// JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LifecycleFormat {
    Mermaid,
    Dot,
    Json,
}

/// One transition, as the event stream (`GET /v1/events`) sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransitionEventView {
    pub task: Uuid,
    pub workflow: Uuid,
    pub key: String,
    pub event: baton_core::EventKind,
    pub from: Option<StateKind>,
    pub to: StateKind,
    pub version: u64,
    pub attempt: u32,
    pub at: u64,
    pub agent: Option<Uuid>,
    /// Its number in the serving node's stream; the event's id is `NODE-SEQ`.
    #[serde(default)]
    pub seq: u64,
}

/// A workflow ended, as the event stream (`GET /v1/events`) sends it (event `workflow`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowEventView {
    pub workflow: Uuid,
    /// `completed`, `failed` or `cancelled`.
    pub status: WorkflowStatusView,
    /// When the serving node saw it end (ms since the epoch).
    pub at: u64,
}

/// One rule of the lifecycle table, as `GET /v1/lifecycle?format=json` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LifecycleRule {
    /// `None` for the rules that create a task.
    pub from: Option<StateKind>,
    pub event: baton_core::EventKind,
    /// Guards, e.g. `current lease`, `not retry allowed`.
    pub guards: Vec<String>,
    pub to: StateKind,
    pub effects: Vec<String>,
    /// An operator's reopening of a terminal task (or its consequence).
    pub reopens: bool,
}

/// A page of workflows, newest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Uuid>,
}

/// Query of `GET /v1/workflows`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct WorkflowListQuery {
    /// Workflows older than this one (the `next` of the previous page).
    pub before: Option<Uuid>,
    /// At most this many (1 to 100, default 20).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<usize>,
    /// Only workflows with this status.
    pub status: Option<WorkflowStatusView>,
    /// Only workflows whose name contains this (ignoring case).
    pub name: Option<String>,
    /// Only workflows carrying this label, written `key:value` (or `key=value`).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[a-z0-9_.-]{1,63}[:=][^\x00-\x1f\x7f-\x9f]{1,255}$")
    )]
    #[cfg_attr(
        feature = "openapi",
        param(pattern = r"^[a-z0-9_.-]{1,63}[:=][^\x00-\x1f\x7f-\x9f]{1,255}$")
    )]
    pub label: Option<String>,
}

/// What a short id stands for (`GET /v1/ids/{suffix}`): the tasks and workflows whose ids end
/// in those hex digits, each in id order.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdMatches {
    pub tasks: Vec<TaskIdMatch>,
    pub workflows: Vec<WorkflowIdMatch>,
    /// More tasks or workflows match than are listed: give more digits.
    pub more: bool,
}

/// A task whose id ends in the digits looked up.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskIdMatch {
    pub id: Uuid,
    pub workflow: Uuid,
    pub key: String,
}

/// A workflow whose id ends in the digits looked up.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowIdMatch {
    pub id: Uuid,
    pub name: String,
}

/// One task of a workflow's graph.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GraphNode {
    pub id: Uuid,
    pub key: String,
    pub state: StateKind,
    pub attempt: u32,
    /// The task that made this one: the task that added it as a sub-task (decomposition), or
    /// the `for_each` task it is an item of (`KEY[i]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Uuid>,
    /// For a compensation task: the task it compensates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensates: Option<Uuid>,
    /// Whether an operator has paused the task; absent when not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// Query of `GET /v1/workflows/{id}/history`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct WorkflowHistoryQuery {
    /// Tasks with ids after this one (the `next` of the previous page).
    pub after: Option<Uuid>,
    /// The history of at most this many tasks (1 to 500, default 200).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 500))]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500))]
    pub limit: Option<usize>,
}

/// One history entry without its event's data.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryMarkView {
    pub seq: u64,
    /// When it was recorded (ms since the epoch).
    pub at: u64,
    pub event: EventKind,
}

/// One task's history entries, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskHistoryMarks {
    pub task: Uuid,
    pub entries: Vec<HistoryMarkView>,
}

/// A page of the history of a workflow's tasks, in task id order: each entry's sequence
/// number, time and event, without the event's data; heartbeats are left out.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowHistory {
    pub workflow: Uuid,
    pub tasks: Vec<TaskHistoryMarks>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Uuid>,
}

/// `dependent` waits for `dependency`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GraphEdge {
    pub dependency: Uuid,
    pub dependent: Uuid,
}

/// A workflow's dependency graph with every task's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowGraph {
    pub workflow: Uuid,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

impl From<&Task> for TaskSummary {
    fn from(t: &Task) -> TaskSummary {
        TaskSummary {
            id: t.id.0,
            workflow: t.workflow.0,
            key: t.spec.key.0.clone(),
            state: t.kind(),
            attempt: t.attempt,
            version: t.version,
            priority: t.spec.priority,
            updated_at: t.updated_at.0,
            paused: t.is_paused(),
        }
    }
}

impl From<&baton_core::Deadlines> for DeadlinesView {
    fn from(d: &baton_core::Deadlines) -> DeadlinesView {
        DeadlinesView {
            schedule_to_start: d.schedule_to_start.map(|t| t.0),
            start: d.start.map(|t| t.0),
            start_to_close: d.start_to_close.map(|t| t.0),
            heartbeat: d.heartbeat.map(|t| t.0),
        }
    }
}

impl From<&Task> for ReportAnswer {
    fn from(t: &Task) -> ReportAnswer {
        ReportAnswer {
            task: t.id.0,
            state: t.kind(),
            version: t.version,
            attempt: t.attempt,
            token: t.fencing_token.0,
            cancelled: t.kind() == StateKind::Cancelled,
            deadlines: (&t.deadlines).into(),
            now: t.updated_at.0,
        }
    }
}

/// A refused request (RFC 9457 problem document, `application/problem+json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Problem))]
pub struct ProblemDoc {
    /// URI naming the problem type: `/problems/{code}`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// Stable, machine-readable error code.
    pub code: String,
    pub detail: String,
    /// The request field at fault, as a path (`tasks[2].retry.max_attempts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What was expected instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// The lifecycle rule that refused an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The task's state when an event was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// A dependency cycle, each task depending on the next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<Vec<String>>,
}

/// An artifact as stored: the answer to `PUT /v1/artifacts`. Refer to it in an input or a
/// result as `{"$artifact": "<artifact>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ArtifactStored {
    /// `sha256:` and the 64 lowercase hex digits of the SHA-256 of its bytes.
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        )
    )]
    pub artifact: String,
    /// Bytes.
    pub size: u64,
    /// As given by the first upload's `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `false` when the same bytes were stored already (the upload changed nothing but the
    /// time its grace period runs from).
    pub created: bool,
}

/// A signal sent to a workflow.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalView {
    /// Unique in the store, increasing in the order signals were sent.
    pub id: u64,
    pub workflow: Uuid,
    pub name: String,
    /// The data that completed (or completes) the waiting tasks; `null` for a rejection.
    pub data: Value,
    /// The rejection's reason, for a signal that rejects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<String>,
    pub sent_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub sent_at: u64,
    /// When a waiting task took it; absent while it is kept for the next task that waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<u64>,
}

/// A task a signal completed or failed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalDelivery {
    pub id: Uuid,
    pub key: String,
    /// `completed`, or `failed` for a rejection.
    pub state: StateKind,
}

/// What sending a signal did.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalSent {
    pub signal: SignalView,
    /// `false`: the `Idempotency-Key` was used before; this is the first signal, applied once.
    pub created: bool,
    /// The tasks this request completed (or failed); empty when no task waited (the signal is
    /// kept for the next one that does) or for a repeat.
    pub delivered_to: Vec<SignalDelivery>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignalList {
    pub signals: Vec<SignalView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct SignalQuery {
    /// Who sends it, as recorded in the task's history. Taken only when no tokens are
    /// configured (default `local`); with tokens the sender is the token's name, and `by` is
    /// refused. 1 to 128 characters without control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    #[cfg_attr(
        feature = "openapi",
        param(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    pub by: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct SignalListQuery {
    /// Signals after this id (the `next` of the previous page).
    pub after: Option<u64>,
    /// At most this many (1 to 1000, default 100).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct WaitingQuery {
    /// Only this workflow's tasks.
    pub workflow: Option<Uuid>,
    /// Tasks after this id (the `next` of the previous page).
    pub after: Option<Uuid>,
    /// At most this many (1 to 1000, default 100).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<usize>,
}

/// A task waiting for a signal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitingTask {
    pub id: Uuid,
    pub workflow: Uuid,
    pub workflow_name: String,
    pub key: String,
    /// The signal it waits for: `POST /v1/workflows/{workflow}/signals/{signal}`.
    pub signal: String,
    /// When it started waiting (milliseconds since the Unix epoch).
    pub since: u64,
    /// When the wait times out, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// The input it was given (what a person approves).
    pub input: Value,
    pub attempt: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitingList {
    pub tasks: Vec<WaitingTask>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Uuid>,
}

/// A schedule: its spec and where it stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleView {
    pub name: String,
    pub spec: ScheduleSpec,
    pub paused: bool,
    /// Its next fire times (milliseconds since the Unix epoch); none while paused.
    pub next: Vec<u64>,
    /// The last tick that submitted a workflow, and that workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tick_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_workflow: Option<Uuid>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// A page of schedules or triggers, by name.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct NamesQuery {
    /// Those after this name (the `next` of the previous page).
    pub after: Option<String>,
    /// At most this many (1 to 1000, default 100).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1000))]
    pub limit: Option<usize>,
}

/// A page of schedules, by name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A named rate limit (a token bucket: `units` per `per_ms` milliseconds, refilled continuously,
/// holding at most `units`) and its bucket now.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitView {
    pub key: String,
    pub units: u64,
    pub per_ms: u64,
    /// Whole units a claim could draw now.
    pub available: u64,
    /// When the bucket is full again (milliseconds since the Unix epoch; now if it is).
    pub full_at: u64,
    /// Pending tasks waiting until it has their units.
    pub parked: u64,
    pub updated_at: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitList {
    pub limits: Vec<LimitView>,
}

/// A trigger: the workflow a request to `POST /v1/triggers/{name}` submits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TriggerView {
    pub name: String,
    pub workflow: WorkflowTemplate,
    pub created_at: u64,
    pub updated_at: u64,
}

/// A page of triggers, by name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TriggerList {
    pub triggers: Vec<TriggerView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}
