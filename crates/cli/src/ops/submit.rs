//! `baton submit FILE`: a workflow file, checked locally, then submitted.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_cli::workflow_file::WorkflowFile;
use baton_client::wire::{WorkflowCreated, WorkflowStatusView};
use baton_client::{Client, ClientError};
use baton_server::BODY_BYTES_MAX;

use super::render::{Cell, Paint, Table};
use super::{call, print_json};
use crate::Output;
use uuid::Uuid;

/// Arguments of `baton submit`.
#[derive(clap::Args)]
pub struct SubmitArgs {
    /// Workflow file, YAML or JSON (by extension, else by content); `-` reads standard input.
    /// Same shape as the body of `POST /v1/workflows`: `name`, `idempotency_key`, `tasks`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Only check the file; submit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for the workflow to end, then print its status and result (its declared
    /// `outputs`, resolved): exit status 0 if it completed, 1 if it failed or was cancelled.
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// With `--wait`: give up after this many seconds (exit status 4), leaving it running.
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    pub timeout: Option<u64>,
}

/// How often `--wait` looks at the workflow.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// The workflow did not end: `--wait` gave up, or it ended other than completed.
#[derive(Debug, thiserror::Error)]
pub enum NotCompleted {
    #[error("workflow {workflow} ended {status}")]
    Ended { workflow: Uuid, status: String },
    #[error("workflow {workflow} is still running after {seconds}s (--timeout); it goes on")]
    TimedOut { workflow: Uuid, seconds: u64 },
}

/// Reads the file (at most the server's body limit) and checks it.
fn load(args: &SubmitArgs) -> anyhow::Result<WorkflowFile> {
    let limit = BODY_BYTES_MAX as u64;
    let (name, mut reader): (String, Box<dyn Read>) = if args.file.as_os_str() == "-" {
        ("<stdin>".into(), Box::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        (args.file.display().to_string(), Box::new(f))
    };
    let mut bytes = Vec::new();
    reader
        .by_ref()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    if bytes.len() as u64 > limit {
        bail!("{name} is larger than {limit} bytes, the most the server accepts");
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{name} is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok(WorkflowFile::parse(&name, text)?)
}

/// `--dry-run`: the checks alone, no server.
pub fn check(args: &SubmitArgs, output: Output) -> anyhow::Result<()> {
    let file = load(args)?;
    match output {
        Output::Json => print_json(&file.body),
        Output::Table => {
            println!(
                "{}: a valid workflow of {} task{}; nothing submitted (--dry-run)",
                file.name(),
                file.workflow.tasks.len(),
                if file.workflow.tasks.len() == 1 {
                    ""
                } else {
                    "s"
                }
            );
            Ok(())
        }
    }
}

/// Checks the file, submits it, and places a refusal of it at its line.
pub async fn submit(client: &Client, args: &SubmitArgs, output: Output) -> anyhow::Result<()> {
    let file = load(args)?;
    let created = match call(client, client.submit_workflow_json(&file.body)).await {
        Ok(created) => created,
        Err(e) => match e.downcast_ref::<ClientError>().and_then(|c| c.problem()) {
            Some(problem) if problem.status == 422 => return Err(file.explain(problem).into()),
            _ => return Err(e),
        },
    };
    if !args.wait {
        return match output {
            Output::Json => print_json(&created),
            Output::Table => print_created(&file, &created),
        };
    }
    if output == Output::Table {
        print_created(&file, &created)?;
    }
    wait(client, created.workflow, args.timeout, output).await
}

/// Polls the workflow until it is no longer running, then prints how it ended.
pub(super) async fn wait(
    client: &Client,
    workflow: Uuid,
    timeout: Option<u64>,
    output: Output,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let view = loop {
        let view = call(client, client.workflow(workflow)).await?;
        if view.status != WorkflowStatusView::Running {
            break view;
        }
        if let Some(seconds) = timeout {
            if start.elapsed() >= Duration::from_secs(seconds) {
                return Err(NotCompleted::TimedOut { workflow, seconds }.into());
            }
        }
        tokio::time::sleep(WAIT_POLL).await;
    };
    let status = serde_json::to_value(view.status)?
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match output {
        Output::Json => print_json(&view)?,
        Output::Table => {
            println!("Workflow {workflow} {status}");
            if let Some(result) = &view.result {
                print_json(result)?;
            } else if let Some(unresolved) = &view.unresolved {
                println!("No result: an output found nothing: {unresolved}");
            }
        }
    }
    if view.status == WorkflowStatusView::Completed {
        Ok(())
    } else {
        Err(NotCompleted::Ended { workflow, status }.into())
    }
}

fn print_created(file: &WorkflowFile, created: &WorkflowCreated) -> anyhow::Result<()> {
    let paint = Paint::stdout();
    let name = match file.workflow.name.as_str() {
        "" => String::new(),
        name => format!(" {name:?}"),
    };
    if created.created {
        println!(
            "Submitted workflow {}{name}",
            paint.paint(super::render::Color::Bold, &created.workflow.to_string())
        );
    } else {
        println!(
            "Workflow {}{name} was already submitted with idempotency key {:?}; nothing new \
             was created",
            created.workflow,
            file.workflow.idempotency_key.as_deref().unwrap_or_default()
        );
    }
    let mut table = Table::new(&["KEY", "TASK"]);
    for spec in &file.workflow.tasks {
        if let Some(id) = created.tasks.get(&spec.key.0) {
            table.row(vec![spec.key.0.as_str().into(), Cell::from(id.to_string())]);
        }
    }
    table.print()?;
    Ok(())
}
