//! `baton mcp --http ADDR`: the MCP server over streamable HTTP at `/mcp`. Whoever reaches it
//! acts on Baton with this process's token, so: without `--http-token` it listens on loopback
//! only and, like `baton serve` without tokens, answers only requests addressed to a loopback
//! name from no web page but a loopback one (`Host` and `Origin` checked: a page elsewhere
//! cannot drive it by DNS rebinding or a cross-site request); with `--http-token` every request
//! must carry it (`Authorization: Bearer …`), and it may listen anywhere.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use baton_client::wire::ProblemDoc;
use baton_server::auth::{is_loopback_authority, is_loopback_origin};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::lease::Shared;
use super::tools::BatonMcp;

/// The path the MCP endpoint is served at.
pub const MCP_PATH: &str = "/mcp";

/// Who may call: the token's bytes, or loopback requests only.
struct Guard {
    token: Option<Vec<u8>>,
}

/// Serves MCP over HTTP on `addr` until SIGINT or SIGTERM.
pub async fn serve(
    shared: Arc<Shared>,
    addr: SocketAddr,
    token: Option<String>,
) -> anyhow::Result<()> {
    let token = token.filter(|t| !t.is_empty());
    if token.is_none() && !addr.ip().is_loopback() {
        bail!(
            "refusing to serve MCP on {addr}, which is not a loopback address, without \
             --http-token: whoever reached it would act on Baton as this process does. Give \
             --http-token (or BATON_MCP_HTTP_TOKEN), or listen on 127.0.0.1"
        );
    }
    let stop = CancellationToken::new();
    // rmcp's own Host list (localhost, 127.0.0.1, ::1; no Origin check by default) is off:
    // `check` applies `baton serve`'s loopback rules instead, and with a token admits any Host.
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_cancellation_token(stop.child_token());
    let for_sessions = shared.clone();
    let service = StreamableHttpService::new(
        move || Ok(BatonMcp::new(for_sessions.clone())),
        LocalSessionManager::default().into(),
        config,
    );
    let guard = Arc::new(Guard {
        token: token.map(String::into_bytes),
    });
    let app = axum::Router::new()
        .nest_service(MCP_PATH, service)
        .layer(axum::middleware::from_fn_with_state(guard, check));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr().context("the address listened on")?;
    // The one line on stdout: tests and scripts read the address from it.
    println!("Baton MCP listening on http://{local}{MCP_PATH}");
    eprintln!(
        "baton mcp: serving MCP over HTTP at http://{local}{MCP_PATH} for Baton at {}",
        shared.client.base_url()
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            super::stopped().await;
            stop.cancel();
        })
        .await
        .context("serving MCP over HTTP")?;
    Ok(())
}

/// Refuses a request without the token, or (without one) a request not addressed to a
/// loopback name or sent from a page of another origin.
async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if let Some(token) = &guard.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::as_bytes);
        if !given.is_some_and(|g| same(g, token)) {
            let mut res = problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this MCP server needs its token: `Authorization: Bearer TOKEN` (baton mcp \
                 --http-token)"
                    .into(),
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"baton-mcp\""),
            );
            return res;
        }
        return next.run(req).await;
    }
    let host = match req.headers().get(header::HOST) {
        Some(v) => Some(v.to_str().unwrap_or("\u{fffd}")),
        None => req.uri().authority().map(|a| a.as_str()),
    };
    if let Some(host) = host {
        if !is_loopback_authority(host) {
            return problem(
                StatusCode::FORBIDDEN,
                "host_not_loopback",
                format!(
                    "without --http-token this MCP server answers only requests addressed to a \
                     loopback name (localhost, 127.0.0.1, [::1]); `Host: {}` is refused, as a \
                     DNS-rebinding page would send it",
                    host.escape_debug()
                ),
            );
        }
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("\u{fffd}");
        if !is_loopback_origin(origin) {
            return problem(
                StatusCode::FORBIDDEN,
                "cross_site_origin",
                format!(
                    "without --http-token this MCP server refuses requests from web pages of \
                     other sites; `Origin: {}` is not a loopback origin",
                    origin.escape_debug()
                ),
            );
        }
    }
    next.run(req).await
}

/// `a == b`, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn problem(status: StatusCode, code: &str, detail: String) -> Response {
    let doc = ProblemDoc {
        kind: format!("/problems/{code}"),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        code: code.into(),
        detail,
        field: None,
        expected: None,
        rule: None,
        state: None,
        cycle: None,
    };
    let mut res = (status, axum::Json(doc)).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
