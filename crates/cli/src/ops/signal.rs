//! `baton signal` and `baton waiting`: what people and outside systems send to tasks that wait
//! for them.

use anyhow::Context;
use baton_client::Client;
use clap::Args;
use serde_json::{json, Value};
use uuid::Uuid;

use super::ids::{resolve, IdArg, Kind};
use super::render::{relative, short_id, timestamp};
use super::{call, print_json};
use crate::Output;

/// `baton signal WORKFLOW NAME [--data JSON | --reject REASON]`.
#[derive(Args)]
pub struct SignalArgs {
    /// The workflow's id, or its last hex digits.
    pub workflow: IdArg,
    /// The signal's name (what the tasks' `wait_for.signal` says).
    pub name: String,
    /// The data that completes the waiting tasks (their result), as JSON; `{}` if absent.
    #[arg(long, value_name = "JSON", conflicts_with = "reject")]
    pub data: Option<String>,
    /// Fail the waiting tasks instead (error kind `rejected`), for this reason.
    #[arg(long, value_name = "REASON")]
    pub reject: Option<String>,
    /// Send it once, however often the command is repeated with the same key.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

pub async fn signal(client: &Client, args: &SignalArgs, output: Output) -> anyhow::Result<()> {
    let body = match (&args.reject, &args.data) {
        (Some(reason), _) => json!({ "reject": reason }),
        (None, Some(data)) => {
            let data: Value = serde_json::from_str(data).context("--data is not valid JSON")?;
            // Data that would read as a rejection is sent as it is.
            json!({ "$literal": data })
        }
        (None, None) => json!({}),
    };
    let workflow = resolve(client, &args.workflow, Kind::Workflow).await?;
    let sent = call(
        client,
        client.signal(workflow, &args.name, &body, args.idempotency_key.as_deref()),
    )
    .await?;
    match output {
        Output::Json => print_json(&sent),
        Output::Table => {
            let verb = if args.reject.is_some() {
                "rejected"
            } else {
                "completed"
            };
            if !sent.created {
                println!(
                    "Signal `{}` was sent before with this key (signal {}); nothing more done.",
                    args.name, sent.signal.id
                );
            } else if sent.delivered_to.is_empty() {
                println!(
                    "Signal `{}` kept (signal {}): no task waits for it yet; the next one that does takes it.",
                    args.name, sent.signal.id
                );
            } else {
                for t in &sent.delivered_to {
                    println!("{verb} {} {}", short_id(&t.id), t.key);
                }
            }
            Ok(())
        }
    }
}

/// `baton waiting [--workflow ID]`.
pub async fn waiting(
    client: &Client,
    workflow: Option<Uuid>,
    output: Output,
) -> anyhow::Result<()> {
    let page = call(client, client.waiting(workflow, None, 1_000)).await?;
    match output {
        Output::Json => print_json(&page),
        Output::Table => {
            if page.tasks.is_empty() {
                println!("No task waits for a signal.");
                return Ok(());
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or_default();
            println!(
                "{:<8}  {:<24}  {:<16}  {:<8}  {:<20}  UNTIL",
                "TASK", "KEY", "SIGNAL", "WORKFLOW", "SINCE"
            );
            for t in &page.tasks {
                println!(
                    "{:<8}  {:<24}  {:<16}  {:<8}  {:<20}  {}",
                    short_id(&t.id),
                    t.key,
                    t.signal,
                    short_id(&t.workflow),
                    relative(t.since, now),
                    t.until
                        .map(|u| format!("{} ({})", timestamp(u), relative(u, now)))
                        .unwrap_or_else(|| "-".into())
                );
            }
            println!(
                "\nApprove: baton signal WORKFLOW SIGNAL --data '{{\"ok\": true}}'; reject: --reject REASON"
            );
            Ok(())
        }
    }
}
