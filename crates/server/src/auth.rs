//! Who may do what. Bearer tokens carry a role: an operator may do everything; an agent token
//! is bound to one agent name and may only register as that agent and act on its own leases.
//! With no tokens configured, Baton accepts loopback clients only, as operators, and only
//! requests addressed to a loopback name (see [`loopback_guard`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;
use crate::AppState;

/// A role a token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Operator,
    /// An agent, bound to the agent registered under this name.
    Agent(String),
}

/// The configured tokens.
#[derive(Clone, Debug, Default)]
pub struct Tokens {
    by_secret: HashMap<String, Role>,
}

impl Tokens {
    pub fn none() -> Tokens {
        Tokens::default()
    }

    pub fn is_empty(&self) -> bool {
        self.by_secret.is_empty()
    }

    pub fn add_operator(&mut self, secret: impl Into<String>) {
        self.by_secret.insert(secret.into(), Role::Operator);
    }

    pub fn add_agent(&mut self, name: impl Into<String>, secret: impl Into<String>) {
        self.by_secret
            .insert(secret.into(), Role::Agent(name.into()));
    }

    fn role(&self, secret: &str) -> Option<&Role> {
        self.by_secret.get(secret)
    }
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller(pub Role);

impl Caller {
    /// The name an action is recorded under: `operator` for an operator token, the agent's
    /// name for an agent token.
    pub fn actor(&self) -> String {
        match &self.0 {
            Role::Operator => "operator".to_owned(),
            Role::Agent(name) => format!("agent:{name}"),
        }
    }

    pub fn operator(&self) -> Result<(), Problem> {
        match &self.0 {
            Role::Operator => Ok(()),
            Role::Agent(name) => Err(forbidden(format!(
                "the token of agent `{name}` may not do this; an operator token is required"
            ))),
        }
    }

    /// Allowed for operators, and for the agent registered under `name`.
    pub fn agent_named(&self, name: &str) -> Result<(), Problem> {
        match &self.0 {
            Role::Operator => Ok(()),
            Role::Agent(mine) if mine == name => Ok(()),
            Role::Agent(mine) => Err(forbidden(format!(
                "the token is bound to agent `{mine}`, not to agent `{name}`"
            ))),
        }
    }
}

fn forbidden(detail: String) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Problem> {
        if state.tokens.is_empty() {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            return match peer {
                Some(ip) if ip.is_loopback() => Ok(Caller(Role::Operator)),
                _ => Err(forbidden(
                    "no tokens are configured, so Baton accepts loopback clients only".into(),
                )),
            };
        }
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(token)
            })
            .map(str::trim);
        match secret.and_then(|s| state.tokens.role(s)) {
            Some(role) => Ok(Caller(role.clone())),
            None => Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a valid token as `Authorization: Bearer <token>`",
            )),
        }
    }
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
    if state.tokens.is_empty() {
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
