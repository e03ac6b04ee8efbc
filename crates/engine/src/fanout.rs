//! Fan-out: a task with a `for_each` is run by no agent. When its dependencies complete, its
//! release expands it into one task per element of the array it refers to (`KEY[0]`,
//! `KEY[1]`, …, each a copy of its spec whose input holds the element at `item`), created in
//! the same commit as its own `for_each_expanded` transition, which makes it wait for them.
//! Once they have all completed, its next release gathers their results, in element order,
//! as its result. The core decides each step from the evidence gathered here.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use baton_core::template::{self, ITEM, LITERAL};
use baton_core::{apply, Event, State, StateKind, Task, TaskId, TaskKey, TaskSpec, Unresolved};
use baton_store::{
    Dependency, Edge, Store, StoreError, SubmitBatch, TransitionRecord, WorkflowRef,
};
use serde_json::{Map, Value};
use tracing::info;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::intake::{new_task, submission_of};
use crate::transition::CAS_RETRIES_MAX;
use crate::upstream::{json_bytes, resolution};

/// Most bytes of results a fan-out gathers as its own result (its items' results, in order):
/// past that it fails, naming the item where the sum went over; large data belongs in
/// artifacts, with references in the results.
pub const FOR_EACH_RESULTS_BYTES_MAX: u64 = 64 * 1024 * 1024;

impl<S: Store + 'static> Engine<S> {
    /// Expands the `for_each` task `task` (just loaded, blocked, its dependencies complete):
    /// one commit creates its items and records `for_each_expanded` on it. A lost
    /// compare-and-set (another node expanded it, or it changed) is decided again from the
    /// fresh version.
    pub(crate) async fn expand(&self, task: Task) -> Result<Task, EngineError> {
        let id = task.id;
        let mut loaded = Some(task);
        for _ in 0..CAS_RETRIES_MAX {
            let task = match loaded.take() {
                Some(task) => task,
                None => self.load(id).await?,
            };
            let Some(for_each) = task.spec.for_each.as_ref() else {
                return Ok(task);
            };
            if task.kind() != StateKind::Blocked || task.expanded.is_some() {
                return Ok(task);
            }
            let dependencies = self.inner.store.dependencies(id).await?;
            let last = dependencies.iter().map(|d| d.updated_at).max();
            let completed: Vec<TaskKey> = dependencies
                .iter()
                .filter(|d| d.state == StateKind::Completed)
                .map(|d| d.key.clone())
                .collect();
            let reference = template::for_each_reference(for_each)
                .map_err(|e| EngineError::invalid(e.field, e.expected))?;
            let results = self
                .referenced_results(&task.spec, Some(&reference.from), &dependencies)
                .await?;
            // The task's own input, resolved once for every item.
            let (resolved, unresolved) = resolution(&task.spec, &results);
            let items = match unresolved {
                Some(u) => Err(u),
                None => template::for_each_items(&reference, results.get(&reference.from)),
            };
            let (keys, unresolved) = match &items {
                Ok(items) => (
                    (0..items.len())
                        .map(|i| template::item_key(&task.spec.key, i))
                        .collect(),
                    None,
                ),
                Err(u) => (Vec::new(), Some(u.clone())),
            };
            let event = Event::ForEachExpanded {
                completed,
                tasks: keys,
                unresolved,
            };
            let now = self
                .now()
                .max(task.updated_at)
                .max(last.unwrap_or(task.updated_at));
            let on_task = apply(&task, &event, now)?;
            let record = TransitionRecord::of(&on_task, event.clone(), now);
            let items = items.unwrap_or_default();
            if items.is_empty() {
                match self.inner.store.apply(record).await {
                    Ok(released) => {
                        self.after_commit(&on_task, &event, None);
                        self.after_released(released);
                        return Ok(on_task.task);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let input = resolved.as_ref().unwrap_or(&task.spec.input);
            let pause = self.creation_pause(task.workflow).await?;
            let earlier = self.earlier_items(&task, items.len()).await?;
            let mut tasks = Vec::with_capacity(items.len());
            let mut created = Vec::with_capacity(items.len());
            let mut edges = Vec::with_capacity(items.len());
            let mut records = vec![record];
            let mut reopened = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let spec = item_spec(&task, i, input, item);
                if let Some(old) = earlier.get(i).and_then(Option::as_ref) {
                    // Expanding anew after a rerun: the item is reopened with its new input.
                    edges.push(Edge {
                        dependency: old.id,
                        dependent: id,
                    });
                    let event = Event::Reopened {
                        requested_by: "engine".into(),
                        reason: format!("`{}` expanded anew after a rerun", task.spec.key),
                        root: spec.key.clone(),
                        input: Some(spec.input),
                        keep_items: false,
                        retired: Vec::new(),
                    };
                    let t = apply(old, &event, now.max(old.updated_at))?;
                    records.push(TransitionRecord::of(&t, event.clone(), t.task.updated_at));
                    reopened.push((t, event));
                    continue;
                }
                let item_id = TaskId(self.inner.ids.id());
                edges.push(Edge {
                    dependency: item_id,
                    dependent: id,
                });
                let completed = spec.depends_on.clone();
                let (new, t) = new_task(
                    task.workflow,
                    item_id,
                    spec,
                    completed,
                    &BTreeMap::new(),
                    self.inner.ids.seed(),
                    now,
                )?;
                tasks.push(new);
                created.push(t);
            }
            let mut held = Vec::new();
            if let Some(pause) = &pause {
                for t in created.iter().chain(reopened.iter().map(|(t, _)| t)) {
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
                    for (t, event) in reopened.iter().chain(&held) {
                        self.after_commit(t, event, None);
                    }
                    self.after_commit(&on_task, &event, None);
                    info!(task = %id, items = items.len(), reopened = reopened.len(), "for_each expanded");
                    return Ok(on_task.task);
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended(id))
    }

    /// The items an earlier expansion of `task` left (a rerun superseded them), by index, for
    /// the first `n`: none when `KEY[0]` does not exist, which a first expansion finds with one
    /// read.
    async fn earlier_items(&self, task: &Task, n: usize) -> Result<Vec<Option<Task>>, EngineError> {
        let mut earlier = Vec::new();
        for i in 0..n {
            let key = template::item_key(&task.spec.key, i);
            let found = self.inner.store.task_by_key(task.workflow, key).await?;
            if found.is_none() && i == 0 {
                break;
            }
            earlier.push(found);
        }
        Ok(earlier)
    }

    /// The results of an expanded task's items, in element order, or why they cannot be its
    /// result: an item not completed (the core then refuses the release) or their sum over
    /// [`FOR_EACH_RESULTS_BYTES_MAX`].
    pub(crate) async fn gather_items(
        &self,
        task: &Task,
        dependencies: &[Dependency],
    ) -> Result<(Option<Vec<Value>>, Option<Unresolved>), EngineError> {
        let n = task.expanded.unwrap_or(0) as usize;
        let by_key: HashMap<&TaskKey, &Dependency> =
            dependencies.iter().map(|d| (&d.key, d)).collect();
        let mut results = Vec::with_capacity(n);
        let mut bytes = 0;
        for i in 0..n {
            let key = template::item_key(&task.spec.key, i);
            let Some(dep) = by_key.get(&key) else {
                return Ok((None, None));
            };
            let Some(item) = self.inner.store.task(dep.id).await? else {
                return Ok((None, None));
            };
            let State::Completed { result, .. } = item.state else {
                return Ok((None, None));
            };
            bytes += json_bytes(&result);
            if bytes > FOR_EACH_RESULTS_BYTES_MAX {
                return Ok((
                    None,
                    Some(Unresolved {
                        at: "result".into(),
                        from: key,
                        pointer: String::new(),
                        reason: Some(format!(
                            "the results of its items add up to more than \
                             {FOR_EACH_RESULTS_BYTES_MAX} bytes (FOR_EACH_RESULTS_BYTES_MAX) by \
                             this one: pass large data as artifacts"
                        )),
                    }),
                ));
            }
            results.push(result);
        }
        Ok((Some(results), None))
    }

    /// The results of the completed dependencies the spec's input refers to, plus `also`.
    pub(crate) async fn referenced_results(
        &self,
        spec: &TaskSpec,
        also: Option<&TaskKey>,
        dependencies: &[Dependency],
    ) -> Result<BTreeMap<TaskKey, Value>, EngineError> {
        let mut referenced: BTreeSet<TaskKey> = template::references(&spec.input, "input")
            .map_err(|e| EngineError::invalid(e.field, e.expected))?
            .into_iter()
            .map(|r| r.from)
            .collect();
        referenced.extend(also.cloned());
        let mut results = BTreeMap::new();
        for dep in dependencies {
            if dep.state != StateKind::Completed || !referenced.contains(&dep.key) {
                continue;
            }
            if let Some(done) = self.inner.store.task(dep.id).await? {
                if let State::Completed { result, .. } = done.state {
                    results.insert(dep.key.clone(), result);
                }
            }
        }
        Ok(results)
    }
}

/// The spec of item `i` of `task`: a copy of its spec under the key `KEY[i]`, without the
/// fan-out, its input the task's (resolved) input with the element at `item`, escaped as a
/// literal if anything in it looks like a template; a compensation is its own, under
/// `COMPENSATION_KEY[i]`. It depends on nothing: what the task waited for has completed, and
/// what the item needs of it is in its input (a claim of it then reads no upstream results,
/// which for 10,000 items over one planner's result would hand that result out 10,000 times).
fn item_spec(task: &Task, i: usize, input: &Value, item: &Value) -> TaskSpec {
    let mut spec = task.spec.as_ref().clone();
    spec.key = template::item_key(&task.spec.key, i);
    spec.depends_on = Vec::new();
    spec.for_each = None;
    let mut fields = match input {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    fields.insert(ITEM.to_owned(), item.clone());
    let input = Value::Object(fields);
    spec.input = if template::is_template(&input) {
        serde_json::json!({ LITERAL: input })
    } else {
        input
    };
    if let Some(comp) = &mut spec.compensation {
        comp.key = template::item_key(&comp.key, i);
    }
    spec
}
