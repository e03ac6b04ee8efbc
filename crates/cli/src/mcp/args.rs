//! The tools' arguments: Rust types whose JSON schemas (schemars) are what `tools/list` shows,
//! each field's doc comment its description.

use std::collections::BTreeMap;

use baton_client::wire::WorkflowStatusView;
use baton_core::StateKind;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A task's state.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
pub enum TaskState {
    Blocked,
    Pending,
    Assigned,
    Executing,
    Completed,
    Failed,
    Cancelled,
}

impl From<TaskState> for StateKind {
    fn from(s: TaskState) -> StateKind {
        match s {
            TaskState::Blocked => StateKind::Blocked,
            TaskState::Pending => StateKind::Pending,
            TaskState::Assigned => StateKind::Assigned,
            TaskState::Executing => StateKind::Executing,
            TaskState::Completed => StateKind::Completed,
            TaskState::Failed => StateKind::Failed,
            TaskState::Cancelled => StateKind::Cancelled,
        }
    }
}

/// A workflow's status.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
pub enum WorkflowStatus {
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl From<WorkflowStatus> for WorkflowStatusView {
    fn from(s: WorkflowStatus) -> WorkflowStatusView {
        match s {
            WorkflowStatus::Running => WorkflowStatusView::Running,
            WorkflowStatus::Completed => WorkflowStatusView::Completed,
            WorkflowStatus::Failed => WorkflowStatusView::Failed,
            WorkflowStatus::Cancelled => WorkflowStatusView::Cancelled,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitWorkflowArgs {
    /// The workflow's tasks.
    #[schemars(schema_with = "task_specs_schema")]
    pub tasks: Vec<Value>,
    /// A name for people and for list_workflows' `name` filter.
    #[serde(default)]
    pub name: Option<String>,
    /// Labels the workflow carries, e.g. {"tenant": "acme"} (at most 16; keys of `a-z0-9_.-`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Makes the submission safe to repeat: the same key again returns the first workflow
    /// (`created`: false) instead of making a second one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The workflow's result once every task completed: names to values, where a value may be
    /// {"$from": "KEY", "pointer": "/json/pointer"} (a task's result, or part of it).
    #[serde(default)]
    pub outputs: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListWorkflowsArgs {
    /// Only workflows with this status.
    #[serde(default)]
    pub status: Option<WorkflowStatus>,
    /// Only workflows whose name contains this (ignoring case).
    #[serde(default)]
    pub name: Option<String>,
    /// Only workflows carrying this label, written `key:value`.
    #[serde(default)]
    pub label: Option<String>,
    /// At most this many, newest first (1 to 100; default 20).
    #[serde(default)]
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<usize>,
    /// The next page: the `next` of the previous answer.
    #[serde(default)]
    pub before: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowArgs {
    /// The workflow's id (a UUID, or its last 4 or more hex digits).
    pub workflow: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTasksArgs {
    /// Only this workflow's tasks (its id, or its last 4 or more hex digits).
    #[serde(default)]
    pub workflow: Option<String>,
    /// Only tasks in this state.
    #[serde(default)]
    pub state: Option<TaskState>,
    /// At most this many (1 to 1000; default 50).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<usize>,
    /// The next page: the `next` of the previous answer.
    #[serde(default)]
    pub after: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetTaskArgs {
    /// The task's id (a UUID, or its last 4 or more hex digits).
    pub task: String,
    /// Only this part of the task, as a JSON Pointer into the answer (e.g. "/input",
    /// "/result/sections/3", "/spec/retry"): how to read a value the answer cut short.
    #[serde(default)]
    pub pointer: Option<String>,
    /// Most bytes of JSON to answer with (default 16384, at most 1048576); longer values are
    /// cut, each cut saying how to read the rest.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1048576))]
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskHistoryArgs {
    /// The task's id (a UUID, or its last 4 or more hex digits).
    pub task: String,
    /// Entries after this sequence number (the `next_after` of the previous answer; default 0,
    /// from the first).
    #[serde(default)]
    pub after: Option<u64>,
    /// At most this many entries (1 to 1000; default 50).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<usize>,
    /// Most bytes of JSON to answer with (default 16384, at most 1048576).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1048576))]
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelArgs {
    /// The task to cancel (its id or last 4+ hex digits). Give `task` or `workflow`, not both.
    #[serde(default)]
    pub task: Option<String>,
    /// The workflow to cancel whole: every task of it that has not ended.
    #[serde(default)]
    pub workflow: Option<String>,
    /// Why, recorded in the task's history and the audit log.
    pub reason: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskArgs {
    /// The task's id (a UUID, or its last 4 or more hex digits).
    pub task: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendSignalArgs {
    /// The workflow's id (a UUID, or its last 4 or more hex digits).
    pub workflow: String,
    /// The signal's name: what the waiting task's `wait_for.signal` says.
    pub name: String,
    /// The data that completes the waiting tasks: their result, handed to their dependents
    /// (default {}).
    #[serde(default)]
    pub data: Option<Value>,
    /// Fail the waiting tasks instead (error kind `rejected`), for this reason.
    #[serde(default)]
    pub reject: Option<String>,
    /// Makes the signal safe to repeat: sent once, however often the call is repeated with
    /// this key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitingArgs {
    /// Only this workflow's tasks.
    #[serde(default)]
    pub workflow: Option<String>,
    /// At most this many (1 to 1000; default 50).
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<usize>,
    /// The next page: the `next` of the previous answer.
    #[serde(default)]
    pub after: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountsArgs {
    /// Only this workflow's tasks.
    #[serde(default)]
    pub workflow: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimArgs {
    /// What this agent can do: it is handed only tasks whose required capabilities are all
    /// among these (with none, only tasks that require none).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// How long to wait for a task when none is ready, in seconds (0 to 60; default 10).
    #[serde(default)]
    #[schemars(range(min = 0, max = 60))]
    pub wait_seconds: Option<u64>,
    /// Also tell Baton at once that you have started (the task goes to Executing), as
    /// start_task would: for when you begin the work right away.
    #[serde(default)]
    pub start: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseArgs {
    /// The task's id (a UUID, or its last 4 or more hex digits).
    pub task: String,
    /// The agent holding the lease (the claim answer's `agent`): only for a task not claimed
    /// through this server; give `token` with it.
    #[serde(default)]
    pub agent: Option<String>,
    /// The lease's fencing token (the claim answer's `token`); by default the one this server
    /// holds for the task.
    #[serde(default)]
    pub token: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressArgs {
    /// The task's id (a UUID, or its last 4 or more hex digits).
    pub task: String,
    /// How far along the work is, any JSON (e.g. {"done": 3, "of": 10, "note": "…"}): shown
    /// to operators in the task's history.
    #[serde(default)]
    pub progress: Option<Value>,
    /// What you have spent on this task so far, per unit, as a running total (e.g. {"tokens":
    /// 1532, "usd": 0.012}); checked against the workflow's budgets.
    #[serde(default)]
    pub usage: Option<BTreeMap<String, f64>>,
    /// The agent holding the lease (the claim answer's `agent`): only for a task not claimed
    /// through this server; give `token` with it.
    #[serde(default)]
    pub agent: Option<String>,
    /// The lease's fencing token; by default the one this server holds for the task.
    #[serde(default)]
    pub token: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteArgs {
    /// The task's id (a UUID, or its last 4 or more hex digits).
    pub task: String,
    /// The result: any JSON value but null. Dependent tasks receive it in their claim's
    /// `upstream`, and their input may take parts of it.
    pub result: Value,
    /// What you spent on this task in all, per unit (e.g. {"tokens": 1532, "usd": 0.012}).
    #[serde(default)]
    pub usage: Option<BTreeMap<String, f64>>,
    /// The agent holding the lease (the claim answer's `agent`): only for a task not claimed
    /// through this server; give `token` with it.
    #[serde(default)]
    pub agent: Option<String>,
    /// The lease's fencing token; by default the one this server holds for the task.
    #[serde(default)]
    pub token: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailArgs {
    /// The task's id (a UUID, or its last 4 or more hex digits).
    pub task: String,
    /// What went wrong, for the people and the compensation that read it (at most 32,768
    /// bytes).
    pub message: String,
    /// A short machine-readable kind, e.g. "bad_input", "tool_error" (default "agent_error");
    /// the task's retry policy may name kinds that are never retried.
    #[serde(default)]
    pub kind: Option<String>,
    /// Whether another attempt could succeed (default true): false fails the task for good.
    #[serde(default)]
    pub retryable: Option<bool>,
    /// What you spent on this task in all, per unit.
    #[serde(default)]
    pub usage: Option<BTreeMap<String, f64>>,
    /// The agent holding the lease (the claim answer's `agent`): only for a task not claimed
    /// through this server; give `token` with it.
    #[serde(default)]
    pub agent: Option<String>,
    /// The lease's fencing token; by default the one this server holds for the task.
    #[serde(default)]
    pub token: Option<u64>,
}

/// The schema of `submit_workflow`'s `tasks`: the main fields of a task spec, described for a
/// model (Baton checks every field and names the one at fault).
fn task_specs_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "description": "The tasks, each an object of which only `key` is required. Also accepted: `compensation`, `not_before`, `rate`, `concurrency`, `fairness_key`, `on_agent_lost` (see GET /v1/openapi.json on the Baton server).",
        "items": {
            "type": "object",
            "required": ["key"],
            "properties": {
                "key": {"type": "string", "description": "Unique within the workflow (letters, digits, `-_.:/`); dependencies name tasks by key."},
                "depends_on": {"type": "array", "items": {"type": "string"}, "description": "Keys of the tasks that must complete before this one is ready. No cycles."},
                "capabilities": {"type": "array", "items": {"type": "string"}, "description": "What an agent must offer (every one) to be handed the task."},
                "input": {"description": "Any JSON value, handed to the agent. Anywhere in it, {\"$from\": \"KEY\", \"pointer\": \"/json/pointer\"} (KEY one of depends_on; no pointer: the whole result) is replaced by that part of KEY's result when the task becomes ready."},
                "priority": {"type": "integer", "description": "Higher runs first among ready tasks (default 0)."},
                "retry": {"type": "object", "description": "{\"max_attempts\": 3 (the first included; 1: never retry), \"initial_backoff_ms\", \"backoff_multiplier\", \"max_backoff_ms\", \"jitter\", \"non_retryable\": [error kinds that fail at once]}."},
                "timeouts": {"type": "object", "description": "In milliseconds: \"start_ms\" (claim to start_task, default 60000), \"heartbeat_ms\" (longest silence between reports while executing, default 60000), \"start_to_close_ms\" (default 3600000), \"schedule_to_start_ms\"."},
                "wait_for": {"type": "object", "description": "{\"signal\": NAME, \"timeout_ms\": N}: no agent runs this task; once ready it waits for send_signal NAME to its workflow, whose data becomes its result."},
                "for_each": {"type": "object", "description": "Fan-out: {\"$from\": \"KEY\", \"pointer\": \"/array\"}. The task expands into one task per element (KEY[0], KEY[1], …, each with the element at `item` in its input) and completes with their results in order."},
                "delay_ms": {"type": "integer", "description": "Ready only this long after its dependencies completed."},
                "sleep_ms": {"type": "integer", "description": "No agent runs this task: it completes by itself this long after its dependencies completed (a durable sleep)."}
            }
        }
    })
}
