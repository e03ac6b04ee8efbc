//! What a caller may see of the resources a route names: the checks that need the engine.
//!
//! - A token **scoped** to labels sees only workflows carrying every one of them, and their
//!   tasks; anything else is answered exactly as if it did not exist (the same 404), lists
//!   leave it out, and what such a token submits gets its labels added ([`stamp`]). Schedules
//!   and triggers are in scope when the workflow template they submit carries the labels.
//!   It does no agents' work (`Caller::may_act_as`): a claim takes any workflow's tasks.
//!   An unscoped caller costs no read here.
//! - An **agent** token reads only tasks leased to one of its agents ([`check_task_read`]).

use std::collections::HashMap;

use baton_core::{has_labels, Labels, Task, TaskId, WorkflowId, WorkflowTemplate};
use baton_engine::read::{AnyStore, WorkflowRecord};
use baton_engine::{Engine, EngineError};

use crate::auth::{forbidden, Caller, Role};
use crate::problem::Problem;

impl Caller {
    /// Whether a workflow with these labels is in the caller's scope.
    pub fn sees(&self, labels: &Labels) -> bool {
        has_labels(labels, self.scope())
    }

    /// Whether a schedule's or trigger's workflow template is in the caller's scope.
    pub fn sees_template(&self, template: &WorkflowTemplate) -> bool {
        self.sees(&template.labels)
    }
}

/// The workflow, if the caller may see it; else the answer a missing workflow gets.
pub async fn workflow(
    caller: &Caller,
    e: &Engine<AnyStore>,
    id: WorkflowId,
) -> Result<WorkflowRecord, Problem> {
    let wf = e.workflow(id).await?;
    if caller.sees(&wf.labels) {
        Ok(wf)
    } else {
        Err(EngineError::WorkflowNotFound(id).into())
    }
}

/// Refuses a workflow out of the caller's scope as missing; reads nothing for an unscoped
/// caller (the handler finds out itself whether the workflow exists).
pub async fn check_workflow(
    caller: &Caller,
    e: &Engine<AnyStore>,
    id: WorkflowId,
) -> Result<(), Problem> {
    if caller.is_scoped() {
        workflow(caller, e, id).await?;
    }
    Ok(())
}

/// Refuses a task whose workflow is out of the caller's scope as missing.
pub async fn check_task(caller: &Caller, e: &Engine<AnyStore>, task: &Task) -> Result<(), Problem> {
    if caller.is_scoped() && !caller.sees(&e.workflow(task.workflow).await?.labels) {
        return Err(EngineError::TaskNotFound(task.id).into());
    }
    Ok(())
}

/// [`check_task`] by id: reads the task only for a scoped caller.
pub async fn check_task_id(
    caller: &Caller,
    e: &Engine<AnyStore>,
    id: TaskId,
) -> Result<(), Problem> {
    if caller.is_scoped() {
        check_task(caller, e, &e.task(id).await?).await?;
    }
    Ok(())
}

/// For an agent token: the task must be leased (assigned or executing) to one of its agents.
/// Other callers pass (their scope aside).
pub async fn check_held(caller: &Caller, e: &Engine<AnyStore>, task: &Task) -> Result<(), Problem> {
    if caller.role() != Role::Agent {
        return Ok(());
    }
    let holder = match task.state.lease() {
        Some(lease) => Some(e.agent(lease.agent).await?),
        None => None,
    };
    match holder {
        Some(agent) if caller.token().binds(&agent.name) => Ok(()),
        _ => Err(forbidden(format!(
            "token `{}` is an agent token: it reads only tasks leased to its agents, and task {} \
             is not",
            caller.actor(),
            task.id
        ))),
    }
}

/// Both checks of a read of one task, reading the task only when one of them needs it.
pub async fn check_task_read(
    caller: &Caller,
    e: &Engine<AnyStore>,
    id: TaskId,
) -> Result<(), Problem> {
    if caller.is_scoped() || caller.role() == Role::Agent {
        let task = e.task(id).await?;
        check_held(caller, e, &task).await?;
        check_task(caller, e, &task).await?;
    }
    Ok(())
}

/// Adds the caller's scope to labels it submits (at `field`: `labels`, `workflow.labels`), so
/// that what it creates stays in its scope. A label of the scope given another value is
/// refused (403, `out_of_scope`).
pub fn stamp(caller: &Caller, labels: &mut Labels, field: &str) -> Result<(), Problem> {
    for (key, value) in caller.scope() {
        match labels.get(key) {
            Some(given) if given != value => {
                return Err(out_of_scope(format!(
                    "token `{}` is scoped to {key}={value}: it cannot create a workflow labelled \
                     {key}={given}",
                    caller.actor()
                ))
                .field(format!("{field}.{key}"), format!("{value:?} (or left out)")));
            }
            _ => {
                labels.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// A refusal of what lies outside the caller's scope, where saying so leaks nothing (its own
/// submissions, global aggregates).
pub fn out_of_scope(detail: String) -> Problem {
    Problem::new(axum::http::StatusCode::FORBIDDEN, "out_of_scope", detail)
}

/// Whether workflows are in the caller's scope, for filtering lists and streams: each looked
/// up once (for an unscoped caller, none is).
pub struct ScopeCache {
    seen: HashMap<WorkflowId, bool>,
}

/// Most workflows a [`ScopeCache`] remembers; past it, it starts over (an event stream lives
/// long).
const SCOPE_CACHE_MAX: usize = 10_000;

impl ScopeCache {
    pub fn new() -> ScopeCache {
        ScopeCache {
            seen: HashMap::new(),
        }
    }

    /// Whether the caller sees the workflow `id` (a workflow that is gone is not seen).
    pub async fn sees(
        &mut self,
        caller: &Caller,
        e: &Engine<AnyStore>,
        id: WorkflowId,
    ) -> Result<bool, Problem> {
        if !caller.is_scoped() {
            return Ok(true);
        }
        if let Some(&seen) = self.seen.get(&id) {
            return Ok(seen);
        }
        let seen = match e.workflow(id).await {
            Ok(wf) => caller.sees(&wf.labels),
            Err(EngineError::WorkflowNotFound(_)) => false,
            Err(other) => return Err(other.into()),
        };
        if self.seen.len() >= SCOPE_CACHE_MAX {
            self.seen.clear();
        }
        self.seen.insert(id, seen);
        Ok(seen)
    }
}

impl Default for ScopeCache {
    fn default() -> ScopeCache {
        ScopeCache::new()
    }
}
