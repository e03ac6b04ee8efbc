//! `baton check`: verifies a store against the lifecycle and says what is wrong, task by task.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use baton_engine::check::check_store;
use baton_store::AnyStore;

use crate::{Global, Output};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Directory of the embedded SQLite store to check.
    #[arg(long, env = "BATON_DATA_DIR", default_value = "baton-data")]
    pub data_dir: PathBuf,
    /// Store URL instead: `postgres://…` or `sqlite://PATH`.
    #[arg(long, env = "BATON_STORE")]
    pub store: Option<String>,
}

pub fn run(global: &Global, args: CheckArgs) -> anyhow::Result<ExitCode> {
    let url = match &args.store {
        Some(url) => url.clone(),
        None => {
            let path = args.data_dir.join("baton.db");
            anyhow::ensure!(
                path.exists(),
                "no store at {} (pass --data-dir or --store)",
                path.display()
            );
            path.display().to_string()
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(async {
        let store = AnyStore::open(&url).await.context("opening the store")?;
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        check_store(&store, |n| {
            if tty {
                eprint!("\rchecked {n} tasks");
            }
        })
        .await
        .context("reading the store")
    })?;
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }
    if global.output == Output::Json {
        let violations: Vec<serde_json::Value> = report
            .violations
            .iter()
            .map(|v| {
                serde_json::json!({
                    "task": v.task.map(|t| t.to_string()),
                    "workflow": v.workflow.map(|w| w.to_string()),
                    "detail": v.detail,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "tasks": report.tasks,
                "history_entries": report.history_entries,
                "violations": violations,
            })
        );
    } else {
        for v in &report.violations {
            match (v.task, v.workflow) {
                (Some(t), Some(w)) => println!("task {t} (workflow {w}): {}", v.detail),
                _ => println!("store: {}", v.detail),
            }
        }
        println!(
            "checked {} tasks and {} history entries: {}",
            report.tasks,
            report.history_entries,
            if report.is_clean() {
                "no violations".to_owned()
            } else {
                format!("{} violation(s)", report.violations.len())
            }
        );
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
