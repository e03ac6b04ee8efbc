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
use std::sync::Mutex;

use baton_core::{Task, TaskId};

/// Tasks kept at most; when full the map starts over (the tasks in flight fill it again).
const KEPT_MAX: usize = 4_096;
/// The largest task kept, as JSON: a bigger one (a big input or progress) is read from the
/// store, so that the map holds a few MiB at most whatever the payloads.
const KEPT_BYTES_MAX: usize = 4 * 1024;

#[derive(Default)]
pub(crate) struct Leased(Mutex<HashMap<TaskId, Task>>);

impl Leased {
    /// Keeps `task`, just committed, if an agent holds it and it is small (and no later version
    /// is kept); forgets the task otherwise.
    pub(crate) fn keep(&self, task: &Task) {
        if task.state.lease().is_none() || !fits(task, KEPT_BYTES_MAX) {
            self.forget(task.id);
            return;
        }
        let mut kept = self.lock();
        match kept.get(&task.id) {
            // Commits on one task can be carried out out of order: keep the latest.
            Some(newer) if newer.version >= task.version => return,
            Some(_) => {}
            None if kept.len() >= KEPT_MAX => kept.clear(),
            None => {}
        }
        kept.insert(task.id, task.clone());
    }

    /// The task as this node last committed it, if it is kept.
    pub(crate) fn get(&self, id: TaskId) -> Option<Task> {
        self.lock().get(&id).cloned()
    }

    pub(crate) fn forget(&self, id: TaskId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Task>> {
        // A panic while holding it leaves a map that is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `task` encodes in at most `max` bytes of JSON; stops encoding past it.
fn fits(task: &Task, max: usize) -> bool {
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
    serde_json::to_writer(Budget(max), task).is_ok()
}
