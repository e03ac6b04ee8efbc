//! `baton backup`: a consistent online copy of an SQLite store, taken while `baton serve`
//! runs on it (SQLite's backup API; see `baton_store::sqlite::backup`). PostgreSQL stores are
//! backed up with PostgreSQL's own tools.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::{Global, Output};

#[derive(clap::Args)]
pub struct BackupArgs {
    /// Directory of the embedded SQLite store to copy.
    #[arg(long, env = "BATON_DATA_DIR", default_value = "baton-data")]
    pub data_dir: PathBuf,
    /// Store URL instead: `sqlite://PATH` (or a path). A `postgres://…` store is refused:
    /// back it up with `pg_dump`.
    #[arg(long, env = "BATON_STORE")]
    pub store: Option<String>,
    /// The copy to write: a new file (never overwritten); the store's artifacts are copied
    /// beside it, into FILE-artifacts/.
    pub file: PathBuf,
}

pub fn run(global: &Global, args: BackupArgs) -> anyhow::Result<ExitCode> {
    let source = match &args.store {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let shown = baton_store::redact_url(url);
            bail!(
                "baton backup copies SQLite stores; {shown} is PostgreSQL: back it up with \
                 PostgreSQL's tools, which take a consistent copy while nodes run, e.g. \
                 `pg_dump --format=custom --schema=SCHEMA --file=baton.dump 'postgres://…'` \
                 (the store's schema: the URL's `schema=`, or `public`), restored with \
                 `pg_restore --dbname=… baton.dump` into an empty database or schema. See the \
                 README, \"Backup and restore\""
            );
        }
        Some(url) => PathBuf::from(url.strip_prefix("sqlite://").unwrap_or(url)),
        None => args.data_dir.join("baton.db"),
    };
    if !source.exists() {
        bail!(
            "no store at {} (pass --data-dir or --store)",
            source.display()
        );
    }
    let report = baton_store::sqlite::backup(&source, &args.file)
        .with_context(|| format!("backing up {}", source.display()))?;
    if global.output == Output::Json {
        println!(
            "{}",
            serde_json::json!({
                "source": source.display().to_string(),
                "file": args.file.display().to_string(),
                "bytes": report.bytes,
                "artifacts": report.artifacts,
                "artifact_bytes": report.artifact_bytes,
                "artifacts_swept_meanwhile": report.artifacts_swept_meanwhile,
                "seconds": report.elapsed.as_secs_f64(),
            })
        );
    } else {
        println!(
            "Backed up {} to {}: {} bytes, {} artifact(s) ({} bytes) in {}-artifacts/, in {:.1} s.",
            source.display(),
            args.file.display(),
            report.bytes,
            report.artifacts,
            report.artifact_bytes,
            args.file.display(),
            report.elapsed.as_secs_f64()
        );
        println!(
            "Check it: baton check --store {0}\nRestore: baton serve --store {0} (or copy it to \
             DIR/baton.db and its artifacts to DIR/baton.db-artifacts, then baton serve \
             --data-dir DIR)",
            args.file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
