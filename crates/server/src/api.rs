//! The `/v1` handlers and their wire types. Handlers translate between JSON and the engine;
//! every decision is the engine's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use baton_core::{
    AgentId, Event, FencingToken, Limit, ScheduleSpec, State, StateKind, Task, TaskId, Timestamp,
    WorkflowId, WorkflowTemplate,
};
use baton_engine::read::{AgentRecord, AnyStore, AuditFilter, SignalRecord, TaskFilter};
use baton_engine::{Engine, Operator, SignalInput, WorkflowRequest, WorkflowStatus};
use futures_util::stream::Stream;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{ApiJson, ApiQuery, PayloadJson};
use crate::problem::Problem;
use crate::{scope, AppState};
use baton_api::*;

type ApiResult<T> = Result<T, Problem>;
type St = AxState<Arc<AppState>>;

fn engine(state: &AppState) -> &Engine<AnyStore> {
    &state.engine
}

fn parse_id(kind: &str, raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| {
        Problem::bad_request("invalid_id", format!("`{raw}` is not a {kind} id")).field(
            format!("{kind}_id"),
            "a UUID such as 0192d0c6-8f5e-7cc3-9a4e-2b1f0c9d8e7a",
        )
    })
}

// ---- workflows ------------------------------------------------------------------------------

/// 201 with the new workflow's tasks, or 200 for an earlier request with the same key.
fn workflow_created(receipt: baton_engine::WorkflowReceipt) -> Response {
    let status = if receipt.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let out = WorkflowCreated {
        workflow: receipt.workflow.0,
        created: receipt.created,
        tasks: receipt
            .tasks
            .into_iter()
            .map(|(k, id)| (k.0, id.0))
            .collect(),
    };
    (status, Json(out)).into_response()
}

/// Submit a workflow.
///
/// Submits a workflow: its tasks with their dependencies by key (a directed acyclic graph), each
/// with its capabilities, input, retry policy, deadlines and optional compensation. Tasks without
/// dependencies are ready at once; the others are released as their dependencies complete, their
/// input templates filled from the dependencies' results. Answers the workflow's id and each task's
/// id by key. Safe to resend with the same idempotency key (`idempotency_key` in the body, or the
/// `Idempotency-Key` header): the first submission's answer comes again, its workflow and the ids
/// of the tasks it submitted (not those added since), with `200` and `created: false` saying it
/// is a replay; a different workflow with the same key is refused (`409 idempotency_mismatch`).
#[utoipa::path(post, path = "/v1/workflows", request_body = SubmitWorkflow,
    params(("Idempotency-Key" = Option<String>, Header, description = "The submission's idempotency key, as an alternative to the body's `idempotency_key` (both only if they agree): 1 to 256 visible ASCII characters", pattern = r"^[\x21-\x7e]([\t\x20-\x7e]{0,254}[\x21-\x7e])?$")),
    responses((status = 201, body = WorkflowCreated), (status = 200, description = "an earlier submission with the same idempotency key", body = WorkflowCreated)))]
pub async fn submit_workflow(
    AxState(s): St,
    caller: Caller,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<SubmitWorkflow>,
) -> ApiResult<Response> {
    let idempotency_key = submission_key(&headers, body.idempotency_key)?;
    let mut labels = body.labels;
    scope::stamp(&caller, &mut labels, "labels")?;
    let receipt = engine(&s)
        .submit_workflow(WorkflowRequest {
            budgets: body.budgets,
            name: body.name,
            idempotency_key,
            tasks: body.tasks,
            outputs: body.outputs,
            labels,
        })
        .await?;
    Ok(workflow_created(receipt))
}

/// Submit one task.
///
/// Submits one task as a workflow of its own: as `POST /v1/workflows` with one task, its key
/// `task`. Safe to resend with the same idempotency key (`idempotency_key` in the body, or the
/// `Idempotency-Key` header): the first submission's answer comes again, with `200` and `created:
/// false`; a different task with the same key is refused (`409 idempotency_mismatch`).
#[utoipa::path(post, path = "/v1/tasks", request_body = SubmitTask,
    params(("Idempotency-Key" = Option<String>, Header, description = "The submission's idempotency key, as an alternative to the body's `idempotency_key` (both only if they agree): 1 to 256 visible ASCII characters", pattern = r"^[\x21-\x7e]([\t\x20-\x7e]{0,254}[\x21-\x7e])?$")),
    responses((status = 201, body = TaskCreated), (status = 200, body = TaskCreated)))]
pub async fn submit_task(
    AxState(s): St,
    caller: Caller,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<SubmitTask>,
) -> ApiResult<Response> {
    let idempotency_key = submission_key(&headers, body.idempotency_key)?;
    let mut labels = body.labels;
    scope::stamp(&caller, &mut labels, "labels")?;
    let receipt = engine(&s)
        .submit_workflow(WorkflowRequest {
            budgets: body.budgets,
            name: body.task.key.0.clone(),
            idempotency_key,
            tasks: vec![body.task],
            outputs: None,
            labels,
        })
        .await
        .map_err(|e| {
            let mut p = Problem::from(e);
            if let Some(field) = &p.field {
                p.field = Some(
                    field
                        .replacen("tasks[0]", "task", 1)
                        .replacen("tasks[]", "task", 1),
                );
            }
            p.detail = p.detail.replacen("tasks[0]", "task", 1);
            p
        })?;
    let status = if receipt.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let task = receipt
        .tasks
        .first()
        .map(|(_, id)| id.0)
        .unwrap_or_default();
    Ok((
        status,
        Json(TaskCreated {
            workflow: receipt.workflow.0,
            task,
            created: receipt.created,
        }),
    )
        .into_response())
}

/// Read a workflow.
///
/// The workflow: its status (`running` until every task has ended), its tasks' counts per state,
/// its budgets and usage, whether it is paused, and when it was created and ended.
#[utoipa::path(get, path = "/v1/workflows/{id}", params(("id" = Uuid, Path, description = "workflow id")),
    responses((status = 200, body = WorkflowView)))]
pub async fn get_workflow(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkflowView>> {
    let id = WorkflowId(parse_id("workflow", &id)?);
    let e = engine(&s);
    let wf = scope::workflow(&caller, e, id).await?;
    Ok(Json(workflow_view(e, wf, true).await?))
}

/// A workflow with its counts and status, and its result if `with_result`.
async fn workflow_view(
    e: &Engine<AnyStore>,
    wf: baton_engine::read::WorkflowRecord,
    with_result: bool,
) -> Result<WorkflowView, Problem> {
    let counts = e.counts(Some(wf.id)).await?;
    let outcome = e.workflow_outcome(&wf, &counts).await?;
    Ok(WorkflowView {
        id: wf.id.0,
        name: wf.name,
        idempotency_key: wf.idempotency_key,
        created_at: wf.created_at.0,
        counts: counts_view(counts),
        status: match outcome.status {
            WorkflowStatus::Running => WorkflowStatusView::Running,
            WorkflowStatus::Completed => WorkflowStatusView::Completed,
            WorkflowStatus::Failed => WorkflowStatusView::Failed,
            WorkflowStatus::Cancelled => WorkflowStatusView::Cancelled,
        },
        outputs: wf.outputs.and_then(|o| serde_json::from_str(&o).ok()),
        result: outcome.result.filter(|_| with_result),
        unresolved: outcome
            .unresolved
            .and_then(|u| serde_json::to_value(u).ok()),
        labels: wf.labels,
        paused: wf.paused.as_ref().map(pause_view),
        usage: e.workflow_usage(wf.id).await?,
        budgets: wf.budgets,
    })
}

/// Set a workflow's budgets.
#[utoipa::path(put, path = "/v1/workflows/{id}/budgets", request_body = BudgetsBody, params(("id" = Uuid, Path, description = "workflow id")),
    description = "Replaces the workflow's budgets (an empty map removes them); audited with the caller's token name and the `reason`. A budget already reached applies at once. A workflow a budget paused stays paused: resume it (`POST /v1/workflows/{id}/resume`) once its budgets allow; a resume while a `pause` budget is still reached is refused (409 `budget_reached`).",
    responses((status = 200, body = WorkflowView)))]
pub async fn set_budgets(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BudgetsBody>,
) -> ApiResult<Json<WorkflowView>> {
    let id = WorkflowId(parse_id("workflow", &id)?);
    let e = engine(&s);
    scope::check_workflow(&caller, e, id).await?;
    let op = operator(&caller, body.reason)?;
    let wf = e.set_budgets(id, op, body.budgets).await?;
    Ok(Json(workflow_view(e, wf, true).await?))
}

/// Read spending per unit.
#[utoipa::path(get, path = "/v1/usage", params(UsageQuery),
    description = "What agents have reported spending, per unit, over every workflow or those carrying `label` (`key:value`). A token scoped to one label gets that label's (asking for another is refused, 403 `out_of_scope`); one scoped to several reads usage per workflow.",
    responses((status = 200, body = UsageView)))]
pub async fn usage(
    AxState(s): St,
    caller: Caller,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Json<UsageView>> {
    let label = q.label.as_deref().map(query_label).transpose()?;
    // A caller scoped to one label reads that label's usage (its workflows, exactly).
    let own = caller
        .scope()
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()));
    let label = match (caller.is_scoped(), label) {
        (false, label) => label,
        (true, asked)
            if caller.scope().len() == 1
                && asked.as_ref().is_none_or(|a| Some(a) == own.as_ref()) =>
        {
            own
        }
        (true, _) => {
            return Err(scope::out_of_scope(format!(
                "token `{}` is scoped to labels: it reads the usage of its own label, when it has \
                 one, and the usage of each of its workflows (`GET /v1/workflows/{{id}}`)",
                caller.actor()
            )))
        }
    };
    Ok(Json(UsageView {
        usage: engine(&s).usage_labelled(label).await?,
    }))
}

fn pause_view(p: &baton_core::Paused) -> PauseView {
    PauseView {
        by: p.by.clone(),
        reason: p.reason.clone(),
        at: p.at.0,
    }
}

/// A label in a query, for error messages.
const LABEL_EXPECTED: &str =
    "`key:value` (or `key=value`): the key of 1 to 63 characters among a-z, 0-9 and `_.-`, \
     the value of 1 to 255 bytes";

/// The label a query's `label` names (`key:value` or `key=value`).
fn query_label(text: &str) -> Result<(String, String), Problem> {
    baton_core::parse_label(text).ok_or_else(|| {
        Problem::bad_request("invalid_query", format!("`{text}` is not a label"))
            .field("label", LABEL_EXPECTED)
    })
}

/// Most workflows in one page of `GET /v1/workflows`.
const WORKFLOWS_PAGE_MAX: usize = 100;
/// Most workflows one filtered `GET /v1/workflows` looks at: when few match, it answers
/// with fewer than `limit` and a `next` to go on from.
const WORKFLOWS_SCANNED_MAX: usize = 500;

/// List workflows.
///
/// Workflows, newest first, with their state counts and status, filtered by `status`, `name` and
/// `label`, a page at a time: pass `next` as `before` for the next (older) page (`next` is absent
/// on the last). A scoped token sees only the workflows carrying its labels.
#[utoipa::path(get, path = "/v1/workflows", params(WorkflowListQuery),
    responses((status = 200, body = WorkflowList)))]
pub async fn list_workflows(
    AxState(s): St,
    caller: Caller,
    ApiQuery(q): ApiQuery<WorkflowListQuery>,
) -> ApiResult<Json<WorkflowList>> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=WORKFLOWS_PAGE_MAX).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid_query",
            format!("limit {limit} is out of range"),
        )
        .field("limit", format!("between 1 and {WORKFLOWS_PAGE_MAX}")));
    }
    // The caller's scope and the label asked for, all of which a workflow must carry.
    let mut labels = caller.scope().clone();
    if let Some(text) = q.label.as_deref() {
        let (key, value) = query_label(text)?;
        if labels.get(&key).is_some_and(|v| *v != value) {
            // Outside the scope: nothing to list.
            return Ok(Json(WorkflowList {
                workflows: Vec::new(),
                next: None,
            }));
        }
        labels.insert(key, value);
    }
    let e = engine(&s);
    let name = q
        .name
        .as_deref()
        .map(str::to_lowercase)
        .filter(|n| !n.is_empty());
    let filtered = q.status.is_some() || name.is_some();
    let mut workflows = Vec::with_capacity(limit);
    let mut before = q.before.map(WorkflowId);
    let mut scanned = 0;
    let (mut full, mut end) = (false, false);
    // Unfiltered: one page of `limit`. Filtered: pages until `limit` match, the workflows end,
    // or WORKFLOWS_SCANNED_MAX were looked at; `next` goes on from the last one looked at.
    while !full && !end && scanned < WORKFLOWS_SCANNED_MAX {
        let want = if filtered {
            WORKFLOWS_PAGE_MAX.min(WORKFLOWS_SCANNED_MAX - scanned)
        } else {
            limit
        };
        let records = e.workflows_labelled(&labels, before, want).await?;
        end = records.len() < want;
        let n = records.len();
        for (i, wf) in records.into_iter().enumerate() {
            scanned += 1;
            before = Some(wf.id);
            let named = name
                .as_ref()
                .is_none_or(|want| wf.name.to_lowercase().contains(want.as_str()));
            if !named {
                continue;
            }
            let view = workflow_view(e, wf, false).await?;
            if q.status.is_some_and(|st| st != view.status) {
                continue;
            }
            workflows.push(view);
            if workflows.len() == limit {
                full = true;
                end = end && i + 1 == n;
                break;
            }
        }
    }
    let next = if end { None } else { before.map(|w| w.0) };
    Ok(Json(WorkflowList { workflows, next }))
}

/// Read a workflow's graph.
///
/// The workflow's tasks as nodes (key, state, parent for sub-tasks, items for a `for_each`) and its
/// dependencies as edges: what the dashboard draws.
#[utoipa::path(get, path = "/v1/workflows/{id}/graph", params(("id" = Uuid, Path, description = "workflow id")),
    responses((status = 200, body = WorkflowGraph)))]
pub async fn workflow_graph(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WorkflowGraph>> {
    let id = WorkflowId(parse_id("workflow", &id)?);
    scope::check_workflow(&caller, engine(&s), id).await?;
    let graph = engine(&s).workflow_graph(id).await?;
    let nodes = graph
        .tasks
        .iter()
        .map(|t| GraphNode {
            id: t.id.0,
            key: t.spec.key.0.clone(),
            state: t.kind(),
            attempt: t.attempt,
            parent: graph.parents.get(&t.id).map(|p| p.0),
            compensates: graph.compensates.get(&t.id).map(|c| c.0),
            paused: t.is_paused(),
        })
        .collect();
    let edges = graph
        .edges
        .into_iter()
        .map(|e| GraphEdge {
            dependency: e.dependency.0,
            dependent: e.dependent.0,
        })
        .collect();
    Ok(Json(WorkflowGraph {
        workflow: id.0,
        nodes,
        edges,
    }))
}

/// Read a workflow's history.
///
/// A page of the history of the workflow's tasks, in task id order: each entry's `seq`, time and
/// event kind, without the event's data, heartbeats left out (a task's full history is `GET
/// /v1/tasks/{id}/history`). Pass `next` as `after` for the next page.
#[utoipa::path(get, path = "/v1/workflows/{id}/history",
    params(("id" = Uuid, Path, description = "workflow id"), WorkflowHistoryQuery),
    responses((status = 200, body = WorkflowHistory, description = "The history of a page of the workflow's tasks (in task id order), each entry's time and event without its data; heartbeats left out. For timelines; a task's full history is `GET /v1/tasks/{id}/history`.")))]
pub async fn workflow_history(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WorkflowHistoryQuery>,
) -> ApiResult<Json<WorkflowHistory>> {
    let id = WorkflowId(parse_id("workflow", &id)?);
    scope::check_workflow(&caller, engine(&s), id).await?;
    let max = baton_engine::read::HISTORY_TASKS_PER_PAGE_MAX;
    let limit = q.limit.unwrap_or(200);
    if !(1..=max).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid_query",
            format!("limit {limit} is out of range"),
        )
        .field("limit", format!("between 1 and {max}")));
    }
    let marks = engine(&s)
        .workflow_history(id, q.after.map(TaskId), limit)
        .await?;
    let mut tasks: Vec<TaskHistoryMarks> = Vec::new();
    for m in marks {
        let entry = HistoryMarkView {
            seq: m.seq,
            at: m.at.0,
            event: m.event,
        };
        match tasks.last_mut() {
            Some(t) if t.task == m.task.0 => t.entries.push(entry),
            _ => tasks.push(TaskHistoryMarks {
                task: m.task.0,
                entries: vec![entry],
            }),
        }
    }
    // Every task has its `submitted` entry, so a full page names `limit` tasks.
    let next = (tasks.len() == limit)
        .then(|| tasks.last().map(|t| t.task))
        .flatten();
    Ok(Json(WorkflowHistory {
        workflow: id.0,
        tasks,
        next,
    }))
}

/// Cancel a workflow.
///
/// Cancels every task of the workflow that has not ended, with `reason`: agents holding them are
/// told at their next report, and compensations run. Safe to resend.
#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", request_body = CancelBody, params(("id" = Uuid, Path)),
    responses((status = 200, body = CancelledCount)))]
pub async fn cancel_workflow(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CancelBody>,
) -> ApiResult<Json<CancelledCount>> {
    let id = WorkflowId(parse_id("workflow", &id)?);
    scope::check_workflow(&caller, engine(&s), id).await?;
    let cancelled = engine(&s)
        .cancel_workflow(id, caller.actor(), body.reason)
        .await?;
    Ok(Json(CancelledCount { cancelled }))
}

// ---- signals --------------------------------------------------------------------------------

/// Longest `Idempotency-Key` header accepted.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 256;

/// The `Idempotency-Key` header, if sent.
fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, Problem> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_LEN_MAX => Ok(Some(k.to_owned())),
            _ => Err(Problem::bad_request(
                "invalid_header",
                "the Idempotency-Key header is empty, too long or not text",
            )
            .field(
                "Idempotency-Key",
                format!("1 to {IDEMPOTENCY_KEY_LEN_MAX} bytes of visible ASCII"),
            )),
        },
    }
}

/// A submission's idempotency key: the body's `idempotency_key` or the `Idempotency-Key`
/// header (as signals and triggers take it); both, only if they agree.
fn submission_key(
    headers: &axum::http::HeaderMap,
    in_body: Option<String>,
) -> Result<Option<String>, Problem> {
    match (idempotency_key(headers)?, in_body) {
        (Some(header), Some(body)) if header != body => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "`idempotency_key` and the Idempotency-Key header differ",
        )
        .field(
            "idempotency_key",
            "the Idempotency-Key header's value, or left out",
        )),
        (header, body) => Ok(body.or(header)),
    }
}

/// The body of a signal: its data, or a rejection (`{"reject": "reason"}`); `{"$literal": v}`
/// sends `v` as data, for data that looks like a rejection.
fn signal_input(body: Value) -> Result<SignalInput, Problem> {
    match body {
        Value::Object(mut m) if m.len() == 1 && m.contains_key("reject") => {
            match m.remove("reject") {
                Some(Value::String(reason)) => Ok(SignalInput::Reject(reason)),
                _ => Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    "a rejection's reason must be a string",
                )
                .field("reject", "a string: why the signal rejects")),
            }
        }
        Value::Object(mut m) if m.len() == 1 && m.contains_key("$literal") => Ok(
            SignalInput::Data(m.remove("$literal").unwrap_or(Value::Null)),
        ),
        data => Ok(SignalInput::Data(data)),
    }
}

fn signal_view(r: SignalRecord) -> SignalView {
    SignalView {
        id: r.id,
        workflow: r.workflow.0,
        name: r.name,
        data: r.data,
        reject: r.reject,
        sent_by: r.sent_by,
        idempotency_key: r.idempotency_key,
        sent_at: r.sent_at.0,
        delivered_at: r.delivered_at.map(|t| t.0),
    }
}

/// Send a signal (approve or reject).
///
/// Sends a signal to a workflow: every task of it waiting for `name` (a task whose spec has
/// `"wait_for": {"signal": NAME}`) completes with the body as its result, or fails with error
/// kind `rejected` for a body `{"reject": "reason"}`. A signal no task waits for yet is kept
/// and taken by the next task that waits for it. Safe to resend with the same
/// `Idempotency-Key` header: applied once (a different body with the same key is a 409).
#[utoipa::path(post, path = "/v1/workflows/{id}/signals/{name}",
    request_body(content = serde_json::Value, description = "The data that becomes the waiting tasks' result (any JSON); or `{\"reject\": \"reason\"}` to fail them (error kind `rejected`); `{\"$literal\": v}` sends `v` as it is."),
    params(("id" = Uuid, Path), ("name" = String, Path, description = "The signal's name: 1 to 128 letters, digits and `-_.:/`, but neither `.` nor `..`", pattern = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$"),
           ("Idempotency-Key" = Option<String>, Header, description = "Sending again with the same key (for this workflow and name) applies once: 1 to 256 visible ASCII characters", pattern = r"^[\x21-\x7e]([\t\x20-\x7e]{0,254}[\x21-\x7e])?$"),
           SignalQuery),
    responses((status = 201, body = SignalSent, description = "stored, and delivered to the tasks in `delivered_to` (none: kept for the next task that waits)"),
              (status = 200, body = SignalSent, description = "an earlier signal with the same idempotency key")))]
pub async fn send_signal(
    AxState(s): St,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<SignalQuery>,
    headers: axum::http::HeaderMap,
    PayloadJson(body): PayloadJson,
) -> ApiResult<Response> {
    let id = WorkflowId(parse_id("workflow", &id)?);
    let key = idempotency_key(&headers)?;
    // With tokens, the sender is the token: a name it gave could be anyone's.
    let by = match q.by {
        None => caller.actor(),
        Some(by) if caller.is_local() => by,
        Some(_) => {
            return Err(Problem::bad_request(
                "invalid_query",
                format!(
                    "with tokens configured, a signal's sender is the token's name (`{}`); \
                     leave out `by`",
                    caller.actor()
                ),
            )
            .field(
                "by",
                "absent: `by` is taken only when no tokens are configured",
            ))
        }
    };
    scope::check_workflow(&caller, engine(&s), id).await?;
    if by.is_empty() || by.chars().count() > 128 || by.chars().any(char::is_control) {
        return Err(Problem::bad_request(
            "invalid_query",
            "`by` must be 1 to 128 characters, without control characters",
        )
        .field("by", "1 to 128 characters"));
    }
    let receipt = engine(&s)
        .signal(id, &name, signal_input(body)?, &by, key)
        .await?;
    let status = if receipt.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let out = SignalSent {
        signal: signal_view(receipt.signal),
        created: receipt.created,
        delivered_to: receipt
            .delivered_to
            .into_iter()
            .map(|t| SignalDelivery {
                id: t.id.0,
                key: t.spec.key.0.clone(),
                state: t.kind(),
            })
            .collect(),
    };
    Ok((status, Json(out)).into_response())
}

/// List a workflow's signals.
///
/// The signals sent to a workflow, oldest first: delivered, or kept for a task to come.
#[utoipa::path(get, path = "/v1/workflows/{id}/signals", params(("id" = Uuid, Path), SignalListQuery),
    responses((status = 200, body = SignalList)))]
pub async fn list_signals(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<SignalListQuery>,
) -> ApiResult<Json<SignalList>> {
    let id = WorkflowId(parse_id("workflow", &id)?);
    scope::check_workflow(&caller, engine(&s), id).await?;
    let limit = page_limit(q.limit)?;
    let signals = engine(&s).signals(id, q.after.unwrap_or(0), limit).await?;
    let next = (signals.len() == limit)
        .then(|| signals.last().map(|s| s.id))
        .flatten();
    Ok(Json(SignalList {
        signals: signals.into_iter().map(signal_view).collect(),
        next,
    }))
}

/// List tasks waiting for a signal.
///
/// Tasks waiting for a signal, in every workflow or one: what people are asked to approve.
#[utoipa::path(get, path = "/v1/waiting", params(WaitingQuery),
    responses((status = 200, body = WaitingList)))]
pub async fn list_waiting(
    AxState(s): St,
    caller: Caller,
    ApiQuery(q): ApiQuery<WaitingQuery>,
) -> ApiResult<Json<WaitingList>> {
    let limit = page_limit(q.limit)?;
    let filter = TaskFilter {
        workflow: q.workflow.map(WorkflowId),
        after: q.after.map(TaskId),
        limit,
        ..TaskFilter::default()
    };
    let e = engine(&s);
    let (tasks, next) = task_page(&caller, e, filter, |f| e.waiting(f)).await?;
    let mut names: BTreeMap<Uuid, String> = BTreeMap::new();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let workflow_name = match names.get(&t.workflow.0) {
            Some(n) => n.clone(),
            None => {
                let n = engine(&s)
                    .workflow(t.workflow)
                    .await
                    .map(|w| w.name)
                    .unwrap_or_default();
                names.insert(t.workflow.0, n.clone());
                n
            }
        };
        out.push(WaitingTask {
            id: t.id.0,
            workflow: t.workflow.0,
            workflow_name,
            key: t.spec.key.0.clone(),
            signal: t
                .spec
                .wait_for
                .as_ref()
                .map(|w| w.signal.clone())
                .unwrap_or_default(),
            since: t
                .entered_at
                .get(StateKind::Pending)
                .unwrap_or(t.updated_at)
                .0,
            until: t.deadlines.signal.map(|d| d.0),
            input: t.input().cloned().unwrap_or(Value::Null),
            attempt: t.attempt,
        });
    }
    Ok(Json(WaitingList { tasks: out, next }))
}

/// Most rows (tasks, schedules, triggers) one list of a scoped caller looks at: when few are
/// in its scope, it answers with fewer than `limit` and a `next` to go on from.
const SCOPED_TASKS_SCANNED_MAX: usize = 5_000;

/// A page of the tasks `read` selects by `filter` that the caller may see, and the `next` to
/// go on from. One read, unless the caller is scoped and lists every workflow: then pages
/// are read until `limit` tasks are kept, the tasks end, or [`SCOPED_TASKS_SCANNED_MAX`]
/// were looked at.
async fn task_page<F, Fut>(
    caller: &Caller,
    e: &Engine<AnyStore>,
    filter: TaskFilter,
    read: F,
) -> ApiResult<(Vec<Task>, Option<Uuid>)>
where
    F: Fn(TaskFilter) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Task>, baton_engine::EngineError>>,
{
    let limit = filter.limit;
    if let Some(workflow) = filter.workflow {
        scope::check_workflow(caller, e, workflow).await?;
    }
    if !caller.is_scoped() || filter.workflow.is_some() {
        let tasks = read(filter).await?;
        let next = (tasks.len() == limit)
            .then(|| tasks.last().map(|t| t.id.0))
            .flatten();
        return Ok((tasks, next));
    }
    let mut cache = scope::ScopeCache::new();
    let mut kept = Vec::with_capacity(limit);
    let mut after = filter.after;
    let (mut scanned, mut end) = (0, false);
    while kept.len() < limit && !end && scanned < SCOPED_TASKS_SCANNED_MAX {
        let page = read(TaskFilter {
            after,
            ..filter.clone()
        })
        .await?;
        let n = page.len();
        end = n < limit;
        for (i, task) in page.into_iter().enumerate() {
            scanned += 1;
            after = Some(task.id);
            if cache.sees(caller, e, task.workflow).await? {
                kept.push(task);
                if kept.len() == limit {
                    end = end && i + 1 == n;
                    break;
                }
            }
        }
    }
    let next = if end { None } else { after.map(|t| t.0) };
    Ok((kept, next))
}

/// A page of what `read` finds by name (schedules, triggers) that the caller `sees`, and the
/// `next` to go on from, present only when more follow: it reads one more than `limit`, and
/// reads on past those a scoped caller does not see, up to [`SCOPED_TASKS_SCANNED_MAX`].
async fn name_page<T, F, Fut>(
    q: NamesQuery,
    sees: impl Fn(&T) -> bool,
    name: impl Fn(&T) -> &String,
    read: F,
) -> ApiResult<(Vec<T>, Option<String>)>
where
    F: Fn(Option<String>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, baton_engine::EngineError>>,
{
    let limit = page_limit(q.limit)?;
    let mut kept = Vec::with_capacity(limit + 1);
    let (mut after, mut scanned) = (q.after, 0);
    loop {
        let want = (limit + 1 - kept.len()).min(baton_engine::read::PAGE_ROWS_MAX);
        let page = read(after.clone(), want).await?;
        let end = page.len() < want;
        for row in page {
            scanned += 1;
            after = Some(name(&row).clone());
            if sees(&row) {
                kept.push(row);
            }
        }
        if kept.len() > limit {
            kept.truncate(limit);
            let next = kept.last().map(|r| name(r).clone());
            return Ok((kept, next));
        }
        if end {
            return Ok((kept, None));
        }
        if scanned >= SCOPED_TASKS_SCANNED_MAX {
            return Ok((kept, after));
        }
    }
}

/// A page size from a query: 1 to 1,000, default 100.
fn page_limit(limit: Option<usize>) -> Result<usize, Problem> {
    let limit = limit.unwrap_or(100);
    if (1..=baton_engine::read::PAGE_ROWS_MAX).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::bad_request(
            "invalid_query",
            format!(
                "`limit` must be from 1 to {}",
                baton_engine::read::PAGE_ROWS_MAX
            ),
        )
        .field("limit", "an integer from 1 to 1000"))
    }
}

// ---- schedules ------------------------------------------------------------------------------

fn schedule_view(i: baton_engine::ScheduleInfo) -> ScheduleView {
    ScheduleView {
        name: i.record.name,
        spec: i.spec,
        paused: i.record.paused,
        next: i.next.into_iter().map(|t| t.0).collect(),
        last_tick_at: i.record.last_tick_at.map(|t| t.0),
        last_workflow: i.record.last_workflow.map(|w| w.0),
        created_at: i.record.created_at.0,
        updated_at: i.record.updated_at.0,
    }
}

/// Create a schedule.
///
/// Creates a schedule: at each tick of `cron` (with seconds, read in `timezone`) the leading
/// node submits `workflow` with the idempotency key `schedule:NAME:TICK_MS`, so a tick submits
/// one workflow across restarts and nodes. `overlap` says what a tick does while the previous
/// tick's workflow runs; `catch_up` what happens to ticks missed while no node ran.
#[utoipa::path(post, path = "/v1/schedules", request_body = ScheduleSpec,
    responses((status = 201, body = ScheduleView)))]
pub async fn create_schedule(
    AxState(s): St,
    caller: Caller,
    ApiJson(mut body): ApiJson<ScheduleSpec>,
) -> ApiResult<Response> {
    scope::stamp(&caller, &mut body.workflow.labels, "workflow.labels")?;
    let info = engine(&s).create_schedule(body).await?;
    Ok((StatusCode::CREATED, Json(schedule_view(info))).into_response())
}

/// List schedules.
///
/// Schedules by name with their next fire times, a page at a time: `limit` (1 to 1,000,
/// default 100), then `after` the page's `next` for the following page; `next` is absent on
/// the last page.
#[utoipa::path(get, path = "/v1/schedules", params(NamesQuery),
    responses((status = 200, body = ScheduleList)))]
pub async fn list_schedules(
    AxState(s): St,
    caller: Caller,
    ApiQuery(q): ApiQuery<NamesQuery>,
) -> ApiResult<Json<ScheduleList>> {
    let e = engine(&s);
    let (page, next) = name_page(
        q,
        |i: &baton_engine::ScheduleInfo| caller.sees_template(&i.spec.workflow),
        |i| &i.record.name,
        |after, limit| e.schedules(after, limit),
    )
    .await?;
    Ok(Json(ScheduleList {
        schedules: page.into_iter().map(schedule_view).collect(),
        next,
    }))
}

/// The schedule, if the caller may see it (its template carries the caller's scope); else
/// the answer a missing schedule gets.
async fn visible_schedule(
    caller: &Caller,
    e: &Engine<AnyStore>,
    name: &str,
) -> ApiResult<baton_engine::ScheduleInfo> {
    let info = e.schedule(name).await?;
    if caller.sees_template(&info.spec.workflow) {
        Ok(info)
    } else {
        Err(baton_engine::EngineError::ScheduleNotFound(name.to_owned()).into())
    }
}

/// [`visible_schedule`] as a check: no read for an unscoped caller.
async fn check_schedule(caller: &Caller, e: &Engine<AnyStore>, name: &str) -> ApiResult<()> {
    if caller.is_scoped() {
        visible_schedule(caller, e, name).await?;
    }
    Ok(())
}

/// Read a schedule.
///
/// One schedule: its spec, whether it is paused, and its next fire times.
#[utoipa::path(get, path = "/v1/schedules/{name}", params(("name" = String, Path, description = "1 to 128 letters, digits and `-_.:/`, but not `.` or `..`", pattern = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$")),
    responses((status = 200, body = ScheduleView)))]
pub async fn get_schedule(
    AxState(s): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(schedule_view(
        visible_schedule(&caller, engine(&s), &name).await?,
    )))
}

/// Delete a schedule.
///
/// Deletes a schedule; workflows it submitted are left as they are.
#[utoipa::path(delete, path = "/v1/schedules/{name}", params(("name" = String, Path, description = "1 to 128 letters, digits and `-_.:/`, but not `.` or `..`", pattern = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$")),
    responses((status = 204, description = "deleted")))]
pub async fn delete_schedule(
    AxState(s): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    check_schedule(&caller, engine(&s), &name).await?;
    engine(&s).delete_schedule(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause a schedule.
///
/// Pauses a schedule: no tick fires until it is resumed.
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", params(("name" = String, Path, description = "1 to 128 letters, digits and `-_.:/`, but not `.` or `..`", pattern = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$")),
    responses((status = 200, body = ScheduleView)))]
pub async fn pause_schedule(
    AxState(s): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    check_schedule(&caller, engine(&s), &name).await?;
    Ok(Json(schedule_view(
        engine(&s).pause_schedule(&name, true).await?,
    )))
}

/// Resume a schedule.
///
/// Resumes a paused schedule from its next tick after now (the ticks it slept through are
/// not caught up).
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", params(("name" = String, Path, description = "1 to 128 letters, digits and `-_.:/`, but not `.` or `..`", pattern = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$")),
    responses((status = 200, body = ScheduleView)))]
pub async fn resume_schedule(
    AxState(s): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ScheduleView>> {
    check_schedule(&caller, engine(&s), &name).await?;
    Ok(Json(schedule_view(
        engine(&s).pause_schedule(&name, false).await?,
    )))
}

// ---- triggers -------------------------------------------------------------------------------

fn trigger_view(t: baton_engine::TriggerInfo) -> TriggerView {
    TriggerView {
        name: t.name,
        workflow: t.template,
        created_at: t.created_at.0,
        updated_at: t.updated_at.0,
    }
}

fn limit_view(l: baton_engine::read::LimitRecord) -> LimitView {
    LimitView {
        key: l.key,
        units: l.limit.units,
        per_ms: l.limit.per_ms,
        available: l.available,
        full_at: l.full_at.0,
        parked: l.parked,
        updated_at: l.updated_at.0,
    }
}

/// Create or change a rate limit.
///
/// Creates or changes a named rate limit, shared by every node: a task whose `rate` names it is
/// handed out only while the limit has the units it draws. What a changed limit had handed out
/// stays drawn, so a bigger limit has its extra units at once.
#[utoipa::path(put, path = "/v1/limits/{key}", request_body = Limit, params(("key" = String, Path, description = "the limit's name, as tasks' `rate[].key` give it: 1 to 128 bytes without control characters, `{` or `}`, but not `.` or `..`", min_length = 1, max_length = 128, pattern = r"^(?!\.\.?$)[^{}\x00-\x1f\x7f-\x9f]*$")),
    responses((status = 201, body = LimitView, description = "created"), (status = 200, body = LimitView, description = "changed")))]
pub async fn put_limit(
    AxState(s): St,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<Limit>,
) -> ApiResult<Response> {
    let e = engine(&s);
    let created = e.set_limit(key.clone(), body).await?;
    let view = limit_view(e.limit(&key).await?);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

/// List rate limits.
///
/// Every named rate limit, by key, with its bucket now.
#[utoipa::path(get, path = "/v1/limits", responses((status = 200, body = LimitList)))]
pub async fn list_limits(AxState(s): St) -> ApiResult<Json<LimitList>> {
    let limits = engine(&s).limits().await?;
    Ok(Json(LimitList {
        limits: limits.into_iter().map(limit_view).collect(),
    }))
}

/// Read a rate limit.
///
/// One named rate limit with its bucket now: units available and when the next one comes.
#[utoipa::path(get, path = "/v1/limits/{key}", params(("key" = String, Path, description = "the limit's name: 1 to 128 bytes without control characters, `{` or `}`, but not `.` or `..`", min_length = 1, max_length = 128, pattern = r"^(?!\.\.?$)[^{}\x00-\x1f\x7f-\x9f]*$")),
    responses((status = 200, body = LimitView)))]
pub async fn get_limit(AxState(s): St, Path(key): Path<String>) -> ApiResult<Json<LimitView>> {
    Ok(Json(limit_view(engine(&s).limit(&key).await?)))
}

/// Delete a rate limit.
///
/// Deletes a named rate limit: tasks that draw from it are no longer held by it. New tasks
/// naming it are refused until it is set again.
#[utoipa::path(delete, path = "/v1/limits/{key}", params(("key" = String, Path, description = "the limit's name: 1 to 128 bytes without control characters, `{` or `}`, but not `.` or `..`", min_length = 1, max_length = 128, pattern = r"^(?!\.\.?$)[^{}\x00-\x1f\x7f-\x9f]*$")),
    responses((status = 204, description = "deleted")))]
pub async fn delete_limit(AxState(s): St, Path(key): Path<String>) -> ApiResult<StatusCode> {
    engine(&s).delete_limit(key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create or replace a trigger.
///
/// Registers (or replaces) a trigger: the workflow `POST /v1/triggers/{name}` submits. In its
/// tasks' inputs, `{"$input": "/json/pointer"}` stands for what the pointer finds in that
/// request's body (`""`: all of it).
#[utoipa::path(put, path = "/v1/triggers/{name}", request_body = WorkflowTemplate, params(("name" = String, Path, description = "1 to 128 letters, digits and `-_.:/`, but not `.` or `..`", pattern = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$")),
    responses((status = 201, body = TriggerView, description = "created"), (status = 200, body = TriggerView, description = "replaced")))]
pub async fn put_trigger(
    AxState(s): St,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(mut body): ApiJson<WorkflowTemplate>,
) -> ApiResult<Response> {
    scope::stamp(&caller, &mut body.labels, "labels")?;
    if caller.is_scoped() {
        match engine(&s).trigger(&name).await {
            Ok(t) if !caller.sees_template(&t.template) => {
                // Names are global: this one is taken outside the caller's scope.
                return Err(scope::out_of_scope(format!(
                    "a trigger named {name:?} exists outside the scope of token `{}`; choose \
                     another name",
                    caller.actor()
                )));
            }
            Ok(_) | Err(baton_engine::EngineError::TriggerNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let (trigger, created) = engine(&s).put_trigger(&name, body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(trigger_view(trigger))).into_response())
}

/// Fire a trigger.
///
/// Submits the trigger's workflow, the request body as its input (see `PUT
/// /v1/triggers/{name}`). Safe to resend with the same `Idempotency-Key`: the first workflow is
/// returned.
#[utoipa::path(post, path = "/v1/triggers/{name}", request_body(content = serde_json::Value, description = "Any JSON: what the template's `$input` placeholders take"),
    params(("name" = String, Path, description = "1 to 128 letters, digits and `-_.:/`, but not `.` or `..`", pattern = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$"), ("Idempotency-Key" = Option<String>, Header, description = "The same key again returns the first workflow: 1 to 256 visible ASCII characters", pattern = r"^[\x21-\x7e]([\t\x20-\x7e]{0,254}[\x21-\x7e])?$")),
    responses((status = 201, body = WorkflowCreated), (status = 200, body = WorkflowCreated, description = "an earlier request with the same key")))]
pub async fn fire_trigger(
    AxState(s): St,
    caller: Caller,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    PayloadJson(body): PayloadJson,
) -> ApiResult<Response> {
    let key = idempotency_key(&headers)?;
    check_trigger(&caller, engine(&s), &name).await?;
    let receipt = engine(&s)
        .fire_trigger(&name, &body, key.as_deref())
        .await?;
    Ok(workflow_created(receipt))
}

/// List triggers.
///
/// Triggers by name with the workflow template each submits, a page at a time: `limit` (1 to
/// 1,000, default 100), then `after` the page's `next` for the following page; `next` is
/// absent on the last page.
#[utoipa::path(get, path = "/v1/triggers", params(NamesQuery),
    responses((status = 200, body = TriggerList)))]
pub async fn list_triggers(
    AxState(s): St,
    caller: Caller,
    ApiQuery(q): ApiQuery<NamesQuery>,
) -> ApiResult<Json<TriggerList>> {
    let e = engine(&s);
    let (page, next) = name_page(
        q,
        |t: &baton_engine::TriggerInfo| caller.sees_template(&t.template),
        |t| &t.name,
        |after, limit| e.triggers(after, limit),
    )
    .await?;
    Ok(Json(TriggerList {
        triggers: page.into_iter().map(trigger_view).collect(),
        next,
    }))
}

/// The trigger, if the caller may see it (its template carries the caller's scope); else the
/// answer a missing trigger gets.
async fn visible_trigger(
    caller: &Caller,
    e: &Engine<AnyStore>,
    name: &str,
) -> ApiResult<baton_engine::TriggerInfo> {
    let trigger = e.trigger(name).await?;
    if caller.sees_template(&trigger.template) {
        Ok(trigger)
    } else {
        Err(baton_engine::EngineError::TriggerNotFound(name.to_owned()).into())
    }
}

/// [`visible_trigger`] as a check: no read for an unscoped caller.
async fn check_trigger(caller: &Caller, e: &Engine<AnyStore>, name: &str) -> ApiResult<()> {
    if caller.is_scoped() {
        visible_trigger(caller, e, name).await?;
    }
    Ok(())
}

/// Read a trigger.
///
/// One trigger: its name and the workflow template `POST /v1/triggers/{name}` submits.
#[utoipa::path(get, path = "/v1/triggers/{name}", params(("name" = String, Path, description = "1 to 128 letters, digits and `-_.:/`, but not `.` or `..`", pattern = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$")),
    responses((status = 200, body = TriggerView)))]
pub async fn get_trigger(
    AxState(s): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<TriggerView>> {
    Ok(Json(trigger_view(
        visible_trigger(&caller, engine(&s), &name).await?,
    )))
}

/// Delete a trigger.
///
/// Deletes a trigger; workflows it submitted are left as they are.
#[utoipa::path(delete, path = "/v1/triggers/{name}", params(("name" = String, Path, description = "1 to 128 letters, digits and `-_.:/`, but not `.` or `..`", pattern = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$")),
    responses((status = 204, description = "deleted")))]
pub async fn delete_trigger(
    AxState(s): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    check_trigger(&caller, engine(&s), &name).await?;
    engine(&s).delete_trigger(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- tasks ----------------------------------------------------------------------------------

/// List tasks.
///
/// Tasks, by id (creation order), filtered by `workflow` and `state`, a page at a time: pass `next`
/// as `after` for the next page (`next` is absent on the last). A scoped token sees only the tasks
/// of workflows carrying its labels; an agent token may not list.
#[utoipa::path(get, path = "/v1/tasks", params(ListQuery),
    responses((status = 200, body = TaskList)))]
pub async fn list_tasks(
    AxState(s): St,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<TaskList>> {
    let state = match q.state.as_deref() {
        None => None,
        Some(name) => Some(StateKind::parse(name).ok_or_else(|| {
            Problem::bad_request("invalid_query", format!("unknown state `{name}`")).field(
                "state",
                "one of blocked, pending, assigned, executing, completed, failed, cancelled",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=baton_engine::read::PAGE_ROWS_MAX).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid_query",
            format!("limit {limit} is out of range"),
        )
        .field(
            "limit",
            format!("between 1 and {}", baton_engine::read::PAGE_ROWS_MAX),
        ));
    }
    let filter = TaskFilter {
        workflow: q.workflow.map(WorkflowId),
        state,
        after: q.after.map(TaskId),
        limit,
    };
    let e = engine(&s);
    let (tasks, next) = task_page(&caller, e, filter, |f| e.tasks(f)).await?;
    Ok(Json(TaskList {
        tasks: tasks.iter().map(TaskSummary::from).collect(),
        next,
    }))
}

/// Most history entries returned with a task; page the rest with `/history`.
const HISTORY_WITH_TASK_MAX: usize = 1_000;

/// Read a task.
///
/// The task with everything known about it: its state and the state's data (lease, result, error,
/// next retry, cancel reason), its spec and resolved input, its deadlines, why it waits
/// (`waiting`), its dependencies and dependents, its compensation, and the first 1,000 entries of
/// its history (`GET /v1/tasks/{id}/history` pages through the rest). An agent token reads only the
/// tasks leased to its agents.
#[utoipa::path(get, path = "/v1/tasks/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = TaskView, description = "The task, its input once (in `spec`: the `submitted` history entry does not repeat the spec), its first 1,000 history entries, why it waits and its neighbours.")))]
pub async fn get_task(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = TaskId(parse_id("task", &id)?);
    let e = engine(&s);
    let detail = e.task_detail(id, HISTORY_WITH_TASK_MAX).await?;
    scope::check_held(&caller, e, &detail.task).await?;
    scope::check_task(&caller, e, &detail.task).await?;
    Ok(json_sized(&task_view(detail)))
}

/// A JSON answer written once into a buffer of its exact size (counted first, which costs
/// little next to the copy it saves): `axum::Json` grows its buffer by doubling, and each
/// step copies the answer while holding both, so a big answer would cost up to three times
/// its size.
fn json_sized<T: serde::Serialize>(value: &T) -> Response {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // Neither writer fails, and views hold nothing serde_json cannot write (maps have string
    // keys), so a failure is a bug.
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("a view always serialises");
    let mut body = Vec::with_capacity(count.0);
    serde_json::to_writer(&mut body, value).expect("a view always serialises");
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// An event's own fields, as a history entry's `data` shows them: a `submitted` event without
/// its spec, which the task's `spec` carries (once).
/// A history entry as the API shows it.
fn history_entry(h: &baton_core::HistoryEntry) -> HistoryEntry {
    HistoryEntry {
        seq: h.seq,
        at: h.at.0,
        actor: serde_json::to_value(h.event.actor()).unwrap_or(Value::Null),
        event: h.event.kind(),
        data: event_data(&h.event),
    }
}

fn event_data(event: &Event) -> Value {
    match event {
        Event::Submitted(sub) => {
            // Every field named: a field added to `Submission` must be shown here too.
            let baton_core::Submission {
                task,
                workflow,
                spec: _,
                completed,
                seed,
                input,
                unresolved,
            } = sub;
            let mut data = serde_json::json!({
                "event": event.kind(),
                "task": task,
                "workflow": workflow,
                "completed": completed,
                // Above 2^53: JavaScript's numbers would round it.
                "seed": seed.to_string(),
            });
            if let Some(input) = input {
                data["input"] = input.clone();
            }
            if let Some(unresolved) = unresolved {
                data["unresolved"] = serde_json::to_value(unresolved).unwrap_or(Value::Null);
            }
            data
        }
        other => serde_json::to_value(other).unwrap_or(Value::Null),
    }
}

fn task_view(detail: baton_engine::TaskDetail) -> TaskView<Box<RawValue>> {
    let baton_engine::TaskDetail {
        task,
        spec_json,
        history,
        waiting,
        dependencies: deps,
        dependents,
        compensation,
        compensates,
        upstream_cause,
    } = detail;
    let result = match &task.state {
        State::Completed { result, .. } => Some(result.clone()),
        _ => None,
    };
    TaskView {
        id: task.id.0,
        workflow: task.workflow.0,
        key: task.spec.key.0.clone(),
        state: task.kind(),
        detail: serde_json::to_value(&task.state).unwrap_or(Value::Null),
        version: task.version,
        attempt: task.attempt,
        attempts_allowed: task.attempts_allowed,
        fencing_token: task.fencing_token.0,
        spec: spec_json,
        input: task.input.clone(),
        result,
        errors: task
            .errors
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
            .collect(),
        paused: task.paused.as_ref().map(pause_view),
        usage: task.usage.clone(),
        overruled: task
            .overruled
            .as_ref()
            .map(|o| json!({"event": o.by_event, "by": o.by, "reason": o.reason})),
        lease: task.state.lease().map(|l| LeaseView {
            id: l.id.0,
            agent: l.agent.0,
            token: l.token.0,
            granted_at: l.granted_at.0,
        }),
        deadlines: (&task.deadlines).into(),
        entered_at: StateKind::ALL
            .into_iter()
            .filter_map(|k| task.entered_at.get(k).map(|t| (k.as_str().to_owned(), t.0)))
            .collect(),
        waiting: waiting.map(|w| serde_json::to_value(w).unwrap_or(Value::Null)),
        dependencies: deps
            .into_iter()
            .map(|d| DependencyView {
                key: d.key.0,
                id: d.id.0,
                state: d.state,
            })
            .collect(),
        dependents: dependents.into_iter().map(|d| d.0).collect(),
        compensation: compensation.map(|t| t.0),
        compensates: compensates.map(|t| t.0),
        upstream_cause: upstream_cause.map(|t| t.0),
        history: history.iter().map(history_entry).collect(),
        created_at: task.created_at.0,
        updated_at: task.updated_at.0,
    }
}

/// Read a task's history.
///
/// The task's history entries with a sequence number above `after`, oldest first, at most `limit`
/// (1 to 1,000, default 100): every transition, who sent it and the event with its fields, in the
/// same shape as a task's `history`. Replaying them through the lifecycle (`GET /v1/lifecycle`)
/// rebuilds the task's state.
#[utoipa::path(get, path = "/v1/tasks/{id}/history", params(("id" = Uuid, Path), HistoryQuery),
    responses((status = 200, body = Vec<HistoryEntry>, description = "History entries, oldest first, in the same shape as a task's `history`.")))]
pub async fn task_history(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Vec<HistoryEntry>>> {
    let id = TaskId(parse_id("task", &id)?);
    scope::check_task_read(&caller, engine(&s), id).await?;
    let limit = page_limit(q.limit)?;
    let entries = engine(&s)
        .history_for_view(id, q.after.unwrap_or(0), limit)
        .await?;
    Ok(Json(entries.iter().map(history_entry).collect()))
}

/// Cancel a task.
///
/// Cancels the task (with `reason`) whatever its state but an ended one: an agent holding it is
/// told at its next report (`cancelled: true` in the answer, or `409 task_cancelled`), its
/// dependents are cancelled in turn, and its compensation, if it has one, runs. Cancelling a
/// cancelled task again answers it as it is: safe to resend.
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", request_body = CancelBody, params(("id" = Uuid, Path)),
    responses((status = 200, body = ReportAnswer)))]
pub async fn cancel_task(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CancelBody>,
) -> ApiResult<Json<ReportAnswer>> {
    let id = TaskId(parse_id("task", &id)?);
    scope::check_task_id(&caller, engine(&s), id).await?;
    let task = engine(&s)
        .cancel_task(id, caller.actor(), body.reason)
        .await?;
    Ok(Json(answer(&s, &task)))
}

/// Retry a failed task.
///
/// Retries a task that failed for good, with one more attempt allowed: it is `pending` again (or
/// `blocked` until its dependencies complete), and the dependents its failure cancelled come back.
/// Refused (`409`) for a task that has not failed, saying in words what it is.
#[utoipa::path(post, path = "/v1/tasks/{id}/retry", request_body = RetryBody, params(("id" = Uuid, Path)),
    responses((status = 200, body = ReportAnswer)))]
pub async fn retry_task(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(_body): ApiJson<RetryBody>,
) -> ApiResult<Json<ReportAnswer>> {
    let id = TaskId(parse_id("task", &id)?);
    scope::check_task_id(&caller, engine(&s), id).await?;
    let task = engine(&s).retry_task(id, caller.actor()).await?;
    Ok(Json(answer(&s, &task)))
}

/// Most workflows the counts of a scoped caller add up (its scope's workflows, one count
/// each); past it, counts are read per workflow.
pub const SCOPED_COUNTS_WORKFLOWS_MAX: usize = 10_000;

/// Count tasks per state.
#[utoipa::path(get, path = "/v1/counts", params(CountsQuery),
    description = "Tasks per state (and how many of them are paused), over every workflow or one (`workflow`). A token scoped to labels gets the sum over the workflows in its scope, up to 10,000 of them (past that, 422: ask per workflow).",
    responses((status = 200, body = Counts)))]
pub async fn counts(
    AxState(s): St,
    caller: Caller,
    ApiQuery(q): ApiQuery<CountsQuery>,
) -> ApiResult<Json<Counts>> {
    let e = engine(&s);
    match q.workflow.map(WorkflowId) {
        Some(workflow) => scope::check_workflow(&caller, e, workflow).await?,
        None if caller.is_scoped() => {
            return Ok(Json(counts_view(scoped_counts(&caller, e).await?)))
        }
        None => {}
    }
    let c = e.counts(q.workflow.map(WorkflowId)).await?;
    Ok(Json(counts_view(c)))
}

/// The counts of every workflow in the caller's scope, added up.
async fn scoped_counts(
    caller: &Caller,
    e: &Engine<AnyStore>,
) -> ApiResult<baton_engine::read::StateCounts> {
    let mut total = baton_engine::read::StateCounts::default();
    let mut before = None;
    let mut seen = 0;
    loop {
        let page = e
            .workflows_labelled(caller.scope(), before, WORKFLOWS_PAGE_MAX)
            .await?;
        for wf in &page {
            seen += 1;
            if seen > SCOPED_COUNTS_WORKFLOWS_MAX {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "too_many_workflows",
                    format!(
                        "token `{}` is scoped to labels that more than \
                         {SCOPED_COUNTS_WORKFLOWS_MAX} workflows carry: read counts per \
                         workflow (`?workflow=ID`)",
                        caller.actor()
                    ),
                ));
            }
            let c = e.counts(Some(wf.id)).await?;
            for (sum, n) in total.0.iter_mut().zip(c.0) {
                *sum += n;
            }
            total.1 += c.1;
            total.2 += c.2;
        }
        match page.last() {
            Some(last) if page.len() == WORKFLOWS_PAGE_MAX => before = Some(last.id),
            _ => return Ok(total),
        }
    }
}

// ---- short ids ------------------------------------------------------------------------------

/// Most tasks, and most workflows, `GET /v1/ids/{suffix}` lists.
const ID_MATCHES_MAX: usize = 10;

/// Find ids by their last hex digits.
///
/// What a short id stands for: the tasks and workflows whose ids end in `suffix`, 4 to 32 hex
/// digits (hyphens ignored, any case). None, one or several may match.
#[utoipa::path(get, path = "/v1/ids/{suffix}",
    params(("suffix" = String, Path, description = "the last 4 to 32 hex digits of an id (hyphens ignored)", pattern = r"^-*(?:[0-9A-Fa-f]-*){4,32}$")),
    responses((status = 200, body = IdMatches)))]
pub async fn ids_ending(
    AxState(s): St,
    caller: Caller,
    Path(suffix): Path<String>,
) -> ApiResult<Json<IdMatches>> {
    let e = engine(&s);
    let mut found = e
        .ids_ending(&suffix, ID_MATCHES_MAX + 1)
        .await
        .map_err(|e| {
            let mut p = Problem::from(e);
            if p.field.as_deref() == Some("suffix") {
                p.detail = format!(
                    "`{suffix}` is not a short id: expected {}",
                    baton_engine::read::IdSuffix::EXPECTED
                );
            }
            p
        })?;
    if caller.is_scoped() {
        let mut cache = scope::ScopeCache::new();
        let mut tasks = Vec::with_capacity(found.tasks.len());
        for t in std::mem::take(&mut found.tasks) {
            if cache.sees(&caller, e, t.workflow).await? {
                tasks.push(t);
            }
        }
        found.tasks = tasks;
        found.workflows.retain(|w| caller.sees(&w.labels));
    }
    let more = found.tasks.len() > ID_MATCHES_MAX || found.workflows.len() > ID_MATCHES_MAX;
    Ok(Json(IdMatches {
        tasks: found
            .tasks
            .into_iter()
            .take(ID_MATCHES_MAX)
            .map(|t| TaskIdMatch {
                id: t.id.0,
                workflow: t.workflow.0,
                key: t.key.0,
            })
            .collect(),
        workflows: found
            .workflows
            .into_iter()
            .take(ID_MATCHES_MAX)
            .map(|w| WorkflowIdMatch {
                id: w.id.0,
                name: w.name,
            })
            .collect(),
        more,
    }))
}

// ---- agents ---------------------------------------------------------------------------------

/// An agent as the API shows it; `leases` false leaves its leased tasks out (for a scoped
/// caller: they may be any workflow's).
async fn agent_view(e: &Engine<AnyStore>, a: AgentRecord, leases: bool) -> ApiResult<AgentView> {
    let leased = if leases {
        e.leased_to(a.id).await?
    } else {
        Vec::new()
    };
    Ok(AgentView {
        online: e.agent_online(&a),
        id: a.id.0,
        name: a.name,
        capabilities: a.capabilities,
        concurrency: a.concurrency,
        registered_at: a.registered_at.0,
        last_seen: a.last_seen.0,
        leased: leased.into_iter().map(|t| t.0).collect(),
        liveness_ms: e.config().agent_ttl_ms,
        registered_by: a.registered_by,
    })
}

/// Register an agent.
#[utoipa::path(post, path = "/v1/agents", request_body = RegisterAgent,
    description = "Registers an agent, or registers it again under its `id` (keeping when and by whom it was first registered); an `id` no agent has is refused (`404 agent_not_found`: Baton makes the ids), so an agent Baton has forgotten registers without `id` and goes on under the new one. Each token may have at most so many agents registered (`baton serve --agents-per-token-max`, 1,000 by default, or the token's `agents_max` if higher; every loopback client without tokens counts as the token `local`): past it, 429 `agents_per_token_max_reached`, until the agent retention deletes agents silent for long (`--agent-retention`, 7 days). An agent token also has at most `agents_max` agents online at once (429 `agents_max_reached`).",
    responses((status = 201, body = AgentView)))]
pub async fn register_agent(
    AxState(s): St,
    caller: Caller,
    ApiJson(body): ApiJson<RegisterAgent>,
) -> ApiResult<Response> {
    caller.may_act_as(&body.name)?;
    let e = engine(&s);
    let mut concurrency = body.concurrency.unwrap_or(1);
    if let Some(id) = body.id {
        // Ids are the engine's to make: an `id` names an agent registered before.
        let existing = e.agent(AgentId(id)).await.map_err(|err| match err {
            baton_engine::EngineError::AgentNotFound(_) => Problem::not_found(
                "agent_not_found",
                format!(
                    "no agent has id {id} (never registered, or deleted after \
                     `--agent-retention` of silence): register without `id` for a new one"
                ),
            )
            .field("id", "the id of an agent registered before, or left out"),
            err => err.into(),
        })?;
        caller.may_act_as(&existing.name)?;
        concurrency = body.concurrency.unwrap_or(existing.concurrency);
    }
    // An agent token may have at most `agents_max` of its agents online: counted and
    // registered under its lock, so concurrent registrations on this node cannot both pass.
    let token = caller.token();
    let _registering = if caller.role() == crate::auth::Role::Agent {
        let guard = token.registering.lock().await;
        let online = e
            .agents()
            .await?
            .iter()
            .filter(|a| Some(a.id.0) != body.id && e.agent_online(a) && token.binds(&a.name))
            .count();
        if online >= token.agents_max as usize {
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "agents_max_reached",
                format!(
                    "token `{}` has {online} agents online, its limit (`agents_max` {}): \
                     another registers once one of them has been silent for the agents' \
                     liveness window ({} ms), or re-register an existing one with its `id`",
                    token.name,
                    token.agents_max,
                    e.config().agent_ttl_ms
                ),
            ));
        }
        Some(guard)
    } else {
        None
    };
    // Every token may have so many agents registered (an agent token at least its
    // `agents_max`, which counts those online); loopback clients share `local`'s.
    let agents_max = match caller.role() {
        crate::auth::Role::Agent => e.config().agents_per_token_max.max(token.agents_max),
        _ => e.config().agents_per_token_max,
    };
    let record = e
        .register_agent_by(
            &token.name,
            agents_max,
            body.id.map(AgentId),
            body.name,
            body.capabilities,
            concurrency,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(agent_view(e, record, true).await?),
    )
        .into_response())
}

/// Agents by id, a page at a time. A token scoped to labels sees them without their leased
/// tasks.
#[utoipa::path(get, path = "/v1/agents", params(AgentsQuery),
    description = "Agents by id (their registration order), a page at a time: `limit` (1 to 1,000, default 100), then `after` the page's `next` for the following page. Agents silent for the agent retention (`baton serve --agent-retention`, 7 days) and holding no lease are deleted.",
    responses((status = 200, body = AgentList)))]
pub async fn list_agents(
    AxState(s): St,
    caller: Caller,
    ApiQuery(q): ApiQuery<AgentsQuery>,
) -> ApiResult<Json<AgentList>> {
    let limit = page_limit(q.limit)?;
    let e = engine(&s);
    let page = e.agents_page(q.after.map(AgentId), limit).await?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|a| a.id.0))
        .flatten();
    let mut agents = Vec::with_capacity(page.len());
    for a in page {
        agents.push(agent_view(e, a, !caller.is_scoped()).await?);
    }
    Ok(Json(AgentList { agents, next }))
}

async fn own_agent(e: &Engine<AnyStore>, caller: &Caller, raw: &str) -> ApiResult<AgentRecord> {
    acting_agent(e, caller, AgentId(parse_id("agent", raw)?)).await
}

/// An agent's record, once the caller is found to act for it.
async fn acting_agent(
    e: &Engine<AnyStore>,
    caller: &Caller,
    id: AgentId,
) -> ApiResult<AgentRecord> {
    let record = e.agent(id).await?;
    caller.may_act_as(&record.name)?;
    Ok(record)
}

/// Keep an agent alive.
///
/// Marks the agent alive without claiming or reporting. Every call an agent makes under its id
/// keeps it alive (claims, reports, this); an agent silent for the liveness window (`baton serve
/// --agent-ttl-ms`, 30 s by default) is declared dead and each task it held is handed to another
/// (`agent_lost`). Call this every few seconds while the agent thinks longer than that between
/// calls. Answers the agent as registered; `404 agent_not_found` once the server has forgotten it
/// (register again).
#[utoipa::path(post, path = "/v1/agents/{id}/heartbeat", params(("id" = Uuid, Path)),
    responses((status = 200, body = AgentView)))]
pub async fn agent_heartbeat(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AgentView>> {
    let e = engine(&s);
    let record = own_agent(e, &caller, &id).await?;
    let record = e.agent_keepalive(record.id).await?;
    Ok(Json(agent_view(e, record, true).await?))
}

/// Claim ready tasks (long poll).
#[utoipa::path(post, path = "/v1/agents/{id}/claim", request_body = ClaimBody, params(("id" = Uuid, Path)),
    description = "Assigns up to `max` ready tasks the agent can run and answers them, each with its lease and fencing `token` (send both back with every report). The highest priority goes first; among equal priorities, claims take from each fairness group (a task's `fairness_key`, or its workflow) in turn, up to 32 tasks of a group at a time, each group's tasks in the order they became ready. A task whose named rate limit lacks its units, or whose concurrency key is full, is passed by (its view says why: `waiting.reason` `rate_limited` or `concurrency_full`). With no task ready, the claim waits up to `wait_ms` for one.\n\nWith `start: true` the claim also starts each task it hands out, as a `started` report would, in the same commit: the task is `executing` (`started: true`; its history shows `agent_assigned` then `execution_started`), its start-to-close and heartbeat deadlines run from now (the first heartbeat due within the start timeout, as nothing confirmed that the answer arrived; the history's `execution_started` says `by_claim`), and the agent sends no `started` report. Use it when the agent begins each task as soon as it has it. Only a task with a heartbeat deadline (`timeouts.heartbeat_ms`, 60 s unless set otherwise) is started so: if the answer is lost on its way, or the agent dies before its first heartbeat, that deadline fails the attempt (`timeout_expired`; retried as usual while attempts remain), where an assigned task whose start deadline passes is requeued without spending one. A task without a heartbeat deadline comes back `assigned` (`started: false`) and is started with its `started` report.",
    responses((status = 200, body = Claimed)))]
pub async fn claim(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ClaimBody>,
) -> ApiResult<Json<Claimed>> {
    let e = engine(&s);
    let record = own_agent(e, &caller, &id).await?;
    let tasks = e
        .claim_and(
            record.id,
            body.max.unwrap_or(1),
            Duration::from_millis(body.wait_ms.unwrap_or(0)),
            body.start,
        )
        .await?;
    // The tasks are leased now: an answer lost from here on is taken back by their start
    // deadline, so a failure to read their upstream results is answered as the store's.
    let upstream = e.upstream_of_claimed(&tasks).await?;
    Ok(Json(Claimed {
        tasks: tasks
            .iter()
            .zip(upstream)
            .filter_map(|(t, upstream)| {
                let lease = t.state.lease()?;
                Some(ClaimedTask {
                    task: t.id.0,
                    workflow: t.workflow.0,
                    key: t.spec.key.0.clone(),
                    attempt: t.attempt,
                    lease: lease.id.0,
                    token: lease.token.0,
                    input: t.input().cloned().unwrap_or_default(),
                    deadlines: (&t.deadlines).into(),
                    traceparent: baton_engine::trace::traceparent(t.workflow, t.id),
                    idempotency_key: format!("{}:{}", t.id, t.attempt),
                    capabilities: t.spec.capabilities.clone(),
                    heartbeat_ms: t.spec.timeouts.heartbeat_ms,
                    now: e.now().0,
                    upstream: upstream_view(upstream),
                    started: t.kind() == baton_core::StateKind::Executing,
                    version: t.version,
                })
            })
            .collect(),
    }))
}

fn upstream_view(
    upstream: BTreeMap<baton_core::TaskKey, baton_engine::Upstream>,
) -> BTreeMap<String, UpstreamResult> {
    upstream
        .into_iter()
        .map(|(key, u)| {
            let withheld_bytes = u.result.is_none().then_some(u.bytes);
            (
                key.0,
                UpstreamResult {
                    task: u.task.0,
                    result: u.result,
                    withheld_bytes,
                },
            )
        })
        .collect()
}

/// Read the dependencies' results.
#[utoipa::path(get, path = "/v1/tasks/{id}/upstream", params(("id" = Uuid, Path), UpstreamQuery),
    description = "The results of the task's completed dependencies, by dependency key (a dependency not completed yet is absent). One answer carries at most 4 MiB of results; past that a result is withheld (`result` absent, `withheld_bytes` its size): read it with `key`, which answers that one dependency's result whatever its size. What a claim answer withholds is read the same way.",
    responses((status = 200, body = BTreeMap<String, UpstreamResult>)))]
pub async fn task_upstream(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<UpstreamQuery>,
) -> ApiResult<Json<BTreeMap<String, UpstreamResult>>> {
    let id = TaskId(parse_id("task", &id)?);
    let e = engine(&s);
    let task = e.task(id).await?;
    scope::check_held(&caller, e, &task).await?;
    scope::check_task(&caller, e, &task).await?;
    let key = q.key.map(baton_core::TaskKey);
    if let Some(key) = &key {
        if !task.dependencies.contains(key) {
            // A task may have thousands of dependencies: name a few.
            const NAMED_MAX: usize = 16;
            let deps: Vec<&str> = task
                .dependencies
                .iter()
                .take(NAMED_MAX)
                .map(|k| k.0.as_str())
                .collect();
            let more = task.dependencies.len().saturating_sub(NAMED_MAX);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            return Err(Problem::bad_request(
                "invalid_query",
                format!("`{key}` is not a dependency of task {id}"),
            )
            .field(
                "key",
                format!("a dependency of the task: one of {deps:?}{more}"),
            ));
        }
    }
    let upstream = e.upstream(&task, key.as_ref()).await?;
    Ok(Json(upstream_view(upstream)))
}

// ---- reports --------------------------------------------------------------------------------

async fn report(
    s: &AppState,
    caller: &Caller,
    raw_id: &str,
    agent: Uuid,
    event: Event,
    traceparent: Option<&str>,
) -> ApiResult<Json<ReportAnswer>> {
    let id = TaskId(parse_id("task", raw_id)?);
    let record = acting_agent(engine(s), caller, AgentId(agent)).await?;
    Ok(Json(report_as(s, id, &record, event, traceparent).await?))
}

/// Applies a report from `record`'s agent, whose caller is already authorised.
async fn report_as(
    s: &AppState,
    id: TaskId,
    record: &AgentRecord,
    event: Event,
    traceparent: Option<&str>,
) -> ApiResult<ReportAnswer> {
    let ctx = baton_engine::ReportContext {
        reporter: Some(record),
        traceparent,
    };
    // Boxed: the engine's future is kilobytes, and every handler future holding it inline is
    // copied that much each time it moves (into the router's box, at each await).
    let task = Box::pin(engine(s).report(id, event, ctx)).await?;
    Ok(answer(s, &task))
}

/// Report that work started.
///
/// The agent started working on a task it claimed: `assigned` → `executing`, and the execution
/// deadline (`execution_ms`) and heartbeat deadline (`heartbeat_ms`) start. Carries the lease's
/// `agent` and `token` from the claim (every report does; a report under an older token is `409
/// stale_lease`: the task was reassigned, stop working on it). Safe to resend under the same token.
/// A claim with `start: true` does this in the same call.
#[utoipa::path(post, path = "/v1/tasks/{id}/started", request_body = LeaseReport, params(("id" = Uuid, Path)),
    responses((status = 200, body = ReportAnswer)))]
pub async fn report_started(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<LeaseReport>,
) -> ApiResult<Json<ReportAnswer>> {
    let event = Event::ExecutionStarted {
        by_claim: false,
        agent: AgentId(b.agent),
        token: FencingToken(b.token),
    };
    report(&s, &caller, &id, b.agent, event, b.traceparent.as_deref()).await
}

/// Report progress (heartbeat).
///
/// Says the agent still works on the task, and extends the lease: a task executing without a
/// heartbeat for its `heartbeat_ms` is taken back (`timeout_expired`) and retried. Optionally
/// carries `progress` (any JSON, shown on the task) and the cumulative `usage` so far. Send it well
/// within `heartbeat_ms` (a third of it is a good period); it is always safe to resend. The
/// answer's `cancelled: true` (or `409 task_cancelled`, `task_paused`, `task_skipped`, …) means:
/// stop working on the task.
#[utoipa::path(post, path = "/v1/tasks/{id}/heartbeat", request_body = HeartbeatReport, params(("id" = Uuid, Path)),
    responses((status = 200, body = ReportAnswer)))]
pub async fn report_heartbeat(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<HeartbeatReport>,
) -> ApiResult<Json<ReportAnswer>> {
    let event = Event::Heartbeat {
        usage: b.usage,
        agent: AgentId(b.agent),
        token: FencingToken(b.token),
        progress: b.progress,
    };
    report(&s, &caller, &id, b.agent, event, b.traceparent.as_deref()).await
}

/// Report success with a result.
///
/// The agent's attempt succeeded with `result` (any JSON but `null`, at most `--payload-bytes-max`;
/// larger data as an artifact): the task completes, its dependents whose dependencies have all
/// completed are released, and their agents are handed this result in `upstream`. Carries the
/// lease's `agent` and `token`; resending the same result under the same token answers as before
/// (safe to resend), a different result is `409 conflict`.
#[utoipa::path(post, path = "/v1/tasks/{id}/succeeded", request_body = SuccessReport, params(("id" = Uuid, Path)),
    responses((status = 200, body = ReportAnswer)))]
pub async fn report_succeeded(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<SuccessReport>,
) -> ApiResult<Json<ReportAnswer>> {
    let event = Event::ExecutionSucceeded {
        usage: b.usage,
        agent: AgentId(b.agent),
        token: FencingToken(b.token),
        result: Some(b.result),
    };
    report(&s, &caller, &id, b.agent, event, b.traceparent.as_deref()).await
}

/// Report a failure.
///
/// The agent's attempt failed: `error.kind`, `error.message`, and `retryable` (default true). A
/// retryable failure with attempts left is retried after the task's backoff (it goes back to
/// `pending` at `retry_at`, handed to any capable agent); otherwise the task fails for good, its
/// dependents are cancelled and its compensation runs. Carries the lease's `agent` and `token` like
/// every report; resending the same failure under the same token answers as before (safe to
/// resend), a different one is `409 conflict`.
#[utoipa::path(post, path = "/v1/tasks/{id}/failed", request_body = FailureReport, params(("id" = Uuid, Path)),
    responses((status = 200, body = ReportAnswer)))]
pub async fn report_failed(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<FailureReport>,
) -> ApiResult<Json<ReportAnswer>> {
    let event = Event::ExecutionFailed {
        usage: b.usage,
        agent: AgentId(b.agent),
        token: FencingToken(b.token),
        error: b.error,
    };
    report(&s, &caller, &id, b.agent, event, b.traceparent.as_deref()).await
}

/// Give a task back.
///
/// The agent gives the task back without trying it (it is shutting down, or cannot run it now): the
/// lease ends and the task is `pending` again at once, its attempt not counted. Safe to resend: a
/// lease already released answers `409 stale_lease`, which an agent that released can ignore.
#[utoipa::path(post, path = "/v1/tasks/{id}/released", request_body = LeaseReport, params(("id" = Uuid, Path)),
    responses((status = 200, body = ReportAnswer)))]
pub async fn report_released(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<LeaseReport>,
) -> ApiResult<Json<ReportAnswer>> {
    let event = Event::AssignmentReleased {
        agent: AgentId(b.agent),
        token: FencingToken(b.token),
    };
    report(&s, &caller, &id, b.agent, event, b.traceparent.as_deref()).await
}

/// Send many reports at once.
///
/// Reports of any kind (`started`, `heartbeat`, `succeeded`, `failed`, `released`), on any tasks,
/// by any agents the caller may act as, in one request: each is exactly the report its own
/// request (`POST /v1/tasks/{task}/{report}`) would be, applied as its own transition with its own
/// history entry, and answered on its own in `answers`, in the order sent: `status` 200 with the
/// `answer`, or the status and `problem` (`stale_lease`, `task_cancelled`, `not_accepted`,
/// `task_not_found`, `agent_not_found`, `forbidden`, `invalid_field` naming `reports[i].…`, …)
/// that request would have got. One report's refusal changes nothing of the others. Reports on
/// one task are applied in their order (a `started` then a `succeeded` may travel together); the
/// rest are applied at once and usually share one commit. Each is safe to resend as its own is.
/// The request as a whole is refused only when it is not a batch (`422`) or the caller may not
/// report at all.
#[utoipa::path(post, path = "/v1/reports", request_body = ReportBatch,
    responses((status = 200, body = ReportBatchAnswer)))]
pub async fn send_reports(
    AxState(s): St,
    caller: Caller,
    ApiJson(batch): ApiJson<ReportBatch>,
) -> ApiResult<Json<ReportBatchAnswer>> {
    if batch.reports.is_empty() || batch.reports.len() > baton_api::REPORTS_PER_BATCH_MAX {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "a batch carries 1 to 256 reports",
        )
        .field("reports", "1 to 256 reports"));
    }
    // One chain per task, its reports in their order; the chains run at once.
    let mut chains: BTreeMap<Uuid, Vec<(usize, baton_api::Report)>> = BTreeMap::new();
    for (i, report) in batch.reports.into_iter().enumerate() {
        chains.entry(report.task()).or_default().push((i, report));
    }
    let count = chains.values().map(Vec::len).sum();
    // Each agent of the batch is read and authorised once, not once per report.
    let agents: BTreeSet<Uuid> = chains.values().flatten().map(|(_, r)| r.agent()).collect();
    let mut reporters: HashMap<Uuid, ApiResult<AgentRecord>> = HashMap::new();
    for agent in agents {
        let found = acting_agent(engine(&s), &caller, AgentId(agent)).await;
        reporters.insert(agent, found);
    }
    let s = &s;
    let reporters = &reporters;
    let answered = futures_util::future::join_all(chains.into_values().map(|chain| async move {
        let mut answers = Vec::with_capacity(chain.len());
        for (i, report) in chain {
            let task = report.task();
            let outcome = match one_report(s, &reporters[&report.agent()], report).await {
                Ok(answer) => ReportOutcome {
                    task,
                    status: StatusCode::OK.as_u16(),
                    answer: Some(answer),
                    problem: None,
                },
                Err(mut p) => {
                    p.field = Some(match p.field.take() {
                        Some(f) => format!("reports[{i}].{f}"),
                        None => format!("reports[{i}]"),
                    });
                    ReportOutcome {
                        task,
                        status: p.status,
                        answer: None,
                        problem: Some(ProblemDoc::clone(&p)),
                    }
                }
            };
            answers.push((i, outcome));
        }
        answers
    }))
    .await;
    let mut answers: Vec<Option<ReportOutcome>> = (0..count).map(|_| None).collect();
    for (i, outcome) in answered.into_iter().flatten() {
        answers[i] = Some(outcome);
    }
    Ok(Json(ReportBatchAnswer {
        answers: answers.into_iter().flatten().collect(),
    }))
}

/// One report of a batch, as its own request would apply it.
async fn one_report(
    s: &AppState,
    reporter: &ApiResult<AgentRecord>,
    sent: baton_api::Report,
) -> ApiResult<ReportAnswer> {
    use baton_api::Report as R;
    let record = reporter.as_ref().map_err(Problem::clone)?;
    let task = TaskId(sent.task());
    let (event, traceparent) = match sent {
        R::Started {
            agent,
            token,
            traceparent,
            ..
        } => (
            Event::ExecutionStarted {
                by_claim: false,
                agent: AgentId(agent),
                token: FencingToken(token),
            },
            traceparent,
        ),
        R::Heartbeat {
            agent,
            token,
            progress,
            usage,
            traceparent,
            ..
        } => (
            Event::Heartbeat {
                usage,
                agent: AgentId(agent),
                token: FencingToken(token),
                progress,
            },
            traceparent,
        ),
        R::Succeeded {
            agent,
            token,
            result,
            usage,
            traceparent,
            ..
        } => (
            Event::ExecutionSucceeded {
                usage,
                agent: AgentId(agent),
                token: FencingToken(token),
                result: Some(result),
            },
            traceparent,
        ),
        R::Failed {
            agent,
            token,
            error,
            usage,
            traceparent,
            ..
        } => (
            Event::ExecutionFailed {
                usage,
                agent: AgentId(agent),
                token: FencingToken(token),
                error,
            },
            traceparent,
        ),
        R::Released {
            agent,
            token,
            traceparent,
            ..
        } => (
            Event::AssignmentReleased {
                agent: AgentId(agent),
                token: FencingToken(token),
            },
            traceparent,
        ),
    };
    report_as(s, task, record, event, traceparent.as_deref()).await
}

/// Add sub-tasks (decomposition).
///
/// An agent running a task splits it: the new tasks join the workflow, and the reporting task now
/// also depends on them, finishing only once they have completed (it is handed back to an agent
/// then, with their results in `upstream`). Carries the lease's `agent` and `token`; each sub-task
/// is a task spec like those of `POST /v1/workflows`, its dependencies among the workflow's keys. A
/// sub-task waiting for a signal is how an agent asks a person for approval mid-run.
#[utoipa::path(post, path = "/v1/tasks/{id}/subtasks", request_body = SubtasksReport, params(("id" = Uuid, Path)),
    responses((status = 201, body = WorkflowCreated)))]
pub async fn add_subtasks(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<SubtasksReport>,
) -> ApiResult<Response> {
    let id = TaskId(parse_id("task", &id)?);
    let e = engine(&s);
    let record = e.agent(AgentId(b.agent)).await?;
    caller.may_act_as(&record.name)?;
    let parent = e.task(id).await?;
    let added = e
        .add_subtasks(id, AgentId(b.agent), FencingToken(b.token), b.tasks)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WorkflowCreated {
            workflow: parent.workflow.0,
            created: true,
            tasks: added.into_iter().map(|(k, id)| (k.0, id.0)).collect(),
        }),
    )
        .into_response())
}

// ---- events and documents -------------------------------------------------------------------

/// Stream transitions (Server-Sent Events).
///
/// Every transition as it commits, as Server-Sent Events: event `transition` (a
/// `TransitionEventView`) for each task's move, event `workflow` (a `WorkflowEventView`) when a
/// workflow ends, each with an `id` of `NODE-SEQ`. Filtered to one workflow with `workflow`.
/// Reconnect with `Last-Event-ID` to resume after the last event seen on that node; events from
/// before it may be missed across nodes or after a restart, so a client re-reads the state (GET
/// /v1/tasks) on reconnecting. A comment line every 15 s keeps idle connections open. The stream
/// never ends by itself, has no request deadline, and takes one of the caller's role's stream slots
/// while open (`503 too_many_subscribers` when none is left).
#[utoipa::path(get, path = "/v1/events", params(EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (the `id` of the last `transition` received): the transitions since then that this node still keeps are sent first")),
    responses((status = 200, description = "Server-Sent Events: `transition` events (id `NODE-SEQ`) carrying a TransitionEvent as JSON; `lagged` (data: how many were skipped, 0 when unknown) when some transitions were missed: re-read the state; `workflow` when a workflow ends (every task of it ended; data `{\"workflow\", \"status\": \"completed\" | \"failed\" | \"cancelled\", \"at\"}`, not numbered and not resent on a resume: read `GET /v1/workflows/{id}` for its result)", content_type = "text/event-stream")))]
pub async fn events(
    AxState(s): St,
    caller: Caller,
    headers: axum::http::HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let permit = s.guards.sse_slot(caller.role())?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_event_id);
    let sub = engine(&s).subscribe_from(after);
    let workflows = engine(&s).subscribe_workflows();
    if let Some(workflow) = q.workflow {
        scope::check_workflow(&caller, engine(&s), WorkflowId(workflow)).await?;
    }
    let stream = EventStream {
        workflows,
        node: engine(&s).node(),
        filter: q.workflow.map(WorkflowId),
        scope: caller
            .is_scoped()
            .then(|| (caller, engine(&s).clone(), scope::ScopeCache::new())),
        pending: sub.backlog.into(),
        expected: sub.expected,
        // A position that cannot be resumed is reported at once.
        unknown: after.is_some() && sub.expected.is_none(),
        live: sub.live,
        _permit: permit,
    };
    let stopped = Box::pin(engine(&s).stopped());
    let stream =
        futures_util::stream::unfold((stream, stopped), |(mut st, mut stopped)| async move {
            let sse = st.next(&mut stopped).await?;
            Some((Ok(sse), (st, stopped)))
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `NODE-SEQ`, as set on each `transition` event.
fn parse_event_id(id: &str) -> Option<baton_engine::StreamPosition> {
    let (node, seq) = id.trim().split_once('-')?;
    Some(baton_engine::StreamPosition {
        node: Uuid::try_parse(node).ok()?,
        seq: seq.parse().ok()?,
    })
}

/// One subscriber's stream: the backlog, then live transitions; `lagged` where some are
/// missing.
struct EventStream {
    node: Uuid,
    filter: Option<WorkflowId>,
    /// For a scoped caller: only its workflows' transitions and ends are sent.
    scope: Option<(Caller, Engine<AnyStore>, scope::ScopeCache)>,
    pending: std::collections::VecDeque<baton_engine::TransitionEvent>,
    /// The `seq` the next transition should have; `None` after a loss of unknown size.
    expected: Option<u64>,
    /// The position asked for could not be resumed: say so first.
    unknown: bool,
    live: tokio::sync::broadcast::Receiver<baton_engine::TransitionEvent>,
    /// Workflows ending (not numbered: they are not resumed).
    workflows: tokio::sync::broadcast::Receiver<baton_engine::WorkflowEvent>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl EventStream {
    async fn next(
        &mut self,
        stopped: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) -> Option<SseEvent> {
        if std::mem::take(&mut self.unknown) {
            return Some(lagged(0));
        }
        loop {
            let ev = match self.pending.pop_front() {
                Some(ev) => ev,
                None => {
                    // In this order: a workflow's end is announced after the transition
                    // that ended it was published, so a subscriber hears that first.
                    let next = tokio::select! {
                        biased;
                        _ = &mut *stopped => return None,
                        next = self.live.recv() => next,
                        ended = self.workflows.recv() => match ended {
                            Ok(w) if self.filter.is_none_or(|f| f == w.workflow) => {
                                if !self.sees(w.workflow).await {
                                    continue;
                                }
                                let data = serde_json::to_string(&w).unwrap_or_default();
                                return Some(SseEvent::default().event("workflow").data(data));
                            }
                            Ok(_) | Err(RecvError::Lagged(_)) => continue,
                            Err(RecvError::Closed) => return None,
                        },
                    };
                    match next {
                        Ok(ev) => ev,
                        Err(RecvError::Lagged(n)) => {
                            self.expected = None;
                            return Some(lagged(n));
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            };
            if let Some(expected) = self.expected.filter(|&x| ev.seq > x) {
                self.expected = None;
                let skipped = ev.seq - expected;
                self.pending.push_front(ev);
                return Some(lagged(skipped));
            }
            self.expected = Some(ev.seq + 1);
            if self.filter.is_some_and(|w| w != ev.workflow) || !self.sees(ev.workflow).await {
                continue;
            }
            let data = serde_json::to_string(&ev).unwrap_or_default();
            return Some(
                SseEvent::default()
                    .event("transition")
                    .id(format!("{}-{}", self.node.simple(), ev.seq))
                    .data(data),
            );
        }
    }
}

impl EventStream {
    /// Whether the subscriber may see this workflow's events (a scoped one, only its
    /// workflows'; one that cannot be looked up is not sent).
    async fn sees(&mut self, workflow: WorkflowId) -> bool {
        match &mut self.scope {
            None => true,
            Some((caller, e, cache)) => cache.sees(caller, e, workflow).await.unwrap_or(false),
        }
    }
}

fn lagged(skipped: u64) -> SseEvent {
    SseEvent::default()
        .event("lagged")
        .data(skipped.to_string())
}

/// Read the lifecycle's rules.
///
/// The task lifecycle table, from the engine's own rules: every state, event and transition with
/// its guards. `format=json` (the default) lists the rules; `mermaid` and `dot` answer a diagram's
/// source as `text/plain`. Public: no token needed.
#[utoipa::path(get, path = "/v1/lifecycle", params(LifecycleQuery),
    responses((status = 200, description = "the lifecycle: a Mermaid (`format=mermaid`, the default) or DOT (`format=dot`) diagram as text, or the rules as JSON (`format=json`)",
        content((Vec<LifecycleRule> = "application/json"), (String = "text/plain")))))]
pub async fn lifecycle(ApiQuery(q): ApiQuery<LifecycleQuery>) -> ApiResult<Response> {
    let format = match q.format.as_deref() {
        None | Some("mermaid") => baton_core::DiagramFormat::Mermaid,
        Some("dot") => baton_core::DiagramFormat::Dot,
        Some("json") => {
            let rules: Vec<LifecycleRule> = baton_core::DEFAULT
                .rules
                .iter()
                .map(|r| LifecycleRule {
                    from: r.from,
                    event: r.event,
                    guards: r.guards.iter().map(|g| g.to_string()).collect(),
                    to: r.to,
                    effects: r.effects.iter().map(|e| format!("{e:?}")).collect(),
                    reopens: r.reopens,
                })
                .collect();
            return Ok(Json(rules).into_response());
        }
        Some(other) => {
            return Err(
                Problem::bad_request("invalid_query", format!("unknown format `{other}`"))
                    .field("format", "mermaid, dot or json"),
            )
        }
    };
    Ok(baton_core::DEFAULT.diagram(format).into_response())
}

/// `GET /metrics`: Prometheus metrics in the OpenMetrics text format.
pub async fn metrics(AxState(s): St, caller: Caller) -> ApiResult<Response> {
    if caller.is_scoped() {
        return Err(scope::out_of_scope(format!(
            "token `{}` is scoped to labels, and metrics are about every workflow",
            caller.actor()
        )));
    }
    let text = engine(&s).metrics_text().await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Where a task stands, stamped with the server's clock.
fn answer(s: &AppState, task: &Task) -> ReportAnswer {
    let mut a = ReportAnswer::from(task);
    a.now = engine(s).now().0;
    a
}

fn counts_view(c: baton_engine::read::StateCounts) -> Counts {
    Counts {
        blocked: c.get(StateKind::Blocked),
        pending: c.get(StateKind::Pending),
        assigned: c.get(StateKind::Assigned),
        executing: c.get(StateKind::Executing),
        completed: c.get(StateKind::Completed),
        failed: c.get(StateKind::Failed),
        cancelled: c.get(StateKind::Cancelled),
        total: c.total(),
        paused: c.paused(),
        retrying: c.retrying(),
    }
}

// ---- operators in control -------------------------------------------------------------------

/// The operator's action, recorded under the caller's token's name.
fn operator(caller: &Caller, reason: String) -> ApiResult<Operator> {
    Ok(Operator::new(caller.actor(), reason)?)
}

/// Pause a task.
#[utoipa::path(post, path = "/v1/tasks/{id}/pause", request_body = PauseBody, params(("id" = Uuid, Path, description = "task id")),
    description = "Pauses the task: no agent is handed it and its timers (deadlines, a scheduled retry, a delay) stand still until it is resumed. An agent already running it finishes, unless `now` takes it back: its lease is revoked and its next report is refused with `task_paused`. A task that has ended cannot be paused (409). Requires a `reason`, recorded in the audit log with the caller's token name.",
    responses((status = 200, body = ReportAnswer)))]
pub async fn pause_task(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PauseBody>,
) -> ApiResult<Json<ReportAnswer>> {
    let id = TaskId(parse_id("task", &id)?);
    scope::check_task_id(&caller, engine(&s), id).await?;
    let op = operator(&caller, body.reason)?;
    let task = engine(&s).pause_task(id, op, body.now).await?;
    Ok(Json(answer(&s, &task)))
}

/// Resume a paused task.
#[utoipa::path(post, path = "/v1/tasks/{id}/resume", request_body = ResumeBody, params(("id" = Uuid, Path, description = "task id")),
    description = "Resumes a paused task: it can be handed to agents again, and each of its timers fires with the time it had left when the pause stopped it.",
    responses((status = 200, body = ReportAnswer)))]
pub async fn resume_task(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResumeBody>,
) -> ApiResult<Json<ReportAnswer>> {
    let id = TaskId(parse_id("task", &id)?);
    scope::check_task_id(&caller, engine(&s), id).await?;
    let op = operator(&caller, body.reason)?;
    let task = engine(&s).resume_task(id, op).await?;
    Ok(Json(answer(&s, &task)))
}

/// Skip a task with a result.
#[utoipa::path(post, path = "/v1/tasks/{id}/skip", request_body = SkipBody, params(("id" = Uuid, Path, description = "task id")),
    description = "Completes the task with the operator's `result` in place of an agent (a person did the work, or it is not needed): its dependents proceed with that result. Works on a blocked, pending, assigned, executing (its lease is revoked) or failed task; a failed-for-good task's cancelled dependents come back. A later report from the agent that held it is refused with `task_skipped`. A completed or cancelled task cannot be skipped (409).",
    responses((status = 200, body = ReportAnswer)))]
pub async fn skip_task(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SkipBody>,
) -> ApiResult<Json<ReportAnswer>> {
    let id = TaskId(parse_id("task", &id)?);
    scope::check_task_id(&caller, engine(&s), id).await?;
    let op = operator(&caller, body.reason)?;
    let task = engine(&s).skip_task(id, op, body.result).await?;
    Ok(Json(answer(&s, &task)))
}

/// Fail a task for good.
#[utoipa::path(post, path = "/v1/tasks/{id}/fail", request_body = FailBody, params(("id" = Uuid, Path, description = "task id")),
    description = "Fails the task for good: no retry follows, its dependents are cancelled, its compensation runs. An agent holding it loses its lease; its later reports are refused with `task_failed_by_operator`. An operator's retry (`POST /v1/tasks/{id}/retry`) can reopen it.",
    responses((status = 200, body = ReportAnswer)))]
pub async fn fail_task(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FailBody>,
) -> ApiResult<Json<ReportAnswer>> {
    let id = TaskId(parse_id("task", &id)?);
    scope::check_task_id(&caller, engine(&s), id).await?;
    let op = operator(&caller, body.reason)?;
    let task = engine(&s).fail_task(id, op, body.error).await?;
    Ok(Json(answer(&s, &task)))
}

/// Rerun a task and what follows it.
#[utoipa::path(post, path = "/v1/tasks/{id}/rerun", request_body = RerunBody, params(("id" = Uuid, Path, description = "task id")),
    description = "Reruns the task and everything downstream of it: each is reopened (its history is kept, with a new `reopened` entry), waits for its dependencies again and runs with fresh attempts; agents still running any of them lose their leases (`task_rerun`). Tasks upstream keep their results. `input` replaces the task's own input. It all commits together or not at all. `dry_run` lists what would rerun and changes nothing. A `for_each` on the way that has expanded expands anew once its dependencies complete: its items are superseded now (listed in `superseded`) and its next expansion reopens those its new list still has, with their new input (a rerun from one of its items keeps the others and gathers them again). Sub-tasks that tasks of the rerun added are superseded too; a task adding one again under its key (same spec but for its input) reopens it.",
    responses((status = 200, body = RerunAnswer)))]
pub async fn rerun_task(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RerunBody>,
) -> ApiResult<Json<RerunAnswer>> {
    let id = TaskId(parse_id("task", &id)?);
    scope::check_task_id(&caller, engine(&s), id).await?;
    let op = operator(&caller, body.reason)?;
    let plan = engine(&s).rerun(id, op, body.input, body.dry_run).await?;
    let view = |ts: Vec<baton_engine::RerunTask>| {
        ts.into_iter()
            .map(|t| RerunTaskView {
                id: t.id.0,
                key: t.key.0,
                state: t.state,
            })
            .collect()
    };
    Ok(Json(RerunAnswer {
        applied: plan.applied,
        tasks: view(plan.tasks),
        superseded: view(plan.superseded),
    }))
}

/// Pause a workflow.
#[utoipa::path(post, path = "/v1/workflows/{id}/pause", request_body = PauseBody, params(("id" = Uuid, Path, description = "workflow id")),
    description = "Pauses every task of the workflow that has not ended (as `POST /v1/tasks/{id}/pause`, `now` included) and marks the workflow paused: tasks created in it later (sub-tasks, a fan-out's items, compensation) start paused.",
    responses((status = 200, body = WorkflowControlAnswer)))]
pub async fn pause_workflow(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PauseBody>,
) -> ApiResult<Json<WorkflowControlAnswer>> {
    let id = WorkflowId(parse_id("workflow", &id)?);
    scope::check_workflow(&caller, engine(&s), id).await?;
    let op = operator(&caller, body.reason)?;
    let n = engine(&s).pause_workflow(id, op, body.now).await?;
    Ok(Json(WorkflowControlAnswer {
        workflow: id.0,
        tasks_changed: n,
    }))
}

/// Resume a workflow.
#[utoipa::path(post, path = "/v1/workflows/{id}/resume", request_body = ResumeBody, params(("id" = Uuid, Path, description = "workflow id")),
    description = "Resumes every paused task of the workflow (those paused one by one too) and clears its pause.",
    responses((status = 200, body = WorkflowControlAnswer)))]
pub async fn resume_workflow(
    AxState(s): St,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ResumeBody>,
) -> ApiResult<Json<WorkflowControlAnswer>> {
    let id = WorkflowId(parse_id("workflow", &id)?);
    scope::check_workflow(&caller, engine(&s), id).await?;
    let op = operator(&caller, body.reason)?;
    let n = engine(&s).resume_workflow(id, op).await?;
    Ok(Json(WorkflowControlAnswer {
        workflow: id.0,
        tasks_changed: n,
    }))
}

/// Most audit entries in one page.
const AUDIT_PAGE_MAX: usize = 1000;

/// Read the audit log.
#[utoipa::path(get, path = "/v1/audit", params(AuditQuery),
    description = "Every operator action (pause, resume, skip, fail, rerun, cancel, retry, signal), newest first: who (the token's name), what, on which workflow or task, why, and what it changed. Page with `before` = the previous page's `next`.",
    responses((status = 200, body = AuditPage)))]
pub async fn audit(
    AxState(s): St,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    match q.workflow.map(WorkflowId) {
        Some(workflow) => scope::check_workflow(&caller, engine(&s), workflow).await?,
        None if caller.is_scoped() => {
            return Err(scope::out_of_scope(format!(
                "token `{}` is scoped to labels: it reads the audit log per workflow \
                 (`?workflow=ID`), not over every workflow",
                caller.actor()
            )))
        }
        None => {}
    }
    // Times are kept as signed 64-bit milliseconds: a later one is no time at all.
    for (field, at) in [("since", q.since), ("until", q.until)] {
        if at.is_some_and(|t| t > Timestamp::NEVER.0) {
            return Err(Problem::bad_request(
                "invalid_query",
                format!("`{field}` is past the latest time there is"),
            )
            .field(
                field,
                format!("ms since the epoch, at most {}", Timestamp::NEVER.0),
            ));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > AUDIT_PAGE_MAX {
        return Err(Problem::bad_request(
            "invalid_query",
            format!("`limit` must be 1 to {AUDIT_PAGE_MAX}"),
        )
        .field("limit", format!("1 to {AUDIT_PAGE_MAX}")));
    }
    let entries = engine(&s)
        .audit(AuditFilter {
            actor: q.actor,
            workflow: q.workflow.map(WorkflowId),
            action: q.action,
            since: q.since.map(Timestamp),
            until: q.until.map(Timestamp),
            before: q.before,
            limit,
        })
        .await?;
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|e| AuditEntryView {
                id: e.id,
                at: e.at.0,
                actor: e.actor,
                action: e.action,
                workflow: e.workflow.map(|w| w.0),
                task: e.task.map(|t| t.0),
                reason: e.reason,
                detail: serde_json::from_str(&e.detail).unwrap_or(Value::Null),
            })
            .collect(),
        next,
    }))
}
