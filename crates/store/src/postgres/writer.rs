//! The writer tasks: each takes a batch from the shared queue, runs it on its connection
//! (`commands::run_batch`), runs it again when that can succeed, and answers its callers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use super::commands::run_batch;
use super::conn::Conn;
use super::error::Retry;
use crate::batch::{gather, Command, Outcome};
use crate::{Rerun, Stats, StoreError, BATCH_WRITES_MAX};

/// Most runs of one batch (the first included) before its callers get the last error.
const BATCH_ATTEMPTS_MAX: u32 = 5;

/// Pause before running a batch aborted as a deadlock or serialization failure again,
/// doubled on every further attempt.
const RETRY_BACKOFF: Duration = Duration::from_millis(5);

/// Pause after a writer fails to reconnect, before it takes the next batch.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// One writer task: takes batches from the shared queue and commits them on its connection.
pub(super) struct Writer {
    pub(super) conn: Option<Conn>,
    pub(super) config: Arc<tokio_postgres::Config>,
    pub(super) location: Arc<String>,
    pub(super) stats: Arc<Stats>,
}

impl Writer {
    pub(super) async fn run(mut self, queue: Arc<Mutex<mpsc::Receiver<Command>>>) {
        let mut batch = Vec::with_capacity(BATCH_WRITES_MAX);
        loop {
            let writes = {
                let mut rx = queue.lock().await;
                let Some(first) = rx.recv().await else {
                    return;
                };
                gather(first, &mut rx, &mut batch)
            };
            let started = std::time::Instant::now();
            match self.commit_batch(&batch).await {
                Ok(outcomes) => {
                    self.stats.record(writes, started.elapsed());
                    assert_eq!(outcomes.len(), batch.len(), "one outcome per command");
                    for (cmd, outcome) in batch.drain(..).zip(outcomes) {
                        cmd.answer(outcome);
                    }
                }
                Err(e) => {
                    for cmd in batch.drain(..) {
                        cmd.fail(&e);
                    }
                }
            }
        }
    }

    /// Runs the batch in one transaction and commits it. A run PostgreSQL aborts as a deadlock
    /// or serialization failure is made again; so is one that lost its connection before the
    /// COMMIT (on a new connection); a pipelined run in which a statement failed is made again
    /// carefully; at most [`BATCH_ATTEMPTS_MAX`] runs in all.
    async fn commit_batch(&mut self, batch: &[Command]) -> Result<Vec<Outcome>, StoreError> {
        let mut careful = false;
        let mut attempt = 1;
        loop {
            let conn = match self.conn.take() {
                Some(c) if !c.client.is_closed() => c,
                _ => match Conn::connect(&self.config, &self.location).await {
                    Ok(c) => c,
                    Err(e) => {
                        tokio::time::sleep(RECONNECT_BACKOFF).await;
                        return Err(e);
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
            return Err(failure.into_error(attempt));
        }
    }
}
