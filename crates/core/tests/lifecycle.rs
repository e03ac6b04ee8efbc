//! Every row of the default lifecycle table, and every way an event is refused.

mod common;

use baton_core::*;
use common::*;
use serde_json::json;

fn rule_index(rule: &Rule) -> usize {
    DEFAULT_RULES
        .iter()
        .position(|r| std::ptr::eq(r, rule))
        .expect("rule from the default table")
}

type Case = (&'static str, Result<Transition, Rejection>, StateKind);

fn case(name: &'static str, task: Task, event: Event, now: Timestamp, to: StateKind) -> Case {
    (name, apply(&task, &event, now), to)
}

fn with_schedule_to_start(max_attempts: u32) -> Task {
    let mut s = spec("write");
    s.timeouts.schedule_to_start_ms = Some(500);
    s.retry.max_attempts = max_attempts;
    submit(&submission(s, &[]), T0).unwrap().task
}

fn lost(token: u64) -> Event {
    Event::AgentLost {
        agent: agent(),
        token: FencingToken(token),
    }
}

fn requeue_on_loss() -> Task {
    let mut s = spec("write");
    s.on_agent_lost = AgentLostPolicy::Requeue;
    let t = submit(&submission(s, &[]), T0).unwrap().task;
    let t = step(&t, assign(agent(), 1), at(10)).task;
    step(&t, started(1), at(20)).task
}

fn unresolved_for_each() -> Unresolved {
    Unresolved {
        at: "for_each".into(),
        from: "plan".into(),
        pointer: "/sections".into(),
        reason: Some("\"/sections\" in the result of `plan` is a string, not an array".into()),
    }
}

/// One case per row of the table: the transition and the state the table says it enters.
fn one_case_per_rule() -> Vec<Case> {
    let mut last_executing = executing();
    for token in 1..=2u64 {
        let t = step(&last_executing, failed(token, "flaky", true), at(30)).task;
        let t = step(&t, Event::Retry, at(1_000)).task;
        let t = step(&t, assign(agent(), token as u128 + 1), at(1_010)).task;
        last_executing = step(&t, started(token + 1), at(1_020)).task;
    }
    assert_eq!(last_executing.attempts_left(), 0);
    let upstream_cancelled = step(
        &blocked(),
        Event::UpstreamFailed {
            upstream: "research".into(),
        },
        at(5),
    )
    .task;
    let mut with_deps = spec("write");
    with_deps.depends_on = vec!["plan".into(), "research".into()];
    let s2s = DeadlineKind::ScheduleToStart;
    let unresolved = Unresolved {
        at: "input.sections".into(),
        from: "plan".into(),
        pointer: "/sections".into(),
        reason: None,
    };
    let mut templated = spec("write");
    templated.depends_on = vec!["plan".into()];
    templated.input = json!({"sections": {"$from": "plan", "pointer": "/sections"}});
    let templated_blocked = submit(&submission(templated.clone(), &[]), T0)
        .unwrap()
        .task;
    let unresolved_met = Event::DependenciesMet {
        completed: vec!["plan".into()],
        input: None,
        unresolved: Some(unresolved.clone()),
        results: None,
    };
    let input_failed = step(&templated_blocked, unresolved_met.clone(), at(1)).task;
    let mut fan_out = spec("write");
    fan_out.depends_on = vec!["plan".into()];
    fan_out.input = json!({"words": 300});
    fan_out.for_each = Some(json!({"$from": "plan", "pointer": "/sections"}));
    let fan_out_ready = submit(&submission(fan_out.clone(), &["plan"]), T0)
        .unwrap()
        .task;
    let expand = |n: usize, unresolved: Option<Unresolved>| Event::ForEachExpanded {
        completed: vec!["plan".into()],
        tasks: (0..n)
            .map(|i| template::item_key(&"write".into(), i))
            .collect(),
        unresolved,
    };
    let expanded = step(&fan_out_ready, expand(2, None), at(1)).task;
    let gathered = |results: Option<Vec<serde_json::Value>>, unresolved| Event::DependenciesMet {
        completed: vec!["plan".into(), "write[0]".into(), "write[1]".into()],
        input: None,
        unresolved,
        results,
    };
    let too_large = Unresolved {
        at: "result".into(),
        from: "write[1]".into(),
        pointer: String::new(),
        reason: Some("too large".into()),
    };
    let delayed = |s: TaskSpec| TaskSpec {
        delay_ms: Some(1_000),
        ..s
    };
    let delayed_blocked = submit(&submission(delayed(with_deps.clone()), &[]), T0)
        .unwrap()
        .task;
    let met = Event::DependenciesMet {
        completed: vec!["plan".into(), "research".into()],
        input: None,
        unresolved: None,
        results: None,
    };
    let delayed_released = step(&delayed_blocked, met.clone(), at(10)).task;
    let sleeping = submit(&submission(sleeper(500), &[]), T0).unwrap().task;
    let approval = submit(&submission(approval(Some(5_000)), &[]), T0)
        .unwrap()
        .task;
    use StateKind::*;
    vec![
        (
            "submitted, delayed",
            submit(&submission(delayed(spec("write")), &[]), T0),
            Blocked,
        ),
        case("released, delayed", delayed_blocked, met, at(10), Blocked),
        case(
            "delay over",
            delayed_released,
            Event::TimerFired,
            at(1_010),
            Pending,
        ),
        case(
            "sleep over",
            sleeping,
            Event::TimerFired,
            at(500),
            Completed,
        ),
        case(
            "signal received",
            approval.clone(),
            signal("approve", None),
            at(10),
            Completed,
        ),
        case(
            "signal rejects",
            approval,
            signal("approve", Some("too expensive")),
            at(10),
            Failed,
        ),
        (
            "submitted, no dependencies",
            submit(&submission(spec("write"), &[]), T0),
            Pending,
        ),
        (
            "submitted, open dependency",
            submit(&submission(with_deps, &["plan"]), T0),
            Blocked,
        ),
        (
            "submitted, dependencies met, input template found nothing",
            submit(
                &Submission {
                    unresolved: Some(unresolved),
                    ..submission(templated, &["plan"])
                },
                T0,
            ),
            Failed,
        ),
        case(
            "dependencies met, input template found nothing",
            templated_blocked,
            unresolved_met,
            at(1),
            Failed,
        ),
        case(
            "operator retry of a task whose input never resolved",
            input_failed,
            retry_requested(),
            at(2),
            Blocked,
        ),
        (
            "submitted, a fan-out",
            submit(&submission(fan_out, &["plan"]), T0),
            Blocked,
        ),
        case(
            "fan-out expanded",
            fan_out_ready.clone(),
            expand(2, None),
            at(1),
            Blocked,
        ),
        case(
            "fan-out over an empty array",
            fan_out_ready.clone(),
            expand(0, None),
            at(1),
            Completed,
        ),
        case(
            "fan-out found no array",
            fan_out_ready,
            expand(0, Some(unresolved_for_each())),
            at(1),
            Failed,
        ),
        case(
            "fan-out's items completed",
            expanded.clone(),
            gathered(Some(vec![json!(1), json!(2)]), None),
            at(2),
            Completed,
        ),
        case(
            "fan-out's results could not be gathered",
            expanded,
            gathered(None, Some(too_large)),
            at(2),
            Failed,
        ),
        case(
            "decomposition",
            blocked(),
            Event::DependencyAdded {
                dependency: "sub".into(),
            },
            at(1),
            Blocked,
        ),
        case(
            "dependencies met",
            blocked(),
            deps_met(&["plan", "research"]),
            at(1),
            Pending,
        ),
        case(
            "upstream failed",
            blocked(),
            Event::UpstreamFailed {
                upstream: "research".into(),
            },
            at(1),
            Cancelled,
        ),
        case("cancel blocked", blocked(), cancel(), at(1), Cancelled),
        case("assigned", pending(), assign(agent(), 1), at(1), Assigned),
        case(
            "s2s timeout, retry",
            with_schedule_to_start(3),
            timeout(s2s),
            at(500),
            Failed,
        ),
        case(
            "s2s timeout, final",
            with_schedule_to_start(1),
            timeout(s2s),
            at(500),
            Failed,
        ),
        case("cancel pending", pending(), cancel(), at(1), Cancelled),
        case("started", assigned(), started(1), at(11), Executing),
        case(
            "released before start",
            assigned(),
            released(1),
            at(11),
            Pending,
        ),
        case(
            "start timeout requeues",
            assigned(),
            timeout(DeadlineKind::Start),
            at(1_010),
            Pending,
        ),
        case(
            "s2s timeout assigned, retry",
            step(&with_schedule_to_start(3), assign(agent(), 1), at(10)).task,
            timeout(s2s),
            at(500),
            Failed,
        ),
        case(
            "s2s timeout assigned, final",
            step(&with_schedule_to_start(1), assign(agent(), 1), at(10)).task,
            timeout(s2s),
            at(500),
            Failed,
        ),
        case("cancel assigned", assigned(), cancel(), at(11), Cancelled),
        case(
            "heartbeat",
            executing(),
            heartbeat(1, Some(json!({"pct": 50}))),
            at(21),
            Executing,
        ),
        case(
            "sub-tasks added",
            executing(),
            Event::SubtasksAdded {
                agent: agent(),
                token: FencingToken(1),
                tasks: vec![TaskKey::from("part-1")],
            },
            at(21),
            Executing,
        ),
        case(
            "succeeded",
            executing(),
            succeeded(1, json!("ok")),
            at(21),
            Completed,
        ),
        case(
            "failed, retry",
            executing(),
            failed(1, "flaky", true),
            at(21),
            Failed,
        ),
        case(
            "failed, final",
            last_executing.clone(),
            failed(3, "flaky", true),
            at(1_030),
            Failed,
        ),
        case(
            "released while executing",
            executing(),
            released(1),
            at(21),
            Pending,
        ),
        case(
            "heartbeat timeout, retry",
            executing(),
            timeout(DeadlineKind::Heartbeat),
            at(2_020),
            Failed,
        ),
        case(
            "heartbeat timeout, final",
            last_executing.clone(),
            timeout(DeadlineKind::Heartbeat),
            at(3_020),
            Failed,
        ),
        case("assigned agent lost", assigned(), lost(1), at(11), Pending),
        case(
            "agent lost, requeue",
            requeue_on_loss(),
            lost(1),
            at(21),
            Pending,
        ),
        case("agent lost, retry", executing(), lost(1), at(21), Failed),
        case(
            "agent lost, final",
            last_executing.clone(),
            lost(3),
            at(3_020),
            Failed,
        ),
        case("cancel executing", executing(), cancel(), at(21), Cancelled),
        case(
            "retry after backoff",
            failed_retrying(),
            Event::Retry,
            at(130),
            Pending,
        ),
        case(
            "cancel while backing off",
            failed_retrying(),
            cancel(),
            at(31),
            Cancelled,
        ),
        case(
            "operator retry",
            failed_final(),
            retry_requested(),
            at(31),
            Pending,
        ),
        case(
            "upstream revived",
            upstream_cancelled.clone(),
            Event::UpstreamRevived {
                upstream: "research".into(),
                dependencies: Vec::new(),
            },
            at(6),
            Blocked,
        ),
        case(
            "upstream revived while another ended",
            upstream_cancelled.clone(),
            Event::UpstreamRevived {
                upstream: "research".into(),
                dependencies: vec![DependencyEnd {
                    key: "draft".into(),
                    ended: true,
                }],
            },
            at(6),
            Cancelled,
        ),
        case("pause blocked", blocked(), pause(false), at(5), Blocked),
        case("pause pending", pending(), pause(false), at(5), Pending),
        case(
            "pause assigned, let it start",
            assigned(),
            pause(false),
            at(15),
            Assigned,
        ),
        case(
            "pause assigned now",
            assigned(),
            pause(true),
            at(15),
            Pending,
        ),
        case(
            "pause executing, let it finish",
            executing(),
            pause(false),
            at(25),
            Executing,
        ),
        case(
            "pause executing now",
            executing(),
            pause(true),
            at(25),
            Pending,
        ),
        case(
            "pause while backing off",
            failed_retrying(),
            pause(false),
            at(31),
            Failed,
        ),
        case(
            "resume blocked",
            paused(blocked(), at(5)),
            resume(),
            at(9),
            Blocked,
        ),
        case(
            "resume pending",
            paused(pending(), at(5)),
            resume(),
            at(9),
            Pending,
        ),
        case(
            "resume assigned",
            paused(assigned(), at(15)),
            resume(),
            at(16),
            Assigned,
        ),
        case(
            "resume executing",
            paused(executing(), at(25)),
            resume(),
            at(26),
            Executing,
        ),
        case(
            "resume backing off",
            paused(failed_retrying(), at(31)),
            resume(),
            at(40),
            Failed,
        ),
        case("skip blocked", blocked(), skip(json!(1)), at(5), Completed),
        case("skip pending", pending(), skip(json!(1)), at(5), Completed),
        case(
            "skip assigned",
            assigned(),
            skip(json!(1)),
            at(15),
            Completed,
        ),
        case(
            "skip executing",
            executing(),
            skip(json!(1)),
            at(25),
            Completed,
        ),
        case(
            "skip while backing off",
            failed_retrying(),
            skip(json!(1)),
            at(31),
            Completed,
        ),
        case(
            "skip a final failure",
            failed_final(),
            skip(json!(1)),
            at(31),
            Completed,
        ),
        case("fail blocked", blocked(), force_fail(), at(5), Failed),
        case("fail pending", pending(), force_fail(), at(5), Failed),
        case("fail assigned", assigned(), force_fail(), at(15), Failed),
        case("fail executing", executing(), force_fail(), at(25), Failed),
        case(
            "fail while backing off",
            failed_retrying(),
            force_fail(),
            at(31),
            Failed,
        ),
        case(
            "rerun blocked",
            blocked(),
            reopened("plan", None),
            at(5),
            Blocked,
        ),
        case(
            "rerun pending",
            pending(),
            reopened("write", None),
            at(5),
            Blocked,
        ),
        case(
            "rerun assigned",
            assigned(),
            reopened("write", None),
            at(15),
            Blocked,
        ),
        case(
            "rerun executing",
            executing(),
            reopened("write", None),
            at(25),
            Blocked,
        ),
        case(
            "rerun completed",
            completed(),
            reopened("write", Some(json!({"v": 2}))),
            at(40),
            Blocked,
        ),
        case(
            "rerun while backing off",
            failed_retrying(),
            reopened("write", None),
            at(31),
            Blocked,
        ),
        case(
            "rerun a final failure",
            failed_final(),
            reopened("write", None),
            at(31),
            Blocked,
        ),
        case(
            "rerun cancelled",
            cancelled(),
            reopened("plan", None),
            at(31),
            Blocked,
        ),
        case(
            "supersede blocked",
            blocked(),
            superseded(),
            at(5),
            Cancelled,
        ),
        case(
            "supersede pending",
            pending(),
            superseded(),
            at(5),
            Cancelled,
        ),
        case(
            "supersede assigned",
            assigned(),
            superseded(),
            at(15),
            Cancelled,
        ),
        case(
            "supersede executing",
            executing(),
            superseded(),
            at(25),
            Cancelled,
        ),
        case(
            "supersede while backing off",
            failed_retrying(),
            superseded(),
            at(31),
            Cancelled,
        ),
        case(
            "supersede a final failure",
            failed_final(),
            superseded(),
            at(31),
            Cancelled,
        ),
        case(
            "supersede completed",
            completed(),
            superseded(),
            at(40),
            Cancelled,
        ),
        case(
            "supersede cancelled",
            cancelled(),
            superseded(),
            at(31),
            Cancelled,
        ),
        case(
            "sub-task added under a cancelled dependent",
            upstream_cancelled,
            Event::DependencyAdded {
                dependency: "part-1".into(),
            },
            at(6),
            Cancelled,
        ),
    ]
}

#[test]
fn every_rule_of_the_table_fires_in_a_case_and_lands_where_the_table_says() {
    let mut fired = vec![false; DEFAULT_RULES.len()];
    for (name, outcome, expected) in one_case_per_rule() {
        let t = outcome.unwrap_or_else(|r| panic!("{name}: {r}"));
        assert_eq!(t.task.kind(), expected, "{name}");
        assert_eq!(t.rule.to, expected, "{name}");
        assert_eq!(t.rule.from, t.from, "{name}");
        fired[rule_index(t.rule)] = true;
    }
    let missing: Vec<String> = DEFAULT_RULES
        .iter()
        .zip(&fired)
        .filter(|(_, f)| !**f)
        .map(|(r, _)| r.to_string())
        .collect();
    assert!(missing.is_empty(), "rules without a case: {missing:#?}");
}

#[test]
fn the_default_lifecycle_passes_its_own_checks() {
    assert_eq!(DEFAULT.check(), Vec::<Problem>::new());
}

#[test]
fn submission_without_open_dependencies_is_pending_and_wakes_agents() {
    let t = submit(&submission(spec("write"), &[]), T0).unwrap();
    assert_eq!(t.task.state, State::Pending);
    assert_eq!(t.task.version, 1);
    assert_eq!(t.task.attempt, 1);
    assert_eq!(t.task.entered_at.get(StateKind::Pending), Some(T0));
    assert_eq!(
        t.effects,
        vec![Effect::WakeAgents {
            capabilities: caps(&["write"])
        }]
    );
}

#[test]
fn submission_with_an_open_dependency_is_blocked_until_all_are_met() {
    let task = blocked();
    assert_eq!(task.state, State::Blocked);
    let r = refuse(&task, deps_met(&["plan"]), at(1));
    assert!(
        matches!(r.refusal, Refusal::GuardFailed { ref detail, .. } if detail.contains("`research`"))
    );
    let t = step(&task, deps_met(&["research", "plan"]), at(2));
    assert_eq!(t.task.state, State::Pending);
    assert!(t.effects.contains(&Effect::WakeAgents {
        capabilities: caps(&["write"])
    }));
}

#[test]
fn decomposition_makes_a_blocked_task_wait_for_the_new_sub_task_too() {
    let task = step(
        &blocked(),
        Event::DependencyAdded {
            dependency: "sub".into(),
        },
        at(1),
    )
    .task;
    assert_eq!(task.dependencies.len(), 3);
    refuse(&task, deps_met(&["plan", "research"]), at(2));
    let t = step(&task, deps_met(&["plan", "research", "sub"]), at(2));
    assert_eq!(t.task.kind(), StateKind::Pending);
    let r = refuse(
        &t.task,
        Event::DependencyAdded {
            dependency: "late".into(),
        },
        at(3),
    );
    assert!(matches!(r.refusal, Refusal::NotAccepted { .. }));
}

#[test]
fn assignment_issues_a_lease_with_a_larger_fencing_token_and_arms_the_start_deadline() {
    let t = step(&pending(), assign(agent(), 1), at(10));
    let State::Assigned { lease: l } = &t.task.state else {
        panic!("{:?}", t.task.state)
    };
    assert_eq!(l.token, FencingToken(1));
    assert_eq!(l.agent, agent());
    assert_eq!(l.id, lease(1));
    assert_eq!(t.task.fencing_token, FencingToken(1));
    assert_eq!(t.task.deadlines.start, Some(at(1_010)));
    assert_eq!(
        t.effects,
        vec![Effect::ArmDeadline {
            kind: DeadlineKind::Start,
            at: at(1_010)
        }]
    );
    let again = step(
        &step(&t.task, released(1), at(20)).task,
        assign(agent(), 2),
        at(30),
    );
    assert_eq!(again.task.fencing_token, FencingToken(2));
}

#[test]
fn an_agent_without_the_capability_cannot_be_assigned() {
    let r = refuse(
        &pending(),
        Event::AgentAssigned {
            agent: agent(),
            capabilities: caps(&["read"]),
            lease: lease(1),
        },
        at(1),
    );
    assert_eq!(r.state, Some(StateKind::Pending));
    assert_eq!(r.event, EventKind::AgentAssigned);
    assert!(r.to_string().contains("lacks capability `write`"), "{r}");
}

#[test]
fn starting_swaps_the_start_deadline_for_execution_and_heartbeat_deadlines() {
    let t = step(&assigned(), started(1), at(20));
    assert_eq!(
        t.task.deadlines,
        Deadlines {
            schedule_to_start: None,
            start: None,
            start_to_close: Some(at(10_020)),
            heartbeat: Some(at(2_020)),
            signal: None,
        }
    );
    assert!(t.effects.contains(&Effect::DisarmDeadline {
        kind: DeadlineKind::Start
    }));
}

#[test]
fn heartbeats_extend_the_heartbeat_deadline_keep_the_close_deadline_and_record_progress() {
    let t = step(
        &executing(),
        heartbeat(1, Some(json!({"pct": 40}))),
        at(1_500),
    );
    assert_eq!(t.task.deadlines.heartbeat, Some(at(3_500)));
    assert_eq!(t.task.deadlines.start_to_close, Some(at(10_020)));
    let t2 = step(&t.task, heartbeat(1, None), at(1_600));
    let State::Executing { progress, .. } = &t2.task.state else {
        panic!()
    };
    assert_eq!(
        progress,
        &Some(json!({"pct": 40})),
        "progress is kept without a new one"
    );
    assert_eq!(t2.task.entered_at.get(StateKind::Executing), Some(at(20)));
}

#[test]
fn success_needs_the_current_lease_and_a_result_and_releases_dependents() {
    let task = executing();
    let r = refuse(
        &task,
        Event::ExecutionSucceeded {
            usage: Default::default(),
            agent: agent(),
            token: FencingToken(1),
            result: None,
        },
        at(30),
    );
    assert!(r.to_string().contains("result payload is required"), "{r}");
    let r = refuse(&task, succeeded(1, serde_json::Value::Null), at(30));
    assert!(matches!(r.refusal, Refusal::GuardFailed { .. }));
    let r = refuse(&task, succeeded(7, json!(1)), at(30));
    assert!(r.to_string().contains("fencing token 7"), "{r}");
    let r = refuse(
        &task,
        Event::ExecutionSucceeded {
            usage: Default::default(),
            agent: other_agent(),
            token: FencingToken(1),
            result: Some(json!(1)),
        },
        at(30),
    );
    assert!(r.to_string().contains("belongs to another agent"), "{r}");

    let t = step(&task, succeeded(1, json!({"text": "done"})), at(30));
    assert_eq!(
        t.task.state,
        State::Completed {
            result: json!({"text": "done"}),
            token: FencingToken(1)
        }
    );
    assert_eq!(t.task.deadlines, Deadlines::default());
    assert!(t.effects.contains(&Effect::ReleaseDependents));
    assert!(t.effects.contains(&Effect::EndLease {
        agent: agent(),
        lease: lease(1)
    }));
}

#[test]
fn pending_never_jumps_to_completed() {
    assert_eq!(
        DEFAULT
            .rules_for(Some(StateKind::Pending), EventKind::ExecutionSucceeded)
            .count(),
        0
    );
    // A report on a task never assigned holds no lease: refused before the table.
    let r = refuse(&pending(), succeeded(0, json!(1)), at(1));
    assert_eq!(
        r.refusal,
        Refusal::StaleLease {
            reported: FencingToken(0),
            current: FencingToken(0),
            loss: LeaseLoss::NeverIssued,
        },
        "{r}"
    );
    assert!(r.to_string().contains("no lease was ever issued"), "{r}");
}

#[test]
fn a_duplicate_success_is_recognised_not_applied_twice() {
    let task = completed();
    let r = refuse(&task, succeeded(1, json!({"text": "done"})), at(40));
    assert!(r.is_duplicate());
    let r = refuse(&task, succeeded(1, json!({"text": "other"})), at(40));
    assert!(matches!(r.refusal, Refusal::Conflict { .. }), "{r}");
}

#[test]
fn duplicate_reports_of_start_failure_cancel_and_dependency_are_recognised() {
    assert!(refuse(&executing(), started(1), at(25)).is_duplicate());
    assert!(refuse(&failed_retrying(), failed(1, "flaky", true), at(35)).is_duplicate());
    assert!(matches!(
        refuse(&failed_retrying(), failed(1, "other", true), at(35)).refusal,
        Refusal::Conflict { .. }
    ));
    assert!(refuse(&cancelled(), cancel(), at(20)).is_duplicate());
    assert!(refuse(
        &blocked(),
        Event::DependencyAdded {
            dependency: "plan".into()
        },
        at(1)
    )
    .is_duplicate());
}

#[test]
fn a_report_from_a_superseded_lease_is_refused_as_stale() {
    let requeued = step(&assigned(), timeout(DeadlineKind::Start), at(1_010)).task;
    let reassigned = step(&requeued, assign(other_agent(), 2), at(1_020)).task;
    let r = refuse(&reassigned, started(1), at(1_030));
    assert_eq!(
        r.refusal,
        Refusal::StaleLease {
            reported: FencingToken(1),
            current: FencingToken(2),
            loss: LeaseLoss::Superseded,
        }
    );
    assert_eq!(r.refusal.code(), "stale_lease");
    // Taken back and not yet assigned again: the same refusal, saying the lease has ended.
    let r = refuse(&requeued, succeeded(1, json!(1)), at(1_015));
    assert_eq!(
        r.refusal,
        Refusal::StaleLease {
            reported: FencingToken(1),
            current: FencingToken(1),
            loss: LeaseLoss::Revoked,
        },
        "{r}"
    );
}

#[test]
fn failure_with_attempts_left_schedules_a_retry_with_backoff() {
    let t = step(&executing(), failed(1, "flaky", true), at(30));
    let State::Failed { error, retry_at } = &t.task.state else {
        panic!()
    };
    assert_eq!(*retry_at, Some(at(130)));
    assert_eq!(error.kind, "flaky");
    assert_eq!(error.attempt, 1);
    assert_eq!(error.token, Some(FencingToken(1)));
    assert!(!t.task.state.is_terminal());
    assert_eq!(t.task.errors.len(), 1);
    assert!(t.effects.contains(&Effect::ScheduleRetry {
        at: at(130),
        attempt: 2
    }));
    assert!(!t.effects.contains(&Effect::FailDependents));

    let r = refuse(&t.task, Event::Retry, at(129));
    assert!(r.to_string().contains("backoff runs until"), "{r}");
    let next = step(&t.task, Event::Retry, at(130));
    assert_eq!(next.task.state, State::Pending);
    assert_eq!(next.task.attempt, 2);
}

#[test]
fn backoff_doubles_per_attempt_and_the_last_failure_is_final() {
    let mut task = executing();
    let mut now = at(30);
    let mut waits = Vec::new();
    for attempt in 1..=3u64 {
        let t = step(&task, failed(attempt, "flaky", true), now);
        match t.task.state {
            State::Failed {
                retry_at: Some(r), ..
            } => {
                waits.push(r.ms_since(now));
                now = r;
                task = step(&t.task, Event::Retry, now).task;
                task = step(&task, assign(agent(), attempt as u128 + 1), now).task;
                task = step(&task, started(attempt + 1), now).task;
            }
            State::Failed { retry_at: None, .. } => {
                assert_eq!(attempt, 3);
                assert!(t.task.state.is_terminal());
                assert!(t.effects.contains(&Effect::FailDependents));
                assert!(t
                    .effects
                    .iter()
                    .any(|e| matches!(e, Effect::Compensate { .. })));
                assert_eq!(t.task.errors.len(), 3);
                task = t.task;
            }
            ref other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits, vec![100, 200]);
    assert!(task.state.is_terminal());
}

#[test]
fn non_retryable_errors_fail_at_once() {
    let by_kind = step(&executing(), failed(1, "bad_input", true), at(30));
    assert!(by_kind.task.state.is_terminal());
    let by_flag = step(&executing(), failed(1, "flaky", false), at(30));
    assert!(by_flag.task.state.is_terminal());
}

#[test]
fn the_start_deadline_takes_the_task_back_without_using_an_attempt() {
    let task = assigned();
    let r = refuse(&task, timeout(DeadlineKind::Start), at(1_009));
    assert!(r.to_string().contains("not yet passed"), "{r}");
    let t = step(&task, timeout(DeadlineKind::Start), at(1_010));
    assert_eq!(t.task.state, State::Pending);
    assert_eq!(t.task.attempt, 1);
    assert!(t.effects.contains(&Effect::RevokeLease {
        agent: agent(),
        lease: lease(1),
        token: FencingToken(1)
    }));
}

#[test]
fn a_heartbeat_timeout_fails_the_attempt_and_a_stale_timer_is_refused() {
    let task = step(&executing(), heartbeat(1, None), at(1_900)).task;
    let r = refuse(&task, timeout(DeadlineKind::Heartbeat), at(2_020));
    assert!(matches!(r.refusal, Refusal::GuardFailed { .. }), "{r}");
    let r = refuse(&task, timeout(DeadlineKind::Start), at(5_000));
    assert!(r.to_string().contains("start deadline is not armed"), "{r}");
    let t = step(&task, timeout(DeadlineKind::Heartbeat), at(3_900));
    let State::Failed { error, retry_at } = &t.task.state else {
        panic!()
    };
    assert_eq!(error.kind, "timeout.heartbeat");
    assert!(retry_at.is_some());
    assert!(t
        .effects
        .iter()
        .any(|e| matches!(e, Effect::RevokeLease { .. })));
}

#[test]
fn a_success_committed_before_the_timeout_fires_stays_a_success() {
    let done = step(&executing(), succeeded(1, json!(1)), at(9_999)).task;
    let r = refuse(&done, timeout(DeadlineKind::StartToClose), at(10_020));
    assert!(
        matches!(r.refusal, Refusal::NotAccepted { ref accepted } if *accepted == [EventKind::Reopened, EventKind::Superseded])
    );
    assert_eq!(done.kind(), StateKind::Completed);
}

#[test]
fn cancel_works_from_every_non_terminal_state_and_terminal_states_refuse_it() {
    for task in [
        blocked(),
        pending(),
        assigned(),
        executing(),
        failed_retrying(),
    ] {
        let from = task.kind();
        let t = step(&task, cancel(), at(50));
        assert_eq!(t.task.kind(), StateKind::Cancelled, "from {from}");
        assert!(t.effects.contains(&Effect::FailDependents), "from {from}");
        assert_eq!(t.task.deadlines, Deadlines::default(), "from {from}");
        let revoked = t
            .effects
            .iter()
            .any(|e| matches!(e, Effect::RevokeLease { .. }));
        assert_eq!(revoked, task.state.lease().is_some(), "from {from}");
    }
    let r = refuse(&completed(), cancel(), at(50));
    assert!(
        r.to_string()
            .ends_with("the task is completed, which is final: it cannot take a cancellation (an operator can still rerun it)"),
        "{r}"
    );
    // An operator's retry refused in an operator's words: what the task is, what a retry
    // needs, what may still be done.
    let r = refuse(&pending(), retry_requested(), at(50));
    assert_eq!(
        r.to_string(),
        format!(
            "task {} is pending (ready, waiting for an agent), not failed: only a task that \
             failed for good can be retried; it can still be cancelled",
            r.task
        )
    );
    let r = refuse(&completed(), retry_requested(), at(50));
    assert!(
        r.to_string()
            .ends_with("completed: only a task that failed for good can be retried"),
        "{r}"
    );
    let r = refuse(&failed_retrying(), retry_requested(), at(50));
    assert!(
        r.to_string().contains(
            "failed, but not for good: its next attempt is already scheduled: only a task \
             that failed for good can be retried; it can still be cancelled"
        ),
        "{r}"
    );
    let r = refuse(&failed_final(), cancel(), at(50));
    assert!(r.to_string().contains("the failure is final"), "{r}");
}

#[test]
fn a_final_failure_or_cancellation_asks_for_the_compensation_task() {
    let t = step(&executing(), failed(1, "bad_input", true), at(30));
    let comp = spec("write").compensation.unwrap();
    assert!(t.effects.contains(&Effect::Compensate {
        spec: Box::new(comp.clone())
    }));
    let t = step(&pending(), cancel(), at(30));
    assert!(t.effects.contains(&Effect::Compensate {
        spec: Box::new(comp)
    }));
    let mut plain = spec("plain");
    plain.compensation = None;
    let task = submit(&submission(plain, &[]), T0).unwrap().task;
    let t = step(&task, cancel(), at(1));
    assert!(!t
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Compensate { .. })));
}

#[test]
fn upstream_failure_cancels_a_blocked_dependent_but_not_for_a_stranger() {
    let r = refuse(
        &blocked(),
        Event::UpstreamFailed {
            upstream: "elsewhere".into(),
        },
        at(1),
    );
    assert!(
        r.to_string().contains("`elsewhere` is not a dependency"),
        "{r}"
    );
    let t = step(
        &blocked(),
        Event::UpstreamFailed {
            upstream: "research".into(),
        },
        at(1),
    );
    assert_eq!(
        t.task.state,
        State::Cancelled {
            reason: CancelReason::Upstream {
                upstream: "research".into()
            }
        }
    );
    assert!(t.effects.contains(&Effect::FailDependents));
}

#[test]
fn an_operator_retry_reopens_a_final_failure_with_fresh_attempts_and_revives_dependents() {
    let r = refuse(&failed_retrying(), retry_requested(), at(40));
    assert!(matches!(r.refusal, Refusal::GuardFailed { .. }), "{r}");
    let t = step(&failed_final(), retry_requested(), at(40));
    assert_eq!(t.task.state, State::Pending);
    assert_eq!(t.task.attempt, 2);
    assert_eq!(t.task.attempts_left(), 2, "a fresh budget of max_attempts");
    assert!(t.effects.contains(&Effect::ReviveDependents));

    let dependent = step(
        &blocked(),
        Event::UpstreamFailed {
            upstream: "research".into(),
        },
        at(1),
    )
    .task;
    let r = refuse(
        &dependent,
        Event::UpstreamRevived {
            upstream: "plan".into(),
            dependencies: Vec::new(),
        },
        at(2),
    );
    assert!(
        r.to_string().contains("not cancelled because `plan`"),
        "{r}"
    );
    let revived = step(
        &dependent,
        Event::UpstreamRevived {
            upstream: "research".into(),
            dependencies: Vec::new(),
        },
        at(2),
    );
    assert_eq!(revived.task.state, State::Blocked);
    assert!(revived.effects.contains(&Effect::ReviveDependents));
    assert!(refuse(
        &cancelled(),
        Event::UpstreamRevived {
            upstream: "research".into(),
            dependencies: Vec::new(),
        },
        at(20)
    )
    .to_string()
    .contains("not cancelled because"));
}

/// Revival carries the graph as evidence: dependencies added while cancelled join the task, and
/// another dependency that has ended keeps it cancelled, naming that one instead.
#[test]
fn a_revival_catches_up_with_the_graph_and_stays_cancelled_behind_another_ended_upstream() {
    let dependent = step(
        &blocked(),
        Event::UpstreamFailed {
            upstream: "research".into(),
        },
        at(1),
    )
    .task;
    let recorded = step(
        &dependent,
        Event::DependencyAdded {
            dependency: "part-1".into(),
        },
        at(2),
    );
    assert_eq!(
        recorded.task.state, dependent.state,
        "still cancelled, same reason"
    );
    assert!(recorded.task.dependencies.contains(&"part-1".into()));
    assert!(recorded.effects.is_empty());

    let evidence = |ended: bool| Event::UpstreamRevived {
        upstream: "research".into(),
        dependencies: vec![
            DependencyEnd {
                key: "research".into(),
                ended: false,
            },
            DependencyEnd {
                key: "part-2".into(),
                ended,
            },
        ],
    };
    let revived = step(&dependent, evidence(false), at(3));
    assert_eq!(revived.task.state, State::Blocked);
    assert!(revived.task.dependencies.contains(&"part-2".into()));
    assert!(revived.effects.contains(&Effect::ReviveDependents));

    let kept = step(&dependent, evidence(true), at(3));
    assert_eq!(
        kept.task.state,
        State::Cancelled {
            reason: CancelReason::Upstream {
                upstream: "part-2".into()
            }
        }
    );
    assert!(kept.effects.is_empty(), "its dependents stay as they are");
}

#[test]
fn a_rejection_names_the_task_its_state_the_event_and_the_rule() {
    let task = executing();
    let r = refuse(&task, succeeded(1, serde_json::Value::Null), at(30));
    let text = r.to_string();
    assert!(text.contains(&task.id.to_string()), "{text}");
    assert!(text.contains("Executing"), "{text}");
    assert!(text.contains("execution_succeeded"), "{text}");
    assert!(text.contains("result present"), "{text}");
}

#[test]
fn submitting_twice_or_an_invalid_spec_is_refused() {
    let task = pending();
    let sub = submission(spec("write"), &[]);
    let r = refuse(&task, Event::Submitted(sub), at(1));
    assert!(matches!(r.refusal, Refusal::Conflict { .. }));

    let mut bad = spec("write");
    bad.retry.max_attempts = 0;
    let r = submit(&submission(bad, &[]), T0).unwrap_err();
    assert_eq!(
        r.refusal,
        Refusal::InvalidSpec {
            field: "retry.max_attempts".into(),
            expected: "between 1 and 100".into()
        }
    );
    let mut bad = spec("write");
    bad.depends_on = vec!["write".into()];
    let r = submit(&submission(bad, &[]), T0).unwrap_err();
    assert!(r.to_string().contains("depends_on"), "{r}");
    let mut bad = spec("has space");
    bad.compensation = None;
    let r = submit(&submission(bad, &[]), T0).unwrap_err();
    assert!(r.to_string().contains("`key`"), "{r}");
}

#[test]
fn entered_at_records_when_the_task_entered_each_state() {
    let t = completed();
    assert_eq!(t.entered_at.get(StateKind::Pending), Some(T0));
    assert_eq!(t.entered_at.get(StateKind::Assigned), Some(at(10)));
    assert_eq!(t.entered_at.get(StateKind::Executing), Some(at(20)));
    assert_eq!(t.entered_at.get(StateKind::Completed), Some(at(30)));
    assert_eq!(t.entered_at.get(StateKind::Blocked), None);
    assert_eq!(t.created_at, T0);
    assert_eq!(t.updated_at, at(30));
}

static AMBIGUOUS: &[Rule] = &[
    Rule {
        from: None,
        event: EventKind::Submitted,
        guards: &[],
        to: StateKind::Pending,
        effects: &[],
        reopens: false,
    },
    Rule {
        from: Some(StateKind::Pending),
        event: EventKind::CancelRequested,
        guards: &[],
        to: StateKind::Cancelled,
        effects: &[],
        reopens: false,
    },
    Rule {
        from: Some(StateKind::Pending),
        event: EventKind::CancelRequested,
        guards: &[Guard {
            cond: Cond::LeaseCurrent,
            holds: true,
        }],
        to: StateKind::Completed,
        effects: &[],
        reopens: false,
    },
    Rule {
        from: Some(StateKind::Completed),
        event: EventKind::Retry,
        guards: &[],
        to: StateKind::Pending,
        effects: &[],
        reopens: false,
    },
];

#[test]
fn the_check_finds_ambiguity_terminal_exits_dead_ends_and_unreachable_states() {
    let problems = Lifecycle { rules: AMBIGUOUS }.check();
    let has = |p: &dyn Fn(&Problem) -> bool| problems.iter().any(p);
    assert!(
        has(&|p| matches!(p, Problem::Ambiguous(..))),
        "{problems:?}"
    );
    assert!(
        has(&|p| matches!(p, Problem::TerminalExit(_))),
        "{problems:?}"
    );
    assert!(has(&|p| *p == Problem::Unreachable(StateKind::Executing)));
    assert!(has(&|p| *p == Problem::UnusedEvent(EventKind::Heartbeat)));
    assert!(has(&|p| *p == Problem::NotCancellable(StateKind::Blocked)));
    assert!(!has(&|p| *p == Problem::DeadEnd(StateKind::Pending)));
}

#[test]
fn diagrams_draw_every_rule() {
    let mermaid = DEFAULT.diagram(DiagramFormat::Mermaid);
    assert!(mermaid.starts_with("stateDiagram-v2"));
    assert!(mermaid
        .contains("Executing --> Completed: execution_succeeded [current lease, result present]"));
    assert_eq!(
        mermaid.lines().filter(|l| l.contains("-->")).count(),
        DEFAULT_RULES.len() + 3
    );
    let dot = DEFAULT.diagram(DiagramFormat::Dot);
    assert!(dot.starts_with("digraph lifecycle {"));
    assert_eq!(dot.matches(" -> ").count(), DEFAULT_RULES.len());
    assert!(dot.contains(
        "Cancelled -> Blocked [label=\"upstream_revived [cancelled by it, not another upstream ended]\", style=dashed]"
    ));
}

#[test]
fn a_lost_agent_requeues_or_fails_its_task_by_policy_and_stale_losses_are_refused() {
    let t = step(&assigned(), lost(1), at(11));
    assert_eq!(t.task.state, State::Pending);
    assert_eq!(t.task.attempt, 1);
    assert!(t.effects.contains(&Effect::RevokeLease {
        agent: agent(),
        lease: lease(1),
        token: FencingToken(1)
    }));

    let t = step(&executing(), lost(1), at(21));
    let State::Failed { error, retry_at } = &t.task.state else {
        panic!("{:?}", t.task.state)
    };
    assert_eq!(error.kind, AGENT_LOST);
    assert!(retry_at.is_some());

    let t = step(&requeue_on_loss(), lost(1), at(21));
    assert_eq!(t.task.state, State::Pending);
    assert_eq!(t.task.errors.len(), 0);

    let r = refuse(&completed(), lost(1), at(40));
    assert!(matches!(r.refusal, Refusal::NotAccepted { .. }), "{r}");
    let r = refuse(
        &executing(),
        Event::AgentLost {
            agent: other_agent(),
            token: FencingToken(1),
        },
        at(21),
    );
    assert!(r.to_string().contains("belongs to another agent"), "{r}");
}

fn sleeper(ms: u64) -> TaskSpec {
    TaskSpec {
        sleep_ms: Some(ms),
        ..TaskSpec::new("pause")
    }
}

fn approval(timeout_ms: Option<u64>) -> TaskSpec {
    let mut s = TaskSpec::new("review");
    s.wait_for = Some(WaitFor {
        signal: "approve".into(),
        timeout_ms,
    });
    s.retry.max_attempts = 2;
    s.retry.jitter = 0.0;
    s.retry.initial_backoff_ms = 100;
    s
}

fn signal(name: &str, reject: Option<&str>) -> Event {
    Event::SignalReceived {
        signal: name.into(),
        id: 1,
        data: json!({"approved": true}),
        reject: reject.map(Into::into),
        sent_by: "alice".into(),
    }
}

#[test]
fn a_signal_task_waits_for_its_signal_not_an_agent_and_its_data_becomes_the_result() {
    let t = submit(&submission(approval(Some(5_000)), &[]), T0).unwrap();
    assert_eq!(t.task.kind(), StateKind::Pending);
    assert_eq!(t.task.deadlines.signal, Some(at(5_000)));
    assert!(t.effects.contains(&Effect::AwaitSignal {
        signal: "approve".into()
    }));
    assert!(!t
        .effects
        .iter()
        .any(|e| matches!(e, Effect::WakeAgents { .. })));
    // No agent may take it.
    let r = refuse(&t.task, assign(agent(), 1), at(1));
    assert!(r.to_string().contains("not waits for the signal"), "{r}");
    // Another signal is refused, naming the one it waits for.
    let r = refuse(&t.task, signal("deploy", None), at(1));
    assert!(
        r.to_string()
            .contains("the task waits for signal `approve`, not `deploy`"),
        "{r}"
    );
    let done = step(&t.task, signal("approve", None), at(2));
    assert_eq!(
        done.task.state,
        State::Completed {
            result: json!({"approved": true}),
            token: FencingToken(0)
        }
    );
    assert!(done.effects.contains(&Effect::ReleaseDependents));
    assert!(done.effects.contains(&Effect::DisarmDeadline {
        kind: DeadlineKind::Signal
    }));
    // A second signal finds it completed.
    refuse(&done.task, signal("approve", None), at(3));
}

#[test]
fn a_rejection_fails_the_signal_task_for_good_and_a_timeout_retries_the_wait() {
    let t = submit(&submission(approval(Some(5_000)), &[]), T0)
        .unwrap()
        .task;
    let rejected = step(&t, signal("approve", Some("too expensive")), at(2));
    let State::Failed { error, retry_at } = &rejected.task.state else {
        panic!("{:?}", rejected.task.state)
    };
    assert_eq!(error.kind, REJECTED);
    assert_eq!(
        error.message,
        "signal `approve` from alice rejected it: too expensive"
    );
    assert_eq!(*retry_at, None, "a person's no is not retried");
    assert!(rejected.effects.contains(&Effect::FailDependents));

    let timed_out = step(&t, timeout(DeadlineKind::Signal), at(5_000));
    let State::Failed { error, retry_at } = &timed_out.task.state else {
        panic!("{:?}", timed_out.task.state)
    };
    assert_eq!(error.kind, "timeout.signal");
    assert_eq!(*retry_at, Some(at(5_100)));
    // The retry waits again, with a fresh deadline, and looks for a kept signal.
    let again = step(&timed_out.task, Event::Retry, at(5_100));
    assert_eq!(again.task.kind(), StateKind::Pending);
    assert_eq!(again.task.deadlines.signal, Some(at(10_100)));
    assert!(again.effects.contains(&Effect::AwaitSignal {
        signal: "approve".into()
    }));
    let final_timeout = step(&again.task, timeout(DeadlineKind::Signal), at(10_100));
    assert!(final_timeout.task.state.is_terminal());
}

#[test]
fn a_delayed_task_is_ready_only_at_its_time_and_a_sleep_completes_by_itself() {
    let mut s = spec("write");
    s.not_before = Some(at(60_000));
    s.delay_ms = Some(1_000);
    let t = submit(&submission(s, &[]), T0).unwrap();
    assert_eq!(t.task.kind(), StateKind::Blocked);
    assert_eq!(t.task.wake_at, Some(at(60_000)), "the later of the two");
    assert!(t.effects.contains(&Effect::ArmWake { at: at(60_000) }));
    assert_eq!(t.task.next_timer(), Some((Timer::Wake, at(60_000))));
    assert_eq!(t.task.on_timer(at(59_999)), None);
    assert_eq!(t.task.on_timer(at(60_000)), Some(Event::TimerFired));
    let r = refuse(&t.task, Event::TimerFired, at(59_999));
    assert!(r.to_string().contains("wakes at"), "{r}");
    let ready = step(&t.task, Event::TimerFired, at(60_000));
    assert_eq!(ready.task.kind(), StateKind::Pending);
    assert_eq!(ready.task.wake_at, None);
    assert!(ready
        .effects
        .iter()
        .any(|e| matches!(e, Effect::WakeAgents { .. })));

    // A not_before already past delays nothing.
    let mut s = spec("write");
    s.not_before = Some(T0);
    assert_eq!(
        submit(&submission(s, &[]), at(1)).unwrap().task.kind(),
        StateKind::Pending
    );

    // A delayed task can be cancelled while it waits; its wake-up goes with it.
    let cancelled = step(&t.task, cancel(), at(5));
    assert_eq!(cancelled.task.wake_at, None);
    assert_eq!(cancelled.task.next_timer(), None);

    let sleeping = submit(&submission(sleeper(250), &[]), T0).unwrap().task;
    assert_eq!(sleeping.wake_at, Some(at(250)));
    let woke = step(&sleeping, Event::TimerFired, at(250));
    assert_eq!(
        woke.task.state,
        State::Completed {
            result: json!({"slept_ms": 250}),
            token: FencingToken(0)
        }
    );
    assert!(woke.effects.contains(&Effect::ReleaseDependents));
}

#[test]
fn a_second_release_of_a_delayed_task_is_a_duplicate() {
    let mut s = spec("write");
    s.depends_on = vec!["plan".into()];
    s.delay_ms = Some(1_000);
    let t = submit(&submission(s, &[]), T0).unwrap().task;
    let met = Event::DependenciesMet {
        completed: vec!["plan".into()],
        input: None,
        unresolved: None,
        results: None,
    };
    let released = step(&t, met.clone(), at(10)).task;
    assert_eq!(released.wake_at, Some(at(1_010)));
    assert!(refuse(&released, met, at(20)).is_duplicate());
}

#[test]
fn waiting_and_sleeping_specs_refuse_what_no_agent_would_use() {
    let mut s = approval(None);
    s.capabilities = caps(&["gpu"]);
    assert_eq!(s.validate().unwrap_err().field, "capabilities");
    let mut s = sleeper(10);
    s.wait_for = approval(None).wait_for;
    assert_eq!(s.validate().unwrap_err().field, "sleep_ms");
    let mut s = sleeper(10);
    s.delay_ms = Some(5);
    assert_eq!(s.validate().unwrap_err().field, "delay_ms");
    let mut s = approval(Some(0));
    assert_eq!(s.validate().unwrap_err().field, "wait_for.timeout_ms");
    s.wait_for = Some(WaitFor {
        signal: "no spaces".into(),
        timeout_ms: None,
    });
    assert_eq!(s.validate().unwrap_err().field, "wait_for.signal");
    for unaddressable in [".", ".."] {
        s.wait_for = Some(WaitFor {
            signal: unaddressable.into(),
            timeout_ms: None,
        });
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, "wait_for.signal", "{unaddressable}");
    }
    s.wait_for = Some(WaitFor {
        signal: "approve.v2".into(),
        timeout_ms: None,
    });
    assert!(s.validate().is_ok());
    let mut s = spec("write");
    s.delay_ms = Some(spec::DURATION_MAX_MS + 1);
    assert_eq!(s.validate().unwrap_err().field, "delay_ms");
}

// ---- operators in control -------------------------------------------------------------------

#[test]
fn a_paused_task_is_not_handed_out_and_its_timers_resume_with_the_time_they_had_left() {
    let mut s = spec("write");
    s.timeouts.schedule_to_start_ms = Some(1_000);
    let ready = submit(&submission(s, &[]), at(0)).unwrap().task;
    assert_eq!(ready.deadlines.schedule_to_start, Some(at(1_000)));
    let held = paused(ready, at(400));
    assert_eq!(held.next_timer().map(|(_, t)| t), Some(Timestamp::NEVER));
    assert_eq!(
        held.on_timer(at(5_000)),
        None,
        "a stopped timer never fires"
    );
    let r = refuse(&held, assign(agent(), 1), at(500));
    assert_eq!(r.refusal.code(), "guard_failed", "{r}");
    let r = refuse(&held, pause(false), at(500));
    assert!(r.to_string().contains("not paused"), "{r}");
    // Paused for 10 s: the 600 ms it had left count from the resume.
    let back = step(&held, resume(), at(10_400));
    assert!(back.task.paused.is_none());
    assert_eq!(back.task.deadlines.schedule_to_start, Some(at(11_000)));
    assert!(back
        .effects
        .iter()
        .any(|e| matches!(e, Effect::WakeAgents { .. })));
    assert!(back.effects.contains(&Effect::ArmDeadline {
        kind: DeadlineKind::ScheduleToStart,
        at: at(11_000)
    }));
    step(&back.task, assign(agent(), 1), at(10_500));
}

#[test]
fn a_retry_backing_off_waits_out_the_pause_then_its_remaining_backoff() {
    // Failed at 30, retry at 130.
    let held = paused(failed_retrying(), at(80));
    refuse(&held, Event::Retry, at(200));
    let back = step(&held, resume(), at(1_080));
    let State::Failed { retry_at, .. } = back.task.state else {
        panic!()
    };
    assert_eq!(retry_at, Some(at(1_130)));
    assert!(back.effects.contains(&Effect::ScheduleRetry {
        at: at(1_130),
        attempt: 2
    }));
}

#[test]
fn a_pause_lets_a_running_agent_finish_unless_now_takes_the_task_back() {
    let running = paused(executing(), at(25));
    assert_eq!(running.kind(), StateKind::Executing);
    assert!(
        running.deadlines.heartbeat.is_some(),
        "its deadlines still count"
    );
    let done = step(&running, succeeded(1, json!("ok")), at(30)).task;
    assert!(done.paused.is_none());

    // A failure while paused: the retry waits for the resume.
    let failed = step(&running, failed(1, "flaky", true), at(30)).task;
    assert_eq!(failed.next_timer().map(|(_, t)| t), Some(Timestamp::NEVER));

    let taken = step(&executing(), pause(true), at(25));
    assert_eq!(taken.task.kind(), StateKind::Pending);
    assert!(taken.task.is_paused());
    assert!(taken
        .effects
        .iter()
        .any(|e| matches!(e, Effect::RevokeLease { .. })));
    let r = refuse(&taken.task, heartbeat(1, None), at(26));
    assert_eq!(r.refusal.code(), "task_paused");
    assert!(r.to_string().contains("paused and taken back"), "{r}");
}

#[test]
fn a_skip_completes_with_the_operators_result_and_refuses_the_agents_late_report() {
    let t = step(&executing(), skip(json!({"by": "hand"})), at(25));
    let State::Completed { result, .. } = &t.task.state else {
        panic!()
    };
    assert_eq!(result, &json!({"by": "hand"}));
    assert!(t.effects.contains(&Effect::ReleaseDependents));
    let r = refuse(&t.task, succeeded(1, json!("late")), at(26));
    assert_eq!(r.refusal.code(), "task_skipped");
    assert!(
        r.to_string().contains("skipped") && r.to_string().contains("ops (done by hand)"),
        "{r}"
    );
    // Nothing completes twice.
    refuse(&t.task, skip(json!(2)), at(27));

    // A task failed for good: the skip revives what its failure cancelled.
    let t = step(&failed_final(), skip(json!(1)), at(40));
    assert!(t.effects.contains(&Effect::ReviveDependents));
    assert!(t.effects.contains(&Effect::ReleaseDependents));
}

#[test]
fn an_operators_failure_is_final_and_names_who_failed_it() {
    let t = step(&executing(), force_fail(), at(25));
    let State::Failed { error, retry_at } = &t.task.state else {
        panic!()
    };
    assert_eq!(retry_at, &None);
    assert_eq!(error.kind, "forced");
    assert_eq!(error.message, "failed by ops: wrong prompt");
    assert!(t.effects.contains(&Effect::FailDependents));
    let r = refuse(&t.task, failed(1, "flaky", true), at(26));
    assert_eq!(r.refusal.code(), "task_failed_by_operator");
    // An operator's retry reopens it as any final failure.
    step(&t.task, retry_requested(), at(30));
}

#[test]
fn a_rerun_reopens_with_fresh_attempts_and_a_new_input_only_on_its_root() {
    let done = completed();
    let t = step(
        &done,
        reopened("write", Some(json!({"topic": "go"}))),
        at(40),
    );
    assert_eq!(t.task.kind(), StateKind::Blocked);
    assert_eq!(t.task.spec.input, json!({"topic": "go"}));
    assert_eq!(t.task.attempt, 2);
    assert_eq!(t.task.attempts_allowed, 4);
    let r = refuse(&done, reopened("plan", Some(json!(1))), at(40));
    assert!(
        r.to_string().contains("only the task a rerun starts from"),
        "{r}"
    );
    // Downstream of the root: same input, waits again.
    let t = step(&executing(), reopened("plan", None), at(25));
    assert!(t
        .effects
        .iter()
        .any(|e| matches!(e, Effect::RevokeLease { .. })));
    assert_eq!(t.task.spec.input, json!({"topic": "rust"}));
    let r = refuse(&t.task, succeeded(1, json!("late")), at(26));
    assert_eq!(r.refusal.code(), "task_rerun");
}

#[test]
fn usage_reports_are_cumulative_per_lease_and_add_up_over_attempts() {
    let units = |pairs: &[(&str, f64)]| -> Usage {
        pairs
            .iter()
            .map(|(u, x)| (u.to_string(), Amount::of(*x).unwrap()))
            .collect()
    };
    let with = |mut ev: Event, u: Usage| {
        match &mut ev {
            Event::Heartbeat { usage, .. }
            | Event::ExecutionSucceeded { usage, .. }
            | Event::ExecutionFailed { usage, .. } => *usage = u,
            _ => unreachable!(),
        }
        ev
    };
    let t = step(
        &executing(),
        with(
            heartbeat(1, None),
            units(&[("tokens", 100.0), ("usd", 0.01)]),
        ),
        at(21),
    );
    assert_eq!(t.usage_added, units(&[("tokens", 100.0), ("usd", 0.01)]));
    // The same report again adds nothing; a later one adds what it went up by.
    let again = step(
        &t.task,
        with(heartbeat(1, None), units(&[("tokens", 100.0)])),
        at(22),
    );
    assert!(again.usage_added.is_empty());
    let failed = step(
        &again.task,
        with(
            failed(1, "flaky", true),
            units(&[("tokens", 250.0), ("usd", 0.01)]),
        ),
        at(23),
    );
    assert_eq!(failed.usage_added, units(&[("tokens", 150.0)]));
    // The retry's lease counts from zero; the task's total goes on.
    let retry_at = failed.task.next_timer().unwrap().1;
    let pending = step(&failed.task, Event::Retry, retry_at).task;
    let running = step(
        &step(&pending, assign(agent(), 2), retry_at).task,
        started(2),
        retry_at,
    )
    .task;
    assert!(running.lease_usage.is_empty());
    let done = step(
        &running,
        with(
            succeeded(2, json!(1)),
            units(&[("tokens", 40.0), ("usd", 0.005)]),
        ),
        retry_at,
    );
    assert_eq!(done.task.usage, units(&[("tokens", 290.0), ("usd", 0.015)]));
    // At most UNITS_MAX units a task, all reports together: one more is refused, naming the
    // field.
    let many: Usage = (0..baton_core::usage::UNITS_MAX)
        .map(|i| (format!("u{i}"), Amount::of(1.0).unwrap()))
        .collect();
    let full = step(&executing(), with(heartbeat(1, None), many.clone()), at(21)).task;
    let mut more = many;
    more.insert("one-more".into(), Amount::of(1.0).unwrap());
    let r = refuse(&full, with(heartbeat(1, None), more), at(22));
    assert!(
        matches!(&r.refusal, Refusal::InvalidSpec { field, .. } if field == "usage"),
        "{r:?}"
    );
    let replayed_usage = done.task.usage.clone();
    assert_eq!(replayed_usage.get("usd").unwrap().to_string(), "0.015");
}
