//! Input templates through the lifecycle: resolved when the task becomes ready, recorded in
//! the event (so replay is exact), a reference that finds nothing fails the task for good, and
//! an operator's retry waits for a fresh release.

mod common;

use baton_core::*;
use common::*;
use serde_json::json;

fn templated() -> TaskSpec {
    let mut s = spec("write");
    s.depends_on = vec!["plan".into(), "research".into()];
    s.input = json!({
        "sections": {"$from": "plan", "pointer": "/sections"},
        "notes": {"$from": "research"},
        "raw": {"$literal": {"$from": "kept as written"}},
    });
    s
}

fn met(input: Option<serde_json::Value>, unresolved: Option<Unresolved>) -> Event {
    Event::DependenciesMet {
        completed: vec!["plan".into(), "research".into()],
        input,
        unresolved,
        results: None,
    }
}

#[test]
fn the_resolved_input_is_recorded_by_the_release_and_replayed() {
    let sub = submission(templated(), &[]);
    let blocked = submit(&sub, T0).unwrap().task;
    assert_eq!(
        blocked.input(),
        None,
        "a template is not handed out unresolved"
    );
    let plan = json!({"sections": ["a", "b"]});
    let notes = json!("notes");
    let resolved = template::resolve(
        &blocked.spec.input,
        "input",
        &|k: &TaskKey| match k.0.as_str() {
            "plan" => Some(&plan),
            "research" => Some(&notes),
            _ => None,
        },
    )
    .unwrap();
    assert_eq!(
        resolved,
        json!({"sections": ["a", "b"], "notes": "notes", "raw": {"$from": "kept as written"}})
    );
    let release = met(Some(resolved.clone()), None);
    let pending = step(&blocked, release.clone(), at(1)).task;
    assert_eq!(pending.kind(), StateKind::Pending);
    assert_eq!(pending.input(), Some(&resolved));

    let history = vec![
        HistoryEntry {
            seq: 1,
            at: T0,
            event: Event::Submitted(sub),
        },
        HistoryEntry {
            seq: 2,
            at: at(1),
            event: release,
        },
    ];
    let json = serde_json::to_string(&history).unwrap();
    let back: Vec<HistoryEntry> = serde_json::from_str(&json).unwrap();
    assert_eq!(replay(&back).unwrap(), pending);
}

#[test]
fn a_reference_that_finds_nothing_fails_the_task_for_good_naming_it() {
    let blocked = submit(&submission(templated(), &[]), T0).unwrap().task;
    let unresolved = Unresolved {
        at: "input.sections".into(),
        from: "plan".into(),
        pointer: "/sections".into(),
        reason: None,
    };
    let t = step(&blocked, met(None, Some(unresolved)), at(1));
    let State::Failed { error, retry_at } = &t.task.state else {
        panic!("expected Failed, got {:?}", t.task.state);
    };
    assert_eq!(error.kind, INPUT_UNRESOLVED);
    assert!(error.message.contains("/sections"), "{}", error.message);
    assert!(
        error.message.contains("input.sections"),
        "{}",
        error.message
    );
    assert_eq!(
        *retry_at, None,
        "an unresolved input is not retried by itself"
    );
    assert!(t.effects.contains(&Effect::FailDependents));

    // An operator's retry sends it back to wait for a release that resolves it afresh.
    let reopened = step(&t.task, retry_requested(), at(2)).task;
    assert_eq!(reopened.kind(), StateKind::Blocked);
    let again = step(&reopened, met(Some(json!({"ok": 1})), None), at(3)).task;
    assert_eq!(again.kind(), StateKind::Pending);
    assert_eq!(again.input(), Some(&json!({"ok": 1})));
}

#[test]
fn a_release_without_the_evidence_the_input_needs_is_refused() {
    let templated_blocked = submit(&submission(templated(), &[]), T0).unwrap().task;
    let r = refuse(&templated_blocked, met(None, None), at(1));
    assert_eq!(r.refusal.code(), "conflict", "{r}");
    let plain = blocked();
    let r = refuse(&plain, met(Some(json!(1)), None), at(1));
    assert_eq!(r.refusal.code(), "conflict", "{r}");
    // At submission with the dependencies met, likewise.
    let r = submit(&submission(templated(), &["plan", "research"]), T0).unwrap_err();
    assert_eq!(r.refusal.code(), "conflict", "{r}");
}

#[test]
fn a_plain_input_is_handed_out_as_submitted() {
    let t = pending();
    assert_eq!(t.input(), Some(&t.spec.input));
    assert_eq!(t.input, None, "a plain input is stored once, in the spec");
}

#[test]
fn templates_are_checked_at_submission_with_the_field_path() {
    let mut s = spec("write");
    s.depends_on = vec!["plan".into()];
    s.input = json!({"a": [{"$from": "other"}]});
    let err = s.validate().unwrap_err();
    assert_eq!(err.field, "input.a[0].$from");
    assert!(err.expected.contains("plan"), "{}", err.expected);
    s.input = json!({"a": {"$from": "plan", "pointer": "sections"}});
    assert_eq!(s.validate().unwrap_err().field, "input.a.pointer");
    s.input = json!({"a": {"$from": "plan", "pointer": "/sections"}});
    s.validate().unwrap();
}

#[test]
fn an_expanded_fan_out_leaves_compensation_to_its_items() {
    let mut s = spec("write");
    s.depends_on = vec!["plan".into()];
    s.input = json!({});
    s.for_each = Some(json!({"$from": "plan", "pointer": "/sections"}));
    assert!(s.compensation.is_some());
    let ready = submit(&submission(s, &["plan"]), T0).unwrap().task;
    let expanded = step(
        &ready,
        Event::ForEachExpanded {
            completed: vec!["plan".into()],
            tasks: vec![template::item_key(&"write".into(), 0)],
            unresolved: None,
        },
        at(1),
    )
    .task;
    let cancelled = step(&expanded, cancel(), at(2));
    assert!(
        !cancelled
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Compensate { .. })),
        "{:?}",
        cancelled.effects
    );
    // Not expanded yet, it compensates for itself.
    let mut s = spec("write");
    s.depends_on = vec!["plan".into()];
    s.input = json!({});
    s.for_each = Some(json!({"$from": "plan"}));
    let waiting = submit(&submission(s, &[]), T0).unwrap().task;
    let cancelled = step(&waiting, cancel(), at(1));
    assert!(cancelled
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Compensate { .. })));
}
