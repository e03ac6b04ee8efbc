//! Who may do what. Every route has one row in [`PERMISSIONS`]: the [`Need`] a caller's
//! role must meet, checked by [`authorize`] after routing and before the handler reads the
//! request's body, so that a refusal never depends on what was sent. What depends on the
//! resource (an agent token acting as its own agents only, reading only the tasks leased to
//! them; a scoped token seeing only workflows with its labels) is checked by the handlers
//! through [`Caller`] and `crate::scope`.
//!
//! Roles ([`Role`]): a **viewer** reads (every GET, the event stream, metrics); an
//! **operator** also acts on workflows and tasks (submit, cancel, retry, signals, firing
//! triggers, and the controls to come); an **admin** may do everything, standing
//! configuration (schedules, triggers) and agents' work included; an **agent** registers and
//! keeps alive only the agents its token names, claims and reports only as them, and reads
//! only the tasks leased to them (with their upstream results) and artifacts.
//!
//! With no tokens configured, Baton accepts loopback clients only, each as the admin `local`,
//! and only requests addressed to a loopback name (see [`loopback_guard`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use baton_core::Labels;
use serde::Deserialize;

use crate::problem::Problem;
use crate::tokens::Token;
use crate::AppState;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything (in its scope): every GET, the event stream, metrics.
    Viewer,
    /// A viewer that also acts: submit, cancel, retry, signal, fire triggers, controls.
    Operator,
    /// Everything: standing configuration (schedules, triggers) and agents' work too.
    Admin,
    /// The agents its token names: register, keep alive, claim, report, read their tasks.
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }
}

/// What a route requires of its caller. Resource checks come on top, in the handler: which
/// agent an agent token acts as, which task it reads, which workflows a scoped token sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: public documents (`/healthz`, the OpenAPI document, the lifecycle's rules, the
    /// dashboard's static files). No token is asked for.
    Public,
    /// Viewer, operator or admin.
    Read,
    /// Read, or an agent token for a task leased to one of its agents (its claim's needs).
    ReadHeldTask,
    /// Operator or admin: acting on workflows and tasks.
    Operate,
    /// Admin: standing configuration.
    Admin,
    /// An agent token, acting as the agents it names; or admin, as any agent.
    Agent,
    /// Operator, admin or agent: uploading artifacts (inputs, results).
    Upload,
    /// Viewer, operator, admin or agent: downloading artifacts. Addressed by their SHA-256,
    /// so reading one takes knowing its address (from an input or result one may read).
    Download,
}

impl Need {
    /// Whether a token of `role` passes the route's check (resource checks aside).
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Need::Public => true,
            Need::Read => matches!(role, Viewer | Operator | Admin),
            Need::ReadHeldTask | Need::Download => true,
            Need::Operate => matches!(role, Operator | Admin),
            Need::Admin => role == Admin,
            Need::Agent => matches!(role, Agent | Admin),
            Need::Upload => matches!(role, Operator | Admin | Agent),
        }
    }

    /// Who may call, in words (the OpenAPI document and 403s say it).
    pub fn describe(self) -> &'static str {
        match self {
            Need::Public => "public: no token needed",
            Need::Read => "a viewer, operator or admin token",
            Need::ReadHeldTask => {
                "a viewer, operator or admin token; or an agent token, for a task leased to \
                 one of its agents"
            }
            Need::Operate => "an operator or admin token",
            Need::Admin => "an admin token",
            Need::Agent => {
                "an agent token, as an agent it names (`agents` in the tokens file, NAME in \
                 --agent-token NAME=TOKEN); or an admin token"
            }
            Need::Upload => "an operator, admin or agent token",
            Need::Download => "a viewer, operator, admin or agent token",
        }
    }
}

/// Every route the server serves and what it needs: the one table of who may do what. A
/// route without a row is refused at startup (`crate::router` checks every route against it)
/// and by the authorization matrix test (`tests/authz.rs`), which also calls each route with
/// each role. Rows for routes not served (yet) are allowed.
pub const PERMISSIONS: &[(Method, &str, Need)] = &[
    // Public documents and the dashboard's files.
    (Method::GET, "/healthz", Need::Public),
    (Method::GET, "/v1/openapi.json", Need::Public),
    (Method::GET, "/v1/lifecycle", Need::Public),
    (Method::GET, "/", Need::Public),
    (Method::GET, "/reference", Need::Public),
    (Method::GET, "/assets/{*path}", Need::Public),
    // Reads.
    (Method::GET, "/metrics", Need::Read),
    (Method::GET, "/v1/events", Need::Read),
    (Method::GET, "/v1/counts", Need::Read),
    (Method::GET, "/v1/ids/{suffix}", Need::Read),
    (Method::GET, "/v1/workflows", Need::Read),
    (Method::GET, "/v1/workflows/{id}", Need::Read),
    (Method::GET, "/v1/workflows/{id}/graph", Need::Read),
    (Method::GET, "/v1/workflows/{id}/history", Need::Read),
    (Method::GET, "/v1/workflows/{id}/signals", Need::Read),
    (Method::GET, "/v1/waiting", Need::Read),
    (Method::GET, "/v1/tasks", Need::Read),
    (Method::GET, "/v1/tasks/{id}", Need::ReadHeldTask),
    (Method::GET, "/v1/tasks/{id}/history", Need::ReadHeldTask),
    (Method::GET, "/v1/tasks/{id}/upstream", Need::ReadHeldTask),
    (Method::GET, "/v1/agents", Need::Read),
    (Method::GET, "/v1/schedules", Need::Read),
    (Method::GET, "/v1/schedules/{name}", Need::Read),
    (Method::GET, "/v1/triggers", Need::Read),
    (Method::GET, "/v1/triggers/{name}", Need::Read),
    (Method::GET, "/v1/audit", Need::Read),
    (Method::GET, "/v1/usage", Need::Read),
    (Method::GET, "/v1/limits", Need::Read),
    (Method::GET, "/v1/limits/{key}", Need::Read),
    // Acting on workflows and tasks.
    (Method::POST, "/v1/workflows", Need::Operate),
    (Method::POST, "/v1/workflows/{id}/cancel", Need::Operate),
    (
        Method::POST,
        "/v1/workflows/{id}/signals/{name}",
        Need::Operate,
    ),
    (Method::POST, "/v1/workflows/{id}/pause", Need::Operate),
    (Method::POST, "/v1/workflows/{id}/resume", Need::Operate),
    (Method::PUT, "/v1/workflows/{id}/budgets", Need::Operate),
    (Method::POST, "/v1/tasks", Need::Operate),
    (Method::POST, "/v1/tasks/{id}/cancel", Need::Operate),
    (Method::POST, "/v1/tasks/{id}/retry", Need::Operate),
    (Method::POST, "/v1/tasks/{id}/pause", Need::Operate),
    (Method::POST, "/v1/tasks/{id}/resume", Need::Operate),
    (Method::POST, "/v1/tasks/{id}/skip", Need::Operate),
    (Method::POST, "/v1/tasks/{id}/fail", Need::Operate),
    (Method::POST, "/v1/tasks/{id}/rerun", Need::Operate),
    (Method::POST, "/v1/triggers/{name}", Need::Operate),
    // Standing configuration.
    (Method::POST, "/v1/schedules", Need::Admin),
    (Method::DELETE, "/v1/schedules/{name}", Need::Admin),
    (Method::POST, "/v1/schedules/{name}/pause", Need::Admin),
    (Method::POST, "/v1/schedules/{name}/resume", Need::Admin),
    (Method::PUT, "/v1/triggers/{name}", Need::Admin),
    (Method::DELETE, "/v1/triggers/{name}", Need::Admin),
    (Method::PUT, "/v1/limits/{key}", Need::Admin),
    (Method::DELETE, "/v1/limits/{key}", Need::Admin),
    // Agents' work.
    (Method::POST, "/v1/agents", Need::Agent),
    (Method::POST, "/v1/agents/{id}/heartbeat", Need::Agent),
    (Method::POST, "/v1/agents/{id}/claim", Need::Agent),
    (Method::POST, "/v1/tasks/{id}/started", Need::Agent),
    (Method::POST, "/v1/reports", Need::Agent),
    (Method::POST, "/v1/tasks/{id}/heartbeat", Need::Agent),
    (Method::POST, "/v1/tasks/{id}/succeeded", Need::Agent),
    (Method::POST, "/v1/tasks/{id}/failed", Need::Agent),
    (Method::POST, "/v1/tasks/{id}/released", Need::Agent),
    (Method::POST, "/v1/tasks/{id}/subtasks", Need::Agent),
    // Artifacts.
    (Method::PUT, "/v1/artifacts", Need::Upload),
    (Method::GET, "/v1/artifacts/{artifact}", Need::Download),
    (Method::HEAD, "/v1/artifacts/{artifact}", Need::Download),
];

/// The row of a route: its method and its path as routed (`/v1/tasks/{id}`). A `HEAD` without
/// a row of its own is the `GET` of the same path (which answers it).
pub fn permission(method: &Method, path: &str) -> Option<Need> {
    let find = |m: &Method| {
        PERMISSIONS
            .iter()
            .find(|(rm, rp, _)| rm == m && *rp == path)
            .map(|(_, _, need)| *need)
    };
    find(method).or_else(|| {
        (method == Method::HEAD)
            .then(|| find(&Method::GET))
            .flatten()
    })
}

/// The authenticated caller of a request: the token it presented (or `local`, with no tokens
/// configured). Set by [`authorize`]; a handler takes it as an argument.
#[derive(Clone, Debug)]
pub struct Caller(Arc<Token>);

impl Caller {
    /// The token's name: the actor recorded for what it does (`local` without tokens).
    pub fn actor(&self) -> String {
        self.0.name.clone()
    }

    pub fn role(&self) -> Role {
        self.0.role
    }

    pub fn token(&self) -> &Token {
        &self.0
    }

    /// The labels every workflow it sees carries (empty: it sees every workflow).
    pub fn scope(&self) -> &Labels {
        &self.0.scope
    }

    /// No tokens are configured: the caller is a loopback client.
    pub fn is_local(&self) -> bool {
        self.0.local
    }

    pub fn is_scoped(&self) -> bool {
        !self.0.scope.is_empty()
    }

    /// Allowed for an admin, and for an agent token that names `agent`; never for a token
    /// scoped to labels (an agent claims any workflow's tasks, whatever their labels).
    pub fn may_act_as(&self, agent: &str) -> Result<(), Problem> {
        let t = &self.0;
        if self.is_scoped() {
            return Err(crate::scope::out_of_scope(format!(
                "token `{}` is scoped to labels, and an agent's work (claims, reports) takes any \
                 workflow's tasks: use an agent token",
                t.name
            )));
        }
        if t.binds(agent) {
            return Ok(());
        }
        Err(forbidden(match t.role {
            Role::Agent => {
                let names: Vec<String> = t.agents.iter().map(ToString::to_string).collect();
                format!(
                    "token `{}` acts as the agents {} only, not as agent `{}`",
                    t.name,
                    names.join(", "),
                    agent.escape_debug()
                )
            }
            role => format!(
                "token `{}` has the {} role: agents' work needs an agent token or an admin one",
                t.name,
                role.as_str()
            ),
        }))
    }
}

pub(crate) fn forbidden(detail: String) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_authorization",
                "this route was not authorized: a bug (every route has a row in auth::PERMISSIONS)",
            )
        })
    }
}

/// The caller of a request, from its bearer token; with no tokens configured, `local` if it
/// comes from loopback.
fn authenticate(state: &AppState, req: &Request) -> Result<Caller, Problem> {
    let tokens = state.tokens();
    if tokens.is_empty() {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        return match peer {
            Some(ip) if ip.is_loopback() => Ok(Caller(Arc::clone(&state.local))),
            _ => Err(forbidden(
                "no tokens are configured, so Baton accepts loopback clients only".into(),
            )),
        };
    }
    let secret = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim);
    match secret.and_then(|s| tokens.find(s)) {
        Some(token) => Ok(Caller(Arc::clone(token))),
        None => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid token as `Authorization: Bearer <token>`",
        )),
    }
}

/// Applies the route's row of [`PERMISSIONS`] before the handler runs (and before its body is
/// read): 401 without a valid token, 429 for a token over its request rate, 403 for a role
/// the row does not allow. Passes the [`Caller`] on to the handler.
pub async fn authorize(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let need = path.as_deref().and_then(|p| permission(req.method(), p));
    let Some(need) = need else {
        tracing::error!(method = %req.method(), path = ?path, "a route without a permission row");
        return Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_permission_rule",
            "this route has no row in the permission table: a bug",
        )
        .into_response();
    };
    if need == Need::Public {
        return next.run(req).await;
    }
    let caller = match authenticate(&state, &req) {
        Ok(c) => c,
        Err(p) => return p.into_response(),
    };
    if let Err(p) = state.guards.check_rate(&caller.0.name) {
        return p.into_response();
    }
    if !need.allows(caller.role()) {
        return forbidden(format!(
            "{} {} needs {}; token `{}` has the {} role",
            req.method(),
            path.as_deref().unwrap_or_default(),
            need.describe(),
            caller.0.name,
            caller.role().as_str()
        ))
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Without tokens, being on loopback is the only credential, and a browser on this machine is on
/// loopback too. So a request must also be addressed to a loopback name: its `Host` (or, in
/// HTTP/2, its authority) is `localhost`, a name under `.localhost` (browsers resolve those to
/// loopback themselves, never through DNS), an address in `127.0.0.0/8` or `[::1]`, with or
/// without a port; any other name is what a DNS-rebinding page sends, and is refused
/// (`host_not_loopback`). A request with an `Origin` that is not `http(s)://` plus such a host is
/// a cross-site request from a web page (a form post, a `fetch`), and is refused too
/// (`cross_site_origin`), the opaque origin `null` included. The dashboard's own requests come
/// from a loopback origin and pass. With tokens configured this rule does not apply: a token is
/// the credential, and browsers do not send it on their own.
pub async fn loopback_guard(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if state.tokens().is_empty() {
        if let Err(p) = check_loopback_request(&req) {
            return p.into_response();
        }
    }
    next.run(req).await
}

fn check_loopback_request(req: &Request) -> Result<(), Problem> {
    let host = match req.headers().get(header::HOST) {
        Some(v) => Some(v.to_str().unwrap_or("\u{fffd}")),
        None => req.uri().authority().map(|a| a.as_str()),
    };
    if let Some(host) = host {
        if !is_loopback_authority(host) {
            return Err(forbidden_code(
                "host_not_loopback",
                format!(
                    "no tokens are configured, so Baton answers only requests addressed to a \
                     loopback name (localhost, 127.0.0.1, [::1]); `Host: {}` is refused, as a \
                     DNS-rebinding page would send it; configure tokens to be reached by other names",
                    host.escape_debug()
                ),
            ));
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("\u{fffd}");
        if !is_loopback_origin(origin) {
            return Err(forbidden_code(
                "cross_site_origin",
                format!(
                    "no tokens are configured, so Baton refuses requests from web pages of other \
                     sites; `Origin: {}` is not a loopback origin (http://localhost:PORT, \
                     http://127.0.0.1:PORT, http://[::1]:PORT)",
                    origin.escape_debug()
                ),
            ));
        }
    }
    Ok(())
}

fn forbidden_code(code: &str, detail: String) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, code, detail)
}

/// `host[:port]` where host is a loopback name or address.
pub fn is_loopback_authority(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // `[v6]` or `[v6]:port`.
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return false;
        }
        return v6
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    } else {
        match authority.split_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return false,
            None => authority,
        }
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.strip_suffix(".localhost").is_some_and(|label| {
            !label.is_empty()
                && label.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        })
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `http://` or `https://` plus a loopback authority, nothing after it.
pub fn is_loopback_origin(origin: &str) -> bool {
    let lower = origin.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    rest.is_some_and(is_loopback_authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:7700",
            "dash.localhost:80",
            "127.0.0.1",
            "127.0.0.1:7700",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:7700",
        ] {
            assert!(is_loopback_authority(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7700",
            "localhost.evil.example",
            "localhost.",
            ".localhost",
            "a..localhost",
            "10.0.0.1:7700",
            "0.0.0.0:7700",
            "[::2]:7700",
            "[::1]x",
            "127.0.0.1:",
            "127.0.0.1:port",
            "localhost:7700@evil.example",
            "",
        ] {
            assert!(!is_loopback_authority(bad), "{bad}");
        }
    }

    #[test]
    fn loopback_origins() {
        for ok in [
            "http://localhost:7700",
            "http://127.0.0.1:7700",
            "http://[::1]:7700",
            "https://localhost",
        ] {
            assert!(is_loopback_origin(ok), "{ok}");
        }
        for bad in [
            "null",
            "https://evil.example",
            "http://127.0.0.1.evil.example",
            "http://localhost:7700/",
            "file://",
            "ftp://localhost",
        ] {
            assert!(!is_loopback_origin(bad), "{bad}");
        }
    }
}
