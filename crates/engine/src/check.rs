//! `baton check`: verifies a store against the lifecycle, task by task. Read-only, so it can
//! run against a live store (a task changing during the check may be reported; run it again).
//!
//! Checked: every history replays through the core and equals the stored task (so every
//! history is a legal path, and fencing tokens only grow), and its timestamps never decrease; a completed task has exactly one
//! success, from the lease it completed under; no task started before all of its dependencies
//! had completed; every task that ended failed for good or cancelled and declares a
//! compensation has its compensation task; the tasks held per concurrency key are those
//! assigned or executing with it; the counts per state, the store's and each workflow's, equal
//! the tasks (when no transition moved them during the check); each workflow's usage is the sum of its tasks'
//! (on a live store, a usage report landing during the check may be reported: run it again);
//! every task's workflow exists (or is being deleted by retention). Tasks retention deletes
//! while the check reads are left out of it.

use std::collections::HashMap;

use baton_core::{
    replay, CancelReason, Event, EventKind, FencingToken, State, StateKind, Task, TaskId,
    Timestamp, Usage, WorkflowId,
};
use baton_store::{StateCounts, Store, StoreError, TaskFilter, TaskPages, PAGE_ROWS_MAX};

/// Longest history read for one task.
const HISTORY_MAX: usize = 100_000;
/// Times a task that moved while it was read is read again before its replay is judged.
const REREADS_MAX: usize = 8;

/// One thing wrong with the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub task: Option<TaskId>,
    pub workflow: Option<WorkflowId>,
    pub detail: String,
}

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub tasks: u64,
    pub history_entries: u64,
    pub violations: Vec<Violation>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// What the second pass needs to know of every task.
struct Facts {
    completed_at: Option<Timestamp>,
}

/// Whether the task's history replays to the task once neither moves between the two reads:
/// on a live store a transition may land between reading a task and reading its history.
async fn replays_when_still<S: Store>(store: &S, id: TaskId) -> Result<bool, StoreError> {
    for _ in 0..REREADS_MAX {
        let Some(task) = store.task(id).await? else {
            return Ok(true);
        };
        let history = store.history(id, 0, HISTORY_MAX).await?;
        match replay(&history) {
            Ok(rebuilt) if rebuilt == task => return Ok(true),
            Ok(rebuilt) if rebuilt.version != task.version => continue,
            _ => return Ok(false),
        }
    }
    Ok(false)
}

/// Counts `task` in `counts`: its state, and whether it is paused or waits to be retried.
fn count(counts: &mut StateCounts, task: &Task) {
    counts.0[task.kind().index()] += 1;
    counts.1 += u64::from(task.is_paused());
    counts.2 += u64::from(matches!(
        task.state,
        State::Failed {
            retry_at: Some(_),
            ..
        }
    ));
}

/// Checks every task of the store; `progress` is called with the tasks checked so far.
pub async fn check_store<S: Store>(
    store: &S,
    mut progress: impl FnMut(u64),
) -> Result<CheckReport, StoreError> {
    let mut report = CheckReport::default();
    let mut facts: HashMap<TaskId, Facts> = HashMap::new();
    let mut started: Vec<(TaskId, WorkflowId, Timestamp)> = Vec::new();
    let mut spent: HashMap<WorkflowId, Usage> = HashMap::new();
    let mut holding: std::collections::BTreeMap<String, u64> = Default::default();
    // Read before the tasks and again after: on a live store, the comparison is only made
    // when no transition moved the counts meanwhile.
    let counts_before = store.counts(None).await?;
    let mut counted = StateCounts::default();
    let mut by_workflow: HashMap<WorkflowId, StateCounts> = HashMap::new();
    let mut pages = TaskPages::new(TaskFilter::default());
    let mut workflows: std::collections::BTreeSet<WorkflowId> = Default::default();
    // A workflow retention is deleting loses its tasks a batch at a time, not in their order.
    let deleting: std::collections::BTreeSet<WorkflowId> =
        store.gc_marked(PAGE_ROWS_MAX).await?.into_iter().collect();
    while let Some(page) = pages.next(store).await? {
        for task in &page {
            let history = store.history(task.id, 0, HISTORY_MAX).await?;
            if history.is_empty() && store.task(task.id).await?.is_none() {
                // Deleted by retention since the page was read: nothing to check.
                continue;
            }
            workflows.insert(task.workflow);
            report.tasks += 1;
            count(&mut counted, task);
            count(by_workflow.entry(task.workflow).or_default(), task);
            let sum = spent.entry(task.workflow).or_default();
            for (unit, amount) in &task.usage {
                let s = sum.entry(unit.clone()).or_default();
                *s = s.saturating_add(*amount);
            }
            if matches!(task.kind(), StateKind::Assigned | StateKind::Executing) {
                for (key, _) in task.flow().map(|f| f.concurrency).unwrap_or_default() {
                    *holding.entry(key).or_default() += 1;
                }
            }
            let violation = |detail: String| Violation {
                task: Some(task.id),
                workflow: Some(task.workflow),
                detail,
            };
            report.history_entries += history.len() as u64;
            match replay(&history) {
                Err(e) => report
                    .violations
                    .push(violation(format!("history does not replay: {e}"))),
                Ok(rebuilt) if rebuilt != *task && !replays_when_still(store, task.id).await? => {
                    report.violations.push(violation(
                        "replaying the history does not give the stored task".into(),
                    ))
                }
                Ok(_) => {}
            }
            if let Some(w) = history.windows(2).find(|w| w[1].at < w[0].at) {
                report.violations.push(violation(format!(
                    "history goes back in time: entry {} at {} follows entry {} at {}",
                    w[1].seq, w[1].at, w[0].seq, w[0].at
                )));
            }
            // A rerun starts the count again: what counts is the run since the last reopening
            // (or since a rerun superseded it, as a fan-out's item).
            let run = history
                .iter()
                .rposition(|h| {
                    matches!(h.event.kind(), EventKind::Reopened | EventKind::Superseded)
                })
                .map_or(&history[..], |i| &history[i + 1..]);
            let successes: Vec<_> = run
                .iter()
                .filter_map(|h| match &h.event {
                    Event::ExecutionSucceeded { token, .. } => Some(*token),
                    _ => None,
                })
                .collect();
            let skipped = run
                .last()
                .is_some_and(|h| h.event.kind() == EventKind::SkipRequested);
            if let State::Completed { token, .. } = &task.state {
                // A fan-out, a signal task and a sleep complete by themselves (with their
                // items' results, the signal's data, the sleep's length); a skipped task by an
                // operator's result.
                let expected: &[FencingToken] = if task.spec.runs_without_agent() || skipped {
                    &[]
                } else {
                    std::slice::from_ref(token)
                };
                if successes.as_slice() != expected {
                    report.violations.push(violation(format!(
                        "completed with {} success reports, expected exactly one from lease {token}",
                        successes.len()
                    )));
                }
            } else if !successes.is_empty() {
                report.violations.push(violation(format!(
                    "{} but its history has a success",
                    task.kind()
                )));
            }
            if let Some(first) = run
                .iter()
                .find(|h| h.event.kind() == EventKind::ExecutionStarted)
            {
                started.push((task.id, task.workflow, first.at));
            }
            // A rerun's superseded tasks are cancelled without compensating.
            let superseded = matches!(
                task.state,
                State::Cancelled {
                    reason: CancelReason::Superseded { .. }
                }
            );
            let ended_badly = (matches!(task.state, State::Cancelled { .. }) && !superseded)
                || matches!(task.state, State::Failed { retry_at: None, .. });
            if ended_badly && !deleting.contains(&task.workflow) {
                if let Some(comp) = &task.spec.compensation {
                    if store
                        .task_by_key(task.workflow, comp.key.clone())
                        .await?
                        .is_none()
                    {
                        report.violations.push(violation(format!(
                            "ended {} but its compensation task `{}` does not exist",
                            task.kind(),
                            comp.key
                        )));
                    }
                }
            }
            facts.insert(
                task.id,
                Facts {
                    completed_at: (task.kind() == StateKind::Completed)
                        .then(|| task.entered_at.get(StateKind::Completed))
                        .flatten(),
                },
            );
        }
        progress(report.tasks);
        if page.len() < PAGE_ROWS_MAX {
            break;
        }
    }
    for (id, workflow, at) in started {
        for dep in store.dependencies(id).await? {
            if !facts.contains_key(&dep.id) && store.task(id).await?.is_none() {
                // Deleted by retention during the check, with its workflow.
                continue;
            }
            let done = facts.get(&dep.id).and_then(|f| f.completed_at);
            if done.is_none_or(|d| d > at) {
                report.violations.push(Violation {
                    task: Some(id),
                    workflow: Some(workflow),
                    detail: format!(
                        "started at {at} before its dependency `{}` completed ({})",
                        dep.key,
                        done.map_or("never".into(), |d| d.to_string())
                    ),
                });
            }
        }
    }
    // Every task belongs to a workflow: retention deletes a workflow's row only once its
    // tasks are gone (one it is deleting is not shown, but is marked).
    for workflow in workflows {
        if deleting.contains(&workflow) || store.workflow(workflow).await?.is_some() {
            continue;
        }
        let left = store
            .tasks(TaskFilter {
                workflow: Some(workflow),
                limit: 1,
                ..TaskFilter::default()
            })
            .await?;
        let still_deleting = store.gc_marked(PAGE_ROWS_MAX).await?.contains(&workflow);
        if !left.is_empty() && !still_deleting && !deleting.contains(&workflow) {
            report.violations.push(Violation {
                task: left.first().map(|t| t.id),
                workflow: Some(workflow),
                detail: "the task's workflow does not exist".into(),
            });
        }
    }
    let stored = store.counts(None).await?;
    let moved = stored != counts_before;
    for (workflow, sum) in &spent {
        let recorded = store.workflow_usage(*workflow).await?;
        if recorded != *sum && !moved {
            report.violations.push(Violation {
                task: None,
                workflow: Some(*workflow),
                detail: format!(
                    "the workflow's usage {recorded:?} is not the sum of its tasks' {sum:?}"
                ),
            });
        }
    }
    let held: std::collections::BTreeMap<String, u64> =
        store.concurrency_held().await?.into_iter().collect();
    if held != holding && !moved {
        report.violations.push(Violation {
            task: None,
            workflow: None,
            detail: format!(
                "tasks held per concurrency key {held:?} differ from the tasks assigned or \
                 executing with each key {holding:?}"
            ),
        });
    }
    for (workflow, counted) in &by_workflow {
        if moved || deleting.contains(workflow) {
            continue;
        }
        let stored = store.counts(Some(*workflow)).await?;
        if stored != *counted {
            report.violations.push(Violation {
                task: None,
                workflow: Some(*workflow),
                detail: format!(
                    "the workflow's counts per state {:?} (paused {}, retrying {}) differ from \
                     its tasks {:?} (paused {}, retrying {})",
                    stored.0, stored.1, stored.2, counted.0, counted.1, counted.2
                ),
            });
        }
    }
    if stored == counts_before && stored != counted {
        report.violations.push(Violation {
            task: None,
            workflow: None,
            detail: format!(
                "counts per state {:?} (paused {}, retrying {}) differ from the tasks {:?} \
                 (paused {}, retrying {})",
                stored.0, stored.1, stored.2, counted.0, counted.1, counted.2
            ),
        });
    }
    Ok(report)
}
