//! What several engine processes on one PostgreSQL database need from each other, without a
//! coordinator of their own: notices (`LISTEN`/`NOTIFY` on a channel per schema) and one
//! leader at a time (a session advisory lock, released by PostgreSQL when the leader's
//! connection dies). A leader that stops working without its connection dying (a frozen or
//! starved process) stops using its session too; after [`LEADER_SILENCE_MAX`] of that, a node
//! asking for leadership ends the session, which frees the lock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, Mutex};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::{StoreError, NOTICE_BYTES_MAX};

/// Advisory-lock class of leadership ("BATL"); the object id is the schema's hash.
const LEADER_LOCK: i32 = 0x4241_544C;
/// How long the leadership session may stay silent before another node ends it. The leader
/// uses it at least every second or so while its loops run (see `Cluster::try_lead`); a
/// leader deposed while in fact only slow does no harm, as the leader's work is idempotent.
pub const LEADER_SILENCE_MAX: Duration = Duration::from_secs(15);
/// Notices a slow subscriber may fall behind by before it misses some (then it resyncs).
const NOTICES_BACKLOG_MAX: usize = 4_096;
/// Waits between reconnection attempts of the listener, doubling up to the maximum.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The payload a subscriber receives after its listening connection was re-established:
/// notices may have been missed, so everything should be looked at again.
pub const RESYNC: &str = "";

/// The connection leadership is asked for on, and held by.
struct Session {
    client: Client,
    /// Holds the leadership lock.
    leads: bool,
}

/// The cluster side of a [`super::PgStore`].
pub struct Cluster {
    config: Arc<Config>,
    channel: String,
    schema: String,
    notices: broadcast::Sender<String>,
    /// The session that holds the leadership lock, or asks for it.
    leader: Mutex<Option<Session>>,
    location: Arc<String>,
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Cluster {
    /// Starts listening on the schema's channel; notices arrive on [`Cluster::subscribe`].
    pub fn start(config: Arc<Config>, schema: Option<&str>, location: Arc<String>) -> Arc<Cluster> {
        let schema = schema.unwrap_or("public").to_owned();
        let channel = format!("baton_{}", schema.to_lowercase());
        let (notices, _) = broadcast::channel(NOTICES_BACKLOG_MAX);
        let cluster = Arc::new(Cluster {
            config,
            channel,
            schema,
            notices,
            leader: Mutex::new(None),
            location,
            listener: std::sync::Mutex::new(None),
        });
        let listener = Arc::clone(&cluster);
        let task = tokio::spawn(async move { listener.listen().await });
        *cluster.listener.lock().expect("listener lock") = Some(task);
        cluster
    }

    /// Stops listening (the store is closing).
    pub fn stop(&self) {
        if let Some(task) = self.listener.lock().expect("listener lock").take() {
            task.abort();
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.notices.subscribe()
    }

    /// Sends a notice to every process listening on this store (this one included).
    ///
    /// # Panics
    /// If `payload` is longer than [`NOTICE_BYTES_MAX`]: callers split their notices (the
    /// `Store::notify` contract), so a longer one is a bug in the caller.
    pub async fn publish(&self, client: &Client, payload: &str) -> Result<(), StoreError> {
        assert!(
            payload.len() <= NOTICE_BYTES_MAX,
            "a notice of {} bytes: at most {NOTICE_BYTES_MAX} fit in one",
            payload.len()
        );
        client
            .execute("SELECT pg_notify($1, $2)", &[&self.channel, &payload])
            .await
            .map_err(|e| StoreError::Unavailable {
                detail: format!("cannot send a notice: {e}"),
            })?;
        Ok(())
    }

    /// Whether this process leads: holds the leadership lock, taking it if free. Leadership
    /// lasts as long as the connection that took it. A process that does not lead keeps its
    /// connection for the next try, rather than opening one per try.
    pub async fn try_lead(&self) -> Result<bool, StoreError> {
        let mut session = self.leader.lock().await;
        if let Some(s) = session.as_ref() {
            if s.leads {
                // Also tells the other nodes this session is alive (`state_change`).
                if !s.client.is_closed() && s.client.simple_query("SELECT 1").await.is_ok() {
                    return Ok(true);
                }
                *session = None;
            } else if s.client.is_closed() {
                *session = None;
            }
        }
        let s = match session.as_mut() {
            Some(s) => s,
            None => session.insert(Session {
                client: connect(&self.config, &self.location).await?,
                leads: false,
            }),
        };
        // Asked only while this session does not hold the lock, so it is never taken twice.
        let row = s
            .client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&LEADER_LOCK, &self.schema],
            )
            .await;
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                *session = None;
                return Err(StoreError::Unavailable {
                    detail: format!("cannot take the leadership lock: {e}"),
                });
            }
        };
        s.leads = row.get(0);
        if !s.leads {
            self.depose_silent_leader(&s.client).await;
        }
        Ok(s.leads)
    }

    /// Ends the leadership session if it has been idle for longer than
    /// [`LEADER_SILENCE_MAX`]: its process no longer leads, whatever it is doing. The lock is
    /// free once PostgreSQL has ended the session; this node takes it at its next try.
    async fn depose_silent_leader(&self, client: &Client) {
        let deposed = client
            .query(
                "SELECT a.pid, pg_terminate_backend(a.pid)
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                   AND l.classid = ($1::int4)::oid AND l.objid = hashtext($2)::oid
                   AND a.pid <> pg_backend_pid() AND a.state <> 'active'
                   AND a.state_change < now() - make_interval(secs => $3)",
                &[
                    &LEADER_LOCK,
                    &self.schema,
                    &LEADER_SILENCE_MAX.as_secs_f64(),
                ],
            )
            .await;
        match deposed {
            Ok(rows) => {
                for row in rows {
                    let pid: i32 = row.get(0);
                    let ended: bool = row.get(1);
                    tracing::warn!(
                        backend = pid,
                        ended,
                        silent_s = LEADER_SILENCE_MAX.as_secs(),
                        "the leader's session was silent too long; ended it to take over"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot look for a silent leader"),
        }
    }

    /// Keeps a listening connection open, reconnecting with backoff; after each reconnection
    /// it tells subscribers to resync, since notices sent meanwhile are lost.
    async fn listen(self: Arc<Self>) {
        let mut backoff = LISTEN_BACKOFF_MIN;
        let mut first = true;
        loop {
            match self.listen_once(first).await {
                Ok(()) => backoff = LISTEN_BACKOFF_MIN,
                Err(e) => tracing::warn!(error = %e, "listening for cluster notices failed"),
            }
            first = false;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
        }
    }

    async fn listen_once(&self, first: bool) -> Result<(), String> {
        let (client, mut connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.location))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(NOTICES_BACKLOG_MAX);
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(n.payload().to_owned()).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {}", quote(&self.channel)))
            .await
            .map_err(|e| format!("cannot LISTEN: {e}"))?;
        if !first {
            let _ = self.notices.send(RESYNC.to_owned());
        }
        while let Some(payload) = rx.recv().await {
            let _ = self.notices.send(payload);
        }
        driver.abort();
        drop(client);
        Err("the listening connection closed".into())
    }
}

async fn connect(config: &Config, location: &str) -> Result<Client, StoreError> {
    let (client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|e| StoreError::Unavailable {
                detail: format!("cannot connect to PostgreSQL at {location}: {e}"),
            })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}
