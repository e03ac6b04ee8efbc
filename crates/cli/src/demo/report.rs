//! The end of a demo run: what the API says happened, checked against what the scenario
//! promised, as a summary for people or as JSON.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use baton_client::wire::{Counts, TaskSummary, WorkflowStatusView};
use baton_client::Client;
use baton_core::StateKind;
use serde_json::{json, Value};
use uuid::Uuid;

use super::agents::AgentStats;
use super::progress::{count_of, Live};
use super::scenario::{Scenario, COVER_KEY, FORBIDDEN_KIND, TASKS_PER_SECTION};

/// Tasks asked for per page when listing the workflow.
const PAGE_TASKS: usize = 1_000;
/// Longest error message quoted in the summary, in characters.
const MESSAGE_SHOWN_MAX: usize = 100;

/// What one run showed.
pub struct Report {
    pub elapsed: Duration,
    pub counts: Counts,
    pub transitions: u64,
    pub retries: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub timeouts_recovered: Vec<String>,
    pub late_reports_refused: u64,
    pub compensations: Vec<(String, StateKind)>,
    pub failed: Vec<(String, String, String)>,
    pub cancelled: Vec<String>,
    pub added_by_planners: usize,
    pub sections: usize,
    /// How the workflow ended (`GET /v1/workflows/{id}`), and its result.
    pub status: WorkflowStatusView,
    pub result: Option<Value>,
    /// What the agents reported spending, and the workflow's budgets.
    pub usage: baton_core::Usage,
    pub budgets: std::collections::BTreeMap<String, baton_core::Budget>,
    /// Expected outcomes that did not happen, in words.
    pub missing: Vec<String>,
    /// Things that went wrong without spoiling the outcome.
    pub warnings: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Reads the workflow back through the API and checks every outcome the scenario promised.
pub async fn gather(
    client: &Client,
    workflow: Uuid,
    scenario: &Scenario,
    live: &Live,
    stats: &AgentStats,
    elapsed: Duration,
) -> anyhow::Result<Report> {
    let counts = client.counts(Some(workflow)).await?;
    let tasks = all_tasks(client, workflow).await?;
    let by_key: HashMap<&str, &TaskSummary> = tasks.iter().map(|t| (t.key.as_str(), t)).collect();
    let mut missing = Vec::new();
    let mut warnings = Vec::new();

    let open: Vec<&TaskSummary> = tasks
        .iter()
        .filter(|t| {
            !matches!(
                t.state,
                StateKind::Completed | StateKind::Failed | StateKind::Cancelled
            )
        })
        .collect();
    if !open.is_empty() {
        missing.push(format!(
            "{} tasks have not ended, e.g. {} ({})",
            open.len(),
            open[0].key,
            open[0].state.as_str()
        ));
    }
    if tasks.len() != scenario.expected_total() {
        missing.push(format!(
            "the workflow has {} tasks, {} were expected after decomposition and compensation",
            tasks.len(),
            scenario.expected_total()
        ));
    }

    // Every task that needed more than one attempt or failed: their errors tell the story.
    let mut errors_by_kind = BTreeMap::new();
    let mut failed = Vec::new();
    let mut timeouts_recovered = Vec::new();
    for t in tasks
        .iter()
        .filter(|t| t.attempt > 1 || t.state == StateKind::Failed)
    {
        let view = client.task(t.id).await?;
        let kinds: Vec<&str> = view
            .errors
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        for kind in &kinds {
            *errors_by_kind.entry((*kind).to_owned()).or_insert(0) += 1;
        }
        if t.state == StateKind::Failed {
            if view.waiting.is_some() {
                missing.push(format!("{} is still waiting for a retry", t.key));
            }
            let last = view.errors.last().cloned().unwrap_or(Value::Null);
            failed.push((
                t.key.clone(),
                last["kind"].as_str().unwrap_or("?").to_owned(),
                last["message"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        if t.state == StateKind::Completed && kinds.iter().any(|k| k.starts_with("timeout.")) {
            timeouts_recovered.push(t.key.clone());
        }
    }

    let state_of = |key: &str| by_key.get(key).map(|t| t.state);
    let forbidden = scenario.forbidden_key();
    match failed.iter().find(|(k, _, _)| *k == forbidden) {
        Some((_, kind, _)) if kind == FORBIDDEN_KIND => {}
        Some((_, kind, _)) => missing.push(format!(
            "{forbidden} failed with {kind}, not {FORBIDDEN_KIND}"
        )),
        None => missing.push(format!(
            "{forbidden} should have failed for good ({FORBIDDEN_KIND}); it is {}",
            describe(state_of(&forbidden))
        )),
    }
    if failed.len() > 1 {
        let others: Vec<&str> = failed
            .iter()
            .map(|(k, _, _)| k.as_str())
            .filter(|k| *k != forbidden)
            .collect();
        missing.push(format!("unexpected failures: {}", others.join(", ")));
    }
    let compensation = scenario.compensation_key();
    if state_of(&compensation) != Some(StateKind::Completed) {
        missing.push(format!(
            "the compensation task {compensation} should have completed; it is {}",
            describe(state_of(&compensation))
        ));
    }
    let compensations: Vec<(String, StateKind)> = tasks
        .iter()
        .filter(|t| t.key.ends_with("/undo"))
        .map(|t| (t.key.clone(), t.state))
        .collect();
    let expected_cancelled = scenario.cancelled_keys();
    for key in &expected_cancelled {
        if state_of(key) != Some(StateKind::Cancelled) {
            missing.push(format!(
                "{key} depends on {forbidden} and should have been cancelled; it is {}",
                describe(state_of(key))
            ));
        }
    }
    let cancelled: Vec<String> = tasks
        .iter()
        .filter(|t| t.state == StateKind::Cancelled)
        .map(|t| t.key.clone())
        .collect();
    if cancelled.len() > expected_cancelled.len() {
        missing.push(format!(
            "{} tasks were cancelled, {} expected",
            cancelled.len(),
            expected_cancelled.len()
        ));
    }
    let stalled = scenario.stalled_key();
    if !timeouts_recovered.contains(&stalled) {
        missing.push(format!(
            "{stalled} should have timed out and then completed on a retry; it is {}",
            describe(state_of(&stalled))
        ));
    }
    let late_reports_refused = stats.late_reports_refused.load(Ordering::Relaxed);
    if late_reports_refused == 0 {
        missing.push(format!(
            "the late report of {stalled}'s first attempt should have been refused (lease taken back)"
        ));
    }
    for (key, failing) in scenario.flaky() {
        match by_key.get(key.as_str()) {
            Some(t) if t.state == StateKind::Completed && t.attempt > failing => {}
            t => missing.push(format!(
                "{key} should have completed after {failing} transient failure(s); it is {}{}",
                describe(t.map(|t| t.state)),
                t.map(|t| format!(" on attempt {}", t.attempt))
                    .unwrap_or_default()
            )),
        }
    }
    let errors = stats.report_errors.load(Ordering::Relaxed);
    if errors > 0 {
        let kept = stats
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("; ");
        warnings.push(format!(
            "{errors} agent requests were refused or failed: {kept}"
        ));
    }
    // The workflow as a whole: failed (the forbidden source), yet with its result, since the
    // outline and the cover it refers to completed.
    let view = client.workflow(workflow).await?;
    if view.status != WorkflowStatusView::Failed {
        missing.push(format!(
            "the workflow should have ended failed (one task failed for good); it is {}",
            serde_json::to_value(view.status)?
        ));
    }
    let cover_lines = view
        .result
        .as_ref()
        .and_then(|r| r["cover"].as_array())
        .map(Vec::len);
    if cover_lines != Some(scenario.sections) {
        missing.push(format!(
            "the workflow's result should hold the {COVER_KEY}'s {} lines (one per section, \
             fanned out over the outline); it is {}",
            scenario.sections,
            view.result
                .as_ref()
                .map_or("absent".to_owned(), |r| shorten(&r.to_string()))
        ));
    }
    let lagged = live.lagged.load(Ordering::Relaxed);
    if lagged > 0 {
        warnings.push(format!("the event stream skipped {lagged} events"));
    }

    Ok(Report {
        elapsed,
        counts,
        transitions: live.transitions.load(Ordering::Relaxed),
        retries: tasks
            .iter()
            .map(|t| u64::from(t.attempt.saturating_sub(1)))
            .sum(),
        errors_by_kind,
        timeouts_recovered,
        late_reports_refused,
        compensations,
        failed,
        cancelled,
        added_by_planners: tasks
            .len()
            .saturating_sub(3 + scenario.sections + compensations_len(&tasks)),
        sections: scenario.sections,
        status: view.status,
        result: view.result,
        usage: view.usage,
        budgets: view.budgets,
        missing,
        warnings,
    })
}

fn compensations_len(tasks: &[TaskSummary]) -> usize {
    tasks.iter().filter(|t| t.key.ends_with("/undo")).count()
}

fn describe(state: Option<StateKind>) -> String {
    match state {
        Some(s) => s.as_str().to_owned(),
        None => "missing".to_owned(),
    }
}

async fn all_tasks(client: &Client, workflow: Uuid) -> anyhow::Result<Vec<TaskSummary>> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = client
            .tasks(Some(workflow), None, after, PAGE_TASKS)
            .await?;
        all.extend(page.tasks);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

impl Report {
    fn per_second(&self) -> f64 {
        self.counts.total as f64 / self.elapsed.as_secs_f64().max(0.001)
    }

    /// The summary for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "Finished in {:.1} s: {} tasks ({:.0} tasks/s), {} transitions.",
            self.elapsed.as_secs_f64(),
            self.counts.total,
            self.per_second(),
            self.transitions
        ));
        line(String::new());
        for state in [
            StateKind::Completed,
            StateKind::Failed,
            StateKind::Cancelled,
        ] {
            let n = count_of(&self.counts, state);
            let detail = match state {
                StateKind::Failed => self
                    .failed
                    .iter()
                    .map(|(k, kind, msg)| format!("{k}: {kind}, {}", shorten(msg)))
                    .collect::<Vec<_>>()
                    .join("; "),
                StateKind::Cancelled if !self.cancelled.is_empty() => {
                    format!("{} (upstream failed)", self.cancelled.join(", "))
                }
                _ => String::new(),
            };
            line(
                format!("  {:<13}{n:>5}  {detail}", state.as_str())
                    .trim_end()
                    .to_owned(),
            );
        }
        for state in [
            StateKind::Blocked,
            StateKind::Pending,
            StateKind::Assigned,
            StateKind::Executing,
        ] {
            let n = count_of(&self.counts, state);
            if n > 0 {
                line(format!("  {:<13}{n:>5}", state.as_str()));
            }
        }
        line(String::new());
        line(format!(
            "  decomposition  3 tasks submitted; planners added {} ({} sections of {})",
            self.added_by_planners, self.sections, TASKS_PER_SECTION
        ));
        line(format!(
            "  fan-out        {COVER_KEY} expanded into {} lines, one per topic of the outline",
            self.sections
        ));
        let spend: Vec<String> = self
            .usage
            .iter()
            .map(|(unit, spent)| match self.budgets.get(unit) {
                Some(b) => format!("{spent} {unit} of a {} {unit} budget", b.limit),
                None => format!("{spent} {unit}"),
            })
            .collect();
        if !spend.is_empty() {
            line(format!(
                "  spend          {} (reported by the agents)",
                spend.join(", ")
            ));
        }
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        line(format!("  errors         {}", or_none(&kinds)));
        line(format!("  retries        {}", self.retries));
        let mut timeouts = format!(
            "  timeouts       {} recovered",
            self.timeouts_recovered.len()
        );
        if !self.timeouts_recovered.is_empty() {
            timeouts.push_str(&format!(
                " ({}): the watchdog failed the silent attempt at its heartbeat deadline and a \
                 retry completed the task",
                self.timeouts_recovered.join(", ")
            ));
        }
        if self.late_reports_refused > 0 {
            timeouts.push_str("; the silent agent's late report was refused");
        }
        line(timeouts);
        let comps: Vec<String> = self
            .compensations
            .iter()
            .map(|(k, s)| format!("{k} {}", s.as_str()))
            .collect();
        line(format!("  compensation   {}", or_none(&comps)));
        let status = serde_json::to_value(self.status)
            .ok()
            .and_then(|s| s.as_str().map(str::to_owned))
            .unwrap_or_default();
        line(format!(
            "  workflow       {status}; its result (the outputs it declared):"
        ));
        if let Some(result) = &self.result {
            line(format!("    goal   {}", result["goal"]));
            let cover: Vec<&Value> = result["cover"].as_array().into_iter().flatten().collect();
            for l in cover.iter().take(3) {
                line(format!("    cover  {l}"));
            }
            if cover.len() > 3 {
                line(format!("    cover  … {} more lines", cover.len() - 3));
            }
        }
        line(String::new());
        for w in &self.warnings {
            line(format!("warning: {w}"));
        }
        if self.ok() {
            line("Every task ended and every expected outcome happened.".to_owned());
        } else {
            line("Missing:".to_owned());
            for m in &self.missing {
                line(format!("  - {m}"));
            }
        }
        out
    }

    /// The summary as JSON (`--output json`).
    pub fn json(&self, api: &str) -> Value {
        json!({
            "ok": self.ok(),
            "elapsed_ms": self.elapsed.as_millis() as u64,
            "tasks_per_second": (self.per_second() * 10.0).round() / 10.0,
            "transitions": self.transitions,
            "counts": self.counts,
            "sections": self.sections,
            "added_by_planners": self.added_by_planners,
            "retries": self.retries,
            "errors_by_kind": self.errors_by_kind,
            "timeouts_recovered": self.timeouts_recovered,
            "late_reports_refused": self.late_reports_refused,
            "compensations": self.compensations.iter()
                .map(|(k, s)| json!({"key": k, "state": s.as_str()}))
                .collect::<Vec<_>>(),
            "failed": self.failed.iter()
                .map(|(k, kind, message)| json!({"key": k, "kind": kind, "message": message}))
                .collect::<Vec<_>>(),
            "cancelled": self.cancelled,
            "workflow": {"status": self.status, "result": self.result,
                         "usage": self.usage, "budgets": self.budgets},
            "missing": self.missing,
            "warnings": self.warnings,
            "api": api,
        })
    }
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn shorten(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    if first.chars().count() > MESSAGE_SHOWN_MAX {
        let cut: String = first.chars().take(MESSAGE_SHOWN_MAX).collect();
        format!("{cut}…")
    } else {
        first.to_owned()
    }
}
