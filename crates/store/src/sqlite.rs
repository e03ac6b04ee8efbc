//! The embedded default: one SQLite file in WAL mode, `synchronous=FULL` unless asked otherwise.
//!
//! All writes go through one writer thread. It takes every write waiting in its queue (up to
//! [`BATCH_WRITES_MAX`]), runs each in its own savepoint inside one transaction, commits once,
//! and only then answers the callers: that is the group commit, one disk flush for the batch.
//! Reads run on a small pool of read connections, which WAL lets proceed beside the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use baton_core::{
    apply, AgentId, Effect, Event, HistoryEntry, StateKind, Task, TaskId, TaskKey, Timestamp,
    WorkflowId,
};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction};
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use crate::codec::{self, ts};
use crate::{
    AgentRecord, ClaimRequest, CommitStats, Dependency, Edge, HotPath, NewTask, OutboxItem,
    StateCounts, Stats, Store, StoreError, SubmitBatch, SubmitOutcome, TaskFilter,
    TransitionRecord, WorkflowRecord, WorkflowRef, BATCH_WRITES_MAX, PAGE_ROWS_MAX,
    QUEUE_WRITES_MAX,
};

/// `PRAGMA application_id` of a Baton store ("BATN").
const APPLICATION_ID: i64 = 0x4241_544E;

/// Schema migrations; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("sqlite/001_init.sql"),
    include_str!("sqlite/002_hot_paths_as_postgres.sql"),
];

/// Read connections kept open.
const READERS_MAX: usize = 4;

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
}

/// A Baton store in one SQLite file.
pub struct SqliteStore {
    writes: mpsc::Sender<Command>,
    readers: Arc<Readers>,
    stats: Arc<Stats>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Submit(Box<SubmitBatch>, Reply<SubmitOutcome>),
    Apply(Vec<TransitionRecord>, Reply<Vec<Result<(), StoreError>>>),
    Claim(ClaimRequest, Reply<Vec<Task>>),
    AckOutbox(Vec<i64>, Reply<()>),
    UpsertAgent(AgentRecord, Reply<()>),
}

impl Command {
    fn writes(&self) -> usize {
        match self {
            Command::Submit(b, _) => b.tasks.len() + b.transitions.len(),
            Command::Apply(r, _) => r.len(),
            Command::Claim(r, _) => r.leases.len(),
            Command::AckOutbox(..) | Command::UpsertAgent(..) => 1,
        }
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
        configure(&conn, &options).map_err(|e| sql_error(&path, e))?;
        let (tx, rx) = mpsc::channel(QUEUE_WRITES_MAX);
        let stats = Arc::new(Stats::default());
        let writer_stats = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("baton-sqlite-writer".into())
            .spawn(move || Writer::new(conn, writer_stats).run(rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            writes: tx,
            readers: Arc::new(Readers {
                path,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(READERS_MAX),
            }),
            stats,
        })
    }

    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let _permit = readers
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let readers2 = Arc::clone(&readers);
        tokio::task::spawn_blocking(move || {
            let conn = match readers2.idle.lock().expect("reader pool lock").pop() {
                Some(c) => c,
                None => connect(&readers2.path, false)?,
            };
            let out = f(&conn);
            readers2.idle.lock().expect("reader pool lock").push(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
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
    Ok(conn)
}

fn configure(conn: &Connection, options: &SqliteOptions) -> rusqlite::Result<()> {
    let sync = match options.durability {
        Durability::Full => "FULL",
        Durability::RisksLastCommitsOnPowerLoss => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA foreign_keys = OFF; PRAGMA cache_size = -65536;"
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

/// Turns an SQLite error into one a user can act on.
fn sql_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let code = e.sqlite_error_code();
    let path_s = path.display().to_string();
    match code {
        Some(ErrorCode::NotADatabase) => StoreError::NotABatonStore {
            path: path_s,
            detail: "the file is not an SQLite database".into(),
        },
        Some(ErrorCode::DiskFull) => StoreError::Backend(format!(
            "the disk holding {path_s} is full; nothing was written"
        )),
        Some(ErrorCode::ReadOnly) => {
            StoreError::Backend(format!("{path_s} is read-only; Baton needs to write there"))
        }
        Some(ErrorCode::CannotOpen) => StoreError::Backend(format!(
            "cannot open {path_s}: check that its directory exists and is writable ({e})"
        )),
        Some(ErrorCode::DatabaseCorrupt) => {
            StoreError::Backend(format!("{path_s} is corrupt: {e}"))
        }
        _ => StoreError::Backend(format!("{path_s}: {e}")),
    }
}

fn db(e: rusqlite::Error) -> StoreError {
    sql_error(Path::new("the store"), e)
}

/// The single writer: owns the read-write connection and the group commit.
struct Writer {
    conn: Connection,
    stats: Arc<Stats>,
}

/// Changes to the per-state counters made by one write, applied with the batch.
type Deltas = [i64; 7];

impl Writer {
    fn new(conn: Connection, stats: Arc<Stats>) -> Writer {
        Writer { conn, stats }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(BATCH_WRITES_MAX);
        while let Some(first) = rx.blocking_recv() {
            let mut writes = first.writes();
            batch.push(first);
            while writes < BATCH_WRITES_MAX {
                match rx.try_recv() {
                    Ok(cmd) => {
                        writes += cmd.writes();
                        batch.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch, writes);
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<Command>, writes: usize) {
        let started = std::time::Instant::now();
        let mut finish: Vec<Finish> = Vec::with_capacity(batch.len());
        let mut ctx = BatchCtx::default();
        let outcome = (|| -> rusqlite::Result<()> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for cmd in batch.drain(..) {
                if ctx.aborted.is_some() {
                    finish.push(abandon(cmd));
                } else {
                    finish.push(run_command(&tx, cmd, &mut ctx));
                }
            }
            if ctx.aborted.is_none() {
                write_deltas(&tx, &ctx.deltas)?;
                tx.commit()?;
            }
            Ok(())
        })();
        let failure = ctx.aborted.or_else(|| {
            outcome.err().map(|e| match db(e) {
                StoreError::Backend(m) => m,
                other => other.to_string(),
            })
        });
        if failure.is_none() {
            self.stats.record(writes, started.elapsed());
        }
        for f in finish {
            f(failure.as_deref());
        }
        batch.clear();
    }
}

/// How to answer a command once its batch committed (`None`) or failed (the reason).
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

/// State of the batch being built: the counter changes so far, and whether SQLite aborted the
/// whole transaction (a full disk does that), after which nothing more can run in it.
#[derive(Default)]
struct BatchCtx {
    deltas: Deltas,
    aborted: Option<String>,
}

/// Answers a command that never ran because its batch had already failed.
fn abandon(cmd: Command) -> Finish {
    match cmd {
        Command::Submit(_, r) => answer(r, Err(StoreError::Closed)),
        Command::Apply(_, r) => answer(r, Err(StoreError::Closed)),
        Command::Claim(_, r) => answer(r, Err(StoreError::Closed)),
        Command::AckOutbox(_, r) | Command::UpsertAgent(_, r) => answer(r, Err(StoreError::Closed)),
    }
}

/// Runs one command in its own savepoint; returns how to answer it once the batch commits
/// (or fails to: then every caller gets the commit's error).
fn run_command(tx: &Transaction<'_>, cmd: Command, ctx: &mut BatchCtx) -> Finish {
    match cmd {
        Command::Submit(batch, reply) => {
            let out = savepoint(tx, ctx, |sp, d| submit(sp, *batch, d));
            answer(reply, out)
        }
        Command::Apply(records, reply) => {
            let mut results = Vec::with_capacity(records.len());
            for record in records {
                results.push(savepoint(tx, ctx, |sp, d| write_transition(sp, &record, d)));
            }
            answer(reply, Ok(results))
        }
        Command::Claim(request, reply) => {
            let out = savepoint(tx, ctx, |sp, d| claim(sp, &request, d));
            answer(reply, out)
        }
        Command::AckOutbox(ids, reply) => {
            let out = savepoint(tx, ctx, |sp, _| {
                let mut stmt = sp
                    .prepare_cached("DELETE FROM outbox WHERE id = ?1")
                    .map_err(db)?;
                for id in &ids {
                    stmt.execute([id]).map_err(db)?;
                }
                Ok(())
            });
            answer(reply, out)
        }
        Command::UpsertAgent(agent, reply) => {
            let out = savepoint(tx, ctx, |sp, _| upsert_agent(sp, &agent));
            answer(reply, out)
        }
    }
}

fn answer<T: Send + 'static>(reply: Reply<T>, out: Result<T, StoreError>) -> Finish {
    Box::new(move |failure| {
        let out = match failure {
            Some(msg) => Err(StoreError::Backend(format!("commit failed: {msg}"))),
            None => out,
        };
        let _ = reply.send(out);
    })
}

/// Runs `f` in a savepoint: on error its writes and counter changes are undone. If SQLite
/// rolled back the whole transaction instead, the batch is marked aborted.
fn savepoint<T>(
    tx: &Transaction<'_>,
    ctx: &mut BatchCtx,
    f: impl FnOnce(&Connection, &mut Deltas) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if ctx.aborted.is_some() {
        return Err(StoreError::Closed);
    }
    // Cached: parsing these anew for every write cost the single writer thread ~3%.
    tx.prepare_cached("SAVEPOINT cmd")
        .and_then(|mut s| s.execute([]))
        .map_err(db)?;
    let mut local: Deltas = [0; 7];
    match f(tx, &mut local) {
        Ok(v) => {
            tx.prepare_cached("RELEASE cmd")
                .and_then(|mut s| s.execute([]))
                .map_err(db)?;
            for (d, l) in ctx.deltas.iter_mut().zip(local) {
                *d += l;
            }
            Ok(v)
        }
        Err(e) => {
            let undone =
                !tx.is_autocommit() && tx.execute_batch("ROLLBACK TO cmd; RELEASE cmd").is_ok();
            if !undone {
                ctx.aborted = Some(match &e {
                    StoreError::Backend(m) => m.clone(),
                    other => other.to_string(),
                });
            }
            Err(e)
        }
    }
}

fn write_deltas(tx: &Transaction<'_>, deltas: &Deltas) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO state_counts (state, n) VALUES (?1, ?2)
         ON CONFLICT (state) DO UPDATE SET n = n + excluded.n",
    )?;
    for state in StateKind::ALL {
        let d = deltas[state.index()];
        if d != 0 {
            stmt.execute(params![state.as_str(), d])?;
        }
    }
    Ok(())
}

fn submit(
    conn: &Connection,
    batch: SubmitBatch,
    deltas: &mut Deltas,
) -> Result<SubmitOutcome, StoreError> {
    let workflow = match &batch.workflow {
        WorkflowRef::New(wf) => {
            if let Some(key) = &wf.idempotency_key {
                let seen: Option<(Uuid, String)> = conn
                    .prepare_cached(
                        "SELECT id, request_hash FROM workflows WHERE idempotency_key = ?1",
                    )
                    .and_then(|mut s| {
                        s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()
                    })
                    .map_err(db)?;
                if let Some((id, hash)) = seen {
                    if hash != wf.request_hash {
                        return Err(StoreError::IdempotencyMismatch { key: key.clone() });
                    }
                    let workflow = WorkflowId(id);
                    return Ok(SubmitOutcome::Existing {
                        workflow,
                        tasks: task_keys(conn, workflow)?,
                    });
                }
            }
            conn.prepare_cached(
                "INSERT INTO workflows (id, name, idempotency_key, request_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    wf.id.0,
                    wf.name,
                    wf.idempotency_key,
                    wf.request_hash,
                    ts(wf.created_at)
                ])
            })
            .map_err(db)?;
            wf.id
        }
        WorkflowRef::Existing(id) => {
            let found: Option<i64> = conn
                .prepare_cached("SELECT 1 FROM workflows WHERE id = ?1")
                .and_then(|mut s| s.query_row([id.0], |r| r.get(0)).optional())
                .map_err(db)?;
            if found.is_none() {
                return Err(StoreError::WorkflowNotFound(*id));
            }
            *id
        }
    };
    for new in &batch.tasks {
        insert_task(conn, new, deltas)?;
    }
    let mut add_edge = conn
        .prepare_cached("INSERT INTO edges (dependency, dependent) VALUES (?1, ?2)")
        .map_err(db)?;
    let mut count_open = conn
        .prepare_cached(
            "UPDATE tasks SET deps_open = deps_open + 1
             WHERE id = ?2 AND (SELECT state FROM tasks WHERE id = ?1) <> 'completed'",
        )
        .map_err(db)?;
    for edge in &batch.edges {
        add_edge
            .execute(params![edge.dependency.0, edge.dependent.0])
            .map_err(db)?;
        count_open
            .execute(params![edge.dependency.0, edge.dependent.0])
            .map_err(db)?;
    }
    for record in &batch.transitions {
        write_transition(conn, record, deltas)?;
    }
    Ok(SubmitOutcome::Created { workflow })
}

fn task_keys(
    conn: &Connection,
    workflow: WorkflowId,
) -> Result<Vec<(TaskKey, TaskId)>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT key, id FROM tasks WHERE workflow_id = ?1 ORDER BY id")
        .map_err(db)?;
    let rows = stmt
        .query_map([workflow.0], |r| {
            Ok((TaskKey(r.get(0)?), TaskId(r.get(1)?)))
        })
        .map_err(db)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db)
}

fn insert_task(conn: &Connection, new: &NewTask, deltas: &mut Deltas) -> Result<(), StoreError> {
    let task = &new.task;
    let capset = codec::capset(&task.spec.capabilities);
    conn.prepare_cached("INSERT OR IGNORE INTO capsets (capset) VALUES (?1)")
        .and_then(|mut s| s.execute([&capset]))
        .map_err(db)?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO tasks (id, workflow_id, key, state, version, priority, capset, ready_at,
                                timer_at, lease_agent, deps_open, updated_at, snapshot)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?12)",
        )
        .and_then(|mut s| {
            s.execute(params![
                task.id.0,
                task.workflow.0,
                task.spec.key.0,
                task.kind().as_str(),
                task.version as i64,
                task.spec.priority,
                capset,
                codec::ready_at(task).map(ts),
                codec::timer_at(task).map(ts),
                codec::lease_agent(task),
                ts(task.updated_at),
                codec::snapshot(task),
            ])
        });
    match inserted {
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            return Err(StoreError::DuplicateKey {
                workflow: task.workflow,
                key: task.spec.key.clone(),
            })
        }
        other => other.map_err(db)?,
    };
    conn.prepare_cached("INSERT INTO task_specs (task_id, spec) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![task.id.0, codec::spec_json(&task.spec)]))
        .map_err(db)?;
    append_history(conn, task.id, &new.entry)?;
    write_outbox(conn, task.id, &new.outbox, new.entry.at)?;
    deltas[task.kind().index()] += 1;
    Ok(())
}

fn append_history(conn: &Connection, task: TaskId, entry: &HistoryEntry) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO history (task_id, seq, at, actor, event, fencing_token, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            task.0,
            entry.seq as i64,
            ts(entry.at),
            codec::actor(&entry.event),
            entry.event.kind().as_str(),
            codec::event_token(&entry.event),
            codec::event_json(&entry.event),
        ])
    })
    .map_err(db)?;
    Ok(())
}

fn write_outbox(
    conn: &Connection,
    task: TaskId,
    effects: &[Effect],
    at: Timestamp,
) -> Result<(), StoreError> {
    if effects.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached("INSERT INTO outbox (task_id, effect, created_at) VALUES (?1, ?2, ?3)")
        .map_err(db)?;
    for effect in effects {
        let json = serde_json::to_string(effect).expect("an effect always serialises");
        stmt.execute(params![task.0, json, ts(at)]).map_err(db)?;
    }
    Ok(())
}

/// Compare-and-set on the version, then the row, the history entry, the outbox, and, on
/// completion, the dependents' open counts.
fn write_transition(
    conn: &Connection,
    record: &TransitionRecord,
    deltas: &mut Deltas,
) -> Result<(), StoreError> {
    let task = &record.task;
    let expected = record
        .entry
        .seq
        .checked_sub(1)
        .filter(|_| record.entry.seq == task.version);
    let Some(expected) = expected else {
        return Err(StoreError::Backend(format!(
            "history entry {} does not match task version {}",
            record.entry.seq, task.version
        )));
    };
    // Compare-and-set in one statement: the row changes only at the expected version.
    let changed = conn
        .prepare_cached(
            "UPDATE tasks SET state = ?2, version = ?3, ready_at = ?4, timer_at = ?5,
                              lease_agent = ?6, updated_at = ?7, snapshot = ?8
             WHERE id = ?1 AND version = ?9",
        )
        .and_then(|mut s| {
            s.execute(params![
                task.id.0,
                task.kind().as_str(),
                task.version as i64,
                codec::ready_at(task).map(ts),
                codec::timer_at(task).map(ts),
                codec::lease_agent(task),
                ts(task.updated_at),
                codec::snapshot(task),
                expected as i64,
            ])
        })
        .map_err(db)?;
    if changed == 0 {
        let found: Option<i64> = conn
            .prepare_cached("SELECT version FROM tasks WHERE id = ?1")
            .and_then(|mut s| s.query_row([task.id.0], |r| r.get(0)).optional())
            .map_err(db)?;
        return Err(match found {
            None => StoreError::TaskNotFound(task.id),
            Some(v) => StoreError::Conflict {
                task: task.id,
                expected,
                found: Some(v as u64),
            },
        });
    }
    let old_state = record.from;
    append_history(conn, task.id, &record.entry)?;
    write_outbox(conn, task.id, &record.outbox, record.entry.at)?;
    let new_state = task.kind();
    if new_state == StateKind::Completed && old_state != StateKind::Completed {
        conn.prepare_cached(
            "UPDATE tasks SET deps_open = deps_open - 1
             WHERE id IN (SELECT dependent FROM edges WHERE dependency = ?1)",
        )
        .and_then(|mut s| s.execute([task.id.0]))
        .map_err(db)?;
    }
    deltas[old_state.index()] -= 1;
    deltas[new_state.index()] += 1;
    Ok(())
}

fn claim(
    conn: &Connection,
    request: &ClaimRequest,
    deltas: &mut Deltas,
) -> Result<Vec<Task>, StoreError> {
    let held: i64 = match request.max_held {
        Some(_) => conn
            .prepare_cached("SELECT count(*) FROM tasks WHERE lease_agent = ?1")
            .and_then(|mut s| s.query_row([request.agent.0], |r| r.get(0)))
            .map_err(db)?,
        None => 0,
    };
    let room = request
        .max_held
        .map_or(usize::MAX, |max| (i64::from(max) - held).max(0) as usize);
    let wanted = request.leases.len().min(PAGE_ROWS_MAX).min(room);
    if wanted == 0 {
        return Ok(Vec::new());
    }
    let capsets: Vec<String> = {
        let mut stmt = conn
            .prepare_cached("SELECT capset FROM capsets")
            .map_err(db)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)?
    };
    let mut candidates: Vec<(i64, i64, Uuid)> = Vec::new();
    let mut stmt = conn
        .prepare_cached(
            "SELECT priority, ready_at, id FROM tasks
             WHERE state = 'pending' AND capset = ?1
             ORDER BY priority DESC, ready_at, id LIMIT ?2",
        )
        .map_err(db)?;
    for capset in capsets
        .iter()
        .filter(|c| codec::capset_fits(c, &request.capabilities))
    {
        let rows = stmt
            .query_map(params![capset, wanted as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(db)?;
        for row in rows {
            candidates.push(row.map_err(db)?);
        }
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    candidates.truncate(wanted);
    let mut claimed = Vec::with_capacity(candidates.len());
    for ((_, _, id), lease) in candidates.into_iter().zip(&request.leases) {
        let Some(task) = load_task(conn, TaskId(id))? else {
            continue;
        };
        let event = Event::AgentAssigned {
            agent: request.agent,
            capabilities: request.capabilities.clone(),
            lease: *lease,
        };
        // Never stamped before the task's last change, whatever the clock did since.
        let at = request.now.max(task.updated_at);
        let Ok(t) = apply(&task, &event, at) else {
            continue;
        };
        let record = TransitionRecord::of(&t, event, at);
        write_transition(conn, &record, deltas)?;
        claimed.push(record.task);
    }
    Ok(claimed)
}

fn upsert_agent(conn: &Connection, agent: &AgentRecord) -> Result<(), StoreError> {
    let caps = serde_json::to_string(&agent.capabilities).expect("capabilities serialise");
    conn.prepare_cached(
        "INSERT INTO agents (id, name, capabilities, concurrency, registered_at, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name,
             capabilities = excluded.capabilities, concurrency = excluded.concurrency,
             last_seen = excluded.last_seen",
    )
    .and_then(|mut s| {
        s.execute(params![
            agent.id.0,
            agent.name,
            caps,
            agent.concurrency,
            ts(agent.registered_at),
            ts(agent.last_seen)
        ])
    })
    .map_err(db)?;
    Ok(())
}

fn load_task(conn: &Connection, id: TaskId) -> Result<Option<Task>, StoreError> {
    let row: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT t.snapshot, s.spec FROM tasks t JOIN task_specs s ON s.task_id = t.id
             WHERE t.id = ?1",
        )
        .and_then(|mut s| {
            s.query_row([id.0], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db)?;
    row.map(|(snap, spec)| codec::decode_task(id, &snap, &spec))
        .transpose()
}

fn load_tasks(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let rows = stmt
        .query_map(args, |r| {
            Ok((
                TaskId(r.get(0)?),
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, snap, spec) = row.map_err(db)?;
        out.push(codec::decode_task(id, &snap, &spec)?);
    }
    Ok(out)
}

fn agent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Uuid, String, String, u32, i64, i64)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode_agent(row: (Uuid, String, String, u32, i64, i64)) -> Result<AgentRecord, StoreError> {
    let (id, name, caps, concurrency, registered, seen) = row;
    Ok(AgentRecord {
        id: AgentId(id),
        name,
        capabilities: serde_json::from_str(&caps)
            .map_err(|e| StoreError::Backend(format!("agent {id} capabilities: {e}")))?,
        concurrency,
        registered_at: Timestamp(registered as u64),
        last_seen: Timestamp(seen as u64),
    })
}

const CLAIM_SQL: &str = "SELECT priority, ready_at, id FROM tasks
    WHERE state = 'pending' AND capset = ?1 ORDER BY priority DESC, ready_at, id LIMIT ?2";
const TIMERS_SQL: &str = "SELECT id, timer_at FROM tasks
    WHERE timer_at IS NOT NULL AND timer_at <= ?1 ORDER BY timer_at, id LIMIT ?2";
const DEPENDENTS_SQL: &str = "SELECT dependent FROM edges WHERE dependency = ?1 ORDER BY dependent";
/// Named index: without statistics SQLite prefers `tasks_by_state`, which reads every blocked
/// task to find the few whose count reached zero.
const RELEASED_SQL: &str = "SELECT id FROM tasks INDEXED BY tasks_released
    WHERE state = 'blocked' AND deps_open = 0 ORDER BY id LIMIT ?1";
const COUNTS_SQL: &str = "SELECT state, n FROM state_counts";

impl Store for SqliteStore {
    async fn submit(&self, batch: SubmitBatch) -> Result<SubmitOutcome, StoreError> {
        self.write(|r| Command::Submit(Box::new(batch), r)).await
    }

    async fn apply(&self, record: TransitionRecord) -> Result<(), StoreError> {
        let mut results = self.write(|r| Command::Apply(vec![record], r)).await?;
        results.pop().unwrap_or(Ok(()))
    }

    async fn apply_all(
        &self,
        records: Vec<TransitionRecord>,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.write(|r| Command::Apply(records, r)).await
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Task>, StoreError> {
        self.write(|r| Command::Claim(request, r)).await
    }

    async fn task(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.read(move |c| load_task(c, id)).await
    }

    async fn task_by_key(
        &self,
        workflow: WorkflowId,
        key: TaskKey,
    ) -> Result<Option<Task>, StoreError> {
        self.read(move |c| {
            let id: Option<Uuid> = c
                .prepare_cached("SELECT id FROM tasks WHERE workflow_id = ?1 AND key = ?2")
                .and_then(|mut s| {
                    s.query_row(params![workflow.0, key.0], |r| r.get(0))
                        .optional()
                })
                .map_err(db)?;
            match id {
                Some(id) => load_task(c, TaskId(id)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn history(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, at, payload FROM history WHERE task_id = ?1 AND seq > ?2
                     ORDER BY seq LIMIT ?3",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![id.0, after as i64, limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, at, payload) = row.map_err(db)?;
                let event = serde_json::from_str(&payload).map_err(|e| StoreError::Corrupt {
                    task: id,
                    detail: format!("history entry {seq}: {e}"),
                })?;
                out.push(HistoryEntry {
                    seq: seq as u64,
                    at: Timestamp(at as u64),
                    event,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn tasks(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        let limit = filter.limit.clamp(1, PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let after = filter.after.map(|t| t.0).unwrap_or(Uuid::nil());
            let select = "SELECT t.id, t.snapshot, s.spec FROM tasks t
                          JOIN task_specs s ON s.task_id = t.id";
            match (filter.workflow, filter.state) {
                (Some(wf), Some(st)) => load_tasks(
                    c,
                    &format!("{select} WHERE t.workflow_id = ?1 AND t.state = ?2 AND t.id > ?3 ORDER BY t.id LIMIT ?4"),
                    &[&wf.0, &st.as_str(), &after, &limit],
                ),
                (Some(wf), None) => load_tasks(
                    c,
                    &format!("{select} WHERE t.workflow_id = ?1 AND t.id > ?2 ORDER BY t.id LIMIT ?3"),
                    &[&wf.0, &after, &limit],
                ),
                (None, Some(st)) => load_tasks(
                    c,
                    &format!("{select} WHERE t.state = ?1 AND t.id > ?2 ORDER BY t.id LIMIT ?3"),
                    &[&st.as_str(), &after, &limit],
                ),
                (None, None) => load_tasks(
                    c,
                    &format!("{select} WHERE t.id > ?1 ORDER BY t.id LIMIT ?2"),
                    &[&after, &limit],
                ),
            }
        })
        .await
    }

    async fn counts(&self, workflow: Option<WorkflowId>) -> Result<StateCounts, StoreError> {
        self.read(move |c| {
            let mut counts = StateCounts::default();
            let mut put = |state: String, n: i64| -> Result<(), StoreError> {
                let kind = StateKind::parse(&state)
                    .ok_or_else(|| StoreError::Backend(format!("unknown state {state:?} in counts")))?;
                counts.0[kind.index()] = n.max(0) as u64;
                Ok(())
            };
            match workflow {
                None => {
                    let mut stmt = c.prepare_cached(COUNTS_SQL).map_err(db)?;
                    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db)?;
                    for row in rows {
                        let (s, n) = row.map_err(db)?;
                        put(s, n)?;
                    }
                }
                Some(wf) => {
                    let mut stmt = c
                        .prepare_cached("SELECT state, count(*) FROM tasks WHERE workflow_id = ?1 GROUP BY state")
                        .map_err(db)?;
                    let rows = stmt.query_map([wf.0], |r| Ok((r.get(0)?, r.get(1)?))).map_err(db)?;
                    for row in rows {
                        let (s, n) = row.map_err(db)?;
                        put(s, n)?;
                    }
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(
                "SELECT name, idempotency_key, created_at FROM workflows WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.query_row([id.0], |r| {
                    Ok(WorkflowRecord {
                        id,
                        name: r.get(0)?,
                        idempotency_key: r.get(1)?,
                        created_at: Timestamp(r.get::<_, i64>(2)? as u64),
                    })
                })
                .optional()
            })
            .map_err(db)
        })
        .await
    }

    async fn workflows(
        &self,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let before = before.map(|w| w.0).unwrap_or(Uuid::max());
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, name, idempotency_key, created_at FROM workflows
                     WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map(params![before, limit], |r| {
                    Ok(WorkflowRecord {
                        id: WorkflowId(r.get(0)?),
                        name: r.get(1)?,
                        idempotency_key: r.get(2)?,
                        created_at: Timestamp(r.get::<_, i64>(3)? as u64),
                    })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)
        })
        .await
    }

    async fn workflow_edges(&self, workflow: WorkflowId) -> Result<Vec<Edge>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT e.dependency, e.dependent FROM tasks t
                     JOIN edges e ON e.dependent = t.id WHERE t.workflow_id = ?1",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([workflow.0], |r| {
                    Ok(Edge {
                        dependency: TaskId(r.get(0)?),
                        dependent: TaskId(r.get(1)?),
                    })
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)
        })
        .await
    }

    async fn dependencies(&self, id: TaskId) -> Result<Vec<Dependency>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT t.key, t.id, t.state, t.updated_at FROM edges e
                     JOIN tasks t ON t.id = e.dependency
                     WHERE e.dependent = ?1 ORDER BY t.key",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([id.0], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Uuid>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (key, dep, state, updated_at) = row.map_err(db)?;
                out.push(Dependency {
                    key: TaskKey(key),
                    id: TaskId(dep),
                    updated_at: Timestamp(updated_at as u64),
                    state: codec::parse_state(TaskId(dep), &state)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn dependents(&self, id: TaskId) -> Result<Vec<TaskId>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(DEPENDENTS_SQL).map_err(db)?;
            let rows = stmt
                .query_map([id.0], |r| r.get::<_, Uuid>(0))
                .map_err(db)?;
            rows.map(|r| r.map(TaskId).map_err(db)).collect()
        })
        .await
    }

    async fn due_timers(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(TaskId, Timestamp)>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(TIMERS_SQL).map_err(db)?;
            let rows = stmt
                .query_map(params![ts(now), limit], |r| {
                    Ok((TaskId(r.get(0)?), Timestamp(r.get::<_, i64>(1)? as u64)))
                })
                .map_err(db)?;
            rows.collect::<rusqlite::Result<_>>().map_err(db)
        })
        .await
    }

    async fn next_timer(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT min(timer_at) FROM tasks WHERE timer_at IS NOT NULL",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|t| t.map(|t| Timestamp(t as u64)))
            .map_err(db)
        })
        .await
    }

    async fn released_blocked(&self, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(RELEASED_SQL).map_err(db)?;
            let rows = stmt
                .query_map([limit], |r| r.get::<_, Uuid>(0))
                .map_err(db)?;
            rows.map(|r| r.map(TaskId).map_err(db)).collect()
        })
        .await
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT id, task_id, effect FROM outbox ORDER BY id LIMIT ?1")
                .map_err(db)?;
            let rows = stmt
                .query_map([limit], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Uuid>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, task, effect) = row.map_err(db)?;
                out.push(OutboxItem {
                    id,
                    task: TaskId(task),
                    effect: serde_json::from_str(&effect).map_err(|e| StoreError::Corrupt {
                        task: TaskId(task),
                        detail: format!("outbox item {id}: {e}"),
                    })?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn ack_outbox(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.write(|r| Command::AckOutbox(ids, r)).await
    }

    async fn upsert_agent(&self, agent: AgentRecord) -> Result<(), StoreError> {
        self.write(|r| Command::UpsertAgent(agent, r)).await
    }

    async fn agent(&self, id: AgentId) -> Result<Option<AgentRecord>, StoreError> {
        self.read(move |c| {
            let row = c
                .prepare_cached(
                    "SELECT id, name, capabilities, concurrency, registered_at, last_seen
                     FROM agents WHERE id = ?1",
                )
                .and_then(|mut s| s.query_row([id.0], agent_row).optional())
                .map_err(db)?;
            row.map(decode_agent).transpose()
        })
        .await
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, name, capabilities, concurrency, registered_at, last_seen
                     FROM agents ORDER BY name, id",
                )
                .map_err(db)?;
            let rows = stmt.query_map([], agent_row).map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode_agent(row.map_err(db)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn leased_to(&self, agent: AgentId) -> Result<Vec<TaskId>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT id FROM tasks WHERE lease_agent = ?1 ORDER BY id")
                .map_err(db)?;
            let rows = stmt
                .query_map([agent.0], |r| r.get::<_, Uuid>(0))
                .map_err(db)?;
            rows.map(|r| r.map(TaskId).map_err(db)).collect()
        })
        .await
    }

    async fn query_plan(&self, path: HotPath) -> Result<String, StoreError> {
        self.read(move |c| {
            let (sql, args): (&str, Vec<Box<dyn rusqlite::ToSql>>) = match path {
                HotPath::Claim => (CLAIM_SQL, vec![Box::new("write"), Box::new(10)]),
                HotPath::DueTimers => (TIMERS_SQL, vec![Box::new(0i64), Box::new(10)]),
                HotPath::ReleaseDependents => (DEPENDENTS_SQL, vec![Box::new(Uuid::nil())]),
                HotPath::ReleasedBlocked => (RELEASED_SQL, vec![Box::new(10)]),
                HotPath::Counts => (COUNTS_SQL, vec![]),
            };
            let mut stmt = c
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .map_err(db)?;
            let params: Vec<&dyn rusqlite::ToSql> = args.iter().map(|b| b.as_ref()).collect();
            let rows = stmt
                .query_map(params.as_slice(), |r| r.get::<_, String>(3))
                .map_err(db)?;
            let lines: Vec<String> = rows.collect::<rusqlite::Result<_>>().map_err(db)?;
            Ok(lines.join("\n"))
        })
        .await
    }

    fn stats(&self) -> CommitStats {
        self.stats.snapshot()
    }

    /// One process owns an SQLite store: nobody to hear from.
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }

    async fn notify(&self, _payload: String) -> Result<(), StoreError> {
        Ok(())
    }

    async fn try_lead(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
}
