//! Operators in control: pause and resume, skip, fail, rerun from a task, and the audit log,
//! through the engine on a real SQLite store with a manual clock, races included.

mod common;

use baton_core::{State, StateKind, Timestamp};
use baton_engine::{EngineError, Operator, SignalInput, WaitReason};
use baton_store::AuditFilter;
use common::*;
use serde_json::json;

fn op(reason: &str) -> Operator {
    Operator::new("alice", reason).expect("a reason")
}

fn code(e: &EngineError) -> String {
    match e {
        EngineError::Rejected(r) => r.code().to_owned(),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_control_needs_a_reason() {
    let e = Operator::new("alice", "  ").unwrap_err();
    assert!(
        matches!(&e, EngineError::Invalid { field, .. } if field == "reason"),
        "{e:?}"
    );
    assert!(Operator::new("alice", "x".repeat(1025)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_task_is_not_claimed_until_resumed_and_its_deadline_keeps_the_time_it_had_left() {
    let h = Harness::new();
    let mut s = spec("a", &[]);
    s.timeouts.schedule_to_start_ms = Some(10_000);
    let wf = h.submit(vec![s]).await;
    let a = wf.id("a");
    let agent = h.agent("w", &["work"], 1).await;
    h.advance(4_000);
    let paused = h
        .engine
        .pause_task(a, op("budget review"), false)
        .await
        .unwrap();
    assert!(paused.is_paused());
    assert!(
        h.claim(agent, 1).await.is_empty(),
        "a paused task is not handed out"
    );
    let view = h.engine.task_detail(a, 10).await.unwrap();
    assert!(
        matches!(&view.waiting, Some(WaitReason::Paused { by, why, .. }) if by == "alice" && why == "budget review"),
        "{:?}",
        view.waiting
    );
    // Far past its deadline: nothing fires while paused.
    h.advance(60_000);
    h.tick().await;
    assert_eq!(h.state(a).await, StateKind::Pending);
    let err = h
        .engine
        .pause_task(a, op("again"), false)
        .await
        .unwrap_err();
    assert_eq!(code(&err), "guard_failed");

    let resumed = h.engine.resume_task(a, op("approved")).await.unwrap();
    assert_eq!(
        resumed.deadlines.schedule_to_start,
        Some(Timestamp(h.now().0 + 6_000)),
        "6 s were left of 10"
    );
    h.run(agent, a).await;
    assert_eq!(h.state(a).await, StateKind::Completed);
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_with_now_takes_the_task_from_its_agent_whose_reports_are_refused_naming_it() {
    let h = Harness::new();
    let wf = h.submit(vec![spec("a", &[])]).await;
    let a = wf.id("a");
    let agent = h.agent("w", &["work"], 1).await;
    let claimed = h.claim_only(agent, a).await;
    let running = h.start(&claimed).await;
    let taken = h
        .engine
        .pause_task(a, op("stop spending"), true)
        .await
        .unwrap();
    assert_eq!(taken.kind(), StateKind::Pending);
    let err = h.report(a, succeeded(&running)).await.unwrap_err();
    assert_eq!(code(&err), "task_paused");
    assert!(err.to_string().contains("alice"), "{err}");
    h.engine.resume_task(a, op("go on")).await.unwrap();
    h.run(agent, a).await;
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_racing_a_pause_lands_once_whichever_commits_first() {
    let h = Harness::new();
    let wf = h.submit(vec![spec("a", &[]), spec("b", &["a"])]).await;
    let a = wf.id("a");
    let agent = h.agent("w", &["work"], 1).await;
    let running = h.start(&h.claim_only(agent, a).await).await;
    let (done, paused) = tokio::join!(
        h.report(a, succeeded(&running)),
        h.engine.pause_task(a, op("race"), true)
    );
    let task = h.task(a).await;
    match (done.is_ok(), paused.is_ok()) {
        (true, false) => assert_eq!(task.kind(), StateKind::Completed),
        (false, true) => {
            assert_eq!(task.kind(), StateKind::Pending);
            assert!(task.is_paused());
        }
        // The pause (not `now`) cannot lose to a success that came first: the success would
        // have ended the task; both succeeding means the pause came first without taking it.
        other => panic!("both or neither applied: {other:?}"),
    }
    let completions = h
        .events(a)
        .await
        .iter()
        .filter(|e| e.as_str() == "execution_succeeded")
        .count();
    assert!(completions <= 1);
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skip_completes_the_task_with_the_operators_result_and_its_dependents_see_it() {
    let h = Harness::new();
    let mut b = spec("b", &["a"]);
    b.input = json!({"from_a": {"$from": "a"}});
    let wf = h.submit(vec![spec("a", &[]), b]).await;
    let (a, b) = (wf.id("a"), wf.id("b"));
    let agent = h.agent("w", &["work"], 1).await;
    let held = h.start(&h.claim_only(agent, a).await).await;
    let skipped = h
        .engine
        .skip_task(a, op("done by hand"), json!({"answer": 42}))
        .await
        .unwrap();
    assert!(
        matches!(&skipped.state, State::Completed { result, .. } if *result == json!({"answer": 42}))
    );
    let err = h.report(a, succeeded(&held)).await.unwrap_err();
    assert_eq!(code(&err), "task_skipped");
    h.tick().await;
    let claimed = h.claim_only(agent, b).await;
    assert_eq!(claimed.input(), Some(&json!({"from_a": {"answer": 42}})));
    let err = h
        .engine
        .skip_task(a, op("twice"), json!(1))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "not_accepted", "nothing completes twice");
    let err = h
        .engine
        .skip_task(b, op("null"), json!(null))
        .await
        .unwrap_err();
    assert!(matches!(&err, EngineError::Invalid { field, .. } if field == "result"));
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_failure_is_final_and_cancels_the_dependents() {
    let h = Harness::new();
    let wf = h.submit(vec![spec("a", &[]), spec("b", &["a"])]).await;
    let (a, b) = (wf.id("a"), wf.id("b"));
    let failed = h
        .engine
        .fail_task(a, op("wrong prompt"), None)
        .await
        .unwrap();
    let State::Failed { error, retry_at } = &failed.state else {
        panic!("{:?}", failed.state)
    };
    assert_eq!((error.kind.as_str(), *retry_at), ("forced", None));
    h.tick().await;
    assert_eq!(h.state(b).await, StateKind::Cancelled);
    // An operator's retry brings both back.
    h.engine.retry_task(a, "alice".into()).await.unwrap();
    h.tick().await;
    assert_eq!(h.state(b).await, StateKind::Blocked);
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_reopens_the_task_and_its_downstream_with_a_new_input_and_keeps_upstream() {
    let h = Harness::new();
    let mut write = spec("write", &["plan"]);
    write.input = json!({"plan": {"$from": "plan"}, "tone": "dry"});
    let wf = h
        .submit(vec![
            spec("plan", &[]),
            write,
            spec("review", &["write"]),
            spec("publish", &["review"]),
        ])
        .await;
    let agent = h.agent("w", &["work"], 4).await;
    for k in ["plan", "write", "review", "publish"] {
        h.tick().await;
        h.run(agent, wf.id(k)).await;
    }
    let new_input = json!({"plan": {"$from": "plan"}, "tone": "warm"});
    let dry = h
        .engine
        .rerun(wf.id("write"), op("tone"), Some(new_input.clone()), true)
        .await
        .unwrap();
    assert!(!dry.applied);
    let keys: Vec<&str> = dry.tasks.iter().map(|t| t.key.0.as_str()).collect();
    assert_eq!(keys, ["write", "review", "publish"]);
    assert_eq!(
        h.state(wf.id("write")).await,
        StateKind::Completed,
        "a dry run changes nothing"
    );

    let bad = h
        .engine
        .rerun(
            wf.id("write"),
            op("tone"),
            Some(json!({"x": {"$from": "review"}})),
            false,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&bad, EngineError::Invalid { field, .. } if field.starts_with("input.x")),
        "{bad:?}"
    );

    let plan = h
        .engine
        .rerun(wf.id("write"), op("tone"), Some(new_input), false)
        .await
        .unwrap();
    assert!(plan.applied);
    assert_eq!(
        h.state(wf.id("plan")).await,
        StateKind::Completed,
        "upstream keeps its result"
    );
    for k in ["write", "review", "publish"] {
        assert_eq!(h.state(wf.id(k)).await, StateKind::Blocked, "{k}");
    }
    h.tick().await;
    let claimed = h.claim_only(agent, wf.id("write")).await;
    assert_eq!(claimed.input().unwrap()["tone"], json!("warm"));
    assert_eq!(claimed.attempt, 2);
    let done = h.succeed(&h.start(&claimed).await).await;
    assert_eq!(done.kind(), StateKind::Completed);
    h.tick().await;
    h.run(agent, wf.id("review")).await;
    h.tick().await;
    h.run(agent, wf.id("publish")).await;
    let events = h.events(wf.id("review")).await;
    assert_eq!(
        events.iter().filter(|e| e.as_str() == "reopened").count(),
        1,
        "history is kept, with a reopened entry: {events:?}"
    );
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_takes_back_downstream_tasks_still_executing() {
    let h = Harness::new();
    let wf = h.submit(vec![spec("a", &[]), spec("b", &["a"])]).await;
    let agent = h.agent("w", &["work"], 2).await;
    h.run(agent, wf.id("a")).await;
    h.tick().await;
    let running = h.start(&h.claim_only(agent, wf.id("b")).await).await;
    h.engine
        .rerun(wf.id("a"), op("redo"), None, false)
        .await
        .unwrap();
    let err = h.report(wf.id("b"), succeeded(&running)).await.unwrap_err();
    assert_eq!(code(&err), "task_rerun");
    h.tick().await;
    h.run(agent, wf.id("a")).await;
    h.tick().await;
    h.run(agent, wf.id("b")).await;
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_workflow_holds_its_tasks_mid_retry_and_the_ones_created_later() {
    let h = Harness::new();
    let mut a = spec("a", &[]);
    a.retry = retry(3, 1_000);
    let wf = h.submit(vec![a, spec("b", &[]), spec("c", &["a"])]).await;
    let agent = h.agent("w", &["work"], 4).await;
    let claimed = h.claim_only(agent, wf.id("a")).await;
    h.fail(&h.start(&claimed).await, "flaky", true).await;
    let n = h
        .engine
        .pause_workflow(wf.id, op("budget"), false)
        .await
        .unwrap();
    assert_eq!(n, 3);
    h.advance(10_000);
    h.tick().await;
    assert!(h.claim(agent, 4).await.is_empty());
    assert!(matches!(
        h.task(wf.id("a")).await.state,
        State::Failed {
            retry_at: Some(_),
            ..
        }
    ));
    let view = h.engine.workflow(wf.id).await.unwrap();
    assert!(view.paused.is_some());
    let n = h.engine.resume_workflow(wf.id, op("ok")).await.unwrap();
    assert_eq!(n, 3);
    h.advance(1_000);
    h.tick().await;
    assert_eq!(h.claim(agent, 4).await.len(), 2, "a (retried) and b");
    assert!(h.engine.workflow(wf.id).await.unwrap().paused.is_none());
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_tasks_added_while_the_workflow_is_paused_start_paused() {
    let h = Harness::new();
    let wf = h.submit(vec![spec("plan", &[])]).await;
    let agent = h.agent("w", &["work"], 4).await;
    let running = h.start(&h.claim_only(agent, wf.id("plan")).await).await;
    h.engine
        .pause_workflow(wf.id, op("hold"), false)
        .await
        .unwrap();
    let (agent_id, token) = lease(&running);
    let added = h
        .engine
        .add_subtasks(wf.id("plan"), agent_id, token, vec![spec("part", &[])])
        .await
        .unwrap();
    let part = h.task(added[0].1).await;
    assert!(part.is_paused(), "created in a paused workflow");
    h.succeed(&running).await;
    assert!(h.claim(agent, 4).await.is_empty());
    h.engine.resume_workflow(wf.id, op("go")).await.unwrap();
    assert_eq!(h.claim(agent, 4).await.len(), 1);
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_sent_to_a_paused_task_is_kept_and_delivered_on_resume() {
    let h = Harness::new();
    let approve = baton_core::TaskSpec {
        wait_for: Some(baton_core::WaitFor {
            signal: "approve".into(),
            timeout_ms: None,
        }),
        ..baton_core::TaskSpec::new("approve")
    };
    let wf = h.submit(vec![approve]).await;
    let id = wf.id("approve");
    h.engine.pause_task(id, op("not yet"), false).await.unwrap();
    let receipt = h
        .engine
        .signal(
            wf.id,
            "approve",
            SignalInput::Data(json!({"ok": true})),
            "bob",
            None,
        )
        .await
        .unwrap();
    assert!(receipt.delivered_to.is_empty(), "kept while paused");
    assert_eq!(h.state(id).await, StateKind::Pending);
    h.engine.resume_task(id, op("now")).await.unwrap();
    h.tick().await;
    let done = h.task(id).await;
    assert!(
        matches!(&done.state, State::Completed { result, .. } if *result == json!({"ok": true}))
    );
    h.assert_replays(wf.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_every_action_with_its_actor_and_reason_newest_first() {
    let h = Harness::new();
    let wf = h.submit(vec![spec("a", &[]), spec("b", &[])]).await;
    h.engine
        .pause_task(wf.id("a"), op("one"), false)
        .await
        .unwrap();
    h.engine.resume_task(wf.id("a"), op("two")).await.unwrap();
    h.engine
        .cancel_task(wf.id("b"), "bob".into(), "three".into())
        .await
        .unwrap();
    let all = h
        .engine
        .audit(AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let seen: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("cancel", "bob", "three"),
            ("resume", "alice", "two"),
            ("pause", "alice", "one")
        ]
    );
    assert_eq!(all[0].task, Some(wf.id("b")));
    assert_eq!(all[0].workflow, Some(wf.id));
    let by_alice = h
        .engine
        .audit(AuditFilter {
            actor: Some("alice".into()),
            before: Some(all[1].id),
            limit: 10,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_alice.len(), 1);
    assert_eq!(by_alice[0].action, "pause");
}

/// Completes the leased task with `result`.
async fn succeed_with(h: &Harness, task: &baton_core::Task, result: serde_json::Value) {
    let (agent, token) = lease(task);
    let event = baton_core::Event::ExecutionSucceeded {
        usage: Default::default(),
        agent,
        token,
        result: Some(result),
    };
    h.report(task.id, event).await.expect("succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_through_a_fan_out_expands_it_anew_and_one_from_an_item_gathers_the_rest_again() {
    let h = Harness::new();
    let mut work = spec("work", &["plan"]);
    work.for_each = Some(json!({"$from": "plan", "pointer": "/items"}));
    let mut sum = spec("sum", &["work"]);
    sum.input = json!({"all": {"$from": "work"}});
    let wf = h.submit(vec![spec("plan", &[]), work, sum]).await;
    let agent = h.agent("w", &["work"], 4).await;
    let plan = h.start(&h.claim_only(agent, wf.id("plan")).await).await;
    succeed_with(&h, &plan, json!({"items": ["a", "b", "c"]})).await;
    h.tick().await;
    let (h, wf_id) = (&h, wf.id);
    let item = move |i: usize| async move { h.by_key(wf_id, &format!("work[{i}]")).await.unwrap() };
    for i in 0..2 {
        h.run(agent, item(i).await.id).await;
    }
    let running = h.start(&h.claim_only(agent, item(2).await.id).await).await;

    let dry = h
        .engine
        .rerun(wf.id("plan"), op("new plan"), None, true)
        .await
        .unwrap();
    let keys =
        |ts: &[baton_engine::RerunTask]| ts.iter().map(|t| t.key.0.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&dry.tasks), ["plan", "work", "sum"]);
    assert_eq!(keys(&dry.superseded), ["work[0]", "work[1]", "work[2]"]);
    assert_eq!(h.state(item(0).await.id).await, StateKind::Completed);

    h.engine
        .rerun(wf.id("plan"), op("new plan"), None, false)
        .await
        .unwrap();
    let err = h.report(running.id, succeeded(&running)).await.unwrap_err();
    assert_eq!(code(&err), "task_superseded", "{err}");
    let audit = h
        .engine
        .audit(AuditFilter {
            limit: 1,
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let detail: serde_json::Value = serde_json::from_str(&audit[0].detail).unwrap();
    assert_eq!(
        detail["superseded"],
        json!(["work[0]", "work[1]", "work[2]"])
    );
    for i in 0..3 {
        let t = item(i).await;
        assert!(
            matches!(
                &t.state,
                State::Cancelled {
                    reason: baton_core::CancelReason::Superseded { parent }
                } if parent.0 == "work"
            ),
            "work[{i}]: {:?}",
            t.state
        );
    }

    // The new plan has two items: work[0] and work[1] are reopened with them, work[2] stays
    // superseded, and the workflow completes all the same.
    h.tick().await;
    let plan = h.start(&h.claim_only(agent, wf.id("plan")).await).await;
    succeed_with(h, &plan, json!({"items": ["x", "y"]})).await;
    h.tick().await;
    for (i, want) in ["x", "y"].into_iter().enumerate() {
        let claimed = h.claim_only(agent, item(i).await.id).await;
        assert_eq!(claimed.input().unwrap()["item"], json!(want));
        succeed_with(h, &h.start(&claimed).await, json!(want)).await;
    }
    h.tick().await;
    let work = h.task(wf.id("work")).await;
    assert!(
        matches!(&work.state, State::Completed { result, .. } if *result == json!(["x", "y"])),
        "{:?}",
        work.state
    );
    h.run(agent, wf.id("sum")).await;
    assert_eq!(h.state(item(2).await.id).await, StateKind::Cancelled);
    let events = h.events(item(0).await.id).await;
    let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    assert!(
        names.ends_with(&[
            "superseded",
            "reopened",
            "dependencies_met",
            "agent_assigned",
            "execution_started",
            "execution_succeeded"
        ]),
        "{names:?}"
    );
    let record = h.engine.workflow(wf.id).await.unwrap();
    let counts = h.counts(Some(wf.id)).await;
    let outcome = h.engine.workflow_outcome(&record, &counts).await.unwrap();
    assert_eq!(outcome.status.as_str(), "completed");

    // A rerun from one item keeps the fan-out's other items: it gathers them again.
    let plan = h
        .engine
        .rerun(item(1).await.id, op("redo y"), None, false)
        .await
        .unwrap();
    assert_eq!(keys(&plan.tasks), ["work[1]", "work", "sum"]);
    assert!(plan.superseded.is_empty());
    assert_eq!(h.state(item(0).await.id).await, StateKind::Completed);
    h.tick().await;
    let claimed = h.claim_only(agent, item(1).await.id).await;
    succeed_with(h, &h.start(&claimed).await, json!("y2")).await;
    h.tick().await;
    let work = h.task(wf.id("work")).await;
    assert!(
        matches!(&work.state, State::Completed { result, .. } if *result == json!(["x", "y2"])),
        "{:?}",
        work.state
    );
    h.run(agent, wf.id("sum")).await;
    h.assert_replays(wf.id).await;
    let report = baton_engine::check::check_store(h.engine.store(), |_| {})
        .await
        .unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_of_a_task_that_decomposed_supersedes_its_sub_tasks_which_it_may_add_again() {
    let h = Harness::new();
    let wf = h
        .submit(vec![spec("plan", &[]), spec("publish", &["plan"])])
        .await;
    let agent = h.agent("w", &["work"], 4).await;
    // plan adds part-1 and part-2 (which needs part-1); publish waits for both.
    // part-1 declares a compensation, which stays its own when it is added again.
    let decompose = |h: &'static str| {
        let mut one = spec("part-1", &[]);
        one.input = json!({"draft": h});
        one.compensation = Some(baton_core::CompensationSpec {
            key: key("undo-part-1"),
            capabilities: caps(&["work"]),
            input: json!({}),
            retry: None,
            timeouts: None,
            priority: None,
        });
        vec![one, spec("part-2", &["part-1"])]
    };
    let running = h.start(&h.claim_only(agent, wf.id("plan")).await).await;
    let (agent_id, token) = lease(&running);
    let added = h
        .engine
        .add_subtasks(wf.id("plan"), agent_id, token, decompose("first"))
        .await
        .unwrap();
    let (part1, part2) = (added[0].1, added[1].1);
    h.succeed(&running).await;
    h.tick().await;
    h.run(agent, part1).await;
    h.tick().await;
    let part2_running = h.start(&h.claim_only(agent, part2).await).await;

    let plan = h
        .engine
        .rerun(wf.id("plan"), op("better plan"), None, false)
        .await
        .unwrap();
    let keys =
        |ts: &[baton_engine::RerunTask]| ts.iter().map(|t| t.key.0.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&plan.tasks), ["plan", "publish"]);
    assert_eq!(keys(&plan.superseded), ["part-1", "part-2"]);
    let err = h
        .report(part2, succeeded(&part2_running))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "task_superseded");
    let publish = h.task(wf.id("publish")).await;
    assert_eq!(publish.dependencies, [key("plan")], "the sub-tasks retired");

    // The new run adds part-1 again with a new input (reopened) and a new part-3; part-2 is
    // left superseded. Changing part-1's spec beyond its input is refused.
    h.tick().await;
    let running = h.start(&h.claim_only(agent, wf.id("plan")).await).await;
    let (agent_id, token) = lease(&running);
    let mut changed = decompose("second");
    changed[0].priority = 9;
    let err = h
        .engine
        .add_subtasks(wf.id("plan"), agent_id, token, changed)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Invalid { field, .. } if field == "tasks[0]"),
        "{err:?}"
    );
    let mut again = decompose("second");
    again[1] = spec("part-3", &["part-1"]);
    let added = h
        .engine
        .add_subtasks(wf.id("plan"), agent_id, token, again)
        .await
        .unwrap();
    assert_eq!(added[0].1, part1, "part-1 is the same task, reopened");
    let part3 = added[1].1;
    h.succeed(&running).await;
    h.tick().await;
    let claimed = h.claim_only(agent, part1).await;
    assert_eq!(claimed.input().unwrap()["draft"], json!("second"));
    h.succeed(&h.start(&claimed).await).await;
    h.tick().await;
    h.run(agent, part3).await;
    h.tick().await;
    h.run(agent, wf.id("publish")).await;
    assert_eq!(h.state(part2).await, StateKind::Cancelled);
    let record = h.engine.workflow(wf.id).await.unwrap();
    let counts = h.counts(Some(wf.id)).await;
    let outcome = h.engine.workflow_outcome(&record, &counts).await.unwrap();
    assert_eq!(outcome.status.as_str(), "completed");
    h.assert_replays(wf.id).await;
    let report = baton_engine::check::check_store(h.engine.store(), |_| {})
        .await
        .unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}
