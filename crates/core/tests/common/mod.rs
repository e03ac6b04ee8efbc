//! Shared fixtures: a task spec with short timeouts and a deterministic retry policy, tasks in
//! every state, and event constructors.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::Arc;

use baton_core::*;
use serde_json::{json, Value};
use uuid::Uuid;

pub const T0: Timestamp = Timestamp(1_700_000_000_000);

pub fn at(ms: u64) -> Timestamp {
    T0.plus_ms(ms)
}

pub fn agent() -> AgentId {
    AgentId(Uuid::from_u128(0xa1))
}

pub fn other_agent() -> AgentId {
    AgentId(Uuid::from_u128(0xa2))
}

pub fn lease(n: u128) -> LeaseId {
    LeaseId(Uuid::from_u128(0x1ea5e000 + n))
}

pub fn caps(names: &[&str]) -> BTreeSet<Capability> {
    names.iter().map(|&n| Capability::from(n)).collect()
}

/// Requires `write`; start 1s, start-to-close 10s, heartbeat 2s; 3 attempts, backoff 100ms
/// doubling to 1s, no jitter.
pub fn spec(key: &str) -> TaskSpec {
    TaskSpec {
        capabilities: caps(&["write"]),
        input: json!({"topic": "rust"}),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 100,
            backoff_multiplier: 2.0,
            max_backoff_ms: 1_000,
            jitter: 0.0,
            non_retryable: vec!["bad_input".into()],
        },
        timeouts: Timeouts {
            schedule_to_start_ms: None,
            start_ms: Some(1_000),
            start_to_close_ms: Some(10_000),
            heartbeat_ms: Some(2_000),
        },
        compensation: Some(CompensationSpec {
            retry: None,
            timeouts: None,
            priority: None,
            key: TaskKey::from(format!("{key}.undo").as_str()),
            capabilities: caps(&["write"]),
            input: json!({"undo": key}),
        }),
        ..TaskSpec::new(key)
    }
}

pub fn submission(spec: TaskSpec, completed: &[&str]) -> Submission {
    Submission {
        task: TaskId(Uuid::from_u128(0x7a5c)),
        workflow: WorkflowId(Uuid::from_u128(0x3f)),
        spec: Arc::new(spec),
        completed: completed.iter().map(|&k| TaskKey::from(k)).collect(),
        seed: 42,
        input: None,
        unresolved: None,
    }
}

pub fn step(task: &Task, event: Event, now: Timestamp) -> Transition {
    match apply(task, &event, now) {
        Ok(t) => t,
        Err(r) => panic!("expected {event:?} to apply: {r}"),
    }
}

pub fn refuse(task: &Task, event: Event, now: Timestamp) -> Rejection {
    match apply(task, &event, now) {
        Ok(t) => panic!(
            "expected {event:?} to be refused, but it moved to {:?}",
            t.task.state
        ),
        Err(r) => r,
    }
}

pub fn blocked() -> Task {
    let mut s = spec("write");
    s.depends_on = vec!["plan".into(), "research".into()];
    submit(&submission(s, &["plan"]), T0).unwrap().task
}

pub fn pending() -> Task {
    submit(&submission(spec("write"), &[]), T0).unwrap().task
}

pub fn assigned() -> Task {
    step(&pending(), assign(agent(), 1), at(10)).task
}

pub fn executing() -> Task {
    step(&assigned(), started(1), at(20)).task
}

pub fn completed() -> Task {
    step(&executing(), succeeded(1, json!({"text": "done"})), at(30)).task
}

/// Failed after attempt 1, a retry scheduled at `at(30) + 100ms`.
pub fn failed_retrying() -> Task {
    step(&executing(), failed(1, "flaky", true), at(30)).task
}

/// Failed for good: the error kind is non-retryable.
pub fn failed_final() -> Task {
    step(&executing(), failed(1, "bad_input", true), at(30)).task
}

pub fn cancelled() -> Task {
    step(&pending(), cancel(), at(10)).task
}

pub fn assign(agent: AgentId, n: u128) -> Event {
    Event::AgentAssigned {
        agent,
        capabilities: caps(&["write", "read"]),
        lease: lease(n),
    }
}

pub fn started(token: u64) -> Event {
    Event::ExecutionStarted {
        by_claim: false,
        agent: agent(),
        token: FencingToken(token),
    }
}

pub fn heartbeat(token: u64, progress: Option<Value>) -> Event {
    Event::Heartbeat {
        usage: Default::default(),
        agent: agent(),
        token: FencingToken(token),
        progress,
    }
}

pub fn succeeded(token: u64, result: Value) -> Event {
    Event::ExecutionSucceeded {
        usage: Default::default(),
        agent: agent(),
        token: FencingToken(token),
        result: Some(result),
    }
}

pub fn failed(token: u64, kind: &str, retryable: bool) -> Event {
    Event::ExecutionFailed {
        usage: Default::default(),
        agent: agent(),
        token: FencingToken(token),
        error: ErrorReport {
            kind: kind.into(),
            message: format!("{kind} happened"),
            retryable,
        },
    }
}

pub fn released(token: u64) -> Event {
    Event::AssignmentReleased {
        agent: agent(),
        token: FencingToken(token),
    }
}

pub fn timeout(deadline: DeadlineKind) -> Event {
    Event::TimeoutExpired { deadline }
}

pub fn cancel() -> Event {
    Event::CancelRequested {
        requested_by: "ops".into(),
        reason: "not needed".into(),
    }
}

pub fn pause(now: bool) -> Event {
    Event::PauseRequested {
        requested_by: "ops".into(),
        reason: "budget review".into(),
        now,
    }
}

pub fn resume() -> Event {
    Event::ResumeRequested {
        requested_by: "ops".into(),
        reason: "approved".into(),
    }
}

pub fn skip(result: Value) -> Event {
    Event::SkipRequested {
        requested_by: "ops".into(),
        reason: "done by hand".into(),
        result,
    }
}

pub fn force_fail() -> Event {
    Event::FailRequested {
        requested_by: "ops".into(),
        reason: "wrong prompt".into(),
        error: None,
    }
}

pub fn superseded() -> Event {
    Event::Superseded {
        requested_by: "ops".into(),
        reason: "the plan changed".into(),
        parent: "fan".into(),
    }
}

pub fn reopened(root: &str, input: Option<Value>) -> Event {
    Event::Reopened {
        requested_by: "ops".into(),
        reason: "prompt fixed".into(),
        root: root.into(),
        input,
        keep_items: false,
        retired: Vec::new(),
    }
}

/// `task` paused at `now` (letting a running agent finish).
pub fn paused(task: Task, now: Timestamp) -> Task {
    step(&task, pause(false), now).task
}

pub fn retry_requested() -> Event {
    Event::RetryRequested {
        requested_by: "ops".into(),
    }
}

pub fn deps_met(keys: &[&str]) -> Event {
    Event::DependenciesMet {
        completed: keys.iter().map(|&k| TaskKey::from(k)).collect(),
        input: None,
        unresolved: None,
        results: None,
    }
}
