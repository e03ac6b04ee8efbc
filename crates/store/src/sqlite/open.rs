//! Opening a [`SqliteStore`]: the file, its checks and migrations, the writer thread, and the
//! pool of read connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::error::sql_error;
use super::writer::Writer;
use crate::batch::Queue;
use crate::{Stats, StoreError};

/// `PRAGMA application_id` of a Baton store ("BATN").
pub(super) const APPLICATION_ID: i64 = 0x4241_544E;

/// Schema migrations; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("001_init.sql"),
    include_str!("002_hot_paths_as_postgres.sql"),
    include_str!("003_workflow_outputs.sql"),
    include_str!("004_artifacts.sql"),
    include_str!("005_signals_and_timers.sql"),
    include_str!("006_schedules_and_triggers.sql"),
    include_str!("007_operator_controls.sql"),
    include_str!("008_workflow_labels.sql"),
    include_str!("009_usage_and_budgets.sql"),
    include_str!("010_flow_control.sql"),
    include_str!("011_fairness.sql"),
    include_str!("012_retention.sql"),
    include_str!("013_waiting_index.sql"),
    include_str!("014_workflow_counts.sql"),
];

/// How many migrations this binary knows: a store whose `user_version` is higher is newer.
pub(super) const MIGRATIONS_LEN: usize = MIGRATIONS.len();

/// Largest write-ahead log kept after a checkpoint: a burst of writes (a big submission, a
/// retention batch) grows it, and without a limit SQLite keeps that size for reuse forever.
const WAL_BYTES_KEPT_MAX: u64 = 64 * 1024 * 1024;

/// Read connections kept open.
const READERS_MAX: usize = 4;
/// The writer's page cache, in KiB (readers keep SQLite's default, 2 MiB). The hot pages of a
/// write are the right edges of the indexes and the rows in flight; 64 MiB made `baton serve`
/// 45 MiB bigger under `bench throughput` and no faster, and due timers fired slower.
const WRITER_CACHE_KIB: u32 = 16 * 1024;

/// Prepared statements kept per connection.
const STATEMENTS_CACHED_MAX: usize = 64;

/// How hard a commit is pushed to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives a process crash and a power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL` in WAL mode: survives a process crash, but a power loss may lose
    /// the last commits, answered or not.
    RisksLastCommitsOnPowerLoss,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SqliteOptions {
    pub durability: Durability,
    /// A quota: the database file never grows beyond this; a write that would need more room
    /// fails as if the disk were full, and writes nothing.
    pub max_size_bytes: Option<u64>,
    /// Converts a database made without incremental auto-vacuum (by a Baton before
    /// retention) with a one-time `VACUUM` when it is opened, so that the pages retention
    /// frees are given back to the file system ([`crate::Store::reclaim_space`]). The
    /// `VACUUM` rewrites the whole file, needs as much free disk again meanwhile, and holds
    /// every other connection off: only for the process that owns the store (`baton serve`,
    /// `baton gc`), never for readers of a live store (`baton check`). A new database has
    /// incremental auto-vacuum from its creation. Without the conversion, space freed by
    /// deletions is reused for new rows, but the file does not shrink.
    pub convert_to_incremental_vacuum: bool,
}

/// `PRAGMA auto_vacuum` of a database whose free pages `PRAGMA incremental_vacuum` gives back.
const AUTO_VACUUM_INCREMENTAL: i64 = 2;

/// A Baton store in one SQLite file.
pub struct SqliteStore {
    pub(super) writes: Queue,
    readers: Arc<Readers>,
    pub(super) stats: Arc<Stats>,
    pub(super) artifacts: Arc<ArtifactFiles>,
}

/// Where artifacts' bytes live: `<database>-artifacts/` beside the database file (as its
/// `-wal`), files `sha256/<first 2 hex>/<64 hex>`, uploads staged in `tmp/` (same file
/// system, so moving one into place is an atomic rename).
pub(super) struct ArtifactFiles {
    pub(super) dir: PathBuf,
    /// Held while a put moves a file into place and writes its row, and while the sweep
    /// deletes rows and then files, so a file is never removed under a row just written.
    pub(super) lock: tokio::sync::Mutex<()>,
}

impl ArtifactFiles {
    pub(super) fn staging(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub(super) fn path(&self, artifact: baton_core::ArtifactRef) -> PathBuf {
        let hex = artifact.hex();
        self.dir.join("sha256").join(&hex[..2]).join(hex)
    }

    fn open(db: &Path) -> Result<ArtifactFiles, StoreError> {
        let mut name = db.as_os_str().to_owned();
        name.push("-artifacts");
        let files = ArtifactFiles {
            dir: PathBuf::from(name),
            lock: tokio::sync::Mutex::new(()),
        };
        crate::artifact::remove_abandoned_staging(&files.staging())?;
        Ok(files)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with full durability.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, SqliteOptions::default())
    }

    pub fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = connect(&path, true)?;
        migrate(&mut conn, &path)?;
        if options.convert_to_incremental_vacuum {
            convert_to_incremental_vacuum(&conn, &path)?;
        }
        let artifacts = Arc::new(ArtifactFiles::open(&path)?);
        configure(&conn, &options).map_err(|e| sql_error(&path, e))?;
        let (writes, rx) = Queue::new();
        let stats = Arc::new(Stats::default());
        let writer_stats = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("baton-sqlite-writer".into())
            .spawn(move || Writer::new(conn, writer_stats).run(rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            writes,
            readers: Arc::new(Readers {
                path,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(READERS_MAX),
            }),
            stats,
            artifacts,
        })
    }

    /// What the database takes on disk: its file and its write-ahead log (not the artifacts).
    pub fn file_bytes(&self) -> u64 {
        let size = |suffix: &str| {
            let mut name = self.readers.path.as_os_str().to_owned();
            name.push(suffix);
            std::fs::metadata(PathBuf::from(name)).map_or(0, |m| m.len())
        };
        size("") + size("-wal")
    }

    /// Runs `f` on a read connection, off the async runtime's threads.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self.readers.permit().await?;
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .unwrap_or_else(|e| match e.try_into_panic() {
                // A read that panicked is a bug: carry its panic to the caller.
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(StoreError::Closed),
            })
    }

    /// Runs `f`, a point read (a row or a few, found by key), on a read connection on the
    /// calling thread. Such a read takes tens of microseconds from the page cache, less than
    /// handing it to a blocking thread and back, two thread switches that cost the plain
    /// agent protocol a third of its throughput (BENCHMARKS.md); whatever scans or pages
    /// goes through [`SqliteStore::read`].
    pub(super) async fn read_point<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError>,
    {
        let _permit = self.readers.permit().await?;
        self.readers.with(f)
    }
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    /// A turn among the readers: at most `READERS_MAX` read at once.
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        self.permits.acquire().await.map_err(|_| StoreError::Closed)
    }

    /// Runs `f` on an idle connection, or a new one when none is idle.
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = match self.idle.lock().expect("reader pool lock").pop() {
            Some(c) => c,
            None => connect(&self.path, false)?,
        };
        let out = f(&conn);
        self.idle.lock().expect("reader pool lock").push(conn);
        out
    }
}

fn connect(path: &Path, write: bool) -> Result<Connection, StoreError> {
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_error(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| sql_error(path, e))?;
    // Room for every statement of the hot paths (the default, 16, made the writer re-parse).
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED_MAX);
    // Plans that do not look at the values bound: otherwise a statement whose plan did is
    // compiled again each time one of them is bound anew. The queries state the partial
    // indexes' predicates term for term, so no plan needs them.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(|e| sql_error(path, e))?;
    Ok(conn)
}

fn configure(conn: &Connection, options: &SqliteOptions) -> rusqlite::Result<()> {
    let sync = match options.durability {
        Durability::Full => "FULL",
        Durability::RisksLastCommitsOnPowerLoss => "NORMAL",
    };
    // A batch that runs again with its writes in savepoints, and statements that may fail
    // midway, keep a statement journal, which would otherwise be a temporary file written
    // page by page: in memory it costs no system call (a crash loses nothing, the WAL holds
    // the committed state).
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = OFF; PRAGMA cache_size = -{WRITER_CACHE_KIB};
         PRAGMA temp_store = MEMORY; PRAGMA journal_size_limit = {WAL_BYTES_KEPT_MAX};"
    ))?;
    if let Some(bytes) = options.max_size_bytes {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let pages = (bytes as i64 / page_size).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
    }
    Ok(())
}

/// Checks that the file is a Baton store (or empty), then applies missing migrations.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let not_baton = |detail: String| StoreError::NotABatonStore {
        path: path.display().to_string(),
        detail,
    };
    let app_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    if app_id != APPLICATION_ID && (app_id != 0 || tables > 0) {
        return Err(not_baton(format!(
            "it is an SQLite database of another application (application_id {app_id:#x}, \
             {tables} schema objects)"
        )));
    }
    if tables == 0 {
        // Before the first table, or it takes a VACUUM: pages that deletions free can then be
        // given back to the file system.
        conn.execute_batch(&format!("PRAGMA auto_vacuum = {AUTO_VACUUM_INCREMENTAL}"))
            .map_err(|e| sql_error(path, e))?;
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "cannot switch {} to WAL mode (got {mode})",
            path.display()
        )));
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(|e| sql_error(path, e))?;
        tx.execute_batch(sql).map_err(|e| sql_error(path, e))?;
        tx.execute_batch(&format!(
            "PRAGMA user_version = {}; PRAGMA application_id = {APPLICATION_ID};",
            i + 1
        ))
        .map_err(|e| sql_error(path, e))?;
        tx.commit().map_err(|e| sql_error(path, e))?;
    }
    Ok(())
}

/// Turns incremental auto-vacuum on for a database made without it: a one-time `VACUUM`
/// (see [`SqliteOptions::convert_to_incremental_vacuum`]), logged with how long it took.
fn convert_to_incremental_vacuum(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let mode: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    if mode == AUTO_VACUUM_INCREMENTAL {
        return Ok(());
    }
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    tracing::warn!(
        store = %path.display(),
        bytes,
        "converting the store to incremental auto-vacuum, once: VACUUM rewrites the file \
         (it needs as much free disk again, and takes a while for a big store)"
    );
    let started = std::time::Instant::now();
    conn.execute_batch(&format!(
        "PRAGMA auto_vacuum = {AUTO_VACUUM_INCREMENTAL}; VACUUM;"
    ))
    .map_err(|e| sql_error(path, e))?;
    let after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    tracing::info!(
        store = %path.display(),
        bytes_before = bytes,
        bytes_after = after,
        seconds = started.elapsed().as_secs_f64(),
        "store converted to incremental auto-vacuum"
    );
    Ok(())
}
