//! Opening a [`PgStore`]: its options, the URL (with Baton's `schema` parameter), the read
//! pool, the writers and the cluster connections.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::cluster::Cluster;
use super::conn::Conn;
use super::error::{db, describe, pool_error, session_ended};
use super::migrate::{migrate, quote_ident};
use super::writer::Writer;
use crate::batch::Queue;
use crate::{Stats, StoreError};

/// Writer tasks, each with its own connection.
const WRITERS: usize = 3;

/// Most pooled read connections, whatever [`PgOptions::pool_size`] asks for.
const POOL_CONNECTIONS_MAX: usize = 64;

/// Longest wait for a new connection, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for a free pooled connection.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub(super) writes: Queue,
    pub(super) pool: Pool,
    pub(super) stats: Arc<Stats>,
    pub(super) cluster: Arc<Cluster>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.cluster.stop();
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
        let shown = crate::redact_url(url);
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
        // Every transition updates a row and retention deletes many: without autovacuum their
        // space is never reused, and the store grows with all the work it ever did.
        let autovacuum = client
            .query_one("SHOW autovacuum", &[])
            .await
            .ok()
            .and_then(|r| r.try_get::<_, String>(0).ok());
        if autovacuum.as_deref() == Some("off") {
            tracing::warn!(
                store = %location,
                "PostgreSQL's autovacuum is off: the space of updated and deleted rows \
                 (every transition's, retention's deletions) is not reused until VACUUM runs; \
                 turn autovacuum on, or run VACUUM on the store's tables regularly"
            );
        }
        drop(client);
        crate::artifact::remove_abandoned_staging(&super::artifacts::staging_dir())?;

        let (writes, rx) = Queue::new();
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
        let cluster = Cluster::start(
            Arc::clone(&config),
            options.schema.as_deref(),
            Arc::clone(&location),
        );
        Ok(PgStore {
            writes,
            pool,
            stats,
            cluster,
        })
    }

    pub(super) async fn reader(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Unavailable {
            detail: format!("no database connection available: {e}"),
        })
    }

    /// Runs a read-only query on a pooled connection with a cached prepared statement. A
    /// connection whose session turns out to have ended (the server restarted, or killed it)
    /// is dropped from the pool and the query tried on another, at most once per pooled
    /// connection.
    pub(super) async fn query(
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

#[cfg(test)]
mod tests {
    use super::*;

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
