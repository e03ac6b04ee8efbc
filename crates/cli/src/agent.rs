//! `baton agent`: turns any program into an agent. A [`Runner`] registers, long-polls for
//! tasks, heartbeats and reports; this module's handler runs the program once per task (input
//! on stdin, result on stdout), stops it when the task is cancelled, its lease lost or the
//! agent stopping, and reads its exit and output as the task's outcome.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use baton_client::wire::ClaimedTask;
use baton_client::{
    Call, Cancel, Client, Observer, Runner, RunnerConfig, RunnerEvent, TaskContext,
};
use baton_core::{Capability, ErrorReport};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::Global;

mod command;

use command::{Outcome, Process, KILL_WAIT, PIPE_DRAIN, STDERR_TAIL_BYTES, STDOUT_BYTES_MAX};

/// How long one claim waits for work (long poll). A first Ctrl-C lets the claim in flight end,
/// so this also bounds how long stopping an idle agent takes.
const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// How often the agent tells the server it is alive, whatever it is doing.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// Bounds of the wait before calling again while the server is unreachable.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(250);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest the agent tries one registration or report while the server cannot be reached
/// (it may still be starting; a wrong `--url` should not wait for ever).
const PATIENCE: Duration = Duration::from_secs(60);
/// Bytes of unparseable stdout quoted in an `invalid_output` failure.
const STDOUT_QUOTE_BYTES: usize = 256;

const AFTER_HELP: &str = "\
For every task it claims, the agent runs COMMAND (in a process group of its own) with
  stdin   the task's input as one line of JSON, then end of file;
  env     BATON_TASK_ID, BATON_TASK_KEY, BATON_WORKFLOW_ID, BATON_ATTEMPT (1 on the first try),
          BATON_IDEMPOTENCY_KEY (the same for every delivery of one attempt: use it to make
          side effects idempotent), TRACEPARENT (W3C trace context of the task), and
          BATON_URL, BATON_AGENT_ID, BATON_LEASE_TOKEN (to call the API about this task
          yourself, e.g. POST /v1/tasks/$BATON_TASK_ID/subtasks to decompose it).

What the command does decides the task's outcome:
  exit 0, JSON on stdout         completed; the JSON is the result
  exit 0, empty stdout or null   completed with the result {}
  exit 0, stdout not JSON        failed, kind invalid_output, not retryable
  stdout beyond 4 MiB            failed, kind output_too_large, not retryable
  exit N (not 0)                 failed, kind exit_N, retryable
  killed by a signal             failed, kind signal, retryable
A failure's message is the last 4 KiB of stderr. Output that is not JSON fails rather than
being wrapped as a string: the result is what dependent tasks read, and a stray line on stdout
is a bug best seen at the task that made it; the same input would make it again, hence not
retryable (programs that answer in text can print it as a JSON string). Whether a retryable
failure is retried is the task's retry policy's decision.

While a command runs the agent heartbeats its task (every --heartbeat-ms, or a third of the
time left before the heartbeat deadline, between 250 ms and 10 s). When an answer says the
task was cancelled or its lease is lost (a 409 such as task_cancelled or stale_lease, a 404),
or the lease runs out while the server cannot be reached, the agent stops the command: SIGTERM
to its process group, SIGKILL after --kill-grace-ms. Nothing is reported for such a task.

Ctrl-C or SIGTERM: stop claiming; running commands have --grace-ms to finish and report;
then they are stopped and their tasks released (back to pending, the attempt not used up).
A second Ctrl-C skips the grace period. Exits 0 after a clean stop.";

/// Runs a program for every task claimed.
#[derive(clap::Args)]
#[command(
    after_help = "See --help for what COMMAND gets and how its exit and output are read.",
    after_long_help = AFTER_HELP
)]
pub struct AgentArgs {
    /// Capability offered (repeatable). Tasks are handed to agents that offer every capability
    /// they require; without any, the agent gets only tasks that require none.
    #[arg(long = "capability", value_name = "NAME")]
    pub capabilities: Vec<String>,
    /// Commands run at once.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(baton_engine::AGENT_CONCURRENCY_MAX)))]
    pub concurrency: u32,
    /// The agent's name (an agent token is bound to a name) [default: COMMAND's file name and
    /// this process's id].
    #[arg(long)]
    pub name: Option<String>,
    /// Heartbeat interval in milliseconds [default: a third of the time left before each
    /// task's heartbeat deadline, between 250 ms and 10 s].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: Option<u64>,
    /// After Ctrl-C or SIGTERM, how long running commands may still finish.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub grace_ms: u64,
    /// How long a command has to exit after SIGTERM before SIGKILL.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub kill_grace_ms: u64,
    /// Start each task in its claim's commit (one round trip and one commit fewer per task).
    /// A task so started whose first heartbeat is late past its start timeout (this agent
    /// killed right after claiming) spends an attempt, where an unstarted one is requeued free.
    #[arg(long)]
    pub start_on_claim: bool,
    /// Send each report in its own request, rather than those that queue while one is in
    /// flight together in one `POST /v1/reports`.
    #[arg(long)]
    pub no_batch: bool,
    /// The program to run for each task, and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub fn run(global: &Global, args: AgentArgs) -> anyhow::Result<ExitCode> {
    init_logs();
    let program = args.command[0].clone();
    check_program(&program)?;
    let client = crate::ops::client(global)?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => default_name(&program),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(work(global.url.clone(), client, name, args))
}

async fn work(
    url: String,
    client: Client,
    name: String,
    args: AgentArgs,
) -> anyhow::Result<ExitCode> {
    let capabilities = args.capabilities.iter().map(|c| Capability(c.clone()));
    let kill_grace = Duration::from_millis(args.kill_grace_ms);
    let mut config = RunnerConfig::new(name, capabilities.collect(), args.concurrency);
    config.claim_wait = CLAIM_WAIT;
    config.heartbeat = args.heartbeat_ms.map(Duration::from_millis);
    config.keepalive = Some(KEEPALIVE);
    config.grace = Duration::from_millis(args.grace_ms);
    // Time for SIGTERM, SIGKILL and the pipes to drain.
    config.cancel_grace = kill_grace + KILL_WAIT + PIPE_DRAIN;
    config.backoff_min = RECONNECT_BACKOFF_MIN;
    config.backoff_max = RECONNECT_BACKOFF_MAX;
    config.patience = PATIENCE;
    config.start_on_claim = args.start_on_claim;
    config.batch_reports = !args.no_batch;
    let logs = Arc::new(Logs {
        server: url.clone(),
        concurrency: args.concurrency,
    });
    let runner = Runner::new(vec![client], config).observed(logs);
    let signals = tokio::spawn(on_signals(
        runner.stop_handle(),
        Duration::from_millis(args.grace_ms),
    ));
    let agent = Arc::new(CommandAgent {
        url,
        program: args.command[0].clone(),
        args: args.command[1..].to_vec(),
        kill_grace,
    });
    let ran = runner
        .run(move |ctx| {
            let agent = Arc::clone(&agent);
            async move { agent.run_task(ctx).await }
        })
        .await;
    signals.abort();
    ran.context("the agent stopped")?;
    info!("agent stopped");
    Ok(ExitCode::SUCCESS)
}

/// First Ctrl-C or SIGTERM: drain; a second one, or the end of the grace period: stop.
async fn on_signals(stop: baton_client::StopHandle, grace: Duration) {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for signals");
            return;
        }
    };
    signals.recv().await;
    info!(
        grace_ms = grace.as_millis() as u64,
        "stopping: no new tasks; running commands may finish (Ctrl-C again to stop them now)"
    );
    stop.stop();
    tokio::select! {
        _ = tokio::time::sleep(grace) => info!("grace period over: stopping the commands still running"),
        _ = signals.recv() => info!("stopping the commands still running"),
    }
    stop.stop_now();
    // Further signals are swallowed: the agent is already stopping as fast as it can.
    loop {
        signals.recv().await;
    }
}

/// The agent's log: what the runner did, one line each.
struct Logs {
    server: String,
    concurrency: u32,
}

impl Observer for Logs {
    fn event(&self, event: RunnerEvent<'_>) {
        match event {
            RunnerEvent::Registered(view) => info!(
                agent = %view.id,
                name = %view.name,
                capabilities = ?view.capabilities,
                concurrency = self.concurrency,
                server = %self.server,
                "agent registered; waiting for tasks"
            ),
            RunnerEvent::Reported {
                task, call, answer, ..
            } => match call {
                Call::Succeeded => info!(task = %task.task, key = %task.key, "task completed"),
                Call::Released => info!(task = %task.task, key = %task.key, "task released"),
                _ => {
                    info!(task = %task.task, key = %task.key, state = %answer.state, "task failed")
                }
            },
            RunnerEvent::Lost {
                task, call, reason, ..
            } => {
                info!(task = %task.task, key = %task.key, report = call.as_str(), reason, "task taken back")
            }
            RunnerEvent::Retrying { task, call, error } => warn!(
                task = ?task.map(|t| t.task),
                call = call.as_str(),
                error = %error,
                "cannot reach the server; trying again"
            ),
            RunnerEvent::Error { task, call, error } => warn!(
                task = ?task.map(|t| t.task),
                call = call.as_str(),
                error = %error,
                "request refused"
            ),
            RunnerEvent::Claimed { .. } | RunnerEvent::Started { .. } => {}
        }
    }
}

/// Runs the command for each task.
struct CommandAgent {
    url: String,
    program: String,
    args: Vec<String>,
    kill_grace: Duration,
}

impl CommandAgent {
    /// Runs the command for one task; its exit and output are the outcome.
    async fn run_task(&self, ctx: TaskContext) -> Result<Value, ErrorReport> {
        let task = ctx.task();
        let mut input = serde_json::to_vec(&task.input).map_err(|e| {
            failure(
                "invalid_input",
                format!("cannot encode the input: {e}"),
                false,
            )
        })?;
        input.push(b'\n');
        let env = self.env(task, ctx.agent());
        let mut process = Process::spawn(&self.program, &self.args, &env, input).map_err(|e| {
            failure(
                "spawn_failed",
                format!("cannot run {}: {e}", self.program),
                true,
            )
        })?;
        let pid = process.pid().unwrap_or_default();
        info!(task = %task.task, key = %task.key, attempt = task.attempt, pid, "command started");
        let cancel = tokio::select! {
            status = process.wait() => {
                let status = status.map_err(|e| {
                    failure("wait_failed", format!("cannot wait for the command: {e}"), true)
                })?;
                let outcome = process.collect(status).await;
                return verdict(&outcome).inspect_err(|e| {
                    info!(task = %task.task, key = %task.key, kind = %e.kind, "command failed");
                });
            }
            cancel = ctx.cancelled() => cancel,
        };
        match &cancel {
            Cancel::Lost(why) => {
                info!(task = %task.task, key = %task.key, reason = %why, pid, "task taken back: stopping its command")
            }
            Cancel::Shutdown => {
                info!(task = %task.task, key = %task.key, pid, "agent stopping: stopping the command")
            }
        }
        match process.terminate(self.kill_grace).await {
            Ok(status) => {
                info!(task = %task.task, key = %task.key, pid, %status, "command stopped");
                let _ = process.collect(status).await;
            }
            Err(e) => {
                error!(task = %task.task, key = %task.key, pid, error = %e, "cannot stop the command")
            }
        }
        // Not reported: the runner releases the task (shutdown) or reports nothing (lost).
        Err(failure("stopped", format!("{cancel:?}"), true))
    }

    fn env(&self, task: &ClaimedTask, agent: uuid::Uuid) -> Vec<(&'static str, String)> {
        vec![
            ("BATON_TASK_ID", task.task.to_string()),
            ("BATON_TASK_KEY", task.key.clone()),
            ("BATON_WORKFLOW_ID", task.workflow.to_string()),
            ("BATON_ATTEMPT", task.attempt.to_string()),
            ("BATON_IDEMPOTENCY_KEY", task.idempotency_key.clone()),
            ("TRACEPARENT", task.traceparent.clone()),
            ("BATON_URL", self.url.clone()),
            ("BATON_AGENT_ID", agent.to_string()),
            ("BATON_LEASE_TOKEN", task.token.to_string()),
        ]
    }
}

/// SIGINT and SIGTERM.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The result a finished command reports, or why it failed.
fn verdict(outcome: &Outcome) -> Result<Value, ErrorReport> {
    let stderr = stderr_text(outcome);
    if outcome.stdout_overflow {
        return Err(failure(
            "output_too_large",
            with_stderr(
                format!("stdout went beyond {STDOUT_BYTES_MAX} bytes"),
                &stderr,
            ),
            false,
        ));
    }
    if !outcome.status.success() {
        let (kind, what) = match outcome.status.code() {
            Some(code) => (format!("exit_{code}"), format!("exited with status {code}")),
            None => ("signal".to_owned(), describe_signal(&outcome.status)),
        };
        let message = if stderr.is_empty() {
            format!("{what}; stderr was empty")
        } else {
            stderr
        };
        return Err(failure(&kind, message, true));
    }
    let text = outcome.stdout.trim_ascii();
    if text.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_slice::<Value>(text) {
        Ok(Value::Null) => Ok(Value::Object(Default::default())),
        Ok(value) => Ok(value),
        Err(e) => {
            let quoted = String::from_utf8_lossy(&text[..text.len().min(STDOUT_QUOTE_BYTES)]);
            let more = if text.len() > STDOUT_QUOTE_BYTES {
                "…"
            } else {
                ""
            };
            Err(failure(
                "invalid_output",
                with_stderr(
                    format!("stdout is not JSON ({e}): {quoted:?}{more}"),
                    &stderr,
                ),
                false,
            ))
        }
    }
}

fn stderr_text(outcome: &Outcome) -> String {
    let text = String::from_utf8_lossy(&outcome.stderr_tail);
    let text = text.trim();
    if outcome.stderr_truncated && !text.is_empty() {
        format!("…{text}")
    } else {
        text.to_owned()
    }
}

fn with_stderr(message: String, stderr: &str) -> String {
    if stderr.is_empty() {
        message
    } else {
        format!("{message}\nstderr (last {STDERR_TAIL_BYTES} bytes):\n{stderr}")
    }
}

fn describe_signal(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    format!("ended without an exit code ({status})")
}

fn failure(kind: &str, message: String, retryable: bool) -> ErrorReport {
    ErrorReport {
        kind: kind.to_owned(),
        message,
        retryable,
    }
}

fn default_name(program: &str) -> String {
    let base = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "agent".to_owned());
    format!("{base}-{}", std::process::id())
}

/// Refuses to start for a command that cannot be found: better now than at every task.
fn check_program(program: &str) -> anyhow::Result<()> {
    let path = Path::new(program);
    if program.contains('/') {
        if !path.is_file() {
            bail!("{program}: no such file");
        }
        return Ok(());
    }
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    if !found {
        bail!("{program}: command not found in PATH");
    }
    Ok(())
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn outcome(code: i32, stdout: &[u8], stderr: &[u8]) -> Outcome {
        use std::os::unix::process::ExitStatusExt;
        Outcome {
            status: std::process::ExitStatus::from_raw(code << 8),
            stdout: stdout.to_vec(),
            stdout_overflow: false,
            stderr_tail: stderr.to_vec(),
            stderr_truncated: false,
        }
    }

    #[cfg(unix)]
    #[test]
    fn verdicts() {
        assert_eq!(
            verdict(&outcome(0, b" {\"a\": 1}\n", b"")).unwrap(),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            verdict(&outcome(0, b"\n", b"")).unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            verdict(&outcome(0, b"null", b"")).unwrap(),
            serde_json::json!({})
        );
        let bad = verdict(&outcome(0, b"hello", b"")).unwrap_err();
        assert_eq!(
            (bad.kind.as_str(), bad.retryable),
            ("invalid_output", false)
        );
        assert!(bad.message.contains("hello"), "{}", bad.message);
        let exit = verdict(&outcome(3, b"{}", b"boom\n")).unwrap_err();
        assert_eq!(
            (exit.kind.as_str(), exit.message.as_str(), exit.retryable),
            ("exit_3", "boom", true)
        );
        let mut big = outcome(0, b"{", b"");
        big.stdout_overflow = true;
        assert_eq!(verdict(&big).unwrap_err().kind, "output_too_large");
    }
}
