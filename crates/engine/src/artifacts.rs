//! Artifacts: large data beside the tasks, uploaded once, addressed by the SHA-256 of its
//! bytes, and named in inputs and results as `{"$artifact": "sha256:…"}`.
//!
//! - Upload ([`ArtifactUpload`]): the bytes are written to the store's staging file as they
//!   arrive (never held whole in memory) and hashed there; past `artifact_bytes_max` the
//!   upload is refused and its file removed, so nothing is stored. Answered once the artifact
//!   is durable.
//! - References: a submission (and sub-tasks added later) and a reported result may only name
//!   artifacts the store holds; a malformed or missing one is refused with its field path. The
//!   store records the references with the task or its result, in the same transaction.
//! - Kept while referenced: [`Engine::sweep_artifacts`] (every
//!   [`ARTIFACT_SWEEP_INTERVAL_MS`] on the leading node) deletes artifacts no task refers to
//!   once their latest upload is older than `artifact_unreferenced_grace_ms`, which gives an
//!   upload time to be referenced. Tasks are never deleted, so a referenced artifact stays.

use std::time::Duration;

use baton_core::{find_refs, ArtifactRef, FoundRef, RefError};
use baton_store::{ArtifactChunks, ArtifactMeta, ArtifactWriter, PutArtifact, Store};
use serde_json::Value;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::error::EngineError;

/// Default of [`crate::EngineConfig::artifact_bytes_max`]: 256 MiB.
pub const ARTIFACT_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;
/// Default of [`crate::EngineConfig::artifact_unreferenced_grace_ms`]: 24 hours.
pub const ARTIFACT_UNREFERENCED_GRACE_MS_DEFAULT: u64 = 24 * 3600 * 1000;
/// How often the leading node sweeps unreferenced artifacts.
pub const ARTIFACT_SWEEP_INTERVAL_MS: u64 = 60_000;
/// Most artifacts one sweep round deletes; a round that reaches it runs again at once.
pub const ARTIFACTS_PER_SWEEP_MAX: usize = 256;
/// Bytes of an upload gathered in memory before they are written to its staging file.
const UPLOAD_BUFFER_BYTES: usize = 1024 * 1024;

/// An upload under way: feed it the body's chunks with [`ArtifactUpload::write`], then
/// [`ArtifactUpload::finish`]. Dropped unfinished (a client gone, a limit passed), it leaves
/// nothing behind.
pub struct ArtifactUpload<S> {
    engine: Engine<S>,
    writer: Option<ArtifactWriter>,
    buffer: Vec<u8>,
    received: u64,
    content_type: Option<String>,
}

impl<S: Store + 'static> ArtifactUpload<S> {
    /// Appends `bytes`; refused past `artifact_bytes_max` (the upload is then dead).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), EngineError> {
        self.received += bytes.len() as u64;
        let limit_bytes = self.engine.inner.config.artifact_bytes_max;
        if self.received > limit_bytes {
            self.writer = None;
            return Err(artifact_too_large(self.received, limit_bytes));
        }
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= UPLOAD_BUFFER_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes what is buffered to the staging file, off the runtime's threads.
    async fn flush(&mut self) -> Result<(), EngineError> {
        let Some(mut writer) = self.writer.take() else {
            return Err(EngineError::invalid(
                "artifact",
                "an upload still under way",
            ));
        };
        let buffer = std::mem::take(&mut self.buffer);
        let (writer, mut buffer) =
            tokio::task::spawn_blocking(move || writer.write(&buffer).map(|()| (writer, buffer)))
                .await
                .map_err(|_| EngineError::ShuttingDown)??;
        buffer.clear();
        self.buffer = buffer;
        self.writer = Some(writer);
        Ok(())
    }

    /// Stores the artifact: durable and visible when this returns.
    pub async fn finish(mut self) -> Result<PutArtifact, EngineError> {
        self.flush().await?;
        let writer = self.writer.take().expect("flushed, the writer is back");
        let staged = tokio::task::spawn_blocking(move || writer.finish())
            .await
            .map_err(|_| EngineError::ShuttingDown)??;
        let now = self.engine.now();
        let put = self
            .engine
            .inner
            .store
            .put_artifact(staged, self.content_type.take(), now)
            .await?;
        if put.created {
            info!(artifact = %put.meta.artifact, bytes = put.meta.size, "artifact stored");
        }
        Ok(put)
    }
}

fn artifact_too_large(bytes: u64, limit_bytes: u64) -> EngineError {
    EngineError::TooLarge {
        field: "artifact".into(),
        bytes,
        limit_bytes,
        limit: "artifact_bytes_max",
    }
}

impl<S: Store + 'static> Engine<S> {
    /// Starts an upload. `declared_bytes` (a request's `Content-Length`) over the limit is
    /// refused before a byte is read.
    pub fn artifact_upload(
        &self,
        content_type: Option<String>,
        declared_bytes: Option<u64>,
    ) -> Result<ArtifactUpload<S>, EngineError> {
        let limit_bytes = self.inner.config.artifact_bytes_max;
        if let Some(bytes) = declared_bytes.filter(|&b| b > limit_bytes) {
            return Err(artifact_too_large(bytes, limit_bytes));
        }
        Ok(ArtifactUpload {
            engine: self.clone(),
            writer: Some(self.inner.store.stage_artifact()?),
            buffer: Vec::with_capacity(UPLOAD_BUFFER_BYTES),
            received: 0,
            content_type,
        })
    }

    /// An artifact's size, content type and upload time.
    pub async fn artifact(&self, artifact: ArtifactRef) -> Result<ArtifactMeta, EngineError> {
        self.inner
            .store
            .artifact(artifact)
            .await?
            .ok_or(EngineError::ArtifactNotFound {
                artifact,
                field: None,
            })
    }

    /// An artifact and its bytes, streamed in chunks.
    pub async fn read_artifact(
        &self,
        artifact: ArtifactRef,
    ) -> Result<(ArtifactMeta, ArtifactChunks), EngineError> {
        self.inner
            .store
            .read_artifact(artifact)
            .await?
            .ok_or(EngineError::ArtifactNotFound {
                artifact,
                field: None,
            })
    }

    /// The rules of every payload that comes in (inputs, results, progress, signals' data),
    /// each with its field path: at most `payload_bytes_max` bytes of JSON, and no malformed
    /// reference, nor too many, nor one to an artifact the store does not hold; the first
    /// payload at fault in document order is named. Costs two walks of the JSON when there
    /// are no references.
    pub(crate) async fn check_payloads<'a>(
        &self,
        payloads: impl IntoIterator<Item = (String, &'a Value)>,
    ) -> Result<(), EngineError> {
        let mut found: Vec<FoundRef> = Vec::new();
        let limit_bytes = self.inner.config.payload_bytes_max;
        for (field, value) in payloads {
            let bytes = crate::upstream::json_bytes(value);
            if bytes > limit_bytes {
                return Err(EngineError::TooLarge {
                    field,
                    bytes,
                    limit_bytes,
                    limit: "payload_bytes_max",
                });
            }
            found.extend(find_refs(value, &field).map_err(|e| match e {
                RefError::Malformed { field, expected } => {
                    EngineError::ArtifactRefInvalid { field, expected }
                }
                RefError::TooMany { field } => EngineError::invalid(
                    field,
                    format!(
                        "at most {} artifact references",
                        baton_core::artifact::ARTIFACT_REFS_PER_PAYLOAD_MAX
                    ),
                ),
            })?);
        }
        if found.is_empty() {
            return Ok(());
        }
        let mut artifacts: Vec<ArtifactRef> = found.iter().map(|f| f.artifact).collect();
        artifacts.sort_unstable();
        artifacts.dedup();
        let missing = self.inner.store.missing_artifacts(artifacts).await?;
        match found.into_iter().find(|f| missing.contains(&f.artifact)) {
            Some(f) => Err(EngineError::ArtifactNotFound {
                artifact: f.artifact,
                field: Some(f.field),
            }),
            None => Ok(()),
        }
    }

    /// One sweep: deletes every artifact no task refers to whose latest upload is older than
    /// the grace period (by the engine's clock); returns how many. The background loop calls
    /// it on the leading node; tests call it after moving a manual clock.
    pub async fn sweep_artifacts(&self) -> Result<usize, EngineError> {
        let grace = self.inner.config.artifact_unreferenced_grace_ms;
        let before = baton_core::Timestamp(self.now().0.saturating_sub(grace));
        let mut swept = 0;
        loop {
            let round = self
                .inner
                .store
                .sweep_artifacts(before, ARTIFACTS_PER_SWEEP_MAX)
                .await?;
            for artifact in &round {
                info!(artifact = %artifact, "unreferenced artifact swept");
            }
            swept += round.len();
            if round.len() < ARTIFACTS_PER_SWEEP_MAX || self.stopping() {
                return Ok(swept);
            }
        }
    }

    pub(crate) async fn artifact_sweep_loop(&self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        while !self.stopping() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ARTIFACT_SWEEP_INTERVAL_MS)) => {}
                _ = shutdown.changed() => continue,
            }
            match self.inner.store.try_lead().await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!(error = %e, "cannot tell whether this node leads");
                    continue;
                }
            }
            if let Err(e) = self.sweep_artifacts().await {
                warn!(error = %e, "artifact sweep failed");
            }
        }
    }
}
