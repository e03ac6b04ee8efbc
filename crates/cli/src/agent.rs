//! `baton agent`: turns any program into an agent. It registers, long-polls for tasks, runs the
//! program once per task (input on stdin, result on stdout), heartbeats while it runs, stops it
//! when the task is cancelled or the lease is lost, and reports the outcome.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use baton_client::wire::{ClaimedTask, DeadlinesView, ReportAnswer};
use baton_client::{Client, ClientError};
use baton_core::{Capability, ErrorReport};
use serde_json::Value;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::Global;

mod command;

use command::{Outcome, Process, STDERR_TAIL_BYTES, STDOUT_BYTES_MAX};

/// How long one claim waits for work (long poll). A first Ctrl-C lets the claim in flight end,
/// so this also bounds how long stopping an idle agent takes.
const CLAIM_WAIT: Duration = Duration::from_secs(2);
/// Most tasks one claim asks for (the server's own limit).
const CLAIM_TASKS_MAX: usize = baton_engine::CLAIM_TASKS_MAX;
/// How often the agent tells the server it is alive, whatever it is doing.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// Bounds of the heartbeat interval derived from a task's heartbeat deadline.
const HEARTBEAT_MIN: Duration = Duration::from_millis(250);
const HEARTBEAT_MAX: Duration = Duration::from_secs(10);
/// Wait before trying a heartbeat again after the server could not be reached.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(500);
/// Longest any single request may take (claims: their wait on top).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries of one report (started, succeeded, failed, released) while the server is unreachable.
const REPORT_ATTEMPTS_MAX: u32 = 5;
/// First wait between tries of a report; doubles each time.
const REPORT_BACKOFF: Duration = Duration::from_millis(200);
/// Bounds of the wait before registering or claiming again while the server is unreachable.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(250);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest the agent waits for the server to answer its registration before giving up (the
/// server may still be starting; a wrong `--url` should not wait for ever).
const REGISTER_PATIENCE: Duration = Duration::from_secs(60);
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
    /// The program to run for each task, and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Where the agent is in its life: working, draining after a first signal, or stopping the
/// commands still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
    Stopping,
}

/// What every task runner shares.
struct Agent {
    client: Client,
    id: Uuid,
    url: String,
    program: String,
    args: Vec<String>,
    heartbeat: Option<Duration>,
    kill_grace: Duration,
    phase: watch::Receiver<Phase>,
}

/// Why a command was stopped before it ended by itself.
enum Stop {
    /// The task was cancelled or its lease lost: report nothing.
    Revoked(String),
    /// The agent is shutting down: release the task.
    Shutdown,
}

pub fn run(global: &Global, args: AgentArgs) -> anyhow::Result<ExitCode> {
    init_logs();
    let program = args.command[0].clone();
    check_program(&program)?;
    let mut client = Client::new(&global.url)?;
    if let Some(token) = &global.token {
        client = client.with_token(token.clone());
    }
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
    let (phase_tx, phase) = watch::channel(Phase::Running);
    let phase_tx = Arc::new(phase_tx);
    let signals = tokio::spawn(on_signals(
        Arc::clone(&phase_tx),
        Duration::from_millis(args.grace_ms),
    ));
    let capabilities: Vec<Capability> = args
        .capabilities
        .iter()
        .map(|c| Capability(c.clone()))
        .collect();
    let Some(view) = register(
        &client,
        &name,
        &capabilities,
        args.concurrency,
        phase.clone(),
    )
    .await?
    else {
        info!("stopped before registering");
        return Ok(ExitCode::SUCCESS);
    };
    info!(
        agent = %view.id,
        name = %view.name,
        capabilities = ?args.capabilities,
        concurrency = args.concurrency,
        server = %url,
        "agent registered; waiting for tasks"
    );
    let agent = Arc::new(Agent {
        client: client.clone(),
        id: view.id,
        url,
        program: args.command[0].clone(),
        args: args.command[1..].to_vec(),
        heartbeat: args.heartbeat_ms.map(Duration::from_millis),
        kill_grace: Duration::from_millis(args.kill_grace_ms),
        phase,
    });
    let keepalive = tokio::spawn(keep_alive(client, view.id));
    let slots = Arc::new(Semaphore::new(args.concurrency as usize));
    let mut tasks = JoinSet::new();
    let claimed = claim_loop(&agent, &slots, &mut tasks).await;
    if claimed.is_err() {
        // The server will not take reports from this agent either: stop what runs now.
        phase_tx.send_replace(Phase::Stopping);
    }
    if !tasks.is_empty() {
        info!(running = tasks.len(), "waiting for running commands");
    }
    while tasks.join_next().await.is_some() {}
    keepalive.abort();
    signals.abort();
    match claimed {
        Ok(()) => {
            info!("agent stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

/// First Ctrl-C or SIGTERM: drain; a second one, or the end of the grace period: stop.
async fn on_signals(phase: Arc<watch::Sender<Phase>>, grace: Duration) {
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
    phase.send_replace(Phase::Draining);
    tokio::select! {
        _ = tokio::time::sleep(grace) => info!("grace period over: stopping the commands still running"),
        _ = signals.recv() => info!("stopping the commands still running"),
    }
    phase.send_replace(Phase::Stopping);
    // Further signals are swallowed: the agent is already stopping as fast as it can.
    loop {
        signals.recv().await;
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

/// Registers, waiting up to [`REGISTER_PATIENCE`] for the server to come up if it cannot be
/// reached; `None` if a signal came first.
async fn register(
    client: &Client,
    name: &str,
    capabilities: &[Capability],
    concurrency: u32,
    mut phase: watch::Receiver<Phase>,
) -> anyhow::Result<Option<baton_client::wire::AgentView>> {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let give_up = Instant::now() + REGISTER_PATIENCE;
    loop {
        let attempt = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.register_agent(name, capabilities, concurrency),
        );
        let error = tokio::select! {
            r = attempt => match r {
                Ok(Ok(view)) => return Ok(Some(view)),
                Ok(Err(e)) if transient(&e) => e.to_string(),
                Ok(Err(e)) => return Err(e).context("registering the agent"),
                Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
            },
            _ = phase.wait_for(|p| *p != Phase::Running) => return Ok(None),
        };
        if Instant::now() + backoff > give_up {
            bail!("cannot register with {}: {error}", client.base_url());
        }
        warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "cannot register yet");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = phase.wait_for(|p| *p != Phase::Running) => return Ok(None),
        }
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

async fn keep_alive(client: Client, agent: Uuid) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.tick().await;
    loop {
        tick.tick().await;
        match tokio::time::timeout(REQUEST_TIMEOUT, client.agent_heartbeat(agent)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "keep-alive failed"),
            Err(_) => warn!("keep-alive got no answer within {REQUEST_TIMEOUT:?}"),
        }
    }
}

/// Claims while running, as many tasks as there are free slots. Returns when draining starts
/// (a claim in flight is let finish and what it brings is released at once; only a second
/// signal abandons it, and the tasks it assigned go back to pending at their start deadline),
/// or with the error that makes claiming pointless (the server forgot the agent, a token is
/// refused). While the server cannot be reached it tries again, backing off.
async fn claim_loop(
    agent: &Arc<Agent>,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let mut phase = agent.phase.clone();
    let mut backoff = RECONNECT_BACKOFF_MIN;
    loop {
        while tasks.try_join_next().is_some() {}
        if *phase.borrow() != Phase::Running {
            return Ok(());
        }
        let first = tokio::select! {
            p = Arc::clone(slots).acquire_owned() => p.context("the slots closed")?,
            _ = phase.wait_for(|p| *p != Phase::Running) => return Ok(()),
        };
        let mut permits = vec![first];
        while permits.len() < CLAIM_TASKS_MAX {
            match Arc::clone(slots).try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let claim = tokio::time::timeout(
            CLAIM_WAIT + REQUEST_TIMEOUT,
            agent.client.claim(agent.id, permits.len(), CLAIM_WAIT),
        );
        let claimed = tokio::select! {
            r = claim => r,
            _ = phase.wait_for(|p| *p == Phase::Stopping) => return Ok(()),
        };
        let error = match claimed {
            Ok(Ok(claimed)) => {
                backoff = RECONNECT_BACKOFF_MIN;
                let draining = *agent.phase.borrow() != Phase::Running;
                for task in claimed {
                    let permit = permits.pop().expect("no more tasks than permits");
                    let agent = Arc::clone(agent);
                    if draining {
                        tasks.spawn(async move { agent.release(&task, "stopping").await });
                    } else {
                        tasks.spawn(async move { agent.run_task(task, permit).await });
                    }
                }
                continue;
            }
            Ok(Err(e)) if transient(&e) => e.to_string(),
            Ok(Err(e)) => return Err(e).context("claiming tasks"),
            Err(_) => format!("no answer within {:?}", CLAIM_WAIT + REQUEST_TIMEOUT),
        };
        drop(permits);
        warn!(error = %error, retry_in_ms = backoff.as_millis() as u64, "cannot claim");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = phase.wait_for(|p| *p != Phase::Running) => return Ok(()),
        }
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

impl Agent {
    /// Runs the command for one task and reports how it ended.
    async fn run_task(self: Arc<Self>, task: ClaimedTask, _slot: OwnedSemaphorePermit) {
        let started = match self
            .report(&task, "started", || self.client.started(&task, self.id))
            .await
        {
            Some(answer) if !answer.cancelled => answer,
            _ => return,
        };
        let input = match serde_json::to_vec(&task.input) {
            Ok(mut bytes) => {
                bytes.push(b'\n');
                bytes
            }
            Err(e) => {
                let error = failure(
                    "invalid_input",
                    format!("cannot encode the input: {e}"),
                    false,
                );
                self.fail(&task, error).await;
                return;
            }
        };
        let env = self.env(&task);
        let mut process = match Process::spawn(&self.program, &self.args, &env, input) {
            Ok(p) => p,
            Err(e) => {
                let error = failure(
                    "spawn_failed",
                    format!("cannot run {}: {e}", self.program),
                    true,
                );
                self.fail(&task, error).await;
                return;
            }
        };
        let pid = process.pid().unwrap_or_default();
        info!(task = %task.task, key = %task.key, attempt = task.attempt, pid, "command started");
        let stop = match self
            .supervise(&task, &started.deadlines, &mut process)
            .await
        {
            Ok(status) => {
                let outcome = process.collect(status).await;
                self.finish(&task, outcome).await;
                return;
            }
            Err(stop) => stop,
        };
        match &stop {
            Stop::Revoked(why) => {
                info!(task = %task.task, key = %task.key, reason = %why, pid, "task taken back: stopping its command")
            }
            Stop::Shutdown => {
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
        if let Stop::Shutdown = stop {
            self.release(&task, "agent stopping").await;
        }
    }

    /// Heartbeats while the command runs. `Ok` when it exited by itself; `Err` when it must be
    /// stopped.
    async fn supervise(
        &self,
        task: &ClaimedTask,
        deadlines: &DeadlinesView,
        process: &mut Process,
    ) -> Result<std::process::ExitStatus, Stop> {
        let mut phase = self.phase.clone();
        let mut lease_until = lease_deadline(deadlines);
        let mut next = Instant::now() + self.heartbeat_interval(deadlines);
        loop {
            tokio::select! {
                status = process.wait() => {
                    return status.map_err(|e| Stop::Revoked(format!("cannot wait for the command: {e}")));
                }
                _ = tokio::time::sleep_until(next) => {}
                _ = phase.wait_for(|p| *p == Phase::Stopping) => return Err(Stop::Shutdown),
            }
            let beat =
                tokio::time::timeout(REQUEST_TIMEOUT, self.client.heartbeat(task, self.id, None))
                    .await;
            match beat {
                Ok(Ok(answer)) => {
                    if let Some(why) = revoked(task, &answer) {
                        return Err(Stop::Revoked(why));
                    }
                    lease_until = lease_deadline(&answer.deadlines).or(lease_until);
                    next = Instant::now() + self.heartbeat_interval(&answer.deadlines);
                }
                Ok(Err(e)) if !transient(&e) => {
                    return Err(Stop::Revoked(e.code().unwrap_or("refused").to_owned()));
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {REQUEST_TIMEOUT:?}"),
                    };
                    if lease_until.is_some_and(|t| now_ms() > t) {
                        return Err(Stop::Revoked(format!(
                            "lease ran out while the server could not be reached ({why})"
                        )));
                    }
                    warn!(task = %task.task, error = %why, "heartbeat failed; trying again");
                    next = Instant::now() + HEARTBEAT_RETRY;
                }
            }
        }
    }

    fn heartbeat_interval(&self, deadlines: &DeadlinesView) -> Duration {
        if let Some(fixed) = self.heartbeat {
            return fixed;
        }
        match deadlines.heartbeat {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms()) / 3)
                .clamp(HEARTBEAT_MIN, HEARTBEAT_MAX),
            None => HEARTBEAT_MAX,
        }
    }

    fn env(&self, task: &ClaimedTask) -> Vec<(&'static str, String)> {
        vec![
            ("BATON_TASK_ID", task.task.to_string()),
            ("BATON_TASK_KEY", task.key.clone()),
            ("BATON_WORKFLOW_ID", task.workflow.to_string()),
            ("BATON_ATTEMPT", task.attempt.to_string()),
            ("BATON_IDEMPOTENCY_KEY", task.idempotency_key.clone()),
            ("TRACEPARENT", task.traceparent.clone()),
            ("BATON_URL", self.url.clone()),
            ("BATON_AGENT_ID", self.id.to_string()),
            ("BATON_LEASE_TOKEN", task.token.to_string()),
        ]
    }

    /// Reports what the command's exit and output mean for the task.
    async fn finish(&self, task: &ClaimedTask, outcome: Outcome) {
        let result = match verdict(&outcome) {
            Ok(result) => result,
            Err(error) => return self.fail(task, error).await,
        };
        let refused = match self
            .send(|| self.client.succeeded(task, self.id, result.clone()))
            .await
        {
            Ok(_) => {
                info!(task = %task.task, key = %task.key, "task completed");
                return;
            }
            Err(e) => e,
        };
        match refused.status() {
            Some(413 | 422) => {
                let error = failure(
                    "result_refused",
                    format!("the server refused the result: {refused}"),
                    false,
                );
                self.fail(task, error).await;
            }
            _ => warn!(task = %task.task, key = %task.key, error = %refused, "result not reported"),
        }
    }

    async fn fail(&self, task: &ClaimedTask, error: ErrorReport) {
        let kind = error.kind.clone();
        if self
            .report(task, "failed", || {
                self.client.failed(task, self.id, error.clone())
            })
            .await
            .is_some()
        {
            info!(task = %task.task, key = %task.key, kind = %kind, "task failed");
        }
    }

    async fn release(&self, task: &ClaimedTask, why: &str) {
        if self
            .report(task, "released", || self.client.released(task, self.id))
            .await
            .is_some()
        {
            info!(task = %task.task, key = %task.key, reason = why, "task released");
        }
    }

    /// Sends a report, logging a refusal; `None` if it was not accepted.
    async fn report<F, Fut>(&self, task: &ClaimedTask, what: &str, call: F) -> Option<ReportAnswer>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = baton_client::Result<ReportAnswer>>,
    {
        match self.send(call).await {
            Ok(answer) => Some(answer),
            Err(e) => {
                warn!(task = %task.task, key = %task.key, report = what, error = %e, "report not accepted");
                None
            }
        }
    }

    /// Sends a report, trying again while the server cannot be reached. Reports are
    /// idempotent: the server answers a repeated one without applying it twice.
    async fn send<F, Fut>(&self, call: F) -> baton_client::Result<ReportAnswer>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = baton_client::Result<ReportAnswer>>,
    {
        let mut wait = REPORT_BACKOFF;
        let mut tries = 1;
        loop {
            let error = match tokio::time::timeout(REQUEST_TIMEOUT, call()).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) if !transient(&e) || tries >= REPORT_ATTEMPTS_MAX => return Err(e),
                Ok(Err(e)) => e.to_string(),
                Err(_) if tries >= REPORT_ATTEMPTS_MAX => {
                    return Err(ClientError::Decode {
                        url: self.url.clone(),
                        detail: format!("no answer within {REQUEST_TIMEOUT:?}"),
                    })
                }
                Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
            };
            warn!(error = %error, retry_in_ms = wait.as_millis() as u64, "report failed; trying again");
            tokio::time::sleep(wait).await;
            wait *= 2;
            tries += 1;
        }
    }
}

/// Why a heartbeat's answer means the work must stop, if it does.
fn revoked(task: &ClaimedTask, answer: &ReportAnswer) -> Option<String> {
    if answer.cancelled {
        Some("task_cancelled".into())
    } else if answer.token != task.token {
        Some(format!(
            "stale_lease (token {} is now {})",
            task.token, answer.token
        ))
    } else {
        None
    }
}

/// When the lease runs out unless renewed: the heartbeat deadline, else the execution's.
fn lease_deadline(deadlines: &DeadlinesView) -> Option<u64> {
    deadlines.heartbeat.or(deadlines.start_to_close)
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

/// Errors worth trying again: the server is unreachable, overloaded or restarting.
fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        ClientError::Api(p) => matches!(p.status, 429 | 500 | 502 | 503 | 504),
        ClientError::Decode { .. } | ClientError::InvalidUrl(_) => false,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
