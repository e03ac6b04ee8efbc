//! Leased tasks as this node last committed them. An agent's reports on a task it holds
//! (started, heartbeats, its outcome) are decided from here instead of reading the task back
//! from the store, which costs a read and a decode per report.
//!
//! A kept task is only a guess at the stored one: a transition decided from it is trusted only
//! once the store's compare-and-set on its version succeeds, which proves the guess was the
//! stored task (each version of a task is written once). A conflict drops the guess, and
//! whatever would be answered without a write (a duplicate, a refusal, nothing to do) is
//! decided again from the store's task, so another node's change or the store's own is never
//! hidden.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use baton_core::{Task, TaskId};

/// Tasks kept at most; when full the map starts over (the tasks in flight fill it again).
const KEPT_MAX: usize = 4_096;
/// The most a kept task's parts that grow with what users send may take, as JSON: a bigger
/// task (a big input or progress) is read from the store, so that the map holds a few MiB at
/// most whatever the payloads.
const KEPT_BYTES_MAX: usize = 4 * 1024;

struct Kept {
    task: Task,
    /// What `task.spec` takes as JSON. A spec never changes once submitted and every version
    /// of a task shares it (`Arc`), so it is measured once, when the task is first kept.
    spec_bytes: usize,
}

#[derive(Default)]
pub(crate) struct Leased(Mutex<HashMap<TaskId, Kept>>);

impl Leased {
    /// Keeps `task`, just committed, if an agent holds it and it is small (and no later version
    /// is kept); forgets the task otherwise.
    pub(crate) fn keep(&self, task: &Task) {
        if task.state.lease().is_none() {
            self.forget(task.id);
            return;
        }
        let measured = self
            .lock()
            .get(&task.id)
            .filter(|k| Arc::ptr_eq(&k.task.spec, &task.spec))
            .map(|k| k.spec_bytes);
        let Some(spec_bytes) = measure(task, measured, KEPT_BYTES_MAX) else {
            self.forget(task.id);
            return;
        };
        let mut kept = self.lock();
        match kept.get(&task.id) {
            // Commits on one task can be carried out out of order: keep the latest.
            Some(newer) if newer.task.version >= task.version => return,
            Some(_) => {}
            None if kept.len() >= KEPT_MAX => kept.clear(),
            None => {}
        }
        let task = task.clone();
        kept.insert(task.id, Kept { task, spec_bytes });
    }

    /// The task as this node last committed it, if it is kept.
    pub(crate) fn get(&self, id: TaskId) -> Option<Task> {
        self.lock().get(&id).map(|k| k.task.clone())
    }

    pub(crate) fn forget(&self, id: TaskId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Kept>> {
        // A panic while holding it leaves a map that is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The bytes `task.spec` takes as JSON (`spec_bytes` when already measured), if it and the
/// parts of the task that its transitions may grow with users' data (dependencies, state with
/// its progress, errors, resolved input, operators' reasons, usage) encode in at most `max`
/// bytes together; encoding stops past it. The fixed-size rest (ids, timestamps, counters) is
/// not counted.
fn measure(task: &Task, spec_bytes: Option<usize>, max: usize) -> Option<usize> {
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self
                .0
                .checked_sub(buf.len())
                .ok_or_else(|| std::io::Error::other("over"))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut budget = Budget(max);
    let spec_bytes = match spec_bytes {
        Some(bytes) => {
            budget.0 = max.checked_sub(bytes)?;
            bytes
        }
        None => {
            serde_json::to_writer(&mut budget, &*task.spec).ok()?;
            max - budget.0
        }
    };
    // Every field named, so that a field added to `Task` is counted here or said not to grow.
    let Task {
        id: _,
        workflow: _,
        spec: _,
        dependencies,
        state,
        version: _,
        attempt: _,
        attempts_allowed: _,
        fencing_token: _,
        deadlines: _,
        errors,
        entered_at: _,
        created_at: _,
        updated_at: _,
        seed: _,
        input,
        expanded: _,
        wake_at: _,
        paused,
        overruled,
        usage,
        lease_usage,
    } = task;
    let grown = (
        dependencies,
        state,
        errors,
        input,
        paused,
        overruled,
        usage,
        lease_usage,
    );
    serde_json::to_writer(&mut budget, &grown).ok()?;
    Some(spec_bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use baton_core::{
        apply, submit, AgentId, Event, FencingToken, LeaseId, Submission, Task, TaskId, TaskSpec,
        Timestamp, WorkflowId,
    };
    use serde_json::{json, Value};
    use uuid::Uuid;

    use super::{Leased, KEPT_BYTES_MAX};

    const AGENT: AgentId = AgentId(Uuid::from_u128(0xa6e7));

    fn assigned(input: Value) -> Task {
        let mut spec = TaskSpec::new("t");
        spec.input = input;
        let sub = Submission {
            task: TaskId(Uuid::from_u128(1)),
            workflow: WorkflowId(Uuid::from_u128(2)),
            spec: Arc::new(spec),
            completed: Vec::new(),
            seed: 7,
            input: None,
            unresolved: None,
        };
        let pending = submit(&sub, Timestamp(0)).unwrap().task;
        let event = Event::AgentAssigned {
            agent: AGENT,
            capabilities: BTreeSet::new(),
            lease: LeaseId(Uuid::from_u128(3)),
        };
        apply(&pending, &event, Timestamp(1)).unwrap().task
    }

    fn then(task: &Task, event: Event) -> Task {
        let at = Timestamp(task.updated_at.0 + 1);
        apply(task, &event, at).unwrap().task
    }

    fn started(task: &Task) -> Task {
        then(
            task,
            Event::ExecutionStarted {
                by_claim: false,
                agent: AGENT,
                token: FencingToken(1),
            },
        )
    }

    fn heartbeat(task: &Task, progress: Value) -> Task {
        then(
            task,
            Event::Heartbeat {
                usage: Default::default(),
                agent: AGENT,
                token: FencingToken(1),
                progress: Some(progress),
            },
        )
    }

    #[test]
    fn a_small_leased_task_is_kept_at_its_latest_version() {
        let leased = Leased::default();
        let task = assigned(json!({ "n": 1 }));
        leased.keep(&task);
        assert_eq!(leased.get(task.id), Some(task.clone()));

        let running = started(&task);
        leased.keep(&running);
        leased.keep(&task); // an older commit carried out late
        assert_eq!(leased.get(task.id), Some(running.clone()));

        let done = then(
            &running,
            Event::ExecutionSucceeded {
                usage: Default::default(),
                agent: AGENT,
                token: FencingToken(1),
                result: Some(json!({})),
            },
        );
        leased.keep(&done);
        assert_eq!(leased.get(task.id), None, "no lease: forgotten");
    }

    #[test]
    fn a_task_whose_spec_is_too_big_is_not_kept() {
        let leased = Leased::default();
        let task = assigned(json!("x".repeat(KEPT_BYTES_MAX)));
        leased.keep(&task);
        assert_eq!(leased.get(task.id), None);
    }

    #[test]
    fn a_kept_task_that_grows_past_the_budget_with_its_spec_is_forgotten() {
        let leased = Leased::default();
        // The spec takes most of the budget: progress that fits alone, but not with the
        // spec measured when the task was first kept, drops the task.
        let task = assigned(json!("x".repeat(KEPT_BYTES_MAX - 1_000)));
        leased.keep(&task);
        let running = started(&task);
        leased.keep(&running);
        assert_eq!(leased.get(task.id), Some(running.clone()));

        let small = heartbeat(&running, json!("y".repeat(100)));
        leased.keep(&small);
        assert_eq!(leased.get(task.id), Some(small.clone()));

        let big = heartbeat(&small, json!("y".repeat(1_500)));
        leased.keep(&big);
        assert_eq!(leased.get(task.id), None);
    }
}
