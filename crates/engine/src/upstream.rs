//! Data along the graph: the results of a task's dependencies, handed to the agent that claims
//! it (`upstream`) and readable for any task. Results are immutable once their task
//! completed, so what an agent is handed is exactly what the dependencies' histories recorded.
//! Bounded: a result over `payload_bytes_max` is refused when reported, and one claim answer
//! carries at most [`UPSTREAM_BYTES_PER_CLAIM_MAX`] of results, and one read of a task's
//! upstream [`UPSTREAM_BYTES_PER_READ_MAX`]; past that, results are withheld (their size is
//! said) and each is read on its own with `GET /v1/tasks/{id}/upstream?key=`.

use std::collections::BTreeMap;
use std::io;

use baton_core::template;
use baton_core::{State, StateKind, Task, TaskId, TaskKey, TaskSpec, Unresolved};
use baton_store::Store;
use serde_json::Value;

use crate::engine::Engine;
use crate::error::EngineError;

/// Default of [`crate::EngineConfig::payload_bytes_max`]: 1 MiB, like Temporal's. Larger data
/// goes in artifacts.
pub const PAYLOAD_BYTES_MAX_DEFAULT: u64 = 1024 * 1024;
/// Most bytes of upstream results one claim answer carries, over all its tasks.
pub const UPSTREAM_BYTES_PER_CLAIM_MAX: u64 = 4 * 1024 * 1024;
/// Most bytes of results one read of a task's upstream (without a key) carries.
pub const UPSTREAM_BYTES_PER_READ_MAX: u64 = 4 * 1024 * 1024;

/// A dependency's result as handed down the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    /// The dependency.
    pub task: TaskId,
    /// Its result; `None` when withheld from a claim answer over its budget.
    pub result: Option<Value>,
    /// The result's size in bytes of JSON.
    pub bytes: u64,
}

/// The size of `value` as compact JSON, without writing it anywhere.
pub fn json_bytes(value: &Value) -> u64 {
    struct Count(u64);
    impl io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("a JSON value serialises");
    count.0
}

impl<S: Store + 'static> Engine<S> {
    /// The results of the task's completed dependencies, by key (a dependency not completed is
    /// absent), at most [`UPSTREAM_BYTES_PER_READ_MAX`] of them; the rest are withheld with
    /// their size. With `key`, only that dependency's result, whatever its size (it is within
    /// `payload_bytes_max`).
    pub async fn upstream(
        &self,
        task: &Task,
        key: Option<&TaskKey>,
    ) -> Result<BTreeMap<TaskKey, Upstream>, EngineError> {
        let mut budget = if key.is_some() {
            u64::MAX
        } else {
            UPSTREAM_BYTES_PER_READ_MAX
        };
        self.upstream_within(task, key, &mut budget).await
    }

    /// The upstream results of each claimed task, in order, within
    /// [`UPSTREAM_BYTES_PER_CLAIM_MAX`] over them all: the results that do not fit are
    /// withheld (`result: None`), the earlier tasks first served.
    pub async fn upstream_of_claimed(
        &self,
        tasks: &[Task],
    ) -> Result<Vec<BTreeMap<TaskKey, Upstream>>, EngineError> {
        let mut budget = UPSTREAM_BYTES_PER_CLAIM_MAX;
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            out.push(self.upstream_within(task, None, &mut budget).await?);
        }
        Ok(out)
    }

    /// Reads the completed dependencies' results one at a time, keeping a result only while
    /// it fits in `budget` (and taking it off), so that memory stays within the budget plus
    /// one result however many dependencies the task has.
    async fn upstream_within(
        &self,
        task: &Task,
        key: Option<&TaskKey>,
        budget: &mut u64,
    ) -> Result<BTreeMap<TaskKey, Upstream>, EngineError> {
        let mut out = BTreeMap::new();
        if task.dependencies.is_empty() {
            return Ok(out);
        }
        for dep in self.inner.store.dependencies(task.id).await? {
            if dep.state != StateKind::Completed || key.is_some_and(|k| *k != dep.key) {
                continue;
            }
            let Some(done) = self.inner.store.task(dep.id).await? else {
                continue;
            };
            let State::Completed { result, .. } = done.state else {
                continue;
            };
            let bytes = json_bytes(&result);
            let result = (bytes <= *budget).then(|| {
                *budget -= bytes;
                result
            });
            out.insert(
                dep.key,
                Upstream {
                    task: dep.id,
                    result,
                    bytes,
                },
            );
        }
        Ok(out)
    }
}

/// The spec's input resolved against `results` (the referenced dependencies' results by key):
/// the evidence `dependencies_met` and `submitted` carry, `(None, None)` for a plain input.
pub(crate) fn resolution(
    spec: &TaskSpec,
    results: &BTreeMap<TaskKey, Value>,
) -> (Option<Value>, Option<Unresolved>) {
    if !template::is_template(&spec.input) {
        return (None, None);
    }
    match template::resolve(&spec.input, "input", &|k: &TaskKey| results.get(k)) {
        Ok(input) => (Some(input), None),
        Err(unresolved) => (None, Some(unresolved)),
    }
}
