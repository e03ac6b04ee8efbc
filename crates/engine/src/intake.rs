//! Intake: workflows submitted (validated in full, then stored in one transaction) and
//! sub-tasks added to a running workflow by the agent executing their parent
//! (decomposition).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use baton_core::dag::TASKS_PER_WORKFLOW_MAX;
use baton_core::template;
use baton_core::{
    apply, validate_labels, AgentId, Budgets, CancelReason, Dag, Event, FencingToken, Labels,
    State, StateKind, Submission, Task, TaskId, TaskKey, TaskSpec, Timestamp, Transition,
    WorkflowId,
};
use baton_store::{
    Edge, NewTask, NewWorkflow, Store, StoreError, SubmitBatch, SubmitOutcome, TaskFilter,
    TaskPages, TransitionRecord, WorkflowRef,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::info;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::transition::CAS_RETRIES_MAX;
use crate::upstream::resolution;

/// Longest workflow name, in bytes.
pub const NAME_LEN_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRequest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    pub tasks: Vec<TaskSpec>,
    /// The workflow's result once it has completed: each value may hold references to its
    /// tasks' results (`{"$from": KEY, "pointer": …}`, KEY any task of the workflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<BTreeMap<String, Value>>,
    /// Labels the workflow carries (`baton_core::labels`): listed by, and scoping tokens to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Budgets on what its agents spend, per unit, each with what happens once it is reached.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub budgets: Budgets,
}

/// What a submission created (or, for a repeated idempotency key, had created).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowReceipt {
    pub workflow: WorkflowId,
    /// Task ids by key.
    pub tasks: Vec<(TaskKey, TaskId)>,
    /// `false` when an earlier submission with the same idempotency key is returned.
    pub created: bool,
}

impl<S: Store + 'static> Engine<S> {
    pub async fn submit_workflow(
        &self,
        req: WorkflowRequest,
    ) -> Result<WorkflowReceipt, EngineError> {
        validate_workflow(&req)?;
        self.check_payloads(task_payloads(&req.tasks)).await?;
        self.check_limit_refs(&req.tasks, "tasks").await?;
        let now = self.now();
        let workflow = WorkflowId(self.inner.ids.id());
        let request_hash = request_hash(&req);
        let ids: HashMap<TaskKey, TaskId> = req
            .tasks
            .iter()
            .map(|t| (t.key.clone(), TaskId(self.inner.ids.id())))
            .collect();
        let WorkflowRequest {
            budgets,
            name,
            idempotency_key,
            tasks: specs,
            outputs,
            labels,
        } = req;
        let mut tasks = Vec::with_capacity(specs.len());
        let mut edges = Vec::new();
        let mut transitions = Vec::with_capacity(specs.len());
        // Each spec moves into its task: a big submission holds one copy of it.
        for spec in specs {
            let id = ids[&spec.key];
            for dep in &spec.depends_on {
                edges.push(Edge {
                    dependency: ids[dep],
                    dependent: id,
                });
            }
            let (new, t) = new_task(
                workflow,
                id,
                spec,
                Vec::new(),
                &BTreeMap::new(),
                self.inner.ids.seed(),
                now,
            )?;
            tasks.push(new);
            transitions.push(t);
        }
        let batch = SubmitBatch {
            workflow: WorkflowRef::New(NewWorkflow {
                budgets,
                id: workflow,
                name,
                idempotency_key,
                request_hash,
                created_at: now,
                outputs: outputs
                    .as_ref()
                    .map(|o| serde_json::to_string(o).expect("outputs serialise")),
                labels,
            }),
            tasks,
            edges,
            transitions: Vec::new(),
        };
        match self.inner.store.submit(batch).await? {
            SubmitOutcome::Created { workflow } => {
                for t in &transitions {
                    self.after_commit(t, &Event::Submitted(submission_of(t)), None);
                }
                info!(workflow = %workflow, tasks = transitions.len(), "workflow submitted");
                let mut keys: Vec<(TaskKey, TaskId)> = ids.into_iter().collect();
                keys.sort_by_key(|(_, id)| *id);
                Ok(WorkflowReceipt {
                    workflow,
                    tasks: keys,
                    created: true,
                })
            }
            SubmitOutcome::Existing {
                workflow,
                mut tasks,
            } => {
                // The first submission's answer, exactly: its tasks, not those added since
                // (sub-tasks, expanded items, compensations). The request's keys are the
                // first's: its fingerprint matched.
                tasks.retain(|(key, _)| ids.contains_key(key));
                tasks.sort_by_key(|(_, id)| *id);
                Ok(WorkflowReceipt {
                    workflow,
                    tasks,
                    created: false,
                })
            }
        }
    }

    /// Decomposition: the agent executing `parent` adds sub-tasks to its workflow; the
    /// parent's dependents then also wait for every sub-task.
    pub async fn add_subtasks(
        &self,
        parent: TaskId,
        agent: AgentId,
        token: FencingToken,
        specs: Vec<TaskSpec>,
    ) -> Result<Vec<(TaskKey, TaskId)>, EngineError> {
        if specs.is_empty() {
            return Err(EngineError::invalid("tasks", "at least one sub-task"));
        }
        for (i, spec) in specs.iter().enumerate() {
            spec.validate()
                .map_err(|e| EngineError::invalid(format!("tasks[{i}].{}", e.field), e.expected))?;
            not_an_item_key(i, spec)?;
        }
        self.check_payloads(task_payloads(&specs)).await?;
        self.check_limit_refs(&specs, "tasks").await?;
        for _ in 0..CAS_RETRIES_MAX {
            let task = self.load(parent).await?;
            let pause = self.creation_pause(task.workflow).await?;
            let mut held = Vec::new();
            let mut created_again = Vec::new();
            let existing = self.workflow_tasks(task.workflow).await?;
            let by_key: HashMap<&TaskKey, &Task> =
                existing.iter().map(|t| (&t.spec.key, t)).collect();
            // Sub-tasks this task added in a run a rerun superseded come back, reopened.
            let reused = reused_subtasks(&task, &specs, &by_key)?;
            let mut dag = Dag::build(
                existing
                    .iter()
                    .map(|t| (&t.spec.key, t.dependencies.as_slice())),
            )?;
            let dependents: Vec<&Task> = existing
                .iter()
                .filter(|t| t.dependencies.contains(&task.spec.key))
                .collect();
            let new_edges: Vec<(TaskKey, TaskKey)> = dependents
                .iter()
                .flat_map(|d| specs.iter().map(|s| (d.spec.key.clone(), s.key.clone())))
                .collect();
            dag.extend(
                specs
                    .iter()
                    .filter(|s| !reused.contains(&s.key))
                    .map(|s| (&s.key, s.depends_on.as_slice())),
                new_edges.iter().map(|(a, b)| (a, b)),
            )?;
            validate_subtasks(&specs, &by_key, &reused)?;
            // After every change of the workflow so far (see `Cause::after`).
            let now = existing
                .iter()
                .map(|t| t.updated_at)
                .fold(self.now(), Timestamp::max);
            // The parent's own transition: the core checks the lease, and the store's
            // compare-and-set on the parent makes the whole batch fail if it changed since.
            let added = Event::SubtasksAdded {
                agent,
                token,
                tasks: specs.iter().map(|s| s.key.clone()).collect(),
            };
            let on_parent = apply(&task, &added, now)?;
            let new_ids: HashMap<&TaskKey, TaskId> = specs
                .iter()
                .filter(|s| !reused.contains(&s.key))
                .map(|s| (&s.key, TaskId(self.inner.ids.id())))
                .collect();
            let id_of = |k: &TaskKey| {
                new_ids
                    .get(k)
                    .copied()
                    .or_else(|| by_key.get(k).map(|t| t.id))
            };
            let mut tasks = Vec::new();
            let mut created = Vec::new();
            let mut edges = Vec::new();
            let mut records = vec![TransitionRecord::of(&on_parent, added.clone(), now)];
            let mut applied = vec![(on_parent, added)];
            for spec in specs.iter().filter(|s| reused.contains(&s.key)) {
                let old = by_key[&spec.key];
                // Its edges from tasks that were superseded with it went with them.
                for dep in spec
                    .depends_on
                    .iter()
                    .filter(|d| new_keys_of(&specs).contains(d))
                {
                    edges.push(Edge {
                        dependency: id_of(dep).expect("the graph checked every dependency"),
                        dependent: old.id,
                    });
                }
                let event = Event::Reopened {
                    requested_by: "engine".into(),
                    reason: format!("added again by `{}` after a rerun", task.spec.key),
                    root: spec.key.clone(),
                    input: Some(spec.input.clone()),
                    keep_items: false,
                    retired: Vec::new(),
                };
                let t = apply(old, &event, now)?;
                records.push(TransitionRecord::of(&t, event.clone(), now));
                created_again.push(t.clone());
                applied.push((t, event));
            }
            for spec in specs.iter().filter(|s| !reused.contains(&s.key)) {
                let id = new_ids[&spec.key];
                let completed: Vec<TaskKey> = spec
                    .depends_on
                    .iter()
                    .filter(|d| {
                        by_key
                            .get(d)
                            .is_some_and(|t| t.kind() == StateKind::Completed)
                    })
                    .cloned()
                    .collect();
                let results: BTreeMap<TaskKey, Value> = completed
                    .iter()
                    .filter_map(|k| match &by_key.get(k)?.state {
                        State::Completed { result, .. } => Some((k.clone(), result.clone())),
                        _ => None,
                    })
                    .collect();
                for dep in &spec.depends_on {
                    edges.push(Edge {
                        dependency: id_of(dep).expect("the graph checked every dependency"),
                        dependent: id,
                    });
                }
                let (new, t) = new_task(
                    task.workflow,
                    id,
                    spec.clone(),
                    completed,
                    &results,
                    self.inner.ids.seed(),
                    now,
                )?;
                tasks.push(new);
                created.push(t);
            }
            // Every dependent records the new dependencies, a cancelled one too (so that a
            // revival finds it waiting for them); each is a compare-and-set in this batch.
            for dependent in &dependents {
                let mut current = (*dependent).clone();
                for spec in &specs {
                    edges.push(Edge {
                        dependency: id_of(&spec.key).expect("a sub-task new or reused"),
                        dependent: dependent.id,
                    });
                    let event = Event::DependencyAdded {
                        dependency: spec.key.clone(),
                    };
                    let t = apply(&current, &event, now)?;
                    current = t.task.clone();
                    records.push(TransitionRecord::of(&t, event.clone(), now));
                    applied.push((t, event));
                }
            }
            if let Some(pause) = &pause {
                for t in created.iter().chain(&created_again) {
                    let (h, event) = Self::held_by(pause, t)?;
                    records.push(TransitionRecord::of(&h, event.clone(), h.task.updated_at));
                    held.push((h, event));
                }
            }
            let batch = SubmitBatch {
                workflow: WorkflowRef::Existing {
                    id: task.workflow,
                    paused: pause.is_some(),
                },
                tasks,
                edges,
                transitions: records,
            };
            match self.inner.store.submit(batch).await {
                Ok(_) => {
                    for t in &created {
                        self.after_commit(t, &Event::Submitted(submission_of(t)), None);
                    }
                    for (t, event) in applied.iter().chain(&held) {
                        self.after_commit(t, event, None);
                    }
                    info!(parent = %parent, subtasks = specs.len(), "sub-tasks added");
                    return Ok(specs
                        .iter()
                        .map(|s| (s.key.clone(), id_of(&s.key).expect("new or reused")))
                        .collect());
                }
                Err(e) if e.is_conflict() => continue,
                Err(StoreError::DuplicateKey { key, .. }) => {
                    return Err(EngineError::Graph(baton_core::DagError::DuplicateTask(key)))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended(parent))
    }

    pub(crate) async fn workflow_tasks(
        &self,
        workflow: WorkflowId,
    ) -> Result<Vec<Task>, EngineError> {
        let mut all = Vec::new();
        let mut pages = TaskPages::new(TaskFilter {
            workflow: Some(workflow),
            ..TaskFilter::default()
        });
        while let Some(page) = pages.next(&self.inner.store).await? {
            all.extend(page);
            if all.len() > TASKS_PER_WORKFLOW_MAX {
                break;
            }
        }
        Ok(all)
    }
}

/// The task `spec` makes and its `submitted` transition. `completed` are its dependencies
/// already completed and `results` theirs (by key): when every dependency has completed, an
/// input template is resolved against them now, as a release would.
pub(crate) fn new_task(
    workflow: WorkflowId,
    id: TaskId,
    spec: TaskSpec,
    completed: Vec<TaskKey>,
    results: &BTreeMap<TaskKey, Value>,
    seed: u64,
    now: Timestamp,
) -> Result<(NewTask, Transition), EngineError> {
    let met = spec.depends_on.iter().all(|d| completed.contains(d));
    let (input, unresolved) = if met {
        resolution(&spec, results)
    } else {
        (None, None)
    };
    let sub = Submission {
        task: id,
        workflow,
        spec: Arc::new(spec),
        completed,
        seed,
        input,
        unresolved,
    };
    Ok(NewTask::submitted(sub, now)?)
}

pub(crate) fn submission_of(t: &Transition) -> Submission {
    Submission {
        task: t.task.id,
        workflow: t.task.workflow,
        spec: Arc::clone(&t.task.spec),
        completed: Vec::new(),
        seed: t.task.seed,
        input: None,
        unresolved: None,
    }
}

/// The payloads of `specs` that may refer to artifacts, with their field paths.
fn task_payloads(specs: &[TaskSpec]) -> impl Iterator<Item = (String, &serde_json::Value)> {
    specs.iter().enumerate().flat_map(|(i, s)| {
        let comp = s
            .compensation
            .as_ref()
            .map(|c| (format!("tasks[{i}].compensation.input"), &c.input));
        std::iter::once((format!("tasks[{i}].input"), &s.input)).chain(comp)
    })
}

/// A stable fingerprint of a request (FNV-1a, 64 bits), so that a reused idempotency key
/// with a different request is recognised across restarts and versions.
fn request_hash(req: &WorkflowRequest) -> String {
    // Labels count only when there are some, so that the hashes of requests stored before
    // labels existed stay the same.
    let bytes = match (&req.outputs, req.labels.is_empty()) {
        (None, true) => serde_json::to_vec(&(&req.name, &req.tasks)),
        (Some(outputs), true) => serde_json::to_vec(&(&req.name, &req.tasks, outputs)),
        (outputs, false) => serde_json::to_vec(&(&req.name, &req.tasks, outputs, &req.labels)),
    }
    .expect("a request serialises");
    fingerprint(&bytes)
}

/// FNV-1a (64 bits) of `bytes`, in hex: the fingerprint idempotency keys are checked with.
pub(crate) fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Every check [`Engine::submit_workflow`] makes before storing anything: field bounds, each
/// task's spec, compensation keys, and the dependency graph. Clients call it to refuse a bad
/// workflow before sending it.
pub fn validate_workflow(req: &WorkflowRequest) -> Result<(), EngineError> {
    if req.name.len() > NAME_LEN_MAX {
        return Err(EngineError::invalid(
            "name",
            format!("at most {NAME_LEN_MAX} bytes"),
        ));
    }
    if let Some(key) = &req.idempotency_key {
        if key.is_empty() || key.len() > NAME_LEN_MAX {
            return Err(EngineError::invalid(
                "idempotency_key",
                format!("1 to {NAME_LEN_MAX} bytes"),
            ));
        }
    }
    validate_labels(&req.labels, "labels")
        .map_err(|e| EngineError::invalid(e.field, e.expected))?;
    crate::budgets::check_budgets(&req.budgets, "budgets")?;
    if req.tasks.is_empty() || req.tasks.len() > TASKS_PER_WORKFLOW_MAX {
        return Err(EngineError::invalid(
            "tasks",
            format!("1 to {TASKS_PER_WORKFLOW_MAX} tasks"),
        ));
    }
    for (i, spec) in req.tasks.iter().enumerate() {
        spec.validate()
            .map_err(|e| EngineError::invalid(format!("tasks[{i}].{}", e.field), e.expected))?;
        not_an_item_key(i, spec)?;
    }
    let keys: HashSet<&TaskKey> = req.tasks.iter().map(|t| &t.key).collect();
    let mut comps = HashSet::new();
    for (i, spec) in req.tasks.iter().enumerate() {
        if let Some(c) = &spec.compensation {
            if keys.contains(&c.key) || !comps.insert(&c.key) {
                return Err(EngineError::invalid(
                    format!("tasks[{i}].compensation.key"),
                    format!(
                        "a key used by no other task or compensation, not {:?}",
                        c.key.0
                    ),
                ));
            }
        }
    }
    Dag::from_specs(&req.tasks)?;
    for (name, value) in req.outputs.iter().flatten() {
        let field = format!("outputs.{name}");
        let refs = template::references(value, &field)
            .map_err(|e| EngineError::invalid(e.field, e.expected))?;
        for r in refs {
            if !keys.contains(&r.from) {
                return Err(EngineError::invalid(
                    format!("{}.{}", r.at, template::FROM),
                    format!("the key of a task of this workflow, not {:?}", r.from.0),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a key (or compensation key) ending in an index `[N]`: those are the keys of the tasks
/// a `for_each` expands into.
fn not_an_item_key(i: usize, spec: &TaskSpec) -> Result<(), EngineError> {
    let keys = std::iter::once(("key", &spec.key)).chain(
        spec.compensation
            .iter()
            .map(|c| ("compensation.key", &c.key)),
    );
    for (field, key) in keys {
        if key.0.ends_with(']') {
            return Err(EngineError::invalid(
                format!("tasks[{i}].{field}"),
                format!(
                    "a key not ending in an index `[N]` (the keys of the tasks a for_each \
                     expands into), not {:?}",
                    key.0
                ),
            ));
        }
    }
    Ok(())
}

/// What decomposition must refuse beyond the graph's rules, given the workflow's tasks by key:
/// a sub-task waiting for a task that already ended failed or cancelled (that task's
/// `upstream_failed` was sent before the sub-task existed, so it would stay blocked for ever,
/// and so would the parent's dependents), and keys that collide with compensation keys (the
/// compensation task would silently never be created, its key being taken).
/// The keys of `specs`.
fn new_keys_of(specs: &[TaskSpec]) -> HashSet<&TaskKey> {
    specs.iter().map(|s| &s.key).collect()
}

/// The sub-tasks among `specs` that `parent` added in a run a rerun superseded: added again
/// with the same spec but for their input, they are reopened rather than created. Another
/// task of the workflow under the same key is refused as before (a duplicate), and so is a
/// superseded one whose spec changed beyond its input.
fn reused_subtasks(
    parent: &Task,
    specs: &[TaskSpec],
    by_key: &HashMap<&TaskKey, &Task>,
) -> Result<HashSet<TaskKey>, EngineError> {
    let mut reused = HashSet::new();
    for (i, spec) in specs.iter().enumerate() {
        let Some(old) = by_key.get(&spec.key) else {
            continue;
        };
        let superseded_here = matches!(
            &old.state,
            State::Cancelled {
                reason: CancelReason::Superseded { parent: p }
            } if *p == parent.spec.key
        );
        if !superseded_here {
            continue;
        }
        let same = TaskSpec {
            input: old.spec.input.clone(),
            ..spec.clone()
        } == *old.spec;
        if !same {
            return Err(EngineError::invalid(
                format!("tasks[{i}]"),
                format!(
                    "the spec `{}` had when this task added it in a run a rerun superseded, but                      for its input (it is reopened with the new input): give it a new key to                      change the rest",
                    spec.key
                ),
            ));
        }
        reused.insert(spec.key.clone());
    }
    Ok(reused)
}

fn validate_subtasks(
    specs: &[TaskSpec],
    by_key: &HashMap<&TaskKey, &Task>,
    reused: &HashSet<TaskKey>,
) -> Result<(), EngineError> {
    let new_keys: HashSet<&TaskKey> = specs.iter().map(|s| &s.key).collect();
    let mut comps: HashSet<&TaskKey> = by_key
        .values()
        .filter_map(|t| t.spec.compensation.as_ref().map(|c| &c.key))
        .collect();
    for (i, spec) in specs.iter().enumerate() {
        if comps.contains(&spec.key) {
            return Err(EngineError::invalid(
                format!("tasks[{i}].key"),
                format!(
                    "a key not reserved for a compensation task, not {:?}",
                    spec.key.0
                ),
            ));
        }
        for dep in spec.depends_on.iter().filter(|d| !reused.contains(*d)) {
            if let Some(t) = by_key.get(dep) {
                if t.state.is_terminal() && t.kind() != StateKind::Completed {
                    return Err(EngineError::invalid(
                        format!("tasks[{i}].depends_on"),
                        format!(
                            "tasks that can still complete, but {:?} has ended {}",
                            dep.0,
                            t.kind()
                        ),
                    ));
                }
            }
        }
    }
    for (i, spec) in specs.iter().enumerate() {
        // A reused sub-task keeps its compensation, already among the workflow's.
        if reused.contains(&spec.key) {
            continue;
        }
        if let Some(c) = &spec.compensation {
            if by_key.contains_key(&c.key) || new_keys.contains(&c.key) || !comps.insert(&c.key) {
                return Err(EngineError::invalid(
                    format!("tasks[{i}].compensation.key"),
                    format!(
                        "a key used by no other task or compensation, not {:?}",
                        c.key.0
                    ),
                ));
            }
        }
    }
    Ok(())
}
