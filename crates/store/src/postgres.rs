//! PostgreSQL backend: several engine processes share one database.
//!
//! Writes go through a bounded queue to [`WRITERS`] writer tasks, each owning one connection
//! with its statements prepared once. A writer takes every write waiting in the queue (up to
//! [`BATCH_WRITES_MAX`]), runs them in one transaction, adds the batch's changes to the
//! per-state counters, commits once, and only then answers the callers: the group commit, one
//! WAL flush for the batch. While one writer commits, the next gathers the following batch.
//!
//! A batch first locks, in id order, every task its transitions name and reads their versions
//! and states; it holds them until the commit. Each transition's compare-and-set is checked
//! against those (no round trip), and the writes of the whole batch are pipelined: sent back
//! to back and run by PostgreSQL in order, so a batch costs a few round trips, not a few per
//! write. A conflict is found before anything is written, so commands need no savepoints (and
//! the transaction no subtransactions). Should a statement fail anyway, the batch is rolled
//! back and run again carefully: each command in its own savepoint, waiting for every answer,
//! like the SQLite backend, so the failing command alone fails.
//!
//! Invariants across processes:
//! - A transition is a compare-and-set: the task row is read `FOR UPDATE` and written only if
//!   its version is the record's `seq - 1`; a lost race is a [`StoreError::Conflict`] for that
//!   record alone.
//! - Row locks are taken in a fixed order where the batch knows its rows up front (the tasks
//!   its transitions name, by id; its counter rows, by state, in a shard of its own), so
//!   batches of different processes rarely deadlock; a batch PostgreSQL still aborts as a
//!   deadlock or serialization failure runs again from the start, at most
//!   [`BATCH_ATTEMPTS_MAX`] times in all. So does a batch whose connection failed before its
//!   COMMIT was sent, on a new connection; one whose connection failed during the COMMIT is
//!   answered with an error saying the outcome is unknown.
//! - A claim locks its candidates with `FOR UPDATE SKIP LOCKED`, so two processes never hand
//!   out the same task for the same attempt.
//!
//! Reads run on a connection pool. Every connection (pool and writers) starts with the
//! store's schema as its `search_path`, so one database can hold several isolated stores.
//! Connections are made without TLS.

mod cluster;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use baton_core::{
    apply, AgentId, Event, HistoryEntry, LeaseId, StateKind, Task, TaskId, TaskKey, Timestamp,
    WorkflowId,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, NoTls, Row, Statement};
use uuid::Uuid;

use crate::codec::{self, ts};
use crate::{
    AgentRecord, ClaimRequest, CommitStats, Dependency, Edge, HotPath, OutboxItem, Rerun,
    StateCounts, Stats, Store, StoreError, SubmitBatch, SubmitOutcome, TaskFilter,
    TransitionRecord, WorkflowRecord, WorkflowRef, BATCH_WRITES_MAX, PAGE_ROWS_MAX,
    QUEUE_WRITES_MAX,
};

/// Schema migrations; `baton_meta.schema_version` counts those applied.
const MIGRATIONS: &[&str] = &[include_str!("postgres/001_init.sql")];

/// `baton_meta.application` of a Baton store.
const APPLICATION: &str = "baton";

/// First key of the advisory lock that serializes migrations ("BATN"); the second is a hash
/// of the schema name, so stores in different schemas migrate independently.
const MIGRATION_LOCK: i32 = 0x4241_544E;

/// Writer tasks, each with its own connection.
const WRITERS: usize = 3;

/// Most pooled read connections, whatever [`PgOptions::pool_size`] asks for.
const POOL_CONNECTIONS_MAX: usize = 64;

/// Longest wait for a new connection, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for a free pooled connection.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Most runs of one batch aborted by a deadlock or serialization failure.
const BATCH_ATTEMPTS_MAX: u32 = 5;

/// Pause before running an aborted batch again, doubled on every further attempt.
const RETRY_BACKOFF: Duration = Duration::from_millis(5);

/// Pause after a writer fails to reconnect, before it takes the next batch.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// Rows per state in `state_counts`; a writer adds to the shard of its backend pid.
const COUNT_SHARDS: i32 = 16;

/// Most tasks one claim assigns.
const CLAIM_TASKS_MAX: usize = PAGE_ROWS_MAX;

/// Longest schema name PostgreSQL keeps (`NAMEDATALEN - 1`).
const SCHEMA_NAME_MAX: usize = 63;

/// How to open a PostgreSQL store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOptions {
    /// Schema holding the store's tables, created if missing; `None` uses the first schema of
    /// the server's `search_path` (usually `public`). ASCII letters, digits and `_` only.
    pub schema: Option<String>,
    /// Pooled read connections (1 to 64); the writers hold their own connections besides.
    pub pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            schema: None,
            pool_size: 8,
        }
    }
}

/// A Baton store in a PostgreSQL database (one schema of it).
pub struct PgStore {
    writes: mpsc::Sender<Command>,
    pool: Pool,
    stats: Arc<Stats>,
    cluster: Arc<cluster::Cluster>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.cluster.stop();
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Command {
    Submit(Box<SubmitBatch>, Reply<SubmitOutcome>),
    Apply(Vec<TransitionRecord>, Reply<Vec<Result<(), StoreError>>>),
    Claim(ClaimRequest, Reply<Vec<Task>>),
    AckOutbox(Vec<i64>, Reply<()>),
    UpsertAgent(AgentRecord, Reply<()>),
}

/// What one command produced in a batch that committed.
enum Outcome {
    Submit(Result<SubmitOutcome, StoreError>),
    Apply(Vec<Result<(), StoreError>>),
    Claim(Result<Vec<Task>, StoreError>),
    Done(Result<(), StoreError>),
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

    fn answer(self, outcome: Outcome) {
        match (self, outcome) {
            (Command::Submit(_, r), Outcome::Submit(o)) => drop(r.send(o)),
            (Command::Apply(_, r), Outcome::Apply(o)) => drop(r.send(Ok(o))),
            (Command::Claim(_, r), Outcome::Claim(o)) => drop(r.send(o)),
            (Command::AckOutbox(_, r), Outcome::Done(o))
            | (Command::UpsertAgent(_, r), Outcome::Done(o)) => drop(r.send(o)),
            (cmd, _) => cmd.fail("internal error: a command got another command's outcome"),
        }
    }

    fn fail(self, msg: &str) {
        let err = || StoreError::Backend(msg.to_owned());
        match self {
            Command::Submit(_, r) => drop(r.send(Err(err()))),
            Command::Apply(_, r) => drop(r.send(Err(err()))),
            Command::Claim(_, r) => drop(r.send(Err(err()))),
            Command::AckOutbox(_, r) | Command::UpsertAgent(_, r) => drop(r.send(Err(err()))),
        }
    }
}

impl PgStore {
    /// Opens the store at `url` (`postgres://user@host:port/db?...` or `key=value` form),
    /// migrating it if needed. A URL may name the store's schema with a `schema=NAME`
    /// parameter (see [`PgOptions::schema`]); without one the store uses the default schema.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        PgStore::open_with(url, PgOptions::default()).await
    }

    /// Opens the store at `url` with `options`: creates the schema if missing, runs the
    /// missing migrations, then starts the writers.
    pub async fn open_with(url: &str, mut options: PgOptions) -> Result<PgStore, StoreError> {
        let shown = redact(url);
        let invalid = |detail: String| StoreError::InvalidUrl {
            url: shown.clone(),
            detail,
        };
        let (url, schema) = split_schema(url).map_err(invalid)?;
        match (&options.schema, schema) {
            (Some(given), Some(named)) if *given != named => {
                return Err(invalid(format!(
                    "the URL names schema {named:?} but the options name {given:?}"
                )));
            }
            (_, Some(named)) => options.schema = Some(named),
            (_, None) => {}
        }
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| invalid(describe(&e)))?;
        if config.get_hosts().is_empty() {
            return Err(invalid("no host given".into()));
        }
        if config.get_user().is_none() {
            return Err(invalid("no user name given".into()));
        }
        if let Some(schema) = &options.schema {
            check_schema_name(schema).map_err(invalid)?;
            let search_path = format!("-c search_path={}", quote_ident(schema));
            let all = match config.get_options() {
                Some(given) if !given.trim().is_empty() => format!("{given} {search_path}"),
                _ => search_path,
            };
            config.options(all);
        }
        if config.get_application_name().is_none() {
            config.application_name("baton");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let location = match &options.schema {
            Some(s) => format!("{shown} (schema {s})"),
            None => shown.clone(),
        };

        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.clamp(1, POOL_CONNECTIONS_MAX))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;

        let mut client = pool.get().await.map_err(|e| pool_error(&location, e))?;
        migrate(&mut client, options.schema.as_deref(), &location).await?;
        drop(client);

        let (tx, rx) = mpsc::channel(QUEUE_WRITES_MAX);
        let rx = Arc::new(Mutex::new(rx));
        let stats = Arc::new(Stats::default());
        let config = Arc::new(config);
        let location = Arc::new(location);
        let mut writers = Vec::with_capacity(WRITERS);
        for _ in 0..WRITERS {
            let conn = Conn::connect(&config, &location).await?;
            writers.push(Writer {
                conn: Some(conn),
                config: Arc::clone(&config),
                location: Arc::clone(&location),
                stats: Arc::clone(&stats),
            });
        }
        for writer in writers {
            tokio::spawn(writer.run(Arc::clone(&rx)));
        }
        let cluster = cluster::Cluster::start(
            Arc::clone(&config),
            options.schema.as_deref(),
            Arc::clone(&location),
        );
        Ok(PgStore {
            writes: tx,
            pool,
            stats,
            cluster,
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

    async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Backend(format!("no database connection available: {e}")))
    }

    /// Runs a read-only query on a pooled connection with a cached prepared statement. A
    /// connection whose session turns out to have ended (the server restarted, or killed it)
    /// is dropped from the pool and the query tried on another, at most once per pooled
    /// connection.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let attempts = self.pool.status().max_size + 1;
        let mut attempt = 1;
        loop {
            let client = self.reader().await?;
            let result = match client.prepare_cached(sql).await {
                Ok(stmt) => client.query(&stmt, params).await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if session_ended(&e) && attempt < attempts => {
                    drop(deadpool_postgres::Object::take(client));
                    attempt += 1;
                }
                other => return other.map_err(db),
            }
        }
    }
}

/// Creates the schema if asked and missing, checks that it holds a Baton store (or nothing),
/// and applies the missing migrations, all in one transaction under an advisory lock.
async fn migrate(
    client: &mut deadpool_postgres::Object,
    schema: Option<&str>,
    location: &str,
) -> Result<(), StoreError> {
    let not_baton = |detail: String| StoreError::NotABatonStore {
        path: location.to_owned(),
        detail,
    };
    let tx = client.transaction().await.map_err(db)?;
    let target: String = match schema {
        Some(s) => s.to_owned(),
        None => tx
            .query_one("SELECT current_schema()", &[])
            .await
            .map_err(db)?
            .try_get::<_, Option<String>>(0)
            .map_err(db)?
            .ok_or_else(|| {
                StoreError::Backend(format!(
                    "{location}: no schema of the search_path exists; create one or pass a schema"
                ))
            })?,
    };
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&MIGRATION_LOCK, &target],
    )
    .await
    .map_err(db)?;
    if let Some(s) = schema {
        let exists = tx
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&s])
            .await
            .map_err(db)?
            .is_some();
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA {}", quote_ident(s)))
                .await
                .map_err(|e| {
                    StoreError::Backend(format!(
                        "{location}: cannot create the schema: {}",
                        describe(&e)
                    ))
                })?;
        }
        tx.batch_execute(&format!("SET LOCAL search_path TO {}", quote_ident(s)))
            .await
            .map_err(db)?;
    }
    let has_meta: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = 'baton_meta')",
            &[&target],
        )
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    let version: i64 = if has_meta {
        let rows = tx
            .query(
                &format!(
                    "SELECT key, value FROM {}.baton_meta WHERE key IN ('application', 'schema_version')",
                    quote_ident(&target)
                ),
                &[],
            )
            .await
            .map_err(db)?;
        let mut meta = HashMap::new();
        for row in &rows {
            meta.insert(get::<String>(row, 0)?, get::<String>(row, 1)?);
        }
        if meta.get("application").map(String::as_str) != Some(APPLICATION) {
            return Err(not_baton(format!(
                "schema {target} has a baton_meta table without application = '{APPLICATION}'"
            )));
        }
        meta.get("schema_version")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| not_baton(format!("schema {target} records no valid schema_version")))?
    } else {
        let objects: i64 = tx
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                &[&target],
            )
            .await
            .map_err(db)?
            .try_get(0)
            .map_err(db)?;
        if objects > 0 {
            return Err(not_baton(format!(
                "schema {target} holds {objects} tables or views of another application \
                 (no baton_meta table)"
            )));
        }
        0
    };
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported,
        });
    }
    if version < supported {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.batch_execute(sql).await.map_err(|e| {
                StoreError::Backend(format!(
                    "{location}: migration {} failed: {}",
                    i + 1,
                    describe(&e)
                ))
            })?;
        }
        tx.execute(
            "INSERT INTO baton_meta (key, value) VALUES ('application', $1), ('schema_version', $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&APPLICATION, &supported.to_string()],
        )
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

/// Takes the `schema` parameter (Baton's, unknown to the driver) out of a URL's query.
fn split_schema(url: &str) -> Result<(String, Option<String>), String> {
    let Some((base, query)) = url.split_once('?').filter(|_| url.contains("://")) else {
        return Ok((url.to_owned(), None));
    };
    let mut schema = None;
    let mut rest = Vec::new();
    for param in query.split('&') {
        match param.split_once('=') {
            Some(("schema", name)) if schema.is_none() => schema = Some(name.to_owned()),
            Some(("schema", _)) => return Err("the schema parameter is given twice".into()),
            _ => rest.push(param),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, schema))
}

fn check_schema_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok
        || name.len() > SCHEMA_NAME_MAX
        || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "schema name {name:?} must be 1 to {SCHEMA_NAME_MAX} ASCII letters, digits or `_`, \
             not starting with a digit"
        ));
    }
    Ok(())
}

/// A checked schema name as a quoted identifier (its case is kept).
fn quote_ident(name: &str) -> String {
    format!("\"{name}\"")
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = url.find("://").map(|i| i + 3) {
        let rest = &url[start..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                out = format!("{}{}:***{}", &url[..start], &rest[..colon], &rest[at..]);
            }
        }
    }
    if let Some(i) = out.find("password=") {
        let from = i + "password=".len();
        let to = out[from..].find(['&', ' ']).map_or(out.len(), |n| from + n);
        out.replace_range(from..to, "***");
    }
    out
}

/// A PostgreSQL error with the server's message, code and detail, or the client's cause.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(d) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", d.message(), d.code().code());
        if let Some(detail) = d.detail() {
            s.push_str(": ");
            s.push_str(detail);
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

fn db(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(describe(&e))
}

fn pool_error(location: &str, e: deadpool_postgres::PoolError) -> StoreError {
    let detail = match &e {
        deadpool_postgres::PoolError::Backend(pg) => describe(pg),
        other => other.to_string(),
    };
    StoreError::Backend(format!(
        "cannot connect to PostgreSQL at {location}: {detail}"
    ))
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx).map_err(db)
}

/// Awaits every future, all polled together: statements issued on one connection this way are
/// sent back to back (pipelined) and answered in order.
async fn join_all<'a, T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + 'a>>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

// ---------------------------------------------------------------------------------------------
// The writers

/// What to do once a run of a batch has failed and been rolled back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Retry {
    /// Answer every caller with the error.
    No,
    /// The connection failed while the COMMIT was under way: the batch may have committed, so
    /// it must not run again; every caller is told the outcome is unknown.
    Never,
    /// The connection failed before the COMMIT was sent, so the server rolled the batch back:
    /// run it again on a new connection.
    Reconnect,
    /// A deadlock or serialization failure: run the batch again the same way.
    Again,
    /// A statement failed in a pipelined run: run the batch again carefully, each command in
    /// its own savepoint, so the failure stays with the command that caused it.
    Carefully,
}

/// Why a run of a batch is abandoned: its transaction is rolled back.
struct Abort {
    message: String,
    retry: Retry,
}

/// How a command run in a savepoint failed: on its own (its savepoint is rolled back, the
/// batch goes on), or in a way that takes the whole batch down.
enum Fail {
    Cmd(StoreError),
    Abort(Abort),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Cmd(e)
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Fail {
        match e.code() {
            Some(code) if !code.code().starts_with("40") && !session_ended(&e) => Fail::Cmd(db(e)),
            _ => Fail::Abort(abort(e)),
        }
    }
}

/// Whether the error ended the session, whether or not the client has noticed the closed
/// connection yet.
fn session_ended(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(d) => {
            let code = d.code().code();
            matches!(d.severity(), "FATAL" | "PANIC")
                || code.starts_with("08")
                || code.starts_with("57P")
        }
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}

/// A failure outside any command's savepoint, before the COMMIT.
fn abort(e: tokio_postgres::Error) -> Abort {
    let retry = match e.code() {
        _ if session_ended(&e) => Retry::Reconnect,
        Some(c)
            if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE =>
        {
            Retry::Again
        }
        _ => Retry::No,
    };
    Abort {
        message: describe(&e),
        retry,
    }
}

/// A failure in a pipelined (savepoint-free) run: an error the server reports about one
/// statement is isolated by running the batch again carefully.
fn pipelined(e: tokio_postgres::Error) -> Abort {
    match e.code() {
        Some(code) if !code.code().starts_with("40") && !session_ended(&e) => Abort {
            message: describe(&e),
            retry: Retry::Carefully,
        },
        _ => abort(e),
    }
}

/// Changes to the per-state counters made by one write, applied with the batch.
type Deltas = [i64; 7];

fn add(into: &mut Deltas, from: &Deltas) {
    for (d, l) in into.iter_mut().zip(from) {
        *d += l;
    }
}

const SAVEPOINT: &str = "SAVEPOINT cmd";
const RELEASE: &str = "RELEASE SAVEPOINT cmd";
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT cmd; RELEASE SAVEPOINT cmd";

/// One writer's connection and its prepared statements.
struct Conn {
    client: Client,
    s: Stmts,
    /// The `state_counts` shard this connection adds to.
    shard: i32,
}

macro_rules! statements {
    ($($name:ident = $sql:expr;)*) => {
        /// The writer's statements, prepared once per connection.
        struct Stmts {
            $($name: Statement,)*
        }

        impl Stmts {
            async fn prepare(client: &Client) -> Result<Stmts, tokio_postgres::Error> {
                let sqls: &[&str] = &[$($sql,)*];
                let futures = sqls
                    .iter()
                    .map(|sql| Box::pin(client.prepare(sql)) as Pin<Box<dyn Future<Output = _> + Send + '_>>)
                    .collect();
                let mut prepared = join_all(futures).await.into_iter();
                Ok(Stmts {
                    $($name: prepared.next().expect("one statement per name")?,)*
                })
            }
        }
    };
}

statements! {
    lock_batch = "SELECT id, version, state FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE";
    lock_task = "SELECT version, state FROM tasks WHERE id = $1 FOR UPDATE";
    update_task = "UPDATE tasks SET state = $2, version = $3, ready_at = $4, timer_at = $5,
                          lease_agent = $6, updated_at = $7, snapshot = $8
                   WHERE id = $1";
    insert_history = "INSERT INTO history (task_id, seq, at, actor, event, fencing_token, payload)
                      VALUES ($1, $2, $3, $4, $5, $6, $7)";
    insert_outbox = "INSERT INTO outbox (task_id, effect, created_at)
                     SELECT t, e, c FROM unnest($1::uuid[], $2::text[], $3::int8[])
                         WITH ORDINALITY AS u(t, e, c, o)
                     ORDER BY o";
    release_dependents = "UPDATE tasks SET deps_open = deps_open - 1
                          WHERE id IN (SELECT dependent FROM edges WHERE dependency = $1)";
    add_counts = "INSERT INTO state_counts (state, shard, n)
                  SELECT s, $1, d FROM unnest($2::text[], $3::int8[]) WITH ORDINALITY AS u(s, d, o)
                  ORDER BY o
                  ON CONFLICT (state, shard) DO UPDATE SET n = state_counts.n + excluded.n";
    find_idempotent = "SELECT id, request_hash FROM workflows WHERE idempotency_key = $1";
    insert_workflow = "INSERT INTO workflows (id, name, idempotency_key, request_hash, created_at)
                       VALUES ($1, $2, $3, $4, $5)";
    insert_keyed_workflow = "INSERT INTO workflows (id, name, idempotency_key, request_hash, created_at)
                             VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT (idempotency_key) DO NOTHING";
    workflow_exists = "SELECT 1 FROM workflows WHERE id = $1";
    task_keys = "SELECT key, id FROM tasks WHERE workflow_id = $1 ORDER BY id";
    insert_capsets = "INSERT INTO capsets (capset)
                      SELECT c FROM unnest($1::text[]) WITH ORDINALITY AS u(c, o) ORDER BY o
                      ON CONFLICT DO NOTHING";
    insert_tasks = "INSERT INTO tasks (id, workflow_id, key, state, version, priority, capset,
                                      ready_at, timer_at, lease_agent, deps_open, updated_at, snapshot)
                    SELECT id, wf, key, state, version, priority, capset, ready_at, timer_at,
                           lease_agent, 0, updated_at, snapshot
                    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::int8[],
                                $6::int4[], $7::text[], $8::int8[], $9::int8[], $10::uuid[],
                                $11::int8[], $12::text[])
                        WITH ORDINALITY AS u(id, wf, key, state, version, priority, capset, ready_at,
                                             timer_at, lease_agent, updated_at, snapshot, o)
                    ORDER BY o
                    ON CONFLICT DO NOTHING
                    RETURNING id";
    insert_specs = "INSERT INTO task_specs (task_id, spec)
                    SELECT * FROM unnest($1::uuid[], $2::text[])";
    insert_histories = "INSERT INTO history (task_id, seq, at, actor, event, fencing_token, payload)
                        SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::text[],
                                             $5::text[], $6::int8[], $7::text[])";
    insert_edges = "INSERT INTO edges (dependency, dependent)
                    SELECT * FROM unnest($1::uuid[], $2::uuid[])";
    count_open = "UPDATE tasks t SET deps_open = t.deps_open + x.n
                  FROM (SELECT e.dependent, count(*)::int4 AS n
                        FROM unnest($1::uuid[], $2::uuid[]) AS e(dependency, dependent)
                        JOIN tasks d ON d.id = e.dependency
                        WHERE d.state <> 'completed'
                        GROUP BY e.dependent) x
                  WHERE t.id = x.dependent";
    capsets = "SELECT capset FROM capsets";
    claim_candidates = CLAIM_SQL;
    load_tasks = "SELECT t.id, t.snapshot, s.spec FROM tasks t JOIN task_specs s ON s.task_id = t.id
                  WHERE t.id = ANY($1::uuid[])";
    ack_outbox = "DELETE FROM outbox WHERE id = ANY($1::int8[])";
    upsert_agent = "INSERT INTO agents (id, name, capabilities, concurrency, registered_at, last_seen)
                    VALUES ($1, $2, $3, $4, $5, $6)
                    ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                        capabilities = excluded.capabilities, concurrency = excluded.concurrency,
                        last_seen = excluded.last_seen";
}

impl Conn {
    async fn connect(config: &tokio_postgres::Config, location: &str) -> Result<Conn, StoreError> {
        let failed = |e: tokio_postgres::Error| {
            StoreError::Backend(format!(
                "cannot connect to PostgreSQL at {location}: {}",
                describe(&e)
            ))
        };
        let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the client then reports
            // the closed connection on its next use.
            let _ = connection.await;
        });
        let s = Stmts::prepare(&client).await.map_err(failed)?;
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(failed)?;
        Ok(Conn {
            client,
            s,
            shard: pid.rem_euclid(COUNT_SHARDS),
        })
    }
}

/// One writer task: takes batches from the shared queue and commits them on its connection.
struct Writer {
    conn: Option<Conn>,
    config: Arc<tokio_postgres::Config>,
    location: Arc<String>,
    stats: Arc<Stats>,
}

impl Writer {
    async fn run(mut self, queue: Arc<Mutex<mpsc::Receiver<Command>>>) {
        let mut batch = Vec::with_capacity(BATCH_WRITES_MAX);
        loop {
            let writes = {
                let mut rx = queue.lock().await;
                let Some(first) = rx.recv().await else {
                    return;
                };
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
                writes
            };
            let started = std::time::Instant::now();
            match self.commit_batch(&batch).await {
                Ok(outcomes) => {
                    self.stats.record(writes, started.elapsed());
                    for (cmd, outcome) in batch.drain(..).zip(outcomes) {
                        cmd.answer(outcome);
                    }
                }
                Err(msg) => {
                    for cmd in batch.drain(..) {
                        cmd.fail(&msg);
                    }
                }
            }
            batch.clear();
        }
    }

    /// Runs the batch in one transaction and commits it. A run PostgreSQL aborts as a deadlock
    /// or serialization failure is made again; a pipelined run in which a statement failed is
    /// made again carefully; at most [`BATCH_ATTEMPTS_MAX`] runs in all.
    async fn commit_batch(&mut self, batch: &[Command]) -> Result<Vec<Outcome>, String> {
        let mut careful = false;
        let mut attempt = 1;
        loop {
            let conn = match self.conn.take() {
                Some(c) if !c.client.is_closed() => c,
                _ => match Conn::connect(&self.config, &self.location).await {
                    Ok(c) => c,
                    Err(e) => {
                        tokio::time::sleep(RECONNECT_BACKOFF).await;
                        return Err(format!("nothing was written: {e}"));
                    }
                },
            };
            let failure = match run_batch(&conn, batch, careful).await {
                Ok(outcomes) => {
                    self.conn = Some(conn);
                    return Ok(outcomes);
                }
                Err(a) => a,
            };
            if !conn.client.is_closed() && conn.client.batch_execute("ROLLBACK").await.is_ok() {
                self.conn = Some(conn);
            }
            if attempt < BATCH_ATTEMPTS_MAX {
                match failure.retry {
                    Retry::No | Retry::Never => {}
                    Retry::Reconnect => {
                        self.stats.rerun(Rerun::Reconnected);
                        attempt += 1;
                        continue;
                    }
                    Retry::Again => {
                        tokio::time::sleep(RETRY_BACKOFF * 2u32.pow(attempt - 1)).await;
                        self.stats.rerun(Rerun::Contended);
                        attempt += 1;
                        continue;
                    }
                    Retry::Carefully => {
                        self.stats.rerun(Rerun::Careful);
                        careful = true;
                        attempt += 1;
                        continue;
                    }
                }
            }
            let tries = if attempt > 1 {
                format!(" (after {attempt} attempts)")
            } else {
                String::new()
            };
            return Err(format!("batch rolled back{tries}: {}", failure.message));
        }
    }
}

/// A statement of a pipelined run, sent when first polled.
type Step<'c> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'c>>;

/// One run of a batch, in one transaction.
///
/// It starts by locking, in id order, every task the batch's transitions name, and reads their
/// versions and states. Those rows stay locked until the commit, so a transition's
/// compare-and-set is checked against `known` (kept up to date as the batch writes) without
/// a round trip, and its writes are queued in `pending` and sent together with the next
/// statement whose answer is needed: a batch of transitions costs a few round trips in all.
/// A conflict is found before anything is written, so it needs no savepoint.
///
/// A careful run (`careful`) is the fallback once a pipelined statement failed: every command
/// runs in its own savepoint and waits for each answer, like the SQLite backend, so the
/// failing command alone fails and the others commit.
struct Run<'c> {
    c: &'c Conn,
    careful: bool,
    known: HashMap<Uuid, (u64, StateKind)>,
    pending: Vec<Step<'c>>,
    deltas: Deltas,
}

async fn run_batch<'c>(
    c: &'c Conn,
    batch: &'c [Command],
    careful: bool,
) -> Result<Vec<Outcome>, Abort> {
    let mut named: Vec<Uuid> = Vec::new();
    for cmd in batch {
        match cmd {
            Command::Apply(records, _) => named.extend(records.iter().map(|r| r.task.id.0)),
            Command::Submit(b, _) => named.extend(b.transitions.iter().map(|r| r.task.id.0)),
            _ => {}
        }
    }
    named.sort_unstable();
    named.dedup();
    let lock = async {
        if named.is_empty() {
            Ok(Vec::new())
        } else {
            c.client.query(&c.s.lock_batch, &[&named]).await
        }
    };
    let (begun, locked) = tokio::join!(c.client.batch_execute("BEGIN"), lock);
    begun.map_err(abort)?;
    let mut known = HashMap::with_capacity(named.len());
    for row in &locked.map_err(abort)? {
        let (Ok(id), Ok(version), Ok(state)) = (
            row.try_get::<_, Uuid>(0),
            row.try_get::<_, i64>(1),
            row.try_get::<_, &str>(2),
        ) else {
            continue;
        };
        // A row that does not decode is left to the careful path, which reports it.
        if let Some(state) = StateKind::parse(state) {
            known.insert(id, (version as u64, state));
        }
    }
    let mut run = Run {
        c,
        careful,
        known,
        pending: Vec::new(),
        deltas: [0; 7],
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for cmd in batch {
        outcomes.push(run.command(cmd).await?);
    }
    run.commit().await?;
    Ok(outcomes)
}

impl<'c> Run<'c> {
    /// Sends the queued writes and waits for their answers.
    async fn flush(&mut self) -> Result<(), Abort> {
        let steps = std::mem::take(&mut self.pending);
        for result in join_all(steps).await {
            result.map_err(pipelined)?;
        }
        Ok(())
    }

    /// Sends the queued writes, the counter changes and the COMMIT together. If any of them
    /// fails, PostgreSQL turns the COMMIT into a rollback.
    async fn commit(mut self) -> Result<(), Abort> {
        let c = self.c;
        let mut states = Vec::new();
        let mut changes = Vec::new();
        for state in StateKind::ALL {
            let d = self.deltas[state.index()];
            if d != 0 {
                states.push(state.as_str());
                changes.push(d);
            }
        }
        if !states.is_empty() {
            self.pending.push(Box::pin(async move {
                c.client
                    .execute(&c.s.add_counts, &[&c.shard, &states, &changes])
                    .await
            }));
        }
        let steps = std::mem::take(&mut self.pending);
        let (results, committed) = tokio::join!(join_all(steps), c.client.batch_execute("COMMIT"));
        for result in results {
            result.map_err(|e| match e.code() {
                _ if session_ended(&e) => commit_failed(e),
                // The server refused the statement, so it turned the COMMIT into a rollback.
                Some(_) if self.careful => abort(e),
                Some(_) => pipelined(e),
                None => commit_failed(e),
            })?;
        }
        committed.map_err(commit_failed)
    }

    async fn command(&mut self, cmd: &'c Command) -> Result<Outcome, Abort> {
        let c = self.c;
        match cmd {
            Command::Submit(batch, _) => {
                self.flush().await?;
                let mut local: Deltas = [0; 7];
                let out = settle(c, submit(c, batch, &mut local).await).await?;
                if let Ok(SubmitOutcome::Created { .. }) = &out {
                    add(&mut self.deltas, &local);
                    for r in &batch.transitions {
                        self.known
                            .insert(r.task.id.0, (r.task.version, r.task.kind()));
                    }
                }
                Ok(Outcome::Submit(out))
            }
            Command::Apply(records, _) => {
                let mut results = Vec::with_capacity(records.len());
                for record in records {
                    let result = match expected_version(record) {
                        Err(e) => Err(e),
                        Ok(expected) if self.careful => {
                            let mut local: Deltas = [0; 7];
                            let out = write_transition(c, record, expected, &mut local, true).await;
                            let out = settle(c, out).await?;
                            if out.is_ok() {
                                add(&mut self.deltas, &local);
                            }
                            out
                        }
                        Ok(expected) => self.transition(record, expected).await?,
                    };
                    results.push(result);
                }
                Ok(Outcome::Apply(results))
            }
            Command::Claim(request, _) if self.careful => {
                let mut local: Deltas = [0; 7];
                let out = settle(c, claim(c, request, &mut local).await).await?;
                if out.is_ok() {
                    add(&mut self.deltas, &local);
                }
                Ok(Outcome::Claim(out))
            }
            Command::Claim(request, _) => Ok(Outcome::Claim(self.claim(request).await?)),
            Command::AckOutbox(ids, _) if self.careful => {
                let out = if ids.is_empty() {
                    Ok(())
                } else {
                    let (sp, deleted, released) = tokio::join!(
                        c.client.batch_execute(SAVEPOINT),
                        async { c.client.execute(&c.s.ack_outbox, &[ids]).await },
                        c.client.batch_execute(RELEASE),
                    );
                    sp.map_err(abort)?;
                    let out = deleted
                        .map_err(Fail::from)
                        .and_then(|_| released.map_err(Fail::from));
                    settle(c, out).await?
                };
                Ok(Outcome::Done(out))
            }
            Command::AckOutbox(ids, _) => {
                if !ids.is_empty() {
                    self.pending.push(Box::pin(async move {
                        c.client.execute(&c.s.ack_outbox, &[ids]).await
                    }));
                }
                Ok(Outcome::Done(Ok(())))
            }
            Command::UpsertAgent(agent, _) => {
                let caps =
                    serde_json::to_string(&agent.capabilities).expect("capabilities serialise");
                let upsert = async move {
                    let concurrency = i64::from(agent.concurrency);
                    let (registered, seen) = (ts(agent.registered_at), ts(agent.last_seen));
                    c.client
                        .execute(
                            &c.s.upsert_agent,
                            &[
                                &agent.id.0,
                                &agent.name,
                                &caps,
                                &concurrency,
                                &registered,
                                &seen,
                            ],
                        )
                        .await
                };
                if !self.careful {
                    self.pending.push(Box::pin(upsert));
                    return Ok(Outcome::Done(Ok(())));
                }
                let (sp, upserted, released) = tokio::join!(
                    c.client.batch_execute(SAVEPOINT),
                    upsert,
                    c.client.batch_execute(RELEASE),
                );
                sp.map_err(abort)?;
                let out = upserted
                    .map_err(Fail::from)
                    .and_then(|_| released.map_err(Fail::from));
                Ok(Outcome::Done(settle(c, out).await?))
            }
        }
    }

    /// A transition in a pipelined run: compare-and-set against the locked row, then queue
    /// the writes.
    async fn transition(
        &mut self,
        record: &TransitionRecord,
        expected: u64,
    ) -> Result<Result<(), StoreError>, Abort> {
        let task = &record.task;
        let conflict = |found: u64| StoreError::Conflict {
            task: task.id,
            expected,
            found: Some(found),
        };
        let old_state = match self.known.get(&task.id.0) {
            Some(&(version, state)) => {
                if version != expected {
                    return Ok(Err(conflict(version)));
                }
                state
            }
            None => {
                // Not locked up front (created by this batch, or missing): read it now.
                self.flush().await?;
                let row = self
                    .c
                    .client
                    .query_opt(&self.c.s.lock_task, &[&task.id.0])
                    .await
                    .map_err(pipelined)?;
                let Some(row) = row else {
                    return Ok(Err(StoreError::TaskNotFound(task.id)));
                };
                let stored = get::<i64>(&row, 0).and_then(|v| {
                    let state = codec::parse_state(task.id, get(&row, 1)?)?;
                    Ok((v as u64, state))
                });
                match stored {
                    Err(e) => return Ok(Err(e)),
                    Ok((version, _)) if version != expected => return Ok(Err(conflict(version))),
                    Ok((_, state)) => state,
                }
            }
        };
        self.pending
            .extend(transition_steps(self.c, record, old_state));
        self.known.insert(task.id.0, (task.version, task.kind()));
        self.deltas[old_state.index()] -= 1;
        self.deltas[task.kind().index()] += 1;
        Ok(Ok(()))
    }

    /// A claim in a pipelined run. See [`claim`] for why claims share the batch.
    async fn claim(
        &mut self,
        request: &ClaimRequest,
    ) -> Result<Result<Vec<Task>, StoreError>, Abort> {
        let c = self.c;
        self.flush().await?;
        let room = match request.max_held {
            Some(max) => match room_left(c, request.agent, max).await {
                Ok(room) => room,
                Err(e) => return Err(pipelined(e)),
            },
            None => usize::MAX,
        };
        let wanted = request.leases.len().min(CLAIM_TASKS_MAX).min(room);
        if wanted == 0 {
            return Ok(Ok(Vec::new()));
        }
        let rows = c.client.query(&c.s.capsets, &[]).await.map_err(pipelined)?;
        let chosen = match candidates(c, &rows, request, wanted).await {
            Ok(Ok(chosen)) => chosen,
            Ok(Err(e)) => return Ok(Err(e)),
            Err(e) => return Err(pipelined(e)),
        };
        let loaded = match load(c, &chosen).await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => return Ok(Err(e)),
            Err(e) => return Err(pipelined(e)),
        };
        let mut claimed = Vec::with_capacity(chosen.len());
        for (id, lease) in chosen.iter().zip(&request.leases) {
            let Some(task) = loaded.get(id) else {
                continue;
            };
            let Some(record) = assignment(task, request, *lease) else {
                continue;
            };
            self.pending
                .extend(transition_steps(c, &record, task.kind()));
            self.known
                .insert(*id, (record.task.version, record.task.kind()));
            self.deltas[task.kind().index()] -= 1;
            self.deltas[record.task.kind().index()] += 1;
            claimed.push(record.task);
        }
        Ok(Ok(claimed))
    }
}

fn commit_failed(e: tokio_postgres::Error) -> Abort {
    if e.as_db_error().is_some() && !session_ended(&e) {
        abort(e)
    } else {
        Abort {
            message: format!(
                "the connection failed during COMMIT, so the batch may or may not have been \
                 committed: {}",
                describe(&e)
            ),
            retry: Retry::Never,
        }
    }
}

/// Settles a command run in the savepoint `cmd`: `Ok` has released it; a command error rolls
/// it back and becomes the command's answer; anything else aborts the batch.
async fn settle<T>(c: &Conn, out: Result<T, Fail>) -> Result<Result<T, StoreError>, Abort> {
    match out {
        Ok(v) => Ok(Ok(v)),
        Err(Fail::Cmd(e)) => {
            c.client.batch_execute(ROLLBACK_TO).await.map_err(abort)?;
            Ok(Err(e))
        }
        Err(Fail::Abort(a)) => Err(a),
    }
}

/// The version the stored task must have for `record` to apply: `seq - 1`.
fn expected_version(record: &TransitionRecord) -> Result<u64, StoreError> {
    let seq = record.entry.seq;
    seq.checked_sub(1)
        .filter(|_| seq == record.task.version)
        .ok_or_else(|| {
            StoreError::Backend(format!(
                "history entry {seq} does not match task version {}",
                record.task.version
            ))
        })
}

/// Compare-and-set on the version, then the row, the history entry, the outbox, and, on
/// completion, the dependents' open counts. With `own_savepoint` it opens the savepoint `cmd`
/// (pipelined with the read) and releases it on success.
async fn write_transition(
    c: &Conn,
    record: &TransitionRecord,
    expected: u64,
    deltas: &mut Deltas,
    own_savepoint: bool,
) -> Result<(), Fail> {
    let task = &record.task;
    let lock = async { c.client.query_opt(&c.s.lock_task, &[&task.id.0]).await };
    let stored = if own_savepoint {
        let (sp, row) = tokio::join!(c.client.batch_execute(SAVEPOINT), lock);
        sp.map_err(abort).map_err(Fail::Abort)?;
        row?
    } else {
        lock.await?
    };
    let Some(row) = stored else {
        return Err(StoreError::TaskNotFound(task.id).into());
    };
    let version: i64 = get(&row, 0)?;
    let old_state: &str = get(&row, 1)?;
    if version as u64 != expected {
        return Err(StoreError::Conflict {
            task: task.id,
            expected,
            found: Some(version as u64),
        }
        .into());
    }
    let old_state = codec::parse_state(task.id, old_state)?;
    let mut steps = transition_steps(c, record, old_state);
    if own_savepoint {
        steps.push(Box::pin(async move {
            c.client.batch_execute(RELEASE).await.map(|()| 0)
        }));
    }
    for result in join_all(steps).await {
        result?;
    }
    deltas[old_state.index()] -= 1;
    deltas[task.kind().index()] += 1;
    Ok(())
}

/// The writes of a transition whose compare-and-set passed: the row, the history entry, the
/// outbox, and, on completion, the dependents' open counts.
fn transition_steps<'c>(
    c: &'c Conn,
    record: &TransitionRecord,
    old_state: StateKind,
) -> Vec<Step<'c>> {
    let task = &record.task;
    let entry = &record.entry;
    let id = task.id.0;
    let new_state = task.kind();
    let mut steps: Vec<Step<'c>> = Vec::with_capacity(4);
    let state = new_state.as_str();
    let version = task.version as i64;
    let ready_at = codec::ready_at(task).map(ts);
    let timer_at = codec::timer_at(task).map(ts);
    let lease_agent = codec::lease_agent(task);
    let updated_at = ts(task.updated_at);
    let snapshot = codec::snapshot(task);
    steps.push(Box::pin(async move {
        let params: [&(dyn ToSql + Sync); 8] = [
            &id,
            &state,
            &version,
            &ready_at,
            &timer_at,
            &lease_agent,
            &updated_at,
            &snapshot,
        ];
        c.client.execute(&c.s.update_task, &params).await
    }));
    let seq = entry.seq as i64;
    let at = ts(entry.at);
    let actor = codec::actor(&entry.event);
    let event = entry.event.kind().as_str();
    let token = codec::event_token(&entry.event);
    let payload = codec::event_json(&entry.event);
    steps.push(Box::pin(async move {
        let params: [&(dyn ToSql + Sync); 7] = [&id, &seq, &at, &actor, &event, &token, &payload];
        c.client.execute(&c.s.insert_history, &params).await
    }));
    if let Some(o) = Outbox::of(task.id, &record.outbox, entry.at) {
        steps.push(Box::pin(async move {
            c.client
                .execute(&c.s.insert_outbox, &[&o.tasks, &o.effects, &o.ats])
                .await
        }));
    }
    if new_state == StateKind::Completed && old_state != StateKind::Completed {
        steps.push(Box::pin(async move {
            c.client.execute(&c.s.release_dependents, &[&id]).await
        }));
    }
    steps
}

/// Outbox rows as the columns of one multi-row insert.
struct Outbox {
    tasks: Vec<Uuid>,
    effects: Vec<String>,
    ats: Vec<i64>,
}

impl Outbox {
    fn of(task: TaskId, effects: &[baton_core::Effect], at: Timestamp) -> Option<Outbox> {
        let mut o = Outbox {
            tasks: Vec::new(),
            effects: Vec::new(),
            ats: Vec::new(),
        };
        o.push(task, effects, at);
        (!o.tasks.is_empty()).then_some(o)
    }

    fn push(&mut self, task: TaskId, effects: &[baton_core::Effect], at: Timestamp) {
        for effect in effects {
            self.tasks.push(task.0);
            self.effects
                .push(serde_json::to_string(effect).expect("an effect always serialises"));
            self.ats.push(ts(at));
        }
    }
}

/// Creates the workflow (or checks the one it grows), its tasks and edges, then the
/// transitions, all in the savepoint `cmd`.
async fn submit(c: &Conn, batch: &SubmitBatch, deltas: &mut Deltas) -> Result<SubmitOutcome, Fail> {
    let workflow = match &batch.workflow {
        WorkflowRef::New(wf) => {
            let created_at = ts(wf.created_at);
            let params: [&(dyn ToSql + Sync); 5] = [
                &wf.id.0,
                &wf.name,
                &wf.idempotency_key,
                &wf.request_hash,
                &created_at,
            ];
            if let Some(key) = &wf.idempotency_key {
                let (sp, seen) = tokio::join!(c.client.batch_execute(SAVEPOINT), async {
                    c.client.query_opt(&c.s.find_idempotent, &[key]).await
                },);
                sp.map_err(abort).map_err(Fail::Abort)?;
                if let Some(row) = seen? {
                    return existing(c, key, &wf.request_hash, &row).await;
                }
                if c.client
                    .execute(&c.s.insert_keyed_workflow, &params)
                    .await?
                    == 0
                {
                    // Another transaction took the key since the lookup and has committed.
                    let row = c
                        .client
                        .query_opt(&c.s.find_idempotent, &[key])
                        .await?
                        .ok_or_else(|| {
                            StoreError::Backend(format!(
                                "idempotency key {key:?} is taken but its workflow is not visible"
                            ))
                        })?;
                    return existing(c, key, &wf.request_hash, &row).await;
                }
            } else {
                let (sp, inserted) = tokio::join!(
                    c.client.batch_execute(SAVEPOINT),
                    c.client.execute(&c.s.insert_workflow, &params),
                );
                sp.map_err(abort).map_err(Fail::Abort)?;
                inserted?;
            }
            wf.id
        }
        WorkflowRef::Existing(id) => {
            let (sp, found) = tokio::join!(c.client.batch_execute(SAVEPOINT), async {
                c.client.query_opt(&c.s.workflow_exists, &[&id.0]).await
            },);
            sp.map_err(abort).map_err(Fail::Abort)?;
            if found?.is_none() {
                return Err(StoreError::WorkflowNotFound(*id).into());
            }
            *id
        }
    };
    insert_tasks_and_edges(c, batch, deltas).await?;
    for record in &batch.transitions {
        let expected = expected_version(record)?;
        write_transition(c, record, expected, deltas, false).await?;
    }
    c.client.batch_execute(RELEASE).await?;
    Ok(SubmitOutcome::Created { workflow })
}

/// The answer to a submission whose idempotency key names the workflow in `row`.
async fn existing(c: &Conn, key: &str, hash: &str, row: &Row) -> Result<SubmitOutcome, Fail> {
    let id: Uuid = get(row, 0)?;
    let stored_hash: &str = get(row, 1)?;
    if stored_hash != hash {
        return Err(StoreError::IdempotencyMismatch {
            key: key.to_owned(),
        }
        .into());
    }
    let workflow = WorkflowId(id);
    let rows = c.client.query(&c.s.task_keys, &[&id]).await?;
    let mut tasks = Vec::with_capacity(rows.len());
    for row in &rows {
        tasks.push((TaskKey(get(row, 0)?), TaskId(get(row, 1)?)));
    }
    c.client.batch_execute(RELEASE).await?;
    Ok(SubmitOutcome::Existing { workflow, tasks })
}

/// The new tasks (with their specs, first history entries and outbox rows) and the edges, as
/// one pipelined round of multi-row statements. The first task whose row could not be
/// inserted (its key or id already exists) makes the submission a [`StoreError::DuplicateKey`].
async fn insert_tasks_and_edges(
    c: &Conn,
    batch: &SubmitBatch,
    deltas: &mut Deltas,
) -> Result<(), Fail> {
    let n = batch.tasks.len();
    let mut ids = Vec::with_capacity(n);
    let mut workflows = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut priorities = Vec::with_capacity(n);
    let mut capsets = Vec::with_capacity(n);
    let mut ready = Vec::with_capacity(n);
    let mut timers = Vec::with_capacity(n);
    let mut leases = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    let mut snapshots = Vec::with_capacity(n);
    let mut specs = Vec::with_capacity(n);
    let mut seqs = Vec::with_capacity(n);
    let mut ats = Vec::with_capacity(n);
    let mut actors = Vec::with_capacity(n);
    let mut events = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut outbox = Outbox {
        tasks: Vec::new(),
        effects: Vec::new(),
        ats: Vec::new(),
    };
    for new in &batch.tasks {
        let task = &new.task;
        ids.push(task.id.0);
        workflows.push(task.workflow.0);
        keys.push(task.spec.key.0.as_str());
        states.push(task.kind().as_str());
        versions.push(task.version as i64);
        priorities.push(task.spec.priority);
        capsets.push(codec::capset(&task.spec.capabilities));
        ready.push(codec::ready_at(task).map(ts));
        timers.push(codec::timer_at(task).map(ts));
        leases.push(codec::lease_agent(task));
        updated.push(ts(task.updated_at));
        snapshots.push(codec::snapshot(task));
        specs.push(codec::spec_json(&task.spec));
        seqs.push(new.entry.seq as i64);
        ats.push(ts(new.entry.at));
        actors.push(codec::actor(&new.entry.event));
        events.push(new.entry.event.kind().as_str());
        tokens.push(codec::event_token(&new.entry.event));
        payloads.push(codec::event_json(&new.entry.event));
        outbox.push(task.id, &new.outbox, new.entry.at);
    }
    let mut distinct_capsets = capsets.clone();
    distinct_capsets.sort_unstable();
    distinct_capsets.dedup();
    let dependencies: Vec<Uuid> = batch.edges.iter().map(|e| e.dependency.0).collect();
    let dependents: Vec<Uuid> = batch.edges.iter().map(|e| e.dependent.0).collect();

    type Step<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;
    let mut steps: Vec<Step<'_>> = Vec::new();
    let cl = &c.client;
    let s = &c.s;
    let inserted = async {
        if n == 0 {
            return Ok(Vec::new());
        }
        cl.query(
            &s.insert_tasks,
            &[
                &ids,
                &workflows,
                &keys,
                &states,
                &versions,
                &priorities,
                &capsets,
                &ready,
                &timers,
                &leases,
                &updated,
                &snapshots,
            ],
        )
        .await
    };
    if n > 0 {
        steps.push(Box::pin(async {
            cl.execute(&s.insert_capsets, &[&distinct_capsets]).await
        }));
        steps.push(Box::pin(async {
            cl.execute(&s.insert_specs, &[&ids, &specs]).await
        }));
        steps.push(Box::pin(async {
            let params: [&(dyn ToSql + Sync); 7] =
                [&ids, &seqs, &ats, &actors, &events, &tokens, &payloads];
            cl.execute(&s.insert_histories, &params).await
        }));
    }
    if !outbox.tasks.is_empty() {
        steps.push(Box::pin(async {
            cl.execute(
                &s.insert_outbox,
                &[&outbox.tasks, &outbox.effects, &outbox.ats],
            )
            .await
        }));
    }
    if !batch.edges.is_empty() {
        steps.push(Box::pin(async {
            cl.execute(&s.insert_edges, &[&dependencies, &dependents])
                .await
        }));
        steps.push(Box::pin(async {
            cl.execute(&s.count_open, &[&dependencies, &dependents])
                .await
        }));
    }
    let (inserted, results) = tokio::join!(inserted, join_all(steps));

    let inserted: HashSet<Uuid> = inserted?
        .iter()
        .map(|r| get::<Uuid>(r, 0))
        .collect::<Result<_, _>>()?;
    if let Some(dup) = batch
        .tasks
        .iter()
        .find(|t| !inserted.contains(&t.task.id.0))
    {
        return Err(StoreError::DuplicateKey {
            workflow: dup.task.workflow,
            key: dup.task.spec.key.clone(),
        }
        .into());
    }
    for result in results {
        result?;
    }
    for new in &batch.tasks {
        deltas[new.task.kind().index()] += 1;
    }
    Ok(())
}

/// Assigns up to `leases.len()` pending tasks the agent can run.
///
/// Claims run in the batching writer rather than in a transaction of their own: many agents
/// polling at once then share one commit, and `FOR UPDATE SKIP LOCKED` keeps them exclusive
/// anyway: a candidate another transaction (another writer or process) holds is skipped, and
/// one it has committed as assigned no longer matches `state = 'pending'` when rechecked. The
/// locks of candidates that lose the merge across capability sets are held until the batch
/// commits; other claims skip them meanwhile.
async fn claim(c: &Conn, request: &ClaimRequest, deltas: &mut Deltas) -> Result<Vec<Task>, Fail> {
    c.client
        .batch_execute(SAVEPOINT)
        .await
        .map_err(abort)
        .map_err(Fail::Abort)?;
    let room = match request.max_held {
        Some(max) => room_left(c, request.agent, max).await?,
        None => usize::MAX,
    };
    let wanted = request.leases.len().min(CLAIM_TASKS_MAX).min(room);
    if wanted == 0 {
        c.client.batch_execute(RELEASE).await?;
        return Ok(Vec::new());
    }
    let rows = c.client.query(&c.s.capsets, &[]).await;
    let chosen = candidates(c, &rows?, request, wanted).await??;
    let loaded = load(c, &chosen).await??;
    let mut claimed = Vec::with_capacity(chosen.len());
    for (id, lease) in chosen.iter().zip(&request.leases) {
        let Some(task) = loaded.get(id) else {
            continue;
        };
        let Some(record) = assignment(task, request, *lease) else {
            continue;
        };
        write_transition(c, &record, task.version, deltas, false).await?;
        claimed.push(record.task);
    }
    c.client.batch_execute(RELEASE).await?;
    Ok(claimed)
}

/// How many more leases the agent may take under `max`. Locks the agent's row first, so that
/// claims of one agent, from any process, count its leases one after the other.
async fn room_left(c: &Conn, agent: AgentId, max: u32) -> Result<usize, tokio_postgres::Error> {
    c.client
        .query("SELECT 1 FROM agents WHERE id = $1 FOR UPDATE", &[&agent.0])
        .await?;
    let held: i64 = c
        .client
        .query_one(
            "SELECT count(*) FROM tasks WHERE lease_agent = $1",
            &[&agent.0],
        )
        .await?
        .get(0);
    Ok((i64::from(max) - held).max(0) as usize)
}

/// A statement's rows turned into `T`: the outer error is the statement's, the inner one a
/// row that does not decode.
type Decoded<T> = Result<Result<T, StoreError>, tokio_postgres::Error>;

/// The ids of the best pending tasks the agent can run: up to `wanted` per capability set it
/// satisfies (each list locked with `SKIP LOCKED`, all sent together), merged like the
/// SQLite backend does (highest priority, then the longest ready, then id) and cut to
/// `wanted`.
async fn candidates(
    c: &Conn,
    capsets: &[Row],
    request: &ClaimRequest,
    wanted: usize,
) -> Decoded<Vec<Uuid>> {
    let mut fitting = Vec::new();
    for row in capsets {
        match get::<String>(row, 0) {
            Ok(capset) if codec::capset_fits(&capset, &request.capabilities) => {
                fitting.push(capset)
            }
            Ok(_) => {}
            Err(e) => return Ok(Err(e)),
        }
    }
    let limit = wanted as i64;
    let selects = fitting
        .iter()
        .map(|capset| {
            Box::pin(async move {
                c.client
                    .query(&c.s.claim_candidates, &[capset, &limit])
                    .await
            })
                as Pin<
                    Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + Send + '_>,
                >
        })
        .collect();
    let mut found: Vec<(i32, Option<i64>, Uuid)> = Vec::new();
    for rows in join_all(selects).await {
        for row in &rows? {
            let decoded = (|| Ok::<_, StoreError>((get(row, 0)?, get(row, 1)?, get(row, 2)?)))();
            match decoded {
                Ok(candidate) => found.push(candidate),
                Err(e) => return Ok(Err(e)),
            }
        }
    }
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    found.truncate(wanted);
    Ok(Ok(found.into_iter().map(|(_, _, id)| id).collect()))
}

/// The tasks with these ids, by id.
async fn load(c: &Conn, ids: &[Uuid]) -> Decoded<HashMap<Uuid, Task>> {
    if ids.is_empty() {
        return Ok(Ok(HashMap::new()));
    }
    let rows = c.client.query(&c.s.load_tasks, &[&ids]).await?;
    Ok(decode_tasks(&rows).map(|tasks| tasks.into_iter().map(|t| (t.id.0, t)).collect()))
}

/// The transition assigning `task` to the claiming agent, if the lifecycle accepts it.
fn assignment(task: &Task, request: &ClaimRequest, lease: LeaseId) -> Option<TransitionRecord> {
    let event = Event::AgentAssigned {
        agent: request.agent,
        capabilities: request.capabilities.clone(),
        lease,
    };
    // Never stamped before the task's last change, whatever the clock did since.
    let at = request.now.max(task.updated_at);
    let t = apply(task, &event, at).ok()?;
    Some(TransitionRecord::of(&t, event, at))
}

// ---------------------------------------------------------------------------------------------
// Reads

const TASK_COLUMNS: &str = "SELECT t.id, t.snapshot, s.spec FROM tasks t
                            JOIN task_specs s ON s.task_id = t.id";
const CLAIM_SQL: &str = "SELECT priority, ready_at, id FROM tasks
    WHERE state = 'pending' AND capset = $1 ORDER BY priority DESC, ready_at, id LIMIT $2
    FOR UPDATE SKIP LOCKED";
const TIMERS_SQL: &str = "SELECT id, timer_at FROM tasks
    WHERE timer_at IS NOT NULL AND timer_at <= $1 ORDER BY timer_at, id LIMIT $2";
const DEPENDENTS_SQL: &str = "SELECT dependent FROM edges WHERE dependency = $1 ORDER BY dependent";
const RELEASED_SQL: &str =
    "SELECT id FROM tasks WHERE state = 'blocked' AND deps_open = 0 ORDER BY id LIMIT $1";
const COUNTS_SQL: &str = "SELECT state, sum(n)::int8 FROM state_counts GROUP BY state";
const AGENT_COLUMNS: &str =
    "SELECT id, name, capabilities, concurrency, registered_at, last_seen FROM agents";

fn decode_tasks(rows: &[Row]) -> Result<Vec<Task>, StoreError> {
    rows.iter()
        .map(|row| {
            let id = TaskId(get(row, 0)?);
            codec::decode_task(id, get(row, 1)?, get(row, 2)?)
        })
        .collect()
}

fn decode_agent(row: &Row) -> Result<AgentRecord, StoreError> {
    let id: Uuid = get(row, 0)?;
    let concurrency: i64 = get(row, 3)?;
    Ok(AgentRecord {
        id: AgentId(id),
        name: get(row, 1)?,
        capabilities: serde_json::from_str(get(row, 2)?)
            .map_err(|e| StoreError::Backend(format!("agent {id} capabilities: {e}")))?,
        concurrency: u32::try_from(concurrency)
            .map_err(|_| StoreError::Backend(format!("agent {id} concurrency {concurrency}")))?,
        registered_at: Timestamp(get::<i64>(row, 4)? as u64),
        last_seen: Timestamp(get::<i64>(row, 5)? as u64),
    })
}

fn ids(rows: &[Row]) -> Result<Vec<TaskId>, StoreError> {
    rows.iter().map(|r| get(r, 0).map(TaskId)).collect()
}

impl Store for PgStore {
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
        let rows = self
            .query(&format!("{TASK_COLUMNS} WHERE t.id = $1"), &[&id.0])
            .await?;
        Ok(decode_tasks(&rows)?.pop())
    }

    async fn task_by_key(
        &self,
        workflow: WorkflowId,
        key: TaskKey,
    ) -> Result<Option<Task>, StoreError> {
        let rows = self
            .query(
                &format!("{TASK_COLUMNS} WHERE t.workflow_id = $1 AND t.key = $2"),
                &[&workflow.0, &key.0],
            )
            .await?;
        Ok(decode_tasks(&rows)?.pop())
    }

    async fn history(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        let rows = self
            .query(
                "SELECT seq, at, payload FROM history WHERE task_id = $1 AND seq > $2
                 ORDER BY seq LIMIT $3",
                &[&id.0, &(after.min(i64::MAX as u64) as i64), &limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = get(row, 0)?;
                let event =
                    serde_json::from_str(get(row, 2)?).map_err(|e| StoreError::Corrupt {
                        task: id,
                        detail: format!("history entry {seq}: {e}"),
                    })?;
                Ok(HistoryEntry {
                    seq: seq as u64,
                    at: Timestamp(get::<i64>(row, 1)? as u64),
                    event,
                })
            })
            .collect()
    }

    async fn tasks(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        let limit = filter.limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let after = filter.after.map(|t| t.0).unwrap_or(Uuid::nil());
        let rows = match (filter.workflow, filter.state) {
            (Some(wf), Some(st)) => {
                self.query(
                    &format!(
                        "{TASK_COLUMNS} WHERE t.workflow_id = $1 AND t.state = $2 AND t.id > $3
                         ORDER BY t.id LIMIT $4"
                    ),
                    &[&wf.0, &st.as_str(), &after, &limit],
                )
                .await?
            }
            (Some(wf), None) => {
                self.query(
                    &format!(
                        "{TASK_COLUMNS} WHERE t.workflow_id = $1 AND t.id > $2 ORDER BY t.id LIMIT $3"
                    ),
                    &[&wf.0, &after, &limit],
                )
                .await?
            }
            (None, Some(st)) => {
                self.query(
                    &format!("{TASK_COLUMNS} WHERE t.state = $1 AND t.id > $2 ORDER BY t.id LIMIT $3"),
                    &[&st.as_str(), &after, &limit],
                )
                .await?
            }
            (None, None) => {
                self.query(
                    &format!("{TASK_COLUMNS} WHERE t.id > $1 ORDER BY t.id LIMIT $2"),
                    &[&after, &limit],
                )
                .await?
            }
        };
        decode_tasks(&rows)
    }

    async fn counts(&self, workflow: Option<WorkflowId>) -> Result<StateCounts, StoreError> {
        let rows = match workflow {
            None => self.query(COUNTS_SQL, &[]).await?,
            Some(wf) => {
                self.query(
                    "SELECT state, count(*) FROM tasks WHERE workflow_id = $1 GROUP BY state",
                    &[&wf.0],
                )
                .await?
            }
        };
        let mut counts = StateCounts::default();
        for row in &rows {
            let state: &str = get(row, 0)?;
            let n: i64 = get(row, 1)?;
            let kind = StateKind::parse(state)
                .ok_or_else(|| StoreError::Backend(format!("unknown state {state:?} in counts")))?;
            counts.0[kind.index()] = n.max(0) as u64;
        }
        Ok(counts)
    }

    async fn workflow(&self, id: WorkflowId) -> Result<Option<WorkflowRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT name, idempotency_key, created_at FROM workflows WHERE id = $1",
                &[&id.0],
            )
            .await?;
        rows.first()
            .map(|row| {
                Ok(WorkflowRecord {
                    id,
                    name: get(row, 0)?,
                    idempotency_key: get(row, 1)?,
                    created_at: Timestamp(get::<i64>(row, 2)? as u64),
                })
            })
            .transpose()
    }

    async fn workflows(
        &self,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let before = before.map(|w| w.0).unwrap_or(Uuid::max());
        let rows = self
            .query(
                "SELECT id, name, idempotency_key, created_at FROM workflows
                 WHERE id < $1 ORDER BY id DESC LIMIT $2",
                &[&before, &limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(WorkflowRecord {
                    id: WorkflowId(get(row, 0)?),
                    name: get(row, 1)?,
                    idempotency_key: get(row, 2)?,
                    created_at: Timestamp(get::<i64>(row, 3)? as u64),
                })
            })
            .collect()
    }

    async fn workflow_edges(&self, workflow: WorkflowId) -> Result<Vec<Edge>, StoreError> {
        let rows = self
            .query(
                "SELECT e.dependency, e.dependent FROM tasks t
                 JOIN edges e ON e.dependent = t.id WHERE t.workflow_id = $1",
                &[&workflow.0],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(Edge {
                    dependency: TaskId(get(row, 0)?),
                    dependent: TaskId(get(row, 1)?),
                })
            })
            .collect()
    }

    async fn dependencies(&self, id: TaskId) -> Result<Vec<Dependency>, StoreError> {
        let rows = self
            .query(
                "SELECT t.key, t.id, t.state, t.updated_at FROM edges e
                 JOIN tasks t ON t.id = e.dependency
                 WHERE e.dependent = $1 ORDER BY t.key",
                &[&id.0],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let dep = TaskId(get(row, 1)?);
                Ok(Dependency {
                    key: TaskKey(get(row, 0)?),
                    id: dep,
                    state: codec::parse_state(dep, get(row, 2)?)?,
                    updated_at: Timestamp(get::<i64>(row, 3)? as u64),
                })
            })
            .collect()
    }

    async fn dependents(&self, id: TaskId) -> Result<Vec<TaskId>, StoreError> {
        ids(&self.query(DEPENDENTS_SQL, &[&id.0]).await?)
    }

    async fn due_timers(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<(TaskId, Timestamp)>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        let rows = self.query(TIMERS_SQL, &[&ts(now), &limit]).await?;
        rows.iter()
            .map(|row| Ok((TaskId(get(row, 0)?), Timestamp(get::<i64>(row, 1)? as u64))))
            .collect()
    }

    async fn next_timer(&self) -> Result<Option<Timestamp>, StoreError> {
        let rows = self
            .query(
                "SELECT min(timer_at) FROM tasks WHERE timer_at IS NOT NULL",
                &[],
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(get::<Option<i64>>(row, 0)?.map(|t| Timestamp(t as u64))),
            None => Ok(None),
        }
    }

    async fn released_blocked(&self, limit: usize) -> Result<Vec<TaskId>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        ids(&self.query(RELEASED_SQL, &[&limit]).await?)
    }

    async fn outbox(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        let limit = limit.min(PAGE_ROWS_MAX) as i64;
        let rows = self
            .query(
                "SELECT id, task_id, effect FROM outbox ORDER BY id LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let id: i64 = get(row, 0)?;
                let task = TaskId(get(row, 1)?);
                let effect =
                    serde_json::from_str(get(row, 2)?).map_err(|e| StoreError::Corrupt {
                        task,
                        detail: format!("outbox item {id}: {e}"),
                    })?;
                Ok(OutboxItem { id, task, effect })
            })
            .collect()
    }

    async fn ack_outbox(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        self.write(|r| Command::AckOutbox(ids, r)).await
    }

    async fn upsert_agent(&self, agent: AgentRecord) -> Result<(), StoreError> {
        self.write(|r| Command::UpsertAgent(agent, r)).await
    }

    async fn agent(&self, id: AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let rows = self
            .query(&format!("{AGENT_COLUMNS} WHERE id = $1"), &[&id.0])
            .await?;
        rows.first().map(decode_agent).transpose()
    }

    async fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = self
            .query(&format!("{AGENT_COLUMNS} ORDER BY name, id"), &[])
            .await?;
        rows.iter().map(decode_agent).collect()
    }

    async fn leased_to(&self, agent: AgentId) -> Result<Vec<TaskId>, StoreError> {
        ids(&self
            .query(
                "SELECT id FROM tasks WHERE lease_agent = $1 ORDER BY id",
                &[&agent.0],
            )
            .await?)
    }

    /// The plan is made with sequential scans disabled for its transaction: on the tiny tables
    /// of a test the planner rightly prefers reading the whole table, which says nothing about
    /// production. With scans priced out, the plan names the index that serves the query, or
    /// still shows a sequential scan if none can.
    async fn query_plan(&self, path: HotPath) -> Result<String, StoreError> {
        let nil = Uuid::nil();
        let (sql, params): (&str, Vec<&(dyn ToSql + Sync)>) = match path {
            HotPath::Claim => (CLAIM_SQL, vec![&"write", &10i64]),
            HotPath::DueTimers => (TIMERS_SQL, vec![&0i64, &10i64]),
            HotPath::ReleaseDependents => (DEPENDENTS_SQL, vec![&nil]),
            HotPath::ReleasedBlocked => (RELEASED_SQL, vec![&10i64]),
            HotPath::Counts => (COUNTS_SQL, vec![]),
        };
        let mut client = self.reader().await?;
        let tx = client.transaction().await.map_err(db)?;
        tx.batch_execute("SET LOCAL enable_seqscan = off")
            .await
            .map_err(db)?;
        let rows = tx
            .query(&format!("EXPLAIN {sql}"), &params)
            .await
            .map_err(db)?;
        let lines: Vec<String> = rows.iter().map(|r| get(r, 0)).collect::<Result<_, _>>()?;
        tx.rollback().await.map_err(db)?;
        Ok(lines.join("\n"))
    }

    fn stats(&self) -> CommitStats {
        self.stats.snapshot()
    }

    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        Some(self.cluster.subscribe())
    }

    async fn notify(&self, payload: String) -> Result<(), StoreError> {
        let client = self.reader().await?;
        self.cluster.publish(&client, &payload).await
    }

    async fn try_lead(&self) -> Result<bool, StoreError> {
        self.cluster.try_lead().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://baton:s3cret@db:5432/x"),
            "postgres://baton:***@db:5432/x"
        );
        assert_eq!(redact("postgres://baton@db/x"), "postgres://baton@db/x");
        assert_eq!(
            redact("host=db user=baton password=s3cret dbname=x"),
            "host=db user=baton password=*** dbname=x"
        );
        assert_eq!(
            redact("postgresql://db/x?user=a&password=b&sslmode=disable"),
            "postgresql://db/x?user=a&password=***&sslmode=disable"
        );
    }

    #[test]
    fn the_schema_parameter_is_taken_out_of_the_url() {
        let split = |u: &str| split_schema(u).unwrap();
        assert_eq!(
            split("postgres://h/db?schema=s1"),
            ("postgres://h/db".to_owned(), Some("s1".to_owned()))
        );
        assert_eq!(
            split("postgres://h/db?sslmode=disable&schema=s1&connect_timeout=3"),
            (
                "postgres://h/db?sslmode=disable&connect_timeout=3".to_owned(),
                Some("s1".to_owned())
            )
        );
        assert_eq!(
            split("postgres://h/db"),
            ("postgres://h/db".to_owned(), None)
        );
        assert_eq!(
            split("host=h dbname=db"),
            ("host=h dbname=db".to_owned(), None)
        );
        assert!(split_schema("postgres://h/db?schema=a&schema=b").is_err());
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(check_schema_name("baton_t_0123abc").is_ok());
        assert!(check_schema_name("Tenant_A").is_ok());
        for bad in ["", "1abc", "a b", "a\"b", "a;drop", &"x".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad:?}");
        }
    }
}
