//! What operators do to tasks and workflows: cancel, retry a final failure. Each is an event
//! of the lifecycle, with the operator as its actor, decided by the core like any other.

use baton_core::{Event, Task, TaskId, WorkflowId};
use baton_store::Store;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::transition::Cause;

impl<S: Store + 'static> Engine<S> {
    pub async fn cancel_task(
        &self,
        id: TaskId,
        by: String,
        reason: String,
    ) -> Result<Task, EngineError> {
        self.transition(
            id,
            |_| {
                Some(Event::CancelRequested {
                    requested_by: by.clone(),
                    reason: reason.clone(),
                })
            },
            Cause::default(),
        )
        .await
    }

    /// Cancels every task of the workflow that has not ended; returns how many it cancelled.
    pub async fn cancel_workflow(
        &self,
        workflow: WorkflowId,
        by: String,
        reason: String,
    ) -> Result<usize, EngineError> {
        if self.inner.store.workflow(workflow).await?.is_none() {
            return Err(EngineError::WorkflowNotFound(workflow));
        }
        let mut cancelled = 0;
        for task in self.workflow_tasks(workflow).await? {
            if task.state.is_terminal() {
                continue;
            }
            match self.cancel_task(task.id, by.clone(), reason.clone()).await {
                Ok(_) => cancelled += 1,
                Err(EngineError::Rejected(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(cancelled)
    }

    /// An operator reopens a task that failed for good; the dependents its failure cancelled
    /// come back too.
    pub async fn retry_task(&self, id: TaskId, by: String) -> Result<Task, EngineError> {
        self.transition(
            id,
            |_| {
                Some(Event::RetryRequested {
                    requested_by: by.clone(),
                })
            },
            Cause::default(),
        )
        .await
    }
}
