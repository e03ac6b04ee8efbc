//! Baton's HTTP/JSON API, versioned under `/v1`, with its OpenAPI document at
//! `/v1/openapi.json`, a Server-Sent Events stream of transitions, bearer-token roles, body
//! limits and graceful shutdown. Handlers only translate; the engine decides.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use baton_engine::read::AnyStore;
use baton_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod api;
pub mod artifacts;
pub mod auth;
pub mod dashboard;
pub mod extract;
pub mod problem;

pub use auth::{Role, Tokens};
pub use problem::{Problem, ProblemDoc};

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most event streams open at once.
pub const SSE_SUBSCRIBERS_MAX: usize = 256;

/// What every handler shares.
pub struct AppState {
    pub engine: Engine<AnyStore>,
    pub tokens: Tokens,
    pub sse_permits: Arc<Semaphore>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Baton",
        description = "Durable orchestration for multi-agent systems: workflows of tasks, agents that claim and report on them, every task tracked through an explicit lifecycle."
    ),
    components(schemas(
        baton_api::TransitionEventView,
        baton_api::WorkflowEventView,
        baton_api::ProblemDoc,
        baton_api::CompensationInput
    ))
)]
struct ApiDoc;

/// The router and its OpenAPI document, built from the same route list.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::submit_workflow, api::list_workflows))
        .routes(routes!(api::workflow_graph))
        .routes(routes!(api::workflow_history))
        .routes(routes!(api::get_workflow))
        .routes(routes!(api::cancel_workflow))
        .routes(routes!(api::send_signal))
        .routes(routes!(api::list_signals))
        .routes(routes!(api::list_waiting))
        .routes(routes!(api::create_schedule, api::list_schedules))
        .routes(routes!(api::get_schedule, api::delete_schedule))
        .routes(routes!(api::pause_schedule))
        .routes(routes!(api::resume_schedule))
        .routes(routes!(api::list_triggers))
        .routes(routes!(
            api::put_trigger,
            api::fire_trigger,
            api::get_trigger,
            api::delete_trigger
        ))
        .routes(routes!(api::ids_ending))
        .routes(routes!(api::submit_task, api::list_tasks))
        .routes(routes!(api::get_task))
        .routes(routes!(api::task_history))
        .routes(routes!(api::task_upstream))
        .routes(routes!(api::cancel_task))
        .routes(routes!(api::retry_task))
        .routes(routes!(api::pause_task))
        .routes(routes!(api::resume_task))
        .routes(routes!(api::skip_task))
        .routes(routes!(api::fail_task))
        .routes(routes!(api::rerun_task))
        .routes(routes!(api::pause_workflow))
        .routes(routes!(api::resume_workflow))
        .routes(routes!(api::audit))
        .routes(routes!(api::counts))
        .routes(routes!(api::register_agent, api::list_agents))
        .routes(routes!(api::agent_heartbeat))
        .routes(routes!(api::claim))
        .routes(routes!(api::report_started))
        .routes(routes!(api::report_heartbeat))
        .routes(routes!(api::report_succeeded))
        .routes(routes!(api::report_failed))
        .routes(routes!(api::report_released))
        .routes(routes!(api::add_subtasks))
        .routes(routes!(api::events))
        .routes(routes!(api::lifecycle))
        .routes(routes!(artifacts::put_artifact))
        .routes(routes!(artifacts::get_artifact, artifacts::head_artifact))
        .with_state(Arc::clone(&state))
        .split_for_parts();
    let doc = Arc::new(doc);
    router
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = Arc::clone(&doc);
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .merge(dashboard::routes())
        .route("/metrics", get(api::metrics).with_state(Arc::clone(&state)))
        .fallback(|| async {
            Problem::not_found("no_route", "no such endpoint; see /v1/openapi.json")
        })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not accept that method; see /v1/openapi.json",
            )
            .into_response()
        })
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(
            state,
            auth::loopback_guard,
        ))
}

/// Serves until `shutdown` resolves: then stops accepting, lets in-flight requests finish,
/// and stops the engine's loops. Leases are left as they are: they expire or are resumed.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = state.engine.clone();
    let app = router(state);
    // Stopping the engine first ends waiting claims and event streams, which would otherwise
    // hold the drain open; requests already committing still finish.
    let stop = engine.clone();
    let shutdown = async move {
        shutdown.await;
        stop.shutdown();
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    engine.shutdown();
    Ok(())
}

impl AppState {
    pub fn new(engine: Engine<AnyStore>, tokens: Tokens) -> Arc<AppState> {
        Arc::new(AppState {
            engine,
            tokens,
            sse_permits: Arc::new(Semaphore::new(SSE_SUBSCRIBERS_MAX)),
        })
    }
}
