//! Operator commands: submit, tasks, show, watch, cancel, retry, pause, resume, skip, fail,
//! rerun, audit, signal, waiting, schedules,
//! triggers, agents, artifact, completions. Every call goes through [`baton_client::Client`]; tables by default, JSON with `--output json`.

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use crate::Global;
use anyhow::Context;
use baton_client::{Client, ClientError};
use baton_core::StateKind;
use clap::{Subcommand, ValueEnum};
use clap_complete::Shell;
use ids::{resolve, IdArg, Kind};

mod artifact;
mod budget;
mod control;
pub(crate) mod ids;
mod inspect;
mod limit;
pub(crate) mod render;
mod schedule;
mod signal;
mod submit;
mod trigger;
mod watch;

/// Exit status when the server refused the request or the input file is invalid.
const EXIT_REFUSED: u8 = 1;
/// Exit status of a usage error (clap's own).
const EXIT_USAGE: u8 = 2;
/// Exit status when the server cannot be reached.
const EXIT_UNREACHABLE: u8 = 3;
/// Exit status of `submit --wait --timeout` (or `triggers fire --wait --timeout`) when the
/// workflow is still running.
const EXIT_TIMED_OUT: u8 = 4;
/// Longest wait for one answer from the server.
const REQUEST_TIME_MAX: Duration = Duration::from_secs(30);

/// The exit statuses and where the server is, at the end of `baton --help`.
const EXIT_CODES: &str = "\
Exit status of the client commands:
  0  success
  1  the server refused the request (the reason is printed), or the input file is invalid;
     `submit --wait`, `triggers fire --wait`: the workflow failed or was cancelled
  2  usage error
  3  the server cannot be reached (or did not answer in time)
  4  `--wait --timeout`: the workflow is still running

The server is --url or BATON_URL; the token --token or BATON_TOKEN.";

/// The operator commands, each a top-level subcommand of `baton`.
#[derive(Subcommand)]
#[command(after_help = EXIT_CODES)]
pub enum OpsCommand {
    /// Submit a workflow file (YAML or JSON), checked locally first.
    Submit(submit::SubmitArgs),
    /// List tasks.
    Tasks(inspect::TasksArgs),
    /// Show a task (state, attempts, lease, deadlines, result or errors, why it waits,
    /// history), or a workflow (status, counts, result).
    Show {
        /// Task or workflow id (or its last hex digits, at least 4).
        id: IdArg,
    },
    /// List workflows, newest first: status, progress, name.
    Workflows {
        /// At most this many.
        #[arg(long, value_name = "N", default_value_t = 20,
              value_parser = clap::value_parser!(u16).range(1..=100))]
        limit: u16,
        /// Only those with this status: running, completed, failed or cancelled.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// Only those whose name contains this (ignoring case).
        #[arg(long, value_name = "TEXT")]
        name: Option<String>,
        /// Only those carrying this label, `key:value`.
        #[arg(long, value_name = "KEY:VALUE")]
        label: Option<String>,
    },
    /// Follow transitions live: counts per state and the latest transitions.
    Watch {
        /// Only this workflow's tasks.
        #[arg(long, value_name = "ID")]
        workflow: Option<IdArg>,
    },
    /// Cancel a task, or a whole workflow with --workflow.
    Cancel {
        /// Task id (workflow id with --workflow), or its last hex digits.
        id: IdArg,
        /// ID is a workflow: cancel every task of it that has not ended.
        #[arg(long)]
        workflow: bool,
        /// Why, recorded in the history.
        #[arg(long, value_name = "R")]
        reason: Option<String>,
    },
    /// Reopen a task that failed for good, with a fresh budget of attempts.
    Retry {
        /// Task id, or its last hex digits.
        id: IdArg,
    },
    /// Pause a task, or a whole workflow with --workflow: no agent is handed it and its
    /// timers stand still until resumed. A running agent finishes unless --now.
    Pause {
        /// Task id (workflow id with --workflow), or its last hex digits.
        id: IdArg,
        /// ID is a workflow: pause every task of it that has not ended, and those created later.
        #[arg(long)]
        workflow: bool,
        /// Take tasks agents hold back at once (their leases are revoked).
        #[arg(long)]
        now: bool,
        /// Why (required): recorded in the audit log.
        #[arg(long, value_name = "R")]
        reason: String,
    },
    /// Resume a paused task, or a whole workflow with --workflow: timers go on with the
    /// time they had left.
    Resume {
        /// Task id (workflow id with --workflow), or its last hex digits.
        id: IdArg,
        /// ID is a workflow: resume every paused task of it.
        #[arg(long)]
        workflow: bool,
        /// Why (required): recorded in the audit log.
        #[arg(long, value_name = "R")]
        reason: String,
    },
    /// Complete a task with a result in place of an agent: its dependents proceed.
    Skip {
        /// Task id, or its last hex digits.
        id: IdArg,
        /// The result, as JSON (any value but null).
        #[arg(long, value_name = "JSON")]
        result: String,
        /// Why (required): recorded in the audit log.
        #[arg(long, value_name = "R")]
        reason: String,
    },
    /// Fail a task for good: no retry; its dependents are cancelled and it compensates.
    Fail {
        /// Task id, or its last hex digits.
        id: IdArg,
        /// Error kind recorded (default `forced`).
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// Error message recorded (default: who failed it and why).
        #[arg(long, value_name = "TEXT", requires = "kind")]
        message: Option<String>,
        /// Why (required): recorded in the audit log.
        #[arg(long, value_name = "R")]
        reason: String,
    },
    /// Rerun a task and everything downstream of it, with fresh attempts; upstream keeps its
    /// results. --dry-run lists what would rerun.
    Rerun(control::RerunArgs),
    /// The audit log: every operator action, newest first.
    Audit(control::AuditArgs),
    /// Set a workflow's budgets on what its agents spend (replacing them), or show them.
    Budget(budget::BudgetArgs),
    /// What agents have reported spending, per unit: over every workflow, or one label's.
    Usage {
        /// Only workflows carrying this label, `key:value`.
        #[arg(long, value_name = "KEY:VALUE")]
        label: Option<String>,
    },
    /// Send a signal to a workflow: complete (or with --reject, fail) its tasks waiting for it.
    Signal(signal::SignalArgs),
    /// List the tasks waiting for a signal (what people are asked to approve).
    Waiting {
        /// Only this workflow's tasks.
        #[arg(long, value_name = "ID")]
        workflow: Option<IdArg>,
    },
    /// Schedules: list (the default), create FILE, show, pause, resume, delete.
    Schedules {
        #[command(subcommand)]
        command: Option<schedule::ScheduleCommand>,
    },
    /// Triggers: list (the default), put NAME FILE, show, fire NAME --input JSON, delete.
    Triggers {
        #[command(subcommand)]
        command: Option<trigger::TriggerCommand>,
    },
    /// Named rate limits that tasks draw from (`rate` in a task's spec): list, set, show,
    /// delete.
    Limits {
        #[command(subcommand)]
        command: Option<limit::LimitCommand>,
    },
    /// List agents: online or not, capabilities, the tasks they hold.
    Agents,
    /// Upload or download an artifact: large data that inputs and results refer to as
    /// `{"$artifact": "sha256:…"}`.
    Artifact {
        #[command(subcommand)]
        command: artifact::ArtifactCommand,
    },
    /// Print a shell completion script.
    ///
    /// For example `baton completions bash > /etc/bash_completion.d/baton`, or
    /// `baton completions zsh > "${fpath[1]}/_baton"`.
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// A task state, as given on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StateArg {
    Blocked,
    Pending,
    Assigned,
    Executing,
    Completed,
    Failed,
    Cancelled,
}

impl From<StateArg> for StateKind {
    fn from(s: StateArg) -> StateKind {
        match s {
            StateArg::Blocked => StateKind::Blocked,
            StateArg::Pending => StateKind::Pending,
            StateArg::Assigned => StateKind::Assigned,
            StateArg::Executing => StateKind::Executing,
            StateArg::Completed => StateKind::Completed,
            StateArg::Failed => StateKind::Failed,
            StateArg::Cancelled => StateKind::Cancelled,
        }
    }
}

/// Runs one operator command; failures are printed here and become the exit status.
pub fn run(global: &Global, cmd: OpsCommand) -> anyhow::Result<ExitCode> {
    let result = match cmd {
        OpsCommand::Completions { shell } => completions(shell),
        OpsCommand::Submit(args) if args.dry_run => submit::check(&args, global.output),
        cmd => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?
            .block_on(dispatch(global, cmd)),
    };
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(report(&e)),
    })
}

async fn dispatch(global: &Global, cmd: OpsCommand) -> anyhow::Result<()> {
    let client = client(global)?;
    let output = global.output;
    match cmd {
        OpsCommand::Submit(args) => submit::submit(&client, &args, output).await,
        OpsCommand::Tasks(args) => inspect::tasks(&client, &args, output).await,
        OpsCommand::Show { id } => {
            let id = resolve(&client, &id, Kind::Either).await?;
            inspect::show(&client, id, output).await
        }
        OpsCommand::Watch { workflow } => {
            let workflow = resolve_opt(&client, workflow.as_ref(), Kind::Workflow).await?;
            watch::watch(&client, workflow, output).await
        }
        OpsCommand::Cancel {
            id,
            workflow,
            reason,
        } => {
            let kind = if workflow { Kind::Workflow } else { Kind::Task };
            let id = resolve(&client, &id, kind).await?;
            control::cancel(&client, id, workflow, reason.unwrap_or_default(), output).await
        }
        OpsCommand::Retry { id } => {
            let id = resolve(&client, &id, Kind::Task).await?;
            control::retry(&client, id, output).await
        }
        OpsCommand::Pause {
            id,
            workflow,
            now,
            reason,
        } => {
            let kind = if workflow { Kind::Workflow } else { Kind::Task };
            let id = resolve(&client, &id, kind).await?;
            control::pause(&client, id, workflow, now, &reason, output).await
        }
        OpsCommand::Resume {
            id,
            workflow,
            reason,
        } => {
            let kind = if workflow { Kind::Workflow } else { Kind::Task };
            let id = resolve(&client, &id, kind).await?;
            control::resume(&client, id, workflow, &reason, output).await
        }
        OpsCommand::Skip { id, result, reason } => {
            let id = resolve(&client, &id, Kind::Task).await?;
            control::skip(&client, id, &result, &reason, output).await
        }
        OpsCommand::Fail {
            id,
            kind,
            message,
            reason,
        } => {
            let id = resolve(&client, &id, Kind::Task).await?;
            control::fail(&client, id, kind, message, &reason, output).await
        }
        OpsCommand::Rerun(args) => {
            let id = resolve(&client, &args.id, Kind::Task).await?;
            control::rerun(&client, id, &args, output).await
        }
        OpsCommand::Audit(args) => {
            let workflow = resolve_opt(&client, args.workflow.as_ref(), Kind::Workflow).await?;
            control::audit(&client, &args, workflow, output).await
        }
        OpsCommand::Budget(args) => {
            let id = resolve(&client, &args.workflow, Kind::Workflow).await?;
            budget::budget(&client, id, &args, output).await
        }
        OpsCommand::Usage { label } => budget::usage(&client, label.as_deref(), output).await,
        OpsCommand::Agents => inspect::agents(&client, output).await,
        OpsCommand::Signal(args) => signal::signal(&client, &args, output).await,
        OpsCommand::Schedules { command } => schedule::run(&client, command, output).await,
        OpsCommand::Triggers { command } => trigger::run(&client, command, output).await,
        OpsCommand::Limits { command } => limit::run(&client, command, output).await,
        OpsCommand::Waiting { workflow } => {
            let workflow = resolve_opt(&client, workflow.as_ref(), Kind::Workflow).await?;
            signal::waiting(&client, workflow, output).await
        }
        OpsCommand::Workflows {
            limit,
            status,
            name,
            label,
        } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(
                    serde_json::from_value::<baton_client::wire::WorkflowStatusView>(
                        serde_json::json!(s),
                    )
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "--status: expected running, completed, failed or cancelled, not {s:?}"
                        )
                    })?,
                ),
            };
            let q = baton_client::wire::WorkflowListQuery {
                limit: Some(usize::from(limit)),
                status,
                name,
                label,
                ..Default::default()
            };
            inspect::workflows(&client, &q, output).await
        }
        OpsCommand::Artifact { command } => artifact::run(&client, command, output).await,
        OpsCommand::Completions { .. } => unreachable!("completions need no server"),
    }
}

/// [`resolve`] for an optional id.
async fn resolve_opt(
    client: &Client,
    arg: Option<&IdArg>,
    kind: Kind,
) -> anyhow::Result<Option<uuid::Uuid>> {
    match arg {
        Some(arg) => resolve(client, arg, kind).await.map(Some),
        None => Ok(None),
    }
}

/// The client of `--url`, `--token` and `--ca-cert`.
pub(crate) fn client(global: &Global) -> Result<Client, ClientError> {
    let client = match &global.ca_cert {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Local(format!("reading --ca-cert {}: {e}", path.display()))
            })?;
            Client::with_ca_pem(&global.url, &pem)?
        }
        None => Client::new(&global.url)?,
    };
    Ok(match global.token.as_deref() {
        Some(token) if !token.is_empty() => client.with_token(token),
        _ => client,
    })
}

/// The server gave no answer within [`REQUEST_TIME_MAX`].
#[derive(Debug, thiserror::Error)]
#[error("no answer from Baton at {url} within {}s", REQUEST_TIME_MAX.as_secs())]
struct NoAnswer {
    url: String,
}

/// Awaits one request, at most [`REQUEST_TIME_MAX`].
async fn call<T>(
    client: &Client,
    request: impl Future<Output = baton_client::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(REQUEST_TIME_MAX, request).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(NoAnswer {
            url: client.base_url().to_owned(),
        }
        .into()),
    }
}

/// Prints `value` as pretty JSON on standard output.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Prints a failure on standard error and returns the exit status it calls for. A closed
/// output (`baton tasks --all | head`) is no failure.
fn report(err: &anyhow::Error) -> u8 {
    let broken_pipe = err
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe);
    if broken_pipe {
        return 0;
    }
    let paint = render::Paint::stderr();
    let label = paint.paint(render::Color::Red, "error:");
    let client_error = err.chain().find_map(|e| e.downcast_ref::<ClientError>());
    let (message, status) = match client_error {
        Some(ClientError::Api(p)) => {
            let mut text = format!("{}\n  refused: {} {}", p.detail, p.status, p.code);
            if let Some(state) = &p.state {
                text.push_str(&format!(", task state {state}"));
            }
            if let Some(rule) = p.rule.as_ref().filter(|r| **r != p.code) {
                text.push_str(&format!(", rule {rule}"));
            }
            if let (Some(field), Some(expected)) = (&p.field, &p.expected) {
                text.push_str(&format!("\n  field `{field}`: expected {expected}"));
            }
            (text, EXIT_REFUSED)
        }
        Some(ClientError::Transport { url, source }) => {
            let mut cause: &dyn std::error::Error = source;
            while let Some(deeper) = cause.source() {
                cause = deeper;
            }
            (
                format!(
                    "cannot reach Baton at {url}: {cause}\n  is `baton serve` running there? \
                     Set the address with --url or BATON_URL."
                ),
                EXIT_UNREACHABLE,
            )
        }
        Some(ClientError::InvalidUrl(_)) => (format!("{err:#}"), EXIT_USAGE),
        _ if err.chain().any(|e| e.is::<NoAnswer>()) => (format!("{err:#}"), EXIT_UNREACHABLE),
        _ if err
            .chain()
            .filter_map(|e| e.downcast_ref::<submit::NotCompleted>())
            .any(|e| matches!(e, submit::NotCompleted::TimedOut { .. })) =>
        {
            (format!("{err:#}"), EXIT_TIMED_OUT)
        }
        _ => (format!("{err:#}"), EXIT_REFUSED),
    };
    eprintln!("{label} {message}");
    status
}

fn completions(shell: Shell) -> anyhow::Result<()> {
    let mut cmd = crate::command();
    clap_complete::generate(shell, &mut cmd, "baton", &mut std::io::stdout());
    Ok(())
}
