//! `baton triggers`: list, put (a workflow template from a YAML or JSON file), show, fire,
//! delete.

use std::path::PathBuf;

use anyhow::Context;
use baton_client::wire::{TriggerList, TriggerView, WorkflowCreated};
use baton_client::{Client, ClientError};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::render::{timestamp, Cell, Paint, Table};
use super::{call, print_json, submit};
use crate::Output;

#[derive(Subcommand)]
pub enum TriggerCommand {
    /// List the triggers (the default).
    List,
    /// Register (or replace) trigger NAME from a file (YAML or JSON): the workflow it submits
    /// (name, tasks, outputs). In a task's input, `{"$input": "/json/pointer"}` stands for
    /// what the pointer finds in the input it is fired with (`""`: all of it).
    Put { name: String, file: PathBuf },
    /// Show a trigger: its workflow and what it takes from its input.
    Show { name: String },
    /// Submit a trigger's workflow with an input; prints the workflow's id.
    Fire(FireArgs),
    /// Delete a trigger (the workflows it submitted stay).
    Delete { name: String },
}

/// `baton triggers fire NAME [--input JSON | --input-file FILE]`.
#[derive(Args)]
pub struct FireArgs {
    /// The trigger's name.
    pub name: String,
    /// The input, as JSON; `{}` if absent.
    #[arg(long, value_name = "JSON", conflicts_with = "input_file")]
    pub input: Option<String>,
    /// The input from a file (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    pub input_file: Option<PathBuf>,
    /// Fire once, however often the command is repeated with the same key and input: a repeat
    /// prints the first workflow (another input with the same key is refused).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Wait for the workflow to end, as `baton submit --wait` does (exit status 0 if it
    /// completed, 1 if it failed or was cancelled).
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`: give up after this many seconds (exit status 4), leaving it running.
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    pub timeout: Option<u64>,
}

pub async fn run(
    client: &Client,
    cmd: Option<TriggerCommand>,
    output: Output,
) -> anyhow::Result<()> {
    match cmd.unwrap_or(TriggerCommand::List) {
        TriggerCommand::List => {
            let list = TriggerList {
                triggers: call(client, client.triggers()).await?,
                next: None,
            };
            match output {
                Output::Json => print_json(&list),
                Output::Table => {
                    if list.triggers.is_empty() {
                        println!("No trigger.");
                        return Ok(());
                    }
                    let mut table = Table::new(&["NAME", "WORKFLOW", "TASKS", "UPDATED", "INPUT"]);
                    for t in &list.triggers {
                        table.row(vec![
                            t.name.as_str().into(),
                            workflow_name(t).into(),
                            Cell::from(t.workflow.tasks.len().to_string()),
                            Cell::from(timestamp(t.updated_at)),
                            Cell::from(pointers_text(t)),
                        ]);
                    }
                    table.print()?;
                    Ok(())
                }
            }
        }
        TriggerCommand::Put { name, file } => {
            let template = read_document(&file)?;
            let put = call(client, client.put_trigger(&name, &template)).await?;
            if output == Output::Json {
                return print_json(&put);
            }
            let verb = if put.created { "Created" } else { "Replaced" };
            println!("{verb} trigger {}.\n", put.trigger.name);
            show(&put.trigger, output)
        }
        TriggerCommand::Show { name } => {
            let t = call(client, client.trigger(&name)).await?;
            show(&t, output)
        }
        TriggerCommand::Fire(args) => fire(client, &args, output).await,
        TriggerCommand::Delete { name } => {
            call(client, client.delete_trigger(&name)).await?;
            if matches!(output, Output::Table) {
                println!("Trigger {name} deleted.");
            }
            Ok(())
        }
    }
}

async fn fire(client: &Client, args: &FireArgs, output: Output) -> anyhow::Result<()> {
    let input = match (&args.input, &args.input_file) {
        (Some(text), _) => {
            serde_json::from_str::<Value>(text).context("--input is not valid JSON")?
        }
        (None, Some(file)) => read_document(file)?,
        (None, None) => Value::Object(Default::default()),
    };
    let fired = call(
        client,
        client.fire_trigger(&args.name, &input, args.idempotency_key.as_deref()),
    )
    .await
    .map_err(|e| lacking_input(e, args))?;
    if !args.wait {
        return match output {
            Output::Json => print_json(&fired),
            Output::Table => print_fired(args, &fired),
        };
    }
    if output == Output::Table {
        print_fired(args, &fired)?;
    }
    submit::wait(client, fired.workflow, args.timeout, output).await
}

/// A refusal of the input (field `body`) said in terms of the option that gave it.
fn lacking_input(e: anyhow::Error, args: &FireArgs) -> anyhow::Error {
    let expected = match e.downcast_ref::<ClientError>().and_then(|c| c.problem()) {
        Some(p) if p.status == 422 && p.field.as_deref() == Some("body") => p.expected.clone(),
        _ => None,
    };
    match expected {
        Some(expected) => {
            let option = if args.input_file.is_some() {
                "--input-file"
            } else {
                "--input"
            };
            anyhow::anyhow!(
                "{option} does not fit trigger {}: expected {expected}",
                args.name
            )
        }
        None => e,
    }
}

fn read_document(file: &PathBuf) -> anyhow::Result<Value> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?;
    baton_cli::workflow_file::parse_document(&name, &text).map_err(|d| anyhow::anyhow!("{d}"))
}

fn print_fired(args: &FireArgs, fired: &WorkflowCreated) -> anyhow::Result<()> {
    let paint = Paint::stdout();
    if fired.created {
        println!(
            "Fired trigger {}: workflow {}",
            args.name,
            paint.paint(super::render::Color::Bold, &fired.workflow.to_string())
        );
    } else {
        println!(
            "Trigger {} was already fired with idempotency key {:?}: workflow {}; nothing new \
             was created",
            args.name,
            args.idempotency_key.as_deref().unwrap_or_default(),
            fired.workflow
        );
    }
    let mut table = Table::new(&["KEY", "TASK"]);
    for (key, id) in &fired.tasks {
        table.row(vec![key.as_str().into(), Cell::from(id.to_string())]);
    }
    table.print()?;
    Ok(())
}

fn workflow_name(t: &TriggerView) -> &str {
    if t.workflow.name.is_empty() {
        &t.name
    } else {
        &t.workflow.name
    }
}

/// The pointers the template's placeholders take from the input, each once, in order.
fn pointers(t: &TriggerView) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) if m.len() == 1 && m.contains_key("$input") => {
                if let Some(p) = m["$input"].as_str() {
                    if !out.iter().any(|o| o == p) {
                        out.push(p.to_owned());
                    }
                }
            }
            Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            Value::Array(items) => items.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for task in &t.workflow.tasks {
        walk(&task.input, &mut out);
    }
    out
}

fn pointers_text(t: &TriggerView) -> String {
    let ps = pointers(t);
    if ps.is_empty() {
        return "-".into();
    }
    ps.iter()
        .map(|p| if p.is_empty() { "(all)" } else { p.as_str() })
        .collect::<Vec<_>>()
        .join(", ")
}

fn show(t: &TriggerView, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(t),
        Output::Table => {
            let n = t.workflow.tasks.len();
            println!("Trigger    {}", t.name);
            println!(
                "Workflow   {} ({n} task{})",
                workflow_name(t),
                if n == 1 { "" } else { "s" }
            );
            println!("Input      {}", pointers_text(t));
            println!("Updated    {}", timestamp(t.updated_at));
            println!(
                "\nFire it:   baton triggers fire {} --input '{{...}}'",
                t.name
            );
            Ok(())
        }
    }
}
