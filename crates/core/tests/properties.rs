//! Property tests: random event sequences, valid and invalid, against the lifecycle's
//! invariants; live application against replay of the recorded history.

mod common;

use baton_core::*;
use common::*;
use proptest::prelude::*;
use serde_json::json;

/// An event described relative to the task it will meet, so that random sequences reach deep
/// into the lifecycle instead of being refused at the first step.
#[derive(Clone, Debug)]
enum Op {
    Wait(u64),
    Assign {
        agent: u8,
        capable: bool,
    },
    Start {
        agent: u8,
        token: i8,
    },
    Heartbeat {
        agent: u8,
        token: i8,
        progress: bool,
    },
    Succeed {
        agent: u8,
        token: i8,
        result: u8,
    },
    Fail {
        agent: u8,
        token: i8,
        kind: u8,
        retryable: bool,
    },
    Release {
        agent: u8,
        token: i8,
    },
    Lost {
        agent: u8,
        token: i8,
    },
    Timeout(u8),
    Retry,
    RetryRequested,
    Cancel,
    DepsMet {
        all: bool,
    },
    UpstreamFailed {
        known: bool,
    },
    UpstreamRevived {
        known: bool,
    },
    DependencyAdded(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let agent = 0u8..3;
    let token = -2i8..=1;
    prop_oneof![
        4 => (0u64..3_000).prop_map(Op::Wait),
        3 => (agent.clone(), any::<bool>()).prop_map(|(agent, capable)| Op::Assign { agent, capable }),
        3 => (agent.clone(), token.clone()).prop_map(|(agent, token)| Op::Start { agent, token }),
        2 => (agent.clone(), token.clone(), any::<bool>())
            .prop_map(|(agent, token, progress)| Op::Heartbeat { agent, token, progress }),
        3 => (agent.clone(), token.clone(), 0u8..3)
            .prop_map(|(agent, token, result)| Op::Succeed { agent, token, result }),
        3 => (agent.clone(), token.clone(), 0u8..3, any::<bool>())
            .prop_map(|(agent, token, kind, retryable)| Op::Fail { agent, token, kind, retryable }),
        1 => (agent.clone(), token.clone()).prop_map(|(agent, token)| Op::Release { agent, token }),
        1 => (agent, token).prop_map(|(agent, token)| Op::Lost { agent, token }),
        2 => (0u8..4).prop_map(Op::Timeout),
        2 => Just(Op::Retry),
        1 => Just(Op::RetryRequested),
        1 => Just(Op::Cancel),
        2 => any::<bool>().prop_map(|all| Op::DepsMet { all }),
        1 => any::<bool>().prop_map(|known| Op::UpstreamFailed { known }),
        1 => any::<bool>().prop_map(|known| Op::UpstreamRevived { known }),
        1 => (0u8..3).prop_map(Op::DependencyAdded),
    ]
}

fn agent_no(n: u8) -> AgentId {
    match n {
        0 => agent(),
        1 => other_agent(),
        _ => AgentId(uuid::Uuid::from_u128(0xa3)),
    }
}

fn token_near(task: &Task, delta: i8) -> FencingToken {
    FencingToken(task.fencing_token.0.saturating_add_signed(i64::from(delta)))
}

/// The concrete event for `op` against `task`, or `None` for a pure wait.
fn event(op: &Op, task: &Task, n: u128) -> Option<Event> {
    let deadlines = DeadlineKind::ALL;
    Some(match *op {
        Op::Wait(_) => return None,
        Op::Assign { agent, capable } => Event::AgentAssigned {
            agent: agent_no(agent),
            capabilities: if capable {
                caps(&["write"])
            } else {
                caps(&["read"])
            },
            lease: lease(n),
        },
        Op::Start { agent, token } => Event::ExecutionStarted {
            by_claim: false,
            agent: agent_no(agent % 2),
            token: token_near(task, token),
        },
        Op::Heartbeat {
            agent,
            token,
            progress,
        } => Event::Heartbeat {
            usage: Default::default(),
            agent: agent_no(agent % 2),
            token: token_near(task, token),
            progress: progress.then(|| json!({"step": n as u64})),
        },
        Op::Succeed {
            agent,
            token,
            result,
        } => Event::ExecutionSucceeded {
            usage: Default::default(),
            agent: agent_no(agent % 2),
            token: token_near(task, token),
            result: match result {
                0 => None,
                1 => Some(serde_json::Value::Null),
                _ => Some(json!({"answer": 42})),
            },
        },
        Op::Fail {
            agent,
            token,
            kind,
            retryable,
        } => Event::ExecutionFailed {
            usage: Default::default(),
            agent: agent_no(agent % 2),
            token: token_near(task, token),
            error: ErrorReport {
                kind: ["flaky", "bad_input", "oom"][kind as usize].into(),
                message: "it broke".into(),
                retryable,
            },
        },
        Op::Release { agent, token } => Event::AssignmentReleased {
            agent: agent_no(agent % 2),
            token: token_near(task, token),
        },
        Op::Lost { agent, token } => Event::AgentLost {
            agent: agent_no(agent % 2),
            token: token_near(task, token),
        },
        Op::Timeout(k) => Event::TimeoutExpired {
            deadline: deadlines[k as usize],
        },
        Op::Retry => Event::Retry,
        Op::RetryRequested => retry_requested(),
        Op::Cancel => cancel(),
        Op::DepsMet { all } => {
            let mut completed = task.dependencies.clone();
            if !all {
                completed.pop();
            }
            Event::DependenciesMet {
                completed,
                input: None,
                unresolved: None,
                results: None,
            }
        }
        Op::UpstreamFailed { known } => Event::UpstreamFailed {
            upstream: if known {
                "research".into()
            } else {
                "stranger".into()
            },
        },
        Op::UpstreamRevived { known } => Event::UpstreamRevived {
            upstream: if known {
                "research".into()
            } else {
                "stranger".into()
            },
            dependencies: Vec::new(),
        },
        Op::DependencyAdded(k) => Event::DependencyAdded {
            dependency: ["sub-1", "sub-2", "plan"][k as usize].into(),
        },
    })
}

fn start_task(blocked: bool, s2s: bool, requeue: bool) -> (Submission, Transition) {
    let mut s = spec("write");
    if requeue {
        s.on_agent_lost = AgentLostPolicy::Requeue;
    }
    if s2s {
        s.timeouts.schedule_to_start_ms = Some(700);
    }
    let completed: &[&str] = if blocked {
        s.depends_on = vec!["plan".into(), "research".into()];
        &["plan"]
    } else {
        &[]
    };
    let sub = submission(s, completed);
    let t = submit(&sub, T0).unwrap();
    (sub, t)
}

/// The deadlines each state may have armed, and no others.
fn deadlines_fit_state(task: &Task) -> bool {
    let d = task.deadlines;
    match task.kind() {
        StateKind::Pending => {
            d.start.is_none() && d.start_to_close.is_none() && d.heartbeat.is_none()
        }
        StateKind::Assigned => {
            d.start.is_some() && d.start_to_close.is_none() && d.heartbeat.is_none()
        }
        StateKind::Executing => {
            d.schedule_to_start.is_none()
                && d.start.is_none()
                && d.start_to_close.is_some()
                && d.heartbeat.is_some()
        }
        _ => d == Deadlines::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_keep_every_invariant_and_replay_to_the_same_task(
        blocked in any::<bool>(),
        s2s in any::<bool>(),
        requeue in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let (sub, first) = start_task(blocked, s2s, requeue);
        let mut now = T0;
        let mut task = first.task;
        let mut history = vec![HistoryEntry { seq: 1, at: T0, event: Event::Submitted(sub) }];
        let mut completed_seen = false;

        for (i, op) in ops.iter().enumerate() {
            if let Op::Wait(ms) = op {
                now = now.plus_ms(*ms);
                continue;
            }
            let ev = event(op, &task, i as u128).unwrap();
            match apply(&task, &ev, now) {
                Err(rejection) => {
                    prop_assert_eq!(rejection.task, task.id);
                    prop_assert_eq!(rejection.state, Some(task.kind()));
                    prop_assert_eq!(rejection.event, ev.kind());
                    prop_assert!(!rejection.to_string().is_empty());
                }
                Ok(t) => {
                    let rule = t.rule;
                    prop_assert!(DEFAULT_RULES.iter().any(|r| std::ptr::eq(r, rule)));
                    prop_assert_eq!(rule.from, Some(task.kind()));
                    prop_assert_eq!(rule.event, ev.kind());
                    prop_assert_eq!(rule.to, t.task.kind());
                    prop_assert_eq!(t.task.version, task.version + 1);
                    prop_assert!(!completed_seen, "Completed accepted an event");
                    prop_assert!(t.task.fencing_token >= task.fencing_token, "fencing tokens only grow");
                    if let Some(lease) = t.task.state.lease() {
                        prop_assert_eq!(lease.token, t.task.fencing_token);
                    }
                    if t.task.deadlines != task.deadlines {
                        prop_assert!(rule.has_effect(EffectKind::Timers), "deadlines changed without Timers: {}", rule);
                    }
                    prop_assert!(deadlines_fit_state(&t.task), "{:?} in {:?}", t.task.deadlines, t.task.state);
                    prop_assert!(t.task.attempt <= t.task.attempts_allowed);
                    if t.task.kind() == StateKind::Completed {
                        let lease = task.state.lease().expect("completed from a leased state");
                        match &ev {
                            Event::ExecutionSucceeded { agent, token, result: Some(r), .. } => {
                                prop_assert!(!r.is_null());
                                prop_assert_eq!(*token, lease.token);
                                prop_assert_eq!(*agent, lease.agent);
                            }
                            other => prop_assert!(false, "completed by {:?}", other),
                        }
                        completed_seen = true;
                    }
                    history.push(HistoryEntry { seq: t.task.version, at: now, event: ev });
                    task = t.task;
                }
            }
        }

        prop_assert_eq!(&replay(&history).unwrap(), &task);
        let stored = serde_json::to_string(&history).unwrap();
        let loaded: Vec<HistoryEntry> = serde_json::from_str(&stored).unwrap();
        prop_assert_eq!(&replay(&loaded).unwrap(), &task);
    }
}

#[test]
fn replay_reports_the_first_entry_that_breaks_the_lifecycle() {
    let sub = submission(spec("write"), &[]);
    let good = vec![
        HistoryEntry {
            seq: 1,
            at: T0,
            event: Event::Submitted(sub.clone()),
        },
        HistoryEntry {
            seq: 2,
            at: at(10),
            event: assign(agent(), 1),
        },
        HistoryEntry {
            seq: 3,
            at: at(20),
            event: started(1),
        },
        HistoryEntry {
            seq: 4,
            at: at(30),
            event: succeeded(1, json!({"text": "done"})),
        },
    ];
    assert_eq!(replay(&good).unwrap(), completed());

    let mut skipped = good.clone();
    skipped.remove(2);
    skipped[2].seq = 3;
    let err = replay(&skipped).unwrap_err();
    let ReplayError::Rejected { seq, rejection } = &err else {
        panic!("{err}")
    };
    assert_eq!(*seq, 3);
    assert_eq!(rejection.state, Some(StateKind::Assigned));
    assert!(
        err.to_string().starts_with("entry 3 breaks the lifecycle"),
        "{err}"
    );

    let mut gap = good.clone();
    gap[3].seq = 9;
    assert_eq!(
        replay(&gap).unwrap_err(),
        ReplayError::OutOfOrder {
            seq: 9,
            expected: 4
        }
    );
    assert_eq!(
        replay(&good[1..]).unwrap_err(),
        ReplayError::NotSubmitted {
            seq: 2,
            event: EventKind::AgentAssigned
        }
    );
    assert_eq!(replay(&[]).unwrap_err(), ReplayError::Empty);
}
