//! What operators do to tasks and workflows: cancel (a fan-out with its items), retry a final
//! failure. Each is an event of the lifecycle, with the operator as its actor, decided by the
//! core like any other.

use baton_core::{Event, StateKind, Task, TaskId, WorkflowId};
use baton_store::Store;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::transition::Cause;

impl<S: Store + 'static> Engine<S> {
    /// Cancels the task; a fan-out's items that have not ended are cancelled with it.
    pub async fn cancel_task(
        &self,
        id: TaskId,
        by: String,
        reason: String,
    ) -> Result<Task, EngineError> {
        let task = self.cancel_one(id, &by, &reason).await?;
        if task.expanded.is_some_and(|n| n > 0) {
            let prefix = format!("{}[", task.spec.key);
            for item in self.inner.store.dependencies(id).await? {
                let open = !matches!(item.state, StateKind::Completed | StateKind::Cancelled);
                if open && item.key.0.starts_with(&prefix) {
                    match self.cancel_one(item.id, &by, &reason).await {
                        Ok(_) | Err(EngineError::Rejected(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(task)
    }

    async fn cancel_one(&self, id: TaskId, by: &str, reason: &str) -> Result<Task, EngineError> {
        self.transition(
            id,
            |_| {
                Some(Event::CancelRequested {
                    requested_by: by.to_owned(),
                    reason: reason.to_owned(),
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
            // Each task on its own: a fan-out's items are among them.
            match self.cancel_one(task.id, &by, &reason).await {
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
