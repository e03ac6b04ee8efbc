//! The writer's copies of the pending tasks it stored last, so that a claim of one takes it
//! from memory instead of reading and decoding its row and spec again (a third of a claim's
//! cost).
//!
//! A copy stands for the row at the copy's version only: a claim uses it when the row's
//! version (read from the claim's candidate row) is the same. Every write of a task's row
//! goes through the writer ([`Recent::wrote`] follows each), and a version is written once,
//! so a committed copy cannot differ from a row at its version. A write undone by a rollback
//! can leave a copy of a version that was never committed; no row is at that version (a write
//! that reaches it replaces the copy), and the writer forgets every copy once a batch that was
//! run again or failed is over ([`Recent::clear`]), so that another process writing that
//! version later cannot meet it.

use std::collections::HashMap;

use baton_core::{StateKind, Task, TaskId};

/// Most copies kept: a backlog beyond it is read from the store as before. About a kilobyte
/// each for a small task (the spec is shared, not copied).
const KEPT_MAX: usize = 8192;

#[derive(Default)]
pub(super) struct Recent {
    /// Boxed: a table of tasks inline would keep room for twice as many as it holds.
    pending: HashMap<TaskId, Box<Task>>,
}

impl Recent {
    /// Follows a write that left `task` as it is: a pending task is kept while there is room,
    /// any other forgotten.
    pub(super) fn wrote(&mut self, task: &Task) {
        if task.kind() != StateKind::Pending {
            self.pending.remove(&task.id);
        } else if let Some(kept) = self.pending.get_mut(&task.id) {
            kept.as_mut().clone_from(task);
        } else if self.pending.len() < KEPT_MAX {
            self.pending.insert(task.id, Box::new(task.clone()));
        }
    }

    /// The task as stored at `version`, if the copy kept is of that version.
    pub(super) fn pending(&self, id: TaskId, version: u64) -> Option<Task> {
        self.pending
            .get(&id)
            .filter(|t| t.version == version)
            .map(|t| Task::clone(t))
    }

    /// Follows the deletion of a task's row.
    pub(super) fn forget(&mut self, id: TaskId) {
        self.pending.remove(&id);
    }

    pub(super) fn clear(&mut self) {
        self.pending.clear();
    }
}
