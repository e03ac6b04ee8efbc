//! Fuzzing the transition function with proptest (cargo-fuzz needs a nightly toolchain).
//!
//! Arbitrary, not just plausible, input: submissions with random specs (most of them invalid:
//! any numbers, NaN and infinite floats, any strings), then random sequences of events of every
//! variant with random field values (agents, fencing tokens, lease ids, keys, capabilities, JSON
//! payloads, error reports), at random times that also go backwards or jump to the ends of the
//! timeline. Fields are drawn either freely or from the task they meet (its lease holder, its
//! token plus or minus a little, its dependencies, its next deadline), so that the sequences
//! also reach deep states. Checked:
//! - `submit` and `apply` never panic;
//! - `submit` refuses exactly the specs `validate` refuses, and otherwise creates version 1;
//! - every accepted event fires a rule of `DEFAULT_RULES` for (state, event kind) and enters its
//!   target state; version + 1; the fencing token never decreases (+1 exactly on assignment);
//!   `Completed` only by `execution_succeeded` with a non-null result from the holder of the
//!   current lease; identity, spec and seed never change; attempts never decrease, errors are
//!   only appended, dependencies only grow; the armed deadlines fit the state and the effects
//!   say what changed; a leased state's lease carries the task's token;
//! - a refusal names the task, its state and the event, and changes nothing (`apply` takes
//!   `&Task`; the task is compared with a copy taken before);
//! - the accepted history replays to the same task, also after a round trip through JSON.
//!
//! Case count: `BATON_FUZZ_CASES` (default 1,000 per property).
//!
//! Long runs, recorded (release build, on 2 cores shared with other builds):
//!   BATON_FUZZ_CASES=300000 cargo test --release -p baton-core --test fuzz_apply
//!   300,000 cases per property, 360 s, found the float round trip through JSON (fixed by
//!   `float_roundtrip` in this crate's manifest);
//!   BATON_FUZZ_CASES=600000 cargo test --release -p baton-core --test fuzz_apply
//!   600,000 cases per property (1.2 million in all, up to 64 events each): first found a
//!   heartbeat's `null` progress replacing the last one, which a JSON round trip turns into
//!   no progress (so replay differed; fixed in `apply`); run again after the fix, 618 s
//!   ("finished in 617.67s"), clean. Both cases are kept in `fuzz_apply.proptest-regressions`.

use std::collections::BTreeSet;
use std::sync::Arc;

use baton_core::*;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use serde_json::Value;
use uuid::Uuid;

const T0: u64 = 1_700_000_000_000;

fn config() -> ProptestConfig {
    let cases = std::env::var("BATON_FUZZ_CASES")
        .ok()
        .map(|v| v.parse().expect("BATON_FUZZ_CASES must be a number"))
        .unwrap_or(1_000);
    ProptestConfig {
        cases,
        max_shrink_iters: 10_000,
        ..ProptestConfig::default()
    }
}

// ---- values ------------------------------------------------------------------------------

const KEYS: &[&str] = &["plan", "research", "write", "sub-1", "a.b:c/d", "x"];
const CAPS: &[&str] = &["read", "write", "gpu"];
const KINDS: &[&str] = &[
    "fatal",
    "flaky",
    "bad_input",
    "agent_lost",
    "timeout.heartbeat",
    "timeout.start_to_close",
    "timeout.schedule_to_start",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_.:/-]{1,12}",
        1 => Just(String::new()),
        2 => any::<String>(),
        1 => "\\PC{100,300}",
    ]
}

fn key() -> impl Strategy<Value = TaskKey> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(TaskKey::from),
        1 => text().prop_map(TaskKey),
    ]
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        3 => proptest::sample::select(CAPS).prop_map(Capability::from),
        1 => text().prop_map(Capability),
    ]
}

fn error_kind() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KINDS).prop_map(str::to_owned),
        1 => text(),
    ]
}

/// Any JSON: nested, with any numbers (finite floats included) and any strings.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn small_or_any_u64(small: u64) -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..small, 1 => any::<u64>()]
}

fn small_or_any_f64(lo: f64, hi: f64) -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => lo..=hi,
        1 => any::<f64>(),
        1 => proptest::sample::select(vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, -1.0, 1e308]),
    ]
}

fn retry_policy() -> impl Strategy<Value = RetryPolicy> {
    (
        prop_oneof![4 => 1u32..6, 1 => any::<u32>()],
        small_or_any_u64(5_000),
        small_or_any_f64(1.0, 4.0),
        small_or_any_u64(100_000),
        small_or_any_f64(0.0, 1.0),
        vec(error_kind(), 0..4),
    )
        .prop_map(
            |(
                max_attempts,
                initial_backoff_ms,
                backoff_multiplier,
                max_backoff_ms,
                jitter,
                non_retryable,
            )| {
                RetryPolicy {
                    max_attempts,
                    initial_backoff_ms,
                    backoff_multiplier,
                    max_backoff_ms,
                    jitter,
                    non_retryable,
                }
            },
        )
}

fn timeout_ms() -> impl Strategy<Value = Option<u64>> {
    proptest::option::weighted(0.7, small_or_any_u64(20_000))
}

fn spec() -> impl Strategy<Value = TaskSpec> {
    (
        key(),
        vec(key(), 0..5),
        btree_set(capability(), 0..4),
        json_value(),
        any::<i32>(),
        retry_policy(),
        (timeout_ms(), timeout_ms(), timeout_ms(), timeout_ms()),
        any::<bool>(),
        proptest::option::weighted(0.3, (key(), btree_set(capability(), 0..3), json_value())),
        proptest::bool::weighted(0.2),
        waits(),
    )
        .prop_map(
            |(
                k,
                depends_on,
                capabilities,
                input,
                priority,
                retry,
                (s2s, start, s2c, hb),
                requeue,
                comp,
                fans_out,
                (wait_for, not_before, delay_ms, sleep_ms),
            )| {
                // A fan-out over the first dependency's result, sometimes.
                let for_each = depends_on
                    .first()
                    .filter(|_| fans_out)
                    .map(|d| serde_json::json!({"$from": d.0}));
                let input = if for_each.is_some() {
                    Value::Null
                } else {
                    input
                };
                TaskSpec {
                    for_each,
                    wait_for,
                    not_before,
                    delay_ms,
                    sleep_ms,
                    depends_on,
                    capabilities,
                    input,
                    priority,
                    retry,
                    timeouts: Timeouts {
                        schedule_to_start_ms: s2s,
                        start_ms: start,
                        start_to_close_ms: s2c,
                        heartbeat_ms: hb,
                    },
                    on_agent_lost: if requeue {
                        AgentLostPolicy::Requeue
                    } else {
                        AgentLostPolicy::Fail
                    },
                    compensation: comp.map(|(key, capabilities, input)| CompensationSpec {
                        retry: None,
                        timeouts: None,
                        priority: None,
                        key,
                        capabilities,
                        input,
                    }),
                    ..TaskSpec::new(k.0)
                }
            },
        )
}

const SIGNALS: &[&str] = &["approve", "go"];

/// A signal task, a delay or a sleep, sometimes (with the rest, often invalid together).
fn waits() -> impl Strategy<Value = (Option<WaitFor>, Option<Timestamp>, Option<u64>, Option<u64>)>
{
    (
        proptest::option::weighted(
            0.15,
            (proptest::sample::select(SIGNALS), timeout_ms()).prop_map(|(s, timeout_ms)| WaitFor {
                signal: s.to_owned(),
                timeout_ms,
            }),
        ),
        proptest::option::weighted(0.1, (T0..T0 + 10_000).prop_map(Timestamp)),
        proptest::option::weighted(0.1, small_or_any_u64(5_000)),
        proptest::option::weighted(0.1, small_or_any_u64(5_000)),
    )
}

fn submission() -> impl Strategy<Value = Submission> {
    (
        any::<u128>(),
        any::<u128>(),
        spec(),
        vec(key(), 0..5),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(|(task, workflow, spec, mut completed, all_done, seed)| {
            if all_done {
                completed.extend(spec.depends_on.iter().cloned());
            }
            Submission {
                task: TaskId(Uuid::from_u128(task)),
                workflow: WorkflowId(Uuid::from_u128(workflow)),
                spec: Arc::new(spec),
                completed,
                seed,
                input: None,
                unresolved: None,
            }
        })
}

// ---- events, drawn freely or from the task they meet -------------------------------------

#[derive(Clone, Debug)]
enum AgentC {
    /// The current lease holder (or agent 0 without a lease).
    Holder,
    Known(u8),
    Raw(u128),
}

#[derive(Clone, Debug)]
enum TokC {
    /// The task's latest token plus this.
    Near(i8),
    Raw(u64),
}

#[derive(Clone, Debug)]
enum KeyC {
    /// One of the task's dependencies (by index, modulo their number).
    Dep(usize),
    Own,
    Any(TaskKey),
}

#[derive(Clone, Debug)]
enum Tpl {
    Submitted(Box<Submission>),
    DependencyAdded(KeyC),
    SubtasksAdded(AgentC, TokC, Vec<KeyC>),
    /// The task's dependencies (if `all`), plus extras.
    DependenciesMet(bool, Vec<KeyC>),
    /// The task's dependencies (if `all`), and this many expanded tasks.
    ForEachExpanded(bool, usize),
    UpstreamFailed(KeyC),
    /// The upstream revived, and the evidence: dependencies, each ended or not.
    UpstreamRevived(KeyC, Vec<(KeyC, bool)>),
    /// With the task's required capabilities (if `capable`), plus extras.
    AgentAssigned(AgentC, bool, BTreeSet<Capability>, u128),
    ExecutionStarted(AgentC, TokC),
    Heartbeat(AgentC, TokC, Option<Value>),
    ExecutionSucceeded(AgentC, TokC, Option<Value>),
    ExecutionFailed(AgentC, TokC, ErrorReport),
    AssignmentReleased(AgentC, TokC),
    AgentLost(AgentC, TokC),
    TimeoutExpired(DeadlineKind),
    Retry,
    RetryRequested(String),
    CancelRequested(String, String),
    /// The task's own signal (if `own`) or another; rejecting with a reason or carrying data.
    SignalReceived(bool, Option<String>, Value),
    TimerFired,
    PauseRequested(String, bool),
    ResumeRequested(String),
    SkipRequested(Value),
    FailRequested(Option<ErrorReport>),
    /// From this task (if `own`) or another root; with a new input or not.
    Reopened(bool, Option<Value>, bool, bool),
    Superseded,
}

#[derive(Clone, Debug)]
enum Dt {
    Forward(u64),
    Backward(u64),
    /// To the task's next deadline or retry, plus this (-1, 0 or 1 ms).
    ToNextTimer(i8),
    /// Anywhere, the ends of the timeline included.
    Anywhere(u64),
}

fn agent_c() -> impl Strategy<Value = AgentC> {
    prop_oneof![
        6 => Just(AgentC::Holder),
        2 => (0u8..3).prop_map(AgentC::Known),
        1 => any::<u128>().prop_map(AgentC::Raw),
    ]
}

fn tok_c() -> impl Strategy<Value = TokC> {
    prop_oneof![
        5 => Just(TokC::Near(0)),
        3 => (-3i8..=3).prop_map(TokC::Near),
        1 => any::<u64>().prop_map(TokC::Raw),
    ]
}

fn key_c() -> impl Strategy<Value = KeyC> {
    prop_oneof![
        3 => any::<usize>().prop_map(KeyC::Dep),
        1 => Just(KeyC::Own),
        2 => key().prop_map(KeyC::Any),
    ]
}

fn result() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        6 => json_value().prop_map(Some),
        1 => Just(Some(Value::Null)),
        1 => Just(None),
    ]
}

fn error_report() -> impl Strategy<Value = ErrorReport> {
    (error_kind(), text(), any::<bool>()).prop_map(|(kind, message, retryable)| ErrorReport {
        kind,
        message,
        retryable,
    })
}

fn deadline() -> impl Strategy<Value = DeadlineKind> {
    proptest::sample::select(DeadlineKind::ALL.to_vec())
}

fn tpl() -> impl Strategy<Value = Tpl> {
    prop_oneof![
        1 => submission().prop_map(|s| Tpl::Submitted(Box::new(s))),
        1 => key_c().prop_map(Tpl::DependencyAdded),
        1 => (agent_c(), tok_c(), vec(key_c(), 1..3)).prop_map(|(a, t, k)| Tpl::SubtasksAdded(a, t, k)),
        2 => (any::<bool>(), vec(key_c(), 0..3)).prop_map(|(all, extra)| Tpl::DependenciesMet(all, extra)),
        1 => (any::<bool>(), 0..3usize).prop_map(|(all, n)| Tpl::ForEachExpanded(all, n)),
        1 => key_c().prop_map(Tpl::UpstreamFailed),
        1 => (key_c(), vec((key_c(), any::<bool>()), 0..3)).prop_map(|(k, deps)| Tpl::UpstreamRevived(k, deps)),
        4 => (agent_c(), prop_oneof![4 => Just(true), 1 => Just(false)], btree_set(capability(), 0..3), any::<u128>())
            .prop_map(|(a, capable, caps, lease)| Tpl::AgentAssigned(a, capable, caps, lease)),
        4 => (agent_c(), tok_c()).prop_map(|(a, t)| Tpl::ExecutionStarted(a, t)),
        3 => (agent_c(), tok_c(), proptest::option::of(json_value()))
            .prop_map(|(a, t, p)| Tpl::Heartbeat(a, t, p)),
        4 => (agent_c(), tok_c(), result()).prop_map(|(a, t, r)| Tpl::ExecutionSucceeded(a, t, r)),
        3 => (agent_c(), tok_c(), error_report()).prop_map(|(a, t, e)| Tpl::ExecutionFailed(a, t, e)),
        1 => (agent_c(), tok_c()).prop_map(|(a, t)| Tpl::AssignmentReleased(a, t)),
        1 => (agent_c(), tok_c()).prop_map(|(a, t)| Tpl::AgentLost(a, t)),
        2 => deadline().prop_map(Tpl::TimeoutExpired),
        2 => Just(Tpl::Retry),
        1 => text().prop_map(Tpl::RetryRequested),
        1 => (text(), text()).prop_map(|(by, why)| Tpl::CancelRequested(by, why)),
        2 => (any::<bool>(), proptest::option::weighted(0.3, text()), json_value())
            .prop_map(|(own, reject, data)| Tpl::SignalReceived(own, reject, data)),
        2 => Just(Tpl::TimerFired),
        1 => (text(), any::<bool>()).prop_map(|(by, now)| Tpl::PauseRequested(by, now)),
        1 => text().prop_map(Tpl::ResumeRequested),
        1 => json_value().prop_map(Tpl::SkipRequested),
        1 => proptest::option::of(error_report()).prop_map(Tpl::FailRequested),
        1 => (any::<bool>(), proptest::option::of(json_value()), any::<bool>(), any::<bool>()).prop_map(|(own, input, keep, retire)| Tpl::Reopened(own, input, keep, retire)),
        1 => Just(Tpl::Superseded),
    ]
}

fn dt() -> impl Strategy<Value = Dt> {
    prop_oneof![
        6 => (0u64..5_000).prop_map(Dt::Forward),
        2 => (0u64..100_000_000).prop_map(Dt::Forward),
        2 => (0u64..10_000).prop_map(Dt::Backward),
        3 => (-1i8..=1).prop_map(Dt::ToNextTimer),
        1 => prop_oneof![any::<u64>(), Just(u64::MAX), Just(0u64), Just(u64::MAX - 1)].prop_map(Dt::Anywhere),
    ]
}

fn known_agent(n: u8) -> AgentId {
    AgentId(Uuid::from_u128(0xa1 + u128::from(n)))
}

fn agent_of(c: &AgentC, task: &Task) -> AgentId {
    match c {
        AgentC::Holder => task.state.lease().map_or(known_agent(0), |l| l.agent),
        AgentC::Known(n) => known_agent(*n),
        AgentC::Raw(n) => AgentId(Uuid::from_u128(*n)),
    }
}

fn token_of(c: &TokC, task: &Task) -> FencingToken {
    match c {
        TokC::Near(d) => FencingToken(task.fencing_token.0.saturating_add_signed(i64::from(*d))),
        TokC::Raw(t) => FencingToken(*t),
    }
}

fn key_of(c: &KeyC, task: &Task) -> TaskKey {
    match c {
        KeyC::Dep(i) if !task.dependencies.is_empty() => {
            task.dependencies[i % task.dependencies.len()].clone()
        }
        KeyC::Dep(_) | KeyC::Own => task.spec.key.clone(),
        KeyC::Any(k) => k.clone(),
    }
}

fn event_of(t: &Tpl, task: &Task) -> Event {
    match t {
        Tpl::Submitted(s) => Event::Submitted((**s).clone()),
        Tpl::DependencyAdded(k) => Event::DependencyAdded {
            dependency: key_of(k, task),
        },
        Tpl::SubtasksAdded(a, k, keys) => Event::SubtasksAdded {
            agent: agent_of(a, task),
            token: token_of(k, task),
            tasks: keys.iter().map(|k| key_of(k, task)).collect(),
        },
        Tpl::DependenciesMet(all, extra) => {
            let mut completed = if *all {
                task.dependencies.clone()
            } else {
                Vec::new()
            };
            completed.extend(extra.iter().map(|k| key_of(k, task)));
            Event::DependenciesMet {
                completed,
                input: None,
                unresolved: None,
                results: None,
            }
        }
        Tpl::ForEachExpanded(all, n) => Event::ForEachExpanded {
            completed: if *all {
                task.dependencies.clone()
            } else {
                Vec::new()
            },
            tasks: (0..*n)
                .map(|i| baton_core::template::item_key(&task.spec.key, i))
                .collect(),
            unresolved: None,
        },
        Tpl::UpstreamFailed(k) => Event::UpstreamFailed {
            upstream: key_of(k, task),
        },
        Tpl::UpstreamRevived(k, deps) => Event::UpstreamRevived {
            upstream: key_of(k, task),
            dependencies: deps
                .iter()
                .map(|(k, ended)| DependencyEnd {
                    key: key_of(k, task),
                    ended: *ended,
                })
                .collect(),
        },
        Tpl::AgentAssigned(a, capable, caps, lease) => {
            let mut capabilities = caps.clone();
            if *capable {
                capabilities.extend(task.spec.capabilities.iter().cloned());
            }
            Event::AgentAssigned {
                agent: agent_of(a, task),
                capabilities,
                lease: LeaseId(Uuid::from_u128(*lease)),
            }
        }
        Tpl::ExecutionStarted(a, tk) => Event::ExecutionStarted {
            by_claim: false,
            agent: agent_of(a, task),
            token: token_of(tk, task),
        },
        Tpl::Heartbeat(a, tk, p) => Event::Heartbeat {
            usage: Default::default(),
            agent: agent_of(a, task),
            token: token_of(tk, task),
            progress: p.clone(),
        },
        Tpl::ExecutionSucceeded(a, tk, r) => Event::ExecutionSucceeded {
            usage: Default::default(),
            agent: agent_of(a, task),
            token: token_of(tk, task),
            result: r.clone(),
        },
        Tpl::ExecutionFailed(a, tk, e) => Event::ExecutionFailed {
            usage: Default::default(),
            agent: agent_of(a, task),
            token: token_of(tk, task),
            error: e.clone(),
        },
        Tpl::AssignmentReleased(a, tk) => Event::AssignmentReleased {
            agent: agent_of(a, task),
            token: token_of(tk, task),
        },
        Tpl::AgentLost(a, tk) => Event::AgentLost {
            agent: agent_of(a, task),
            token: token_of(tk, task),
        },
        Tpl::TimeoutExpired(d) => Event::TimeoutExpired { deadline: *d },
        Tpl::Retry => Event::Retry,
        Tpl::RetryRequested(by) => Event::RetryRequested {
            requested_by: by.clone(),
        },
        Tpl::CancelRequested(by, reason) => Event::CancelRequested {
            requested_by: by.clone(),
            reason: reason.clone(),
        },
        Tpl::SignalReceived(own, reject, data) => Event::SignalReceived {
            signal: match (&task.spec.wait_for, own) {
                (Some(w), true) => w.signal.clone(),
                _ => "other".into(),
            },
            id: 1,
            data: data.clone(),
            reject: reject.clone(),
            sent_by: "operator".into(),
        },
        Tpl::TimerFired => Event::TimerFired,
        Tpl::PauseRequested(by, now) => Event::PauseRequested {
            requested_by: by.clone(),
            reason: "fuzz".into(),
            now: *now,
        },
        Tpl::ResumeRequested(by) => Event::ResumeRequested {
            requested_by: by.clone(),
            reason: "fuzz".into(),
        },
        Tpl::SkipRequested(result) => Event::SkipRequested {
            requested_by: "op".into(),
            reason: "fuzz".into(),
            result: result.clone(),
        },
        Tpl::FailRequested(error) => Event::FailRequested {
            requested_by: "op".into(),
            reason: "fuzz".into(),
            error: error.clone(),
        },
        Tpl::Reopened(own, input, keep_items, retire) => Event::Reopened {
            requested_by: "op".into(),
            reason: "fuzz".into(),
            root: if *own {
                task.spec.key.clone()
            } else {
                TaskKey("upstream-root".into())
            },
            input: input.clone(),
            keep_items: *keep_items,
            retired: if *retire {
                task.dependencies.iter().take(1).cloned().collect()
            } else {
                Vec::new()
            },
        },
        Tpl::Superseded => Event::Superseded {
            requested_by: "op".into(),
            reason: "fuzz".into(),
            parent: TaskKey("fan".into()),
        },
    }
}

fn next_time(dt: &Dt, now: Timestamp, task: &Task) -> Timestamp {
    match dt {
        Dt::Forward(ms) => now.plus_ms(*ms),
        Dt::Backward(ms) => Timestamp(now.0.saturating_sub(*ms)),
        Dt::ToNextTimer(d) => {
            let retry = match task.state {
                State::Failed {
                    retry_at: Some(at), ..
                } => Some(at),
                _ => None,
            };
            match task.next_timer().map(|(_, at)| at).or(retry) {
                Some(at) => Timestamp(at.0.saturating_add_signed(i64::from(*d))),
                None => now,
            }
        }
        Dt::Anywhere(t) => Timestamp(*t),
    }
}

// ---- the checks ----------------------------------------------------------------------------

/// The deadlines a state may have armed, given the spec: none beyond what the state allows, and
/// those the spec asks for where the state always arms them.
fn deadlines_fit(task: &Task) -> Result<(), String> {
    let d = task.deadlines;
    let t = &task.spec.timeouts;
    let ok = match task.kind() {
        StateKind::Pending if task.spec.wait_for.is_some() => {
            d.signal.is_some()
                == task
                    .spec
                    .wait_for
                    .as_ref()
                    .is_some_and(|w| w.timeout_ms.is_some())
                && d.schedule_to_start.is_none()
                && d.start.is_none()
                && d.start_to_close.is_none()
                && d.heartbeat.is_none()
        }
        StateKind::Pending => {
            d.start.is_none()
                && d.start_to_close.is_none()
                && d.heartbeat.is_none()
                && d.signal.is_none()
        }
        StateKind::Assigned => {
            d.start.is_some() == t.start_ms.is_some()
                && d.start_to_close.is_none()
                && d.heartbeat.is_none()
        }
        StateKind::Executing => {
            d.schedule_to_start.is_none()
                && d.start.is_none()
                && d.start_to_close.is_some() == t.start_to_close_ms.is_some()
                && d.heartbeat.is_some() == t.heartbeat_ms.is_some()
        }
        _ => d == Deadlines::default(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "deadlines {d:?} do not fit {:?} with timeouts {t:?}",
            task.kind()
        ))
    }
}

fn check_accepted(
    old: &Task,
    ev: &Event,
    now: Timestamp,
    t: &Transition,
) -> Result<(), TestCaseError> {
    let new = &t.task;
    let rule = t.rule;
    prop_assert!(
        DEFAULT_RULES.iter().any(|r| std::ptr::eq(r, rule)),
        "a rule not in the table fired"
    );
    prop_assert_eq!(rule.from, Some(old.kind()));
    prop_assert_eq!(rule.event, ev.kind());
    prop_assert_eq!(rule.to, new.kind());
    prop_assert_eq!(t.from, Some(old.kind()));
    prop_assert_eq!(new.version, old.version + 1);
    prop_assert_eq!(new.updated_at, now);
    prop_assert!(
        new.fencing_token >= old.fencing_token,
        "the fencing token went down"
    );
    if matches!(ev, Event::AgentAssigned { .. }) {
        prop_assert_eq!(new.fencing_token, old.fencing_token.next());
    } else {
        prop_assert_eq!(new.fencing_token, old.fencing_token);
    }
    if let Some(lease) = new.state.lease() {
        prop_assert_eq!(lease.token, new.fencing_token);
    }
    prop_assert!(
        old.kind() != StateKind::Completed
            || matches!(ev, Event::Reopened { .. } | Event::Superseded { .. }),
        "Completed accepted {:?}",
        ev.kind()
    );
    // An operator's controls: a paused task is never handed out and its stopped timers never
    // fire; a pause ends with the task; a report is only accepted under the current lease.
    let frozen = old.paused.as_ref().is_some_and(|p| p.frozen_at.is_some());
    prop_assert!(
        !(old.is_paused()
            && matches!(
                ev,
                Event::AgentAssigned { .. } | Event::SignalReceived { .. }
            )),
        "a paused task accepted {:?}",
        ev.kind()
    );
    prop_assert!(
        !(frozen
            && matches!(
                ev,
                Event::TimerFired | Event::Retry | Event::TimeoutExpired { .. }
            )),
        "a stopped timer fired: {:?}",
        ev.kind()
    );
    if new.state.is_terminal() {
        prop_assert!(new.paused.is_none(), "an ended task is still paused");
    }
    if let Some((agent, token)) = ev.report() {
        if !matches!(ev, Event::AgentLost { .. }) {
            let lease = old.state.lease();
            prop_assert!(
                lease.is_some_and(|l| l.agent == agent && l.token == token),
                "a report under a lease that is not current was accepted"
            );
        }
    }
    if matches!(ev, Event::Reopened { .. }) {
        prop_assert_eq!(new.kind(), StateKind::Blocked);
        prop_assert!(new.input.is_none() && new.wake_at.is_none());
        prop_assert_eq!(
            new.attempts_allowed,
            old.attempt + old.spec.retry.max_attempts
        );
    }
    if let (Event::SkipRequested { result: r, .. }, State::Completed { result, .. }) =
        (ev, &new.state)
    {
        prop_assert_eq!(result, r);
    } else if new.kind() == StateKind::Completed && old.spec.for_each.is_some() {
        // A fan-out completes by itself, with its items' results: none, or what its release
        // gathered once it had expanded.
        prop_assert_eq!(old.kind(), StateKind::Blocked);
        let State::Completed { result, .. } = &new.state else {
            unreachable!()
        };
        match ev {
            Event::ForEachExpanded { tasks, .. } => {
                prop_assert!(tasks.is_empty());
                prop_assert_eq!(result, &Value::Array(Vec::new()));
            }
            Event::DependenciesMet {
                results: Some(results),
                ..
            } => {
                prop_assert!(old.expanded.is_some(), "completed before it expanded");
                prop_assert_eq!(result, &Value::Array(results.clone()));
            }
            _ => prop_assert!(false, "a fan-out completed by {:?}", ev),
        }
    } else if new.kind() == StateKind::Completed && old.spec.wait_for.is_some() {
        // A signal task completes with its signal's data, by no lease.
        let (
            Event::SignalReceived {
                signal,
                data,
                reject: None,
                ..
            },
            State::Completed { result, .. },
        ) = (ev, &new.state)
        else {
            return Err(TestCaseError::fail(format!(
                "a signal task completed by {ev:?}"
            )));
        };
        prop_assert_eq!(old.kind(), StateKind::Pending);
        prop_assert_eq!(Some(signal), old.spec.wait_for.as_ref().map(|w| &w.signal));
        prop_assert_eq!(result, data);
    } else if new.kind() == StateKind::Completed && old.spec.sleep_ms.is_some() {
        // A sleeping task completes by itself once it wakes.
        prop_assert!(
            matches!(ev, Event::TimerFired),
            "a sleep completed by {:?}",
            ev
        );
        prop_assert!(
            old.wake_at.is_some_and(|at| at <= now),
            "woke before its time"
        );
    } else if new.kind() == StateKind::Completed {
        let lease = old.state.lease();
        prop_assert_eq!(old.kind(), StateKind::Executing);
        match (ev, lease, &new.state) {
            (
                Event::ExecutionSucceeded {
                    usage: _,
                    agent,
                    token,
                    result: Some(r),
                },
                Some(lease),
                State::Completed {
                    result,
                    token: done,
                },
            ) => {
                prop_assert!(!r.is_null(), "completed with a null result");
                prop_assert_eq!(
                    (*agent, *token),
                    (lease.agent, lease.token),
                    "completed by a stale lease"
                );
                prop_assert_eq!(result, r);
                prop_assert_eq!(*done, *token);
            }
            _ => prop_assert!(false, "completed by {:?} from {:?}", ev, old.state),
        }
    }
    // What never changes, what only grows.
    prop_assert_eq!(new.id, old.id);
    prop_assert_eq!(new.workflow, old.workflow);
    match ev {
        // `null` is no new input (so it reads back from the history's JSON).
        Event::Reopened {
            input: Some(input), ..
        } if !input.is_null() => prop_assert_eq!(&new.spec.input, input),
        _ => prop_assert!(Arc::ptr_eq(&new.spec, &old.spec) || new.spec == old.spec),
    }
    prop_assert_eq!(new.seed, old.seed);
    prop_assert_eq!(new.created_at, old.created_at);
    prop_assert!(new.attempt >= old.attempt);
    prop_assert!(
        new.attempt <= new.attempts_allowed,
        "attempt {} of {}",
        new.attempt,
        new.attempts_allowed
    );
    prop_assert!(new.errors.starts_with(&old.errors) && new.errors.len() <= old.errors.len() + 1);
    // One more at most, but a fan-out's items, all at once.
    let added = match ev {
        Event::ForEachExpanded { tasks, .. } => tasks.len(),
        // Those in the graph that its list missed join it.
        Event::UpstreamRevived { dependencies, .. } => dependencies.len(),
        _ => 1,
    };
    if let Event::Reopened {
        keep_items,
        retired,
        ..
    } = ev
    {
        // A rerun drops the sub-tasks it retired and, unless it keeps them, a fan-out's items
        // (until it expands again), and only those.
        let items: Vec<TaskKey> = match old.expanded {
            Some(n) if !keep_items => (0..n as usize)
                .map(|i| baton_core::template::item_key(&old.spec.key, i))
                .collect(),
            _ => Vec::new(),
        };
        let kept: Vec<TaskKey> = old
            .dependencies
            .iter()
            .filter(|k| !items.contains(k) && !retired.contains(k))
            .cloned()
            .collect();
        prop_assert_eq!(&new.dependencies, &kept);
        if !keep_items {
            prop_assert_eq!(new.expanded, None);
        }
    } else {
        prop_assert!(
            new.dependencies.starts_with(&old.dependencies)
                && new.dependencies.len() <= old.dependencies.len() + added
        );
    }
    if new.kind() != old.kind() {
        prop_assert_eq!(new.entered_at.get(new.kind()), Some(now));
    }
    deadlines_fit(new).map_err(TestCaseError::fail)?;
    // A wake-up is only ever set on a released task that waits blocked for it, and fires no
    // earlier than it says.
    if new.wake_at.is_some() {
        prop_assert_eq!(new.kind(), StateKind::Blocked);
    }
    if matches!(ev, Event::TimerFired) {
        prop_assert!(
            old.wake_at.is_some_and(|at| at <= now),
            "fired before its time"
        );
    }
    if new.deadlines != old.deadlines {
        prop_assert!(
            rule.has_effect(EffectKind::Timers),
            "deadlines changed without Timers: {}",
            rule
        );
    }
    for e in &t.effects {
        match e {
            Effect::ArmDeadline { kind, at } => {
                prop_assert_eq!(new.deadlines.get(*kind), Some(*at))
            }
            Effect::DisarmDeadline { kind } => prop_assert_eq!(new.deadlines.get(*kind), None),
            Effect::ScheduleRetry { at, attempt } => {
                let scheduled =
                    matches!(new.state, State::Failed { retry_at: Some(r), .. } if r == *at);
                prop_assert!(
                    scheduled,
                    "a retry effect at {} but the state is {:?}",
                    at,
                    new.state
                );
                prop_assert_eq!(*attempt, new.attempt + 1);
            }
            Effect::Compensate { spec } => {
                prop_assert_eq!(Some(&**spec), new.spec.compensation.as_ref())
            }
            Effect::ArmWake { at } => prop_assert_eq!(new.wake_at, Some(*at)),
            Effect::AwaitSignal { signal } => {
                prop_assert_eq!(new.kind(), StateKind::Pending);
                prop_assert_eq!(Some(signal), new.spec.wait_for.as_ref().map(|w| &w.signal));
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_refused(old: &Task, ev: &Event, r: &Rejection) -> Result<(), TestCaseError> {
    prop_assert_eq!(r.task, old.id);
    prop_assert_eq!(r.state, Some(old.kind()));
    prop_assert_eq!(r.event, ev.kind());
    prop_assert!(!r.to_string().is_empty());
    prop_assert!(!r.refusal.code().is_empty());
    if let Refusal::NotAccepted { accepted } = &r.refusal {
        let table = DEFAULT.events_from(old.kind());
        prop_assert_eq!(accepted.iter().copied().collect::<BTreeSet<_>>(), table);
        prop_assert!(
            DEFAULT
                .rules_for(Some(old.kind()), ev.kind())
                .next()
                .is_none(),
            "refused as not accepted, but rules exist for {} from {}",
            ev.kind(),
            old.kind()
        );
    }
    if r.refusal == Refusal::Duplicate {
        prop_assert!(
            ev.report().is_some()
                || matches!(
                    ev,
                    Event::CancelRequested { .. } | Event::DependencyAdded { .. }
                )
                || (matches!(ev, Event::DependenciesMet { .. }) && old.wake_at.is_some()),
            "{:?} called a duplicate",
            ev.kind()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// Any submission: refused exactly when its spec is invalid, otherwise a fresh task.
    #[test]
    fn arbitrary_submissions_are_refused_or_create_a_fresh_task(
        sub in submission(),
        now in prop_oneof![4 => T0..T0 + 1_000_000, 1 => any::<u64>()],
    ) {
        let now = Timestamp(now);
        let valid = sub.spec.validate();
        match submit(&sub, now) {
            Ok(t) => {
                prop_assert!(valid.is_ok());
                prop_assert!(t.rule.from.is_none());
                prop_assert!(DEFAULT_RULES.iter().any(|r| std::ptr::eq(r, t.rule)));
                let task = &t.task;
                prop_assert_eq!(task.version, 1);
                prop_assert_eq!(task.attempt, 1);
                prop_assert_eq!(task.fencing_token, FencingToken(0));
                prop_assert_eq!(task.attempts_allowed, sub.spec.retry.max_attempts);
                let ready = sub.spec.depends_on.iter().all(|d| sub.completed.contains(d));
                // A fan-out waits to be expanded, whatever its dependencies.
                let runs = ready
                    && sub.spec.for_each.is_none()
                    && wake_time(&sub.spec, now).is_none();
                prop_assert_eq!(task.kind(), if runs { StateKind::Pending } else { StateKind::Blocked });
                deadlines_fit(task).map_err(TestCaseError::fail)?;
                let h = vec![HistoryEntry { seq: 1, at: now, event: Event::Submitted(sub.clone()) }];
                prop_assert_eq!(&replay(&h).unwrap(), task);
            }
            // An input template needs its resolution when the dependencies are met.
            Err(r) if template::is_template(&sub.spec.input) => {
                prop_assert!(!r.to_string().is_empty());
            }
            Err(r) => {
                prop_assert!(valid.is_err(), "a valid spec was refused: {}", r);
                let is_invalid_spec = matches!(r.refusal, Refusal::InvalidSpec { .. });
                prop_assert!(is_invalid_spec, "{:?}", r.refusal);
                prop_assert_eq!(r.state, None);
                prop_assert!(!r.to_string().is_empty());
            }
        }
    }

    /// Arbitrary event sequences at arbitrary times: no panic, and every accepted event obeys
    /// the table and the invariants; every refused one changes nothing; the history replays.
    #[test]
    fn arbitrary_events_never_panic_and_accepted_ones_obey_the_table(
        sub in submission(),
        start in prop_oneof![6 => T0..T0 + 1_000, 1 => any::<u64>()],
        steps in vec((dt(), tpl()), 0..64),
    ) {
        let now0 = Timestamp(start);
        let Ok(first) = submit(&sub, now0) else {
            return Ok(());
        };
        let mut task = first.task;
        let mut now = now0;
        let mut history = vec![HistoryEntry { seq: 1, at: now0, event: Event::Submitted(sub) }];
        for (d, t) in &steps {
            now = next_time(d, now, &task);
            let ev = event_of(t, &task);
            let before = task.clone();
            match apply(&task, &ev, now) {
                Ok(tr) => {
                    check_accepted(&task, &ev, now, &tr)?;
                    history.push(HistoryEntry { seq: tr.task.version, at: now, event: ev });
                    task = tr.task;
                }
                Err(r) => {
                    prop_assert_eq!(&task, &before, "a refusal changed the task");
                    check_refused(&task, &ev, &r)?;
                }
            }
        }
        prop_assert_eq!(&replay(&history).unwrap(), &task);
        let stored = serde_json::to_string(&history).unwrap();
        let loaded: Vec<HistoryEntry> = serde_json::from_str(&stored).unwrap();
        prop_assert_eq!(&replay(&loaded).unwrap(), &task, "replay after a JSON round trip differs");
    }
}

/// The reference values above cover every event kind, so no variant escapes the fuzzer.
#[test]
fn every_event_kind_has_a_template() {
    let task = submit(
        &Submission {
            task: TaskId(Uuid::from_u128(1)),
            workflow: WorkflowId(Uuid::from_u128(2)),
            spec: Arc::new(TaskSpec::new("t")),
            completed: Vec::new(),
            seed: 0,
            input: None,
            unresolved: None,
        },
        Timestamp(T0),
    )
    .unwrap()
    .task;
    let a = AgentC::Holder;
    let k = TokC::Near(0);
    let all = [
        Tpl::Submitted(Box::new(Submission {
            task: task.id,
            workflow: task.workflow,
            spec: Arc::clone(&task.spec),
            completed: Vec::new(),
            seed: 0,
            input: None,
            unresolved: None,
        })),
        Tpl::DependencyAdded(KeyC::Own),
        Tpl::SubtasksAdded(a.clone(), k.clone(), vec![KeyC::Own]),
        Tpl::DependenciesMet(true, Vec::new()),
        Tpl::ForEachExpanded(true, 1),
        Tpl::UpstreamFailed(KeyC::Own),
        Tpl::UpstreamRevived(KeyC::Own, Vec::new()),
        Tpl::AgentAssigned(a.clone(), true, BTreeSet::new(), 0),
        Tpl::ExecutionStarted(a.clone(), k.clone()),
        Tpl::Heartbeat(a.clone(), k.clone(), None),
        Tpl::ExecutionSucceeded(a.clone(), k.clone(), None),
        Tpl::ExecutionFailed(
            a.clone(),
            k.clone(),
            ErrorReport {
                kind: "x".into(),
                message: String::new(),
                retryable: true,
            },
        ),
        Tpl::AssignmentReleased(a.clone(), k.clone()),
        Tpl::AgentLost(a, k),
        Tpl::TimeoutExpired(DeadlineKind::Start),
        Tpl::Retry,
        Tpl::RetryRequested(String::new()),
        Tpl::CancelRequested(String::new(), String::new()),
        Tpl::SignalReceived(true, None, Value::Null),
        Tpl::TimerFired,
        Tpl::PauseRequested(String::new(), false),
        Tpl::ResumeRequested(String::new()),
        Tpl::SkipRequested(Value::Null),
        Tpl::FailRequested(None),
        Tpl::Reopened(true, None, false, false),
        Tpl::Superseded,
    ];
    let kinds: BTreeSet<EventKind> = all.iter().map(|t| event_of(t, &task).kind()).collect();
    assert_eq!(kinds, EventKind::ALL.into_iter().collect());
}
