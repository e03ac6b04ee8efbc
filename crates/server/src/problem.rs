//! Every refused request is answered with an RFC 9457 problem document
//! (`application/problem+json`): the status, a stable error code, the field or rule at fault,
//! and what was expected.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
pub use baton_api::ProblemDoc;
use baton_core::{DagError, Refusal};
use baton_engine::EngineError;

/// A refusal, answered as a problem document. Boxed: it travels in every `Result`.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem(Box<ProblemDoc>, Option<u64>);

impl std::ops::Deref for Problem {
    type Target = ProblemDoc;
    fn deref(&self) -> &ProblemDoc {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemDoc {
        &mut self.0
    }
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Problem {
        Problem(
            Box::new(ProblemDoc {
                kind: format!("/problems/{code}"),
                title: status.canonical_reason().unwrap_or("Error").to_owned(),
                status: status.as_u16(),
                code: code.to_owned(),
                detail: detail.into(),
                field: None,
                expected: None,
                rule: None,
                state: None,
                cycle: None,
            }),
            None,
        )
    }

    /// Asks the client to wait `wait` (whole seconds, rounded up, at least one) before it
    /// tries again, in `Retry-After`. Every `503` says one second unless told otherwise.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Problem {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.1 = Some(secs.max(1));
        self
    }

    pub fn field(mut self, field: impl Into<String>, expected: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self.expected = Some(expected.into());
        self
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(code: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, code, detail)
    }
}

/// The `code` of a problem answer, kept on the response for the layers around the handlers.
#[derive(Clone, Debug)]
pub struct ProblemCode(pub String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = match self.1 {
            Some(secs) => Some(secs),
            None => (status == StatusCode::SERVICE_UNAVAILABLE).then_some(1),
        };
        let code = ProblemCode(self.0.code.clone());
        let mut res = (status, axum::Json(*self.0)).into_response();
        res.extensions_mut().insert(code);
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: a 401 names the scheme the client should use.
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"baton\""),
            );
        }
        if let Some(secs) = retry {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<EngineError> for Problem {
    fn from(e: EngineError) -> Problem {
        let detail = e.to_string();
        match e {
            EngineError::Invalid { field, expected } => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", detail)
                    .field(field, expected)
            }
            EngineError::Graph(g) => graph_problem(g, detail),
            EngineError::TaskNotFound(_) => Problem::not_found("task_not_found", detail),
            EngineError::WorkflowNotFound(_) => Problem::not_found("workflow_not_found", detail),
            EngineError::AgentNotFound(_) => Problem::not_found("agent_not_found", detail),
            EngineError::Rejected(r) => {
                let status = match &r.refusal {
                    Refusal::InvalidSpec { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                    _ => StatusCode::CONFLICT,
                };
                let code = match &r.refusal {
                    Refusal::InvalidSpec { .. } => "invalid_field",
                    _ => r.code(),
                };
                let mut p = Problem::new(status, code, detail);
                p.state = r.state.map(|s| s.as_str().to_owned());
                p.rule = Some(match &r.refusal {
                    Refusal::GuardFailed { guard, .. } => format!("guard: {guard}"),
                    other => other.code().to_owned(),
                });
                if let Refusal::InvalidSpec { field, expected } = &r.refusal {
                    p = p.field(field.clone(), expected.clone());
                }
                p
            }
            EngineError::TooLarge {
                field,
                limit_bytes,
                limit,
                ..
            } => {
                // An artifact is any bytes; other limits count bytes of JSON.
                let of = if field == "artifact" { "" } else { " of JSON" };
                let code = match field.as_str() {
                    "artifact" => "artifact_too_large",
                    "result" => "result_too_large",
                    _ => "payload_too_large",
                };
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, code, detail).field(
                    field,
                    format!(
                        "at most {limit_bytes} bytes{of} ({limit}: baton serve --{})",
                        limit.replace('_', "-")
                    ),
                )
            }
            EngineError::ArtifactNotFound { field: None, .. } => {
                Problem::not_found("artifact_not_found", detail)
            }
            EngineError::ArtifactNotFound {
                field: Some(field), ..
            } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "artifact_not_found",
                detail,
            )
            .field(
                field,
                "a reference to an uploaded artifact (PUT /v1/artifacts)",
            ),
            EngineError::ArtifactRefInvalid { field, expected } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "artifact_ref_invalid",
                detail,
            )
            .field(field, expected),
            EngineError::IdempotencyMismatch { .. } => {
                Problem::new(StatusCode::CONFLICT, "idempotency_mismatch", detail)
            }
            EngineError::BudgetReached(_) => {
                Problem::new(StatusCode::CONFLICT, "budget_reached", detail)
            }
            EngineError::ScheduleNotFound(_) => Problem::not_found("schedule_not_found", detail),
            EngineError::LimitNotFound(_) => Problem::not_found("limit_not_found", detail),
            EngineError::TriggerNotFound(_) => Problem::not_found("trigger_not_found", detail),
            EngineError::ScheduleExists(_) => {
                Problem::new(StatusCode::CONFLICT, "schedule_exists", detail).field(
                    "name",
                    "a name no other schedule has (delete the old one first)",
                )
            }
            EngineError::Contended(_) | EngineError::ScheduleContended(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "contended", detail)
            }
            EngineError::TooManyAgents { .. } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "agents_per_token_max_reached",
                format!("{detail} (baton serve --agents-per-token-max)"),
            ),
            EngineError::ShuttingDown => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", detail)
            }
            EngineError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", detail)
            }
        }
    }
}

fn graph_problem(g: DagError, detail: String) -> Problem {
    let unprocessable =
        |code: &str| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail.clone());
    match g {
        DagError::DuplicateTask(key) => unprocessable("duplicate_task")
            .field("tasks[].key", format!("unique keys; `{key}` repeats")),
        DagError::UnknownDependency { task, dependency } => unprocessable("unknown_dependency")
            .field(
                "tasks[].depends_on",
                format!("keys of tasks in the workflow; `{task}` names `{dependency}`"),
            ),
        DagError::DuplicateDependency { task, dependency } => unprocessable("duplicate_dependency")
            .field(
                "tasks[].depends_on",
                format!("each dependency once; `{task}` lists `{dependency}` twice"),
            ),
        DagError::Cycle(keys) => {
            let mut p = unprocessable("cycle").field("tasks[].depends_on", "an acyclic graph");
            p.cycle = Some(keys.into_iter().map(|k| k.0).collect());
            p
        }
        DagError::TooManyTasks => unprocessable("too_many_tasks").field(
            "tasks",
            format!(
                "at most {} tasks per workflow",
                baton_core::dag::TASKS_PER_WORKFLOW_MAX
            ),
        ),
        DagError::UnknownTask(_) => Problem::not_found("task_not_found", detail),
        DagError::TooLateToDepend { .. }
        | DagError::NotReady { .. }
        | DagError::AlreadyCompleted(_) => {
            Problem::new(StatusCode::CONFLICT, "not_accepted", detail)
        }
    }
}
