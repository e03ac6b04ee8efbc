//! Opening a schema as a Baton store: creating it, checking what it holds, migrating it.

use std::collections::HashMap;

use super::error::{db, describe, get};
use crate::StoreError;

/// Schema migrations; `baton_meta.schema_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    include_str!("001_init.sql"),
    include_str!("002_workflow_outputs.sql"),
    include_str!("003_artifacts.sql"),
    include_str!("004_signals_and_timers.sql"),
    include_str!("005_schedules_and_triggers.sql"),
    include_str!("006_operator_controls.sql"),
    include_str!("007_workflow_labels.sql"),
    include_str!("008_usage_and_budgets.sql"),
    include_str!("009_flow_control.sql"),
    include_str!("010_fairness.sql"),
    include_str!("011_retention.sql"),
    include_str!("012_waiting_index.sql"),
];

/// `baton_meta.application` of a Baton store.
const APPLICATION: &str = "baton";

/// First key of the advisory lock that serializes migrations ("BATN"); the second is a hash
/// of the schema name, so stores in different schemas migrate independently.
const MIGRATION_LOCK: i32 = 0x4241_544E;

/// Creates the schema if asked and missing, checks that it holds a Baton store (or nothing),
/// and applies the missing migrations, all in one transaction under an advisory lock.
pub(super) async fn migrate(
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

/// A checked schema name as a quoted identifier (its case is kept).
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{name}\"")
}
