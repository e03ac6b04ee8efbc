//! Artifacts: large data stored beside the tasks, addressed by the SHA-256 of its bytes and
//! named in inputs and results as `{"$artifact": "sha256:…"}`.
//!
//! An upload is written to a staging file while it is hashed ([`ArtifactWriter`]), so the
//! store computes every address itself and never holds an artifact in memory; only a finished,
//! fsynced file ([`StagedArtifact`]) can be put, and a put is answered once the artifact is
//! durable and visible. Reads come as a bounded channel of chunks ([`ArtifactChunks`]).
//!
//! Kept while referenced: the store records which task refers to which artifact in the
//! transaction that stores the task (its input, its compensation's input) or its result, and
//! the sweep deletes only artifacts no task refers to whose latest upload is older than the
//! caller's cutoff.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use baton_core::{refs_in, ArtifactRef, State, Task, Timestamp};
use sha2::{Digest, Sha256};

use crate::StoreError;

/// Bytes per chunk when an artifact is read, and per row in PostgreSQL.
pub const ARTIFACT_CHUNK_BYTES: usize = 1024 * 1024;

/// Chunks of one read buffered ahead of its reader.
pub(crate) const CHUNKS_AHEAD_MAX: usize = 2;

/// A stored artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactMeta {
    pub artifact: ArtifactRef,
    pub size: u64,
    /// As given by the first upload.
    pub content_type: Option<String>,
    /// The latest upload.
    pub uploaded_at: Timestamp,
}

/// What a put did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutArtifact {
    pub meta: ArtifactMeta,
    /// `false` when the artifact was stored already (its upload time is refreshed).
    pub created: bool,
}

/// An artifact's bytes, read chunk by chunk (at most [`ARTIFACT_CHUNK_BYTES`] each) with a
/// few chunks buffered ahead; an error ends it.
pub type ArtifactChunks = tokio::sync::mpsc::Receiver<Result<Vec<u8>, StoreError>>;

/// An upload being written to a staging file and hashed. Dropped unfinished, its file is
/// removed. Its writes are blocking: call them off the async runtime's threads.
pub struct ArtifactWriter {
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl ArtifactWriter {
    /// A new staging file in `dir` (created if missing).
    pub(crate) fn create(dir: &Path) -> Result<ArtifactWriter, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        let path = dir.join(format!("{}.part", uuid::Uuid::now_v7().simple()));
        let file = File::create_new(&path).map_err(|e| io_error("create", &path, e))?;
        Ok(ArtifactWriter {
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let file = self
            .file
            .as_mut()
            .expect("an unfinished writer has its file");
        file.write_all(bytes)
            .map_err(|e| io_error("write", &self.path, e))?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes the file to disk and names the artifact.
    pub fn finish(mut self) -> Result<StagedArtifact, StoreError> {
        let file = self.file.take().expect("an unfinished writer has its file");
        file.sync_all()
            .map_err(|e| io_error("sync", &self.path, e))?;
        drop(file);
        let digest = std::mem::take(&mut self.hasher).finalize();
        let mut artifact = [0u8; 32];
        artifact.copy_from_slice(&digest);
        Ok(StagedArtifact {
            path: std::mem::take(&mut self.path),
            artifact: ArtifactRef(artifact),
            size: self.size,
        })
    }
}

impl Drop for ArtifactWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A complete upload on disk, named by its hash, not yet visible. Dropped without being put,
/// its file is removed.
pub struct StagedArtifact {
    pub(crate) path: PathBuf,
    pub artifact: ArtifactRef,
    pub size: u64,
}

impl Drop for StagedArtifact {
    fn drop(&mut self) {
        // After a put moved the file into place there is nothing left to remove.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The artifacts a task refers to as stored in one write: in its input and its compensation's
/// input when it is created, in its result when it completes (`completed`).
pub(crate) fn task_refs(task: &Task, completed: bool) -> Vec<ArtifactRef> {
    let mut refs = Vec::new();
    if completed {
        if let State::Completed { result, .. } = &task.state {
            refs = refs_in(result);
        }
    } else {
        refs = refs_in(&task.spec.input);
        if let Some(c) = &task.spec.compensation {
            refs.extend(refs_in(&c.input));
            refs.sort_unstable();
            refs.dedup();
        }
    }
    refs
}

/// A staging file this old is an upload abandoned by a process that stopped mid-way: removed
/// when a store opens (younger ones may belong to another process using the same directory).
const STAGING_ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Creates the staging directory `dir` if missing and removes the abandoned uploads in it.
pub(crate) fn remove_abandoned_staging(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
    let entries = std::fs::read_dir(dir).map_err(|e| io_error("read", dir, e))?;
    for entry in entries.flatten() {
        let abandoned = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STAGING_ABANDONED_AFTER);
        if abandoned {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

pub(crate) fn io_error(what: &str, path: &Path, e: io::Error) -> StoreError {
    let detail = format!("cannot {what} {}: {e}", path.display());
    if e.raw_os_error() == Some(28) || e.kind() == io::ErrorKind::StorageFull {
        StoreError::Full { detail }
    } else {
        StoreError::Backend(detail)
    }
}
