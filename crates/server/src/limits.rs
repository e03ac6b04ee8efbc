//! What keeps one client, or many, from exhausting the server: a cap on connections, timeouts
//! on request heads and stalled bodies, a deadline per request, a cap on requests in flight
//! past which requests are shed (`503` + `Retry-After`), a request rate per token (`429`), and
//! event-stream slots per role. The transport rules (connections, heads) are applied by
//! [`crate::listen`]; the rest are layers on the router, answered as problem documents.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Role;
use crate::problem::Problem;

/// Default of [`ServerConfig::connections_max`].
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// File descriptors kept for the store, artifacts and logs when the connection cap is fitted
/// under the process's limit.
pub const FDS_RESERVED: usize = 256;
/// Default of [`ServerConfig::header_timeout`].
pub const HEADER_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default of [`ServerConfig::body_timeout`].
pub const BODY_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default of [`ServerConfig::request_timeout`].
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Deadline of an artifact's upload or download, which may be hundreds of MiB.
pub const ARTIFACT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default of [`ServerConfig::requests_max`].
pub const REQUESTS_MAX_DEFAULT: usize = 512;
/// Default of [`ServerConfig::claims_max`].
pub const CLAIMS_MAX_DEFAULT: usize = 4_096;
/// Event streams open at once, per role of the caller (agents have none: the stream is for
/// readers): no role can take another's slots, so viewers (a tenant's dashboards, say) cannot
/// lock operators out.
pub const SSE_SLOTS: [(Role, usize); 3] =
    [(Role::Viewer, 128), (Role::Operator, 64), (Role::Admin, 64)];

/// How much a server takes before it refuses. Every bound has a named default.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Connections open at once; past it, new connections wait in the listen backlog.
    pub connections_max: usize,
    /// A connection must send a whole request head within this time of opening, and of its
    /// previous response: so an idle keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long is abandoned (`408`).
    pub body_timeout: Duration,
    /// Deadline of a request, its body included; a claim's long poll gets its wait on top,
    /// the event stream none (it streams until the client leaves).
    pub request_timeout: Duration,
    /// Requests in flight at once, long-poll claims and event streams apart; past it, requests
    /// are shed at once with `503` and `Retry-After`.
    pub requests_max: usize,
    /// Claims in flight at once, long polls included; past it, shed likewise.
    pub claims_max: usize,
    /// Requests per second each token may send (a burst of as many); `None`: no limit.
    pub rate_per_token: Option<NonZeroU32>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            header_timeout: HEADER_TIMEOUT_DEFAULT,
            body_timeout: BODY_TIMEOUT_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            requests_max: REQUESTS_MAX_DEFAULT,
            claims_max: CLAIMS_MAX_DEFAULT,
            rate_per_token: None,
        }
    }
}

/// The limits' shared state, kept by [`crate::AppState`].
pub(crate) struct Guards {
    pub(crate) config: ServerConfig,
    /// Requests in flight (claims and event streams apart).
    pub(crate) requests: Arc<Semaphore>,
    pub(crate) claims: Arc<Semaphore>,
    sse: HashMap<Role, Arc<Semaphore>>,
    rate: Option<RateLimiter<String, HashMapStateStore<String>, DefaultClock>>,
}

impl Guards {
    pub(crate) fn new(config: ServerConfig) -> Guards {
        Guards {
            requests: Arc::new(Semaphore::new(config.requests_max)),
            claims: Arc::new(Semaphore::new(config.claims_max)),
            sse: SSE_SLOTS
                .iter()
                .map(|(role, n)| (*role, Arc::new(Semaphore::new(*n))))
                .collect(),
            rate: config
                .rate_per_token
                .map(|n| RateLimiter::hashmap(Quota::per_second(n))),
            config,
        }
    }

    /// An event-stream slot for a caller of `role`, held while the stream is open.
    pub(crate) fn sse_slot(&self, role: Role) -> Result<OwnedSemaphorePermit, Problem> {
        let slots = self.sse.get(&role).map(Arc::clone);
        let permit = slots.and_then(|s| s.try_acquire_owned().ok());
        permit.ok_or_else(|| {
            let max = SSE_SLOTS
                .iter()
                .find(|(r, _)| *r == role)
                .map_or(0, |(_, n)| *n);
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_subscribers",
                format!(
                    "at most {max} event streams at once for callers with the {} role; close \
                     one, or retry later",
                    role.as_str()
                ),
            )
        })
    }

    /// Counts a request of token `name` against its rate; `Err` with the `429` to answer when
    /// it is over.
    pub(crate) fn check_rate(&self, name: &str) -> Result<(), Problem> {
        let (Some(limiter), Some(per_second)) = (&self.rate, self.config.rate_per_token) else {
            return Ok(());
        };
        // The key is cloned only when the token is new to the limiter's map.
        let key = name.to_owned();
        match limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "token `{name}` sent more than {per_second} requests per second \
                         (`baton serve --rate-per-token`); retry after {} ms",
                        wait.as_millis()
                    ),
                )
                .retry_after(wait))
            }
        }
    }
}

/// The codes of what the limits refuse, counted in `baton_http_refused_total`.
pub const REFUSAL_CODES: [&str; 5] = [
    "overloaded",
    "deadline_exceeded",
    "rate_limited",
    "body_timeout",
    "too_many_subscribers",
];

/// Counts each answer the limits gave (by its problem's code) in the engine's metrics.
pub(crate) async fn count_refusals(
    axum::extract::State(state): axum::extract::State<Arc<crate::AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let res = next.run(req).await;
    if matches!(res.status().as_u16(), 408 | 429 | 503) {
        if let Some(code) = res.extensions().get::<crate::problem::ProblemCode>() {
            if let Some(reason) = REFUSAL_CODES.iter().find(|c| **c == code.0) {
                state.engine.metrics().http_refused(reason);
            }
        }
    }
    res
}

/// Counts each answer of a routed request by method, route template and status
/// (`baton_http_requests_total`).
pub(crate) async fn count_requests(
    axum::extract::State(state): axum::extract::State<Arc<crate::AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let res = next.run(req).await;
    if let Some(route) = route {
        state
            .engine
            .metrics()
            .http_request(method.as_str(), route.as_str(), res.status().as_u16());
    }
    res
}

/// What a request shed or past its deadline is answered: each layer's error as a problem.
pub(crate) fn refusal(err: &tower::BoxError, deadline: Duration) -> Response {
    if err.is::<tower::load_shed::error::Overloaded>() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight on this server; retry after a moment",
        )
        .into_response();
    }
    if err.is::<tower::timeout::error::Elapsed>() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "deadline_exceeded",
            format!(
                "the request took longer than its deadline ({} ms); it may have been applied: \
                 reports, and submissions with an Idempotency-Key, are safe to resend",
                deadline.as_millis()
            ),
        )
        .into_response();
    }
    tracing::error!(error = %err, "a request failed in the server's layers");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the request failed inside the server",
    )
    .into_response()
}
