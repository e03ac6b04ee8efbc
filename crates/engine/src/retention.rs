//! Retention: what Baton deletes, and when. The leading node runs a pass every
//! [`RETENTION_INTERVAL_MS`]; `baton gc` runs one through the same [`Engine::collect`].
//!
//! A pass, in bounded batches, each its own short store transaction (so claims and reports
//! go on between them):
//! - **Workflows** that have finished (none of their tasks can move again: see
//!   `baton_store::retention`) for longer than `EngineConfig::retain_ms` go with their tasks,
//!   history, edges, signals, usage, labels and their own fairness group, a batch of
//!   [`GC_TASKS_PER_BATCH`] tasks at a time; a deletion cut short (a crash, leadership lost)
//!   is finished by the next pass. One submitted by a schedule tick the schedule has not yet
//!   moved past is kept: deleting it would let the tick, fired again, submit it anew (its
//!   idempotency key went with it).
//! - **Artifacts** no remaining task refers to are then deleted by the artifact sweep once
//!   their latest upload is older than the grace.
//! - **Agents** silent for `EngineConfig::agent_retention_ms` and holding no lease.
//! - **Audit entries** older than `EngineConfig::audit_retain_ms`.
//! - **Rows that only serve live work**: concurrency keys no task holds whose last slot was
//!   freed [`CONCURRENCY_KEY_IDLE_MS`] ago, and fairness groups whose last turn the fairness
//!   clock has reached (their next turn is the clock's anyway, so forgetting them changes no
//!   claim order). The clock compared with is the one read at the previous pass, a whole
//!   interval earlier: a writer that read an older clock has long committed (PostgreSQL's
//!   writers read it in their own transactions).
//!
//! SQLite gives the freed pages back to the file system after each batch (incremental
//! vacuum); PostgreSQL's autovacuum makes them reusable by itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use baton_core::{ArtifactRef, Timestamp, WorkflowId};
use baton_store::{GcBatch, GcCandidate, GcPrune, GcPruned, GcScan, Store};
use tracing::{debug, info, warn};

use crate::engine::Engine;
use crate::error::EngineError;

const DAY_MS: u64 = 24 * 3_600_000;
/// Finished workflows are kept this long by default (`baton serve --retain`).
pub const RETAIN_MS_DEFAULT: u64 = 30 * DAY_MS;
/// Silent agents are kept this long by default (`baton serve --agent-retention`).
pub const AGENT_RETENTION_MS_DEFAULT: u64 = 7 * DAY_MS;
/// Audit entries are kept this long by default (`baton serve --audit-retain`).
pub const AUDIT_RETAIN_MS_DEFAULT: u64 = 365 * DAY_MS;
/// How often the leading node runs a retention pass.
pub const RETENTION_INTERVAL_MS: u64 = 60_000;
/// Tasks one deletion batch deletes at most (with their history): a transaction of some
/// milliseconds, so that claims and reports are held up no longer than that.
pub const GC_TASKS_PER_BATCH: usize = 500;
/// Workflows one read of the scan looks at.
pub const GC_WORKFLOWS_PER_SCAN: usize = 100;
/// Rows of each kind one pruning write deletes at most.
pub const GC_ROWS_PER_PRUNE: usize = 1_000;
/// Free pages given back to the file system after each batch, at most (SQLite).
pub const GC_VACUUM_PAGES_PER_BATCH: u64 = 4_096;
/// A concurrency key no task holds is forgotten once its last slot was freed this long ago.
pub const CONCURRENCY_KEY_IDLE_MS: u64 = 3_600_000;
/// Pause between two deletion batches, so that other writes have the store in between.
const GC_BATCH_PAUSE: Duration = Duration::from_millis(5);

/// How a pass runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Count what the pass would delete, and delete nothing.
    pub dry_run: bool,
    /// No other process writes the store during the pass (SQLite's `baton gc`, which holds
    /// the data directory's lock): fairness groups are compared with the clock as read now.
    pub exclusive: bool,
}

/// What a retention pass deleted, or would delete (a dry run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    /// Workflows that finished before this were deleted; `None`: kept forever (`retain_ms`
    /// 0).
    pub finished_before: Option<Timestamp>,
    pub workflows: u64,
    pub tasks: u64,
    pub history: u64,
    pub signals: u64,
    /// When the earliest and the latest of the deleted workflows finished.
    pub oldest: Option<Timestamp>,
    pub newest: Option<Timestamp>,
    /// Finished workflows kept because their schedule has not moved past their tick.
    pub kept_for_schedules: u64,
    /// Artifacts no remaining task refers to any more.
    pub artifacts_released: u64,
    /// Artifacts the sweep deleted (or would): unreferenced, uploaded before the grace.
    pub artifacts_deleted: u64,
    pub agents: u64,
    pub audit: u64,
    pub fair_groups: u64,
    pub concurrency_keys: u64,
    /// Pages SQLite gave back to the file system.
    pub pages_reclaimed: u64,
}

impl GcReport {
    /// Whether the pass deleted (or would delete) anything.
    pub fn any(&self) -> bool {
        self.workflows
            + self.tasks
            + self.artifacts_deleted
            + self.agents
            + self.audit
            + self.fair_groups
            + self.concurrency_keys
            > 0
    }

    fn finished(&mut self, at: Timestamp) {
        self.oldest = Some(self.oldest.map_or(at, |o| o.min(at)));
        self.newest = Some(self.newest.map_or(at, |n| n.max(at)));
    }

    fn pruned(&mut self, p: &GcPruned) {
        self.agents += p.agents;
        self.audit += p.audit;
        self.fair_groups += p.fair_groups;
        self.concurrency_keys += p.concurrency_keys;
    }
}

/// `now` less `ms`; `None` when `ms` is 0 (kept forever).
fn before(now: Timestamp, ms: u64) -> Option<Timestamp> {
    (ms > 0).then(|| Timestamp(now.0.saturating_sub(ms)))
}

/// A schedule tick's workflow key, `schedule:NAME:TICK_MS`, as (name, tick).
fn schedule_tick(key: &str) -> Option<(&str, u64)> {
    let (name, tick) = key.strip_prefix("schedule:")?.rsplit_once(':')?;
    Some((name, tick.parse().ok()?))
}

impl<S: Store + 'static> Engine<S> {
    /// One retention pass (see the module's documentation): deletes, in bounded batches,
    /// what has outlived its retention, or with `dry_run` counts it and changes nothing.
    pub async fn collect(&self, options: GcOptions) -> Result<GcReport, EngineError> {
        let started = std::time::Instant::now();
        let now = self.now();
        let config = &self.inner.config;
        let mut report = GcReport {
            dry_run: options.dry_run,
            finished_before: before(now, config.retain_ms),
            ..GcReport::default()
        };
        // The fairness clock compared with: the previous pass's (see the module's
        // documentation), or now's when no other process writes.
        let clock = self.inner.store.fair_clock().await?;
        let previous = if options.dry_run {
            self.inner.fair_clock_seen.load(Ordering::SeqCst)
        } else {
            self.inner.fair_clock_seen.swap(clock, Ordering::SeqCst)
        };
        let fair_pass_upto = if options.exclusive || options.dry_run {
            Some(clock)
        } else {
            (previous != i64::MIN).then_some(previous)
        };
        if options.dry_run {
            self.preview_workflows(&mut report).await?;
        } else {
            self.delete_workflows(&mut report).await?;
        }
        let grace = config.artifact_unreferenced_grace_ms;
        let prune = GcPrune {
            agents_seen_before: before(now, config.agent_retention_ms),
            audit_before: before(now, config.audit_retain_ms),
            fair_pass_upto,
            concurrency_freed_before: Timestamp(now.0.saturating_sub(CONCURRENCY_KEY_IDLE_MS)),
            artifacts_uploaded_before: Timestamp(now.0.saturating_sub(grace)),
            limit: GC_ROWS_PER_PRUNE,
        };
        if options.dry_run {
            let counted = self.inner.store.gc_prune(prune, true).await?;
            report.pruned(&counted);
            report.artifacts_deleted += counted.artifacts;
        } else {
            loop {
                let pruned = self.inner.store.gc_prune(prune.clone(), false).await?;
                report.pruned(&pruned);
                if !pruned.full(prune.limit) || self.stopping() {
                    break;
                }
            }
            report.artifacts_deleted += self.sweep_artifacts().await? as u64;
            report.pages_reclaimed += self
                .inner
                .store
                .reclaim_space(GC_VACUUM_PAGES_PER_BATCH)
                .await?;
            self.inner.metrics.retention(&report, started.elapsed());
        }
        Ok(report)
    }

    /// The finished workflows past the retention, page by page of the scan (and those a
    /// deletion cut short left marked first), deleted a batch at a time.
    async fn delete_workflows(&self, report: &mut GcReport) -> Result<(), EngineError> {
        let store = &self.inner.store;
        // A deletion cut short is finished whatever the retention says now: its workflow
        // already refuses controls and is no longer shown.
        if !store.gc_marked(1).await?.is_empty() {
            self.delete_batch(Vec::new(), Timestamp(0), report).await?;
        }
        let Some(cutoff) = report.finished_before else {
            return Ok(());
        };
        let mut schedules = HashMap::new();
        let mut after = None;
        loop {
            if self.stopping() {
                return Ok(());
            }
            let page = store
                .gc_candidates(GcScan {
                    finished_before: cutoff,
                    after,
                    limit: GC_WORKFLOWS_PER_SCAN,
                })
                .await?;
            let mut group: Vec<GcCandidate> = Vec::new();
            let mut tasks = 0;
            for c in page.candidates {
                if self.kept_for_schedule(&c, &mut schedules).await? {
                    report.kept_for_schedules += 1;
                    continue;
                }
                tasks += c.tasks as usize;
                group.push(c);
                if tasks >= GC_TASKS_PER_BATCH {
                    self.delete_group(std::mem::take(&mut group), cutoff, report)
                        .await?;
                    tasks = 0;
                }
            }
            if !group.is_empty() {
                self.delete_group(group, cutoff, report).await?;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// Marks the group's workflows and deletes them (and any left marked), a batch at a
    /// time, until none is left marked.
    async fn delete_group(
        &self,
        group: Vec<GcCandidate>,
        cutoff: Timestamp,
        report: &mut GcReport,
    ) -> Result<(), EngineError> {
        let finished: HashMap<WorkflowId, Timestamp> =
            group.iter().map(|c| (c.workflow, c.finished_at)).collect();
        let marked = self
            .delete_batch(group.iter().map(|c| c.workflow).collect(), cutoff, report)
            .await?;
        for wf in marked {
            if let Some(at) = finished.get(&wf) {
                report.finished(*at);
            }
        }
        Ok(())
    }

    /// Runs deletion batches, the first marking `mark`, until no marked workflow is left;
    /// returns the workflows the first one marked.
    async fn delete_batch(
        &self,
        mark: Vec<WorkflowId>,
        cutoff: Timestamp,
        report: &mut GcReport,
    ) -> Result<Vec<WorkflowId>, EngineError> {
        let store = &self.inner.store;
        let mut batch = GcBatch {
            mark,
            finished_before: cutoff,
            now: self.now(),
            tasks_max: GC_TASKS_PER_BATCH,
        };
        let mut marked = Vec::new();
        loop {
            let out = store.gc_workflows(batch.clone()).await?;
            marked.extend(out.marked.iter().copied());
            report.workflows += out.workflows.len() as u64;
            report.tasks += out.tasks;
            report.history += out.history;
            report.signals += out.signals;
            report.artifacts_released += out.artifacts_released;
            for wf in &out.workflows {
                debug!(workflow = %wf, "workflow deleted by retention");
            }
            report.pages_reclaimed += store.reclaim_space(GC_VACUUM_PAGES_PER_BATCH).await?;
            if !out.more || self.stopping() {
                return Ok(marked);
            }
            batch.mark.clear();
            tokio::time::sleep(GC_BATCH_PAUSE).await;
        }
    }

    /// Whether a finished workflow a schedule tick submitted must stay: its schedule has
    /// not moved past the tick, so the tick may fire again (after a crash between submitting
    /// and moving on), and would find its idempotency key gone.
    async fn kept_for_schedule(
        &self,
        c: &GcCandidate,
        schedules: &mut HashMap<String, Option<Timestamp>>,
    ) -> Result<bool, EngineError> {
        let Some((name, tick)) = c.idempotency_key.as_deref().and_then(schedule_tick) else {
            return Ok(false);
        };
        let next = match schedules.get(name) {
            Some(next) => *next,
            None => {
                let next = self
                    .inner
                    .store
                    .schedule(name.to_owned())
                    .await?
                    .map(|s| s.next_fire_at);
                schedules.insert(name.to_owned(), next);
                next
            }
        };
        Ok(next.is_some_and(|next| tick >= next.0))
    }

    /// Counts what deleting the finished workflows past the retention would delete.
    async fn preview_workflows(&self, report: &mut GcReport) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let mut refs: BTreeMap<ArtifactRef, u64> = BTreeMap::new();
        let mut count = |report: &mut GcReport, preview: baton_store::GcPreview| {
            report.tasks += preview.tasks;
            report.history += preview.history;
            report.signals += preview.signals;
            for (artifact, n) in preview.artifact_refs {
                *refs.entry(artifact).or_default() += n;
            }
        };
        let marked = store.gc_marked(baton_store::PAGE_ROWS_MAX).await?;
        if !marked.is_empty() {
            report.workflows += marked.len() as u64;
            count(report, store.gc_preview(marked).await?);
        }
        if let Some(cutoff) = report.finished_before {
            let mut schedules = HashMap::new();
            let mut after = None;
            loop {
                let page = store
                    .gc_candidates(GcScan {
                        finished_before: cutoff,
                        after,
                        limit: GC_WORKFLOWS_PER_SCAN,
                    })
                    .await?;
                let mut going = Vec::new();
                for c in &page.candidates {
                    if self.kept_for_schedule(c, &mut schedules).await? {
                        report.kept_for_schedules += 1;
                    } else {
                        report.workflows += 1;
                        report.finished(c.finished_at);
                        going.push(c.workflow);
                    }
                }
                if !going.is_empty() {
                    count(report, store.gc_preview(going).await?);
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        // An artifact goes when every reference to it is among those going.
        let grace_before = self
            .now()
            .0
            .saturating_sub(self.inner.config.artifact_unreferenced_grace_ms);
        let artifacts: Vec<ArtifactRef> = refs.keys().copied().collect();
        for chunk in artifacts.chunks(baton_store::PAGE_ROWS_MAX) {
            for a in store.artifact_refs(chunk.to_vec()).await? {
                if refs.get(&a.artifact) == Some(&a.refs) {
                    report.artifacts_released += 1;
                    if a.uploaded_at.0 < grace_before {
                        report.artifacts_deleted += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// The leading node's retention: a pass every `EngineConfig::retention_interval_ms`
    /// ([`RETENTION_INTERVAL_MS`]), logged when it deleted anything.
    pub(crate) async fn retention_loop(&self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        while !self.stopping() {
            let every = Duration::from_millis(self.inner.config.retention_interval_ms.max(1));
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => continue,
            }
            match self.inner.store.try_lead().await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    warn!(error = %e, "cannot tell whether this node leads");
                    continue;
                }
            }
            match self.collect(GcOptions::default()).await {
                Ok(r) if r.any() => info!(
                    workflows = r.workflows,
                    tasks = r.tasks,
                    history = r.history,
                    signals = r.signals,
                    artifacts = r.artifacts_deleted,
                    agents = r.agents,
                    audit = r.audit,
                    fair_groups = r.fair_groups,
                    concurrency_keys = r.concurrency_keys,
                    pages_reclaimed = r.pages_reclaimed,
                    oldest = r.oldest.map(|t| t.0),
                    newest = r.newest.map(|t| t.0),
                    "retention pass"
                ),
                Ok(_) => debug!("retention pass: nothing to delete"),
                Err(e) => warn!(error = %e, "retention pass failed; the next one goes on"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_ticks_are_read_from_their_keys() {
        assert_eq!(
            schedule_tick("schedule:digest:1700000000000"),
            Some(("digest", 1_700_000_000_000))
        );
        assert_eq!(schedule_tick("schedule:a:b:42"), Some(("a:b", 42)));
        assert_eq!(schedule_tick("trigger:digest:1"), None);
        assert_eq!(schedule_tick("schedule:digest:soon"), None);
    }

    #[test]
    fn a_retention_of_zero_keeps_forever() {
        assert_eq!(before(Timestamp(1_000), 0), None);
        assert_eq!(before(Timestamp(1_000), 300), Some(Timestamp(700)));
        assert_eq!(before(Timestamp(100), 300), Some(Timestamp(0)));
    }
}
