//! Signals in PostgreSQL: stored in a transaction of their own on a pooled connection (a
//! signal is rare and small; the writers' group commit is for transitions), read on the pool.

use baton_core::{Task, TaskId, Timestamp, WorkflowId};
use tokio_postgres::Row;
use uuid::Uuid;

use super::commands::decode_tasks;
use super::connect::PgStore;
use super::error::{db, get};
use crate::codec::{self, ts};
use crate::{NewSignal, PutSignal, SignalRecord, StoreError, TaskFilter, PAGE_ROWS_MAX};

const COLUMNS: &str =
    "id, workflow_id, name, data, reject, sent_by, idempotency_key, sent_at, delivered_at";
const TASK_COLUMNS: &str = "SELECT t.id, t.snapshot, s.spec FROM tasks t
                            JOIN task_specs s ON s.task_id = t.id";

/// The pending tasks waiting for a signal: the predicate of the indexes `tasks_waiting` and
/// `tasks_waiting_by_workflow` (migration 012), word for word, with the prefix as a literal, so
/// that the planner proves them usable for a cached statement's generic plan as well.
const WAITING: &str =
    "t.state = 'pending' AND t.ready_at IS NOT NULL AND starts_with(t.capset, '!signal:')";

fn decode(row: &Row) -> Result<SignalRecord, StoreError> {
    decode_from(row, 0)
}

impl PgStore {
    pub(super) async fn put_signal_row(&self, s: NewSignal) -> Result<PutSignal, StoreError> {
        let data = serde_json::to_string(&s.data).expect("JSON serialises");
        let client = self.reader().await?;
        // A concurrent send with the same key waits for this one's commit on the unique
        // index, then finds its row.
        let inserted = client
            .query_opt(
                &format!(
                    "INSERT INTO signals (workflow_id, name, data, reject, sent_by,
                                          idempotency_key, request_hash, sent_at)
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM workflows
                     WHERE id = $1 AND deleting IS NULL FOR SHARE
                     ON CONFLICT (workflow_id, name, idempotency_key)
                         WHERE idempotency_key IS NOT NULL DO NOTHING
                     RETURNING {COLUMNS}"
                ),
                &[
                    &s.workflow.0,
                    &s.name,
                    &data,
                    &s.reject,
                    &s.sent_by,
                    &s.idempotency_key,
                    &s.request_hash,
                    &ts(s.sent_at),
                ],
            )
            .await
            .map_err(db)?;
        if let Some(row) = inserted {
            return Ok(PutSignal {
                signal: decode(&row)?,
                created: true,
            });
        }
        // Nothing inserted: the key was used already, or the workflow is gone (or being
        // deleted by retention).
        let Some(key) = s.idempotency_key.clone() else {
            return Err(StoreError::WorkflowNotFound(s.workflow));
        };
        let row = client
            .query_opt(
                &format!(
                    "SELECT request_hash, {COLUMNS} FROM signals
                     WHERE workflow_id = $1 AND name = $2 AND idempotency_key = $3"
                ),
                &[&s.workflow.0, &s.name, &key],
            )
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Err(StoreError::WorkflowNotFound(s.workflow));
        };
        let hash: &str = get(&row, 0)?;
        if hash != s.request_hash {
            return Err(StoreError::IdempotencyMismatch { key });
        }
        Ok(PutSignal {
            signal: decode_from(&row, 1)?,
            created: false,
        })
    }

    pub(super) async fn signal_rows(
        &self,
        workflow: WorkflowId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let rows = self
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM signals WHERE workflow_id = $1 AND id > $2
                     ORDER BY id LIMIT $3"
                ),
                &[&workflow.0, &(after as i64), &limit],
            )
            .await?;
        rows.iter().map(decode).collect()
    }

    pub(super) async fn kept_signal_rows(
        &self,
        of: Option<(WorkflowId, String)>,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let rows = match of {
            Some((wf, name)) => {
                self.query(
                    &format!(
                        "SELECT {COLUMNS} FROM signals
                         WHERE workflow_id = $1 AND name = $2 AND delivered_at IS NULL
                         ORDER BY id LIMIT $3"
                    ),
                    &[&wf.0, &name, &limit],
                )
                .await?
            }
            None => {
                self.query(
                    &format!(
                        "SELECT {COLUMNS} FROM signals WHERE delivered_at IS NULL
                         ORDER BY id LIMIT $1"
                    ),
                    &[&limit],
                )
                .await?
            }
        };
        rows.iter().map(decode).collect()
    }

    pub(super) async fn waiting_rows(
        &self,
        filter: TaskFilter,
        name: Option<String>,
    ) -> Result<Vec<Task>, StoreError> {
        let limit = filter.limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let after = filter.after.map(|t: TaskId| t.0).unwrap_or(Uuid::nil());
        let rows = match (filter.workflow, name) {
            (Some(wf), Some(name)) => {
                let capset = format!("{}{name}", codec::SIGNAL_CAPSET);
                self.query(
                    &format!(
                        "{TASK_COLUMNS} WHERE t.workflow_id = $1 AND {WAITING} AND t.capset = $2
                         AND t.id > $3 ORDER BY t.id LIMIT $4"
                    ),
                    &[&wf.0, &capset, &after, &limit],
                )
                .await?
            }
            (Some(wf), None) => {
                self.query(
                    &format!(
                        "{TASK_COLUMNS} WHERE t.workflow_id = $1 AND {WAITING} AND t.id > $2
                         ORDER BY t.id LIMIT $3"
                    ),
                    &[&wf.0, &after, &limit],
                )
                .await?
            }
            (None, _) => {
                self.query(
                    &format!("{TASK_COLUMNS} WHERE {WAITING} AND t.id > $1 ORDER BY t.id LIMIT $2"),
                    &[&after, &limit],
                )
                .await?
            }
        };
        decode_tasks(&rows)
    }
}

/// A signal from the columns of `COLUMNS` starting at `at`.
fn decode_from(row: &Row, at: usize) -> Result<SignalRecord, StoreError> {
    let data: &str = get(row, at + 3)?;
    Ok(SignalRecord {
        id: get::<i64>(row, at)? as u64,
        workflow: WorkflowId(get(row, at + 1)?),
        name: get(row, at + 2)?,
        data: serde_json::from_str(data)
            .map_err(|e| StoreError::Backend(format!("stored signal data: {e}")))?,
        reject: get(row, at + 4)?,
        sent_by: get(row, at + 5)?,
        idempotency_key: get(row, at + 6)?,
        sent_at: Timestamp(get::<i64>(row, at + 7)? as u64),
        delivered_at: get::<Option<i64>>(row, at + 8)?.map(|t| Timestamp(t as u64)),
    })
}

#[cfg(test)]
mod tests {
    use super::WAITING;

    /// The indexes' predicate is the queries' (unqualified), and its prefix the codec's.
    #[test]
    fn the_waiting_indexes_state_the_queries_predicate() {
        let predicate = WAITING.replace("t.", "");
        let migration = include_str!("012_waiting_index.sql");
        assert_eq!(migration.matches(&predicate).count(), 2, "{predicate}");
        assert!(WAITING.contains(&format!("'{}'", crate::codec::SIGNAL_CAPSET)));
    }
}
