//! Retention, as the store does it: which workflows have finished for good, the bounded
//! batches that delete them with everything that is theirs, and the pruning of rows that only
//! serve live work. The engine decides when and how much ([`crate::Store::gc_workflows`] and
//! [`crate::Store::gc_prune`] are each one short write); the store decides, inside that write,
//! whether a workflow may still go.
//!
//! A workflow **has finished** when none of its tasks can move again by itself: every task is
//! completed, cancelled or failed for good (no retry scheduled), none is paused, the workflow
//! is not paused, and no effect of its tasks waits in the outbox (a compensation still to
//! create, dependents still to cancel or revive). It may be deleted once its last task changed
//! before the cutoff. Deleting one takes several batches when it is big: the first batch
//! **marks** it (`workflows.deleting`), after checking again, in the same transaction, that it
//! has finished; from then on operators' controls and submissions into it are refused as if it
//! did not exist (so nothing can reopen a task under the deletion), reads no longer show it,
//! and each batch deletes up to a bound of its tasks (with their history, spec, edges, outbox
//! rows and artifact references); the batch that finds it empty deletes the workflow itself
//! with its labels, usage and signals. A deletion cut short (a crash between batches) is
//! resumed by the next batch, whatever it was asked to mark.
//!
//! An artifact a deleted task referred to, once nothing refers to it any more, is unreferenced
//! again: the artifact sweep deletes it once its latest upload is older than the grace (the
//! time an upload has to be referred to), as it does for any unreferenced artifact.

use baton_core::{ArtifactRef, Timestamp, WorkflowId};

/// Where a scan of finished workflows goes on from: the last workflow it looked at, by
/// `(created_at, id)`.
pub type GcCursor = (Timestamp, WorkflowId);

/// A page of the scan for finished workflows: those created before `finished_before` (one
/// created later cannot have finished before it), oldest first, after `after`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcScan {
    /// Workflows whose last task changed before this may go.
    pub finished_before: Timestamp,
    pub after: Option<GcCursor>,
    /// Workflows looked at, at most (and at most [`crate::PAGE_ROWS_MAX`]).
    pub limit: usize,
}

/// What a page of the scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPage {
    /// The workflows of the page that have finished before the cutoff.
    pub candidates: Vec<GcCandidate>,
    /// Where the next page starts; `None` once every workflow created before the cutoff was
    /// looked at.
    pub next: Option<GcCursor>,
}

/// A workflow that finished before the cutoff: it may be deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcCandidate {
    pub workflow: WorkflowId,
    pub name: String,
    pub idempotency_key: Option<String>,
    pub created_at: Timestamp,
    /// When its last task changed (its creation, if it has no task).
    pub finished_at: Timestamp,
    pub tasks: u64,
}

/// One batch of deletion: marks the workflows of `mark` that still have finished before
/// `finished_before` (checked again in the batch's transaction), then deletes up to
/// `tasks_max` tasks of the marked workflows (these and any a batch cut short left marked),
/// and the workflows it empties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcBatch {
    pub mark: Vec<WorkflowId>,
    pub finished_before: Timestamp,
    /// When the batch runs: what the mark records.
    pub now: Timestamp,
    pub tasks_max: usize,
}

/// What a batch of deletion did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcDeleted {
    /// Workflows of the batch's `mark` it marked (the others had changed, or were gone).
    pub marked: Vec<WorkflowId>,
    /// Workflows it deleted (emptied of their tasks).
    pub workflows: Vec<WorkflowId>,
    pub tasks: u64,
    pub history: u64,
    pub signals: u64,
    /// Artifacts that no remaining task refers to any more: the sweep deletes them once their
    /// latest upload is older than the grace.
    pub artifacts_released: u64,
    /// Whether marked workflows remain to be deleted.
    pub more: bool,
}

/// What deleting some workflows would delete, read without changing anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPreview {
    pub tasks: u64,
    pub history: u64,
    pub signals: u64,
    /// The artifacts their tasks refer to, each with how many references those tasks hold
    /// (compared with [`crate::Store::artifact_refs`] to tell whether any other task does).
    pub artifact_refs: Vec<(ArtifactRef, u64)>,
}

/// An artifact's references, for a preview: how many tasks refer to it, and its latest upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactRefs {
    pub artifact: ArtifactRef,
    pub refs: u64,
    pub uploaded_at: Timestamp,
}

/// Rows that only serve live work, or have outlived their retention, to delete: at most
/// `limit` of each kind per call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcPrune {
    /// Agents last seen before this and holding no lease; `None` keeps them.
    pub agents_seen_before: Option<Timestamp>,
    /// Audit entries recorded before this; `None` keeps them.
    pub audit_before: Option<Timestamp>,
    /// Fairness groups whose last turn is at or before this pass (`fair_clock`'s, read at
    /// least a while before: see `Engine::collect`). A group's next turn is one after its last
    /// and never before the clock, so forgetting a group whose last turn the clock has reached
    /// changes no turn. `None` keeps them.
    pub fair_pass_upto: Option<i64>,
    /// Concurrency keys no task holds whose last slot was freed before this (a task taking
    /// one is never stamped before it was freed; long ago, that changes nothing).
    pub concurrency_freed_before: Timestamp,
    /// Unreferenced artifacts uploaded before this, counted by a dry run (the artifact sweep
    /// deletes them; [`crate::Store::gc_prune`] leaves them).
    pub artifacts_uploaded_before: Timestamp,
    pub limit: usize,
}

/// What [`crate::Store::gc_prune`] deleted, or with `dry_run` would delete.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPruned {
    pub agents: u64,
    pub audit: u64,
    pub fair_groups: u64,
    pub concurrency_keys: u64,
    /// Dry run only: unreferenced artifacts the sweep would delete.
    pub artifacts: u64,
}

impl GcPruned {
    /// Whether some kind reached the call's limit: call again.
    pub fn full(&self, limit: usize) -> bool {
        let limit = limit as u64;
        self.agents >= limit
            || self.audit >= limit
            || self.fair_groups >= limit
            || self.concurrency_keys >= limit
    }
}
