//! What the API reads, through the engine: tasks and their history, why a task waits,
//! workflows, graphs, agents, counts and metrics. The server never reads the store itself.

use std::collections::{HashMap, HashSet};

use baton_core::{
    AgentId, CancelReason, Capability, HistoryEntry, Labels, State, StateKind, Task, TaskId,
    TaskKey, Timestamp, WorkflowId,
};
use baton_store::{
    AgentRecord, Dependency, Edge, FlowHold, HistoryMark, IdMatches, IdSuffix, StateCounts, Store,
    TaskFilter, TaskPages, WorkflowRecord,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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
    /// Ready, and waiting for a signal sent to its workflow, until its deadline if it has one.
    Signal {
        signal: String,
        until: Option<Timestamp>,
    },
    /// Released, and waiting until a time: its `not_before` or `delay_ms` (`sleeps: false`),
    /// or the end of its sleep.
    Timer { until: Timestamp, sleeps: bool },
    /// Ready, and held back by a named rate limit that has `available` of the `units` it draws
    /// until `until`.
    RateLimited {
        limit: String,
        units: u64,
        available: u64,
        until: Timestamp,
    },
    /// Ready, and held back by a concurrency key: `held` tasks with it are assigned or
    /// executing, and the task allows `max`.
    ConcurrencyFull { key: String, held: u64, max: u32 },
    /// Paused by an operator: no agent is handed it and its timers stand still until it is
    /// resumed (an agent already running it may finish).
    Paused {
        by: String,
        /// Why the operator paused it.
        why: String,
        since: Timestamp,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDependency {
    pub key: TaskKey,
    pub id: TaskId,
    pub state: StateKind,
}

/// What the task view shows: the task, read without decoding its input (see
/// [`baton_store::TaskForView`]), and what is known about it.
#[derive(Clone, Debug)]
pub struct TaskDetail {
    /// The task, with its spec's `input` left `null`: the input is in `spec_json`.
    pub task: Task,
    /// The spec as stored (JSON), input included: a view shows it as it is.
    pub spec_json: Box<serde_json::value::RawValue>,
    /// The first entries of its history (at most the number asked for); the `submitted` one
    /// shares `task`'s spec.
    pub history: Vec<HistoryEntry>,
    pub waiting: Option<WaitReason>,
    pub dependencies: Vec<Dependency>,
    pub dependents: Vec<TaskId>,
    /// Its compensation task, once created.
    pub compensation: Option<TaskId>,
    /// The task it compensates, if it is a compensation task.
    pub compensates: Option<TaskId>,
    /// The upstream task whose failure cancelled it.
    pub upstream_cause: Option<TaskId>,
}

/// A workflow's tasks and edges, for drawing its graph.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowGraph {
    pub tasks: Vec<Task>,
    pub edges: Vec<Edge>,
    /// Each task that another made: a sub-task (decomposition) to the task that added it, a
    /// fan-out item (`KEY[i]`) to its `for_each` task.
    pub parents: HashMap<TaskId, TaskId>,
    /// Each compensation task to the task it compensates (the one whose spec names its key).
    pub compensates: HashMap<TaskId, TaskId>,
}

impl<S: Store + 'static> Engine<S> {
    /// The task as it stands.
    pub async fn task(&self, id: TaskId) -> Result<Task, EngineError> {
        self.load(id).await
    }

    /// The task with its first `history_max` history entries, why it waits, its neighbours
    /// in the graph and the tasks it points to. Its input is not decoded (a view shows the
    /// spec as stored): a read costs about the size of the input, whatever its shape.
    pub async fn task_detail(
        &self,
        id: TaskId,
        history_max: usize,
    ) -> Result<TaskDetail, EngineError> {
        let store = &self.inner.store;
        let baton_store::TaskForView {
            task,
            spec_json,
            history,
        } = store
            .task_for_view(id, 0, history_max)
            .await?
            .ok_or(EngineError::TaskNotFound(id))?;
        let waiting = self.wait_reason(&task).await?;
        let dependencies = store.dependencies(id).await?;
        let dependents = store.dependents(id).await?;
        let compensation = match &task.spec.compensation {
            Some(c) => self.id_of(&task, c.key.clone()).await?,
            None => None,
        };
        let upstream_cause = match &task.state {
            State::Cancelled {
                reason: CancelReason::Upstream { upstream },
            } => self.id_of(&task, upstream.clone()).await?,
            _ => None,
        };
        let compensates = self.compensated_by(&task, &spec_json).await?;
        Ok(TaskDetail {
            task,
            spec_json,
            history,
            waiting,
            dependencies,
            dependents,
            compensation,
            compensates,
            upstream_cause,
        })
    }

    async fn id_of(&self, task: &Task, key: TaskKey) -> Result<Option<TaskId>, EngineError> {
        let found = self.inner.store.task_by_key(task.workflow, key).await?;
        Ok(found.map(|t| t.id))
    }

    /// The task `task` compensates: the one named by the input the effect runner gave it, if
    /// that task does declare `task` as its compensation (so that a user's input that merely
    /// looks the same names nothing).
    async fn compensated_by(
        &self,
        task: &Task,
        spec_json: &RawValue,
    ) -> Result<Option<TaskId>, EngineError> {
        let Some(origin) = crate::background::compensated_task(spec_json) else {
            return Ok(None);
        };
        let Some(origin) = self.inner.store.task(origin).await? else {
            return Ok(None);
        };
        let declares = origin.workflow == task.workflow
            && origin
                .spec
                .compensation
                .as_ref()
                .is_some_and(|c| c.key == task.spec.key);
        Ok(declares.then_some(origin.id))
    }

    /// One page of tasks, for listing: each spec's `input` is left `null`, not decoded.
    pub async fn tasks(&self, filter: TaskFilter) -> Result<Vec<Task>, EngineError> {
        Ok(self.inner.store.tasks_for_view(filter).await?)
    }

    pub async fn workflow(&self, id: WorkflowId) -> Result<WorkflowRecord, EngineError> {
        self.inner
            .store
            .workflow(id)
            .await?
            .ok_or(EngineError::WorkflowNotFound(id))
    }

    /// Workflows, newest first, created before `before` if given.
    pub async fn workflows(
        &self,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, EngineError> {
        Ok(self.inner.store.workflows(before, limit).await?)
    }

    /// Workflows carrying every label of `labels`, newest first, created before `before` if
    /// given.
    pub async fn workflows_labelled(
        &self,
        labels: &Labels,
        before: Option<WorkflowId>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, EngineError> {
        Ok(self
            .inner
            .store
            .workflows_labelled(labels, before, limit)
            .await?)
    }

    /// The tasks and workflows whose ids end in `suffix` (hex digits, hyphens ignored), at
    /// most `limit` of each: what a short id an operator typed stands for.
    pub async fn ids_ending(&self, suffix: &str, limit: usize) -> Result<IdMatches, EngineError> {
        let suffix = IdSuffix::parse(suffix).ok_or_else(|| EngineError::Invalid {
            field: "suffix".into(),
            expected: IdSuffix::EXPECTED.into(),
        })?;
        Ok(self.inner.store.ids_ending(suffix, limit).await?)
    }

    /// Tasks per state, of one workflow or of all.
    pub async fn counts(&self, workflow: Option<WorkflowId>) -> Result<StateCounts, EngineError> {
        Ok(self.inner.store.counts(workflow).await?)
    }

    /// Every task of the workflow (each spec's `input` left `null`, not decoded: a graph
    /// does not show inputs) and every edge between them.
    pub async fn workflow_graph(&self, id: WorkflowId) -> Result<WorkflowGraph, EngineError> {
        self.workflow(id).await?;
        let mut tasks = Vec::new();
        let mut pages = TaskPages::new(TaskFilter {
            workflow: Some(id),
            ..TaskFilter::default()
        });
        while let Some(page) = pages.next_for_view(&self.inner.store).await? {
            tasks.extend(page);
        }
        let edges = self.inner.store.workflow_edges(id).await?;
        let by_key: HashMap<&TaskKey, TaskId> = tasks.iter().map(|t| (&t.spec.key, t.id)).collect();
        let mut parents = HashMap::new();
        let mut compensates = HashMap::new();
        for t in &tasks {
            if let Some(c) = t
                .spec
                .compensation
                .as_ref()
                .and_then(|c| by_key.get(&c.key))
            {
                compensates.insert(*c, t.id);
            }
            if t.spec.for_each.is_some() {
                for i in 0..t.expanded.unwrap_or(0) as usize {
                    if let Some(item) = by_key.get(&baton_core::template::item_key(&t.spec.key, i))
                    {
                        parents.insert(*item, t.id);
                    }
                }
            }
        }
        for (parent, keys) in self.inner.store.subtasks_added(id).await? {
            for key in keys {
                if let Some(child) = by_key.get(&key) {
                    parents.insert(*child, parent);
                }
            }
        }
        Ok(WorkflowGraph {
            tasks,
            edges,
            parents,
            compensates,
        })
    }

    /// A page of the history of a workflow's tasks (those with ids after `after`, at most
    /// `tasks_max`), without events' data or heartbeats: what a timeline draws.
    pub async fn workflow_history(
        &self,
        id: WorkflowId,
        after: Option<TaskId>,
        tasks_max: usize,
    ) -> Result<Vec<HistoryMark>, EngineError> {
        self.workflow(id).await?;
        Ok(self
            .inner
            .store
            .workflow_history(id, after, tasks_max)
            .await?)
    }

    /// The tasks leased to the agent now.
    pub async fn leased_to(&self, agent: AgentId) -> Result<Vec<TaskId>, EngineError> {
        Ok(self.inner.store.leased_to(agent).await?)
    }

    /// read from the store now.
    pub async fn metrics_text(&self) -> Result<String, EngineError> {
        let counts = self.inner.store.counts(None).await?;
        let online = self
            .agents()
            .await?
            .iter()
            .filter(|a| self.agent_online(a))
            .count();
        // Every event stream listens for workflows ending; nothing else does.
        let subscribers = self.inner.workflow_events.receiver_count();
        let bytes = self.inner.store.size_bytes().await?;
        Ok(self
            .inner
            .metrics
            .encode(counts, online, subscribers, bytes))
    }

    /// What a named rate limit or concurrency key of the pending task says about it, if one
    /// holds it back.
    async fn flow_hold(&self, task: &Task) -> Result<Option<WaitReason>, EngineError> {
        if task.spec.rate.is_empty() && task.spec.concurrency.is_empty() {
            return Ok(None);
        }
        Ok(
            match self.inner.store.flow_hold(task.id, self.now()).await? {
                None => None,
                Some(FlowHold::Rate {
                    key,
                    units,
                    available,
                    until,
                }) => Some(WaitReason::RateLimited {
                    limit: key,
                    units,
                    available,
                    until,
                }),
                Some(FlowHold::Concurrency { key, held, max }) => {
                    Some(WaitReason::ConcurrencyFull { key, held, max })
                }
            },
        )
    }

    pub async fn wait_reason(&self, task: &Task) -> Result<Option<WaitReason>, EngineError> {
        if let (Some(p), None) = (&task.paused, task.state.lease()) {
            return Ok(Some(WaitReason::Paused {
                by: p.by.clone(),
                why: p.reason.clone(),
                since: p.at,
            }));
        }
        if task.kind() == StateKind::Pending {
            if let Some(held) = self.flow_hold(task).await? {
                return Ok(Some(held));
            }
        }
        Ok(match &task.state {
            State::Blocked if task.wake_at.is_some() => Some(WaitReason::Timer {
                until: task.wake_at.unwrap_or_default(),
                sleeps: task.spec.sleep_ms.is_some(),
            }),
            State::Pending if task.spec.wait_for.is_some() => Some(WaitReason::Signal {
                signal: task
                    .spec
                    .wait_for
                    .as_ref()
                    .map(|w| w.signal.clone())
                    .unwrap_or_default(),
                until: task.deadlines.signal,
            }),
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

    /// A page of the task's history for showing: the `submitted` entry's spec has its input
    /// left `null` (the task's view shows the spec, input included, once). `history` reads
    /// entries exactly as recorded.
    pub async fn history_for_view(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        let read = self.inner.store.task_for_view(id, after, limit).await?;
        Ok(read.ok_or(EngineError::TaskNotFound(id))?.history)
    }

    /// History entries with `seq > after`, at most `limit`, exactly as recorded.
    pub async fn history(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        Ok(self.inner.store.history(id, after, limit).await?)
    }
}
