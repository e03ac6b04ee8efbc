//! What operators do to tasks and workflows: cancel, retry a final failure, pause and resume,
//! skip, fail, rerun from a task. Each is an event of the lifecycle with the operator as its
//! actor and a reason, decided by the core like any other, and written with its audit entry in
//! one transaction ([`baton_store::ControlWrite`]).

use std::collections::{HashMap, HashSet, VecDeque};

use baton_core::{CancelReason, ErrorReport, Event, Paused, State, StateKind, Task, TaskId};
use baton_core::{TaskKey, Timestamp};
use baton_core::{Transition, WorkflowId};
use baton_store::{AuditEntry, AuditFilter, ControlWrite, Store, StoreError, TransitionRecord};
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::transition::{Cause, CAS_RETRIES_MAX};

/// Longest reason an operator may give, in bytes.
pub const REASON_LEN_MAX: usize = 1024;

/// Longest `kind` of an error (an agent's failure, an operator's), in bytes.
pub const ERROR_KIND_LEN_MAX: usize = 128;

/// Longest `message` of an error (an agent's failure, an operator's), in bytes: what the
/// SDKs and the Rust runner send at most (8,192 characters, up to 4 bytes each). A task keeps
/// every attempt's error and writes them all with each of its transitions, so an unbounded
/// message would make every later write of the task as large.
pub const ERROR_MESSAGE_LEN_MAX: usize = 32 * 1024;

/// Checks an error given at `error`: its `kind`, what retry policies (`retry.non_retryable`)
/// and people read a failure by, so never empty; its `message`, bounded.
pub(crate) fn check_error(error: &ErrorReport) -> Result<(), EngineError> {
    if error.kind.is_empty() || error.kind.len() > ERROR_KIND_LEN_MAX {
        return Err(EngineError::invalid(
            "error.kind",
            format!("1 to {ERROR_KIND_LEN_MAX} bytes"),
        ));
    }
    if error.message.len() > ERROR_MESSAGE_LEN_MAX {
        return Err(EngineError::invalid(
            "error.message",
            format!(
                "at most {ERROR_MESSAGE_LEN_MAX} bytes (this one has {})",
                error.message.len()
            ),
        ));
    }
    Ok(())
}

/// Checks the reason given for a cancellation, which may be empty.
fn check_cancel_reason(reason: &str) -> Result<(), EngineError> {
    if reason.len() > REASON_LEN_MAX {
        return Err(EngineError::invalid(
            "reason",
            format!("at most {REASON_LEN_MAX} bytes"),
        ));
    }
    Ok(())
}

/// Tasks of a workflow paused or resumed per transaction: a page, so that a busy workflow's
/// other changes cannot keep a whole-workflow write from ever winning its compare-and-sets.
const WORKFLOW_CONTROL_PAGE: usize = 256;

/// Who asks for an operator's action, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    /// The name of the caller's token.
    pub by: String,
    pub reason: String,
}

impl Operator {
    /// Checks that the action says why: every operator action is audited with its reason.
    pub fn new(by: impl Into<String>, reason: impl Into<String>) -> Result<Operator, EngineError> {
        let reason = reason.into();
        if reason.trim().is_empty() || reason.len() > REASON_LEN_MAX {
            return Err(EngineError::invalid(
                "reason",
                format!(
                    "a non-empty reason of at most {REASON_LEN_MAX} bytes: every operator \
                     action is audited with why it was taken"
                ),
            ));
        }
        Ok(Operator {
            by: by.into(),
            reason,
        })
    }
}

/// A task a rerun reopens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RerunTask {
    pub id: TaskId,
    pub key: TaskKey,
    /// Its state before the rerun.
    pub state: StateKind,
}

/// What a rerun reopened, or with `dry_run` would reopen: the task it starts from, then
/// everything downstream of it, in breadth-first order; and the items of the fan-outs among
/// them that expand anew, superseded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RerunPlan {
    pub tasks: Vec<RerunTask>,
    pub superseded: Vec<RerunTask>,
    pub applied: bool,
}

/// One control's transitions, decided against the tasks as read.
struct Decided {
    transitions: Vec<(Transition, Event)>,
    records: Vec<TransitionRecord>,
    now: Timestamp,
}

impl<S: Store + 'static> Engine<S> {
    /// Cancels the task; a fan-out's items that have not ended are cancelled with it.
    pub async fn cancel_task(
        &self,
        id: TaskId,
        by: String,
        reason: String,
    ) -> Result<Task, EngineError> {
        check_cancel_reason(&reason)?;
        let op = Operator { by, reason };
        let loaded = self.load(id).await?;
        let mut ids = vec![id];
        if loaded.expanded.is_some_and(|n| n > 0) {
            let prefix = format!("{}[", loaded.spec.key);
            for item in self.inner.store.dependencies(id).await? {
                let open = !matches!(item.state, StateKind::Completed | StateKind::Cancelled);
                if open && item.key.0.starts_with(&prefix) {
                    ids.push(item.id);
                }
            }
        }
        let event = Event::CancelRequested {
            requested_by: op.by.clone(),
            reason: op.reason.clone(),
        };
        // The task itself must take it; its items each on their own.
        let task = self
            .one_task(id, "cancel", &op, json!({}), event.clone())
            .await?;
        if ids.len() > 1 {
            let make = |_: &Task| Some(event.clone());
            self.control(
                &ids[1..],
                &make,
                false,
                "cancel",
                &op,
                json!({"items_of": id.to_string()}),
                None,
            )
            .await?;
        }
        Ok(task)
    }

    /// Cancels every task of the workflow that has not ended; returns how many it cancelled.
    pub async fn cancel_workflow(
        &self,
        workflow: WorkflowId,
        by: String,
        reason: String,
    ) -> Result<usize, EngineError> {
        check_cancel_reason(&reason)?;
        let op = Operator { by, reason };
        let make = |t: &Task| {
            (!t.state.is_terminal()).then(|| Event::CancelRequested {
                requested_by: op.by.clone(),
                reason: op.reason.clone(),
            })
        };
        self.workflow_control(workflow, &make, "cancel", &op, json!({}), None)
            .await
    }

    /// An operator reopens a task that failed for good; the dependents its failure cancelled
    /// come back too.
    pub async fn retry_task(&self, id: TaskId, by: String) -> Result<Task, EngineError> {
        let op = Operator {
            by,
            reason: String::new(),
        };
        let event = Event::RetryRequested {
            requested_by: op.by.clone(),
        };
        self.one_task(id, "retry", &op, json!({}), event).await
    }

    /// Pauses the task: no agent is handed it and its timers stop. An agent running it
    /// finishes, unless `now` takes the task back (its next report is refused, naming the
    /// pause).
    pub async fn pause_task(
        &self,
        id: TaskId,
        op: Operator,
        now: bool,
    ) -> Result<Task, EngineError> {
        let event = Event::PauseRequested {
            requested_by: op.by.clone(),
            reason: op.reason.clone(),
            now,
        };
        self.one_task(id, "pause", &op, json!({"now": now}), event)
            .await
    }

    /// Resumes a paused task: its timers count again from the time they had left.
    pub async fn resume_task(&self, id: TaskId, op: Operator) -> Result<Task, EngineError> {
        let event = Event::ResumeRequested {
            requested_by: op.by.clone(),
            reason: op.reason.clone(),
        };
        self.one_task(id, "resume", &op, json!({}), event).await
    }

    /// Completes the task with the operator's `result`; its dependents proceed.
    pub async fn skip_task(
        &self,
        id: TaskId,
        op: Operator,
        result: Value,
    ) -> Result<Task, EngineError> {
        if result.is_null() {
            return Err(EngineError::invalid(
                "result",
                "the result the task completes with: any JSON value but null",
            ));
        }
        self.check_payloads([("result".to_owned(), &result)])
            .await?;
        let event = Event::SkipRequested {
            requested_by: op.by.clone(),
            reason: op.reason.clone(),
            result,
        };
        self.one_task(id, "skip", &op, json!({}), event).await
    }

    /// Fails the task for good with `error` (kind `forced` and the reason when absent).
    pub async fn fail_task(
        &self,
        id: TaskId,
        op: Operator,
        error: Option<ErrorReport>,
    ) -> Result<Task, EngineError> {
        if let Some(e) = &error {
            check_error(e)?;
        }
        let detail = json!({"error_kind": error.as_ref().map(|e| e.kind.clone())});
        let event = Event::FailRequested {
            requested_by: op.by.clone(),
            reason: op.reason.clone(),
            error,
        };
        self.one_task(id, "fail", &op, detail, event).await
    }

    /// Reruns the task and everything downstream of it: each reopens (history kept, a
    /// `reopened` entry) and waits for its dependencies again, with fresh attempts; tasks
    /// upstream keep their results. `input` replaces the task's own input. A fan-out on the
    /// way expands anew once its dependencies complete: its items are superseded now and its
    /// next expansion reopens those its new list still has (a rerun from one of its items
    /// keeps the others and gathers them again). All of it commits together or not at all.
    /// With `dry_run`, says what would rerun and changes nothing.
    pub async fn rerun(
        &self,
        id: TaskId,
        op: Operator,
        input: Option<Value>,
        dry_run: bool,
    ) -> Result<RerunPlan, EngineError> {
        let root = self.load(id).await?;
        if let Some(input) = &input {
            self.check_rerun_input(&root, input).await?;
        }
        let ids = self.downstream(id).await?;
        let in_rerun: HashSet<TaskId> = ids.iter().copied().collect();
        let mut tasks = Vec::with_capacity(ids.len());
        // Fan-outs that gather their items again, and the tasks superseded (by the key of the
        // task that created them): the items of the fan-outs that expand anew, and the
        // sub-tasks that tasks of the rerun added, with what depends on them outside it.
        let mut keep_items = HashSet::new();
        let mut superseded: HashMap<TaskId, TaskKey> = HashMap::new();
        let mut retired = Vec::new();
        for &tid in &ids {
            let t = self.load(tid).await?;
            tasks.push(RerunTask {
                id: t.id,
                key: t.spec.key.clone(),
                state: t.kind(),
            });
            let Some(n) = t.expanded else { continue };
            let items = self.items_of(&t, n).await?;
            if items.iter().any(|d| d.id == id) {
                keep_items.insert(tid);
                continue;
            }
            for item in items {
                superseded.insert(item.id, t.spec.key.clone());
                retired.push(RerunTask {
                    id: item.id,
                    key: item.key,
                    state: item.state,
                });
            }
        }
        let mut retired_keys = HashSet::new();
        let mut queue = VecDeque::new();
        for (parent, keys) in self.inner.store.subtasks_added(root.workflow).await? {
            if !in_rerun.contains(&parent) {
                continue;
            }
            let parent = self.load(parent).await?.spec.key.clone();
            for key in keys {
                if let Some(sub) = self.inner.store.task_by_key(root.workflow, key).await? {
                    queue.push_back((sub, parent.clone()));
                }
            }
        }
        while let Some((t, parent)) = queue.pop_front() {
            let done = matches!(
                &t.state,
                State::Cancelled {
                    reason: CancelReason::Superseded { .. }
                }
            );
            if done || in_rerun.contains(&t.id) || superseded.contains_key(&t.id) {
                continue;
            }
            for dependent in self.inner.store.dependents(t.id).await? {
                queue.push_back((self.load(dependent).await?, parent.clone()));
            }
            superseded.insert(t.id, parent);
            retired_keys.insert(t.spec.key.clone());
            retired.push(RerunTask {
                id: t.id,
                key: t.spec.key.clone(),
                state: t.kind(),
            });
        }
        let make = |t: &Task| {
            Some(match superseded.get(&t.id) {
                Some(parent) => Event::Superseded {
                    requested_by: op.by.clone(),
                    reason: op.reason.clone(),
                    parent: parent.clone(),
                },
                None => Event::Reopened {
                    requested_by: op.by.clone(),
                    reason: op.reason.clone(),
                    root: root.spec.key.clone(),
                    input: if t.id == id { input.clone() } else { None },
                    keep_items: keep_items.contains(&t.id),
                    retired: t
                        .dependencies
                        .iter()
                        .filter(|k| retired_keys.contains(*k))
                        .cloned()
                        .collect(),
                },
            })
        };
        let all: Vec<TaskId> = ids
            .iter()
            .copied()
            .chain(retired.iter().map(|t| t.id))
            .collect();
        if dry_run {
            // Decided as the rerun would be, so that a dry run refuses what the rerun would.
            self.decide_all(&all, &make, true).await?;
            return Ok(RerunPlan {
                tasks,
                superseded: retired,
                applied: false,
            });
        }
        let mut detail = json!({
            "tasks": ids.len(),
            "new_input": input.is_some(),
            "reopened": tasks.iter().map(|t| t.key.0.clone()).collect::<Vec<_>>(),
        });
        if !retired.is_empty() {
            detail["superseded"] = json!(retired.iter().map(|t| &t.key.0).collect::<Vec<_>>());
        }
        self.control(&all, &make, true, "rerun", &op, detail, None)
            .await?;
        Ok(RerunPlan {
            tasks,
            superseded: retired,
            applied: true,
        })
    }

    /// The items an expanded fan-out (of `n` items) depends on.
    pub(crate) async fn items_of(
        &self,
        fan_out: &Task,
        n: u32,
    ) -> Result<Vec<baton_store::Dependency>, EngineError> {
        let keys: HashSet<TaskKey> = (0..n as usize)
            .map(|i| baton_core::template::item_key(&fan_out.spec.key, i))
            .collect();
        let mut items: Vec<_> = self
            .inner
            .store
            .dependencies(fan_out.id)
            .await?
            .into_iter()
            .filter(|d| keys.contains(&d.key))
            .collect();
        items.sort_by_key(|d| item_index(&d.key));
        Ok(items)
    }

    /// Pauses every task of the workflow that has not ended, and marks the workflow paused so
    /// that the tasks created in it later start paused; returns how many tasks it paused.
    pub async fn pause_workflow(
        &self,
        workflow: WorkflowId,
        op: Operator,
        now: bool,
    ) -> Result<usize, EngineError> {
        let make = |t: &Task| {
            let running = matches!(t.kind(), StateKind::Assigned | StateKind::Executing);
            let takes = !t.state.is_terminal() && (!t.is_paused() || (now && running));
            takes.then(|| Event::PauseRequested {
                requested_by: op.by.clone(),
                reason: op.reason.clone(),
                now,
            })
        };
        let mark = Paused {
            by: op.by.clone(),
            reason: op.reason.clone(),
            at: self.now(),
            frozen_at: None,
        };
        self.workflow_control(
            workflow,
            &make,
            "pause",
            &op,
            json!({"now": now}),
            Some(Some(mark)),
        )
        .await
    }

    /// Resumes every paused task of the workflow and clears its pause; returns how many tasks
    /// it resumed.
    pub async fn resume_workflow(
        &self,
        workflow: WorkflowId,
        op: Operator,
    ) -> Result<usize, EngineError> {
        // A budget that pauses it would pause it again at the next report: raise it first.
        let wf = self.workflow(workflow).await?;
        if let Some((baton_core::BudgetPolicy::Pause, why)) = self.budget_reached(&wf).await? {
            return Err(EngineError::BudgetReached(why));
        }
        let make = |t: &Task| {
            t.is_paused().then(|| Event::ResumeRequested {
                requested_by: op.by.clone(),
                reason: op.reason.clone(),
            })
        };
        self.workflow_control(workflow, &make, "resume", &op, json!({}), Some(None))
            .await
    }

    /// Fails every task of the workflow that has not ended, with `make`'s event.
    pub(crate) async fn fail_workflow(
        &self,
        workflow: WorkflowId,
        make: &(dyn Fn(&Task) -> Option<Event> + Sync),
        op: &Operator,
    ) -> Result<usize, EngineError> {
        self.workflow_control(workflow, make, "fail", op, json!({}), None)
            .await
    }

    /// Records an operator action that changed no task through a control (a signal): its
    /// audit entry alone.
    pub(crate) async fn audit_only(
        &self,
        action: &str,
        op: &Operator,
        workflow: Option<WorkflowId>,
        detail: Value,
    ) -> Result<(), EngineError> {
        let audit = AuditEntry {
            id: 0,
            at: self.now(),
            actor: op.by.clone(),
            action: action.to_owned(),
            workflow,
            task: None,
            reason: op.reason.clone(),
            detail: detail.to_string(),
        };
        self.inner
            .store
            .control(ControlWrite {
                budgets: Default::default(),
                records: Vec::new(),
                workflow_pause: None,
                audit: Some(audit),
            })
            .await?;
        Ok(())
    }

    /// The audit log, newest first.
    pub async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, EngineError> {
        Ok(self.inner.store.audit(filter).await?)
    }

    /// The pause of the workflow tasks are about to be created in (sub-tasks, a fan-out's
    /// items, a compensation): they start paused by it in the same commit, whose
    /// [`baton_store::WorkflowRef::Existing`] carries what was read here, so that the store
    /// refuses the batch if the workflow was paused or resumed meanwhile.
    pub(crate) async fn creation_pause(
        &self,
        workflow: WorkflowId,
    ) -> Result<Option<Paused>, EngineError> {
        Ok(self
            .inner
            .store
            .workflow(workflow)
            .await?
            .ok_or(EngineError::WorkflowNotFound(workflow))?
            .paused)
    }

    /// A task just created (or reopened) by a batch, paused by its workflow's `pause`: the
    /// transition and its event, to go in the same batch.
    pub(crate) fn held_by(
        pause: &Paused,
        t: &Transition,
    ) -> Result<(Transition, Event), EngineError> {
        let event = Event::PauseRequested {
            requested_by: pause.by.clone(),
            reason: pause.reason.clone(),
            now: false,
        };
        let held = baton_core::apply(&t.task, &event, t.task.updated_at)?;
        Ok((held, event))
    }

    // ---- the one path of a control --------------------------------------------------------

    /// Decides `make`'s event for each task, writes the transitions with the audit entry (and
    /// the workflow's pause mark) in one transaction, and carries them out; a task that changed
    /// meanwhile makes it start over from fresh reads. `strict`: a refusal fails the control;
    /// otherwise a task that refuses is left out. Returns the tasks changed.
    #[allow(clippy::too_many_arguments)]
    async fn control(
        &self,
        ids: &[TaskId],
        make: &(dyn Fn(&Task) -> Option<Event> + Sync),
        strict: bool,
        action: &str,
        op: &Operator,
        detail: Value,
        workflow_pause: Option<(WorkflowId, Option<Paused>)>,
    ) -> Result<Vec<Task>, EngineError> {
        for _ in 0..CAS_RETRIES_MAX {
            let decided = self.decide_all(ids, make, strict).await?;
            // The task it was asked for: a rerun's root, a fan-out cancelled with its items.
            let task = ids.first().copied();
            let workflow = workflow_pause
                .as_ref()
                .map(|(w, _)| *w)
                .or_else(|| decided.transitions.first().map(|(t, _)| t.task.workflow));
            let audit = AuditEntry {
                id: 0,
                at: decided.now,
                actor: op.by.clone(),
                action: action.to_owned(),
                workflow,
                task,
                reason: op.reason.clone(),
                detail: with_count(&detail, decided.transitions.len()),
            };
            match self
                .commit_control(decided, Some(audit), workflow_pause.clone())
                .await
            {
                Err(EngineError::Store(StoreError::Conflict { .. })) => continue,
                other => return other,
            }
        }
        Err(EngineError::Contended(ids[0]))
    }

    /// A control over every task of the workflow: the workflow's mark (if it sets or clears
    /// one) commits first with the audit entry (so that the action is on record before any task changes, and tasks
    /// created from then on take the mark), then its tasks a page at a time.
    async fn workflow_control(
        &self,
        workflow: WorkflowId,
        make: &(dyn Fn(&Task) -> Option<Event> + Sync),
        action: &str,
        op: &Operator,
        detail: Value,
        mark: Option<Option<Paused>>,
    ) -> Result<usize, EngineError> {
        if self.inner.store.workflow(workflow).await?.is_none() {
            return Err(EngineError::WorkflowNotFound(workflow));
        }
        let now = self.now();
        let audit = AuditEntry {
            id: 0,
            at: now,
            actor: op.by.clone(),
            action: action.to_owned(),
            workflow: Some(workflow),
            task: None,
            reason: op.reason.clone(),
            detail: detail.to_string(),
        };
        self.commit_control(
            Decided {
                transitions: Vec::new(),
                records: Vec::new(),
                now,
            },
            Some(audit),
            mark.map(|m| (workflow, m)),
        )
        .await?;
        let ids: Vec<TaskId> = self
            .workflow_tasks(workflow)
            .await?
            .iter()
            .filter(|t| make(t).is_some())
            .map(|t| t.id)
            .collect();
        let mut changed = 0;
        'pages: for chunk in ids.chunks(WORKFLOW_CONTROL_PAGE) {
            for _ in 0..CAS_RETRIES_MAX {
                let decided = self.decide_all(chunk, make, false).await?;
                let n = decided.transitions.len();
                match self.commit_control(decided, None, None).await {
                    Err(EngineError::Store(e)) if e.is_conflict() => continue,
                    Err(e) => return Err(e),
                    Ok(_) => {
                        changed += n;
                        continue 'pages;
                    }
                }
            }
            // The mark holds: the same control again takes the tasks this one did not.
            return Err(EngineError::Contended(chunk[0]));
        }
        Ok(changed)
    }

    /// A control of one task by one event, refused as the core refuses it: the task after
    /// it, or as it stands when the event was a duplicate of what was applied.
    async fn one_task(
        &self,
        id: TaskId,
        action: &str,
        op: &Operator,
        detail: Value,
        event: Event,
    ) -> Result<Task, EngineError> {
        let make = |_: &Task| Some(event.clone());
        let mut changed = self
            .control(&[id], &make, true, action, op, detail, None)
            .await?;
        match changed.pop() {
            Some(task) => Ok(task),
            None => self.load(id).await,
        }
    }

    async fn decide_all(
        &self,
        ids: &[TaskId],
        make: &(dyn Fn(&Task) -> Option<Event> + Sync),
        strict: bool,
    ) -> Result<Decided, EngineError> {
        let mut decided = Decided {
            transitions: Vec::with_capacity(ids.len()),
            records: Vec::with_capacity(ids.len()),
            now: self.now(),
        };
        for &id in ids {
            let task = match self.load(id).await {
                Ok(task) => task,
                Err(EngineError::TaskNotFound(_)) if !strict => continue,
                Err(e) => return Err(e),
            };
            let Some(event) = make(&task) else { continue };
            match self.decide(&task, &event, &Cause::default()) {
                Ok(Some((t, now))) => {
                    decided.now = decided.now.max(now);
                    decided
                        .records
                        .push(TransitionRecord::of(&t, event.clone(), now));
                    decided.transitions.push((t, event));
                }
                Ok(None) => {}
                Err(e) if strict => return Err(e),
                Err(_) => {}
            }
        }
        Ok(decided)
    }

    async fn commit_control(
        &self,
        decided: Decided,
        audit: Option<AuditEntry>,
        workflow_pause: Option<(WorkflowId, Option<Paused>)>,
    ) -> Result<Vec<Task>, EngineError> {
        if decided.records.is_empty() && audit.is_none() && workflow_pause.is_none() {
            return Ok(Vec::new());
        }
        let released = self
            .inner
            .store
            .control(ControlWrite {
                budgets: Default::default(),
                records: decided.records,
                workflow_pause,
                audit,
            })
            .await?;
        let tasks = decided
            .transitions
            .into_iter()
            .map(|(t, event)| {
                self.after_commit(&t, &event, None);
                t.task
            })
            .collect();
        self.after_released(released);
        Ok(tasks)
    }

    /// The task and every task downstream of it in its workflow's graph, breadth first.
    async fn downstream(&self, id: TaskId) -> Result<Vec<TaskId>, EngineError> {
        let mut seen = HashSet::from([id]);
        let mut order = vec![id];
        let mut queue = VecDeque::from([id]);
        while let Some(next) = queue.pop_front() {
            for dependent in self.inner.store.dependents(next).await? {
                if seen.insert(dependent) {
                    order.push(dependent);
                    queue.push_back(dependent);
                }
            }
        }
        Ok(order)
    }

    /// A rerun's new input is checked as a submission's: its size, its references (only to
    /// the task's dependencies) and its artifacts.
    async fn check_rerun_input(&self, task: &Task, input: &Value) -> Result<(), EngineError> {
        let refs = baton_core::template::references(input, "input")
            .map_err(|e| EngineError::invalid(e.field, e.expected))?;
        for r in refs {
            if !task.dependencies.contains(&r.from) {
                return Err(EngineError::invalid(
                    format!("{}.{}", r.at, baton_core::template::FROM),
                    format!(
                        "the key of one of the task's dependencies, not {:?}",
                        r.from.0
                    ),
                ));
            }
        }
        let mut spec = (*task.spec).clone();
        spec.input = input.clone();
        spec.validate()
            .map_err(|e| EngineError::invalid(e.field, e.expected))?;
        self.check_payloads([("input".to_owned(), input)]).await
    }
}

/// The index of an item's key (`KEY[i]`), to order a fan-out's items.
fn item_index(key: &TaskKey) -> usize {
    key.0
        .rsplit_once('[')
        .and_then(|(_, i)| i.strip_suffix(']'))
        .and_then(|i| i.parse().ok())
        .unwrap_or(usize::MAX)
}

/// The control's detail with how many tasks it changed.
fn with_count(detail: &Value, changed: usize) -> String {
    let mut d = detail.clone();
    if let Value::Object(map) = &mut d {
        map.insert("tasks_changed".into(), json!(changed));
    }
    d.to_string()
}
