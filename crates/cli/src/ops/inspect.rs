//! `baton tasks`, `baton show ID` and `baton agents`: what the server knows, as tables.

use baton_client::wire::{
    HistoryEntry as HistoryView, TaskList, TaskSummary, TaskView, WorkflowStatusView, WorkflowView,
};
use baton_client::{Client, ClientError};
use baton_core::{
    Actor, CancelReason, Event, EventKind, HistoryEntry, State, StateKind, Task, TaskError,
    TaskSpec, Timestamp,
};
use baton_engine::WaitReason;
use baton_store::PAGE_ROWS_MAX;
use serde_json::Value;
use uuid::Uuid;

use super::ids::{IdArg, Kind};
use super::render::{
    duration, now_ms, one_line, relative, short_id, timestamp, truncate, Cell, Color, Paint, Table,
};
use super::{call, print_json, resolve_opt, StateArg};
use crate::Output;

/// Most tasks `--all` fetches: beyond this, narrow the list with `--workflow` or `--state`.
const ALL_TASKS_MAX: usize = 100_000;
/// Longest result or progress shown in `show` (the JSON output has it whole).
const PAYLOAD_SHOWN_MAX: usize = 400;

/// Arguments of `baton tasks`.
#[derive(clap::Args)]
pub struct TasksArgs {
    /// Only this workflow's tasks.
    #[arg(long, value_name = "ID")]
    workflow: Option<IdArg>,
    /// Only tasks in this state.
    #[arg(long, value_enum)]
    state: Option<StateArg>,
    /// At most this many tasks.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u16).range(1..=PAGE_ROWS_MAX as i64))]
    limit: u16,
    /// Every task, page after page (instead of --limit).
    #[arg(long, conflicts_with = "limit")]
    all: bool,
}

/// `baton tasks`: one page, or every page with `--all`.
pub async fn tasks(client: &Client, args: &TasksArgs, output: Output) -> anyhow::Result<()> {
    let state = args.state.map(StateKind::from);
    let workflow = resolve_opt(client, args.workflow.as_ref(), Kind::Workflow).await?;
    let page = if args.all {
        PAGE_ROWS_MAX
    } else {
        usize::from(args.limit)
    };
    let mut list = TaskList {
        tasks: Vec::new(),
        next: None,
    };
    let mut after = None;
    loop {
        let got = call(client, client.tasks(workflow, state, after, page)).await?;
        list.tasks.extend(got.tasks);
        list.next = got.next;
        after = got.next;
        if !args.all || after.is_none() || list.tasks.len() >= ALL_TASKS_MAX {
            break;
        }
    }
    if args.all && list.next.is_some() {
        eprintln!(
            "note: stopped after {} tasks; narrow the list with --workflow or --state",
            list.tasks.len()
        );
    }
    match output {
        Output::Json => print_json(&list),
        Output::Table => {
            print_tasks(&list.tasks)?;
            if !args.all && list.next.is_some() {
                eprintln!("note: more tasks follow; --all lists them all");
            }
            Ok(())
        }
    }
}

fn print_tasks(tasks: &[TaskSummary]) -> anyhow::Result<()> {
    if tasks.is_empty() {
        println!("No tasks.");
        return Ok(());
    }
    let now = now_ms();
    let mut table = Table::new(&["ID", "WORKFLOW", "KEY", "STATE", "ATTEMPT", "UPDATED"]);
    for t in tasks {
        table.row(vec![
            t.id.to_string().into(),
            short_id(&t.workflow).into(),
            t.key.as_str().into(),
            Cell::state(t.state),
            t.attempt.to_string().into(),
            relative(t.updated_at, now).into(),
        ]);
    }
    table.print()?;
    Ok(())
}

/// `baton agents`.
pub async fn agents(client: &Client, output: Output) -> anyhow::Result<()> {
    let agents = call(client, client.agents()).await?;
    if output == Output::Json {
        return print_json(&agents);
    }
    if agents.is_empty() {
        println!("No agents.");
        return Ok(());
    }
    let now = now_ms();
    let mut table = Table::new(&[
        "NAME",
        "ID",
        "ONLINE",
        "CAPABILITIES",
        "CONCURRENCY",
        "HELD",
        "LAST SEEN",
        "REGISTERED BY",
    ]);
    for a in &agents {
        let caps: Vec<&str> = a.capabilities.iter().map(|c| c.0.as_str()).collect();
        table.row(vec![
            a.name.as_str().into(),
            a.id.to_string().into(),
            if a.online {
                Cell::colored("yes", Color::Green)
            } else {
                Cell::colored("no", Color::Dim)
            },
            if caps.is_empty() {
                "-".into()
            } else {
                caps.join(",").into()
            },
            a.concurrency.to_string().into(),
            a.leased.len().to_string().into(),
            relative(a.last_seen, now).into(),
            if a.registered_by.is_empty() {
                "-".into()
            } else {
                a.registered_by.as_str().into()
            },
        ]);
    }
    table.print()?;
    Ok(())
}

/// `baton workflows`.
pub async fn workflows(
    client: &Client,
    q: &baton_client::wire::WorkflowListQuery,
    output: Output,
) -> anyhow::Result<()> {
    let list = call(client, client.list_workflows(q)).await?;
    if output == Output::Json {
        return print_json(&list);
    }
    if list.workflows.is_empty() {
        println!("No workflows.");
        return Ok(());
    }
    let now = now_ms();
    let mut table = Table::new(&["ID", "STATUS", "ENDED", "NAME", "CREATED"]);
    for w in &list.workflows {
        let c = &w.counts;
        table.row(vec![
            w.id.to_string().into(),
            status_cell(w.status),
            format!("{}/{}", c.completed + c.failed + c.cancelled, c.total).into(),
            truncate(&w.name, 48).into(),
            relative(w.created_at, now).into(),
        ]);
    }
    table.print()?;
    if list.next.is_some() {
        eprintln!("note: older workflows follow; raise --limit to see more");
    }
    Ok(())
}

fn status_cell(status: WorkflowStatusView) -> Cell {
    match status {
        WorkflowStatusView::Running => Cell::colored("running", Color::Blue),
        WorkflowStatusView::Completed => Cell::colored("completed", Color::Green),
        WorkflowStatusView::Failed => Cell::colored("failed", Color::Red),
        WorkflowStatusView::Cancelled => Cell::colored("cancelled", Color::Dim),
    }
}

/// `baton show ID`: a task, or else a workflow with that id.
pub async fn show(client: &Client, id: Uuid, output: Output) -> anyhow::Result<()> {
    let task = match call(client, client.task(id)).await {
        Ok(task) => task,
        Err(e) if not_found(&e) => match call(client, client.workflow(id)).await {
            Ok(workflow) => return show_workflow(&workflow, output),
            Err(_) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    match output {
        Output::Json => print_json(&task),
        Output::Table => {
            print!("{}", describe(&task, Paint::stdout(), now_ms()));
            Ok(())
        }
    }
}

fn not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ClientError>()
        .and_then(|c| c.problem())
        .is_some_and(|p| p.status == 404)
}

fn show_workflow(w: &WorkflowView, output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        return print_json(w);
    }
    let paint = Paint::stdout();
    let name = if w.name.is_empty() {
        "(unnamed)"
    } else {
        &w.name
    };
    println!("Workflow {} {}", paint.paint(Color::Bold, name), w.id);
    let status = serde_json::to_value(w.status)?;
    println!("  status   {}", status.as_str().unwrap_or_default());
    let c = &w.counts;
    println!(
        "  tasks    {} · completed {} · failed {} · cancelled {} · open {}",
        c.total,
        c.completed,
        c.failed,
        c.cancelled,
        c.blocked + c.pending + c.assigned + c.executing
    );
    println!("  created  {}", relative(w.created_at, now_ms()));
    if let Some(p) = &w.paused {
        println!("  paused   by {}: {}", p.by, p.reason);
    }
    let units: std::collections::BTreeSet<&String> =
        w.usage.keys().chain(w.budgets.keys()).collect();
    for (i, unit) in units.into_iter().enumerate() {
        let label = if i == 0 { "spent" } else { "" };
        let line = super::budget::spend_line(unit, &w.usage, &w.budgets);
        println!("  {label:<8} {line}");
    }
    if let Some(result) = &w.result {
        println!("  result");
        for line in serde_json::to_string_pretty(result)?.lines() {
            println!("    {line}");
        }
    } else if let Some(u) = &w.unresolved {
        println!("  result   none: an output found nothing ({u})");
    }
    println!("  tasks: baton tasks --workflow {}", w.id);
    Ok(())
}

/// The whole of `show`'s table output for one task.
fn describe(t: &TaskView, paint: Paint, now: u64) -> String {
    let mut out = String::new();
    // A value of several lines (an error's stderr tail) goes on under its first line.
    let mut field = |name: &str, value: String| {
        let name = paint.paint(Color::Bold, &format!("{name:<12}"));
        let value = value.trim_end().replace('\n', &format!("\n{:12}", ""));
        out.push_str(&format!("{name}{value}\n"));
    };
    field(
        "Task",
        format!("{} {}", t.id, paint.paint(Color::Bold, &t.key)),
    );
    field("Workflow", t.workflow.to_string());
    let since = t
        .entered_at
        .get(t.state.as_str())
        .map(|at| format!(" since {} ({})", timestamp(*at), relative(*at, now)))
        .unwrap_or_default();
    field("State", format!("{}{since}", paint.state(t.state)));
    if let Some(line) = state_detail(&t.detail) {
        field("", line);
    }
    if !t.usage.is_empty() {
        let spent: Vec<String> = t.usage.iter().map(|(u, a)| format!("{u} {a}")).collect();
        field("Spent", spent.join(" · "));
    }
    field(
        "Attempt",
        format!(
            "{} of {} (version {}, fencing token {})",
            t.attempt, t.attempts_allowed, t.version, t.fencing_token
        ),
    );
    if let Some(lease) = &t.lease {
        field(
            "Lease",
            format!(
                "agent {} (token {}, lease {}) since {}",
                lease.agent,
                lease.token,
                lease.id,
                timestamp(lease.granted_at)
            ),
        );
    }
    let d = &t.deadlines;
    let deadlines: Vec<String> = [
        ("schedule_to_start", d.schedule_to_start),
        ("start", d.start),
        ("start_to_close", d.start_to_close),
        ("heartbeat", d.heartbeat),
    ]
    .into_iter()
    .filter_map(|(name, at)| {
        at.map(|at| format!("{name} {} ({})", timestamp(at), relative(at, now)))
    })
    .collect();
    if !deadlines.is_empty() {
        field("Deadlines", deadlines.join(", "));
    }
    if let Some(waiting) = &t.waiting {
        field("Waiting", waiting_text(waiting, now));
    }
    if !t.spec.capabilities.is_empty() {
        let caps: Vec<&str> = t.spec.capabilities.iter().map(|c| c.0.as_str()).collect();
        field("Needs", caps.join(", "));
    }
    if t.dependencies.is_empty() {
        field("Depends on", "nothing".into());
    } else {
        let deps: Vec<String> = t
            .dependencies
            .iter()
            .map(|d| format!("{} ({}, {})", d.key, paint.state(d.state), d.id))
            .collect();
        field("Depends on", deps.join("\n"));
    }
    if !t.dependents.is_empty() {
        field("Dependents", format!("{} task(s)", t.dependents.len()));
    }
    if let Some(result) = &t.result {
        field("Result", payload(result));
    }
    for (i, e) in t.errors.iter().enumerate() {
        let text = match serde_json::from_value::<TaskError>(e.clone()) {
            Ok(e) => format!(
                "attempt {} at {}: {}: {}{}",
                e.attempt,
                timestamp(e.at.0),
                e.kind,
                e.message,
                if e.retryable { "" } else { " (not retryable)" }
            ),
            Err(_) => payload(e),
        };
        field(if i == 0 { "Errors" } else { "" }, text);
    }
    out.push_str(&format!("\n{}\n", paint.paint(Color::Bold, "History")));
    out.push_str(&timeline(t, paint));
    out
}

/// What the state's data adds: the cancel reason, the failure (and whether it is final), the
/// last progress reported.
fn state_detail(detail: &Value) -> Option<String> {
    match serde_json::from_value::<State>(detail.clone()).ok()? {
        State::Cancelled { reason } => Some(match reason {
            CancelReason::Operator {
                requested_by,
                reason,
            } if reason.is_empty() => format!("cancelled by {requested_by}"),
            CancelReason::Operator {
                requested_by,
                reason,
            } => format!("cancelled by {requested_by}: {reason}"),
            CancelReason::Upstream { upstream } => {
                format!("cancelled because its dependency {upstream} failed or was cancelled")
            }
            CancelReason::Superseded { parent } => {
                format!("superseded by a rerun of {parent}, which created it")
            }
        }),
        State::Failed { error, retry_at } => Some(format!(
            "{}: {}{}",
            error.kind,
            error.message,
            if retry_at.is_some() {
                ""
            } else {
                "; failed for good (`baton retry` reopens it)"
            }
        )),
        State::Executing {
            progress: Some(p), ..
        } => Some(format!("progress {}", payload(&p))),
        _ => None,
    }
}

/// The engine's answer to "why is it waiting?", in words.
fn waiting_text(waiting: &Value, now: u64) -> String {
    let Ok(reason) = serde_json::from_value::<WaitReason>(waiting.clone()) else {
        return payload(waiting);
    };
    match reason {
        WaitReason::Dependencies { open } => {
            let open: Vec<String> = open
                .iter()
                .map(|d| format!("{} ({})", d.key, d.state.name()))
                .collect();
            format!("for dependencies to complete: {}", open.join(", "))
        }
        WaitReason::NoCapableAgent { missing } if missing.is_empty() => {
            "for an agent: none is online".into()
        }
        WaitReason::NoCapableAgent { missing } => {
            let missing: Vec<&str> = missing.iter().map(|c| c.0.as_str()).collect();
            format!(
                "for an agent: no online agent offers {}",
                missing.join(", ")
            )
        }
        WaitReason::AgentsBusy { capable_online } => {
            format!("for a free agent: {capable_online} capable agent(s) online, all busy")
        }
        WaitReason::RateLimited {
            limit,
            units,
            available,
            until,
        } => format!(
            "for rate limit `{limit}`: {available} of the {units} unit(s) it draws available, \
             enough at {} ({})",
            timestamp(until.0),
            relative(until.0, now)
        ),
        WaitReason::ConcurrencyFull { key, held, max } => {
            format!("for concurrency key `{key}`: {held} of {max} running")
        }
        WaitReason::Leased {
            agent,
            state,
            until,
        } => format!(
            "on agent {agent} ({}){}",
            state.name(),
            until
                .map(|u| format!(" until {} ({})", timestamp(u.0), relative(u.0, now)))
                .unwrap_or_default()
        ),
        WaitReason::BackingOff {
            until,
            attempt,
            max_attempts,
        } => format!(
            "backing off after attempt {attempt} of {max_attempts}: next attempt at {} ({})",
            timestamp(until.0),
            relative(until.0, now)
        ),
        WaitReason::Signal { signal, until } => format!(
            "for signal `{signal}`{}",
            until
                .map(|u| format!(" until {} ({})", timestamp(u.0), relative(u.0, now)))
                .unwrap_or_default()
        ),
        WaitReason::Timer { until, sleeps } => format!(
            "{} until {} ({})",
            if sleeps { "asleep" } else { "delayed" },
            timestamp(until.0),
            relative(until.0, now)
        ),
        WaitReason::Paused { by, why, since } => format!(
            "paused by {by} since {} ({}): {why}",
            timestamp(since.0),
            relative(since.0, now)
        ),
    }
}

/// A JSON payload on one line, cut to [`PAYLOAD_SHOWN_MAX`] characters.
fn payload(v: &Value) -> String {
    let text = v.to_string();
    let shown = truncate(&text, PAYLOAD_SHOWN_MAX);
    if shown.len() < text.len() {
        format!("{shown} ({} bytes; --output json shows it all)", text.len())
    } else {
        shown
    }
}

/// One row of the timeline: an entry, or a run of heartbeats folded together.
struct Row {
    at: u64,
    last: u64,
    event: String,
    count: usize,
    actor: String,
    from: Option<StateKind>,
    to: Option<StateKind>,
    detail: String,
}

/// The history as a table: time, event, actor, from → to (derived by replaying the history
/// through the lifecycle, as the engine built it) and what the event carried.
fn timeline(t: &TaskView, paint: Paint) -> String {
    let states = replayed_states(&t.history, &t.spec);
    let mut rows: Vec<Row> = Vec::new();
    for (i, h) in t.history.iter().enumerate() {
        let event = h.event.as_str().to_owned();
        let at = h.at;
        let (from, to) = states.get(i).copied().unwrap_or((None, None));
        if let Some(prev) = rows.last_mut() {
            if event == "heartbeat" && prev.event == "heartbeat" {
                prev.count += 1;
                prev.last = at;
                continue;
            }
        }
        let data = entry_event(h, &t.spec);
        rows.push(Row {
            at,
            last: at,
            event,
            count: 1,
            actor: actor_text(&h.actor),
            from,
            to,
            detail: data.as_ref().map(event_detail).unwrap_or_default(),
        });
    }
    let mut table = Table::new(&["TIME", "EVENT", "ACTOR", "TRANSITION", "DETAIL"]);
    for r in &rows {
        let (event, detail) = if r.count > 1 {
            (
                format!("{} ×{}", r.event, r.count),
                format!("over {}", duration(r.last - r.at)),
            )
        } else {
            (r.event.clone(), r.detail.clone())
        };
        let transition = match (r.from, r.to) {
            (None, Some(to)) => format!("→ {}", to.name()),
            (Some(from), Some(to)) if from == to => to.name().to_owned(),
            (Some(from), Some(to)) => format!("{} → {}", from.name(), to.name()),
            _ => "?".into(),
        };
        let transition = match r.to {
            Some(to) => Cell::colored(transition, Color::of(to)),
            None => transition.into(),
        };
        table.row(vec![
            timestamp(r.at).into(),
            event.into(),
            r.actor.as_str().into(),
            transition,
            truncate(&one_line(&detail), 80).into(),
        ]);
    }
    let mut out = Vec::new();
    let _ = table.write(paint, &mut out);
    let mut text: String = String::from_utf8_lossy(&out)
        .lines()
        .map(|line| format!("  {line}\n"))
        .collect();
    if (t.history.len() as u64) < t.version {
        text.push_str(&format!(
            "  (the first {} of {} entries; GET /v1/tasks/{}/history pages through the rest)\n",
            t.history.len(),
            t.version,
            t.id
        ));
    }
    text
}

/// A history entry's event. The `submitted` entry's `data` leaves the spec out (the view's
/// `spec` carries it once) and gives the seed as a string: both are put back.
fn entry_event(entry: &HistoryView, spec: &TaskSpec) -> Option<Event> {
    let mut data = entry.data.clone();
    if entry.event == EventKind::Submitted {
        let fields = data.as_object_mut()?;
        fields.insert("spec".into(), serde_json::to_value(spec).ok()?);
        if let Some(seed) = fields.get("seed").and_then(Value::as_str) {
            let seed: u64 = seed.parse().ok()?;
            fields.insert("seed".into(), seed.into());
        }
    }
    serde_json::from_value(data).ok()
}

/// For each history entry, the state before and after it: the history replayed through the
/// lifecycle table. Entries that do not replay (a newer server's events) have none.
fn replayed_states(
    history: &[HistoryView],
    spec: &TaskSpec,
) -> Vec<(Option<StateKind>, Option<StateKind>)> {
    let mut out = Vec::with_capacity(history.len());
    let mut task: Option<Task> = None;
    for h in history {
        let entry = (|| {
            Some(HistoryEntry {
                seq: h.seq,
                at: Timestamp(h.at),
                event: entry_event(h, spec)?,
            })
        })();
        let next = entry.and_then(|e| match (&e.event, &task) {
            (Event::Submitted(sub), _) => baton_core::submit(sub, e.at).ok(),
            (event, Some(t)) => baton_core::apply(t, event, e.at).ok(),
            (_, None) => None,
        });
        match next {
            Some(tr) => {
                out.push((task.as_ref().map(Task::kind), Some(tr.task.kind())));
                task = Some(tr.task);
            }
            None => break,
        }
    }
    out
}

fn actor_text(actor: &Value) -> String {
    match serde_json::from_value::<Actor>(actor.clone()) {
        Ok(Actor::Engine) => "engine".into(),
        Ok(Actor::Agent { agent }) => format!("agent {}", short_id(&agent)),
        Ok(Actor::Operator { name }) => format!("operator {name}"),
        Err(_) => actor.to_string(),
    }
}

/// What an event carried that a reader wants to see.
fn event_detail(e: &Event) -> String {
    match e {
        Event::Submitted(s) if !s.completed.is_empty() => {
            format!("{} dependencies already complete", s.completed.len())
        }
        Event::DependencyAdded { dependency } => format!("now also waits for {dependency}"),
        Event::SubtasksAdded { tasks, .. } => {
            let keys: Vec<&str> = tasks.iter().map(|k| k.0.as_str()).collect();
            format!("added sub-tasks {}", keys.join(", "))
        }
        Event::UpstreamFailed { upstream } => format!("{upstream} failed or was cancelled"),
        Event::UpstreamRevived { upstream, .. } => format!("{upstream} was retried"),
        Event::AgentAssigned { agent, .. } => format!("to agent {}", short_id(agent)),
        Event::ExecutionFailed { error, .. } => format!("{}: {}", error.kind, error.message),
        Event::AgentLost { agent, .. } => format!("agent {} declared dead", short_id(agent)),
        Event::TimeoutExpired { deadline } => format!("{deadline} deadline passed"),
        Event::CancelRequested { reason, .. } => reason.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{Submission, TaskId, WorkflowId};
    use std::sync::Arc;

    /// An entry as the server shows it: a `submitted` entry's data without the spec, its
    /// seed a string.
    fn entry(seq: u64, at: u64, event: &Event) -> HistoryView {
        let mut data = serde_json::to_value(event).unwrap();
        let fields = data.as_object_mut().unwrap();
        fields.remove("spec");
        if let Some(seed) = fields.get("seed").and_then(Value::as_u64) {
            fields.insert("seed".into(), seed.to_string().into());
        }
        HistoryView {
            seq,
            at,
            actor: serde_json::to_value(event.actor()).unwrap(),
            event: event.kind(),
            data,
        }
    }

    #[test]
    fn the_timeline_derives_transitions_by_replay() {
        let sub = Submission {
            task: TaskId(Uuid::nil()),
            workflow: WorkflowId(Uuid::nil()),
            spec: Arc::new(TaskSpec::new("a")),
            completed: Vec::new(),
            seed: 7,
            input: None,
            unresolved: None,
        };
        let history = vec![
            entry(1, 1_000, &Event::Submitted(sub)),
            entry(
                2,
                2_000,
                &Event::CancelRequested {
                    requested_by: "operator".into(),
                    reason: "no longer needed".into(),
                },
            ),
        ];
        // The spec is put back from the view's `spec`.
        let states = replayed_states(&history, &TaskSpec::new("a"));
        assert_eq!(
            states,
            [
                (None, Some(StateKind::Pending)),
                (Some(StateKind::Pending), Some(StateKind::Cancelled))
            ]
        );
        let broken = vec![history[1].clone()];
        assert!(replayed_states(&broken, &TaskSpec::new("a")).is_empty());
    }
}
