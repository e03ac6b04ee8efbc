//! Who may do what. Bearer tokens carry a role: an operator may do everything; an agent token
//! is bound to one agent name and may only register as that agent and act on its own leases.
//! With no tokens configured, Baton accepts loopback clients only, as operators.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

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
