//! Fuzzing the JSON body decoder with proptest (cargo-fuzz needs a nightly toolchain): every
//! request body of the API goes through `baton_server::extract::decode::<T>`.
//!
//! Input: arbitrary bytes; arbitrary JSON values (deeply nested past the parser's and the
//! payload limits, huge strings, any unicode, numbers of every width); valid workflow bodies
//! and mutations of them (fields removed, renamed, retyped, replaced by arbitrary JSON or by
//! raw number tokens out of every range, wrapped, and the text truncated or with bytes flipped
//! or inserted). Every body type is tried on every input. Checked:
//! - decoding never panics;
//! - a refusal is a 400 (syntax) or 422 (shape) problem document with a non-empty `code`,
//!   `type` `/problems/{code}`, a title and a detail;
//! - an accepted body round-trips: encoded again it is accepted again and decodes to the same
//!   value; a valid workflow body is accepted and decodes to exactly what was encoded.
//!
//! Case count: `BATON_FUZZ_CASES` (default 500 per property).
//!
//! Long run, recorded (release build, on 2 cores shared with other builds):
//!   BATON_FUZZ_CASES=600000 cargo test --release -p baton-server --test fuzz_decode
//!   600,000 cases per property (2.4 million inputs, each decoded as all 11 body types),
//!   643 s ("finished in 642.57s"), clean. It first found `{"": null}` refused with an empty
//!   `field` (`fuzz_decode.proptest-regressions`), fixed in `extract.rs`.

use baton_api::{
    CancelBody, ClaimBody, FailureReport, HeartbeatReport, LeaseReport, RegisterAgent, RetryBody,
    SubmitTask, SubmitWorkflow, SubtasksReport, SuccessReport,
};
use baton_core::{
    AgentLostPolicy, Capability, CompensationSpec, RetryPolicy, TaskKey, TaskSpec, Timeouts,
};
use baton_server::extract::{decode, PAYLOAD_DEPTH_MAX};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn config() -> ProptestConfig {
    let cases = std::env::var("BATON_FUZZ_CASES")
        .ok()
        .map(|v| v.parse().expect("BATON_FUZZ_CASES must be a number"))
        .unwrap_or(500);
    ProptestConfig {
        cases,
        max_shrink_iters: 5_000,
        ..ProptestConfig::default()
    }
}

// ---- the checks ----------------------------------------------------------------------------

/// Decodes `bytes` as a `T`: a refusal must be a well-formed 400/422 problem; an accepted
/// body must round-trip. Returns the decoded value as JSON.
fn check<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<Option<Value>, TestCaseError> {
    match decode::<T>(bytes) {
        Ok(v) => {
            let value = serde_json::to_value(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let again = serde_json::to_vec(&v).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match decode::<T>(&again) {
                Ok(w) => {
                    let second = serde_json::to_value(&w).unwrap();
                    prop_assert_eq!(&value, &second, "a decoded body changed on a round trip");
                }
                Err(p) => prop_assert!(
                    false,
                    "{} accepted, then refused once encoded again: {:?}\n{}",
                    std::any::type_name::<T>(),
                    p,
                    String::from_utf8_lossy(&again)
                ),
            }
            Ok(Some(value))
        }
        Err(p) => {
            prop_assert!(
                p.status == 400 || p.status == 422,
                "status {} for {:?}",
                p.status,
                p
            );
            prop_assert!(!p.code.is_empty(), "a problem without a code: {:?}", p);
            prop_assert_eq!(&p.kind, &format!("/problems/{}", p.code));
            prop_assert!(!p.title.is_empty() && !p.detail.is_empty(), "{:?}", p);
            if p.status == 400 {
                prop_assert_eq!(p.code.as_str(), "malformed_json");
            } else {
                prop_assert_eq!(p.code.as_str(), "invalid_field");
                prop_assert!(
                    p.field.as_deref().is_some_and(|f| !f.is_empty()),
                    "422 without a field: {:?}",
                    p
                );
            }
            Ok(None)
        }
    }
}

/// Every request body type of the API.
fn check_every_body(bytes: &[u8]) -> Result<(), TestCaseError> {
    check::<SubmitWorkflow>(bytes)?;
    check::<SubmitTask>(bytes)?;
    check::<CancelBody>(bytes)?;
    check::<RetryBody>(bytes)?;
    check::<RegisterAgent>(bytes)?;
    check::<ClaimBody>(bytes)?;
    check::<LeaseReport>(bytes)?;
    check::<HeartbeatReport>(bytes)?;
    check::<SuccessReport>(bytes)?;
    check::<FailureReport>(bytes)?;
    check::<SubtasksReport>(bytes)?;
    Ok(())
}

// ---- values ------------------------------------------------------------------------------

const FIELDS: &[&str] = &[
    "name",
    "idempotency_key",
    "tasks",
    "task",
    "key",
    "depends_on",
    "capabilities",
    "input",
    "priority",
    "retry",
    "timeouts",
    "on_agent_lost",
    "compensation",
    "max_attempts",
    "initial_backoff_ms",
    "backoff_multiplier",
    "max_backoff_ms",
    "jitter",
    "non_retryable",
    "schedule_to_start_ms",
    "start_ms",
    "start_to_close_ms",
    "heartbeat_ms",
    "reason",
    "id",
    "concurrency",
    "max",
    "wait_ms",
    "agent",
    "token",
    "traceparent",
    "progress",
    "result",
    "error",
    "kind",
    "message",
    "retryable",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_.:/-]{1,12}",
        2 => proptest::sample::select(FIELDS).prop_map(str::to_owned),
        2 => any::<String>(),
        1 => "\\PC{0,40}",
        1 => Just("\u{0}\u{feff}\u{10ffff}\"\\/\n".to_owned()),
    ]
}

fn huge_text() -> impl Strategy<Value = String> {
    (any::<char>(), 10_000usize..200_000).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect())
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value nested `depth` levels deep in arrays or objects.
fn nested(depth: usize, objects: bool, leaf: Value) -> Value {
    let mut v = leaf;
    for i in 0..depth {
        v = if objects && i % 2 == 0 {
            Value::Object([("input".to_owned(), v)].into_iter().collect())
        } else {
            Value::Array(vec![v])
        };
    }
    v
}

/// Nested around the payload limit and the parser's recursion limit (128).
fn deep_value() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            0usize..PAYLOAD_DEPTH_MAX + 4,
            PAYLOAD_DEPTH_MAX - 2..PAYLOAD_DEPTH_MAX + 3,
            120usize..135,
        ],
        any::<bool>(),
        json_value(),
    )
        .prop_map(|(d, o, leaf)| nested(d, o, leaf))
}

/// JSON text nested far deeper than any parser allows, written as text (a `Value` that deep
/// would overflow the test's own stack when dropped).
fn deep_text() -> impl Strategy<Value = Vec<u8>> {
    (
        500usize..20_000,
        any::<bool>(),
        prop_oneof![Just("input"), Just("tasks"), Just("x")],
    )
        .prop_map(|(depth, objects, key)| {
            let (open, close) = if objects {
                (format!("{{\"{key}\":"), "}")
            } else {
                ("[".to_owned(), "]")
            };
            let mut s = String::from("{\"tasks\":[{\"key\":\"a\",\"input\":");
            s.push_str(&open.repeat(depth));
            s.push('1');
            s.push_str(&close.repeat(depth));
            s.push_str("}]}");
            s.into_bytes()
        })
}

fn key() -> impl Strategy<Value = TaskKey> {
    prop_oneof![4 => "[a-z][a-z0-9_.:/-]{0,10}", 1 => text()].prop_map(TaskKey)
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![4 => 0.0..10.0f64, 1 => any::<f64>().prop_filter("finite", |f| f.is_finite())]
}

/// A task spec of the right shape, with any values (valid or not for the engine).
fn spec() -> impl Strategy<Value = TaskSpec> {
    (
        key(),
        vec(key(), 0..4),
        btree_set("[a-z]{1,6}".prop_map(Capability), 0..3),
        json_value(),
        any::<i32>(),
        (
            any::<u32>(),
            any::<u64>(),
            finite(),
            any::<u64>(),
            finite(),
            vec(text(), 0..3),
        ),
        proptest::array::uniform4(proptest::option::of(any::<u64>())),
        any::<bool>(),
        proptest::option::of((
            key(),
            btree_set("[a-z]{1,6}".prop_map(Capability), 0..3),
            json_value(),
        )),
    )
        .prop_map(
            |(k, depends_on, capabilities, input, priority, r, t, requeue, comp)| TaskSpec {
                depends_on,
                capabilities,
                input,
                priority,
                retry: RetryPolicy {
                    max_attempts: r.0,
                    initial_backoff_ms: r.1,
                    backoff_multiplier: r.2,
                    max_backoff_ms: r.3,
                    jitter: r.4,
                    non_retryable: r.5,
                },
                timeouts: Timeouts {
                    schedule_to_start_ms: t[0],
                    start_ms: t[1],
                    start_to_close_ms: t[2],
                    heartbeat_ms: t[3],
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
            },
        )
}

/// A workflow body of the right shape.
fn workflow() -> impl Strategy<Value = SubmitWorkflow> {
    (
        text(),
        proptest::option::of(text()),
        vec(spec(), 0..5),
        proptest::option::of(proptest::collection::btree_map(text(), json_value(), 0..3)),
    )
        .prop_map(|(name, idempotency_key, tasks, outputs)| SubmitWorkflow {
            budgets: Default::default(),
            name,
            idempotency_key,
            tasks,
            outputs,
            labels: Default::default(),
        })
}

// ---- mutations ---------------------------------------------------------------------------

/// Number tokens JSON allows in text but no Rust integer or float takes as is.
const RAW_NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551616",
    "-9223372036854775809",
    "340282366920938463463374607431768211456",
    "-0",
    "-0.0",
    "0.5",
    "1.0",
    "4294967296",
    "-1",
    "2147483648",
    "1E2",
    "1e+2",
    "00",
    "01",
    "1.",
    ".5",
    "NaN",
    "Infinity",
    "0x10",
    "+1",
];
const PLACEHOLDER: &str = "\u{1}raw\u{1}";

#[derive(Clone, Debug)]
enum Edit {
    Remove,
    Replace(Value),
    RawNumber(&'static str),
    Retype(u8),
    Wrap(bool),
    AddField(String, Value),
    RenameField(String),
}

#[derive(Clone, Debug)]
enum TextEdit {
    Truncate(usize),
    Insert(usize, u8),
    Flip(usize, u8),
    Append(String),
    Prepend(String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        2 => Just(Edit::Remove),
        3 => json_value().prop_map(Edit::Replace),
        2 => proptest::sample::select(RAW_NUMBERS).prop_map(Edit::RawNumber),
        2 => any::<u8>().prop_map(Edit::Retype),
        1 => any::<bool>().prop_map(Edit::Wrap),
        2 => (text(), json_value()).prop_map(|(k, v)| Edit::AddField(k, v)),
        1 => text().prop_map(Edit::RenameField),
        1 => deep_value().prop_map(Edit::Replace),
    ]
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        any::<usize>().prop_map(TextEdit::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| TextEdit::Insert(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| TextEdit::Flip(i, b)),
        prop_oneof![
            Just(" ".to_owned()),
            Just("x".to_owned()),
            Just("}".to_owned()),
            Just(",{}".to_owned()),
            Just("\u{feff}".to_owned())
        ]
        .prop_map(TextEdit::Append),
        prop_oneof![
            Just("\u{feff}".to_owned()),
            Just(" \n\t".to_owned()),
            Just("[".to_owned())
        ]
        .prop_map(TextEdit::Prepend),
    ]
}

/// Applies `edit` to the node reached by following `path` (indices into children, modulo
/// their number; the walk stops early at a leaf).
fn apply_edit(v: &mut Value, path: &[usize], edit: &Edit) {
    if let Some((&i, rest)) = path.split_first() {
        let (n, leafless) = match v {
            Value::Array(a) => (a.len(), a.is_empty()),
            Value::Object(o) => (o.len(), o.is_empty()),
            _ => (0, true),
        };
        if !leafless {
            let i = i % n;
            // Edits that act on the container itself.
            if rest.is_empty() {
                match (edit, &mut *v) {
                    (Edit::Remove, Value::Array(a)) => {
                        a.remove(i);
                        return;
                    }
                    (Edit::Remove, Value::Object(o)) => {
                        let k = o.keys().nth(i).cloned().expect("in range");
                        o.remove(&k);
                        return;
                    }
                    (Edit::RenameField(new), Value::Object(o)) => {
                        let k = o.keys().nth(i).cloned().expect("in range");
                        let child = o.remove(&k).expect("present");
                        o.insert(new.clone(), child);
                        return;
                    }
                    _ => {}
                }
            }
            let child = match v {
                Value::Array(a) => &mut a[i],
                Value::Object(o) => o.values_mut().nth(i).expect("in range"),
                _ => unreachable!(),
            };
            return apply_edit(child, rest, edit);
        }
    }
    match edit {
        Edit::Remove => *v = Value::Null,
        Edit::Replace(x) => *v = x.clone(),
        Edit::RawNumber(_) => *v = Value::String(PLACEHOLDER.into()),
        Edit::Retype(t) => {
            *v = match t % 6 {
                0 => Value::Null,
                1 => Value::Bool(true),
                2 => Value::from(7),
                3 => Value::String(v.to_string()),
                4 => Value::Array(vec![v.clone()]),
                _ => Value::Object(Default::default()),
            }
        }
        Edit::Wrap(array) => {
            let inner = v.take();
            *v = if *array {
                Value::Array(vec![inner])
            } else {
                Value::Object([("value".to_owned(), inner)].into_iter().collect())
            };
        }
        Edit::AddField(k, x) => {
            if let Value::Object(o) = v {
                o.insert(k.clone(), x.clone());
            } else {
                *v = x.clone();
            }
        }
        Edit::RenameField(_) => {}
    }
}

fn render(v: &Value, edits: &[Edit]) -> String {
    let mut s = serde_json::to_string(v).expect("a value serialises");
    let quoted = serde_json::to_string(PLACEHOLDER).unwrap();
    for e in edits {
        if let Edit::RawNumber(raw) = e {
            s = s.replacen(&quoted, raw, 1);
        }
    }
    s
}

fn apply_text_edit(bytes: &mut Vec<u8>, e: &TextEdit) {
    match e {
        TextEdit::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
        TextEdit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), *b),
        TextEdit::Flip(i, b) => {
            if !bytes.is_empty() {
                let i = i % bytes.len();
                bytes[i] ^= b | 1;
            }
        }
        TextEdit::Append(s) => bytes.extend_from_slice(s.as_bytes()),
        TextEdit::Prepend(s) => {
            let mut out = s.as_bytes().to_vec();
            out.append(bytes);
            *bytes = out;
        }
    }
}

/// Bodies with a valid shape for one of the other body types, to try across all of them.
fn other_body() -> impl Strategy<Value = Value> {
    let uuid = any::<u128>().prop_map(|n| Value::String(uuid::Uuid::from_u128(n).to_string()));
    prop_oneof![
        (uuid.clone(), any::<u64>(), proptest::option::of(json_value()))
            .prop_map(|(a, t, p)| serde_json::json!({"agent": a, "token": t, "progress": p})),
        (uuid.clone(), any::<u64>(), json_value())
            .prop_map(|(a, t, r)| serde_json::json!({"agent": a, "token": t, "result": r})),
        (uuid.clone(), any::<u64>(), text(), text(), any::<bool>()).prop_map(|(a, t, k, m, r)| {
            serde_json::json!({"agent": a, "token": t, "error": {"kind": k, "message": m, "retryable": r}})
        }),
        (uuid.clone(), any::<u64>(), vec(spec(), 0..3))
            .prop_map(|(a, t, s)| serde_json::json!({"agent": a, "token": t, "tasks": s})),
        (proptest::option::of(uuid), text(), btree_set("[a-z]{1,5}", 0..3), any::<u32>())
            .prop_map(|(id, n, c, k)| serde_json::json!({"id": id, "name": n, "capabilities": c, "concurrency": k})),
        (proptest::option::of(any::<usize>()), proptest::option::of(any::<u64>()))
            .prop_map(|(m, w)| serde_json::json!({"max": m, "wait_ms": w})),
        text().prop_map(|r| serde_json::json!({"reason": r})),
        (proptest::option::of(text()), spec()).prop_map(|(k, s)| serde_json::json!({"idempotency_key": k, "task": s})),
        Just(serde_json::json!({})),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_are_refused_cleanly_or_round_trip(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..256),
            "\\PC{0,64}".prop_map(String::into_bytes),
            "[{}\\[\\]\":,0-9a-z. \\\\-]{0,64}".prop_map(String::into_bytes),
        ],
    ) {
        check_every_body(&bytes)?;
    }

    #[test]
    fn json_nested_beyond_every_limit_is_refused_cleanly(bytes in deep_text()) {
        check_every_body(&bytes)?;
    }

    #[test]
    fn arbitrary_json_is_refused_cleanly_or_round_trips(
        v in prop_oneof![
            4 => json_value(),
            2 => deep_value(),
            1 => huge_text().prop_map(Value::String),
            1 => (text(), huge_text()).prop_map(|(k, s)| Value::Object([(k, Value::String(s))].into_iter().collect())),
            2 => btree_map(proptest::sample::select(FIELDS).prop_map(str::to_owned), json_value(), 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            2 => other_body(),
        ],
    ) {
        check_every_body(serde_json::to_string(&v).unwrap().as_bytes())?;
    }

    /// A workflow body of the right shape is accepted and decodes to exactly what was sent;
    /// every mutation of it is refused cleanly or round-trips.
    #[test]
    fn workflow_bodies_and_their_mutations(
        body in workflow(),
        edits in vec((vec(any::<usize>(), 0..6), edit()), 0..4),
        text_edits in vec(text_edit(), 0..2),
    ) {
        let original = serde_json::to_value(&body).unwrap();
        let bytes = serde_json::to_vec(&body).unwrap();
        let decoded = check::<SubmitWorkflow>(&bytes)?;
        prop_assert_eq!(decoded.as_ref(), Some(&original), "a valid workflow body did not decode to itself");
        // The same body as a single task, where it has one.
        if let Some(task) = body.tasks.first() {
            let single = serde_json::json!({"idempotency_key": body.idempotency_key, "task": task});
            let decoded = check::<SubmitTask>(single.to_string().as_bytes())?;
            prop_assert!(decoded.is_some(), "a valid task body was refused");
        }

        let mut v = original;
        let mut applied = Vec::new();
        for (path, e) in &edits {
            apply_edit(&mut v, path, e);
            applied.push(e.clone());
        }
        let mut bytes = render(&v, &applied).into_bytes();
        for e in &text_edits {
            apply_text_edit(&mut bytes, e);
        }
        check_every_body(&bytes)?;
    }
}

/// Limits at their edges, spelled out.
#[test]
fn payload_depth_and_parser_limits_are_refused_with_the_right_status() {
    let body =
        |input: Value| serde_json::json!({"tasks": [{"key": "a", "input": input}]}).to_string();
    let at_limit = nested(PAYLOAD_DEPTH_MAX, false, Value::Null);
    assert!(decode::<SubmitWorkflow>(body(at_limit).as_bytes()).is_ok());
    let beyond = nested(PAYLOAD_DEPTH_MAX + 1, false, Value::Null);
    let p = decode::<SubmitWorkflow>(body(beyond).as_bytes()).unwrap_err();
    assert_eq!((p.status, p.code.as_str()), (422, "invalid_field"), "{p:?}");
    assert_eq!(p.field.as_deref(), Some("tasks[0].input"));
    let absurd = "[".repeat(100_000);
    let p = decode::<SubmitWorkflow>(absurd.as_bytes()).unwrap_err();
    assert_eq!(
        (p.status, p.code.as_str()),
        (400, "malformed_json"),
        "{p:?}"
    );
    let p = decode::<LeaseReport>(
        br#"{"agent": "00000000-0000-0000-0000-000000000001", "token": 1e400}"#,
    )
    .unwrap_err();
    assert_eq!(p.status, 400, "{p:?}");
    let p = decode::<LeaseReport>(
        br#"{"agent": "00000000-0000-0000-0000-000000000001", "token": 18446744073709551616}"#,
    )
    .unwrap_err();
    assert_eq!(
        (p.status, p.field.as_deref()),
        (422, Some("token")),
        "{p:?}"
    );
}
