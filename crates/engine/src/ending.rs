//! Workflows ending, told to this node's subscribers: every node watches the transitions it
//! publishes (its own and the other nodes'), and after a task ends it reads its workflow's
//! status (at most once per workflow every [`ENDING_CHECK_MS`], however many tasks end), then
//! says once that the workflow ended, and again only after it was reopened and ended anew.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use baton_core::{StateKind, Timestamp, WorkflowId};
use baton_store::Store;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

use crate::engine::Engine;
use crate::outcome::WorkflowStatus;

/// How often the workflows whose tasks ended are looked at.
pub const ENDING_CHECK_MS: u64 = 100;
/// Workflows remembered as announced (so as not to announce them twice); the oldest are
/// forgotten past it.
const ANNOUNCED_MAX: usize = 16_384;
/// Subscribers' backlog of workflow events before the slowest one lags.
pub(crate) const WORKFLOW_EVENTS_MAX: usize = 1_024;

/// A workflow ended: every task of it has ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowEvent {
    pub workflow: WorkflowId,
    /// `completed`, `failed` or `cancelled`.
    pub status: WorkflowStatus,
    /// When this node saw it end.
    pub at: Timestamp,
}

impl<S: Store + 'static> Engine<S> {
    /// Workflows ending, from now on.
    pub fn subscribe_workflows(&self) -> broadcast::Receiver<WorkflowEvent> {
        self.inner.workflow_events.subscribe()
    }

    /// Watches the transitions published on this node for tasks ending, and announces the
    /// workflows that have ended.
    pub(crate) async fn ending_loop(&self) {
        let mut transitions = self.subscribe();
        let mut shutdown = self.inner.shutdown.subscribe();
        let mut dirty: HashSet<WorkflowId> = HashSet::new();
        let mut announced: HashMap<WorkflowId, WorkflowStatus> = HashMap::new();
        let mut order: VecDeque<WorkflowId> = VecDeque::new();
        let mut tick = tokio::time::interval(Duration::from_millis(ENDING_CHECK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.stopping() {
            tokio::select! {
                next = transitions.recv() => match next {
                    Ok(ev) => {
                        let ended = matches!(
                            ev.to,
                            StateKind::Completed | StateKind::Failed | StateKind::Cancelled
                        );
                        if ended {
                            dirty.insert(ev.workflow);
                        } else {
                            // Reopened (or still going): its next end is news again.
                            announced.remove(&ev.workflow);
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick(), if !dirty.is_empty() => {
                    for workflow in std::mem::take(&mut dirty) {
                        let status = match self.status_of(workflow).await {
                            Ok(status) => status,
                            Err(e) => {
                                warn!(%workflow, error = %e, "cannot read a workflow's status");
                                continue;
                            }
                        };
                        if status == WorkflowStatus::Running
                            || announced.get(&workflow) == Some(&status)
                        {
                            continue;
                        }
                        if announced.insert(workflow, status).is_none() {
                            order.push_back(workflow);
                        }
                        if order.len() > ANNOUNCED_MAX {
                            if let Some(old) = order.pop_front() {
                                announced.remove(&old);
                            }
                        }
                        let _ = self.inner.workflow_events.send(WorkflowEvent {
                            workflow,
                            status,
                            at: self.now(),
                        });
                    }
                }
                _ = shutdown.changed() => {}
            }
        }
    }

    /// The workflow's status; while a task of it is open, without counting its tasks.
    async fn status_of(&self, workflow: WorkflowId) -> Result<WorkflowStatus, crate::EngineError> {
        if self.inner.store.workflow_open(workflow).await? {
            return Ok(WorkflowStatus::Running);
        }
        let counts = self.inner.store.counts(Some(workflow)).await?;
        self.workflow_status(workflow, &counts).await
    }
}
