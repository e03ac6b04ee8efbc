//! Schedules and triggers in PostgreSQL: each change in a statement of its own on a pooled connection
//! (schedules change a few times a minute at most; the writers' group commit is for
//! transitions), read on the pool.

use baton_core::{Timestamp, WorkflowId};
use tokio_postgres::Row;
use uuid::Uuid;

use super::connect::PgStore;
use super::error::{db, get};
use crate::codec::ts;
use crate::{
    ScheduleRecord, ScheduleWrite, StoreError, TriggerRecord, TriggerWrite, PAGE_ROWS_MAX,
};

const COLUMNS: &str = "name, spec, paused, next_fire_at, last_tick_at, last_workflow, version, \
                       created_at, updated_at";

fn decode(row: &Row) -> Result<ScheduleRecord, StoreError> {
    Ok(ScheduleRecord {
        name: get(row, 0)?,
        spec: get(row, 1)?,
        paused: get(row, 2)?,
        next_fire_at: Timestamp(get::<i64>(row, 3)? as u64),
        last_tick_at: get::<Option<i64>>(row, 4)?.map(|t| Timestamp(t as u64)),
        last_workflow: get::<Option<Uuid>>(row, 5)?.map(WorkflowId),
        version: get::<i64>(row, 6)? as u64,
        created_at: Timestamp(get::<i64>(row, 7)? as u64),
        updated_at: Timestamp(get::<i64>(row, 8)? as u64),
    })
}

const TRIGGER_COLUMNS: &str = "name, template, created_at, updated_at";

fn decode_trigger(row: &Row) -> Result<TriggerRecord, StoreError> {
    Ok(TriggerRecord {
        name: get(row, 0)?,
        template: get(row, 1)?,
        created_at: Timestamp(get::<i64>(row, 2)? as u64),
        updated_at: Timestamp(get::<i64>(row, 3)? as u64),
    })
}

impl PgStore {
    pub(super) async fn write_schedule_row(
        &self,
        write: ScheduleWrite,
    ) -> Result<bool, StoreError> {
        let client = self.reader().await?;
        let changed = match &write {
            ScheduleWrite::Create(s) => {
                let n = client
                    .execute(
                        &format!(
                            "INSERT INTO schedules ({COLUMNS})
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                             ON CONFLICT (name) DO NOTHING"
                        ),
                        &[
                            &s.name,
                            &s.spec,
                            &s.paused,
                            &ts(s.next_fire_at),
                            &s.last_tick_at.map(ts),
                            &s.last_workflow.map(|w| w.0),
                            &(s.version as i64),
                            &ts(s.created_at),
                            &ts(s.updated_at),
                        ],
                    )
                    .await
                    .map_err(db)?;
                if n == 0 {
                    return Err(StoreError::ScheduleExists(s.name.clone()));
                }
                n
            }
            ScheduleWrite::Update(s) => client
                .execute(
                    "UPDATE schedules SET spec = $2, paused = $3, next_fire_at = $4,
                         last_tick_at = $5, last_workflow = $6, version = $7, updated_at = $8
                     WHERE name = $1 AND version = $9",
                    &[
                        &s.name,
                        &s.spec,
                        &s.paused,
                        &ts(s.next_fire_at),
                        &s.last_tick_at.map(ts),
                        &s.last_workflow.map(|w| w.0),
                        &(s.version as i64),
                        &ts(s.updated_at),
                        &(s.version as i64 - 1),
                    ],
                )
                .await
                .map_err(db)?,
            ScheduleWrite::Delete { name, version } => client
                .execute(
                    "DELETE FROM schedules WHERE name = $1 AND version = $2",
                    &[name, &(*version as i64)],
                )
                .await
                .map_err(db)?,
        };
        Ok(changed == 1)
    }

    pub(super) async fn schedule_row(
        &self,
        name: String,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let rows = self
            .query(
                &format!("SELECT {COLUMNS} FROM schedules WHERE name = $1"),
                &[&name],
            )
            .await?;
        rows.first().map(decode).transpose()
    }

    pub(super) async fn schedule_rows(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        // Every name sorts after the empty one: names have at least one character.
        let after = after.unwrap_or_default();
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let rows = self
            .query(
                &format!("SELECT {COLUMNS} FROM schedules WHERE name > $1 ORDER BY name LIMIT $2"),
                &[&after, &limit],
            )
            .await?;
        rows.iter().map(decode).collect()
    }

    pub(super) async fn due_schedule_rows(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let rows = self
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM schedules WHERE NOT paused AND next_fire_at <= $1
                     ORDER BY next_fire_at LIMIT $2"
                ),
                &[&ts(now), &limit],
            )
            .await?;
        rows.iter().map(decode).collect()
    }

    pub(super) async fn write_trigger_row(&self, write: TriggerWrite) -> Result<bool, StoreError> {
        let client = self.reader().await?;
        match write {
            TriggerWrite::Put(t) => {
                let row = client
                    .query_one(
                        "INSERT INTO triggers (name, template, created_at, updated_at)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (name) DO UPDATE SET template = excluded.template,
                             updated_at = excluded.updated_at
                         RETURNING (xmax = 0) AS created",
                        &[&t.name, &t.template, &ts(t.created_at), &ts(t.updated_at)],
                    )
                    .await
                    .map_err(db)?;
                get(&row, 0)
            }
            TriggerWrite::Delete(name) => Ok(client
                .execute("DELETE FROM triggers WHERE name = $1", &[&name])
                .await
                .map_err(db)?
                == 1),
        }
    }

    pub(super) async fn trigger_row(
        &self,
        name: String,
    ) -> Result<Option<TriggerRecord>, StoreError> {
        let rows = self
            .query(
                &format!("SELECT {TRIGGER_COLUMNS} FROM triggers WHERE name = $1"),
                &[&name],
            )
            .await?;
        rows.first().map(decode_trigger).transpose()
    }

    pub(super) async fn trigger_rows(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<TriggerRecord>, StoreError> {
        let after = after.unwrap_or_default();
        let limit = limit.clamp(1, PAGE_ROWS_MAX) as i64;
        let rows = self
            .query(
                &format!(
                    "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE name > $1 ORDER BY name LIMIT $2"
                ),
                &[&after, &limit],
            )
            .await?;
        rows.iter().map(decode_trigger).collect()
    }
}
