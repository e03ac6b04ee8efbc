//! Fuzzing the workflow file reader of `baton submit` with proptest (cargo-fuzz needs a
//! nightly toolchain): `baton_cli::workflow_file::WorkflowFile::parse`.
//!
//! Input: arbitrary text, YAML-ish token soup, and valid workflows (random tasks, dependency
//! graphs, policies and JSON payloads) written as compact JSON, pretty JSON, block YAML (with
//! comments) and flow YAML, then mutated as text (bytes inserted, ranges deleted, lines
//! duplicated, swapped, re-indented, truncated) or as values (any node replaced by any JSON, one
//! known mistake planted). Checked:
//! - reading never panics, whatever the text;
//! - a refusal names the file, says what is wrong, and points inside the file;
//! - an accepted file is what the server accepts: its body decodes with the server's decoder to
//!   the same workflow and passes the engine's validation; written again as JSON it reads back
//!   to the same body;
//! - for JSON files, the reader accepts exactly what the server accepts, and refuses with the
//!   server's field;
//! - a valid workflow reads back to itself in every style;
//! - a planted mistake is refused at its field, and the position given is where that field is
//!   written.
//!
//! Case count: `BATON_FUZZ_CASES` (default 300 per property).
//!
//! Found, fixed, and kept in `fuzz_workflow_file.proptest-regressions`: YAML integers beyond
//! `i64` read as floats (digits lost); a tagged root (`!\t.`) placed at line 0; lone `\r` line
//! breaks and multibyte characters before a JSON error misplacing the caret. Writing the test
//! also showed the reader accepting payloads nested deeper than the server allows: it now uses
//! the server's decoder and the engine's `validate_workflow` rather than copies of them.
//!
//! Long run, recorded (release build, on 2 cores shared with other builds):
//!   BATON_FUZZ_CASES=420000 cargo test --release -p baton-cli --test fuzz_workflow_file
//!   420,000 cases per property (2.1 million inputs), 659 s ("finished in 659.43s"), clean.

use std::collections::BTreeSet;

use baton_cli::workflow_file::WorkflowFile;
use baton_client::wire::SubmitWorkflow;
use baton_core::spec::DURATION_MAX_MS;
use baton_engine::{validate_workflow, EngineError, WorkflowRequest};
use baton_server::extract::decode;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};

fn config() -> ProptestConfig {
    let cases = std::env::var("BATON_FUZZ_CASES")
        .ok()
        .map(|v| v.parse().expect("BATON_FUZZ_CASES must be a number"))
        .unwrap_or(300);
    ProptestConfig {
        cases,
        max_shrink_iters: 5_000,
        ..ProptestConfig::default()
    }
}

// ---- what the server would say ---------------------------------------------------------------

/// The server's answer to `body` sent as `POST /v1/workflows`: the workflow, or the field it
/// refuses (`None` when it refuses the body as a whole or the graph).
fn server(bytes: &[u8]) -> Result<SubmitWorkflow, Option<String>> {
    let wf: SubmitWorkflow =
        decode(bytes).map_err(|p| p.field.clone().filter(|f| f.as_str() != "body"))?;
    let req = WorkflowRequest {
        budgets: wf.budgets.clone(),
        name: wf.name.clone(),
        idempotency_key: wf.idempotency_key.clone(),
        tasks: wf.tasks.clone(),
        outputs: wf.outputs.clone(),
        labels: wf.labels.clone(),
    };
    match validate_workflow(&req) {
        Ok(()) => Ok(wf),
        Err(EngineError::Invalid { field, .. }) => Err(Some(field)),
        Err(_) => Err(None),
    }
}

fn as_value(wf: &SubmitWorkflow) -> Value {
    serde_json::to_value(wf).expect("a workflow serialises")
}

/// Reads `text` as the file `name` and checks what every answer must satisfy.
fn check(name: &str, text: &str) -> Result<Result<WorkflowFile, String>, TestCaseError> {
    let parsed = WorkflowFile::parse(name, text.to_owned());
    match parsed {
        Ok(file) => {
            prop_assert!(
                file.body.is_object(),
                "accepted a body that is not a mapping"
            );
            let bytes = serde_json::to_vec(&file.body).unwrap();
            match server(&bytes) {
                Ok(wf) => prop_assert_eq!(as_value(&wf), as_value(&file.workflow)),
                Err(field) => prop_assert!(
                    false,
                    "the file was accepted but the server refuses it at {:?}:\n{}",
                    field,
                    text
                ),
            }
            let again = WorkflowFile::parse("again.json", String::from_utf8(bytes).unwrap())
                .map_err(|d| TestCaseError::fail(format!("refused when written again: {d}")))?;
            prop_assert_eq!(&again.body, &file.body);
            Ok(Ok(file))
        }
        Err(d) => {
            let shown = d.to_string();
            prop_assert!(shown.starts_with(name), "{shown}");
            prop_assert!(!d.message().trim().is_empty(), "{shown}");
            if let Some(field) = d.field() {
                prop_assert!(!field.is_empty(), "an empty field: {shown}");
            }
            if let Some((line, col)) = d.position() {
                let text = text.strip_prefix('\u{feff}').unwrap_or(text);
                let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
                prop_assert!(
                    line >= 1 && line <= lines + 1 && col >= 1,
                    "position {line}:{col} outside a text of {lines} lines: {shown}"
                );
            }
            Ok(Err(d.field().unwrap_or_default().to_owned()))
        }
    }
}

/// `check`, and for a JSON file without a byte order mark, agreement with the server.
fn check_agreeing(name: &str, text: &str) -> Result<(), TestCaseError> {
    let ours = check(name, text)?;
    if !name.ends_with(".json") || text.starts_with('\u{feff}') {
        return Ok(());
    }
    match (ours, server(text.as_bytes())) {
        (Ok(_), Ok(_)) => {}
        (Err(ours), Err(theirs)) => {
            if let Some(theirs) = theirs {
                prop_assert_eq!(ours, theirs, "refused at another field than the server's");
            }
        }
        (Ok(_), Err(field)) => prop_assert!(
            false,
            "accepted, the server refuses at {:?}:\n{}",
            field,
            text
        ),
        (Err(field), Ok(_)) => prop_assert!(
            false,
            "refused at {:?}, the server accepts:\n{}",
            field,
            text
        ),
    }
    Ok(())
}

// ---- values ------------------------------------------------------------------------------

/// Task keys never contain `/`, so `undo/…` (compensations) and `missing/dep` never collide.
fn key() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.:-]{0,10}"
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.:/-]{0,8}"
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_.:/-]{0,12}",
        2 => any::<String>(),
        1 => "\\PC{0,30}",
        // Strings that YAML would read as something else if written plain.
        2 => proptest::sample::select(&[
            "null", "~", "true", "False", "yes", "1", "-1", "0x10", "1e3", ".inf", ".NaN",
            "- a", "a: b", "#x", "'", "\"", "{", "[", "&a", "*a", "!t", "|", ">", "%", "@", "`",
            " lead", "trail ", "", "\t", "a\nb", "\u{85}", "\u{2028}", "\u{7f}", "\u{feff}",
        ][..])
        .prop_map(str::to_owned),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1_000i64..1_000).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (-10.0..10.0f64).prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(text(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn duration() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (1..=DURATION_MAX_MS).prop_map(Value::from),
        1 => Just(Value::Null),
    ]
}

fn retry() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(1u32..=100),
        proptest::option::of((0u64..=10_000, 0u64..=100_000)),
        proptest::option::of(1.0..=100.0f64),
        proptest::option::of(0.0..=1.0f64),
        proptest::option::of(vec(name(), 0..3)),
    )
        .prop_map(|(attempts, backoff, multiplier, jitter, kinds)| {
            let mut m = Map::new();
            if let Some(a) = attempts {
                m.insert("max_attempts".into(), a.into());
            }
            if let Some((initial, extra)) = backoff {
                m.insert("initial_backoff_ms".into(), initial.into());
                m.insert("max_backoff_ms".into(), (initial + extra).into());
            }
            if let Some(x) = multiplier {
                m.insert("backoff_multiplier".into(), x.into());
            }
            if let Some(j) = jitter {
                m.insert("jitter".into(), j.into());
            }
            if let Some(kinds) = kinds {
                m.insert("non_retryable".into(), kinds.into());
            }
            Value::Object(m)
        })
}

fn timeouts() -> impl Strategy<Value = Value> {
    btree_map(
        proptest::sample::select(
            &[
                "schedule_to_start_ms",
                "start_ms",
                "start_to_close_ms",
                "heartbeat_ms",
            ][..],
        ),
        duration(),
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

/// The optional fields of one task: each present or not.
#[derive(Clone, Debug)]
struct TaskParts {
    deps: Vec<Index>,
    capabilities: Option<BTreeSet<String>>,
    input: Option<Value>,
    priority: Option<i32>,
    retry: Option<Value>,
    timeouts: Option<Value>,
    on_agent_lost: Option<&'static str>,
    compensation: Option<(BTreeSet<String>, Option<Value>)>,
}

fn task_parts() -> impl Strategy<Value = TaskParts> {
    (
        vec(any::<Index>(), 0..3),
        proptest::option::of(btree_set(name(), 0..3)),
        proptest::option::of(json_value()),
        proptest::option::of(any::<i32>()),
        proptest::option::of(retry()),
        proptest::option::of(timeouts()),
        proptest::option::of(proptest::sample::select(&["fail", "requeue"][..])),
        proptest::option::of((btree_set(name(), 0..2), proptest::option::of(json_value()))),
    )
        .prop_map(
            |(
                deps,
                capabilities,
                input,
                priority,
                retry,
                timeouts,
                on_agent_lost,
                compensation,
            )| {
                TaskParts {
                    deps,
                    capabilities,
                    input,
                    priority,
                    retry,
                    timeouts,
                    on_agent_lost,
                    compensation,
                }
            },
        )
}

/// A workflow the server accepts, as the body a file would hold: tasks depend only on tasks
/// before them, so the graph has no cycle.
fn valid_workflow() -> impl Strategy<Value = Value> {
    (
        btree_set(key(), 1..7),
        vec(task_parts(), 7),
        proptest::option::of("\\PC{0,20}"),
        proptest::option::of("[a-zA-Z0-9 ._-]{1,20}"),
        any::<Index>(),
    )
        .prop_map(|(keys, parts, name, idempotency_key, order)| {
            let mut keys: Vec<String> = keys.into_iter().collect();
            let shift = order.index(keys.len());
            keys.rotate_left(shift);
            let tasks: Vec<Value> = keys
                .iter()
                .zip(parts)
                .enumerate()
                .map(|(i, (key, p))| {
                    let mut t = Map::new();
                    t.insert("key".into(), key.as_str().into());
                    let mut deps: Vec<&str> = Vec::new();
                    if i > 0 {
                        for d in &p.deps {
                            let dep = keys[d.index(i)].as_str();
                            if !deps.contains(&dep) {
                                deps.push(dep);
                            }
                        }
                    }
                    if !deps.is_empty() {
                        t.insert("depends_on".into(), deps.into());
                    }
                    if let Some(c) = p.capabilities {
                        t.insert("capabilities".into(), c.into_iter().collect());
                    }
                    if let Some(v) = p.input {
                        t.insert("input".into(), v);
                    }
                    if let Some(v) = p.priority {
                        t.insert("priority".into(), v.into());
                    }
                    if let Some(v) = p.retry {
                        t.insert("retry".into(), v);
                    }
                    if let Some(v) = p.timeouts {
                        t.insert("timeouts".into(), v);
                    }
                    if let Some(v) = p.on_agent_lost {
                        t.insert("on_agent_lost".into(), v.into());
                    }
                    if let Some((caps, input)) = p.compensation {
                        let mut c = Map::new();
                        c.insert("key".into(), format!("undo/{key}").into());
                        c.insert("capabilities".into(), caps.into_iter().collect());
                        if let Some(input) = input {
                            c.insert("input".into(), input);
                        }
                        t.insert("compensation".into(), Value::Object(c));
                    }
                    Value::Object(t)
                })
                .collect();
            let mut wf = Map::new();
            if let Some(n) = name {
                wf.insert("name".into(), n.into());
            }
            if let Some(k) = idempotency_key {
                wf.insert("idempotency_key".into(), k.into());
            }
            wf.insert("tasks".into(), tasks.into());
            Value::Object(wf)
        })
}

// ---- writing files -----------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Style {
    CompactJson,
    PrettyJson,
    BlockYaml { comments: bool },
    FlowYaml,
}

impl Style {
    fn name(self) -> &'static str {
        match self {
            Style::CompactJson | Style::PrettyJson => "wf.json",
            Style::BlockYaml { .. } | Style::FlowYaml => "wf.yaml",
        }
    }

    fn write(self, v: &Value) -> String {
        match self {
            Style::CompactJson => serde_json::to_string(v).unwrap(),
            Style::PrettyJson => serde_json::to_string_pretty(v).unwrap(),
            Style::BlockYaml { comments } => {
                let mut out = String::new();
                if comments {
                    out.push_str("# a workflow\n");
                }
                block(v, 0, comments, &mut out);
                out
            }
            Style::FlowYaml => {
                let mut out = flow(v);
                out.push('\n');
                out
            }
        }
    }
}

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![
        Just(Style::CompactJson),
        Just(Style::PrettyJson),
        any::<bool>().prop_map(|comments| Style::BlockYaml { comments }),
        Just(Style::FlowYaml),
    ]
}

/// A string as a YAML scalar: plain when YAML reads it back as the same string, otherwise
/// double-quoted with every character outside YAML's printable set escaped.
fn yaml_str(s: &str) -> String {
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./-".contains(&b))
        && ![
            "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE",
        ]
        .contains(&s);
    if plain {
        return s.to_owned();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}'
                if c != '\u{2028}' && c != '\u{2029}' =>
            {
                out.push(c)
            }
            '\u{10000}'.. => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:?}"),
            _ => n.to_string(),
        },
        Value::String(s) => yaml_str(s),
        Value::Array(_) | Value::Object(_) => flow(v),
    }
}

fn flow(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("[{}]", a.iter().map(flow).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", yaml_str(k), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => yaml_scalar(v),
    }
}

fn nested(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        _ => false,
    }
}

fn block(v: &Value, indent: usize, comments: bool, out: &mut String) {
    let pad = " ".repeat(indent);
    let child = |x: &Value, out: &mut String| {
        if nested(x) {
            out.push('\n');
            block(x, indent + 2, comments, out);
        } else {
            out.push(' ');
            out.push_str(&yaml_scalar(x));
            if comments {
                out.push_str("  # note");
            }
            out.push('\n');
        }
    };
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                out.push_str(&format!("{pad}{}:", yaml_str(k)));
                child(x, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                if comments {
                    out.push_str(&format!("{pad}# item\n"));
                }
                out.push_str(&format!("{pad}-"));
                child(x, out);
            }
        }
        _ => out.push_str(&format!("{pad}{}\n", yaml_scalar(v))),
    }
}

// ---- mutations ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum TextEdit {
    Insert(Index, char),
    Delete(Index, usize),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    Indent(Index, usize),
    Dedent(Index),
    Truncate(Index),
}

fn soup_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => proptest::sample::select(
            &['-', ':', '{', '}', '[', ']', ',', '#', '&', '*', '!', '|', '>', '\'', '"', '%',
              '@', '`', '?', ' ', '\n', '\t', '\\', '\u{feff}', '\u{0}'][..]
        ),
        1 => any::<char>(),
    ]
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        3 => (any::<Index>(), soup_char()).prop_map(|(i, c)| TextEdit::Insert(i, c)),
        2 => (any::<Index>(), 1usize..20).prop_map(|(i, n)| TextEdit::Delete(i, n)),
        1 => any::<Index>().prop_map(TextEdit::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| TextEdit::SwapLines(a, b)),
        1 => (any::<Index>(), 1usize..4).prop_map(|(i, n)| TextEdit::Indent(i, n)),
        1 => any::<Index>().prop_map(TextEdit::Dedent),
        1 => any::<Index>().prop_map(TextEdit::Truncate),
    ]
}

fn apply_text_edit(text: &str, edit: &TextEdit) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    match edit {
        TextEdit::Insert(i, c) => {
            let mut chars = chars;
            chars.insert(i.index(chars.len() + 1), *c);
            chars.into_iter().collect()
        }
        TextEdit::Delete(i, n) => {
            if chars.is_empty() {
                return String::new();
            }
            let at = i.index(chars.len());
            let end = (at + n).min(chars.len());
            chars[..at].iter().chain(&chars[end..]).collect()
        }
        TextEdit::Truncate(i) => chars[..i.index(chars.len() + 1)].iter().collect(),
        TextEdit::DuplicateLine(i) => {
            let at = i.index(lines.len());
            lines.insert(at, lines[at].clone());
            lines.join("\n")
        }
        TextEdit::SwapLines(a, b) => {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
            lines.join("\n")
        }
        TextEdit::Indent(i, n) => {
            let at = i.index(lines.len());
            lines[at].insert_str(0, &" ".repeat(*n));
            lines.join("\n")
        }
        TextEdit::Dedent(i) => {
            let at = i.index(lines.len());
            lines[at] = lines[at].trim_start().to_owned();
            lines.join("\n")
        }
    }
}

/// Replaces the node reached by following `path` (indices into children, modulo their number;
/// the walk stops early at a leaf) with `with`.
fn replace_node(v: &mut Value, path: &[Index], with: Value) {
    let Some((i, rest)) = path.split_first() else {
        *v = with;
        return;
    };
    match v {
        Value::Array(a) if !a.is_empty() => {
            let n = a.len();
            replace_node(&mut a[i.index(n)], rest, with)
        }
        Value::Object(m) if !m.is_empty() => {
            let n = m.len();
            let key = m.keys().nth(i.index(n)).unwrap().clone();
            replace_node(m.get_mut(&key).unwrap(), rest, with)
        }
        _ => *v = with,
    }
}

/// One mistake planted in a valid workflow, with the field the refusal must name and the text
/// written at the position it must give.
#[derive(Clone, Debug)]
enum Mistake {
    NoAttempts,
    UnknownField,
    PriorityText,
    ZeroHeartbeat,
    MissingDependency,
    SelfDependency,
    DuplicateKey,
    BadCapability,
    Cycle,
}

fn mistake() -> impl Strategy<Value = Mistake> {
    prop_oneof![
        Just(Mistake::NoAttempts),
        Just(Mistake::UnknownField),
        Just(Mistake::PriorityText),
        Just(Mistake::ZeroHeartbeat),
        Just(Mistake::MissingDependency),
        Just(Mistake::SelfDependency),
        Just(Mistake::DuplicateKey),
        Just(Mistake::BadCapability),
        Just(Mistake::Cycle),
    ]
}

/// Plants `mistake` in task `i` of `wf`; returns the field the refusal must name (or `None`
/// when any of several fields may be named) and the text that must be written there.
fn plant(wf: &mut Value, i: Index, mistake: &Mistake) -> (Option<String>, &'static str) {
    let tasks = wf["tasks"].as_array_mut().unwrap();
    let n = tasks.len();
    let i = i.index(n);
    let task = tasks[i].as_object_mut().unwrap();
    match mistake {
        Mistake::NoAttempts => {
            task.insert("retry".into(), json!({"max_attempts": 0}));
            (
                Some(format!("tasks[{i}].retry.max_attempts")),
                "max_attempts",
            )
        }
        Mistake::UnknownField => {
            task.insert("retries".into(), json!(3));
            (Some(format!("tasks[{i}].retries")), "retries")
        }
        Mistake::PriorityText => {
            task.insert("priority".into(), json!("high"));
            (Some(format!("tasks[{i}].priority")), "priority")
        }
        Mistake::ZeroHeartbeat => {
            task.insert("timeouts".into(), json!({"heartbeat_ms": 0}));
            (
                Some(format!("tasks[{i}].timeouts.heartbeat_ms")),
                "heartbeat_ms",
            )
        }
        Mistake::MissingDependency => {
            let deps = deps_of(task);
            deps.push("missing/dep".into());
            let k = deps.len() - 1;
            (Some(format!("tasks[{i}].depends_on[{k}]")), "missing/dep")
        }
        Mistake::SelfDependency => {
            let key = task["key"].clone();
            deps_of(task).push(key);
            (Some(format!("tasks[{i}].depends_on")), "depends_on")
        }
        Mistake::DuplicateKey => {
            let key = task["key"].clone();
            tasks.push(json!({ "key": key }));
            (Some(format!("tasks[{n}].key")), "key")
        }
        Mistake::BadCapability => {
            task.insert("capabilities".into(), json!(["has space"]));
            (Some(format!("tasks[{i}].capabilities[]")), "capabilities")
        }
        Mistake::Cycle => {
            // The first task now depends on the last, which depends on it.
            let first = tasks[0]["key"].clone();
            let deps = deps_of(tasks[n - 1].as_object_mut().unwrap());
            if n == 1 {
                deps.push(first);
                return (Some("tasks[0].depends_on".into()), "depends_on");
            }
            if !deps.contains(&first) {
                deps.push(first);
            }
            let last_key = tasks[n - 1]["key"].clone();
            deps_of(tasks[0].as_object_mut().unwrap()).push(last_key);
            (None, "")
        }
    }
}

fn deps_of(task: &mut Map<String, Value>) -> &mut Vec<Value> {
    task.entry("depends_on")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .unwrap()
}

/// The text at `(line, col)` (1-based, in characters) of `text`.
fn text_at(text: &str, line: usize, col: usize) -> String {
    text.split('\n')
        .nth(line - 1)
        .map(|l| l.chars().skip(col - 1).collect())
        .unwrap_or_default()
}

// ---- properties ----------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_read_or_refused_with_a_place(
        name in proptest::sample::select(&["wf.yaml", "wf.yml", "wf.json", "wf", "-"][..]),
        text in prop_oneof![
            any::<String>(),
            "[-:{}\\[\\],#&*!|>'\"%@`? \n\ta-z0-9.]{0,200}",
            vec(soup_char(), 0..200).prop_map(|c| c.into_iter().collect()),
        ],
    ) {
        check_agreeing(name, &text)?;
    }

    #[test]
    fn valid_workflows_read_back_to_themselves_in_every_style(
        wf in valid_workflow(),
        style in style(),
        bom in proptest::bool::weighted(0.1),
    ) {
        let mut text = style.write(&wf);
        if bom {
            text.insert(0, '\u{feff}');
        }
        let file = check(style.name(), &text)?
            .map_err(|d| TestCaseError::fail(format!("a valid workflow refused at {d:?}:\n{text}")))?;
        prop_assert_eq!(&file.body, &wf, "read back differently:\n{}", text);
        let expected: SubmitWorkflow = serde_json::from_value(wf).unwrap();
        prop_assert_eq!(as_value(&file.workflow), as_value(&expected));
        let named = WorkflowFile::parse("wf", text.clone())
            .map_err(|d| TestCaseError::fail(format!("refused without an extension: {d}")))?;
        prop_assert_eq!(&named.body, &file.body);
    }

    #[test]
    fn edited_files_are_read_or_refused_with_a_place(
        wf in valid_workflow(),
        style in style(),
        edits in vec(text_edit(), 1..4),
    ) {
        let mut text = style.write(&wf);
        for e in &edits {
            text = apply_text_edit(&text, e);
        }
        check_agreeing(style.name(), &text)?;
    }

    #[test]
    fn any_value_anywhere_is_read_as_the_server_reads_it(
        mut wf in valid_workflow(),
        style in style(),
        path in vec(any::<Index>(), 0..6),
        with in json_value(),
    ) {
        replace_node(&mut wf, &path, with);
        let text = style.write(&wf);
        check_agreeing(style.name(), &text)?;
    }

    #[test]
    fn a_mistake_is_refused_at_the_place_it_is_written(
        mut wf in valid_workflow(),
        style in style(),
        at in any::<Index>(),
        mistake in mistake(),
    ) {
        let (field, written) = plant(&mut wf, at, &mistake);
        let text = style.write(&wf);
        let refused = WorkflowFile::parse(style.name(), text.clone());
        let d = match refused {
            Ok(_) => return Err(TestCaseError::fail(format!("{mistake:?} accepted:\n{text}"))),
            Err(d) => d,
        };
        check_agreeing(style.name(), &text)?;
        let Some(field) = field else {
            prop_assert!(d.message().contains("cycle"), "{}", d);
            let (line, col) = d.position().expect("a position");
            prop_assert!(text_at(&text, line, col).starts_with(['"', '[']) || text_at(&text, line, col).starts_with(|c: char| c.is_ascii_alphanumeric()), "{}", d);
            return Ok(());
        };
        prop_assert_eq!(d.field(), Some(field.as_str()), "{}", d);
        let (line, col) = d.position().expect("a position");
        let there = text_at(&text, line, col);
        prop_assert!(
            there.starts_with(written) || there.starts_with(&format!("\"{written}")),
            "{:?} points at {:?}, not at {:?}:\n{}\n{}", mistake, there, written, d, text
        );
    }
}
