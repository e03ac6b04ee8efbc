//! The transport: accepts connections (at most [`ServerConfig::connections_max`] open at
//! once), optionally over TLS, and serves HTTP/1.1 on each with hyper, which closes a
//! connection that does not send a whole request head within the header timeout (from its
//! opening, or from its previous response). Graceful shutdown stops accepting, lets requests
//! in flight finish, then closes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::limits::{ServerConfig, FDS_RESERVED};

/// A TLS certificate chain and its key, ready to serve.
#[derive(Clone)]
pub struct Tls(Arc<rustls::ServerConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Reads a PEM certificate chain (the server's certificate first) and its PEM private key
    /// (PKCS#8, PKCS#1 or SEC1). Errors name the file and what is wrong with it.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Tls, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--tls-cert {}: no PEM certificate (`-----BEGIN CERTIFICATE-----`) in it",
                cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("--tls-cert and --tls-key do not make a pair: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls(Arc::new(config)))
    }
}

/// Makes ring the process's TLS provider unless one is installed: what the server serves
/// with, and what HTTPS clients built in this process (reqwest's among them) use.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The connection cap that fits under this process's open-file limit, raised to its hard
/// limit first (many systems start processes at a soft 1,024).
pub fn fit_connections(wanted: usize) -> usize {
    match raise_fd_limit() {
        Some(fds) => wanted.min(fds.saturating_sub(FDS_RESERVED).max(1)),
        None => wanted,
    }
}

#[cfg(unix)]
fn raise_fd_limit() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct this function owns.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    usize::try_from(lim.rlim_cur).ok()
}

#[cfg(not(unix))]
fn raise_fd_limit() -> Option<usize> {
    None
}

/// Accepts and serves connections until `shutdown` resolves; then stops accepting, runs
/// `stopping` (which ends long polls and event streams), and waits for requests in flight.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    config: &ServerConfig,
    tls: Option<Tls>,
    opened: impl Fn() -> baton_engine::ConnectionOpen,
    shutdown: impl Future<Output = ()>,
    stopping: impl FnOnce(),
) {
    let slots = Arc::new(Semaphore::new(config.connections_max));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let tls = tls.map(|t| TlsAcceptor::from(t.0));
    let handshake_timeout = config.header_timeout;
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the slots are never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let slot = (slot, opened());
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ));
        let watcher = graceful.watcher();
        let http = http.clone();
        match &tls {
            None => {
                let conn = http.serve_connection(TokioIo::new(stream), service);
                tokio::spawn(async move {
                    if let Err(e) = watcher.watch(conn).await {
                        connection_ended(&e, peer);
                    }
                    drop(slot);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(
                        handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    if let Err(e) = watcher.watch(conn).await {
                        connection_ended(&e, peer);
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    stopping();
    graceful.shutdown().await;
}

/// An accept error: a connection that failed before it was accepted is the client's business;
/// anything else (out of file descriptors, say) is logged, and accepting pauses a moment so as
/// not to spin.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn connection_ended(e: &hyper::Error, peer: SocketAddr) {
    if e.is_timeout() {
        tracing::debug!(%peer, "connection closed: no whole request head within the header timeout");
    } else {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
