//! `baton gc`: one retention pass on a store, as the leading node runs every minute (the same
//! `Engine::collect`), or with `--dry-run` what it would delete.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use baton_engine::{Engine, EngineConfig, GcOptions, GcReport, SystemClock};
use baton_store::AnyStore;

use crate::duration::{parse_retention, show_ms};
use crate::ops::render::timestamp;
use crate::{Global, Output};

#[derive(clap::Args)]
pub struct GcArgs {
    /// Directory of the embedded SQLite store.
    #[arg(long, env = "BATON_DATA_DIR", default_value = "baton-data")]
    pub data_dir: PathBuf,
    /// Store URL instead: `postgres://…` or `sqlite://PATH`.
    #[arg(long, env = "BATON_STORE")]
    pub store: Option<String>,
    /// Delete workflows that finished (none of their tasks can move again) this long ago, as
    /// `baton serve --retain`: `30d`, `12h`; `0` keeps every workflow (the rest is still
    /// pruned).
    #[arg(long, env = "BATON_RETAIN", value_name = "DURATION", default_value = "30d",
          value_parser = parse_retention)]
    pub retain: u64,
    /// Delete agents silent this long and holding no lease, as `baton serve
    /// --agent-retention`; `0` keeps them.
    #[arg(long, env = "BATON_AGENT_RETENTION", value_name = "DURATION", default_value = "7d",
          value_parser = parse_retention)]
    pub agent_retention: u64,
    /// Delete audit entries older than this, as `baton serve --audit-retain`; `0` keeps them.
    #[arg(long, env = "BATON_AUDIT_RETAIN", value_name = "DURATION", default_value = "365d",
          value_parser = parse_retention)]
    pub audit_retain: u64,
    /// An artifact no task refers to is deleted once its latest upload is this old, as
    /// `baton serve --artifact-unreferenced-grace-ms`.
    #[arg(long, env = "BATON_ARTIFACT_UNREFERENCED_GRACE_MS",
          default_value_t = baton_engine::ARTIFACT_UNREFERENCED_GRACE_MS_DEFAULT)]
    pub artifact_unreferenced_grace_ms: u64,
    /// Say what would be deleted, and delete nothing. Read-only: fine on a live store.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(global: &Global, args: GcArgs) -> anyhow::Result<ExitCode> {
    let (url, lock_dir) = match &args.store {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            (url.clone(), None)
        }
        Some(url) => {
            let path = PathBuf::from(url.strip_prefix("sqlite://").unwrap_or(url));
            anyhow::ensure!(path.exists(), "no store at {}", path.display());
            let dir = path
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_else(|| PathBuf::from("."));
            (url.clone(), Some(dir))
        }
        None => {
            let path = args.data_dir.join("baton.db");
            anyhow::ensure!(
                path.exists(),
                "no store at {} (pass --data-dir or --store)",
                path.display()
            );
            (path.display().to_string(), Some(args.data_dir.clone()))
        }
    };
    // SQLite has one writer, the server: deleting beside it would take its store from under
    // it (and race its artifact files). A dry run only reads, like `baton check`.
    let _lock = match (&lock_dir, args.dry_run) {
        (Some(dir), false) => match crate::serve::try_lock_data_dir(dir)? {
            Ok(file) => Some(file),
            Err(holder) => bail!(
                "a baton serve (pid {holder}) uses the store in {}: it deletes what outlived \
                 its --retain by itself, every minute. See what that is with `baton gc \
                 --dry-run`, or stop the server to run `baton gc` here",
                dir.display()
            ),
        },
        _ => None,
    };
    crate::serve::check_retention(args.agent_retention, EngineConfig::default().agent_ttl_ms)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(async {
        let options = baton_store::sqlite::SqliteOptions {
            convert_to_incremental_vacuum: lock_dir.is_some() && !args.dry_run,
            ..Default::default()
        };
        let store = AnyStore::open_with(&url, options)
            .await
            .context("opening the store")?;
        let engine = Engine::new(
            store,
            Arc::new(SystemClock),
            EngineConfig {
                retain_ms: args.retain,
                agent_retention_ms: args.agent_retention,
                audit_retain_ms: args.audit_retain,
                artifact_unreferenced_grace_ms: args.artifact_unreferenced_grace_ms,
                ..EngineConfig::default()
            },
        );
        engine
            .collect(GcOptions {
                dry_run: args.dry_run,
                exclusive: lock_dir.is_some(),
            })
            .await
            .context("collecting")
    })?;
    print(global.output, &args, &report);
    Ok(ExitCode::SUCCESS)
}

fn print(output: Output, args: &GcArgs, r: &GcReport) {
    if output == Output::Json {
        println!(
            "{}",
            serde_json::json!({
                "dry_run": r.dry_run,
                "finished_before": r.finished_before.map(|t| t.0),
                "workflows": r.workflows,
                "oldest_finished": r.oldest.map(|t| t.0),
                "newest_finished": r.newest.map(|t| t.0),
                "kept_for_schedules": r.kept_for_schedules,
                "tasks": r.tasks,
                "history_entries": r.history,
                "signals": r.signals,
                "artifacts_released": r.artifacts_released,
                "artifacts": r.artifacts_deleted,
                "agents": r.agents,
                "audit_entries": r.audit,
                "fair_groups": r.fair_groups,
                "concurrency_keys": r.concurrency_keys,
                "pages_reclaimed": r.pages_reclaimed,
            })
        );
        return;
    }
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    match r.finished_before {
        Some(t) => println!(
            "{} workflows that finished before {} ({} ago):",
            if r.dry_run { "Would delete" } else { "Deleted" },
            timestamp(t.0),
            show_ms(args.retain)
        ),
        None => println!("Workflows are kept forever (--retain 0); {verb}:"),
    }
    let span = match (r.oldest, r.newest) {
        (Some(o), Some(n)) => format!("  (finished from {} to {})", timestamp(o.0), timestamp(n.0)),
        _ => String::new(),
    };
    println!("  workflows         {:>10}{span}", r.workflows);
    println!("  tasks             {:>10}", r.tasks);
    println!("  history entries   {:>10}", r.history);
    println!("  signals           {:>10}", r.signals);
    println!(
        "  artifacts         {:>10}  (no task left refers to {}; the sweep deletes those \
         uploaded over {} ago)",
        r.artifacts_deleted,
        r.artifacts_released,
        show_ms(args.artifact_unreferenced_grace_ms)
    );
    let kept = |ms: u64, what: &str| {
        if ms == 0 {
            "kept forever".to_owned()
        } else {
            format!("{what} {}", show_ms(ms))
        }
    };
    println!(
        "  agents            {:>10}  ({}, holding no lease)",
        r.agents,
        kept(args.agent_retention, "silent for")
    );
    println!(
        "  audit entries     {:>10}  ({})",
        r.audit,
        kept(args.audit_retain, "older than")
    );
    println!("  fairness groups   {:>10}", r.fair_groups);
    println!("  concurrency keys  {:>10}", r.concurrency_keys);
    if r.kept_for_schedules > 0 {
        println!(
            "  kept: {} finished workflow(s) of a schedule tick the schedule has not yet moved past",
            r.kept_for_schedules
        );
    }
    if !r.dry_run && r.pages_reclaimed > 0 {
        println!(
            "  {} free page(s) given back to the file system",
            r.pages_reclaimed
        );
    }
}
