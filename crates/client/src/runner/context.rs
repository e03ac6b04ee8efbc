//! What a handler gets beside its task: the node it was claimed on, word of cancellation,
//! decomposition and progress. Shared by the handler, the runner's task and its heartbeats.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use baton_api::{ClaimedTask, ReportAnswer, WorkflowCreated};
use baton_core::{Amount, TaskSpec, Usage};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use super::{revoked, taken_back, Cancel};
use crate::Client;

/// What a handler gets beside its task: the node to talk to, and word of cancellation.
#[derive(Clone)]
pub struct TaskContext(pub(super) Arc<TaskShared>);

pub(super) struct TaskShared {
    task: ClaimedTask,
    client: Client,
    agent: Uuid,
    pub(super) cancel: watch::Sender<Option<Cancel>>,
    /// Heartbeats paused (a hung agent simulated).
    pub(super) silent: AtomicBool,
    /// What the handler has reported spending so far (sent with heartbeats and the outcome).
    usage: Mutex<Usage>,
}

impl TaskContext {
    pub(super) fn new(client: Client, agent: Uuid, task: ClaimedTask) -> TaskContext {
        TaskContext(Arc::new(TaskShared {
            task,
            client,
            agent,
            cancel: watch::channel(None).0,
            silent: AtomicBool::new(false),
            usage: Mutex::new(Usage::new()),
        }))
    }

    /// The task claimed, with its input and lease.
    pub fn task(&self) -> &ClaimedTask {
        &self.0.task
    }

    /// The node the task was claimed on, for reads and other calls about it.
    pub fn client(&self) -> &Client {
        &self.0.client
    }

    pub fn agent(&self) -> Uuid {
        self.0.agent
    }

    /// Resolves once the work must stop: the task was taken back, or the runner is stopping.
    /// The handler's outcome is then not reported.
    pub async fn cancelled(&self) -> Cancel {
        let mut rx = self.0.cancel.subscribe();
        let c = rx.wait_for(Option::is_some).await;
        c.ok().and_then(|c| c.clone()).unwrap_or(Cancel::Shutdown)
    }

    /// Why the work must stop, if it must.
    pub fn cancellation(&self) -> Option<Cancel> {
        self.0.cancel.borrow().clone()
    }

    pub(super) fn cancel(&self, why: Cancel) {
        self.0.cancel.send_if_modified(|c| {
            let first = c.is_none();
            if first {
                *c = Some(why);
            }
            first
        });
    }

    /// The result of the dependency `key`: from the claim answer, or read from the node when
    /// the answer withheld it over its size budget. `None` if `key` is not a dependency that
    /// completed.
    pub async fn upstream(&self, key: &str) -> crate::Result<Option<Value>> {
        match self.0.task.upstream.get(key) {
            None => Ok(None),
            Some(u) if u.result.is_some() => Ok(u.result.clone()),
            Some(_) => {
                let mut read = self.0.client.upstream(self.0.task.task, Some(key)).await?;
                Ok(read.remove(key).and_then(|u| u.result))
            }
        }
    }

    /// Decomposition: adds sub-tasks to the task's workflow (its dependents then wait for
    /// them too).
    pub async fn add_subtasks(&self, tasks: &[TaskSpec]) -> crate::Result<WorkflowCreated> {
        self.0
            .client
            .subtasks(&self.0.task, self.0.agent, tasks)
            .await
    }

    /// Sends a heartbeat with `progress` now. An answer that says the task was taken back
    /// cancels the work like a failed background heartbeat would.
    pub async fn progress(&self, progress: Value) -> crate::Result<ReportAnswer> {
        let answer = self
            .0
            .client
            .heartbeat_with_usage(&self.0.task, self.0.agent, Some(progress), &self.usage())
            .await;
        match &answer {
            Ok(a) => {
                if let Some(why) = revoked(&self.0.task, a) {
                    self.cancel(Cancel::Lost(why));
                }
            }
            Err(e) if taken_back(e) => {
                self.cancel(Cancel::Lost(e.code().unwrap_or("refused").to_owned()))
            }
            Err(_) => {}
        }
        answer
    }

    /// Adds `amount` of `unit` (e.g. `"tokens"`, `"usd"`) to what this task has spent: it goes
    /// to the server with the next heartbeat and with the outcome, and counts against the
    /// workflow's budgets. An amount that is not a number from 0 to 1e12 is ignored.
    pub fn report_usage(&self, unit: &str, amount: f64) {
        if let Some(a) = Amount::of(amount) {
            let mut usage = self.0.usage.lock().expect("not poisoned");
            let sum = usage.entry(unit.to_owned()).or_default();
            *sum = sum.saturating_add(a);
        }
    }

    /// What this task has reported spending so far.
    pub fn usage(&self) -> Usage {
        self.0.usage.lock().expect("not poisoned").clone()
    }

    /// Stops the background heartbeats, as a hung agent would: the lease then runs out at
    /// its heartbeat deadline. For demos and tests of the watchdog.
    pub fn pause_heartbeats(&self) {
        self.0.silent.store(true, Ordering::Relaxed);
    }
}
