//! Signals: a workflow's tasks that wait for one (`wait_for`) are completed, or failed, by what
//! an operator or an outside system sends (`POST /v1/workflows/{id}/signals/{name}`).
//!
//! A signal is stored first, then delivered as a `signal_received` transition of every task
//! of the workflow that waits for its name; the first delivery marks it delivered in the same
//! commit. A signal no task waits for is kept, and delivered to the next task that starts
//! waiting (its `AwaitSignal` effect looks for it). Sending stores before it looks for waiters,
//! and a task looks for kept signals after it is stored waiting, so one of the two always sees
//! the other; a signal stored by a node that crashed before delivering it is delivered by the
//! leader's periodic sweep.

use std::sync::atomic::Ordering;

use baton_core::{Event, StateKind, Task, TaskId, WorkflowId};
use baton_store::{NewSignal, SignalRecord, Store, TaskFilter, PAGE_ROWS_MAX};
use serde_json::Value;
use tracing::{debug, info};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::transition::Cause;

/// How often the leader looks for kept signals whose task waits (after a crash between
/// storing a signal and delivering it).
pub const KEPT_SIGNALS_SWEEP_MS: u64 = 5_000;
/// Kept signals looked at per sweep.
const KEPT_SIGNALS_PER_SWEEP_MAX: usize = 256;
/// Longest rejection reason, in bytes.
pub const REJECT_REASON_LEN_MAX: usize = 4_096;

/// A signal as sent: data that completes the waiting tasks, or a rejection that fails them.
#[derive(Clone, Debug, PartialEq)]
pub enum SignalInput {
    Data(Value),
    Reject(String),
}

/// What sending a signal did.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalReceipt {
    pub signal: SignalRecord,
    /// `false`: the idempotency key was seen before; this is the first signal.
    pub created: bool,
    /// The tasks this send completed or failed (none when it was kept, or a repeat).
    pub delivered_to: Vec<Task>,
}

impl<S: Store + 'static> Engine<S> {
    /// Stores `name` sent to `workflow` and delivers it to every task waiting for it; kept
    /// for the next one when none waits. The same `idempotency_key` again applies once.
    pub async fn signal(
        &self,
        workflow: WorkflowId,
        name: &str,
        input: SignalInput,
        sent_by: &str,
        idempotency_key: Option<String>,
    ) -> Result<SignalReceipt, EngineError> {
        baton_core::spec::validate_path_name("name", name)
            .map_err(|e| EngineError::invalid(e.field, e.expected))?;
        let (data, reject) = match input {
            SignalInput::Data(data) => {
                self.check_payloads([("data".to_owned(), &data)]).await?;
                (data, None)
            }
            SignalInput::Reject(reason) => {
                if reason.trim().is_empty() || reason.len() > REJECT_REASON_LEN_MAX {
                    return Err(EngineError::invalid(
                        "reject",
                        format!("a reason of 1 to {REJECT_REASON_LEN_MAX} bytes"),
                    ));
                }
                (Value::Null, Some(reason))
            }
        };
        if self.inner.store.workflow(workflow).await?.is_none() {
            return Err(EngineError::WorkflowNotFound(workflow));
        }
        let hash = serde_json::to_vec(&(name, &data, &reject)).expect("JSON serialises");
        let put = self
            .inner
            .store
            .put_signal(NewSignal {
                workflow,
                name: name.to_owned(),
                data,
                reject,
                sent_by: sent_by.to_owned(),
                idempotency_key,
                request_hash: crate::intake::fingerprint(&hash),
                sent_at: self.now(),
            })
            .await?;
        self.inner.metrics.signal();
        let mut signal = put.signal;
        let delivered_to = match signal.delivered_at {
            None => self.deliver(&signal).await?,
            Some(_) => Vec::new(),
        };
        if let Some(first) = delivered_to.iter().map(|t| t.updated_at).min() {
            signal.delivered_at.get_or_insert(first);
        }
        if put.created {
            let op = crate::control::Operator {
                by: sent_by.to_owned(),
                reason: signal.reject.clone().unwrap_or_default(),
            };
            let detail = serde_json::json!({
                "signal": name,
                "id": signal.id,
                "rejects": signal.reject.is_some(),
                "delivered_to": delivered_to.iter().map(|t| t.id.to_string()).collect::<Vec<_>>(),
            });
            self.audit_only("signal", &op, Some(workflow), detail)
                .await?;
        }
        info!(
            workflow = %workflow,
            signal = name,
            id = signal.id,
            delivered = delivered_to.len(),
            repeat = !put.created,
            "signal received"
        );
        Ok(SignalReceipt {
            signal,
            created: put.created,
            delivered_to,
        })
    }

    /// Delivers `signal` to every task of its workflow waiting for it now.
    async fn deliver(&self, signal: &SignalRecord) -> Result<Vec<Task>, EngineError> {
        let mut delivered = Vec::new();
        let mut after: Option<TaskId> = None;
        loop {
            let page = self
                .inner
                .store
                .waiting_for_signal(
                    TaskFilter {
                        workflow: Some(signal.workflow),
                        after,
                        limit: PAGE_ROWS_MAX,
                        ..TaskFilter::default()
                    },
                    Some(signal.name.clone()),
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            let full = page.len() == PAGE_ROWS_MAX;
            for task in page {
                if let Some(t) = self.deliver_to(task, signal).await? {
                    delivered.push(t);
                }
            }
            if !full {
                break;
            }
        }
        Ok(delivered)
    }

    /// Applies `signal` to `task` if it still waits for it; `None` when it no longer does.
    async fn deliver_to(
        &self,
        task: Task,
        signal: &SignalRecord,
    ) -> Result<Option<Task>, EngineError> {
        let id = task.id;
        let event = Event::SignalReceived {
            signal: signal.name.clone(),
            id: signal.id,
            data: signal.data.clone(),
            reject: signal.reject.clone(),
            sent_by: signal.sent_by.clone(),
        };
        let waits = |t: &Task| {
            (t.kind() == StateKind::Pending
                && t.spec
                    .wait_for
                    .as_ref()
                    .is_some_and(|w| w.signal == signal.name))
            .then(|| event.clone())
        };
        let cause = Cause {
            after: signal.sent_at,
            ..Cause::default()
        };
        match self.transition_from(id, Some(task), waits, cause).await {
            Ok(t) if t.kind() != StateKind::Pending => Ok(Some(t)),
            Ok(_) => Ok(None),
            Err(EngineError::Rejected(r)) => {
                debug!(task = %id, "signal not delivered: {r}");
                Ok(None)
            }
            Err(EngineError::TaskNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A task started waiting for `name` (its `AwaitSignal` effect): hands it the oldest
    /// signal its workflow kept for that name, if any.
    pub(crate) async fn take_kept_signal(&self, id: TaskId, name: &str) -> Result<(), EngineError> {
        let task = self.load(id).await?;
        if task.kind() != StateKind::Pending {
            return Ok(());
        }
        let kept = self
            .inner
            .store
            .kept_signals(Some((task.workflow, name.to_owned())), 1)
            .await?;
        if let Some(signal) = kept.first() {
            self.deliver_to(task, signal).await?;
        }
        Ok(())
    }

    /// Delivers kept signals some task waits for; at most once per
    /// [`KEPT_SIGNALS_SWEEP_MS`] unless `now` is asked.
    pub(crate) async fn sweep_kept_signals(&self, now: bool) -> Result<(), EngineError> {
        let at = self.now().0;
        let last = self.inner.kept_signals_swept.load(Ordering::Relaxed);
        if !now && at < last.saturating_add(KEPT_SIGNALS_SWEEP_MS) {
            return Ok(());
        }
        self.inner.kept_signals_swept.store(at, Ordering::Relaxed);
        for signal in self
            .inner
            .store
            .kept_signals(None, KEPT_SIGNALS_PER_SWEEP_MAX)
            .await?
        {
            self.deliver(&signal).await?;
        }
        Ok(())
    }

    /// The signals sent to a workflow after signal id `after`, oldest first.
    pub async fn signals(
        &self,
        workflow: WorkflowId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<SignalRecord>, EngineError> {
        if self.inner.store.workflow(workflow).await?.is_none() {
            return Err(EngineError::WorkflowNotFound(workflow));
        }
        Ok(self.inner.store.signals(workflow, after, limit).await?)
    }

    /// Tasks waiting for a signal: of one workflow, or of all; by id after `after`.
    pub async fn waiting(&self, filter: TaskFilter) -> Result<Vec<Task>, EngineError> {
        Ok(self.inner.store.waiting_for_signal(filter, None).await?)
    }
}
