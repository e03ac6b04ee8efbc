//! Where a workflow stands as a whole: running until every task has ended, then completed,
//! failed or cancelled; and, once it has ended, its result: its declared `outputs` with every
//! reference to a task's result resolved (a workflow that failed may still have one, when the
//! tasks its outputs refer to completed). Read from stored data when asked, so it needs no
//! bookkeeping of its own and follows operators' retries.

use std::collections::BTreeMap;

use baton_core::{template, CancelReason, State, StateKind, TaskKey, Unresolved, WorkflowId};
use baton_store::{StateCounts, Store, TaskFilter, WorkflowRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::Engine;
use crate::error::EngineError;

/// Where a workflow stands as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowStatus {
    /// A task has not ended: it waits, runs, or has a retry scheduled.
    Running,
    /// Every task completed.
    Completed,
    /// Every task ended, one of them failed for good.
    Failed,
    /// Every task ended, none failed, one was cancelled.
    Cancelled,
}

impl WorkflowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Completed => "completed",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }
}

/// A workflow's status and, once completed, its result.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowOutcome {
    pub status: WorkflowStatus,
    /// The declared outputs, resolved, once the workflow ended (absent without outputs).
    pub result: Option<Value>,
    /// The output reference that found nothing, if one did: then there is no result.
    pub unresolved: Option<Unresolved>,
}

/// Cancelled tasks read at a time to tell a real cancellation from superseded ones.
const CANCELLED_PAGE: usize = 64;

impl<S: Store + 'static> Engine<S> {
    /// The workflow's status from its tasks' counts (and, if some failed, whether one of them
    /// has a retry scheduled), and its result once completed.
    pub async fn workflow_outcome(
        &self,
        wf: &WorkflowRecord,
        counts: &StateCounts,
    ) -> Result<WorkflowOutcome, EngineError> {
        let status = self.workflow_status(wf.id, counts).await?;
        let mut outcome = WorkflowOutcome {
            status,
            result: None,
            unresolved: None,
        };
        let Some(outputs) = &wf.outputs else {
            return Ok(outcome);
        };
        if status == WorkflowStatus::Running {
            return Ok(outcome);
        }
        let outputs: BTreeMap<String, Value> = serde_json::from_str(outputs)
            .map_err(|e| EngineError::invalid("outputs", format!("stored outputs: {e}")))?;
        let mut results = BTreeMap::new();
        for value in outputs.values() {
            for r in template::references(value, "outputs").unwrap_or_default() {
                if results.contains_key(&r.from) {
                    continue;
                }
                if let Some(t) = self.inner.store.task_by_key(wf.id, r.from.clone()).await? {
                    if let State::Completed { result, .. } = t.state {
                        results.insert(r.from, result);
                    }
                }
            }
        }
        let lookup = |k: &TaskKey| results.get(k);
        let mut out = serde_json::Map::new();
        for (name, value) in &outputs {
            match template::resolve(value, &format!("outputs.{name}"), &lookup) {
                Ok(v) => {
                    out.insert(name.clone(), v);
                }
                Err(mut u) => {
                    if !results.contains_key(&u.from) {
                        u.reason = Some(format!("task `{}` did not complete", u.from));
                    }
                    outcome.unresolved = Some(u);
                    return Ok(outcome);
                }
            }
        }
        outcome.result = Some(Value::Object(out));
        Ok(outcome)
    }

    pub(crate) async fn workflow_status(
        &self,
        id: WorkflowId,
        counts: &StateCounts,
    ) -> Result<WorkflowStatus, EngineError> {
        let open = [
            StateKind::Blocked,
            StateKind::Pending,
            StateKind::Assigned,
            StateKind::Executing,
        ]
        .into_iter()
        .any(|s| counts.get(s) > 0);
        if open {
            return Ok(WorkflowStatus::Running);
        }
        if counts.get(StateKind::Failed) > 0 {
            return Ok(if counts.retrying() > 0 {
                WorkflowStatus::Running
            } else {
                WorkflowStatus::Failed
            });
        }
        if counts.get(StateKind::Cancelled) > 0 && self.cancelled_for_real(id).await? {
            return Ok(WorkflowStatus::Cancelled);
        }
        Ok(WorkflowStatus::Completed)
    }

    /// Whether a task of the workflow was cancelled other than superseded (a fan-out's item
    /// or a sub-task that a rerun retired does not count). Read in small pages without the
    /// tasks' inputs, stopping at the first: a workflow's status is read with every view of it.
    async fn cancelled_for_real(&self, id: WorkflowId) -> Result<bool, EngineError> {
        let mut after = None;
        loop {
            let page = self
                .inner
                .store
                .tasks_for_view(TaskFilter {
                    workflow: Some(id),
                    state: Some(StateKind::Cancelled),
                    after,
                    limit: CANCELLED_PAGE,
                })
                .await?;
            let real = page.iter().any(|t| {
                !matches!(
                    t.state,
                    State::Cancelled {
                        reason: CancelReason::Superseded { .. }
                    }
                )
            });
            if real {
                return Ok(true);
            }
            match page.last() {
                Some(last) if page.len() == CANCELLED_PAGE => after = Some(last.id),
                _ => return Ok(false),
            }
        }
    }
}
