//! Artifacts in PostgreSQL, so that every node serves them: a row in `artifacts` and the bytes
//! in `artifact_chunks` ([`ARTIFACT_CHUNK_BYTES`] per row), written in one transaction of
//! their own on a pooled connection (not the writers': a large artifact must not hold up the
//! group commit). Uploads are staged in a file of the node's temporary directory first, so
//! that the transaction runs at the database's pace, not the client's.

use std::io::Read;
use std::path::PathBuf;

use baton_core::{ArtifactRef, Timestamp};
use tokio_postgres::Row;

use super::connect::PgStore;
use super::error::{db, get};
use crate::artifact::{io_error, CHUNKS_AHEAD_MAX};
use crate::codec::ts;
use crate::{
    ArtifactChunks, ArtifactMeta, PutArtifact, StagedArtifact, StoreError, ARTIFACT_CHUNK_BYTES,
};

const ARTIFACT_SQL: &str =
    "SELECT sha256, size, content_type, uploaded_at FROM artifacts WHERE sha256 = $1";

/// Where a node stages uploads.
pub(super) fn staging_dir() -> PathBuf {
    std::env::temp_dir().join("baton-artifacts")
}

fn decode(row: &Row) -> Result<ArtifactMeta, StoreError> {
    let hex: &str = get(row, 0)?;
    Ok(ArtifactMeta {
        artifact: hex
            .parse()
            .map_err(|e| StoreError::Backend(format!("stored artifact name {hex:?}: {e}")))?,
        size: get::<i64>(row, 1)? as u64,
        content_type: get(row, 2)?,
        uploaded_at: Timestamp(get::<i64>(row, 3)? as u64),
    })
}

impl PgStore {
    pub(super) async fn put_artifact_row(
        &self,
        staged: StagedArtifact,
        content_type: Option<String>,
        now: Timestamp,
    ) -> Result<PutArtifact, StoreError> {
        let hex = staged.artifact.hex();
        let mut client = self.reader().await?;
        let tx = client.transaction().await.map_err(db)?;
        // A concurrent put of the same artifact waits here for this one's commit, then only
        // refreshes the upload time: the chunks are written once.
        let row = tx
            .query_one(
                "INSERT INTO artifacts (sha256, size, content_type, uploaded_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (sha256) DO UPDATE
                     SET uploaded_at = greatest(artifacts.uploaded_at, excluded.uploaded_at)
                 RETURNING sha256, size, content_type, uploaded_at, (xmax = 0) AS created",
                &[&hex, &(staged.size as i64), &content_type, &ts(now)],
            )
            .await
            .map_err(db)?;
        let meta = decode(&row)?;
        let created: bool = get(&row, 4)?;
        if created {
            let insert = tx
                .prepare("INSERT INTO artifact_chunks (sha256, seq, data) VALUES ($1, $2, $3)")
                .await
                .map_err(db)?;
            let path = staged.path.clone();
            let mut file = Some(
                tokio::task::spawn_blocking(move || {
                    std::fs::File::open(&path).map_err(|e| io_error("open", &path, e))
                })
                .await
                .map_err(|_| StoreError::Closed)??,
            );
            let mut seq: i32 = 0;
            loop {
                let f = file
                    .take()
                    .expect("the file is handed back after each chunk");
                let path = staged.path.clone();
                let (f, chunk) = tokio::task::spawn_blocking(move || {
                    let mut f = f;
                    read_chunk(&mut f)
                        .map(|c| (f, c))
                        .map_err(|e| io_error("read", &path, e))
                })
                .await
                .map_err(|_| StoreError::Closed)??;
                if chunk.is_empty() {
                    break;
                }
                tx.execute(&insert, &[&hex, &seq, &chunk])
                    .await
                    .map_err(db)?;
                file = Some(f);
                seq += 1;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(PutArtifact { meta, created })
    }

    pub(super) async fn artifact_row(
        &self,
        artifact: ArtifactRef,
    ) -> Result<Option<ArtifactMeta>, StoreError> {
        let rows = self.query(ARTIFACT_SQL, &[&artifact.hex()]).await?;
        rows.first().map(decode).transpose()
    }

    /// The bytes, one chunk per query on a pooled connection taken for that query only, so a
    /// slow reader holds no connection.
    pub(super) async fn artifact_chunks(
        &self,
        artifact: ArtifactRef,
    ) -> Result<Option<(ArtifactMeta, ArtifactChunks)>, StoreError> {
        let Some(meta) = self.artifact_row(artifact).await? else {
            return Ok(None);
        };
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD_MAX);
        let chunks = meta.size.div_ceil(ARTIFACT_CHUNK_BYTES as u64);
        let pool = self.pool.clone();
        let hex = artifact.hex();
        tokio::spawn(async move {
            for seq in 0..chunks as i32 {
                let chunk = async {
                    let client = pool.get().await.map_err(|e| StoreError::Unavailable {
                        detail: format!("no database connection available: {e}"),
                    })?;
                    let row = client
                        .query_opt(
                            "SELECT data FROM artifact_chunks WHERE sha256 = $1 AND seq = $2",
                            &[&hex, &seq],
                        )
                        .await
                        .map_err(db)?;
                    match row {
                        Some(row) => get::<Vec<u8>>(&row, 0),
                        None => Err(StoreError::Backend(format!(
                            "artifact sha256:{hex} lost its chunk {seq} while being read"
                        ))),
                    }
                }
                .await;
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Some((meta, rx)))
    }

    pub(super) async fn missing_artifact_rows(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        let hexes: Vec<String> = artifacts.iter().map(|a| a.hex()).collect();
        let rows = self
            .query(
                "SELECT sha256 FROM artifacts WHERE sha256 = ANY($1::text[])",
                &[&hexes],
            )
            .await?;
        let found: std::collections::HashSet<&str> =
            rows.iter().map(|r| get(r, 0)).collect::<Result<_, _>>()?;
        Ok(artifacts
            .into_iter()
            .filter(|a| !found.contains(a.hex().as_str()))
            .collect())
    }

    /// Deletes the sweep's candidates (their chunks cascade). Rows a reference is being
    /// written for are locked by it and skipped; the rest are locked here, so a reference
    /// written meanwhile waits, then fails on its foreign key.
    pub(super) async fn sweep_artifact_rows(
        &self,
        uploaded_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<ArtifactRef>, StoreError> {
        let client = self.reader().await?;
        let rows = client
            .query(
                "DELETE FROM artifacts WHERE sha256 IN (
                     SELECT sha256 FROM artifacts
                     WHERE NOT referenced AND uploaded_at < $1
                     ORDER BY uploaded_at LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 AND NOT referenced
                 RETURNING sha256",
                &[&ts(uploaded_before), &(limit as i64)],
            )
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let hex: &str = get(r, 0)?;
                hex.parse()
                    .map_err(|e| StoreError::Backend(format!("stored artifact name {hex:?}: {e}")))
            })
            .collect()
    }
}

/// Up to [`ARTIFACT_CHUNK_BYTES`] from `file`; empty at its end.
fn read_chunk(file: &mut std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(ARTIFACT_CHUNK_BYTES);
    file.take(ARTIFACT_CHUNK_BYTES as u64)
        .read_to_end(&mut chunk)?;
    Ok(chunk)
}
