//! `baton serve`: the engine and its HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use baton_engine::{Engine, EngineConfig, SystemClock};
use baton_server::{tokens, AppState, Role, TokenSpec, Tokens};
use baton_store::AnyStore;
use clap::builder::TypedValueParser;
use clap::ValueEnum;
use opentelemetry_sdk::trace::SdkTracerProvider;

mod memory;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback requires tokens.
    #[arg(long, env = "BATON_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Directory for the embedded SQLite store (created if missing).
    #[arg(long, env = "BATON_DATA_DIR", default_value = "baton-data")]
    pub data_dir: PathBuf,
    /// Store URL instead of the embedded default: `postgres://…` or `sqlite://PATH`.
    #[arg(long, env = "BATON_STORE")]
    pub store: Option<String>,
    /// Operator bearer token, named `operator` (repeatable; comma-separated in the
    /// environment): reads, and acts on workflows and tasks (submit, cancel, retry, signals,
    /// firing triggers). Not schedules, triggers' configuration or agents' work: see
    /// --admin-token.
    #[arg(
        long = "operator-token",
        env = "BATON_OPERATOR_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub operator_tokens: Vec<String>,
    /// Admin bearer token, named `admin` (repeatable): everything, schedules and triggers
    /// and agents' work included.
    #[arg(
        long = "admin-token",
        env = "BATON_ADMIN_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_tokens: Vec<String>,
    /// Viewer bearer token, named `viewer` (repeatable): reads only (every GET, the event
    /// stream, metrics).
    #[arg(
        long = "viewer-token",
        env = "BATON_VIEWER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub viewer_tokens: Vec<String>,
    /// Agent bearer token, as `NAME=TOKEN` (repeatable), named `agent:NAME`: registers and
    /// acts only as agents named NAME (a NAME ending in `*` is a prefix: `worker-*=TOKEN`), at
    /// most 64 of them online at once, and reads only the tasks leased to them.
    #[arg(
        long = "agent-token",
        env = "BATON_AGENT_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub agent_tokens: Vec<String>,
    /// A tokens file (JSON), combined with the token flags and read again on SIGHUP (a file
    /// refused then is logged and the tokens in force stay): `{"tokens": [{"name": "ci",
    /// "role": "operator", "secret_sha256": "<hex>"}, {"name": "workers", "role": "agent",
    /// "secret": "…", "agents": ["worker-*"], "agents_max": 128}, {"name": "acme", "role":
    /// "viewer", "secret": "…", "scope": {"label": "tenant=acme"}}]}`. Roles: viewer,
    /// operator, admin, agent; `secret` or `secret_sha256` (its hex SHA-256); `scope`: only
    /// workflows with these labels.
    #[arg(long = "tokens", env = "BATON_TOKENS_FILE", value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// An agent not heard from for this long is declared dead and loses its leases.
    #[arg(long, env = "BATON_AGENT_TTL_MS", default_value_t = 30_000)]
    pub agent_ttl_ms: u64,
    /// A waiting claim looks for work again at least this often, whatever it was told: the
    /// bound on how long a lost wake-up from another node can delay it.
    #[arg(long, env = "BATON_CLAIM_RECHECK_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub claim_recheck_ms: u64,
    /// Largest payload, in bytes of JSON: each task's input, a result, progress, a signal's
    /// data; a larger one is refused (413) and larger data goes in artifacts. At most the
    /// request body limit (8 MiB).
    #[arg(long, alias = "result-bytes-max", env = "BATON_PAYLOAD_BYTES_MAX", default_value_t = baton_engine::PAYLOAD_BYTES_MAX_DEFAULT, value_parser = clap::value_parser!(u64).range(1024..=8 * 1024 * 1024))]
    pub payload_bytes_max: u64,
    /// Largest artifact (`PUT /v1/artifacts`), in bytes: a larger upload is refused (413) and
    /// nothing is stored.
    #[arg(long, env = "BATON_ARTIFACT_BYTES_MAX", default_value_t = baton_engine::ARTIFACT_BYTES_MAX_DEFAULT, value_parser = clap::value_parser!(u64).range(1..))]
    pub artifact_bytes_max: u64,
    /// An artifact no task refers to is deleted once its latest upload is this old: the time
    /// an upload has to be referenced by a submission or a result.
    #[arg(long, env = "BATON_ARTIFACT_UNREFERENCED_GRACE_MS", default_value_t = baton_engine::ARTIFACT_UNREFERENCED_GRACE_MS_DEFAULT)]
    pub artifact_unreferenced_grace_ms: u64,
    /// Serve HTTPS with this PEM certificate chain (the server's certificate first); needs
    /// --tls-key.
    #[arg(
        long,
        env = "BATON_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "BATON_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Listen beyond loopback over plain HTTP, tokens in clear: only behind a proxy that
    /// terminates TLS.
    #[arg(long, env = "BATON_INSECURE_HTTP")]
    pub insecure_http: bool,
    /// Connections open at once (fitted under the process's open-file limit); past it, new
    /// connections wait.
    #[arg(long, env = "BATON_CONNECTIONS_MAX", default_value_t = baton_server::limits::CONNECTIONS_MAX_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub connections_max: usize,
    /// A connection must send a whole request head within this time of opening or of its
    /// last response (idle keep-alive connections close after it too): `30s`, `500ms`, `1m`.
    #[arg(long, env = "BATON_HEADER_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub header_timeout: std::time::Duration,
    /// A request body that sends nothing for this long is refused (408).
    #[arg(long, env = "BATON_BODY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub body_timeout: std::time::Duration,
    /// Deadline of a request (503 `deadline_exceeded` past it); a claim gets its `wait_ms` on
    /// top, the event stream none, an artifact 10 minutes.
    #[arg(long, env = "BATON_REQUEST_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub request_timeout: std::time::Duration,
    /// Requests in flight at once (claims and event streams apart); past it, requests are
    /// shed at once (503 `overloaded`, `Retry-After`).
    #[arg(long, env = "BATON_REQUESTS_MAX", default_value_t = baton_server::limits::REQUESTS_MAX_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub requests_max: usize,
    /// Claims in flight at once, long polls included; past it, shed likewise.
    #[arg(long, env = "BATON_CLAIMS_MAX", default_value_t = baton_server::limits::CLAIMS_MAX_DEFAULT, value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub claims_max: usize,
    /// Requests per second each token may send, in bursts of as many (429 `rate_limited`
    /// past it); 0 turns it off. Default: off on loopback, 1000 beyond it.
    #[arg(long, env = "BATON_RATE_PER_TOKEN")]
    pub rate_per_token: Option<u32>,
    /// Retention: a workflow that finished (none of its tasks can move again) this long ago
    /// is deleted, with its tasks, history, signals and usage, in small batches by the
    /// leading node (every minute); artifacts no remaining task refers to then go with the
    /// artifact sweep. `30d`, `12h`, `90m`; `0` keeps everything forever.
    #[arg(long, env = "BATON_RETAIN", value_name = "DURATION", default_value = "30d",
          value_parser = crate::duration::parse_retention)]
    pub retain: u64,
    /// An agent not heard from for this long and holding no lease is deleted (it registers
    /// again, as a new agent, if it comes back). At least the liveness window (--agent-ttl-ms);
    /// `0` keeps every agent.
    #[arg(long, env = "BATON_AGENT_RETENTION", value_name = "DURATION", default_value = "7d",
          value_parser = crate::duration::parse_retention)]
    pub agent_retention: u64,
    /// Audit entries older than this are deleted; `0` keeps them forever. Apart from
    /// --retain: the audit log outlives the workflows it acted on.
    #[arg(long, env = "BATON_AUDIT_RETAIN", value_name = "DURATION", default_value = "365d",
          value_parser = crate::duration::parse_retention)]
    pub audit_retain: u64,
    /// Agents each token may have registered at once (an agent token: at least its
    /// `agents_max`); loopback clients without tokens count together as the token `local`.
    /// One more is refused (429 agents_per_token_max_reached) until the agent retention
    /// deletes silent ones.
    #[arg(long, env = "BATON_AGENTS_PER_TOKEN_MAX", default_value_t = baton_engine::AGENTS_PER_TOKEN_MAX_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub agents_per_token_max: u32,
    /// Log format.
    #[arg(long, env = "BATON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Export a span per transition over OTLP/HTTP to this collector (e.g.
    /// `http://127.0.0.1:4318`); nothing is exported without it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Logs to stderr (pretty or JSON, `RUST_LOG` filters), and, with an OTLP endpoint, every
/// transition's span exported over OTLP/HTTP. Returns the tracer provider to flush at exit.
pub fn init_logs(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Option<SdkTracerProvider>> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let provider = match otlp_endpoint {
        Some(endpoint) => {
            let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url.clone())
                .build()
                .with_context(|| format!("configuring OTLP export to {url}"))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("baton")
                            .build(),
                    )
                    .build(),
            )
        }
        None => None,
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(opentelemetry::trace::TracerProvider::tracer(p, "baton"))
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && meta.name() == "transition"
            }))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .init();
    Ok(provider)
}

/// Default of `--rate-per-token` when listening beyond loopback.
pub const RATE_PER_TOKEN_DEFAULT: u32 = 1_000;

/// `30s`, `500ms`, `1m`, `2h`, or plain milliseconds.
fn duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse_ms(s).map(std::time::Duration::from_millis)
}

/// The server's bounds from the flags.
fn server_config(args: &ServeArgs) -> baton_server::ServerConfig {
    let loopback = args.listen.ip().is_loopback();
    let rate = match args.rate_per_token {
        Some(n) => n,
        None if loopback => 0,
        None => RATE_PER_TOKEN_DEFAULT,
    };
    baton_server::ServerConfig {
        connections_max: baton_server::listen::fit_connections(args.connections_max),
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        request_timeout: args.request_timeout,
        requests_max: args.requests_max,
        claims_max: args.claims_max,
        rate_per_token: std::num::NonZeroU32::new(rate),
    }
}

/// The TLS configuration of the flags; refuses plain HTTP beyond loopback unless
/// `--insecure-http` says so.
fn tls(args: &ServeArgs) -> anyhow::Result<Option<baton_server::Tls>> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => baton_server::Tls::from_pem_files(cert, key)
            .map(Some)
            .map_err(|e| anyhow::anyhow!(e)),
        _ if !args.listen.ip().is_loopback() && !args.insecure_http => bail!(
            "refusing to listen on {} over plain HTTP: tokens would travel in clear. Give              --tls-cert and --tls-key, or --insecure-http when a proxy in front terminates TLS",
            args.listen
        ),
        _ => Ok(None),
    }
}

/// The tokens the flags give, named after their role (`operator`, `operator-2`, …) and, for
/// agent tokens, their agent (`agent:NAME`).
fn flag_tokens(args: &ServeArgs) -> anyhow::Result<Vec<TokenSpec>> {
    let mut specs: Vec<TokenSpec> = Vec::new();
    for (role, secrets) in [
        (Role::Viewer, &args.viewer_tokens),
        (Role::Operator, &args.operator_tokens),
        (Role::Admin, &args.admin_tokens),
    ] {
        for secret in secrets.iter().filter(|t| !t.is_empty()) {
            let spec = tokens::flag_token(&specs, role, secret.clone());
            specs.push(spec);
        }
    }
    for pair in args.agent_tokens.iter().filter(|t| !t.is_empty()) {
        let Some((name, secret)) = pair.split_once('=') else {
            bail!(
                "--agent-token expects NAME=TOKEN, got {:?}",
                redact_pair(pair)
            );
        };
        if name.is_empty() || secret.is_empty() {
            bail!(
                "--agent-token expects NAME=TOKEN with both parts, got {:?}",
                redact_pair(pair)
            );
        }
        let spec = tokens::flag_agent_token(&specs, name.to_owned(), secret.to_owned());
        specs.push(spec);
    }
    Ok(specs)
}

/// `NAME=…`: what an error may show of a flag holding a secret.
fn redact_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((name, _)) => format!("{name}=…"),
        None => "…".into(),
    }
}

/// The tokens of the flags and of the tokens file together, checked as one set.
fn load_tokens(flags: &[TokenSpec], file: Option<&Path>) -> anyhow::Result<Tokens> {
    let mut specs = flags.to_vec();
    if let Some(path) = file {
        let text = read_tokens_file(path)?;
        let from_file = tokens::parse_tokens_file(&text)
            .map_err(|e| anyhow::anyhow!("tokens file {}: {e}", path.display()))?;
        specs.extend(from_file);
    }
    Tokens::build(specs).map_err(|e| match file {
        Some(path) if e.field.starts_with("tokens[") => {
            anyhow::anyhow!("tokens file {}: {e}", path.display())
        }
        _ => anyhow::anyhow!("{e}"),
    })
}

fn read_tokens_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("reading the tokens file {}", path.display()))?;
    let mut text = String::new();
    file.take(tokens::TOKENS_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading the tokens file {}", path.display()))?;
    if text.len() as u64 > tokens::TOKENS_FILE_BYTES_MAX {
        bail!(
            "the tokens file {} is over {} bytes",
            path.display(),
            tokens::TOKENS_FILE_BYTES_MAX
        );
    }
    Ok(text)
}

/// Logs how many tokens of each role are in force (never a secret, nor a name).
fn log_tokens(tokens: &Tokens, what: &str) {
    let n = tokens.count_by_role();
    tracing::info!(
        viewer = n["viewer"],
        operator = n["operator"],
        admin = n["admin"],
        agent = n["agent"],
        "{what}"
    );
}

/// On each SIGHUP, reads the tokens file again and replaces the tokens in force with it and
/// the flags' tokens, at once; a file that is refused (unreadable, invalid, or leaving no
/// token while listening beyond loopback) is logged and changes nothing.
#[cfg(unix)]
async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    state: Arc<AppState>,
    flags: Vec<TokenSpec>,
    file: Option<PathBuf>,
    loopback: bool,
) {
    while hangups.recv().await.is_some() {
        let Some(path) = file.as_deref() else {
            tracing::info!("SIGHUP: no --tokens file to read again; nothing changes");
            continue;
        };
        match load_tokens(&flags, Some(path)) {
            Ok(tokens) if tokens.is_empty() && !loopback => tracing::error!(
                file = %path.display(),
                "tokens file refused: it leaves no token while listening beyond loopback; \
                 the tokens in force stay"
            ),
            Ok(tokens) => {
                log_tokens(&tokens, "tokens reloaded");
                state.set_tokens(tokens);
            }
            Err(e) => tracing::error!(
                error = %format!("{e:#}"),
                "tokens file refused; the tokens in force stay"
            ),
        }
    }
}

/// Creates the data directory if missing and takes its lock (`baton.lock`, holding the pid),
/// so that a second server on the same directory is refused instead of sharing the store.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    match try_lock_data_dir(dir)? {
        Ok(file) => Ok(file),
        Err(holder) => bail!(
            "another baton serve (pid {holder}) uses the data directory {}: stop it, or give \
             another --data-dir",
            dir.display()
        ),
    }
}

/// The data directory's lock (see [`lock_data_dir`]), created if missing; `Err` with the pid
/// of the process holding it (as it wrote it) when another one does.
pub(crate) fn try_lock_data_dir(
    dir: &std::path::Path,
) -> anyhow::Result<Result<std::fs::File, String>> {
    if dir.exists() && !dir.is_dir() {
        bail!(
            "--data-dir {} is a file, not a directory: give a directory (it is created if \
             missing)",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let path = dir.join("baton.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if !try_lock(&file).with_context(|| format!("locking {}", path.display()))? {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Ok(Err(holder.trim().to_owned()));
    }
    use std::io::Write;
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(Ok(file))
}

/// An exclusive lock on `file`, released when the process ends however it ends; `false` when
/// another process holds it. (`File::try_lock` needs Rust 1.89, past the MSRV.)
#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor this function borrows, open for its duration.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &std::fs::File) -> std::io::Result<bool> {
    Ok(true)
}

/// The retention flags, checked together: an agent is deleted only after it was declared
/// dead.
pub fn check_retention(agent_retention_ms: u64, agent_ttl_ms: u64) -> anyhow::Result<()> {
    if agent_retention_ms != 0 && agent_retention_ms < agent_ttl_ms {
        bail!(
            "--agent-retention {} is shorter than the liveness window (--agent-ttl-ms {}): an \
             agent is deleted only once it has been silent longer than that; give at least {} \
             (or 0 to keep every agent)",
            crate::duration::show_ms(agent_retention_ms),
            agent_ttl_ms,
            crate::duration::show_ms(agent_ttl_ms)
        );
    }
    Ok(())
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    memory::configure();
    check_retention(args.agent_retention, args.agent_ttl_ms)?;
    let provider = init_logs(args.log_format, args.otlp_endpoint.as_deref())?;
    let flags = flag_tokens(&args)?;
    let tokens = load_tokens(&flags, args.tokens_file.as_deref())?;
    if tokens.is_empty() && !args.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {} without tokens: anyone could reach it. Set \
             --tokens FILE, --admin-token, --operator-token, --viewer-token or --agent-token, \
             or listen on 127.0.0.1",
            args.listen
        );
    }
    let tls = tls(&args)?;
    let config = server_config(&args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let trimming = runtime.spawn(memory::trim_loop());
    // Held while the server runs: one server per data directory.
    let _lock = match &args.store {
        Some(_) => None,
        None => Some(lock_data_dir(&args.data_dir)?),
    };
    runtime.block_on(async move {
        let url = match &args.store {
            Some(url) => url.clone(),
            None => args.data_dir.join("baton.db").display().to_string(),
        };
        // The one process that owns the store: an SQLite file made before retention is
        // converted to incremental auto-vacuum (once), so that what retention deletes gives
        // its space back to the file system.
        let options = baton_store::sqlite::SqliteOptions {
            convert_to_incremental_vacuum: true,
            ..Default::default()
        };
        let store = AnyStore::open_with(&url, options)
            .await
            .context("opening the store")?;
        let engine = Engine::new(
            store,
            Arc::new(SystemClock),
            EngineConfig {
                agent_ttl_ms: args.agent_ttl_ms,
                claim_recheck_ms: args.claim_recheck_ms,
                payload_bytes_max: args.payload_bytes_max,
                artifact_bytes_max: args.artifact_bytes_max,
                artifact_unreferenced_grace_ms: args.artifact_unreferenced_grace_ms,
                retain_ms: args.retain,
                agent_retention_ms: args.agent_retention,
                audit_retain_ms: args.audit_retain,
                agents_per_token_max: args.agents_per_token_max,
                retention_interval_ms: baton_engine::RETENTION_INTERVAL_MS,
            },
        );
        let loops = engine.start();
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
                "{} is in use (another baton serve?): choose another address with --listen \
                 127.0.0.1:PORT",
                args.listen
            ),
            Err(e) => return Err(e).with_context(|| format!("listening on {}", args.listen)),
        };
        // Before the server says it listens, so that a SIGHUP from then on reloads rather
        // than ends the process.
        #[cfg(unix)]
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("listening for SIGHUP")?;
        let addr = listener.local_addr()?;
        let shown = baton_store::redact_url(&url);
        tracing::info!(address = %addr, store = %shown, "baton listening");
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            connections_max = config.connections_max,
            requests_max = config.requests_max,
            rate_per_token = config.rate_per_token.map_or(0, |n| n.get()),
            "limits"
        );
        println!("Baton listening on {scheme}://{addr} (store: {shown})");
        let kept = |ms: u64| match ms {
            0 => "forever".to_owned(),
            ms => crate::duration::show_ms(ms),
        };
        tracing::info!(
            retain = %kept(args.retain),
            agent_retention = %kept(args.agent_retention),
            audit_retain = %kept(args.audit_retain),
            agents_per_token_max = args.agents_per_token_max,
            "retention"
        );
        if tokens.is_empty() {
            println!("No tokens configured: accepting loopback clients only.");
        } else {
            log_tokens(&tokens, "tokens loaded");
        }
        let state = AppState::with_config(engine, tokens, config);
        #[cfg(unix)]
        let reloading = tokio::spawn(reload_on_sighup(
            hangups,
            Arc::clone(&state),
            flags,
            args.tokens_file.clone(),
            args.listen.ip().is_loopback(),
        ));
        baton_server::serve(listener, state, tls, shutdown_signal()).await?;
        #[cfg(unix)]
        reloading.abort();
        for l in loops {
            let _ = l.await;
        }
        tracing::info!("baton stopped");
        Ok::<(), anyhow::Error>(())
    })?;
    trimming.abort();
    if let Some(provider) = provider {
        provider
            .shutdown()
            .context("flushing the last spans to the OTLP endpoint")?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down: no new requests; in-flight ones finish");
}
