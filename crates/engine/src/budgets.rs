//! What agents spend, and the budgets that stop a workflow from spending more: each usage report
//! is summed into its workflow's usage in the report's own transaction (see
//! [`baton_store::TransitionRecord::usage_added`]); after it commits, the workflow's budgets are
//! read, and a budget reached applies its policy: the workflow pauses, taking its running tasks
//! back from their agents (claims pass its tasks by from that commit on, and an agent looping on
//! a task is told to stop at its next report), or its open tasks fail or are cancelled. The
//! actor is `budget`, and the reason says which budget and what was spent.

use baton_core::usage::{check_units, reached};
use baton_core::{Budget, BudgetPolicy, Budgets, ErrorReport, Event, Task, Usage, WorkflowId};
use baton_store::{AuditEntry, ControlWrite, Store, WorkflowRecord};
use serde_json::json;
use tracing::warn;

use crate::control::Operator;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::outcome::WorkflowStatus;

/// The actor of what a budget does.
pub const BUDGET_ACTOR: &str = "budget";

/// The error kind of the tasks a `fail` budget fails.
pub const BUDGET_EXCEEDED: &str = "budget_exceeded";

/// Checks budgets given at `field`: well-formed unit names, and limits above zero.
pub fn check_budgets(budgets: &Budgets, field: &str) -> Result<(), EngineError> {
    check_units(budgets.keys(), field).map_err(|(f, e)| EngineError::invalid(f, e))?;
    for (unit, b) in budgets {
        if b.limit.0 == 0 {
            return Err(EngineError::invalid(
                format!("{field}.{unit}.limit"),
                "a limit above 0",
            ));
        }
    }
    Ok(())
}

/// Checks a usage report given at `field`: well-formed unit names (amounts are checked as they
/// are read).
pub fn check_usage(usage: &Usage, field: &str) -> Result<(), EngineError> {
    check_units(usage.keys(), field).map_err(|(f, e)| EngineError::invalid(f, e))
}

/// Why a budget holds the workflow, in words: "budget usd 5 reached (5.03)".
fn reached_text(unit: &str, budget: &Budget, spent: baton_core::Amount) -> String {
    format!("budget {unit} {} reached ({spent})", budget.limit)
}

impl<S: Store + 'static> Engine<S> {
    /// What the workflow's agents have spent, per unit.
    pub async fn workflow_usage(&self, workflow: WorkflowId) -> Result<Usage, EngineError> {
        Ok(self.inner.store.workflow_usage(workflow).await?)
    }

    /// What the agents of the workflows carrying the label `(key, value)` have spent (of every
    /// workflow with `None`).
    pub async fn usage_labelled(
        &self,
        label: Option<(String, String)>,
    ) -> Result<Usage, EngineError> {
        Ok(self.inner.store.usage_labelled(label).await?)
    }

    /// Replaces the workflow's budgets (an operator's action, audited); one already reached
    /// applies at once. A workflow a budget paused stays paused: resume it once its budgets
    /// allow.
    pub async fn set_budgets(
        &self,
        workflow: WorkflowId,
        op: Operator,
        budgets: Budgets,
    ) -> Result<WorkflowRecord, EngineError> {
        check_budgets(&budgets, "budgets")?;
        let before = self
            .inner
            .store
            .workflow(workflow)
            .await?
            .ok_or(EngineError::WorkflowNotFound(workflow))?;
        let audit = AuditEntry {
            id: 0,
            at: self.now(),
            actor: op.by.clone(),
            action: "budgets".into(),
            workflow: Some(workflow),
            task: None,
            reason: op.reason.clone(),
            detail: json!({"before": before.budgets, "after": budgets}).to_string(),
        };
        self.inner
            .store
            .control(ControlWrite {
                records: Vec::new(),
                workflow_pause: None,
                budgets: Some((workflow, budgets)),
                audit: Some(audit),
            })
            .await?;
        // Budgets lowered under what was spent apply now, not at the next report.
        self.enforce_budgets(workflow).await;
        self.workflow(workflow).await
    }

    /// The budget of the workflow its usage has reached, if one has: the text that says so.
    pub(crate) async fn budget_reached(
        &self,
        wf: &WorkflowRecord,
    ) -> Result<Option<(BudgetPolicy, String)>, EngineError> {
        if wf.budgets.is_empty() {
            return Ok(None);
        }
        let spent = self.inner.store.workflow_usage(wf.id).await?;
        Ok(reached(&wf.budgets, &spent).map(|(unit, b, s)| (b.policy, reached_text(unit, b, s))))
    }

    /// After a usage report on one of its tasks committed: applies the policy of a budget the
    /// workflow has reached. Its failure is logged, not the report's: the report is committed.
    pub(crate) async fn enforce_budgets(&self, workflow: WorkflowId) {
        if let Err(e) = self.try_enforce_budgets(workflow).await {
            warn!(%workflow, error = %e, "a workflow's budget could not be applied");
        }
    }

    async fn try_enforce_budgets(&self, workflow: WorkflowId) -> Result<(), EngineError> {
        let Some(wf) = self.inner.store.workflow(workflow).await? else {
            return Ok(());
        };
        let Some((policy, why)) = self.budget_reached(&wf).await? else {
            return Ok(());
        };
        if policy == BudgetPolicy::Pause && wf.paused.is_some() {
            return Ok(());
        }
        // A workflow that has ended is left as it ended.
        let counts = self.inner.store.counts(Some(workflow)).await?;
        if self.workflow_status(workflow, &counts).await? != WorkflowStatus::Running {
            return Ok(());
        }
        let op = Operator::new(BUDGET_ACTOR, why.clone())?;
        match policy {
            BudgetPolicy::Pause => self.pause_workflow(workflow, op, true).await.map(drop),
            BudgetPolicy::Cancel => self
                .cancel_workflow(workflow, op.by, op.reason)
                .await
                .map(drop),
            BudgetPolicy::Fail => {
                let make = |t: &Task| {
                    (!t.state.is_terminal()).then(|| Event::FailRequested {
                        requested_by: BUDGET_ACTOR.into(),
                        reason: why.clone(),
                        error: Some(ErrorReport {
                            kind: BUDGET_EXCEEDED.into(),
                            message: why.clone(),
                            retryable: false,
                        }),
                    })
                };
                self.fail_workflow(workflow, &make, &op).await.map(drop)
            }
        }
    }
}
