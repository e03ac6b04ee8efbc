//! What a batch changes in the per-state counts: the store's (`state_counts`) and each
//! workflow's (`workflow_counts`), gathered over the batch and written once with it, so that a
//! batch touches each counter row once.

use std::collections::HashMap;

use baton_core::{StateKind, WorkflowId};
use rusqlite::{params, Connection};

use crate::decide::Deltas;

#[derive(Clone, Default)]
pub(super) struct Counts {
    store: Deltas,
    workflows: HashMap<WorkflowId, Deltas>,
}

impl Counts {
    /// A task of `workflow` was created in `state`.
    pub(super) fn created(&mut self, workflow: WorkflowId, state: StateKind) {
        self.store.created(state);
        self.workflows.entry(workflow).or_default().created(state);
    }

    /// A task of `workflow` in `state` was deleted (by retention).
    pub(super) fn removed(&mut self, workflow: WorkflowId, state: StateKind) {
        self.store.removed(state);
        self.workflows.entry(workflow).or_default().removed(state);
    }

    /// A task of `workflow` went from `from` to `to`.
    pub(super) fn moved(&mut self, workflow: WorkflowId, from: StateKind, to: StateKind) {
        self.store.moved(from, to);
        self.workflows.entry(workflow).or_default().moved(from, to);
    }

    /// The workflow's counts were deleted with it: nothing is left to add to them.
    pub(super) fn deleted(&mut self, workflow: WorkflowId) {
        self.workflows.remove(&workflow);
    }

    pub(super) fn write(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut store = conn.prepare_cached(
            "INSERT INTO state_counts (state, n) VALUES (?1, ?2)
             ON CONFLICT (state) DO UPDATE SET n = n + excluded.n",
        )?;
        for (state, d) in self.store.changes() {
            store.execute(params![state.as_str(), d])?;
        }
        let mut workflow = conn.prepare_cached(
            "INSERT INTO workflow_counts (workflow_id, state, n) VALUES (?1, ?2, ?3)
             ON CONFLICT (workflow_id, state) DO UPDATE SET n = n + excluded.n",
        )?;
        for (id, deltas) in &self.workflows {
            for (state, d) in deltas.changes() {
                workflow.execute(params![id.0, state.as_str(), d])?;
            }
        }
        Ok(())
    }
}
