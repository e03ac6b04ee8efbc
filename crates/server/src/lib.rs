//! Baton's HTTP/JSON API, versioned under `/v1`, with its OpenAPI document at
//! `/v1/openapi.json`, a Server-Sent Events stream of transitions, bearer-token roles, body
//! limits and graceful shutdown. Handlers only translate; the engine decides.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use baton_engine::read::AnyStore;
use baton_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use utoipa::openapi::path::Operation;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod api;
pub mod artifacts;
pub mod auth;
pub mod contract;
pub mod dashboard;
pub mod examples;
pub mod extract;
pub mod limits;
pub mod links;
pub mod listen;
pub mod problem;
pub mod scope;
pub mod tokens;

pub use auth::{Need, Role, PERMISSIONS};
pub use limits::ServerConfig;
pub use listen::Tls;
pub use problem::{Problem, ProblemDoc};
pub use tokens::{TokenError, TokenSpec, Tokens};

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// What every handler shares.
pub struct AppState {
    pub engine: Engine<AnyStore>,
    /// The tokens accepted now: replaced whole when the tokens file is reloaded, so a request
    /// sees one set or the other, never a mix.
    tokens: RwLock<Arc<Tokens>>,
    /// The caller every loopback client is when no tokens are configured.
    local: Arc<tokens::Token>,
    pub(crate) guards: limits::Guards,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Baton",
        description = "Durable orchestration for multi-agent systems: workflows of tasks, agents that claim and report on them, every task tracked through an explicit lifecycle.\n\nAuthorization: send a token as `Authorization: Bearer <token>`. A token has a role: `viewer` (reads), `operator` (also acts on workflows and tasks), `admin` (everything, schedules and triggers included) or `agent` (the agents it names: register, claim, report, read their tasks). Each operation says which roles may call it. A token scoped to labels sees only workflows carrying them (others answer 404). With no tokens configured, loopback clients are admins."
    ),
    components(schemas(
        baton_api::TransitionEventView,
        baton_api::WorkflowEventView,
        baton_api::ProblemDoc,
        baton_api::CompensationInput
    ))
)]
struct ApiDoc;

/// The documented routes, from one list (utoipa-axum), so the document cannot miss a route.
fn api_routes() -> OpenApiRouter<Arc<AppState>> {
    general_routes()
        .merge(claim_routes())
        .merge(stream_routes())
        .merge(artifact_routes())
}

/// The routes each request of which is short: bounded together by
/// [`ServerConfig::requests_max`] and [`ServerConfig::request_timeout`].
fn general_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
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
        .routes(routes!(api::set_budgets))
        .routes(routes!(api::usage))
        .routes(routes!(api::list_limits))
        .routes(routes!(api::put_limit, api::get_limit, api::delete_limit))
        .routes(routes!(api::audit))
        .routes(routes!(api::counts))
        .routes(routes!(api::register_agent, api::list_agents))
        .routes(routes!(api::agent_heartbeat))
        .routes(routes!(api::report_started))
        .routes(routes!(api::report_heartbeat))
        .routes(routes!(api::report_succeeded))
        .routes(routes!(api::report_failed))
        .routes(routes!(api::report_released))
        .routes(routes!(api::send_reports))
        .routes(routes!(api::add_subtasks))
        .routes(routes!(api::lifecycle))
}

/// Claims, which may wait for work: their own cap, [`ServerConfig::claims_max`], and their
/// wait on top of the deadline.
fn claim_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(api::claim))
}

/// The event stream: no deadline (it streams until the client leaves), slots per role.
fn stream_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(api::events))
}

/// Artifacts, up to hundreds of MiB: counted with the general requests, with a longer
/// deadline ([`limits::ARTIFACT_TIMEOUT`]).
fn artifact_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(artifacts::put_artifact))
        .routes(routes!(artifacts::get_artifact, artifacts::head_artifact))
}

/// Sheds a request at once when `slots` are all taken (`503 overloaded`), and answers
/// `503 deadline_exceeded` to one still running after `deadline`.
fn bounded(
    slots: Arc<Semaphore>,
    deadline: Duration,
) -> impl tower::Layer<
    axum::routing::Route,
    Service = impl tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future = impl Send + 'static,
    > + Clone
                  + Send
                  + Sync
                  + 'static,
> + Clone
       + Send
       + Sync
       + 'static {
    tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(
            move |err: tower::BoxError| async move { limits::refusal(&err, deadline) },
        ))
        .load_shed()
        .layer(tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(
            slots,
        ))
        .timeout(deadline)
}

/// The routes outside the OpenAPI document: its own, liveness, metrics, the dashboard.
#[derive(Clone, Copy)]
enum Plain {
    OpenApi,
    Healthz,
    Metrics,
    DashboardIndex,
    DashboardAssets,
    Reference,
}

/// Every plain route, by its path; [`router`] serves exactly these, [`routes`] lists them.
const PLAIN_ROUTES: &[(&str, Plain)] = &[
    ("/v1/openapi.json", Plain::OpenApi),
    ("/healthz", Plain::Healthz),
    ("/metrics", Plain::Metrics),
    (dashboard::INDEX_ROUTE, Plain::DashboardIndex),
    (dashboard::ASSETS_ROUTE, Plain::DashboardAssets),
    (dashboard::REFERENCE_ROUTE, Plain::Reference),
];

/// Every `(method, path)` the router serves, paths as routed (`/v1/tasks/{id}`): the
/// documented operations and the plain routes (all `GET`). What the authorization table must
/// cover.
pub fn routes() -> Vec<(Method, String)> {
    let (_, doc) = api_routes().split_for_parts();
    let mut out = operations(&doc)
        .map(|(method, path, _)| (method, path.to_owned()))
        .collect::<Vec<_>>();
    out.extend(
        PLAIN_ROUTES
            .iter()
            .map(|(p, _)| (Method::GET, (*p).to_owned())),
    );
    out
}

/// Each operation of the document, with its method and path.
pub(crate) fn operations(
    doc: &utoipa::openapi::OpenApi,
) -> impl Iterator<Item = (Method, &str, &Operation)> {
    doc.paths.paths.iter().flat_map(|(path, item)| {
        [
            (Method::GET, &item.get),
            (Method::PUT, &item.put),
            (Method::POST, &item.post),
            (Method::DELETE, &item.delete),
            (Method::HEAD, &item.head),
            (Method::PATCH, &item.patch),
            (Method::OPTIONS, &item.options),
            (Method::TRACE, &item.trace),
        ]
        .into_iter()
        .filter_map(move |(m, op)| op.as_ref().map(|op| (m, path.as_str(), op)))
    })
}

/// The document says how to authenticate (a bearer token), and each operation which roles may
/// call it, from [`PERMISSIONS`].
fn document_authorization(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    doc.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    each_operation(doc, |method, path, op| {
        let Some(need) = auth::permission(method, path) else {
            return;
        };
        if need == Need::Public {
            // An empty requirement: no authentication.
            op.security = Some(vec![SecurityRequirement::default()]);
        }
        let says = format!("Authorization: {}.", need.describe());
        op.description = Some(match op.description.take() {
            Some(d) if !d.is_empty() => format!("{d}\n\n{says}"),
            _ => says,
        });
    });
}

/// What the attributes cannot say: that a task's dependencies are each listed once, that a
/// result is any JSON but `null`, and that an artifact may be empty (no body).
fn refine(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::RefOr;
    let schemas = &mut doc.components.get_or_insert_with(Default::default).schemas;
    if let Some(RefOr::T(Schema::Object(spec))) = schemas.get_mut("TaskSpec") {
        if let Some(RefOr::T(Schema::Array(deps))) = spec.properties.get_mut("depends_on") {
            deps.unique_items = true;
        }
    }
    // A batched report takes no field its kind does not (serde's `deny_unknown_fields`).
    if let Some(RefOr::T(Schema::OneOf(kinds))) = schemas.get_mut("Report") {
        for kind in &mut kinds.items {
            if let RefOr::T(Schema::Object(o)) = kind {
                o.additional_properties = Some(Box::new(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ));
            }
        }
    }
    // Any JSON value but null.
    let not_null = |description: Option<String>| -> RefOr<Schema> {
        let mut any = utoipa::openapi::schema::Object::new();
        any.schema_type = utoipa::openapi::schema::SchemaType::AnyValue;
        any.description = description.or_else(|| Some("Any JSON value but `null`.".to_owned()));
        let null = utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Null)
            .build();
        let mut not = serde_json::Map::new();
        not.insert(
            "not".to_owned(),
            serde_json::to_value(null).unwrap_or_default(),
        );
        any.extensions = Some(utoipa::openapi::extensions::Extensions::from_iter(not));
        RefOr::T(Schema::Object(any))
    };
    for (schema, field) in [("SkipBody", "result"), ("SuccessReport", "result")] {
        if let Some(RefOr::T(Schema::Object(o))) = schemas.get_mut(schema) {
            let description = match o.properties.get(field) {
                Some(RefOr::T(Schema::Object(f))) => f.description.clone(),
                _ => None,
            };
            o.properties.insert(field.to_owned(), not_null(description));
        }
    }
    if let Some(put) = doc
        .paths
        .paths
        .get_mut("/v1/artifacts")
        .and_then(|p| p.put.as_mut())
    {
        if let Some(body) = put.request_body.as_mut() {
            body.required = Some(utoipa::openapi::Required::False);
        }
    }
}

/// Calls `f` with each operation of the document, its method and its path.
pub(crate) fn each_operation(
    doc: &mut utoipa::openapi::OpenApi,
    mut f: impl FnMut(&Method, &str, &mut Operation),
) {
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
            (Method::HEAD, &mut item.head),
            (Method::PATCH, &mut item.patch),
            (Method::OPTIONS, &mut item.options),
            (Method::TRACE, &mut item.trace),
        ] {
            if let Some(op) = op.as_mut() {
                f(&method, path, op);
            }
        }
    }
}

/// The router and its OpenAPI document, built from the same route list.
///
/// # Panics
/// If a route has no row in [`PERMISSIONS`]: a programming error, caught at startup.
pub fn router(state: Arc<AppState>) -> Router {
    for (method, path) in routes() {
        assert!(
            auth::permission(&method, &path).is_some(),
            "{method} {path} has no row in auth::PERMISSIONS: add one saying who may call it"
        );
    }
    let guards = &state.guards;
    let deadline = guards.config.request_timeout;
    let claim_deadline = deadline + Duration::from_millis(baton_engine::CLAIM_WAIT_MAX_MS);
    let (router, mut doc) = general_routes()
        .layer(bounded(Arc::clone(&guards.requests), deadline))
        .merge(claim_routes().layer(bounded(Arc::clone(&guards.claims), claim_deadline)))
        .merge(stream_routes())
        .merge(artifact_routes().layer(bounded(
            Arc::clone(&guards.requests),
            limits::ARTIFACT_TIMEOUT,
        )))
        .with_state(Arc::clone(&state))
        .split_for_parts();
    document_authorization(&mut doc);
    contract::document(&mut doc);
    links::document(&mut doc);
    examples::document(&mut doc);
    refine(&mut doc);
    let contract = Arc::new(contract::Contract::from_document(&doc));
    let doc = Arc::new(doc);
    let router = PLAIN_ROUTES.iter().fold(router, |router, (path, plain)| {
        let route = match plain {
            Plain::OpenApi => {
                let doc = Arc::clone(&doc);
                get(move || {
                    let doc = Arc::clone(&doc);
                    async move { Json(doc.as_ref().clone()) }
                })
            }
            Plain::Healthz => get(|| async { "ok" }),
            Plain::Metrics => get(api::metrics).with_state(Arc::clone(&state)),
            Plain::DashboardIndex => get(dashboard::index),
            Plain::DashboardAssets => get(dashboard::asset),
            Plain::Reference => get(dashboard::reference),
        };
        router.route(path, route)
    });
    let router = router
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::authorize,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            limits::count_requests,
        ));
    // Debug builds hold every answer to the document (contract.rs).
    let router = if cfg!(debug_assertions) {
        router.route_layer(axum::middleware::from_fn_with_state(
            contract,
            contract::check,
        ))
    } else {
        router
    };
    router
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
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.guards.config.body_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            limits::count_refusals,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state,
            auth::loopback_guard,
        ))
}

/// Serves until `shutdown` resolves: then stops accepting, lets in-flight requests finish,
/// and stops the engine's loops. Leases are left as they are: they expire or are resumed.
/// Plain HTTP unless `tls` is given.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = state.engine.clone();
    let config = state.guards.config.clone();
    let app = router(state);
    // Stopping the engine first ends waiting claims and event streams, which would otherwise
    // hold the drain open; requests already committing still finish.
    let stop = engine.clone();
    let metrics = engine.clone();
    let opened = move || metrics.metrics().connection_opened();
    listen::accept_loop(listener, app, &config, tls, opened, shutdown, move || {
        stop.shutdown()
    })
    .await;
    engine.shutdown();
    Ok(())
}

impl AppState {
    /// The state of a server with the default limits.
    pub fn new(engine: Engine<AnyStore>, tokens: Tokens) -> Arc<AppState> {
        AppState::with_config(engine, tokens, ServerConfig::default())
    }

    /// The state of a server bounded by `config`.
    pub fn with_config(
        engine: Engine<AnyStore>,
        tokens: Tokens,
        config: ServerConfig,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            engine,
            tokens: RwLock::new(Arc::new(tokens)),
            local: Arc::new(tokens::Token::local()),
            guards: limits::Guards::new(config),
        })
    }

    /// The tokens accepted now.
    pub fn tokens(&self) -> Arc<Tokens> {
        // A poisoned lock only means a writer panicked between two whole sets: either is whole.
        Arc::clone(&self.tokens.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the tokens at once: requests from now on are checked against `tokens`.
    pub fn set_tokens(&self, tokens: Tokens) {
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tokens);
    }
}
