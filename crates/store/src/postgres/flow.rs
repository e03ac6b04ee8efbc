//! Named rate limits in PostgreSQL (see `crate::flow`): each change in a transaction of its
//! own (limits change rarely; claims and transitions change their buckets in the writers'
//! batches), read on the pool.

use baton_core::{Flow, TaskId, Timestamp};
use tokio_postgres::Row;

use super::connect::PgStore;
use super::error::{db, get};
use crate::codec::{self, ts};
use crate::decide::{self, Bucket};
use crate::flow::{limit_record, KeyStates};
use crate::{FlowHold, LimitRecord, LimitWrite, StoreError, PAGE_ROWS_MAX};

fn bucket(row: &Row, at: usize) -> Result<Bucket, StoreError> {
    Ok(Bucket {
        units: get(row, at)?,
        per_ms: get(row, at + 1)?,
        level: get(row, at + 2)?,
        refilled_at: get(row, at + 3)?,
    })
}

impl PgStore {
    pub(super) async fn write_limit_row(&self, write: LimitWrite) -> Result<bool, StoreError> {
        let now = ts(write.now);
        let mut client = self.reader().await?;
        let tx = client.transaction().await.map_err(db)?;
        // Locked against the claims drawing from it meanwhile.
        let stored = tx
            .query_opt(
                "SELECT units, per_ms, level, refilled_at FROM limits WHERE key = $1 FOR UPDATE",
                &[&write.key],
            )
            .await
            .map_err(db)?
            .map(|r| bucket(&r, 0))
            .transpose()?;
        match &write.limit {
            Some(limit) => {
                let b = match stored {
                    Some(b) => b.resized(limit, now),
                    None => Bucket::full(limit, now),
                };
                tx.execute(
                    "INSERT INTO limits (key, units, per_ms, level, refilled_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (key) DO UPDATE SET units = excluded.units,
                         per_ms = excluded.per_ms, level = excluded.level,
                         refilled_at = excluded.refilled_at, updated_at = excluded.updated_at",
                    &[
                        &write.key,
                        &b.units,
                        &b.per_ms,
                        &b.level,
                        &b.refilled_at,
                        &now,
                    ],
                )
                .await
                .map_err(db)?;
            }
            None => {
                tx.execute("DELETE FROM limits WHERE key = $1", &[&write.key])
                    .await
                    .map_err(db)?;
            }
        }
        tx.execute(
            "UPDATE tasks SET parked_until = $2 WHERE parked = $1",
            &[&decide::parked_on_rate(&write.key), &now],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(stored.is_some())
    }

    pub(super) async fn limit_rows(&self, now: Timestamp) -> Result<Vec<LimitRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT l.key, l.units, l.per_ms, l.level, l.refilled_at, l.updated_at,
                        (SELECT count(*) FROM tasks t WHERE t.parked = 'rate:' || l.key)
                 FROM limits l ORDER BY l.key LIMIT $1",
                &[&(PAGE_ROWS_MAX as i64)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(limit_record(
                    get(r, 0)?,
                    bucket(r, 1)?,
                    get::<i64>(r, 6)?.max(0) as u64,
                    get(r, 5)?,
                    now,
                ))
            })
            .collect()
    }

    pub(super) async fn flow_hold_of(
        &self,
        task: TaskId,
        now: Timestamp,
    ) -> Result<Option<FlowHold>, StoreError> {
        let rows = self
            .query("SELECT flow::text FROM tasks WHERE id = $1", &[&task.0])
            .await?;
        let Some(json) = rows
            .first()
            .map(|r| get::<Option<String>>(r, 0))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        let flow: Flow = codec::parse_flow(&json)?;
        let limits: Vec<&String> = flow.rate.iter().map(|(k, _)| k).collect();
        let keys: Vec<&String> = flow.concurrency.iter().map(|(k, _)| k).collect();
        let mut states = KeyStates::default();
        for r in self
            .query(
                "SELECT key, units, per_ms, level, refilled_at FROM limits
                 WHERE key = ANY($1::text[])",
                &[&limits],
            )
            .await?
        {
            states.buckets.insert(get(&r, 0)?, bucket(&r, 1)?);
        }
        for r in self
            .query(
                "SELECT key, held FROM concurrency_held WHERE key = ANY($1::text[])",
                &[&keys],
            )
            .await?
        {
            states.held.insert(get(&r, 0)?, get(&r, 1)?);
        }
        Ok(states.hold(&flow, now))
    }
}
