//! How a task is laid out in rows, shared by both backends: the snapshot (the task as JSON,
//! without its immutable spec), the history payloads, and the derived columns the indexes are
//! built on.
//!
//! A task's spec, and so its input, is stored once, in `task_specs`: neither the snapshot nor
//! the `submitted` history entry repeats it. That entry's payload is the submission without
//! its spec ([`event_json`]); reading it back takes the spec from `task_specs`
//! ([`decode_history_entry`]), which was written from the same submission in the same
//! transaction, so replay stays exact. Rows written before this (whose payload still holds
//! the spec) read the same way: the copy in the payload is skipped, never decoded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use baton_core::{
    Actor, Capability, Deadlines, Effect, EnteredAt, Event, FencingToken, HistoryEntry, Overruled,
    Paused, State, StateKind, Submission, Task, TaskError, TaskId, TaskKey, TaskSpec, Timestamp,
    Unresolved, WorkflowId,
};
use baton_core::{Amount, Budgets, Usage};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::StoreError;

/// The mutable part of a task, as stored in `tasks.snapshot`.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    id: &'a TaskId,
    workflow: &'a WorkflowId,
    dependencies: &'a [TaskKey],
    state: &'a State,
    version: u64,
    attempt: u32,
    attempts_allowed: u32,
    fencing_token: FencingToken,
    deadlines: &'a Deadlines,
    errors: &'a [TaskError],
    entered_at: &'a EnteredAt,
    created_at: Timestamp,
    updated_at: Timestamp,
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expanded: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wake_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paused: Option<&'a Paused>,
    #[serde(skip_serializing_if = "Option::is_none")]
    overruled: Option<&'a Overruled>,
    #[serde(skip_serializing_if = "Usage::is_empty")]
    usage: &'a Usage,
    #[serde(skip_serializing_if = "Usage::is_empty")]
    lease_usage: &'a Usage,
}

#[derive(Deserialize)]
struct Snapshot {
    id: TaskId,
    workflow: WorkflowId,
    dependencies: Vec<TaskKey>,
    state: State,
    version: u64,
    attempt: u32,
    attempts_allowed: u32,
    fencing_token: FencingToken,
    deadlines: Deadlines,
    errors: Vec<TaskError>,
    entered_at: EnteredAt,
    created_at: Timestamp,
    updated_at: Timestamp,
    seed: u64,
    #[serde(default)]
    input: Option<serde_json::Value>,
    #[serde(default)]
    expanded: Option<u32>,
    #[serde(default)]
    wake_at: Option<Timestamp>,
    #[serde(default)]
    paused: Option<Paused>,
    #[serde(default)]
    overruled: Option<Overruled>,
    #[serde(default)]
    usage: Usage,
    #[serde(default)]
    lease_usage: Usage,
}

pub fn snapshot(task: &Task) -> String {
    let s = SnapshotRef {
        id: &task.id,
        workflow: &task.workflow,
        dependencies: &task.dependencies,
        state: &task.state,
        version: task.version,
        attempt: task.attempt,
        attempts_allowed: task.attempts_allowed,
        fencing_token: task.fencing_token,
        deadlines: &task.deadlines,
        errors: &task.errors,
        entered_at: &task.entered_at,
        created_at: task.created_at,
        updated_at: task.updated_at,
        seed: task.seed,
        input: task.input.as_ref(),
        expanded: task.expanded,
        wake_at: task.wake_at,
        paused: task.paused.as_ref(),
        overruled: task.overruled.as_ref(),
        usage: &task.usage,
        lease_usage: &task.lease_usage,
    };
    serde_json::to_string(&s).expect("a task always serialises")
}

/// A workflow's `paused` column: the pause as JSON, or `NULL` while it runs.
pub fn pause_json(paused: Option<&Paused>) -> Option<String> {
    paused.map(|p| serde_json::to_string(p).expect("a pause always serialises"))
}

/// A workflow's budgets as their `budgets` column holds them (NULL for none).
pub fn budgets_json(budgets: &Budgets) -> Option<String> {
    (!budgets.is_empty()).then(|| serde_json::to_string(budgets).expect("budgets always serialise"))
}

/// A workflow's budgets from their column; ones that do not decode read as none (and the
/// workflow's record says so through its name alone: nothing is enforced on it).
pub fn decode_budgets(column: Option<String>) -> Budgets {
    column
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_default()
}

/// Usage per unit from `(unit, micros)` rows.
pub fn usage_of(rows: impl IntoIterator<Item = (String, i64)>) -> Usage {
    rows.into_iter()
        .map(|(unit, micros)| (unit, Amount(micros.max(0) as u64)))
        .collect()
}

/// A workflow's pause from its `paused` column; one that does not decode reads as a pause by
/// nobody, so a damaged row keeps the workflow held rather than running it.
pub fn decode_pause(column: Option<String>) -> Option<Paused> {
    column.map(|json| {
        serde_json::from_str(&json).unwrap_or_else(|e| Paused {
            by: "unknown".into(),
            reason: format!("the stored pause does not decode: {e}"),
            at: Timestamp(0),
            frozen_at: None,
        })
    })
}

/// The task's spec as `task_specs.spec` holds it. The spec is remembered as decoded from it:
/// the claim that comes next reads it without decoding it.
pub fn spec_json(task: &Task) -> String {
    let json = serde_json::to_string(&*task.spec).expect("a spec always serialises");
    SPECS.remember(task.id, &json, task.spec.clone());
    json
}

fn corrupt(task: TaskId) -> impl Fn(serde_json::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        task,
        detail: e.to_string(),
    }
}

pub fn decode_task(id: TaskId, snapshot: &str, spec: &str) -> Result<Task, StoreError> {
    assemble(id, snapshot, SPECS.decode(id, spec)?)
}

/// Specs decoded lately, shared by every store of the process: a task's spec is read with its
/// task on every claim, report and timer, and never changes but for a rerun with a new input.
static SPECS: SpecCache = SpecCache::new();

/// How many specs [`SPECS`] keeps; when full it starts over (the tasks in flight fill it again).
const SPECS_CACHED_MAX: usize = 1024;

/// The largest spec text [`SPECS`] keeps decoded: a bigger one (a big input) is decoded on
/// every read, so that the cache holds at most a few MiB whatever the inputs.
const SPEC_CACHED_BYTES_MAX: usize = 4 * 1024;

/// Decoded specs by task and by a hash of their stored text, so that a spec changed meanwhile
/// (a rerun with a new input, written by any node) is decoded anew, never served stale.
struct SpecCache(Mutex<Option<Specs>>);

/// Specs by task and by the hash of their text.
type Specs = HashMap<(TaskId, u64), Arc<TaskSpec>>;

impl SpecCache {
    const fn new() -> SpecCache {
        SpecCache(Mutex::new(None))
    }

    fn decode(&self, id: TaskId, json: &str) -> Result<Arc<TaskSpec>, StoreError> {
        if json.len() > SPEC_CACHED_BYTES_MAX {
            return Ok(Arc::new(serde_json::from_str(json).map_err(corrupt(id))?));
        }
        let key = Self::key(id, json);
        if let Some(spec) = self.lock().as_ref().and_then(|m| m.get(&key)) {
            return Ok(spec.clone());
        }
        let spec: Arc<TaskSpec> = Arc::new(serde_json::from_str(json).map_err(corrupt(id))?);
        self.insert(key, spec.clone());
        Ok(spec)
    }

    /// Keeps `spec`, which `json` encodes, as if it had been decoded from it.
    fn remember(&self, id: TaskId, json: &str, spec: Arc<TaskSpec>) {
        if json.len() <= SPEC_CACHED_BYTES_MAX {
            self.insert(Self::key(id, json), spec);
        }
    }

    fn key(id: TaskId, json: &str) -> (TaskId, u64) {
        let mut hasher = std::hash::DefaultHasher::new();
        json.hash(&mut hasher);
        (id, hasher.finish())
    }

    fn insert(&self, key: (TaskId, u64), spec: Arc<TaskSpec>) {
        let mut cached = self.lock();
        let map = cached.get_or_insert_with(HashMap::new);
        if map.len() >= SPECS_CACHED_MAX {
            map.clear();
        }
        map.insert(key, spec);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Specs>> {
        // A panic while holding it leaves a map that is still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The task without decoding its input, and its spec as stored: for reads that show the spec
/// as JSON. A big input decoded as a `serde_json::Value` costs several times its size (an
/// array of small objects, 10 to 15 times), so the input stays text: the returned task's
/// `spec.input` is `null`, and the spec JSON (input included) is returned as it is.
pub fn decode_task_without_input(
    id: TaskId,
    snapshot: &str,
    spec: String,
) -> Result<(Task, Box<RawValue>), StoreError> {
    let spec = RawValue::from_string(spec).map_err(corrupt(id))?;
    let task = decode_task_sans_input(id, snapshot, spec.get())?;
    Ok((task, spec))
}

/// The task with its spec's `input` left `null`, not decoded: for reads that do not show it
/// (lists, graphs).
pub fn decode_task_sans_input(id: TaskId, snapshot: &str, spec: &str) -> Result<Task, StoreError> {
    assemble(id, snapshot, Arc::new(spec_without_input(id, spec)?))
}

/// The spec's fields but its input, decoded: the fields are split as borrowed JSON text, the
/// input left out, and the rest (small) decoded as a spec whose input is the default `null`.
fn spec_without_input(id: TaskId, spec: &str) -> Result<TaskSpec, StoreError> {
    let mut fields: BTreeMap<&str, &RawValue> = serde_json::from_str(spec).map_err(corrupt(id))?;
    fields.remove("input");
    let rest = serde_json::to_string(&fields).map_err(corrupt(id))?;
    serde_json::from_str(&rest).map_err(corrupt(id))
}

fn assemble(id: TaskId, snapshot: &str, spec: Arc<TaskSpec>) -> Result<Task, StoreError> {
    let s: Snapshot = serde_json::from_str(snapshot).map_err(corrupt(id))?;
    Ok(Task {
        id: s.id,
        workflow: s.workflow,
        spec,
        dependencies: s.dependencies,
        state: s.state,
        version: s.version,
        attempt: s.attempt,
        attempts_allowed: s.attempts_allowed,
        fencing_token: s.fencing_token,
        deadlines: s.deadlines,
        errors: s.errors,
        entered_at: s.entered_at,
        created_at: s.created_at,
        updated_at: s.updated_at,
        seed: s.seed,
        input: s.input,
        expanded: s.expanded,
        wake_at: s.wake_at,
        paused: s.paused,
        overruled: s.overruled,
        usage: s.usage,
        lease_usage: s.lease_usage,
    })
}

/// The canonical form of a capability set: sorted names joined by `,` (empty for none).
pub fn capset(caps: &BTreeSet<Capability>) -> String {
    let names: Vec<&str> = caps.iter().map(|c| c.0.as_str()).collect();
    names.join(",")
}

/// What a task's `capset` column holds: its capability set, or for a task no agent runs that
/// waits for a signal, [`SIGNAL_CAPSET`] and the signal's name. `!` is in no capability name,
/// so claims never find it, and the pending tasks waiting for a signal are one range of the
/// claim index.
pub fn task_capset(task: &Task) -> String {
    match &task.spec.wait_for {
        Some(wait) => format!("{SIGNAL_CAPSET}{}", wait.signal),
        None => capset(&task.spec.capabilities),
    }
}

/// The `capset` prefix of tasks waiting for a signal.
pub const SIGNAL_CAPSET: &str = "!signal:";

/// Whether an agent offering `offered` can run tasks requiring `capset`.
pub fn capset_fits(capset: &str, offered: &BTreeSet<Capability>) -> bool {
    capset.is_empty()
        || (!capset.starts_with('!') && capset.split(',').all(|c| offered.iter().any(|o| o.0 == c)))
}

/// When the watchdog must next look at the task (the core's [`Task::next_timer`]).
pub fn timer_at(task: &Task) -> Option<Timestamp> {
    task.next_timer().map(|(_, at)| at)
}

/// When the task became ready, for the claim order; `None` unless `Pending` and not paused (a
/// paused task is out of the claim index).
pub fn ready_at(task: &Task) -> Option<Timestamp> {
    (task.kind() == StateKind::Pending && !task.is_paused())
        .then(|| task.entered_at.get(StateKind::Pending))
        .flatten()
}

pub fn lease_agent(task: &Task) -> Option<uuid::Uuid> {
    task.state.lease().map(|l| l.agent.0)
}

pub fn actor(event: &Event) -> String {
    match event.actor() {
        Actor::Agent { agent } => format!("agent:{agent}"),
        Actor::Operator { name } => format!("operator:{name}"),
        Actor::Engine => "engine".to_owned(),
    }
}

pub fn event_token(event: &Event) -> Option<i64> {
    event.report().map(|(_, t)| t.0 as i64)
}

/// A `submitted` event as `history.payload` holds it: the submission without its spec, which
/// `task_specs` holds.
#[derive(Serialize)]
struct SubmittedRef<'a> {
    event: &'static str,
    task: &'a TaskId,
    workflow: &'a WorkflowId,
    completed: &'a [TaskKey],
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unresolved: Option<&'a Unresolved>,
}

/// A `submitted` payload read back. Unknown fields are skipped without being decoded: the
/// tag, and the spec that rows written before the spec was stored once still hold.
#[derive(Deserialize)]
struct SubmittedRow {
    task: TaskId,
    workflow: WorkflowId,
    completed: Vec<TaskKey>,
    seed: u64,
    #[serde(default)]
    input: Option<serde_json::Value>,
    #[serde(default)]
    unresolved: Option<Unresolved>,
}

/// The `history.payload` of an event: the event as JSON, but a `submitted` event without its
/// spec (see the module's documentation).
pub fn event_json(event: &Event) -> String {
    match event {
        Event::Submitted(sub) => {
            // Every field named: a field added to `Submission` must be stored here too.
            let Submission {
                task,
                workflow,
                spec: _,
                completed,
                seed,
                input,
                unresolved,
            } = sub;
            let row = SubmittedRef {
                event: "submitted",
                task,
                workflow,
                completed,
                seed: *seed,
                input: input.as_ref(),
                unresolved: unresolved.as_ref(),
            };
            serde_json::to_string(&row).expect("a submission always serialises")
        }
        other => serde_json::to_string(other).expect("an event always serialises"),
    }
}

/// The kind of event in `history.event` whose payload leaves the spec to `task_specs`.
pub const SUBMITTED: &str = "submitted";

/// A history row read back without its payload (see [`crate::Store::workflow_history`]).
pub fn history_mark(
    task: TaskId,
    seq: i64,
    at: i64,
    event: &str,
) -> Result<crate::HistoryMark, StoreError> {
    let event = baton_core::EventKind::parse(event).ok_or_else(|| StoreError::Corrupt {
        task,
        detail: format!("history entry {seq}: unknown event `{event}`"),
    })?;
    Ok(crate::HistoryMark {
        task,
        seq: seq as u64,
        at: Timestamp(at as u64),
        event,
    })
}

/// The sub-task keys of a `subtasks_added` entry's payload.
pub fn subtask_keys(task: TaskId, seq: i64, payload: &str) -> Result<Vec<TaskKey>, StoreError> {
    match serde_json::from_str(payload) {
        Ok(Event::SubtasksAdded { tasks, .. }) => Ok(tasks),
        Ok(other) => Err(StoreError::Corrupt {
            task,
            detail: format!(
                "history entry {seq}: `{}` where `subtasks_added` was recorded",
                other.kind().as_str()
            ),
        }),
        Err(e) => Err(StoreError::Corrupt {
            task,
            detail: format!("history entry {seq}: {e}"),
        }),
    }
}

/// A history row read back: `event` is its `history.event` column, and `spec` gives the task's
/// spec, asked for only for a `submitted` entry.
pub fn decode_history_entry(
    task: TaskId,
    (seq, at): (i64, i64),
    event: &str,
    payload: &str,
    spec: impl FnOnce() -> Result<Arc<TaskSpec>, StoreError>,
) -> Result<HistoryEntry, StoreError> {
    let corrupt = |e: serde_json::Error| StoreError::Corrupt {
        task,
        detail: format!("history entry {seq}: {e}"),
    };
    let event = if event == SUBMITTED {
        let row: SubmittedRow = serde_json::from_str(payload).map_err(corrupt)?;
        Event::Submitted(Submission {
            task: row.task,
            workflow: row.workflow,
            spec: spec()?,
            completed: row.completed,
            seed: row.seed,
            input: row.input,
            unresolved: row.unresolved,
        })
    } else {
        serde_json::from_str(payload).map_err(corrupt)?
    };
    Ok(HistoryEntry {
        seq: seq as u64,
        at: Timestamp(at as u64),
        event,
    })
}

/// A spec from `task_specs` for a history read: decoded whole (input included), so that the
/// `submitted` entry is exactly the one recorded.
pub fn decode_spec(task: TaskId, spec: Option<&str>) -> Result<Arc<TaskSpec>, StoreError> {
    let spec = spec.ok_or_else(|| StoreError::Corrupt {
        task,
        detail: "the task's spec is missing from task_specs".into(),
    })?;
    let spec: TaskSpec = serde_json::from_str(spec).map_err(corrupt(task))?;
    Ok(Arc::new(spec))
}

pub fn parse_state(task: TaskId, name: &str) -> Result<StateKind, StoreError> {
    StateKind::parse(name).ok_or_else(|| StoreError::Corrupt {
        task,
        detail: format!("unknown state {name:?}"),
    })
}

pub fn ts(t: Timestamp) -> i64 {
    t.0 as i64
}

/// The columns of a task's row that a transition rewrites, derived from the task once for
/// both backends' `UPDATE tasks`.
pub struct TaskRow {
    pub id: uuid::Uuid,
    pub state: &'static str,
    pub version: i64,
    pub ready_at: Option<i64>,
    pub timer_at: Option<i64>,
    pub lease_agent: Option<uuid::Uuid>,
    pub updated_at: i64,
    pub snapshot: String,
    pub paused: bool,
    /// The task's flow control with its keys filled in (JSON); `None` without any.
    pub flow: Option<String>,
}

impl TaskRow {
    pub fn of(task: &Task) -> TaskRow {
        TaskRow {
            id: task.id.0,
            state: task.kind().as_str(),
            version: task.version as i64,
            ready_at: ready_at(task).map(ts),
            timer_at: timer_at(task).map(ts),
            lease_agent: lease_agent(task),
            updated_at: ts(task.updated_at),
            snapshot: snapshot(task),
            paused: task.is_paused(),
            flow: task
                .flow()
                .map(|f| serde_json::to_string(&f).expect("a flow always serialises")),
        }
    }
}

/// A row of `history`: the entry, with the columns derived from its event.
pub struct HistoryRow {
    pub task: uuid::Uuid,
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub event: &'static str,
    pub token: Option<i64>,
    pub payload: String,
}

impl HistoryRow {
    pub fn of(task: TaskId, entry: &HistoryEntry) -> HistoryRow {
        HistoryRow {
            task: task.0,
            seq: entry.seq as i64,
            at: ts(entry.at),
            actor: actor(&entry.event),
            event: entry.event.kind().as_str(),
            token: event_token(&entry.event),
            payload: event_json(&entry.event),
        }
    }
}

/// An effect as stored in `outbox.effect`.
pub fn effect_json(effect: &Effect) -> String {
    serde_json::to_string(effect).expect("an effect always serialises")
}

/// A task's flow as its row's `flow` column holds it.
pub fn parse_flow(json: &str) -> Result<baton_core::Flow, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Backend(format!("stored flow {json:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_decoded_once_until_its_text_changes() {
        let id = TaskId(uuid::Uuid::now_v7());
        let first = r#"{"key": "a", "input": {"n": 1}}"#;
        let a = SPECS.decode(id, first).unwrap();
        assert!(Arc::ptr_eq(&a, &SPECS.decode(id, first).unwrap()));
        let changed = SPECS
            .decode(id, r#"{"key": "a", "input": {"n": 2}}"#)
            .unwrap();
        assert_eq!(changed.input, serde_json::json!({"n": 2}));
        assert_eq!(a.input, serde_json::json!({"n": 1}));
        let other = TaskId(uuid::Uuid::now_v7());
        assert!(!Arc::ptr_eq(&a, &SPECS.decode(other, first).unwrap()));
        assert!(
            SPECS.decode(id, "{").is_err(),
            "a damaged spec is an error, not cached"
        );
        let big = format!(
            r#"{{"key": "a", "input": "{}"}}"#,
            "x".repeat(SPEC_CACHED_BYTES_MAX)
        );
        let once = SPECS.decode(id, &big).unwrap();
        assert!(
            !Arc::ptr_eq(&once, &SPECS.decode(id, &big).unwrap()),
            "a big spec is not kept"
        );
    }
}
