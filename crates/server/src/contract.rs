//! What each operation may answer, in one place: every problem [`Code`] with its status and
//! meaning, and which of them each operation can produce ([`answers`]): the codes every
//! operation shares, those that follow from what it reads (a JSON body, a query string, an id
//! in its path), and the few of its own ([`OWN`]). The OpenAPI document lists them per
//! operation and status ([`document`]), each status's schema naming its codes as an `enum`, so
//! that a client can switch on `code` knowing the list is whole.
//!
//! In debug builds (every test run), [`check`] holds the server to it: an answer whose status,
//! or whose problem code, the document does not list for its route becomes a `500
//! undocumented_answer` saying what was missing, so that any test reaching it fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use crate::auth::{self, Need};
use crate::problem::{Problem, ProblemCode};

/// A problem `code`, the status it comes with, and what it means to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Code {
    pub status: u16,
    pub code: &'static str,
    pub meaning: &'static str,
}

const fn code(status: u16, code: &'static str, meaning: &'static str) -> Code {
    Code {
        status,
        code,
        meaning,
    }
}

// 400
const MALFORMED_JSON: Code = code(400, "malformed_json", "the body is not JSON (or not UTF-8)");
const UNREADABLE_BODY: Code = code(400, "unreadable_body", "the body could not be read");
const INVALID_QUERY: Code = code(
    400,
    "invalid_query",
    "a query parameter is unknown or does not parse (`field` names it)",
);
const INVALID_ID: Code = code(
    400,
    "invalid_id",
    "the id in the path is not an id of that kind (UUID)",
);
const INVALID_HEADER: Code = code(
    400,
    "invalid_header",
    "the `Idempotency-Key` header is not 1 to 256 visible ASCII characters",
);
const INVALID_DIGEST: Code = code(
    400,
    "artifact_ref_invalid",
    "the artifact in the path is not `sha256:<64 hex>` (or the bare hex)",
);
const INVALID_CONTENT_TYPE: Code = code(
    400,
    "invalid_content_type",
    "the artifact's `Content-Type` is not printable ASCII of at most 255 bytes",
);
const BODY_UNREADABLE: Code = code(400, "body_unreadable", "the upload was cut short");
// 401, 403
const UNAUTHORIZED: Code = code(
    401,
    "unauthorized",
    "no valid token: send one as `Authorization: Bearer <token>`",
);
const FORBIDDEN: Code = code(
    403,
    "forbidden",
    "the token's role may not do this, or an agent token acts for an agent it does not name",
);
const OUT_OF_SCOPE: Code = code(
    403,
    "out_of_scope",
    "the token is scoped to labels this request would leave",
);
const HOST_NOT_LOOPBACK: Code = code(
    403,
    "host_not_loopback",
    "no tokens are configured and `Host` is not a loopback name (DNS rebinding)",
);
const CROSS_SITE_ORIGIN: Code = code(
    403,
    "cross_site_origin",
    "no tokens are configured and `Origin` is a web page of another site",
);
// 404
const TASK_NOT_FOUND: Code = code(
    404,
    "task_not_found",
    "no such task (or not in the token's scope)",
);
const WORKFLOW_NOT_FOUND: Code = code(
    404,
    "workflow_not_found",
    "no such workflow (or not in the token's scope)",
);
const AGENT_NOT_FOUND: Code = code(
    404,
    "agent_not_found",
    "no such agent: register it (POST /v1/agents)",
);
const SCHEDULE_NOT_FOUND: Code = code(404, "schedule_not_found", "no schedule has this name");
const TRIGGER_NOT_FOUND: Code = code(404, "trigger_not_found", "no trigger has this name");
const LIMIT_NOT_FOUND: Code = code(404, "limit_not_found", "no limit has this key");
const ARTIFACT_NOT_FOUND: Code = code(404, "artifact_not_found", "no artifact has this digest");
// 408
const BODY_TIMEOUT: Code = code(
    408,
    "body_timeout",
    "the body stopped arriving (`baton serve --body-timeout`)",
);
// 409
const NOT_ACCEPTED: Code = code(
    409,
    "not_accepted",
    "the lifecycle does not accept this event in the task's state (`state` says which; GET /v1/lifecycle)",
);
const GUARD_FAILED: Code = code(
    409,
    "guard_failed",
    "a guard of the transition does not hold (`rule` names it), such as attempts left to retry",
);
const STALE_LEASE: Code = code(
    409,
    "stale_lease",
    "the lease is not the task's current one: the task was reassigned; stop working on it",
);
const CONFLICT: Code = code(
    409,
    "conflict",
    "the request conflicts with the task's state",
);
const TASK_SKIPPED: Code = code(
    409,
    "task_skipped",
    "an operator skipped the task: stop working on it",
);
const TASK_FAILED_BY_OPERATOR: Code = code(
    409,
    "task_failed_by_operator",
    "an operator failed the task: stop working on it",
);
const TASK_RERUN: Code = code(
    409,
    "task_rerun",
    "an operator reran the task: stop working on it",
);
const TASK_SUPERSEDED: Code = code(
    409,
    "task_superseded",
    "the task was superseded (its workflow's branch was rerun): stop working on it",
);
const TASK_CANCELLED: Code = code(
    409,
    "task_cancelled",
    "the task was cancelled: stop working on it",
);
const TASK_PAUSED: Code = code(
    409,
    "task_paused",
    "an operator paused the task: stop working on it",
);
const IDEMPOTENCY_MISMATCH: Code = code(
    409,
    "idempotency_mismatch",
    "the `Idempotency-Key` was used before with a different request",
);
const BUDGET_REACHED: Code = code(409, "budget_reached", "the workflow's budget is spent");
const SCHEDULE_EXISTS: Code = code(409, "schedule_exists", "a schedule has this name already");
// 413
const BODY_TOO_LARGE: Code = code(413, "body_too_large", "the body is larger than 8 MiB");
const PAYLOAD_TOO_LARGE: Code = code(
    413,
    "payload_too_large",
    "a payload is larger than `baton serve --payload-bytes-max` (`field` names it): put large data in an artifact",
);
const RESULT_TOO_LARGE: Code = code(
    413,
    "result_too_large",
    "the result is larger than `baton serve --payload-bytes-max`: put large data in an artifact",
);
const ARTIFACT_TOO_LARGE: Code = code(
    413,
    "artifact_too_large",
    "the artifact is larger than `baton serve --artifact-bytes-max`",
);
// 415
const UNSUPPORTED_MEDIA_TYPE: Code = code(
    415,
    "unsupported_media_type",
    "send the body as JSON with `Content-Type: application/json`",
);
// 422
const INVALID_FIELD: Code = code(
    422,
    "invalid_field",
    "a field is missing or invalid: `field` names it, `expected` says what fits",
);
const DUPLICATE_TASK: Code = code(422, "duplicate_task", "two tasks have the same key");
const UNKNOWN_DEPENDENCY: Code = code(
    422,
    "unknown_dependency",
    "a task depends on a key no task has",
);
const DUPLICATE_DEPENDENCY: Code = code(
    422,
    "duplicate_dependency",
    "a task lists a dependency twice",
);
const CYCLE: Code = code(
    422,
    "cycle",
    "the dependencies form a cycle (`cycle` lists it)",
);
const TOO_MANY_TASKS: Code = code(422, "too_many_tasks", "more tasks than a workflow may hold");
const ARTIFACT_MISSING: Code = code(
    422,
    "artifact_not_found",
    "a payload refers to an artifact never uploaded (PUT /v1/artifacts)",
);
const ARTIFACT_REF_INVALID: Code = code(
    422,
    "artifact_ref_invalid",
    "a `{\"$artifact\": …}` reference is not `sha256:<64 hex>`",
);
const TOO_MANY_WORKFLOWS: Code = code(
    422,
    "too_many_workflows",
    "the token's scope covers too many workflows to add up: ask per workflow",
);
// 429
const RATE_LIMITED: Code = code(
    429,
    "rate_limited",
    "over the token's request rate (`baton serve --rate-per-token`): wait `Retry-After` seconds",
);
const AGENTS_PER_TOKEN_MAX: Code = code(
    429,
    "agents_per_token_max_reached",
    "the token has registered as many agents as it may (`baton serve --agents-per-token-max`)",
);
const AGENTS_MAX: Code = code(
    429,
    "agents_max_reached",
    "the agent token has as many agents online as its `agents_max`",
);
// 503
const OVERLOADED: Code = code(
    503,
    "overloaded",
    "too many requests in flight (`baton serve --requests-max`, `--claims-max`): retry after `Retry-After` seconds",
);
const DEADLINE_EXCEEDED: Code = code(
    503,
    "deadline_exceeded",
    "past the request's deadline (`baton serve --request-timeout`); it may have been applied: resend it",
);
const CONTENDED: Code = code(
    503,
    "contended",
    "the store was contended: retry after `Retry-After` seconds",
);
const STORE_UNAVAILABLE: Code = code(503, "store_unavailable", "the store failed: retry later");
const SHUTTING_DOWN: Code = code(
    503,
    "shutting_down",
    "the server is stopping: try another node or later",
);
const TOO_MANY_SUBSCRIBERS: Code = code(
    503,
    "too_many_subscribers",
    "every event-stream slot of the caller's role is taken: retry after `Retry-After` seconds",
);

/// What a task's lifecycle refuses to an operator's control.
const CONTROL_REFUSED: &[Code] = &[NOT_ACCEPTED, GUARD_FAILED, CONFLICT, TASK_CANCELLED];
/// What an agent's report may be told: the lifecycle's refusals, and that an operator took the
/// task away.
const REPORT_REFUSED: &[Code] = &[
    AGENT_NOT_FOUND,
    NOT_ACCEPTED,
    GUARD_FAILED,
    STALE_LEASE,
    CONFLICT,
    TASK_CANCELLED,
    TASK_SKIPPED,
    TASK_FAILED_BY_OPERATOR,
    TASK_RERUN,
    TASK_SUPERSEDED,
    TASK_PAUSED,
];
/// What a new workflow's graph and payloads may be refused for.
const GRAPH_REFUSED: &[Code] = &[
    DUPLICATE_TASK,
    UNKNOWN_DEPENDENCY,
    DUPLICATE_DEPENDENCY,
    CYCLE,
    TOO_MANY_TASKS,
    PAYLOAD_TOO_LARGE,
    ARTIFACT_MISSING,
    ARTIFACT_REF_INVALID,
];
/// A payload carried in a request (a result, progress, signal data).
const PAYLOAD_REFUSED: &[Code] = &[PAYLOAD_TOO_LARGE, ARTIFACT_MISSING, ARTIFACT_REF_INVALID];

/// The codes an operation has on top of what [`answers`] derives, by route.
const OWN: &[(Method, &str, &[&[Code]])] = &[
    (
        Method::POST,
        "/v1/workflows",
        &[
            GRAPH_REFUSED,
            &[INVALID_HEADER, IDEMPOTENCY_MISMATCH, OUT_OF_SCOPE],
        ],
    ),
    (
        Method::POST,
        "/v1/tasks",
        &[
            GRAPH_REFUSED,
            &[INVALID_HEADER, IDEMPOTENCY_MISMATCH, OUT_OF_SCOPE],
        ],
    ),
    (
        Method::POST,
        "/v1/tasks/{id}/subtasks",
        &[GRAPH_REFUSED, REPORT_REFUSED, &[BUDGET_REACHED]],
    ),
    (Method::POST, "/v1/tasks/{id}/started", &[REPORT_REFUSED]),
    (
        Method::POST,
        "/v1/tasks/{id}/heartbeat",
        &[REPORT_REFUSED, PAYLOAD_REFUSED],
    ),
    (
        Method::POST,
        "/v1/tasks/{id}/succeeded",
        &[REPORT_REFUSED, PAYLOAD_REFUSED, &[RESULT_TOO_LARGE]],
    ),
    (Method::POST, "/v1/tasks/{id}/failed", &[REPORT_REFUSED]),
    (Method::POST, "/v1/tasks/{id}/released", &[REPORT_REFUSED]),
    (Method::POST, "/v1/tasks/{id}/cancel", &[CONTROL_REFUSED]),
    (Method::POST, "/v1/tasks/{id}/retry", &[CONTROL_REFUSED]),
    (Method::POST, "/v1/tasks/{id}/pause", &[CONTROL_REFUSED]),
    (Method::POST, "/v1/tasks/{id}/resume", &[CONTROL_REFUSED]),
    (Method::POST, "/v1/tasks/{id}/fail", &[CONTROL_REFUSED]),
    (
        Method::POST,
        "/v1/tasks/{id}/skip",
        &[CONTROL_REFUSED, PAYLOAD_REFUSED],
    ),
    (
        Method::POST,
        "/v1/tasks/{id}/rerun",
        &[CONTROL_REFUSED, PAYLOAD_REFUSED],
    ),
    (
        Method::POST,
        "/v1/workflows/{id}/signals/{name}",
        &[PAYLOAD_REFUSED, &[INVALID_HEADER, IDEMPOTENCY_MISMATCH]],
    ),
    (
        Method::POST,
        "/v1/triggers/{name}",
        &[GRAPH_REFUSED, &[INVALID_HEADER, IDEMPOTENCY_MISMATCH]],
    ),
    (
        Method::POST,
        "/v1/schedules",
        &[GRAPH_REFUSED, &[SCHEDULE_EXISTS, OUT_OF_SCOPE]],
    ),
    (
        Method::PUT,
        "/v1/triggers/{name}",
        &[GRAPH_REFUSED, &[OUT_OF_SCOPE]],
    ),
    (
        Method::POST,
        "/v1/agents",
        &[&[
            AGENT_NOT_FOUND,
            AGENTS_PER_TOKEN_MAX,
            AGENTS_MAX,
            OUT_OF_SCOPE,
        ]],
    ),
    (
        Method::POST,
        "/v1/workflows/{id}/resume",
        &[&[BUDGET_REACHED]],
    ),
    (Method::GET, "/v1/tasks", &[&[WORKFLOW_NOT_FOUND]]),
    (Method::GET, "/v1/waiting", &[&[WORKFLOW_NOT_FOUND]]),
    (Method::GET, "/v1/events", &[&[WORKFLOW_NOT_FOUND]]),
    (
        Method::GET,
        "/v1/counts",
        &[&[OUT_OF_SCOPE, TOO_MANY_WORKFLOWS, WORKFLOW_NOT_FOUND]],
    ),
    (Method::GET, "/v1/usage", &[&[OUT_OF_SCOPE]]),
    (Method::GET, "/v1/audit", &[&[OUT_OF_SCOPE]]),
    (
        Method::PUT,
        "/v1/artifacts",
        &[&[INVALID_CONTENT_TYPE, BODY_UNREADABLE, ARTIFACT_TOO_LARGE]],
    ),
];

/// The reports a batch (`POST /v1/reports`) carries, each as the request it stands for.
const BATCHED_REPORTS: [&str; 5] = [
    "/v1/tasks/{id}/started",
    "/v1/tasks/{id}/heartbeat",
    "/v1/tasks/{id}/succeeded",
    "/v1/tasks/{id}/failed",
    "/v1/tasks/{id}/released",
];
/// What only a whole request is refused for, never one report of a batch: its transport, its
/// body, its caller's credentials and rate, the server's admission, an id in its path.
const REQUEST_LEVEL: &[Code] = &[
    HOST_NOT_LOOPBACK,
    CROSS_SITE_ORIGIN,
    OVERLOADED,
    DEADLINE_EXCEEDED,
    UNAUTHORIZED,
    RATE_LIMITED,
    MALFORMED_JSON,
    UNREADABLE_BODY,
    UNSUPPORTED_MEDIA_TYPE,
    BODY_TOO_LARGE,
    BODY_TIMEOUT,
    INVALID_QUERY,
    INVALID_ID,
];

/// The problems one report of a batch may get: those its own request could get, but for what
/// only a whole request is refused for.
fn batch_item_answers(doc: &utoipa::openapi::OpenApi) -> BTreeSet<Code> {
    crate::operations(doc)
        .filter(|(method, path, _)| *method == Method::POST && BATCHED_REPORTS.contains(path))
        .flat_map(|(method, path, op)| answers(&method, path, op))
        .filter(|c| !REQUEST_LEVEL.contains(c))
        .collect()
}

/// Every problem an operation can answer: those every operation shares, those that follow
/// from what it reads, and its own ([`OWN`]).
pub fn answers(method: &Method, path: &str, op: &Operation) -> BTreeSet<Code> {
    let mut out = BTreeSet::new();
    out.extend([
        HOST_NOT_LOOPBACK,
        CROSS_SITE_ORIGIN,
        STORE_UNAVAILABLE,
        SHUTTING_DOWN,
    ]);
    if path == "/v1/events" {
        out.insert(TOO_MANY_SUBSCRIBERS);
    } else {
        out.extend([OVERLOADED, DEADLINE_EXCEEDED]);
    }
    if method != Method::GET && method != Method::HEAD {
        out.insert(CONTENDED);
    }
    match auth::permission(method, path) {
        Some(Need::Public) => {}
        // A token scoped to labels does no agents' work.
        Some(Need::Agent) => out.extend([UNAUTHORIZED, FORBIDDEN, RATE_LIMITED, OUT_OF_SCOPE]),
        _ => out.extend([UNAUTHORIZED, FORBIDDEN, RATE_LIMITED]),
    }
    let params = op.parameters.iter().flatten();
    if params
        .clone()
        .any(|p| matches!(p.parameter_in, ParameterIn::Query))
    {
        out.insert(INVALID_QUERY);
    }
    if op.request_body.is_some() && path != "/v1/artifacts" {
        out.extend([
            MALFORMED_JSON,
            UNREADABLE_BODY,
            UNSUPPORTED_MEDIA_TYPE,
            BODY_TOO_LARGE,
            INVALID_FIELD,
        ]);
    }
    if op.request_body.is_some() {
        out.insert(BODY_TIMEOUT);
    }
    out.extend(path_codes(path));
    for (m, p, lists) in OWN {
        if m == method && *p == path {
            out.extend(lists.iter().flat_map(|l| l.iter().copied()));
        }
    }
    out
}

/// What the ids in a path may be refused for: not an id, or no such thing.
fn path_codes(path: &str) -> Vec<Code> {
    let mut out = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    for pair in segments.windows(2) {
        match pair {
            ["tasks", "{id}"] => out.extend([INVALID_ID, TASK_NOT_FOUND]),
            ["workflows", "{id}"] => out.extend([INVALID_ID, WORKFLOW_NOT_FOUND]),
            ["agents", "{id}"] => out.extend([INVALID_ID, AGENT_NOT_FOUND]),
            ["schedules", "{name}"] => out.extend([INVALID_FIELD, SCHEDULE_NOT_FOUND]),
            ["triggers", "{name}"] => out.extend([INVALID_FIELD, TRIGGER_NOT_FOUND]),
            ["limits", "{key}"] => out.extend([INVALID_FIELD, LIMIT_NOT_FOUND]),
            ["artifacts", "{artifact}"] => out.extend([INVALID_DIGEST, ARTIFACT_NOT_FOUND]),
            ["ids", "{suffix}"] => out.push(INVALID_FIELD),
            ["signals", "{name}"] => out.push(INVALID_FIELD),
            _ => {}
        }
    }
    out
}

/// Lists each operation's problems in the document: one response per status, its
/// description naming each code and what it means, its schema the problem document with
/// `code` an `enum` of them. Success responses stay as the handlers declare them; every
/// refusal is `application/problem+json`.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    crate::each_operation(doc, |method, path, op| {
        let codes = answers(method, path, op);
        let responses = &mut op.responses.responses;
        responses.retain(|status, _| !(status.starts_with('4') || status.starts_with('5')));
        let mut by_status: BTreeMap<u16, Vec<Code>> = BTreeMap::new();
        for c in codes {
            by_status.entry(c.status).or_default().push(c);
        }
        for (status, codes) in by_status {
            let description = codes
                .iter()
                .map(|c| format!("- `{}`: {}", c.code, c.meaning))
                .collect::<Vec<_>>()
                .join("\n");
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Refused");
            let schema = problem_with(codes.iter());
            let mut response = ResponseBuilder::new()
                .description(format!("{reason}, with one of these codes:\n{description}"));
            // A HEAD answer has the problem's status and headers, never its body.
            if method != Method::HEAD {
                response = response.content(
                    "application/problem+json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                );
            }
            responses.insert(status.to_string(), RefOr::T(response.build()));
        }
    });
    document_batch_items(doc);
}

/// The problem document with `code` an `enum` of `codes`.
fn problem_with<'c>(
    codes: impl Iterator<Item = &'c Code>,
) -> utoipa::openapi::schema::AllOfBuilder {
    utoipa::openapi::schema::AllOfBuilder::new()
        .item(Ref::from_schema_name("Problem"))
        .item(
            utoipa::openapi::ObjectBuilder::new().property(
                "code",
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some(codes.map(|c| c.code))),
            ),
        )
}

/// `ReportOutcome.problem`: the problem document with `code` an `enum` of what one report of
/// a batch may get.
fn document_batch_items(doc: &mut utoipa::openapi::OpenApi) {
    let codes = batch_item_answers(doc);
    let description = codes
        .iter()
        .map(|c| format!("- `{}` ({}): {}", c.code, c.status, c.meaning))
        .collect::<Vec<_>>()
        .join("\n");
    let problem = problem_with(codes.iter()).description(Some(format!(
        "The problem the report's own request would have been refused with (`status` is \
             its status), with one of these codes:\n{description}"
    )));
    let outcome = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("ReportOutcome"));
    let Some(RefOr::T(utoipa::openapi::schema::Schema::Object(outcome))) = outcome else {
        panic!("the document describes ReportOutcome as an object");
    };
    outcome
        .properties
        .insert("problem".to_owned(), RefOr::T(problem.into()));
}

/// What each route may answer: its statuses, and its problems as `(status, code)`.
#[derive(Default)]
pub struct Contract {
    routes: HashMap<(Method, String), Allowed>,
    /// What one report of a batch may get, as `(status, code)`.
    batch_items: BTreeSet<(u16, &'static str)>,
}

#[derive(Default)]
struct Allowed {
    statuses: BTreeSet<u16>,
    problems: BTreeSet<(u16, &'static str)>,
}

impl Contract {
    /// Reads the answers each operation of `doc` may give (after [`document`]).
    pub fn from_document(doc: &utoipa::openapi::OpenApi) -> Contract {
        let mut routes = HashMap::new();
        for (method, path, op) in crate::operations(doc) {
            let allowed = Allowed {
                statuses: op
                    .responses
                    .responses
                    .keys()
                    .filter_map(|s| s.parse().ok())
                    .collect(),
                problems: answers(&method, path, op)
                    .into_iter()
                    .map(|c| (c.status, c.code))
                    .collect(),
            };
            routes.insert((method, path.to_owned()), allowed);
        }
        let batch_items = batch_item_answers(doc)
            .into_iter()
            .map(|c| (c.status, c.code))
            .collect();
        Contract {
            routes,
            batch_items,
        }
    }

    /// Why a batch's answer (`body`) holds a report's problem that `ReportOutcome` does not
    /// list, if it does.
    fn batch_breach(&self, body: &[u8]) -> Option<String> {
        let answer: baton_api::ReportBatchAnswer = match serde_json::from_slice(body) {
            Ok(answer) => answer,
            Err(e) => {
                return Some(format!(
                    "POST /v1/reports answered a body that is not a batch's answer: {e}"
                ))
            }
        };
        answer.answers.iter().find_map(|outcome| {
            let p = outcome.problem.as_ref()?;
            (!self
                .batch_items
                .contains(&(outcome.status, p.code.as_str())))
            .then(|| {
                format!(
                    "POST /v1/reports answered a report with {} `{}`, which ReportOutcome does \
                     not list: add it in contract.rs",
                    outcome.status, p.code
                )
            })
        })
    }

    /// Why `answer` is not one the document lists for the route, if it is not.
    fn breach(
        &self,
        method: &Method,
        path: &str,
        status: u16,
        code: Option<&str>,
    ) -> Option<String> {
        let allowed = self.routes.get(&(method.clone(), path.to_owned()))?;
        match code {
            Some(code) if !allowed.problems.contains(&(status, code)) => Some(format!(
                "{method} {path} answered {status} `{code}`, which its document does not list: \
                 add it in contract.rs"
            )),
            None if !allowed.statuses.contains(&status) => Some(format!(
                "{method} {path} answered {status}, which its document does not list"
            )),
            _ => None,
        }
    }
}

/// In debug builds, turns an answer the document does not list for its route into a `500
/// undocumented_answer` (see the module's documentation).
pub async fn check(State(contract): State<Arc<Contract>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let mut res = next.run(req).await;
    let Some(path) = path else { return res };
    let code = res.extensions().get::<ProblemCode>().map(|c| c.0.as_str());
    let mut breach = contract.breach(&method, &path, res.status().as_u16(), code);
    if breach.is_none() && path == "/v1/reports" && res.status() == StatusCode::OK {
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("an answer in memory reads");
        breach = contract.batch_breach(&bytes);
        res = Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    match breach {
        None => res,
        Some(why) => {
            tracing::error!("{why}");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "undocumented_answer",
                why,
            )
            .into_response()
        }
    }
}
