//! What the API reads, through the engine: tasks and their history, why a task waits,
//! workflows, graphs, agents, counts and metrics. The server never reads the store itself.

use std::collections::HashSet;

use baton_core::{
    AgentId, Capability, HistoryEntry, State, StateKind, Task, TaskId, TaskKey, Timestamp,
};
use baton_store::{AgentRecord, Store};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::EngineError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum WaitReason {
    /// Waiting for these dependencies to complete.
    Dependencies { open: Vec<OpenDependency> },
    /// Ready, but no online agent offers every required capability.
    NoCapableAgent { missing: Vec<Capability> },
    /// Ready; capable agents are online but busy.
    AgentsBusy { capable_online: usize },
    /// Leased to an agent; the lease runs until the next deadline.
    Leased {
        agent: AgentId,
        state: StateKind,
        until: Option<Timestamp>,
    },
    /// Failed and backing off before the next attempt.
    BackingOff {
        until: Timestamp,
        attempt: u32,
        max_attempts: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDependency {
    pub key: TaskKey,
    pub id: TaskId,
    pub state: StateKind,
}

impl<S: Store + 'static> Engine<S> {
    /// read from the store now.
    pub async fn metrics_text(&self) -> Result<String, EngineError> {
        let counts = self.inner.store.counts(None).await?;
        let online = self
            .inner
            .store
            .agents()
            .await?
            .iter()
            .filter(|a| self.agent_online(a))
            .count();
        let subscribers = self.inner.events.receiver_count();
        Ok(self.inner.metrics.encode(counts, online, subscribers))
    }

    pub async fn wait_reason(&self, task: &Task) -> Result<Option<WaitReason>, EngineError> {
        Ok(match &task.state {
            State::Blocked => {
                let open = self
                    .inner
                    .store
                    .dependencies(task.id)
                    .await?
                    .into_iter()
                    .filter(|d| d.state != StateKind::Completed)
                    .map(|d| OpenDependency {
                        key: d.key,
                        id: d.id,
                        state: d.state,
                    })
                    .collect();
                Some(WaitReason::Dependencies { open })
            }
            State::Pending => {
                let online: Vec<AgentRecord> = self
                    .inner
                    .store
                    .agents()
                    .await?
                    .into_iter()
                    .filter(|a| self.agent_online(a))
                    .collect();
                let capable = online
                    .iter()
                    .filter(|a| task.spec.capabilities.is_subset(&a.capabilities))
                    .count();
                if capable == 0 {
                    let offered: HashSet<&Capability> =
                        online.iter().flat_map(|a| a.capabilities.iter()).collect();
                    let mut missing: Vec<Capability> = task
                        .spec
                        .capabilities
                        .iter()
                        .filter(|c| !offered.contains(c))
                        .cloned()
                        .collect();
                    if missing.is_empty() {
                        missing = task.spec.capabilities.iter().cloned().collect();
                    }
                    Some(WaitReason::NoCapableAgent { missing })
                } else {
                    Some(WaitReason::AgentsBusy {
                        capable_online: capable,
                    })
                }
            }
            State::Assigned { lease } | State::Executing { lease, .. } => {
                Some(WaitReason::Leased {
                    agent: lease.agent,
                    state: task.kind(),
                    until: task.deadlines.next().map(|(_, at)| at),
                })
            }
            State::Failed {
                retry_at: Some(until),
                ..
            } => Some(WaitReason::BackingOff {
                until: *until,
                attempt: task.attempt,
                max_attempts: task.attempts_allowed,
            }),
            _ => None,
        })
    }

    pub async fn history(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        Ok(self.inner.store.history(id, after, limit).await?)
    }
}
