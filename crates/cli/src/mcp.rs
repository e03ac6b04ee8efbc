//! `baton mcp`: a Model Context Protocol server through which an LLM works with Baton, as an
//! operator (submit, inspect, cancel, retry, signal) and as an agent (claim, start, report). It
//! is a client of a running Baton server, like every other command; it serves MCP on stdio (what
//! desktop hosts launch) or, with `--http`, over streamable HTTP.
//!
//! `tools.rs` holds the tools (`BatonMcp`), `args.rs` their arguments and schemas, `lease.rs`
//! the agent identity and leases kept between calls, `answer.rs` how answers are kept small and
//! failures become tool errors, `http.rs` the HTTP transport and who may reach it.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use rmcp::ServiceExt;

use crate::Global;

mod answer;
mod args;
mod http;
mod lease;
mod tools;

const AFTER_HELP: &str = "\
`baton mcp` talks to the Baton server at --url (BATON_URL) with --token (BATON_TOKEN), like
every other command. With no --http it speaks MCP on stdin and stdout (logs on stderr): let
the host launch it, e.g. in a Claude Desktop or Cursor-style configuration:

  {\"mcpServers\": {\"baton\": {\"command\": \"baton\", \"args\": [\"mcp\"],
                             \"env\": {\"BATON_URL\": \"http://127.0.0.1:7700\"}}}}

With --http ADDR it serves streamable HTTP at http://ADDR/mcp and prints that address on
stdout. Without --http-token it listens on loopback only and answers only requests addressed
to a loopback name with no Origin or a loopback one (as `baton serve` without tokens does);
with --http-token every request needs `Authorization: Bearer TOKEN`, and any address may be
listened on.

Tools: submit_workflow, list_workflows, get_workflow, list_tasks, get_task, task_history,
cancel, retry_task, send_signal, waiting, counts (operator); claim_task, start_task,
report_progress, complete_task, fail_task, release_task (agent). The first claim registers this
process as an agent (named --agent-name, or after the MCP client and this process's id); it
remembers the lease of every task it claims, keeps the agent alive while one runs, and gives
those tasks back when it stops. Its token needs the roles of the tools used: viewer to read,
operator to act, agent (or admin) to claim.";

/// A Model Context Protocol server for LLM agents: stdio by default, streamable HTTP with
/// --http.
#[derive(clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct McpArgs {
    /// Serve streamable HTTP at http://ADDR/mcp instead of stdio (e.g. 127.0.0.1:7710; port 0
    /// picks a free one). The address is printed on stdout.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// The token HTTP clients must send (`Authorization: Bearer TOKEN`); required to listen on
    /// anything but loopback.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "BATON_MCP_HTTP_TOKEN",
        hide_env_values = true,
        requires = "http"
    )]
    pub http_token: Option<String>,
    /// The agent's name in Baton (`baton agents`); by default `mcp-CLIENT-PID`.
    #[arg(long, value_name = "NAME")]
    pub agent_name: Option<String>,
    /// How many tasks the agent may hold at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub agent_concurrency: u32,
}

pub fn run(global: &Global, args: McpArgs) -> anyhow::Result<ExitCode> {
    init_logs();
    let client = crate::ops::client(global)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let shared = lease::Shared::new(client, args.agent_name, args.agent_concurrency);
        let keep_alive = tokio::spawn(shared.clone().keep_alive());
        let served = match args.http {
            Some(addr) => http::serve(shared.clone(), addr, args.http_token).await,
            None => stdio(shared.clone()).await,
        };
        keep_alive.abort();
        shared.release_all().await;
        served
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Serves one MCP session on stdin and stdout, until the client closes it or a signal comes.
async fn stdio(shared: std::sync::Arc<lease::Shared>) -> anyhow::Result<()> {
    eprintln!(
        "baton mcp: serving MCP on stdio for Baton at {}",
        shared.client.base_url()
    );
    let running = tools::BatonMcp::new(shared)
        .serve(rmcp::transport::stdio())
        .await
        .context("starting the MCP session on stdio")?;
    tokio::select! {
        ended = running.waiting() => { ended.context("the MCP session on stdio")?; }
        () = stopped() => {}
    }
    Ok(())
}

/// SIGINT, or SIGTERM on Unix.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logs on stderr (stdout carries the protocol): warnings, and this command's own lines,
/// unless `RUST_LOG` says otherwise.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,baton=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}
