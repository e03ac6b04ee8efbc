//! `baton cancel`, `retry`, `pause`, `resume`, `skip`, `fail`, `rerun` and `audit`: an
//! operator's events, and the log of them.

use std::path::PathBuf;

use anyhow::Context;
use baton_client::wire::{AuditQuery, ReportAnswer, RerunBody, WorkflowControlAnswer};
use baton_client::Client;
use baton_core::ErrorReport;
use clap::Args;
use serde_json::Value;
use uuid::Uuid;

use super::ids::IdArg;
use super::render::{relative, timestamp, Paint};
use super::{call, print_json};
use crate::Output;

#[derive(Args)]
pub struct RerunArgs {
    /// Task id, or its last hex digits.
    pub id: IdArg,
    /// A new input for the task, as JSON (not for those downstream).
    #[arg(long, value_name = "JSON", conflicts_with = "input_file")]
    pub input: Option<String>,
    /// A new input for the task, from a JSON file.
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// List what would rerun; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why (required): recorded in the audit log.
    #[arg(long, value_name = "R")]
    pub reason: String,
}

#[derive(Args)]
pub struct AuditArgs {
    /// Only actions by this token name.
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Only actions on this workflow (or its tasks).
    #[arg(long, value_name = "ID")]
    pub workflow: Option<IdArg>,
    /// Only this action: pause, resume, skip, fail, rerun, cancel, retry, signal.
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// Only actions within this long before now: `90s`, `15m`, `2h`, `7d`.
    #[arg(long, value_name = "AGO", value_parser = parse_ago)]
    pub since: Option<u64>,
    /// At most this many.
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: u16,
}

/// `90s`, `15m`, `2h`, `7d` as milliseconds.
fn parse_ago(s: &str) -> Result<u64, String> {
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let per = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "expected a number and a unit s, m, h or d, like `2h`; not {s:?}"
            ))
        }
    };
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .ok_or_else(|| format!("expected a number and a unit s, m, h or d, like `2h`; not {s:?}"))
}

/// `baton pause ID [--workflow] [--now] --reason R`.
pub async fn pause(
    client: &Client,
    id: Uuid,
    workflow: bool,
    now: bool,
    reason: &str,
    output: Output,
) -> anyhow::Result<()> {
    if workflow {
        let answer = call(client, client.pause_workflow(id, reason, now)).await?;
        return print_workflow(&answer, "paused", output);
    }
    let answer = call(client, client.pause_task(id, reason, now)).await?;
    print_done(&answer, " paused", output)
}

/// `baton resume ID [--workflow] --reason R`.
pub async fn resume(
    client: &Client,
    id: Uuid,
    workflow: bool,
    reason: &str,
    output: Output,
) -> anyhow::Result<()> {
    if workflow {
        let answer = call(client, client.resume_workflow(id, reason)).await?;
        return print_workflow(&answer, "resumed", output);
    }
    let answer = call(client, client.resume_task(id, reason)).await?;
    print_done(&answer, " resumed", output)
}

/// `baton skip ID --result JSON --reason R`.
pub async fn skip(
    client: &Client,
    id: Uuid,
    result: &str,
    reason: &str,
    output: Output,
) -> anyhow::Result<()> {
    let result: Value = serde_json::from_str(result)
        .context("--result is not valid JSON (quote a string: '\"done\"')")?;
    let answer = call(client, client.skip_task(id, reason, result)).await?;
    print_done(&answer, " skipped", output)
}

/// `baton fail ID [--kind K [--message M]] --reason R`.
pub async fn fail(
    client: &Client,
    id: Uuid,
    kind: Option<String>,
    message: Option<String>,
    reason: &str,
    output: Output,
) -> anyhow::Result<()> {
    let error = kind.map(|kind| ErrorReport {
        kind,
        message: message.unwrap_or_else(|| reason.to_owned()),
        retryable: false,
    });
    let answer = call(client, client.fail_task(id, reason, error)).await?;
    print_done(&answer, " failed", output)
}

/// `baton rerun ID [--input JSON | --input-file F] [--dry-run] --reason R`.
pub async fn rerun(
    client: &Client,
    id: Uuid,
    args: &RerunArgs,
    output: Output,
) -> anyhow::Result<()> {
    let input = match (&args.input, &args.input_file) {
        (Some(json), _) => Some(serde_json::from_str(json).context("--input is not valid JSON")?),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not valid JSON", path.display()))?,
            )
        }
        (None, None) => None,
    };
    let body = RerunBody {
        reason: args.reason.clone(),
        input,
        dry_run: args.dry_run,
    };
    let answer = call(client, client.rerun_task(id, &body)).await?;
    match output {
        Output::Json => print_json(&answer),
        Output::Table => {
            let paint = Paint::stdout();
            let n = answer.tasks.len();
            let verb = if answer.applied {
                "rerunning"
            } else {
                "would rerun"
            };
            println!("{verb} {n} task{}:", if n == 1 { "" } else { "s" });
            for t in &answer.tasks {
                println!("  {}  {}  (was {})", t.id, t.key, paint.state(t.state));
            }
            if !answer.superseded.is_empty() {
                let verb = if answer.applied {
                    "superseded"
                } else {
                    "would supersede"
                };
                println!("{verb} what earlier runs created (fan-out items, sub-tasks):");
                for t in &answer.superseded {
                    println!("  {}  {}  (was {})", t.id, t.key, paint.state(t.state));
                }
            }
            Ok(())
        }
    }
}

/// `baton audit [--actor A] [--workflow W] [--action X] [--since AGO] [--limit N]`.
pub async fn audit(
    client: &Client,
    args: &AuditArgs,
    workflow: Option<Uuid>,
    output: Output,
) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let query = AuditQuery {
        actor: args.actor.clone(),
        workflow,
        action: args.action.clone(),
        since: args.since.map(|ago| now.saturating_sub(ago)),
        limit: Some(usize::from(args.limit)),
        ..AuditQuery::default()
    };
    let page = call(client, client.audit(&query)).await?;
    match output {
        Output::Json => print_json(&page),
        Output::Table => {
            if page.entries.is_empty() {
                println!("No operator actions recorded.");
            }
            for e in &page.entries {
                let target = match (e.task, e.workflow) {
                    (Some(t), _) => format!("task {t}"),
                    (None, Some(w)) => format!("workflow {w}"),
                    (None, None) => String::new(),
                };
                println!(
                    "{} ({})  {:<8} {:<16} {target}  {}  {}",
                    timestamp(e.at),
                    relative(e.at, now),
                    e.action,
                    e.actor,
                    e.reason,
                    e.detail
                );
            }
            Ok(())
        }
    }
}

fn print_workflow(
    answer: &WorkflowControlAnswer,
    verb: &str,
    output: Output,
) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(answer),
        Output::Table => {
            let n = answer.tasks_changed;
            println!(
                "Workflow {}: {verb}, {n} task{} changed",
                answer.workflow,
                if n == 1 { "" } else { "s" }
            );
            Ok(())
        }
    }
}

/// `baton cancel ID [--workflow]`.
pub async fn cancel(
    client: &Client,
    id: Uuid,
    workflow: bool,
    reason: String,
    output: Output,
) -> anyhow::Result<()> {
    if workflow {
        let answer = call(client, client.cancel_workflow(id, &reason)).await?;
        return match output {
            Output::Json => print_json(&answer),
            Output::Table => {
                println!(
                    "Workflow {id}: {} task{} cancelled",
                    answer.cancelled,
                    if answer.cancelled == 1 { "" } else { "s" }
                );
                Ok(())
            }
        };
    }
    let answer = call(client, client.cancel_task(id, &reason)).await?;
    print_answer(&answer, output)
}

/// `baton retry ID`.
pub async fn retry(client: &Client, id: Uuid, output: Output) -> anyhow::Result<()> {
    let answer = call(client, client.retry_task(id)).await?;
    print_answer(&answer, output)
}

fn print_answer(answer: &ReportAnswer, output: Output) -> anyhow::Result<()> {
    print_done(answer, "", output)
}

/// The task's answer after `verb` (e.g. ` paused`): its state, attempt and version.
fn print_done(answer: &ReportAnswer, verb: &str, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(answer),
        Output::Table => {
            println!(
                "Task {}{verb}: {} (attempt {}, version {})",
                answer.task,
                Paint::stdout().state(answer.state),
                answer.attempt,
                answer.version
            );
            Ok(())
        }
    }
}
