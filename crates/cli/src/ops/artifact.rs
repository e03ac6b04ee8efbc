//! `baton artifact put FILE` and `baton artifact get REF [-o FILE]`: large data beside the
//! tasks, referred to in inputs and results as `{"$artifact": "sha256:…"}`. Transfers are
//! streamed and may take up to the client's `ARTIFACT_TRANSFER_TIMEOUT`, not the usual 30 s.

use std::io::Write;
use std::path::PathBuf;

use baton_client::Client;
use clap::Subcommand;

use super::print_json;
use crate::Output;

#[derive(Subcommand)]
pub enum ArtifactCommand {
    /// Upload a file (streamed); prints its reference, `sha256:<hex>`.
    Put {
        /// The file to upload.
        file: PathBuf,
        /// Recorded with the artifact and served back.
        #[arg(long, value_name = "TYPE")]
        content_type: Option<String>,
    },
    /// Download an artifact, checked against its reference.
    Get {
        /// `sha256:<hex>` or the bare hex.
        artifact: String,
        /// Write to this file (it appears only once complete and checked) instead of
        /// standard output. (`--out`, as `--output` is the global output format.)
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub async fn run(client: &Client, cmd: ArtifactCommand, output: Output) -> anyhow::Result<()> {
    match cmd {
        ArtifactCommand::Put { file, content_type } => {
            let stored = client
                .put_artifact_file(&file, content_type.as_deref())
                .await?;
            match output {
                Output::Json => print_json(&stored),
                Output::Table => {
                    println!("{}", stored.artifact);
                    Ok(())
                }
            }
        }
        ArtifactCommand::Get {
            artifact,
            out: Some(path),
        } => {
            client.artifact(&artifact).await?.save(&path).await?;
            Ok(())
        }
        ArtifactCommand::Get {
            artifact,
            out: None,
        } => {
            let mut download = client.artifact(&artifact).await?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = download.chunk().await? {
                out.write_all(&chunk)?;
            }
            out.flush()?;
            Ok(())
        }
    }
}
