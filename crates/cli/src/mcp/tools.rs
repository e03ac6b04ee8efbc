//! The tools: `BatonMcp`, the MCP server handler, one method per tool. Each calls Baton through
//! [`baton_client::Client`] and answers concise JSON ([`answer::finish`]); refusals come back
//! as tool errors carrying the problem document.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baton_client::wire::{DeadlinesView, ReportAnswer, WorkflowListQuery};
use baton_core::{Capability, ErrorReport, Usage};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, RoleServer, ServerHandler};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::answer::{clip, finish, Answer, Failure, ANSWER_BYTES, ANSWER_BYTES_MAX};
use super::args::*;
use super::lease::{LeaseRef, Shared};
use crate::ops::ids::{resolve, IdArg, Kind};

/// Longest wait for one answer from Baton (beyond a claim's own wait).
const REQUEST_TIME: Duration = Duration::from_secs(30);
/// How long a claim waits for work by default, and at most (Baton's own bound).
const CLAIM_WAIT_DEFAULT_S: u64 = 10;
const CLAIM_WAIT_MAX_S: u64 = 60;
/// History entries a task's answer shows (the latest); task_history pages through all.
const RECENT_HISTORY: usize = 5;
/// The refusals that mean the lease is gone: nothing more is to be reported under it.
const LEASE_LOST: &[&str] = &[
    "stale_lease",
    "task_cancelled",
    "task_paused",
    "task_skipped",
    "task_failed_by_operator",
    "task_rerun",
    "task_superseded",
    "task_not_found",
];

/// What the server tells the model once, at initialisation: what Baton is and how its tools
/// fit together.
pub const INSTRUCTIONS: &str = "\
Baton is a durable orchestration engine for multi-agent work. Work is split into tasks, grouped \
in workflows (dependency graphs). Every task moves through one lifecycle:
  Blocked (its dependencies have not all completed) -> Pending (ready, waiting for an agent) -> \
Assigned (claimed by an agent, under a lease) -> Executing (the agent said it started) -> \
Completed, Failed or Cancelled.
A failed attempt goes back to Pending while the task's retry policy has attempts left; a \
failure for good cancels what depends on it. A task with `wait_for` is run by no agent: it \
waits for a signal (send_signal).

As an operator: submit_workflow, then follow it with get_workflow, list_tasks, get_task (its \
`waiting` says why a task waits), task_history, counts and waiting (what waits for a signal, \
e.g. a person's approval); act with cancel, retry_task and send_signal.

As an agent: claim_task hands you one task your capabilities allow, with its input, its \
dependencies' results (`upstream`) and a lease (agent id and fencing token). Then start_task, \
do the work, report_progress before each heartbeat deadline, and end with complete_task (a \
result) or fail_task. Deadlines are in each answer (`deadlines_in_seconds`): miss one and the \
lease is lost, the task goes to another attempt, and your reports are refused (stale_lease, \
task_cancelled, ...): then stop working on that task. This server remembers the lease of each \
task claimed through it, so pass only the task id.

Reads and reports are safe to repeat (a report sent twice is applied once); submit_workflow \
and send_signal are when given an idempotency_key. Ids are UUIDs; the last 4 or more hex \
digits of one will do. Long values in answers are cut, each cut saying how to read the whole.";

/// The MCP server: Baton's operator and agent calls as tools.
#[derive(Clone)]
pub struct BatonMcp {
    shared: Arc<Shared>,
    tool_router: ToolRouter<BatonMcp>,
}

impl BatonMcp {
    pub fn new(shared: Arc<Shared>) -> BatonMcp {
        BatonMcp {
            shared,
            tool_router: Self::tool_router(),
        }
    }

    /// Awaits one request to Baton, at most `after`.
    async fn call<T>(
        &self,
        after: Duration,
        request: impl Future<Output = baton_client::Result<T>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(after, request).await {
            Ok(answer) => answer.map_err(Failure::from),
            Err(_) => Err(Failure::Timeout {
                url: self.shared.client.base_url().to_owned(),
                after,
            }),
        }
    }

    /// The id `text` names: a UUID, or the unique one ending in its hex digits.
    async fn id(&self, field: &str, text: &str, kind: Kind) -> Result<Uuid, Failure> {
        let arg: IdArg = text
            .trim()
            .parse()
            .map_err(|e: String| Failure::Invalid(format!("`{field}`: {e}, not {text:?}")))?;
        Ok(resolve(&self.shared.client, &arg, kind).await?)
    }

    async fn opt_id(
        &self,
        field: &str,
        text: Option<&str>,
        kind: Kind,
    ) -> Result<Option<Uuid>, Failure> {
        match text {
            Some(text) => self.id(field, text, kind).await.map(Some),
            None => Ok(None),
        }
    }

    /// A report's refusal: if it says the lease is gone, the task is forgotten.
    fn lease_refused(&self, task: Uuid, failure: Failure) -> Failure {
        if let Failure::Client(e) = &failure {
            if e.code().is_some_and(|c| LEASE_LOST.contains(&c)) {
                self.shared.end(task);
            }
        }
        failure
    }

    async fn lease_for(
        &self,
        task: &str,
        agent: Option<&str>,
        token: Option<u64>,
    ) -> Result<(Uuid, LeaseRef), Failure> {
        let task = self.id("task", task, Kind::Task).await?;
        let agent = match agent {
            Some(a) => Some(Uuid::parse_str(a.trim()).map_err(|_| {
                Failure::Invalid(format!("`agent`: expected the agent's UUID, not {a:?}"))
            })?),
            None => None,
        };
        let lease = self
            .shared
            .lease(task, agent, token)
            .map_err(Failure::Invalid)?;
        Ok((task, lease))
    }
}

#[tool_router]
impl BatonMcp {
    // ---- operators ----------------------------------------------------------------------

    #[tool(
        description = "Submit a workflow: tasks with their dependencies, checked and created \
        together (or not at all: a cycle, an unknown dependency or a bad field is refused, \
        naming it). Tasks without dependencies become Pending at once, the others Blocked until \
        every dependency has completed; an agent with the capabilities a task requires claims \
        it. A task's input may take values from its dependencies' results ({\"$from\": KEY, \
        \"pointer\": \"/path\"}); a task with `wait_for` waits for send_signal instead of an \
        agent. Answers the workflow's id and each task's id by key. Safe to repeat only with \
        an idempotency_key.",
        annotations(
            title = "Submit a workflow",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn submit_workflow(
        &self,
        Parameters(a): Parameters<SubmitWorkflowArgs>,
    ) -> CallToolResult {
        finish(self.submit_workflow_(a).await)
    }

    #[tool(
        description = "List workflows, newest first, with their status (running, completed, \
        failed, cancelled) and task counts per state. Filter by status, name or label; page with \
        `before` (the answer's `next`).",
        annotations(
            title = "List workflows",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_workflows(&self, Parameters(a): Parameters<ListWorkflowsArgs>) -> CallToolResult {
        finish(self.list_workflows_(a).await)
    }

    #[tool(
        description = "Show a workflow: its status (running while any task has not ended; \
        completed when all completed; failed when one failed for good; cancelled), task counts \
        per state, its result once ended (if it declared outputs), labels, whether it is \
        paused, and its tasks (key, id, state; list_tasks pages through more).",
        annotations(
            title = "Show a workflow",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_workflow(&self, Parameters(a): Parameters<WorkflowArgs>) -> CallToolResult {
        finish(self.get_workflow_(a).await)
    }

    #[tool(
        description = "List tasks (id, workflow, key, state, attempt, priority), of one \
        workflow or all, in one state or all; page with `after` (the answer's `next`).",
        annotations(title = "List tasks", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_tasks(&self, Parameters(a): Parameters<ListTasksArgs>) -> CallToolResult {
        finish(self.list_tasks_(a).await)
    }

    #[tool(
        description = "Show a task: its state and `waiting` (why a task that has not ended \
        waits: dependencies still open, no capable agent online, agents busy, leased until a \
        deadline, backing off before a retry, a signal, a timer, a rate limit, paused), its \
        input (as handed to its agent), result, errors of failed attempts, lease and deadlines, \
        dependencies and dependents, and its latest history entries (task_history has them \
        all). `pointer` reads one part of it (e.g. \"/input/doc\", \"/result\"), as the notes \
        of cut values say.",
        annotations(title = "Show a task", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_task(&self, Parameters(a): Parameters<GetTaskArgs>) -> CallToolResult {
        finish(self.get_task_(a).await)
    }

    #[tool(
        description = "A task's history, oldest first: every event it went through (submitted, \
        dependencies_met, agent_assigned, execution_started, heartbeat with progress, \
        execution_succeeded or execution_failed, timeout_expired, retry, cancel_requested, \
        signal_received, ...) with its time and fields. Page with `after` (the answer's \
        `next_after`).",
        annotations(title = "Task history", read_only_hint = true, open_world_hint = false)
    )]
    async fn task_history(&self, Parameters(a): Parameters<TaskHistoryArgs>) -> CallToolResult {
        finish(self.task_history_(a).await)
    }

    #[tool(
        description = "Cancel a task, or with `workflow` every task of a workflow that has not \
        ended. What depends on a cancelled task is cancelled too; an agent working on it has \
        its next report refused (task_cancelled) and stops. A task that has ended cannot be \
        cancelled. Give `task` or `workflow`, and a reason (recorded).",
        annotations(
            title = "Cancel a task or workflow",
            read_only_hint = false,
            destructive_hint = true,
            open_world_hint = false
        )
    )]
    async fn cancel(&self, Parameters(a): Parameters<CancelArgs>) -> CallToolResult {
        finish(self.cancel_(a).await)
    }

    #[tool(
        description = "Retry a task that failed for good (its attempts used up, or a \
        non-retryable error): it gets a fresh budget of attempts and goes back to Pending (or \
        Blocked, if a dependency must complete again). Refused for a task in any other state.",
        annotations(
            title = "Retry a failed task",
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn retry_task(&self, Parameters(a): Parameters<TaskArgs>) -> CallToolResult {
        finish(self.retry_task_(a).await)
    }

    #[tool(
        description = "Send a signal to a workflow: its tasks waiting for this signal \
        (`wait_for.signal`, listed by the waiting tool) complete with `data` as their result, \
        or with `reject` fail (error kind `rejected`). A signal sent before any task waits is \
        kept for the next one that does. Safe to repeat only with an idempotency_key.",
        annotations(
            title = "Send a signal",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn send_signal(&self, Parameters(a): Parameters<SendSignalArgs>) -> CallToolResult {
        finish(self.send_signal_(a).await)
    }

    #[tool(
        description = "List the tasks waiting for a signal (e.g. a person's approval), with the \
        signal each waits for, since when, until when, and its input: answer them with \
        send_signal.",
        annotations(
            title = "Tasks waiting for a signal",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn waiting(&self, Parameters(a): Parameters<WaitingArgs>) -> CallToolResult {
        finish(self.waiting_(a).await)
    }

    #[tool(
        description = "Count tasks per state (blocked, pending, assigned, executing, completed, \
        failed, cancelled), of every workflow or one; also how many are paused, and how many of \
        the failed ones have a retry scheduled (`retrying`). Nothing is left to run once \
        blocked, pending, assigned, executing and retrying are all 0.",
        annotations(title = "Task counts", read_only_hint = true, open_world_hint = false)
    )]
    async fn counts(&self, Parameters(a): Parameters<CountsArgs>) -> CallToolResult {
        finish(self.counts_(a).await)
    }

    // ---- agents -------------------------------------------------------------------------

    #[tool(
        description = "Take one task to work on, as an agent: a Pending task whose required \
        capabilities are all among `capabilities`, highest priority first, waiting up to \
        `wait_seconds` for one. The answer has its input, the results of its dependencies \
        (`upstream`, by key), and a lease: `agent` and fencing `token` (this server remembers \
        them: later calls need only the task id). The task is now Assigned to you. Next, call \
        start_task before the `start` deadline (`deadlines_in_seconds`), or pass start: true \
        here; if you cannot do it, release_task gives it back. The first claim registers this \
        server as an agent in Baton. `task` is null when nothing came: call again later.",
        annotations(
            title = "Claim a task",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn claim_task(
        &self,
        Parameters(a): Parameters<ClaimArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let client_name = ctx.peer.peer_info().map(|p| p.client_info.name.clone());
        finish(self.claim_task_(a, client_name).await)
    }

    #[tool(
        description = "Say you have started a task you claimed (Assigned -> Executing). From \
        now on report_progress before each heartbeat deadline (`deadlines_in_seconds.heartbeat`) \
        and finish with complete_task or fail_task before `start_to_close`. Safe to repeat.",
        annotations(
            title = "Start a claimed task",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn start_task(&self, Parameters(a): Parameters<LeaseArgs>) -> CallToolResult {
        finish(self.start_task_(a).await)
    }

    #[tool(
        description = "Heartbeat for a task you are executing, with optional progress and \
        usage: it keeps your lease alive until the next heartbeat deadline (in the answer). \
        Without a heartbeat before the deadline the attempt fails (timeout) and the task goes \
        to another attempt. If the answer says `cancelled`, or the call is refused with \
        stale_lease or task_cancelled, stop working on the task. Safe to repeat.",
        annotations(
            title = "Report progress (heartbeat)",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn report_progress(&self, Parameters(a): Parameters<ProgressArgs>) -> CallToolResult {
        finish(self.report_progress_(a).await)
    }

    #[tool(
        description = "Finish a task you are executing with its result (any JSON but null): it \
        becomes Completed, and tasks that depend on it become Pending once all their \
        dependencies have completed, receiving this result in their `upstream`. Refused if your \
        lease is lost (stale_lease, task_cancelled, ...): the task is no longer yours. Safe to \
        repeat (a repeat is answered, not applied again).",
        annotations(
            title = "Complete a task",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn complete_task(&self, Parameters(a): Parameters<CompleteArgs>) -> CallToolResult {
        finish(self.complete_task_(a).await)
    }

    #[tool(
        description = "Report that a task you are executing failed, with a message and kind. \
        With retryable (the default) the task goes to another attempt (back to Pending after a \
        backoff) while its retry policy has attempts left; otherwise, or with retryable: false, \
        it fails for good and what depends on it is cancelled. Safe to repeat.",
        annotations(
            title = "Fail a task",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn fail_task(&self, Parameters(a): Parameters<FailArgs>) -> CallToolResult {
        finish(self.fail_task_(a).await)
    }

    #[tool(
        description = "Give back a task you claimed but will not do: it goes back to Pending for \
        another agent, without using up an attempt. Safe to repeat.",
        annotations(
            title = "Release a claimed task",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn release_task(&self, Parameters(a): Parameters<LeaseArgs>) -> CallToolResult {
        finish(self.release_task_(a).await)
    }
}

// The tools' bodies, answering JSON or a failure.
impl BatonMcp {
    async fn submit_workflow_(&self, a: SubmitWorkflowArgs) -> Answer {
        let mut body = Map::new();
        body.insert("tasks".into(), Value::Array(a.tasks));
        if let Some(name) = a.name {
            body.insert("name".into(), json!(name));
        }
        if !a.labels.is_empty() {
            body.insert("labels".into(), json!(a.labels));
        }
        if let Some(key) = a.idempotency_key {
            body.insert("idempotency_key".into(), json!(key));
        }
        if let Some(outputs) = a.outputs {
            body.insert("outputs".into(), Value::Object(outputs));
        }
        let body = Value::Object(body);
        let created = self
            .call(REQUEST_TIME, self.shared.client.submit_workflow_json(&body))
            .await?;
        let mut answer = serde_json::to_value(&created).unwrap_or_default();
        answer["next"] = json!(if created.created {
            "Tasks without dependencies are Pending, the others Blocked until theirs complete. \
             get_workflow shows its status and result, list_tasks each task's state."
        } else {
            "A workflow with this idempotency key existed: this is it, nothing new was created."
        });
        Ok(answer)
    }

    async fn list_workflows_(&self, a: ListWorkflowsArgs) -> Answer {
        let before = match a.before.as_deref() {
            Some(b) => Some(Uuid::parse_str(b.trim()).map_err(|_| {
                Failure::Invalid(format!(
                    "`before`: expected the `next` of a previous answer, not {b:?}"
                ))
            })?),
            None => None,
        };
        let q = WorkflowListQuery {
            before,
            limit: Some(a.limit.unwrap_or(20)),
            status: a.status.map(Into::into),
            name: a.name,
            label: a.label,
        };
        let list = self
            .call(REQUEST_TIME, self.shared.client.list_workflows(&q))
            .await?;
        let value = serde_json::to_value(&list).unwrap_or_default();
        Ok(clip(&value, ANSWER_BYTES, "", &|_| {
            "get_workflow shows one workflow, a smaller `limit` more of each".into()
        }))
    }

    async fn get_workflow_(&self, a: WorkflowArgs) -> Answer {
        let id = self.id("workflow", &a.workflow, Kind::Workflow).await?;
        let view = self
            .call(REQUEST_TIME, self.shared.client.workflow(id))
            .await?;
        let tasks = self
            .call(
                REQUEST_TIME,
                self.shared.client.tasks(Some(id), None, None, 100),
            )
            .await?;
        let mut value = serde_json::to_value(&view).unwrap_or_default();
        value["tasks"] = Value::Array(
            tasks
                .tasks
                .iter()
                .map(|t| {
                    let mut v = json!({"key": t.key, "id": t.id, "state": t.state});
                    if t.paused {
                        v["paused"] = json!(true);
                    }
                    v
                })
                .collect(),
        );
        if let Some(next) = tasks.next {
            value["tasks_next"] = json!(format!(
                "more tasks: list_tasks with workflow {id} and after {next}"
            ));
        }
        Ok(clip(&value, ANSWER_BYTES, "", &|_| {
            "the whole of a task's result: get_task with pointer /result".into()
        }))
    }

    async fn list_tasks_(&self, a: ListTasksArgs) -> Answer {
        let workflow = self
            .opt_id("workflow", a.workflow.as_deref(), Kind::Workflow)
            .await?;
        let after = match a.after.as_deref() {
            Some(t) => Some(Uuid::parse_str(t.trim()).map_err(|_| {
                Failure::Invalid(format!(
                    "`after`: expected the `next` of a previous answer, not {t:?}"
                ))
            })?),
            None => None,
        };
        let list = self
            .call(
                REQUEST_TIME,
                self.shared.client.tasks(
                    workflow,
                    a.state.map(Into::into),
                    after,
                    a.limit.unwrap_or(50),
                ),
            )
            .await?;
        let value = serde_json::to_value(&list).unwrap_or_default();
        Ok(clip(&value, ANSWER_BYTES, "", &|_| {
            "a smaller `limit` shows the rest".into()
        }))
    }

    async fn get_task_(&self, a: GetTaskArgs) -> Answer {
        let id = self.id("task", &a.task, Kind::Task).await?;
        let budget = budget(a.max_bytes)?;
        let bytes = self
            .call(
                REQUEST_TIME,
                self.shared.client.get_json(&format!("/v1/tasks/{id}")),
            )
            .await?;
        let mut view: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Other(anyhow::anyhow!(
                "Baton's answer for task {id} is not JSON: {e}"
            ))
        })?;
        self.task_view(id, &mut view);
        let read = |pointer: &str| {
            format!("get_task with task {id} and pointer {pointer:?} (and a larger max_bytes)")
        };
        match a.pointer.as_deref() {
            Some(p) => match view.pointer(p) {
                Some(part) => Ok(clip(part, budget, p, &read)),
                None => Err(Failure::Invalid(format!(
                    "`pointer`: {p:?} finds nothing in task {id} (a JSON Pointer such as \
                     \"/input\" or \"/result/items/0\")"
                ))),
            },
            None => {
                if let Value::Object(v) = &mut view {
                    v.remove("history");
                }
                Ok(clip(&view, budget, "", &read))
            }
        }
    }

    /// A task's view as the model reads it: `input` is what its agent is handed (a plain
    /// input moves there from `spec`; a template stays in `spec`, and `input` is the resolved
    /// one once the task is ready), `recent_history` the latest entries, `held_here` whether
    /// this server holds its lease.
    fn task_view(&self, id: Uuid, view: &mut Value) {
        let Value::Object(v) = view else { return };
        let template = v
            .get("spec")
            .and_then(|s| s.get("input"))
            .is_some_and(has_reference);
        if !template && v.get("input").is_none_or(Value::is_null) {
            let input = v
                .get_mut("spec")
                .and_then(Value::as_object_mut)
                .and_then(|s| s.remove("input"))
                .unwrap_or(Value::Null);
            v.insert("input".into(), input);
        }
        let history = v
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let version = v.get("version").and_then(Value::as_u64).unwrap_or(0);
        let from = history.len().saturating_sub(RECENT_HISTORY);
        v.insert(
            "recent_history".into(),
            Value::Array(history[from..].to_vec()),
        );
        v.insert(
            "history_entries".into(),
            json!(format!(
                "{version} in all; task_history pages through them (pointer /history/N reads one of the first {})",
                history.len()
            )),
        );
        let token = v.get("fencing_token").and_then(Value::as_u64);
        if let (Some(lease), Some(token)) = (self.shared.holding(id), token) {
            if lease.token == token {
                v.insert(
                    "held_here".into(),
                    json!({"agent": lease.agent, "token": token}),
                );
            }
        }
    }

    async fn task_history_(&self, a: TaskHistoryArgs) -> Answer {
        let id = self.id("task", &a.task, Kind::Task).await?;
        let budget = budget(a.max_bytes)?;
        let limit = a.limit.unwrap_or(50);
        let entries = self
            .call(
                REQUEST_TIME,
                self.shared.client.task_history(id, a.after, Some(limit)),
            )
            .await?;
        let next = (entries.len() >= limit)
            .then(|| entries.last().map(|e| e.seq))
            .flatten();
        let value = json!({"task": id, "entries": entries, "next_after": next});
        Ok(clip(&value, budget, "", &|_| {
            "task_history with `after` just before the entry, limit 1 and a larger max_bytes".into()
        }))
    }

    async fn cancel_(&self, a: CancelArgs) -> Answer {
        match (a.task.as_deref(), a.workflow.as_deref()) {
            (Some(task), None) => {
                let id = self.id("task", task, Kind::Task).await?;
                let answer = self
                    .call(REQUEST_TIME, self.shared.client.cancel_task(id, &a.reason))
                    .await?;
                Ok(report_answer(&answer, None))
            }
            (None, Some(workflow)) => {
                let id = self.id("workflow", workflow, Kind::Workflow).await?;
                let answer = self
                    .call(
                        REQUEST_TIME,
                        self.shared.client.cancel_workflow(id, &a.reason),
                    )
                    .await?;
                Ok(json!({"workflow": id, "cancelled": answer.cancelled}))
            }
            _ => Err(Failure::Invalid(
                "give `task` or `workflow` (one of them): what to cancel".into(),
            )),
        }
    }

    async fn retry_task_(&self, a: TaskArgs) -> Answer {
        let id = self.id("task", &a.task, Kind::Task).await?;
        let answer = self
            .call(REQUEST_TIME, self.shared.client.retry_task(id))
            .await?;
        Ok(report_answer(&answer, None))
    }

    async fn send_signal_(&self, a: SendSignalArgs) -> Answer {
        let body = match (a.reject, a.data) {
            (Some(_), Some(_)) => {
                return Err(Failure::Invalid(
                    "give `data` or `reject`, not both: a signal completes or rejects".into(),
                ))
            }
            (Some(reason), None) => json!({ "reject": reason }),
            // Data that would read as a rejection is sent as it is.
            (None, Some(data)) => json!({ "$literal": data }),
            (None, None) => json!({}),
        };
        let workflow = self.id("workflow", &a.workflow, Kind::Workflow).await?;
        let sent = self
            .call(
                REQUEST_TIME,
                self.shared
                    .client
                    .signal(workflow, &a.name, &body, a.idempotency_key.as_deref()),
            )
            .await?;
        let mut value = serde_json::to_value(&sent).unwrap_or_default();
        if sent.created && sent.delivered_to.is_empty() {
            value["note"] = json!(
                "no task waits for this signal yet: it is kept, and the next task of the \
                 workflow that waits for it takes it"
            );
        }
        Ok(clip(&value, ANSWER_BYTES, "", &|_| {
            "the signal's whole data is the result of the tasks it completed: get_task with \
             pointer /result"
                .into()
        }))
    }

    async fn waiting_(&self, a: WaitingArgs) -> Answer {
        let workflow = self
            .opt_id("workflow", a.workflow.as_deref(), Kind::Workflow)
            .await?;
        let after = match a.after.as_deref() {
            Some(t) => Some(Uuid::parse_str(t.trim()).map_err(|_| {
                Failure::Invalid(format!(
                    "`after`: expected the `next` of a previous answer, not {t:?}"
                ))
            })?),
            None => None,
        };
        let list = self
            .call(
                REQUEST_TIME,
                self.shared
                    .client
                    .waiting(workflow, after, a.limit.unwrap_or(50)),
            )
            .await?;
        let ids: Vec<Uuid> = list.tasks.iter().map(|t| t.id).collect();
        let value = serde_json::to_value(&list).unwrap_or_default();
        Ok(clip(&value, ANSWER_BYTES, "", &|pointer| {
            read_item(pointer, "/tasks/", &ids)
        }))
    }

    async fn counts_(&self, a: CountsArgs) -> Answer {
        let workflow = self
            .opt_id("workflow", a.workflow.as_deref(), Kind::Workflow)
            .await?;
        let counts = self
            .call(REQUEST_TIME, self.shared.client.counts(workflow))
            .await?;
        Ok(serde_json::to_value(&counts).unwrap_or_default())
    }

    async fn claim_task_(&self, a: ClaimArgs, client_name: Option<String>) -> Answer {
        let wait = a.wait_seconds.unwrap_or(CLAIM_WAIT_DEFAULT_S);
        if wait > CLAIM_WAIT_MAX_S {
            return Err(Failure::Invalid(format!(
                "`wait_seconds`: 0 to {CLAIM_WAIT_MAX_S}, not {wait}"
            )));
        }
        let capabilities: BTreeSet<Capability> =
            a.capabilities.into_iter().map(Capability).collect();
        let mut agent = self
            .call(
                REQUEST_TIME,
                self.shared.agent_for(capabilities, client_name.as_deref()),
            )
            .await?;
        let wait = Duration::from_secs(wait);
        // With `start`, the claim starts the task in its own commit.
        let claim = |agent: Uuid| {
            let client = &self.shared.client;
            async move {
                if a.start {
                    client.claim_and_start(agent, 1, wait).await
                } else {
                    client.claim(agent, 1, wait).await
                }
            }
        };
        let mut claimed = self.call(wait + REQUEST_TIME, claim(agent.id)).await;
        if matches!(&claimed, Err(Failure::Client(e)) if e.code() == Some("agent_not_found")) {
            agent = self
                .call(REQUEST_TIME, self.shared.reregister(&agent))
                .await?;
            claimed = self.call(wait + REQUEST_TIME, claim(agent.id)).await;
        }
        let who = json!({"id": agent.id, "name": agent.name, "capabilities": agent.capabilities});
        let Some(task) = claimed?.into_iter().next() else {
            let held: Vec<Value> = self
                .shared
                .held()
                .into_iter()
                .map(|(id, h)| json!({"task": id, "key": h.key, "workflow": h.workflow, "started": h.started}))
                .collect();
            let mut note = format!(
                "No task was ready for these capabilities within {}s: call claim_task again \
                 later.",
                wait.as_secs()
            );
            if held.len() >= self.shared.concurrency() as usize {
                note = format!(
                    "No task was handed out: this agent holds {} task(s), its limit \
                     (baton mcp --agent-concurrency). Finish, fail or release them first.",
                    held.len()
                );
            }
            return Ok(json!({"task": null, "agent": who, "held": held, "note": note}));
        };
        self.shared.hold(&task, agent.id);
        let id = task.task;
        let input = clip(&task.input, ANSWER_BYTES / 2, "/input", &|pointer| {
            format!("get_task with task {id} and pointer {pointer:?}")
        });
        let share = (ANSWER_BYTES / 2) / task.upstream.len().max(1);
        let upstream: Map<String, Value> = task
            .upstream
            .iter()
            .map(|(key, up)| {
                let dep = up.task;
                let mut v = serde_json::to_value(up).unwrap_or_default();
                if let Some(result) = &up.result {
                    v["result"] = clip(result, share, "/result", &|pointer| {
                        format!("get_task with task {dep} and pointer {pointer:?}")
                    });
                }
                if let Some(bytes) = up.withheld_bytes {
                    v["note"] = json!(format!(
                        "result withheld ({bytes} bytes): get_task with task {dep} and pointer \"/result\""
                    ));
                }
                (key.clone(), v)
            })
            .collect();
        let mut answer = json!({
            "task": id,
            "workflow": task.workflow,
            "key": task.key,
            "attempt": task.attempt,
            "state": "assigned",
            "agent": agent.id,
            "token": task.token,
            "lease": task.lease,
            "input": input,
            "upstream": upstream,
            "capabilities": task.capabilities,
            "idempotency_key": task.idempotency_key,
            "deadlines_in_seconds": in_seconds(&task.deadlines, task.now),
            "heartbeat_within_seconds": task.heartbeat_ms.map(|ms| ms as f64 / 1000.0),
            "next": "start_task before the start deadline, then do the work",
        });
        if task.started {
            let started = baton_client::runner::started_by_claim(&task);
            self.shared.renewed(id, &started, true);
            answer["state"] = json!(started.state);
            answer["deadlines_in_seconds"] = in_seconds(&started.deadlines, started.now);
            answer["next"] = json!(NEXT_EXECUTING);
        }
        Ok(answer)
    }

    async fn start_task_(&self, a: LeaseArgs) -> Answer {
        let (task, lease) = self.lease_for(&a.task, a.agent.as_deref(), a.token).await?;
        let answer = self
            .call(
                REQUEST_TIME,
                self.shared
                    .client
                    .started(&lease.claimed(task), lease.agent),
            )
            .await
            .map_err(|f| self.lease_refused(task, f))?;
        self.shared.renewed(task, &answer, true);
        Ok(report_answer(&answer, Some(NEXT_EXECUTING)))
    }

    async fn report_progress_(&self, a: ProgressArgs) -> Answer {
        let usage = usage(a.usage)?;
        let (task, lease) = self.lease_for(&a.task, a.agent.as_deref(), a.token).await?;
        let answer = self
            .call(
                REQUEST_TIME,
                self.shared.client.heartbeat_with_usage(
                    &lease.claimed(task),
                    lease.agent,
                    a.progress,
                    &usage,
                ),
            )
            .await
            .map_err(|f| self.lease_refused(task, f))?;
        if answer.cancelled {
            self.shared.end(task);
            return Ok(report_answer(
                &answer,
                Some("The task was cancelled: stop working on it and report nothing more."),
            ));
        }
        self.shared.renewed(task, &answer, true);
        Ok(report_answer(
            &answer,
            Some("Lease renewed: report_progress again before the heartbeat deadline; finish with complete_task or fail_task."),
        ))
    }

    async fn complete_task_(&self, a: CompleteArgs) -> Answer {
        let usage = usage(a.usage)?;
        let (task, lease) = self.lease_for(&a.task, a.agent.as_deref(), a.token).await?;
        let answer = self
            .call(
                REQUEST_TIME,
                self.shared.client.succeeded_with_usage(
                    &lease.claimed(task),
                    lease.agent,
                    a.result,
                    &usage,
                ),
            )
            .await
            .map_err(|f| self.lease_refused(task, f))?;
        self.shared.end(task);
        Ok(report_answer(
            &answer,
            Some("Done. claim_task for more work."),
        ))
    }

    async fn fail_task_(&self, a: FailArgs) -> Answer {
        let usage = usage(a.usage)?;
        let (task, lease) = self.lease_for(&a.task, a.agent.as_deref(), a.token).await?;
        let error = ErrorReport {
            kind: a.kind.unwrap_or_else(|| "agent_error".into()),
            message: a.message,
            retryable: a.retryable.unwrap_or(true),
        };
        let answer = self
            .call(
                REQUEST_TIME,
                self.shared.client.failed_with_usage(
                    &lease.claimed(task),
                    lease.agent,
                    error,
                    &usage,
                ),
            )
            .await
            .map_err(|f| self.lease_refused(task, f))?;
        self.shared.end(task);
        Ok(report_answer(
            &answer,
            Some("Reported. get_task shows whether a retry is scheduled (`waiting`: backing_off)."),
        ))
    }

    async fn release_task_(&self, a: LeaseArgs) -> Answer {
        let (task, lease) = self.lease_for(&a.task, a.agent.as_deref(), a.token).await?;
        let answer = self
            .call(
                REQUEST_TIME,
                self.shared
                    .client
                    .released(&lease.claimed(task), lease.agent),
            )
            .await
            .map_err(|f| self.lease_refused(task, f))?;
        self.shared.end(task);
        Ok(report_answer(
            &answer,
            Some("Given back: another agent may claim it."),
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for BatonMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("baton", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

const NEXT_EXECUTING: &str = "Executing: do the work; report_progress before the heartbeat \
     deadline; finish with complete_task (a result) or fail_task.";

/// A report's answer: where the task stands and what to do next.
fn report_answer(answer: &ReportAnswer, next: Option<&str>) -> Value {
    let mut v = json!({
        "task": answer.task,
        "state": answer.state,
        "attempt": answer.attempt,
        "token": answer.token,
        "deadlines_in_seconds": in_seconds(&answer.deadlines, answer.now),
    });
    if answer.cancelled {
        v["cancelled"] = json!(true);
    }
    if let Some(next) = next {
        v["next"] = json!(next);
    }
    v
}

/// The deadlines that are set, as seconds from `now` (the server's clock when it answered).
fn in_seconds(d: &DeadlinesView, now: u64) -> Value {
    let mut out = Map::new();
    for (name, at) in [
        ("schedule_to_start", d.schedule_to_start),
        ("start", d.start),
        ("heartbeat", d.heartbeat),
        ("start_to_close", d.start_to_close),
    ] {
        if let Some(at) = at {
            let s = at.saturating_sub(now) as f64 / 1000.0;
            out.insert(name.into(), json!((s * 10.0).round() / 10.0));
        }
    }
    Value::Object(out)
}

/// `max_bytes` checked.
fn budget(max_bytes: Option<usize>) -> Result<usize, Failure> {
    match max_bytes {
        None => Ok(ANSWER_BYTES),
        Some(n) if (1..=ANSWER_BYTES_MAX).contains(&n) => Ok(n),
        Some(n) => Err(Failure::Invalid(format!(
            "`max_bytes`: 1 to {ANSWER_BYTES_MAX}, not {n}"
        ))),
    }
}

fn usage(usage: Option<std::collections::BTreeMap<String, f64>>) -> Result<Usage, Failure> {
    match usage {
        None => Ok(Usage::new()),
        Some(u) => serde_json::to_value(u)
            .and_then(serde_json::from_value)
            .map_err(|e| Failure::Invalid(format!("`usage`: {e}"))),
    }
}

/// How to read a cut value of item N of a list (`prefix` N `/` rest): get_task on its task.
fn read_item(pointer: &str, prefix: &str, ids: &[Uuid]) -> String {
    let item = pointer.strip_prefix(prefix).and_then(|rest| {
        let (n, rest) = rest.split_once('/').unwrap_or((rest, ""));
        Some((ids.get(n.parse::<usize>().ok()?)?, rest))
    });
    match item {
        Some((id, rest)) => format!("get_task with task {id} and pointer \"/{rest}\""),
        None => "get_task on the task".into(),
    }
}

/// Whether `input` holds a reference to a dependency's result (`{"$from": …}`): a template.
fn has_reference(input: &Value) -> bool {
    match input {
        Value::Object(o) => o.contains_key("$from") || o.values().any(has_reference),
        Value::Array(a) => a.iter().any(has_reference),
        _ => false,
    }
}
