//! Retention in PostgreSQL (see `crate::retention`), and agents' registration under a cap:
//! each in a transaction of its own on a pooled connection (rare and bounded writes; the
//! writers' group commit is for transitions).
//!
//! A deletion batch marks a workflow under its row's lock (`FOR UPDATE`), and checks that it
//! has finished only once it holds it: an operator's control takes the same row `FOR SHARE`
//! before its transitions commit, so either the control committed first (and the check sees
//! the task it reopened) or it waits for the mark and is refused. The tasks a batch deletes
//! are locked `FOR UPDATE` first; an artifact's row is locked before it is unreferenced, so a
//! reference written meanwhile is either seen or waits and marks it referenced again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use baton_core::{ArtifactRef, StateKind, Timestamp, WorkflowId};
use tokio_postgres::error::SqlState;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::conn::COUNT_SHARDS;
use super::connect::PgStore;
use super::error::{db, get};
use crate::codec::ts;
use crate::decide::Deltas;
use crate::{
    AgentRecord, ArtifactRefs, GcBatch, GcCandidate, GcDeleted, GcPage, GcPreview, GcPrune,
    GcPruned, GcScan, StoreError, PAGE_ROWS_MAX,
};

/// First key of the advisory lock under which a registrar's agents are counted ("BATA"); the
/// second is a hash of the schema and the registrar.
const AGENTS_LOCK: i32 = 0x4241_5441;
/// Marked workflows one batch deletes tasks of, at most.
const MARKED_PER_BATCH_MAX: i64 = 64;
/// Runs of a batch PostgreSQL aborts as a deadlock or serialization failure, at most.
const GC_ATTEMPTS_MAX: u32 = 5;
/// Pause before such a batch runs again, doubled each time.
const GC_RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// A failure inside a batch: PostgreSQL's (which may be worth running again), or a row that
/// does not decode.
enum Failure {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure::Pg(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Store(e)
    }
}

/// Runs `once` again while PostgreSQL aborts it as a deadlock or serialization failure.
async fn again<T, F, Fut>(mut once: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut attempt = 1;
    loop {
        match once().await {
            Ok(v) => return Ok(v),
            Err(Failure::Store(e)) => return Err(e),
            Err(Failure::Pg(e)) => {
                let contended = e.code().is_some_and(|c| {
                    *c == SqlState::T_R_DEADLOCK_DETECTED
                        || *c == SqlState::T_R_SERIALIZATION_FAILURE
                });
                if !contended || attempt == GC_ATTEMPTS_MAX {
                    return Err(db(e));
                }
                tokio::time::sleep(GC_RETRY_BACKOFF * 2u32.pow(attempt - 1)).await;
                attempt += 1;
            }
        }
    }
}

/// Whether the workflow has finished before `cutoff` (see `crate::retention`): its task
/// count and when its last task changed, or `None`. The cheap checks come first.
async fn finished(
    tx: &Transaction<'_>,
    id: Uuid,
    created_at: i64,
    cutoff: i64,
) -> Result<Option<(u64, i64)>, tokio_postgres::Error> {
    let moving: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE workflow_id = $1
                            AND state IN ('blocked', 'pending', 'assigned', 'executing'))
                 OR EXISTS (SELECT 1 FROM tasks WHERE workflow_id = $1
                            AND state = 'failed' AND timer_at IS NOT NULL)
                 OR EXISTS (SELECT 1 FROM tasks WHERE workflow_id = $1 AND paused)",
            &[&id],
        )
        .await?
        .try_get(0)?;
    if moving {
        return Ok(None);
    }
    let row = tx
        .query_one(
            "SELECT count(*), max(updated_at) FROM tasks WHERE workflow_id = $1",
            &[&id],
        )
        .await?;
    let tasks: i64 = row.try_get(0)?;
    let last = row.try_get::<_, Option<i64>>(1)?.unwrap_or(created_at);
    if last >= cutoff {
        return Ok(None);
    }
    let effects: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM outbox
                            WHERE task_id IN (SELECT id FROM tasks WHERE workflow_id = $1))",
            &[&id],
        )
        .await?
        .try_get(0)?;
    Ok((!effects).then_some((tasks.max(0) as u64, last)))
}

impl PgStore {
    /// Registers an agent under its registrar's cap, counted under an advisory lock per
    /// registrar so that concurrent registrations (from any node) count one after the other.
    pub(super) async fn register_agent_row(
        &self,
        agent: AgentRecord,
        max: u32,
    ) -> Result<(), StoreError> {
        let caps = serde_json::to_string(&agent.capabilities).expect("capabilities serialise");
        let concurrency = i64::from(agent.concurrency);
        let (registered, seen) = (ts(agent.registered_at), ts(agent.last_seen));
        again(|| async {
            let mut client = self.reader().await?;
            let tx = client.transaction().await?;
            let updated = tx
                .execute(
                    "UPDATE agents SET name = $2, capabilities = $3, concurrency = $4,
                                       last_seen = $5
                     WHERE id = $1",
                    &[&agent.id.0, &agent.name, &caps, &concurrency, &seen],
                )
                .await?;
            if updated == 0 {
                tx.query_one(
                    "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || ':' || $2))",
                    &[&AGENTS_LOCK, &agent.registered_by],
                )
                .await?;
                let stored: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM (SELECT 1 FROM agents WHERE registered_by = $1
                                               LIMIT $2) a",
                        &[&agent.registered_by, &i64::from(max)],
                    )
                    .await?
                    .try_get(0)?;
                if stored >= i64::from(max) {
                    return Err(Failure::Store(StoreError::TooManyAgents {
                        registered_by: agent.registered_by.clone(),
                        max,
                    }));
                }
                // Another registration of the same id may have inserted it meanwhile.
                tx.execute(
                    "INSERT INTO agents (id, name, capabilities, concurrency, registered_at,
                                         last_seen, registered_by)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                         capabilities = excluded.capabilities,
                         concurrency = excluded.concurrency, last_seen = excluded.last_seen",
                    &[
                        &agent.id.0,
                        &agent.name,
                        &caps,
                        &concurrency,
                        &registered,
                        &seen,
                        &agent.registered_by,
                    ],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    pub(super) async fn gc_candidate_rows(&self, scan: GcScan) -> Result<GcPage, StoreError> {
        let cutoff = ts(scan.finished_before);
        let limit = scan.limit.clamp(1, PAGE_ROWS_MAX);
        let (after_at, after_id) = match scan.after {
            Some((at, id)) => (ts(at), id.0),
            None => (-1, Uuid::nil()),
        };
        let mut client = self.reader().await?;
        let tx = client.transaction().await.map_err(db)?;
        let rows = tx
            .query(
                "SELECT id, name, idempotency_key, created_at FROM workflows
                 WHERE created_at < $1 AND (created_at, id) > ($2, $3)
                   AND deleting IS NULL AND paused IS NULL
                 ORDER BY created_at, id LIMIT $4",
                &[&cutoff, &after_at, &after_id, &(limit as i64)],
            )
            .await
            .map_err(db)?;
        let mut page = GcPage::default();
        if rows.len() == limit {
            let last = &rows[limit - 1];
            page.next = Some((
                Timestamp(get::<i64>(last, 3)?.max(0) as u64),
                WorkflowId(get(last, 0)?),
            ));
        }
        for row in &rows {
            let id: Uuid = get(row, 0)?;
            let created_at: i64 = get(row, 3)?;
            if let Some((tasks, last)) = finished(&tx, id, created_at, cutoff).await.map_err(db)? {
                page.candidates.push(GcCandidate {
                    workflow: WorkflowId(id),
                    name: get(row, 1)?,
                    idempotency_key: get(row, 2)?,
                    created_at: Timestamp(created_at.max(0) as u64),
                    finished_at: Timestamp(last.max(0) as u64),
                    tasks,
                });
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(page)
    }

    /// One batch of deletion (see `GcBatch`), in one transaction.
    pub(super) async fn gc_batch(&self, batch: GcBatch) -> Result<GcDeleted, StoreError> {
        again(|| self.gc_batch_once(&batch)).await
    }

    async fn gc_batch_once(&self, batch: &GcBatch) -> Result<GcDeleted, Failure> {
        let mut client = self.reader().await?;
        let tx = client.transaction().await?;
        let mut out = GcDeleted::default();
        let cutoff = ts(batch.finished_before);
        if !batch.mark.is_empty() {
            let ids: Vec<Uuid> = batch.mark.iter().map(|w| w.0).collect();
            let rows = tx
                .query(
                    "SELECT id, created_at FROM workflows
                     WHERE id = ANY($1::uuid[]) AND deleting IS NULL AND paused IS NULL
                     ORDER BY id FOR UPDATE",
                    &[&ids],
                )
                .await?;
            let mut passing = Vec::new();
            for row in &rows {
                let id: Uuid = row.try_get(0)?;
                if finished(&tx, id, row.try_get(1)?, cutoff).await?.is_some() {
                    passing.push(id);
                }
            }
            if !passing.is_empty() {
                tx.execute(
                    "UPDATE workflows SET deleting = $2 WHERE id = ANY($1::uuid[])",
                    &[&passing, &ts(batch.now)],
                )
                .await?;
            }
            out.marked = passing.into_iter().map(WorkflowId).collect();
        }
        let marked: Vec<Uuid> = tx
            .query(
                "SELECT id FROM workflows WHERE deleting IS NOT NULL
                 ORDER BY deleting, id LIMIT $1",
                &[&MARKED_PER_BATCH_MAX],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut budget = batch.tasks_max.max(1);
        let mut deltas = Deltas::default();
        let mut released = BTreeSet::new();
        for wf in marked {
            if budget == 0 {
                break;
            }
            let rows = tx
                .query(
                    "SELECT id, state FROM tasks WHERE workflow_id = $1
                     ORDER BY id LIMIT $2 FOR UPDATE",
                    &[&wf, &(budget as i64)],
                )
                .await?;
            budget -= rows.len();
            let mut ids = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: Uuid = row.try_get(0)?;
                let state: &str = row.try_get(1)?;
                let state = StateKind::parse(state).ok_or_else(|| {
                    StoreError::Backend(format!("task {id} has an unknown state {state:?}"))
                })?;
                deltas.removed(state);
                ids.push(id);
            }
            if !ids.is_empty() {
                out.history += tx
                    .execute(
                        "DELETE FROM history WHERE task_id = ANY($1::uuid[])",
                        &[&ids],
                    )
                    .await?;
                for sql in [
                    "DELETE FROM task_specs WHERE task_id = ANY($1::uuid[])",
                    "DELETE FROM edges WHERE dependency = ANY($1::uuid[])",
                    "DELETE FROM edges WHERE dependent = ANY($1::uuid[])",
                    "DELETE FROM outbox WHERE task_id = ANY($1::uuid[])",
                ] {
                    tx.execute(sql, &[&ids]).await?;
                }
                for row in tx
                    .query(
                        "DELETE FROM artifact_refs WHERE task_id = ANY($1::uuid[])
                         RETURNING artifact",
                        &[&ids],
                    )
                    .await?
                {
                    released.insert(row.try_get::<_, String>(0)?);
                }
                out.tasks += tx
                    .execute("DELETE FROM tasks WHERE id = ANY($1::uuid[])", &[&ids])
                    .await?;
            }
            if budget > 0 {
                // Fewer tasks than asked for: none is left.
                for sql in [
                    "DELETE FROM workflow_labels WHERE workflow_id = $1",
                    "DELETE FROM workflow_usage WHERE workflow_id = $1",
                ] {
                    tx.execute(sql, &[&wf]).await?;
                }
                out.signals += tx
                    .execute("DELETE FROM signals WHERE workflow_id = $1", &[&wf])
                    .await?;
                // Its own fairness group (its tasks without a fairness key): no task can
                // join it again.
                tx.execute(
                    "DELETE FROM fair_groups WHERE grp = $1",
                    &[&format!("workflow:{}", WorkflowId(wf))],
                )
                .await?;
                tx.execute("DELETE FROM workflows WHERE id = $1", &[&wf])
                    .await?;
                out.workflows.push(WorkflowId(wf));
            }
        }
        if !released.is_empty() {
            let released: Vec<String> = released.into_iter().collect();
            // Locked first: a reference written meanwhile commits before the check below
            // reads (and is seen), or waits for this batch and marks the artifact again.
            tx.query(
                "SELECT 1 FROM artifacts WHERE sha256 = ANY($1::text[]) ORDER BY sha256
                 FOR UPDATE",
                &[&released],
            )
            .await?;
            out.artifacts_released = tx
                .execute(
                    "UPDATE artifacts a SET referenced = false
                     WHERE a.sha256 = ANY($1::text[]) AND a.referenced
                       AND NOT EXISTS (SELECT 1 FROM artifact_refs r WHERE r.artifact = a.sha256)",
                    &[&released],
                )
                .await?;
        }
        let (states, changes): (Vec<&str>, Vec<i64>) = deltas
            .changes()
            .map(|(state, d)| (state.as_str(), d))
            .unzip();
        if !states.is_empty() {
            tx.execute(
                "INSERT INTO state_counts (state, shard, n)
                 SELECT s, pg_backend_pid() % $1, d FROM unnest($2::text[], $3::int8[]) AS u(s, d)
                 ON CONFLICT (state, shard) DO UPDATE SET n = state_counts.n + excluded.n",
                &[&COUNT_SHARDS, &states, &changes],
            )
            .await?;
        }
        out.more = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM workflows WHERE deleting IS NOT NULL)",
                &[],
            )
            .await?
            .try_get(0)?;
        tx.commit().await?;
        Ok(out)
    }

    pub(super) async fn gc_preview_rows(
        &self,
        workflows: Vec<WorkflowId>,
    ) -> Result<GcPreview, StoreError> {
        let ids: Vec<Uuid> = workflows.iter().map(|w| w.0).collect();
        let count = |sql: &'static str| {
            let ids = &ids;
            async move {
                let rows = self.query(sql, &[ids]).await?;
                Ok::<u64, StoreError>(get::<i64>(&rows[0], 0)?.max(0) as u64)
            }
        };
        let mut out = GcPreview {
            tasks: count("SELECT count(*) FROM tasks WHERE workflow_id = ANY($1::uuid[])").await?,
            history: count(
                "SELECT count(*) FROM history h JOIN tasks t ON h.task_id = t.id
                 WHERE t.workflow_id = ANY($1::uuid[])",
            )
            .await?,
            signals: count("SELECT count(*) FROM signals WHERE workflow_id = ANY($1::uuid[])")
                .await?,
            artifact_refs: Vec::new(),
        };
        let rows = self
            .query(
                "SELECT r.artifact, count(*) FROM artifact_refs r JOIN tasks t ON r.task_id = t.id
                 WHERE t.workflow_id = ANY($1::uuid[]) GROUP BY r.artifact ORDER BY r.artifact",
                &[&ids],
            )
            .await?;
        for row in &rows {
            let hex: &str = get(row, 0)?;
            out.artifact_refs
                .push((parse_artifact(hex)?, get::<i64>(row, 1)?.max(0) as u64));
        }
        Ok(out)
    }

    pub(super) async fn artifact_ref_rows(
        &self,
        artifacts: Vec<ArtifactRef>,
    ) -> Result<Vec<ArtifactRefs>, StoreError> {
        let hexes: Vec<String> = artifacts.iter().map(|a| a.hex()).collect();
        let rows = self
            .query(
                "SELECT a.sha256, a.uploaded_at,
                        (SELECT count(*) FROM artifact_refs r WHERE r.artifact = a.sha256)
                 FROM artifacts a WHERE a.sha256 = ANY($1::text[]) ORDER BY a.sha256",
                &[&hexes],
            )
            .await?;
        let mut by_hex = BTreeMap::new();
        for row in &rows {
            let hex: &str = get(row, 0)?;
            by_hex.insert(
                hex.to_owned(),
                (
                    get::<i64>(row, 1)?.max(0) as u64,
                    get::<i64>(row, 2)?.max(0) as u64,
                ),
            );
        }
        Ok(artifacts
            .into_iter()
            .filter_map(|artifact| {
                let (uploaded_at, refs) = *by_hex.get(&artifact.hex())?;
                Some(ArtifactRefs {
                    artifact,
                    refs,
                    uploaded_at: Timestamp(uploaded_at),
                })
            })
            .collect())
    }

    /// Deletes up to `prune.limit` rows of each kind, each kind in a statement of its own;
    /// rows another transaction holds are skipped and rechecked once free.
    pub(super) async fn gc_prune_rows(
        &self,
        prune: GcPrune,
        dry_run: bool,
    ) -> Result<GcPruned, StoreError> {
        if dry_run {
            return self.gc_prune_count(&prune).await;
        }
        let limit = prune.limit.max(1) as i64;
        let client = self.reader().await?;
        let mut out = GcPruned::default();
        if let Some(before) = prune.agents_seen_before {
            out.agents = client
                .execute(
                    "DELETE FROM agents WHERE id IN (
                         SELECT id FROM agents WHERE last_seen < $1
                         ORDER BY last_seen, id LIMIT $2 FOR UPDATE SKIP LOCKED)
                       AND last_seen < $1
                       AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.lease_agent = agents.id)",
                    &[&ts(before), &limit],
                )
                .await
                .map_err(db)?;
        }
        if let Some(before) = prune.audit_before {
            // Entries are numbered in the order they were written: the oldest are read by
            // id, a page at a time (see the SQLite backend).
            out.audit = client
                .execute(
                    "DELETE FROM audit WHERE id IN (
                         SELECT id FROM (SELECT id, at FROM audit ORDER BY id LIMIT $2) a
                         WHERE at < $1)",
                    &[&ts(before), &limit],
                )
                .await
                .map_err(db)?;
        }
        if let Some(upto) = prune.fair_pass_upto {
            out.fair_groups = client
                .execute(
                    "DELETE FROM fair_groups WHERE grp IN (
                         SELECT grp FROM fair_groups WHERE pass <= $1
                         LIMIT $2 FOR UPDATE SKIP LOCKED)
                       AND pass <= $1",
                    &[&upto, &limit],
                )
                .await
                .map_err(db)?;
        }
        out.concurrency_keys = client
            .execute(
                "DELETE FROM concurrency_held WHERE key IN (
                     SELECT key FROM concurrency_held WHERE held = 0 AND freed_at < $1
                     LIMIT $2 FOR UPDATE SKIP LOCKED)
                   AND held = 0 AND freed_at < $1",
                &[&ts(prune.concurrency_freed_before), &limit],
            )
            .await
            .map_err(db)?;
        Ok(out)
    }

    async fn gc_prune_count(&self, prune: &GcPrune) -> Result<GcPruned, StoreError> {
        let count = |sql: &'static str, value: i64| async move {
            let rows = self.query(sql, &[&value]).await?;
            Ok::<u64, StoreError>(get::<i64>(&rows[0], 0)?.max(0) as u64)
        };
        let mut out = GcPruned::default();
        if let Some(before) = prune.agents_seen_before {
            out.agents = count(
                "SELECT count(*) FROM agents a WHERE a.last_seen < $1
                   AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.lease_agent = a.id)",
                ts(before),
            )
            .await?;
        }
        if let Some(before) = prune.audit_before {
            out.audit = count("SELECT count(*) FROM audit WHERE at < $1", ts(before)).await?;
        }
        if let Some(upto) = prune.fair_pass_upto {
            out.fair_groups =
                count("SELECT count(*) FROM fair_groups WHERE pass <= $1", upto).await?;
        }
        out.concurrency_keys = count(
            "SELECT count(*) FROM concurrency_held WHERE held = 0 AND freed_at < $1",
            ts(prune.concurrency_freed_before),
        )
        .await?;
        out.artifacts = count(
            "SELECT count(*) FROM artifacts WHERE NOT referenced AND uploaded_at < $1",
            ts(prune.artifacts_uploaded_before),
        )
        .await?;
        Ok(out)
    }
}

fn parse_artifact(hex: &str) -> Result<ArtifactRef, StoreError> {
    hex.parse()
        .map_err(|e| StoreError::Backend(format!("stored artifact name {hex:?}: {e}")))
}
