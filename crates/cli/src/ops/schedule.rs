//! `baton schedules`: list, create (from a YAML or JSON file), show, pause, resume, delete.

use std::path::PathBuf;

use anyhow::Context;
use baton_client::wire::{ScheduleList, ScheduleView};
use baton_client::Client;
use clap::Subcommand;

use super::render::{relative, timestamp};
use super::{call, print_json};
use crate::Output;

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// List the schedules and their next fire times (the default).
    List,
    /// Create a schedule from a file (YAML or JSON): name, cron (with seconds), timezone,
    /// workflow (name, tasks), overlap, catch_up.
    Create { file: PathBuf },
    /// Show a schedule, its next fire times and its last run.
    Show { name: String },
    /// Stop a schedule's ticks until it is resumed.
    Pause { name: String },
    /// Resume a schedule from its next tick (ticks it slept through are not caught up).
    Resume { name: String },
    /// Delete a schedule (the workflows it submitted stay).
    Delete { name: String },
}

pub async fn run(
    client: &Client,
    cmd: Option<ScheduleCommand>,
    output: Output,
) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    match cmd.unwrap_or(ScheduleCommand::List) {
        ScheduleCommand::List => {
            let list = ScheduleList {
                schedules: call(client, client.schedules()).await?,
                next: None,
            };
            match output {
                Output::Json => print_json(&list),
                Output::Table => {
                    if list.schedules.is_empty() {
                        println!("No schedule.");
                        return Ok(());
                    }
                    println!(
                        "{:<24}  {:<20}  {:<16}  {:<8}  NEXT",
                        "NAME", "CRON", "TIMEZONE", "STATE"
                    );
                    for s in &list.schedules {
                        println!(
                            "{:<24}  {:<20}  {:<16}  {:<8}  {}",
                            s.name,
                            s.spec.cron,
                            s.spec.timezone,
                            if s.paused { "paused" } else { "active" },
                            next_text(s, now)
                        );
                    }
                    Ok(())
                }
            }
        }
        ScheduleCommand::Create { file } => {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {name}"))?;
            let spec = baton_cli::workflow_file::parse_document(&name, &text)
                .map_err(|d| anyhow::anyhow!("{d}"))?;
            let created = call(client, client.create_schedule(&spec)).await?;
            show(&created, output, now)
        }
        ScheduleCommand::Show { name } => {
            let s = call(client, client.schedule(&name)).await?;
            show(&s, output, now)
        }
        ScheduleCommand::Pause { name } => {
            let s = call(client, client.pause_schedule(&name, true)).await?;
            show(&s, output, now)
        }
        ScheduleCommand::Resume { name } => {
            let s = call(client, client.pause_schedule(&name, false)).await?;
            show(&s, output, now)
        }
        ScheduleCommand::Delete { name } => {
            call(client, client.delete_schedule(&name)).await?;
            if matches!(output, Output::Table) {
                println!("Schedule {name} deleted.");
            }
            Ok(())
        }
    }
}

fn next_text(s: &ScheduleView, now: u64) -> String {
    match s.next.first() {
        Some(&at) => format!("{} ({})", timestamp(at), relative(at, now)),
        None => "-".into(),
    }
}

fn show(s: &ScheduleView, output: Output, now: u64) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(s),
        Output::Table => {
            println!("Schedule   {}", s.name);
            println!("Cron       {} ({})", s.spec.cron, s.spec.timezone);
            println!("State      {}", if s.paused { "paused" } else { "active" });
            println!(
                "Workflow   {} ({} task{})",
                if s.spec.workflow.name.is_empty() {
                    &s.name
                } else {
                    &s.spec.workflow.name
                },
                s.spec.workflow.tasks.len(),
                if s.spec.workflow.tasks.len() == 1 {
                    ""
                } else {
                    "s"
                }
            );
            if let (Some(at), Some(wf)) = (s.last_tick_at, s.last_workflow) {
                println!("Last run   {} (workflow {wf})", timestamp(at));
            }
            for (i, at) in s.next.iter().enumerate() {
                let label = if i == 0 { "Next" } else { "" };
                println!("{label:<10} {} ({})", timestamp(*at), relative(*at, now));
            }
            Ok(())
        }
    }
}
