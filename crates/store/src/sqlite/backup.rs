//! An online copy of an SQLite store (`baton backup`): the database through SQLite's backup
//! API, in one step, so the copy is one consistent snapshot (in WAL mode a reader holds its
//! snapshot while the server's writer goes on: the backup never holds the server up), then the
//! artifact files its rows name. The copy is a store like any other: `baton check` reads it,
//! and `baton serve` on it is the restore.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::error::sql_error;
use super::open::{APPLICATION_ID, MIGRATIONS_LEN};
use crate::artifact::io_error;
use crate::StoreError;

/// Times a backup step that finds the source busy is tried again.
const BUSY_RETRIES_MAX: u32 = 50;
/// Pause between those tries.
const BUSY_PAUSE: Duration = Duration::from_millis(100);

/// What a backup copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// The copy's size, in bytes.
    pub bytes: u64,
    /// Artifact files copied beside it (`<copy>-artifacts/`), and their bytes.
    pub artifacts: u64,
    pub artifact_bytes: u64,
    /// Rows of artifacts the sweep deleted while the backup ran (dropped from the copy).
    pub artifacts_swept_meanwhile: u64,
    pub elapsed: Duration,
}

/// `<path>` with `suffix` added to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Copies the store at `source` (which a server may be using) to `target`, a new file, with
/// its artifacts in `<target>-artifacts/`. Written beside `target` under another name and
/// renamed into place once complete and synced: a backup cut short leaves no `target`.
pub fn backup(source: &Path, target: &Path) -> Result<BackupReport, StoreError> {
    let started = Instant::now();
    let target_artifacts = with_suffix(target, "-artifacts");
    for taken in [target, target_artifacts.as_path()] {
        if taken.exists() {
            return Err(StoreError::Backend(format!(
                "{} exists already: a backup never overwrites; give a new file",
                taken.display()
            )));
        }
    }
    if !source.exists() {
        return Err(StoreError::Backend(format!(
            "no store at {}",
            source.display()
        )));
    }
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(source, e))?;
    src.busy_timeout(Duration::from_secs(5))
        .map_err(|e| sql_error(source, e))?;
    check_source(&src, source)?;

    let partial = with_suffix(target, ".partial");
    let _ = std::fs::remove_file(&partial);
    let result = copy_database(&src, source, &partial)
        .and_then(|()| copy_artifacts(source, &partial, &target_artifacts));
    let (artifacts, artifact_bytes, swept) = match result {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::remove_dir_all(&target_artifacts);
            return Err(e);
        }
    };
    sync_file(&partial)?;
    std::fs::rename(&partial, target).map_err(|e| io_error("rename", &partial, e))?;
    if let Some(dir) = target.parent() {
        sync_dir(dir)?;
    }
    Ok(BackupReport {
        bytes: std::fs::metadata(target).map_or(0, |m| m.len()),
        artifacts,
        artifact_bytes,
        artifacts_swept_meanwhile: swept,
        elapsed: started.elapsed(),
    })
}

/// Refuses what is not a Baton store, or one of a newer Baton than this one.
fn check_source(src: &Connection, path: &Path) -> Result<(), StoreError> {
    let app_id: i64 = src
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    if app_id != APPLICATION_ID {
        return Err(StoreError::NotABatonStore {
            path: path.display().to_string(),
            detail: format!("its application_id is {app_id:#x}"),
        });
    }
    let version: i64 = src
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    if version > MIGRATIONS_LEN as i64 {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: MIGRATIONS_LEN as i64,
        });
    }
    Ok(())
}

/// The whole database in one backup step (one snapshot), then a quick check of the copy.
fn copy_database(src: &Connection, source: &Path, partial: &Path) -> Result<(), StoreError> {
    let mut dst = Connection::open(partial).map_err(|e| sql_error(partial, e))?;
    {
        let backup =
            rusqlite::backup::Backup::new(src, &mut dst).map_err(|e| sql_error(source, e))?;
        let mut busy = 0;
        loop {
            match backup.step(-1).map_err(|e| sql_error(source, e))? {
                rusqlite::backup::StepResult::Done => break,
                // -1 copies every page in one step: More only if SQLite said otherwise.
                rusqlite::backup::StepResult::More => continue,
                rusqlite::backup::StepResult::Busy | rusqlite::backup::StepResult::Locked => {
                    busy += 1;
                    if busy > BUSY_RETRIES_MAX {
                        return Err(StoreError::Unavailable {
                            detail: format!(
                                "{} stayed locked for {} s: the backup could not read it",
                                source.display(),
                                (BUSY_PAUSE * BUSY_RETRIES_MAX).as_secs()
                            ),
                        });
                    }
                    std::thread::sleep(BUSY_PAUSE);
                }
                _ => {}
            }
        }
    }
    let check: String = dst
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| sql_error(partial, e))?;
    if check != "ok" {
        return Err(StoreError::Backend(format!(
            "the copy of {} fails SQLite's check: {check}",
            source.display()
        )));
    }
    Ok(())
}

/// Copies the artifact files the copy's rows name from `<source>-artifacts/`. A file the
/// sweep deleted since the snapshot was of an artifact no task referred to: its row is
/// dropped from the copy, as the sweep would have. One a task refers to cannot be deleted;
/// missing, it is an error.
fn copy_artifacts(
    source: &Path,
    partial: &Path,
    target_dir: &Path,
) -> Result<(u64, u64, u64), StoreError> {
    let dst = Connection::open(partial).map_err(|e| sql_error(partial, e))?;
    let rows: Vec<(String, bool)> = {
        let mut stmt = dst
            .prepare("SELECT sha256, referenced FROM artifacts ORDER BY sha256")
            .map_err(|e| sql_error(partial, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| sql_error(partial, e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| sql_error(partial, e))?
    };
    let source_dir = with_suffix(source, "-artifacts");
    let (mut copied, mut bytes, mut swept) = (0, 0, 0);
    for (hex, referenced) in rows {
        let relative = Path::new("sha256").join(&hex[..2]).join(&hex);
        let from = source_dir.join(&relative);
        let to = target_dir.join(&relative);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error("create", parent, e))?;
        }
        match std::fs::copy(&from, &to) {
            Ok(n) => {
                sync_file(&to)?;
                copied += 1;
                bytes += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !referenced => {
                dst.execute("DELETE FROM artifacts WHERE sha256 = ?1", [&hex])
                    .map_err(|e| sql_error(partial, e))?;
                swept += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Referred to in the snapshot, deleted since: retention released it and the
                // sweep took it in between. A later snapshot no longer holds it.
                return Err(StoreError::Backend(format!(
                    "artifact sha256:{hex} was deleted while the backup ran (retention \
                     released it meanwhile): run the backup again"
                )));
            }
            Err(e) => return Err(io_error("copy", &from, e)),
        }
    }
    // One self-contained file: out of WAL mode, the log checkpointed into it (the store
    // turns WAL on again when it opens the copy).
    let _: Option<String> = dst
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .optional()
        .map_err(|e| sql_error(partial, e))?;
    if target_dir.exists() {
        sync_dir(target_dir)?;
    }
    Ok((copied, bytes, swept))
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error("sync", path, e))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error("sync", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
