//! One conformance suite, run against every backend: what the engine may rely on from any
//! store.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use baton_core::*;
use baton_store::*;
use common::*;
use serde_json::json;
use uuid::Uuid;

mod cases {
    use super::*;

    pub async fn submission_writes_tasks_edges_history_and_counts<S: Store>(s: &S) {
        let flow = diamond();
        let out = s.submit(flow.batch.clone()).await.unwrap();
        assert_eq!(out, SubmitOutcome::Created { workflow: flow.id });

        let a = s.task(flow.id("a")).await.unwrap().unwrap();
        assert_eq!(a.kind(), StateKind::Pending);
        assert_eq!(a, flow.batch.tasks[0].task, "stored field for field");
        let d = s.task_by_key(flow.id, "d".into()).await.unwrap().unwrap();
        assert_eq!(d.kind(), StateKind::Blocked);
        assert_eq!(d.id, flow.id("d"));
        assert!(s.task(TaskId(Uuid::now_v7())).await.unwrap().is_none());

        let counts = s.counts(Some(flow.id)).await.unwrap();
        assert_eq!(counts.get(StateKind::Pending), 1);
        assert_eq!(counts.get(StateKind::Blocked), 3);
        assert_eq!(s.counts(None).await.unwrap(), counts);

        let deps = s.dependencies(flow.id("d")).await.unwrap();
        let keys: Vec<&str> = deps.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["b", "c"]);
        assert!(deps.iter().all(|d| d.state == StateKind::Blocked));
        assert_eq!(
            sorted(s.dependents(flow.id("a")).await.unwrap()),
            sorted(vec![flow.id("b"), flow.id("c")])
        );

        let history = s.history(flow.id("a"), 0, 10).await.unwrap();
        assert_eq!(history, vec![flow.batch.tasks[0].entry.clone()]);
        let wf = s.workflow(flow.id).await.unwrap().unwrap();
        assert_eq!(wf.name, "test");
        assert!(s.released_blocked(10).await.unwrap().is_empty());
    }

    pub async fn resubmission_with_the_same_key_returns_the_first_and_writes_nothing<S: Store>(
        s: &S,
    ) {
        let first = workflow(&[def("x", &[]), def("y", &["x"])], Some("order-42"));
        s.submit(first.batch.clone()).await.unwrap();
        let before = s.counts(None).await.unwrap();

        let again = workflow(&[def("x", &[]), def("y", &["x"])], Some("order-42"));
        let out = s.submit(again.batch).await.unwrap();
        let SubmitOutcome::Existing {
            workflow: wf,
            tasks,
        } = out
        else {
            panic!("{out:?}")
        };
        assert_eq!(wf, first.id);
        let mut expected: Vec<(TaskKey, TaskId)> =
            vec![("x".into(), first.id("x")), ("y".into(), first.id("y"))];
        expected.sort_by_key(|(_, id)| *id);
        assert_eq!(tasks, expected);
        assert_eq!(s.counts(None).await.unwrap(), before);

        let mut other = workflow(&[def("z", &[])], Some("order-42"));
        if let WorkflowRef::New(wf) = &mut other.batch.workflow {
            wf.request_hash = "another request".into();
        }
        let err = s.submit(other.batch).await.unwrap_err();
        assert!(
            matches!(err, StoreError::IdempotencyMismatch { .. }),
            "{err}"
        );
        assert_eq!(s.counts(None).await.unwrap(), before);
    }

    pub async fn a_submission_that_fails_writes_nothing<S: Store>(s: &S) {
        let mut flow = workflow(&[def("p", &[]), def("q", &[])], Some("dup"));
        let mut copy = flow.batch.tasks[0].clone();
        copy.task.id = TaskId(Uuid::now_v7());
        copy.entry.event = match copy.entry.event {
            Event::Submitted(mut sub) => {
                sub.task = copy.task.id;
                Event::Submitted(sub)
            }
            other => other,
        };
        flow.batch.tasks.push(copy);
        let err = s.submit(flow.batch.clone()).await.unwrap_err();
        assert!(matches!(err, StoreError::DuplicateKey { .. }), "{err}");
        assert_eq!(s.counts(None).await.unwrap(), StateCounts::default());
        assert!(s.workflow(flow.id).await.unwrap().is_none());
        assert!(s.task(flow.id("p")).await.unwrap().is_none());

        let err = s
            .submit(SubmitBatch {
                workflow: WorkflowRef::Existing {
                    id: WorkflowId(Uuid::now_v7()),
                    paused: false,
                },
                tasks: Vec::new(),
                edges: Vec::new(),
                transitions: Vec::new(),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::WorkflowNotFound(_)), "{err}");
    }

    pub async fn a_stale_version_is_a_typed_conflict_not_an_overwrite<S: Store>(s: &S) {
        let flow = diamond();
        s.submit(flow.batch.clone()).await.unwrap();
        let a = s.task(flow.id("a")).await.unwrap().unwrap();
        let cancel = record(
            &a,
            Event::CancelRequested {
                requested_by: "ops".into(),
                reason: "test".into(),
            },
            at(5),
        );
        let claim = record(
            &a,
            Event::AgentAssigned {
                agent: agent(1),
                capabilities: caps(&["work"]),
                lease: LeaseId(Uuid::now_v7()),
            },
            at(5),
        );
        s.apply(cancel.clone()).await.unwrap();
        let err = s.apply(claim).await.unwrap_err();
        let StoreError::Conflict {
            task,
            expected,
            found,
        } = err
        else {
            panic!("{err}")
        };
        assert_eq!((task, expected, found), (a.id, 1, Some(2)));
        let stored = s.task(a.id).await.unwrap().unwrap();
        assert_eq!(stored, cancel.task);
        assert_eq!(s.history(a.id, 0, 10).await.unwrap().len(), 2);

        let mut ghost = cancel;
        ghost.task.id = TaskId(Uuid::now_v7());
        let err = s.apply(ghost).await.unwrap_err();
        assert!(matches!(err, StoreError::TaskNotFound(_)), "{err}");
    }

    pub async fn of_many_concurrent_writers_of_one_version_exactly_one_wins<S: Store + 'static>(
        s: Arc<S>,
    ) {
        let flow = workflow(&[def("hot", &[])], None);
        s.submit(flow.batch.clone()).await.unwrap();
        let task = s.task(flow.id("hot")).await.unwrap().unwrap();
        let mut handles = Vec::new();
        for n in 0..16u128 {
            let s = Arc::clone(&s);
            let rec = record(
                &task,
                Event::AgentAssigned {
                    agent: agent(n),
                    capabilities: caps(&["work"]),
                    lease: LeaseId(Uuid::now_v7()),
                },
                at(1),
            );
            handles.push(tokio::spawn(async move { s.apply(rec).await }));
        }
        let mut won = 0;
        for h in handles {
            match h.await.unwrap() {
                Ok(_) => won += 1,
                Err(e) => assert!(e.is_conflict(), "{e}"),
            }
        }
        assert_eq!(won, 1);
        assert_eq!(s.history(task.id, 0, 100).await.unwrap().len(), 2);
        assert_eq!(s.counts(None).await.unwrap().get(StateKind::Assigned), 1);
    }

    pub async fn apply_all_commits_each_record_on_its_own<S: Store>(s: &S) {
        let flow = workflow(&[def("one", &[]), def("two", &[])], None);
        s.submit(flow.batch.clone()).await.unwrap();
        let one = s.task(flow.id("one")).await.unwrap().unwrap();
        let two = s.task(flow.id("two")).await.unwrap().unwrap();
        let cancel = |t: &Task| {
            record(
                t,
                Event::CancelRequested {
                    requested_by: "ops".into(),
                    reason: "batch".into(),
                },
                at(2),
            )
        };
        let mut stale = cancel(&two);
        stale.entry.seq = 5;
        stale.task.version = 5;
        let results = s.apply_all(vec![cancel(&one), stale]).await.unwrap();
        assert!(results[0].is_ok());
        assert!(results[1].as_ref().unwrap_err().is_conflict());
        let counts = s.counts(None).await.unwrap();
        assert_eq!(counts.get(StateKind::Cancelled), 1);
        assert_eq!(counts.get(StateKind::Pending), 1);
    }

    /// A record that fails after it began writing (here: a result naming an artifact the store
    /// does not hold) is undone alone; the batch's other records stand.
    pub async fn apply_all_undoes_a_record_that_fails_after_writing<S: Store>(s: &S) {
        let flow = workflow(&[def("one", &[]), def("two", &[])], None);
        s.submit(flow.batch.clone()).await.unwrap();
        let claimed = claim_one(s, agent(1), at(1)).await.unwrap();
        let token = claimed.fencing_token;
        let started = Event::ExecutionStarted {
            by_claim: false,
            agent: agent(1),
            token,
        };
        let running = advance(s, claimed.id, started, at(2)).await;
        let other = if claimed.id == flow.id("one") {
            flow.id("two")
        } else {
            flow.id("one")
        };
        let other = s.task(other).await.unwrap().unwrap();
        let never = format!("sha256:{}", "1".repeat(64));
        let dangling = Event::ExecutionSucceeded {
            usage: Default::default(),
            agent: agent(1),
            token,
            result: Some(json!({ "$artifact": never })),
        };
        let cancel = Event::CancelRequested {
            requested_by: "ops".into(),
            reason: "batch".into(),
        };
        let results = s
            .apply_all(vec![
                record(&other, cancel, at(3)),
                record(&running, dangling, at(3)),
            ])
            .await
            .unwrap();
        assert!(results[0].is_ok(), "{results:?}");
        // SQLite names the artifact; PostgreSQL's foreign key refuses it.
        assert!(
            results[1].as_ref().is_err_and(|e| !e.is_conflict()),
            "{results:?}"
        );
        assert_eq!(s.task(running.id).await.unwrap().unwrap(), running);
        assert_eq!(s.history(running.id, 0, 100).await.unwrap().len(), 3);
        let counts = s.counts(None).await.unwrap();
        assert_eq!(counts.get(StateKind::Cancelled), 1);
        assert_eq!(counts.get(StateKind::Executing), 1);
        assert_eq!(counts.total(), 2);
    }

    /// An operator's control: all its transitions or none, with the workflow's pause mark and
    /// the audit entry; a paused task is not claimed and is counted; a rerun of a completed
    /// task makes its dependents wait for it again and stores its new input.
    pub async fn a_control_writes_all_its_transitions_or_none_with_its_audit_entry<S: Store>(
        s: &S,
    ) {
        let flow = diamond();
        s.submit(flow.batch.clone()).await.unwrap();
        let pause = |now| Event::PauseRequested {
            requested_by: "ops".into(),
            reason: "hold".into(),
            now,
        };
        let a = s.task(flow.id("a")).await.unwrap().unwrap();
        let d = s.task(flow.id("d")).await.unwrap().unwrap();
        let audit = |action: &str| AuditEntry {
            id: 0,
            at: at(2),
            actor: "ops".into(),
            action: action.into(),
            workflow: Some(flow.id),
            task: None,
            reason: "hold".into(),
            detail: "{}".into(),
        };
        // One record is stale: nothing is written, not even the audit entry or the mark.
        let mut stale = record(&d, pause(false), at(2));
        stale.entry.seq += 1;
        stale.task.version += 1;
        let err = s
            .control(ControlWrite {
                budgets: Default::default(),
                records: vec![record(&a, pause(false), at(2)), stale],
                workflow_pause: Some((flow.id, None)),
                audit: Some(audit("pause")),
            })
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "{err:?}");
        assert_eq!(s.task(a.id).await.unwrap().unwrap(), a);
        assert!(s
            .audit(AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap()
            .is_empty());

        let mark = Paused {
            by: "ops".into(),
            reason: "hold".into(),
            at: at(2),
            frozen_at: None,
        };
        s.control(ControlWrite {
            budgets: Default::default(),
            records: vec![
                record(&a, pause(false), at(2)),
                record(&d, pause(false), at(2)),
            ],
            workflow_pause: Some((flow.id, Some(mark.clone()))),
            audit: Some(audit("pause")),
        })
        .await
        .unwrap();
        assert!(s.task(a.id).await.unwrap().unwrap().is_paused());
        assert_eq!(
            s.workflow(flow.id).await.unwrap().unwrap().paused,
            Some(mark)
        );
        // Tasks added to it by a batch that read it unpaused: refused, to be decided again.
        let late = SubmitBatch {
            workflow: WorkflowRef::Existing {
                id: flow.id,
                paused: false,
            },
            tasks: Vec::new(),
            edges: Vec::new(),
            transitions: Vec::new(),
        };
        let err = s.submit(late.clone()).await.unwrap_err();
        assert!(
            matches!(err, StoreError::WorkflowPauseChanged(w) if w == flow.id),
            "{err:?}"
        );
        assert!(err.is_conflict());
        let read_paused = SubmitBatch {
            workflow: WorkflowRef::Existing {
                id: flow.id,
                paused: true,
            },
            ..late
        };
        s.submit(read_paused).await.unwrap();
        let counts = s.counts(Some(flow.id)).await.unwrap();
        assert_eq!(
            (counts.paused(), counts.get(StateKind::Pending)),
            (2, 1),
            "a (pending) and d (blocked) paused, in their states: {counts:?}"
        );
        assert!(
            claim_one(s, agent(1), at(3)).await.is_none(),
            "a paused task is not claimed"
        );
        let entries = s
            .audit(AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].action.as_str(), entries[0].workflow),
            ("pause", Some(flow.id))
        );

        let resume = Event::ResumeRequested {
            requested_by: "ops".into(),
            reason: "go".into(),
        };
        let a = s.task(a.id).await.unwrap().unwrap();
        s.control(ControlWrite {
            budgets: Default::default(),
            records: vec![record(&a, resume, at(4))],
            workflow_pause: Some((flow.id, None)),
            audit: Some(audit("resume")),
        })
        .await
        .unwrap();
        assert!(s.workflow(flow.id).await.unwrap().unwrap().paused.is_none());
        assert_eq!(
            complete_releasing(s, a.id, at(5)).await.1,
            sorted(vec![flow.id("b"), flow.id("c")])
        );

        // Rerun `a` with a new input: b and c wait for it again.
        let a = s.task(a.id).await.unwrap().unwrap();
        let reopened = Event::Reopened {
            requested_by: "ops".into(),
            reason: "again".into(),
            root: "a".into(),
            input: Some(json!({"v": 2})),
            keep_items: false,
            retired: Vec::new(),
        };
        let rerun = record(&a, reopened, at(7));
        let b = s.task(flow.id("b")).await.unwrap().unwrap();
        let c = s.task(flow.id("c")).await.unwrap().unwrap();
        let reopen = |t: &Task| {
            record(
                t,
                Event::Reopened {
                    requested_by: "ops".into(),
                    reason: "again".into(),
                    root: "a".into(),
                    input: None,
                    keep_items: false,
                    retired: Vec::new(),
                },
                at(7),
            )
        };
        s.control(ControlWrite {
            budgets: Default::default(),
            records: vec![rerun, reopen(&b), reopen(&c)],
            workflow_pause: None,
            audit: Some(audit("rerun")),
        })
        .await
        .unwrap();
        let stored = s.task(a.id).await.unwrap().unwrap();
        assert_eq!(stored.kind(), StateKind::Blocked);
        assert_eq!(
            stored.spec.input,
            json!({"v": 2}),
            "the new input is stored"
        );
        assert_eq!(
            release_blocked(s, at(8)).await,
            vec![a.id],
            "only a: b and c wait for it"
        );
        assert_eq!(
            complete_releasing(s, a.id, at(9)).await.1,
            sorted(vec![flow.id("b"), flow.id("c")])
        );
        let entries = s
            .audit(AuditFilter {
                action: Some("rerun".into()),
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(entries.len(), 1);
        // Every filter, alone and together; pages go on from `before`.
        let actions = |filter: AuditFilter| async move {
            s.audit(AuditFilter {
                limit: 10,
                ..filter
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect::<Vec<_>>()
        };
        assert_eq!(
            actions(AuditFilter::default()).await,
            ["rerun", "resume", "pause"]
        );
        let first = s
            .audit(AuditFilter {
                limit: 1,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let next = AuditFilter {
            before: Some(first[0].id),
            ..AuditFilter::default()
        };
        assert_eq!(actions(next).await, ["resume", "pause"]);
        let other = AuditFilter {
            actor: Some("someone else".into()),
            ..AuditFilter::default()
        };
        assert!(actions(other).await.is_empty());
        let window = AuditFilter {
            actor: Some("ops".into()),
            workflow: Some(flow.id),
            since: Some(at(2)),
            until: Some(at(3)),
            ..AuditFilter::default()
        };
        assert_eq!(actions(window).await, ["rerun", "resume", "pause"]);
        let later = AuditFilter {
            since: Some(at(3)),
            ..AuditFilter::default()
        };
        assert!(actions(later).await.is_empty());
    }

    /// Usage reports add up per workflow (and per label) in the transactions that carry them;
    /// a workflow's budgets are stored with it and replaced by a control.
    pub async fn usage_adds_up_per_workflow_and_label_and_budgets_are_kept<S: Store>(s: &S) {
        let units = |pairs: &[(&str, f64)]| -> Usage {
            pairs
                .iter()
                .map(|(u, x)| (u.to_string(), Amount::of(*x).unwrap()))
                .collect()
        };
        let budget = |limit: f64| Budget {
            limit: Amount::of(limit).unwrap(),
            policy: BudgetPolicy::Pause,
        };
        let mut flows = Vec::new();
        for tenant in ["acme", "acme", "globex"] {
            let mut flow = workflow(&[def("a", &[])], None);
            if let WorkflowRef::New(wf) = &mut flow.batch.workflow {
                wf.labels = [("tenant".to_owned(), tenant.to_owned())].into();
                wf.budgets = [("usd".to_owned(), budget(5.0))].into();
            }
            s.submit(flow.batch.clone()).await.unwrap();
            flows.push(flow);
        }
        for (i, flow) in flows.iter().enumerate() {
            let task = claim_one(s, agent(1), at(1)).await.unwrap();
            assert_eq!(task.workflow, flow.id);
            let token = task.fencing_token;
            advance(
                s,
                task.id,
                Event::ExecutionStarted {
                    by_claim: false,
                    agent: agent(1),
                    token,
                },
                at(2),
            )
            .await;
            let beat = |usage| Event::Heartbeat {
                agent: agent(1),
                token,
                progress: None,
                usage,
            };
            advance(
                s,
                task.id,
                beat(units(&[("tokens", 100.0), ("usd", 0.5)])),
                at(3),
            )
            .await;
            // Cumulative: the same report again adds nothing.
            advance(
                s,
                task.id,
                beat(units(&[("tokens", 100.0), ("usd", 0.5)])),
                at(4),
            )
            .await;
            let done = Event::ExecutionSucceeded {
                agent: agent(1),
                token,
                result: Some(json!(i)),
                usage: units(&[("tokens", 150.0), ("usd", 0.75)]),
            };
            advance(s, task.id, done, at(5)).await;
        }
        let one = units(&[("tokens", 150.0), ("usd", 0.75)]);
        assert_eq!(s.workflow_usage(flows[0].id).await.unwrap(), one);
        let label = |v: &str| Some(("tenant".to_owned(), v.to_owned()));
        assert_eq!(
            s.usage_labelled(label("acme")).await.unwrap(),
            units(&[("tokens", 300.0), ("usd", 1.5)])
        );
        assert_eq!(s.usage_labelled(label("globex")).await.unwrap(), one);
        assert!(s.usage_labelled(label("initech")).await.unwrap().is_empty());
        let all = s.usage_labelled(None).await.unwrap();
        assert!(all["tokens"] >= Amount::of(450.0).unwrap(), "{all:?}");

        let stored = s.workflow(flows[0].id).await.unwrap().unwrap();
        assert_eq!(stored.budgets, [("usd".to_owned(), budget(5.0))].into());
        s.control(ControlWrite {
            records: Vec::new(),
            workflow_pause: None,
            budgets: Some((flows[0].id, [("usd".to_owned(), budget(9.5))].into())),
            audit: None,
        })
        .await
        .unwrap();
        let stored = s.workflow(flows[0].id).await.unwrap().unwrap();
        assert_eq!(stored.budgets["usd"].limit.to_string(), "9.5");
    }

    /// A superseded task (a fan-out's item a rerun retires) is no longer anyone's dependency:
    /// its edges go, and a dependent it held back no longer waits for it.
    pub async fn a_superseded_task_is_no_longer_a_dependency<S: Store>(s: &S) {
        let flow = diamond();
        s.submit(flow.batch.clone()).await.unwrap();
        run_to_completion(s, flow.id("a"), at(10)).await;
        release_blocked(s, at(11)).await;
        let supersede = |t: &Task, now| {
            record(
                t,
                Event::Superseded {
                    requested_by: "ops".into(),
                    reason: "the plan changed".into(),
                    parent: "a".into(),
                },
                now,
            )
        };
        // b, pending, held d back: d now waits only for c.
        let b = s.task(flow.id("b")).await.unwrap().unwrap();
        s.control(ControlWrite {
            budgets: Default::default(),
            records: vec![supersede(&b, at(12))],
            workflow_pause: None,
            audit: None,
        })
        .await
        .unwrap();
        let deps: Vec<TaskId> = s
            .dependencies(flow.id("d"))
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(deps, vec![flow.id("c")]);
        assert!(s.dependents(flow.id("b")).await.unwrap().is_empty());
        // Released in the commit, or (as here: d's own list still names b, which only the
        // engine's rerun rewrites) left to the engine.
        let (_, mut released) = complete_releasing(s, flow.id("c"), at(13)).await;
        released.extend(release_blocked(s, at(14)).await);
        assert_eq!(released, vec![flow.id("d")]);
        // a, completed: its dependents' counts do not move.
        let a = s.task(flow.id("a")).await.unwrap().unwrap();
        s.control(ControlWrite {
            budgets: Default::default(),
            records: vec![supersede(&a, at(15))],
            workflow_pause: None,
            audit: None,
        })
        .await
        .unwrap();
        assert!(s.dependents(flow.id("a")).await.unwrap().is_empty());
        assert_eq!(
            s.task(flow.id("a")).await.unwrap().unwrap().kind(),
            StateKind::Cancelled
        );
        run_to_completion(s, flow.id("d"), at(16)).await;
        let counts = s.counts(Some(flow.id)).await.unwrap();
        assert_eq!(
            (
                counts.get(StateKind::Completed),
                counts.get(StateKind::Cancelled)
            ),
            (2, 2)
        );
    }

    /// The commit that completes a task's last open dependency releases it
    /// (`dependencies_met`, stamped with the completion, its history entry written) and
    /// returns that release; nothing is left for the engine to release, so the outbox holds no
    /// `ReleaseDependents`.
    pub async fn completion_releases_dependents_in_its_own_commit<S: Store>(s: &S) {
        let flow = diamond();
        s.submit(flow.batch.clone()).await.unwrap();
        let (_, released) = complete_releasing(s, flow.id("a"), at(10)).await;
        assert_eq!(released, sorted(vec![flow.id("b"), flow.id("c")]));
        let b = s.task(flow.id("b")).await.unwrap().unwrap();
        assert_eq!(b.kind(), StateKind::Pending);
        let entries = s.history(b.id, 0, 10).await.unwrap();
        let last = entries.last().unwrap();
        assert_eq!((last.seq, last.at), (b.version, at(10)));
        assert_eq!(
            last.event,
            Event::DependenciesMet {
                completed: vec!["a".into()],
                input: None,
                unresolved: None,
                results: None,
            }
        );
        let (_, released) = complete_releasing(s, flow.id("b"), at(20)).await;
        assert!(released.is_empty(), "d waits for c");
        assert!(s.workflow_open(flow.id).await.unwrap(), "d is blocked");
        assert_eq!(
            s.task(flow.id("d")).await.unwrap().unwrap().kind(),
            StateKind::Blocked
        );
        let (_, released) = complete_releasing(s, flow.id("c"), at(30)).await;
        assert_eq!(released, vec![flow.id("d")]);
        assert!(s.released_blocked(10).await.unwrap().is_empty());
        assert!(s.workflow_open(flow.id).await.unwrap(), "d is pending");
        run_to_completion(s, flow.id("d"), at(40)).await;
        assert!(!s.workflow_open(flow.id).await.unwrap(), "every task ended");
        assert!(!s.workflow_open(WorkflowId(Uuid::nil())).await.unwrap());

        let counts = s.counts(Some(flow.id)).await.unwrap();
        assert_eq!(counts.get(StateKind::Completed), 4);
        assert_eq!(counts.total(), 4);
        assert_eq!(s.counts(None).await.unwrap(), counts);
        let outbox = s.outbox(100).await.unwrap();
        assert!(
            outbox.iter().all(|o| o.effect != Effect::ReleaseDependents),
            "{outbox:?}"
        );
    }

    /// Two completions in one commit that close a dependent's last two dependencies release
    /// it once, with the later of them.
    pub async fn completions_in_one_commit_release_a_dependent_once<S: Store>(s: &S) {
        let flow = diamond();
        s.submit(flow.batch.clone()).await.unwrap();
        run_to_completion(s, flow.id("a"), at(10)).await;
        let mut records = Vec::new();
        for k in ["b", "c"] {
            let claimed = claim_one(s, agent(1), at(11)).await.unwrap();
            let token = claimed.fencing_token;
            let started = advance(
                s,
                claimed.id,
                Event::ExecutionStarted {
                    by_claim: false,
                    agent: agent(1),
                    token,
                },
                at(12),
            )
            .await;
            let succeeded = Event::ExecutionSucceeded {
                usage: Default::default(),
                agent: agent(1),
                token,
                result: Some(json!(k)),
            };
            records.push(record(&started, succeeded, at(13)));
        }
        let results = s.apply_all(records).await.unwrap();
        let released: Vec<Vec<TaskId>> = results
            .into_iter()
            .map(|r| r.unwrap().iter().map(|r| r.transition.task.id).collect())
            .collect();
        assert_eq!(released, vec![vec![], vec![flow.id("d")]]);
        let d = s.task(flow.id("d")).await.unwrap().unwrap();
        assert_eq!((d.kind(), d.version), (StateKind::Pending, 2));
        assert_eq!(s.history(d.id, 0, 10).await.unwrap().len(), 2);
        assert_eq!(
            s.counts(Some(flow.id))
                .await
                .unwrap()
                .get(StateKind::Pending),
            1
        );
    }

    /// A dependent whose stored row does not decode does not stop its dependency's completion:
    /// the completion is written, and the dependent is left to the engine (which reports it).
    pub async fn a_dependent_that_does_not_decode_is_left_to_the_engine<S: Store>(
        s: &S,
        rows: &impl HistoryRows,
    ) {
        let flow = workflow(&[def("a", &[]), def("b", &["a"])], None);
        s.submit(flow.batch.clone()).await.unwrap();
        rows.set_snapshot(flow.id("b"), "not a task").await;
        let (a, released) = complete_releasing(s, flow.id("a"), at(10)).await;
        assert!(released.is_empty());
        assert_eq!(
            s.task(a.id).await.unwrap().unwrap().kind(),
            StateKind::Completed
        );
        assert_eq!(s.released_blocked(10).await.unwrap(), vec![flow.id("b")]);
        let outbox = s.outbox(100).await.unwrap();
        assert!(
            outbox
                .iter()
                .any(|o| o.task == a.id && o.effect == Effect::ReleaseDependents),
            "{outbox:?}"
        );
    }

    /// A dependent whose input is a template over its dependencies' results is the engine's
    /// to release (it resolves the input first): the completion leaves it blocked, with no
    /// dependency open, and puts its `ReleaseDependents` in the outbox.
    pub async fn a_dependent_with_an_input_template_is_left_to_the_engine<S: Store>(s: &S) {
        let flow = with_input(
            workflow(&[def("a", &[]), def("b", &["a"]), def("c", &["a"])], None),
            "b",
            json!({"from_a": {"$from": "a"}}),
        );
        s.submit(flow.batch.clone()).await.unwrap();
        let (_, released) = complete_releasing(s, flow.id("a"), at(10)).await;
        assert_eq!(released, vec![flow.id("c")], "c has a plain input");
        assert_eq!(s.released_blocked(10).await.unwrap(), vec![flow.id("b")]);
        let outbox = s.outbox(100).await.unwrap();
        let releasing: Vec<TaskId> = outbox
            .iter()
            .filter(|o| o.effect == Effect::ReleaseDependents)
            .map(|o| o.task)
            .collect();
        assert_eq!(releasing, vec![flow.id("a")]);
    }

    /// A claim with `start` writes the assignment and the start, each a transition with its
    /// history entry, at the same moment: the task comes back executing under the new lease,
    /// counted as executing, still leased to the agent.
    pub async fn a_claim_that_starts_writes_both_transitions<S: Store>(s: &S) {
        let flow = workflow(
            &[
                Def {
                    key: "a",
                    deps: &[],
                    caps: &["work"],
                    priority: 0,
                },
                Def {
                    key: "b",
                    deps: &[],
                    caps: &["work"],
                    priority: 0,
                },
            ],
            None,
        );
        s.submit(flow.batch.clone()).await.unwrap();
        let got = s
            .claim(ClaimRequest {
                start: true,
                agent: agent(1),
                capabilities: caps(&["work"]),
                leases: vec![LeaseId(Uuid::now_v7())],
                now: at(5),
                max_held: Some(4),
            })
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        let t = &got[0];
        let State::Executing { lease, progress } = &t.state else {
            panic!("{:?}", t.state)
        };
        assert_eq!((lease.agent, lease.token), (agent(1), FencingToken(1)));
        assert_eq!(progress, &None);
        assert_eq!(s.task(t.id).await.unwrap().as_ref(), Some(t));
        let history = s.history(t.id, 1, 10).await.unwrap();
        let events: Vec<EventKind> = history.iter().map(|h| h.event.kind()).collect();
        assert_eq!(
            events,
            [EventKind::AgentAssigned, EventKind::ExecutionStarted]
        );
        assert_eq!(history[0].at, history[1].at);
        assert_eq!(history[1].seq, t.version);
        let counts = s.counts(None).await.unwrap();
        assert_eq!(counts.get(StateKind::Executing), 1);
        assert_eq!(counts.get(StateKind::Assigned), 0);
        assert_eq!(counts.get(StateKind::Pending), 1);
        assert_eq!(s.leased_to(agent(1)).await.unwrap().len(), 1);
    }

    pub async fn claims_take_the_highest_priority_then_the_oldest_the_agent_can_run<S: Store>(
        s: &S,
    ) {
        let flow = workflow(
            &[
                Def {
                    key: "low",
                    deps: &[],
                    caps: &["work"],
                    priority: 0,
                },
                Def {
                    key: "high",
                    deps: &[],
                    caps: &["work"],
                    priority: 5,
                },
                Def {
                    key: "gpu",
                    deps: &[],
                    caps: &["work", "gpu"],
                    priority: 9,
                },
                Def {
                    key: "low2",
                    deps: &[],
                    caps: &[],
                    priority: 0,
                },
            ],
            None,
        );
        s.submit(flow.batch.clone()).await.unwrap();
        let got = s
            .claim(ClaimRequest {
                start: false,
                agent: agent(1),
                capabilities: caps(&["work"]),
                leases: vec![LeaseId(Uuid::now_v7()), LeaseId(Uuid::now_v7())],
                now: at(5),
                max_held: None,
            })
            .await
            .unwrap();
        let keys: Vec<&str> = got.iter().map(|t| t.spec.key.as_str()).collect();
        assert_eq!(keys, ["high", "low"]);
        for t in &got {
            let State::Assigned { lease } = &t.state else {
                panic!("{:?}", t.state)
            };
            assert_eq!(lease.agent, agent(1));
            assert_eq!(lease.token, FencingToken(1));
            assert_eq!(s.task(t.id).await.unwrap().as_ref(), Some(t));
            let history = s.history(t.id, 1, 10).await.unwrap();
            assert_eq!(history.len(), 1);
            assert_eq!(history[0].event.kind(), EventKind::AgentAssigned);
        }
        assert_eq!(s.leased_to(agent(1)).await.unwrap().len(), 2);

        let none = s
            .claim(ClaimRequest {
                start: false,
                agent: agent(2),
                capabilities: caps(&["gpu"]),
                leases: vec![LeaseId(Uuid::now_v7())],
                now: at(6),
                max_held: None,
            })
            .await
            .unwrap();
        assert!(
            none.is_empty() || none[0].spec.key.as_str() == "low2",
            "gpu alone cannot run `gpu`, which needs work too"
        );
        let gpu = s
            .claim(ClaimRequest {
                start: false,
                agent: agent(3),
                capabilities: caps(&["gpu", "work", "extra"]),
                leases: vec![LeaseId(Uuid::now_v7())],
                now: at(7),
                max_held: None,
            })
            .await
            .unwrap();
        assert_eq!(gpu[0].spec.key.as_str(), "gpu");
        assert_eq!(
            s.counts(None).await.unwrap().get(StateKind::Assigned),
            3 + none.len() as u64
        );
    }

    pub async fn concurrent_claimers_never_get_the_same_task<S: Store + 'static>(s: Arc<S>) {
        let defs: Vec<String> = (0..120).map(|i| format!("t{i}")).collect();
        let defs: Vec<Def<'_>> = defs.iter().map(|k| def(k, &[])).collect();
        let flow = workflow(&defs, None);
        s.submit(flow.batch.clone()).await.unwrap();
        let mut handles = Vec::new();
        for n in 0..8u128 {
            let s = Arc::clone(&s);
            handles.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = s
                        .claim(ClaimRequest {
                            start: false,
                            agent: agent(n),
                            capabilities: caps(&["work"]),
                            leases: (0..4).map(|_| LeaseId(Uuid::now_v7())).collect(),
                            now: at(1),
                            max_held: None,
                        })
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|t| t.id));
                }
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        let unique: HashSet<TaskId> = all.iter().copied().collect();
        assert_eq!(all.len(), 120, "every task claimed");
        assert_eq!(unique.len(), 120, "no task claimed twice");
        assert_eq!(s.counts(None).await.unwrap().get(StateKind::Assigned), 120);
    }

    /// The due tasks, each with its timer's time.
    async fn due<S: Store>(s: &S, now: Timestamp) -> Vec<(TaskId, Timestamp)> {
        let due = s.due_timers(now, None, 10).await.unwrap();
        due.iter()
            .map(|t| (t.id, t.next_timer().expect("a due task has a timer").1))
            .collect()
    }

    pub async fn due_timers_come_from_deadlines_and_retries<S: Store>(s: &S) {
        let flow = workflow(&[def("slow", &[]), def("idle", &[])], None);
        s.submit(flow.batch.clone()).await.unwrap();
        assert_eq!(s.next_timer().await.unwrap(), None);
        let claimed = claim_one(s, agent(1), at(100)).await.unwrap();
        assert_eq!(s.next_timer().await.unwrap(), Some(at(1_100)));
        assert!(s.due_timers(at(1_099), None, 10).await.unwrap().is_empty());
        assert_eq!(due(s, at(1_100)).await, vec![(claimed.id, at(1_100))]);
        let after = Some((at(1_100), claimed.id));
        assert!(
            s.due_timers(at(1_100), after, 10).await.unwrap().is_empty(),
            "a page after the last due timer is empty"
        );
        let failed = advance(
            s,
            claimed.id,
            Event::TimeoutExpired {
                deadline: DeadlineKind::Start,
            },
            at(1_100),
        )
        .await;
        assert_eq!(
            failed.kind(),
            StateKind::Pending,
            "the start deadline requeues"
        );
        assert_eq!(s.next_timer().await.unwrap(), None);
    }

    pub async fn history_is_ordered_and_replays_to_the_stored_task<S: Store>(s: &S) {
        let flow = workflow(&[def("r", &[])], None);
        s.submit(flow.batch.clone()).await.unwrap();
        let id = flow.id("r");
        let claimed = claim_one(s, agent(1), at(1)).await.unwrap();
        let token = claimed.fencing_token;
        advance(
            s,
            id,
            Event::ExecutionStarted {
                by_claim: false,
                agent: agent(1),
                token,
            },
            at(2),
        )
        .await;
        advance(
            s,
            id,
            Event::ExecutionFailed {
                usage: Default::default(),
                agent: agent(1),
                token,
                error: ErrorReport {
                    kind: "flaky".into(),
                    message: "try again".into(),
                    retryable: true,
                },
            },
            at(3),
        )
        .await;
        let failed = s.task(id).await.unwrap().unwrap();
        let State::Failed {
            retry_at: Some(retry_at),
            ..
        } = failed.state
        else {
            panic!("{:?}", failed.state)
        };
        assert_eq!(due(s, retry_at).await, vec![(id, retry_at)]);
        let counts = s.counts(Some(failed.workflow)).await.unwrap();
        assert_eq!(
            (counts.get(StateKind::Failed), counts.retrying()),
            (1, 1),
            "failed, with a retry scheduled"
        );
        advance(s, id, Event::Retry, retry_at).await;
        assert_eq!(s.counts(Some(failed.workflow)).await.unwrap().retrying(), 0);
        let history = s.history(id, 0, 100).await.unwrap();
        let seqs: Vec<u64> = history.iter().map(|h| h.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        let stored = s.task(id).await.unwrap().unwrap();
        assert_eq!(replay(&history).unwrap(), stored);
        assert_eq!(s.history(id, 3, 1).await.unwrap(), history[3..4].to_vec());
    }

    /// A task's spec, and so its input, is stored once (in `task_specs`): the `submitted`
    /// history row holds the submission without it, and reading the history puts it back, so
    /// replay stays exact; rows written before that (the spec in the payload) read the same.
    /// A read for a view leaves the input as stored JSON.
    pub async fn a_task_input_is_stored_once_and_read_back_exactly<S: Store, R: HistoryRows>(
        s: &S,
        rows: &R,
    ) {
        let marker = format!("input-{}", Uuid::now_v7());
        let records: Vec<serde_json::Value> = (0..2_000)
            .map(|i| json!({"i": i, "name": format!("record {i}")}))
            .collect();
        let input = json!({"marker": marker, "records": records});
        let mut flow = workflow(&[def("big", &[]), def("after", &["big"])], None);
        let mut spec = (*flow.batch.tasks[0].task.spec).clone();
        spec.input = input.clone();
        let spec = Arc::new(spec);
        flow.batch.tasks[0].task.spec = Arc::clone(&spec);
        let Event::Submitted(sub) = &mut flow.batch.tasks[0].entry.event else {
            panic!("a new task's first entry is its submission")
        };
        sub.spec = Arc::clone(&spec);
        let submitted = flow.batch.tasks[0].entry.clone();
        s.submit(flow.batch.clone()).await.unwrap();
        let id = flow.id("big");
        let agent = agent(1);
        let task = claim_one(s, agent, at(10)).await.expect("claimed");
        assert_eq!(task.id, id);
        let token = task.fencing_token;
        advance(
            s,
            id,
            Event::ExecutionStarted {
                agent,
                token,
                by_claim: false,
            },
            at(20),
        )
        .await;
        let result = Some(json!({"done": true}));
        advance(
            s,
            id,
            Event::ExecutionSucceeded {
                usage: Default::default(),
                agent,
                token,
                result,
            },
            at(30),
        )
        .await;

        // Stored once: the submitted row does not repeat the spec.
        let payload = rows.payload(id, 1).await;
        assert!(!payload.contains(&marker), "{payload}");
        assert!(!payload.contains("\"spec\""), "{payload}");
        assert!(payload.len() < 1_000, "{} bytes", payload.len());

        // Read back exactly: the submitted entry with its whole spec, and replay.
        let stored = s.task(id).await.unwrap().unwrap();
        assert_eq!(stored.spec.input, input);
        let history = s.history(id, 0, 100).await.unwrap();
        assert_eq!(history.len(), 4);
        assert_eq!(history[0], submitted);
        assert_eq!(replay(&history).unwrap(), stored);
        assert_eq!(s.history(id, 1, 100).await.unwrap(), history[1..].to_vec());

        // For a view: the input stays text, in the spec as stored; the rest is the task.
        let view = s.task_for_view(id, 0, 100).await.unwrap().unwrap();
        let shown: TaskSpec = serde_json::from_str(view.spec_json.get()).unwrap();
        assert_eq!(shown, *spec);
        assert_eq!(view.task.spec.input, serde_json::Value::Null);
        let mut without_input = stored.clone();
        let mut bare = (*stored.spec).clone();
        bare.input = serde_json::Value::Null;
        without_input.spec = Arc::new(bare);
        assert_eq!(view.task, without_input);
        assert_eq!(view.history.len(), 4);
        assert_eq!(view.history[1..], history[1..]);
        let Event::Submitted(sub) = &view.history[0].event else {
            panic!("{:?}", view.history[0])
        };
        assert!(
            Arc::ptr_eq(&sub.spec, &view.task.spec),
            "the task's spec, shared"
        );
        // Lists leave every input undecoded, the rest of each task as stored.
        let listed = s
            .tasks_for_view(TaskFilter {
                workflow: Some(flow.id),
                limit: 10,
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        let full = s
            .tasks(TaskFilter {
                workflow: Some(flow.id),
                limit: 10,
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 2);
        for (listed, full) in listed.iter().zip(&full) {
            assert_eq!(listed.spec.input, serde_json::Value::Null);
            let mut bare = (*full.spec).clone();
            bare.input = serde_json::Value::Null;
            assert_eq!(*listed.spec, bare);
            assert_eq!(
                (listed.id, &listed.state, listed.version),
                (full.id, &full.state, full.version)
            );
        }
        assert!(full.iter().any(|t| t.spec.input == input));
        let page = s.task_for_view(id, 2, 1).await.unwrap().unwrap();
        assert_eq!(page.history, history[2..3].to_vec());
        assert!(s
            .task_for_view(TaskId(Uuid::now_v7()), 0, 10)
            .await
            .unwrap()
            .is_none());

        // A row written before the spec was stored once (the whole event, spec included)
        // reads the same.
        let old = serde_json::to_string(&submitted.event).unwrap();
        assert!(old.contains(&marker));
        rows.set_payload(id, 1, &old).await;
        assert_eq!(s.history(id, 0, 100).await.unwrap(), history);
        assert_eq!(replay(&history).unwrap(), stored);
        let view = s.task_for_view(id, 0, 100).await.unwrap().unwrap();
        assert_eq!(view.history[1..], history[1..]);
        assert!(matches!(&view.history[0].event, Event::Submitted(sub) if sub.task == id));

        // The dependent's history is untouched by all this.
        let after = s.task(flow.id("after")).await.unwrap().unwrap();
        assert_eq!(
            replay(&s.history(after.id, 0, 100).await.unwrap()).unwrap(),
            after
        );
    }

    pub async fn tasks_list_by_workflow_and_state_in_pages<S: Store>(s: &S) {
        let defs: Vec<String> = (0..25).map(|i| format!("p{i:02}")).collect();
        let defs: Vec<Def<'_>> = defs.iter().map(|k| def(k, &[])).collect();
        let flow = workflow(&defs, None);
        s.submit(flow.batch.clone()).await.unwrap();
        let other = diamond();
        s.submit(other.batch.clone()).await.unwrap();

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .tasks(TaskFilter {
                    workflow: Some(flow.id),
                    state: Some(StateKind::Pending),
                    after,
                    limit: 10,
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 10);
            after = page.last().map(|t| t.id);
            seen.extend(page.into_iter().map(|t| t.id));
        }
        assert_eq!(seen.len(), 25);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered by id");
        // A workflow with fewer tasks than the store has in the state, and one with more.
        let listed = |workflow, state| {
            s.tasks(TaskFilter {
                workflow: Some(workflow),
                state: Some(state),
                after: None,
                limit: 100,
            })
        };
        let ids = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(
            ids(listed(other.id, StateKind::Pending).await.unwrap()),
            [other.id("a")]
        );
        assert_eq!(
            ids(listed(other.id, StateKind::Blocked).await.unwrap()),
            sorted(vec![other.id("b"), other.id("c"), other.id("d")])
        );
        assert!(listed(flow.id, StateKind::Blocked)
            .await
            .unwrap()
            .is_empty());
        assert!(listed(other.id, StateKind::Completed)
            .await
            .unwrap()
            .is_empty());
        let blocked = s
            .tasks(TaskFilter {
                state: Some(StateKind::Blocked),
                limit: 100,
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(blocked.len(), 3);
        let all = s
            .tasks(TaskFilter {
                limit: 100,
                ..TaskFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 29);
    }

    pub async fn agents_are_registered_updated_and_listed<S: Store>(s: &S) {
        let mut a = AgentRecord {
            id: agent(7),
            name: "writer".into(),
            capabilities: caps(&["write"]),
            concurrency: 2,
            registered_at: T0,
            last_seen: T0,
            registered_by: "ci".into(),
        };
        s.upsert_agent(a.clone()).await.unwrap();
        assert_eq!(s.agent(a.id).await.unwrap(), Some(a.clone()));
        a.last_seen = at(500);
        a.capabilities = caps(&["write", "review"]);
        s.upsert_agent(a.clone()).await.unwrap();
        assert_eq!(s.agents(None, 10).await.unwrap(), vec![a.clone()]);
        assert!(s.agent(agent(8)).await.unwrap().is_none());
    }

    /// A registrar has at most so many agents stored, counted in the registration's
    /// transaction; an agent it has already is updated at any count, keeping who registered
    /// it and when. Agents page by id.
    pub async fn agents_register_under_their_registrar_cap_and_page_by_id<S: Store>(s: &S) {
        let new = |n: u128, by: &str| AgentRecord {
            id: agent(100 + n),
            name: format!("worker-{n}"),
            capabilities: caps(&["work"]),
            concurrency: 1,
            registered_at: at(n as u64),
            last_seen: at(n as u64),
            registered_by: by.into(),
        };
        for n in 0..3 {
            s.register_agent(new(n, "ci"), 3).await.unwrap();
        }
        let err = s.register_agent(new(3, "ci"), 3).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::TooManyAgents { registered_by, max: 3 } if registered_by == "ci"),
            "{err:?}"
        );
        assert!(
            s.agent(agent(103)).await.unwrap().is_none(),
            "nothing written"
        );
        // Another registrar counts on its own; a known agent registers again at the cap.
        s.register_agent(new(3, "local"), 3).await.unwrap();
        let mut again = new(1, "someone else");
        again.name = "renamed".into();
        again.registered_at = at(900);
        again.last_seen = at(900);
        s.register_agent(again, 3).await.unwrap();
        let stored = s.agent(agent(101)).await.unwrap().unwrap();
        assert_eq!(
            (stored.name.as_str(), stored.registered_by.as_str()),
            ("renamed", "ci")
        );
        assert_eq!((stored.registered_at, stored.last_seen), (at(1), at(900)));

        let first = s.agents(None, 3).await.unwrap();
        let ids: Vec<AgentId> = first.iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![agent(100), agent(101), agent(102)]);
        let rest = s.agents(Some(agent(102)), 3).await.unwrap();
        assert_eq!(
            rest.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![agent(103)]
        );

        // An agent holding a lease, silent since before the cutoff, is a lease holder to reap;
        // the silent ones without leases and the one heard from are not.
        let flow = workflow(&[def("x", &[])], None);
        s.submit(flow.batch).await.unwrap();
        let claimed = claim_one(s, agent(100), at(50)).await.unwrap();
        assert_eq!(claimed.id, flow.ids["x"]);
        let silent = s.silent_lease_holders(at(100), 10).await.unwrap();
        assert_eq!(
            silent.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![agent(100)]
        );
        assert!(s.silent_lease_holders(at(0), 10).await.unwrap().is_empty());
    }

    /// Schedules and triggers page by name: `after` the last name of the previous page.
    pub async fn schedules_and_triggers_page_by_name<S: Store>(s: &S) {
        let names = ["b/2", "a", "c:3", "b/10", "a-1"];
        for name in names {
            let schedule = ScheduleRecord {
                name: name.into(),
                spec: "{}".into(),
                paused: false,
                next_fire_at: at(1_000),
                last_tick_at: None,
                last_workflow: None,
                version: 1,
                created_at: at(1),
                updated_at: at(1),
            };
            s.write_schedule(ScheduleWrite::Create(schedule))
                .await
                .unwrap();
            let trigger = TriggerRecord {
                name: name.into(),
                template: "{}".into(),
                created_at: at(1),
                updated_at: at(1),
            };
            assert!(s.write_trigger(TriggerWrite::Put(trigger)).await.unwrap());
        }
        let in_order = ["a", "a-1", "b/10", "b/2", "c:3"];
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = s.schedules(after.clone(), 2).await.unwrap();
            let names: Vec<String> = page.iter().map(|r| r.name.clone()).collect();
            let last = page.len() < 2;
            after = names.last().cloned();
            pages.push(names);
            if last {
                break;
            }
        }
        assert_eq!(pages, [vec!["a", "a-1"], vec!["b/10", "b/2"], vec!["c:3"]]);
        let triggers = |after: Option<&str>, limit| {
            let after = after.map(str::to_owned);
            async move {
                s.triggers(after, limit)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(triggers(None, 10).await, in_order);
        assert_eq!(triggers(Some("a-1"), 2).await, ["b/10", "b/2"]);
        assert_eq!(
            triggers(Some("b"), 1).await,
            ["b/10"],
            "after a name that is none"
        );
        assert!(triggers(Some("c:3"), 10).await.is_empty());
    }

    /// A task added released (its dependencies read as completed) on a dependency that is
    /// not completed is refused, writing nothing: a rerun reopened it after the batch read it.
    pub async fn a_task_released_on_an_open_dependency_is_refused<S: Store>(s: &S) {
        let flow = workflow(&[def("plan", &[])], None);
        s.submit(flow.batch.clone()).await.unwrap();
        let add = |completed: Vec<TaskKey>| {
            let id = TaskId(Uuid::now_v7());
            let sub = Submission {
                task: id,
                workflow: flow.id,
                spec: Arc::new(spec(&def("write", &["plan"]))),
                completed,
                seed: 3,
                input: None,
                unresolved: None,
            };
            let (new, _) = NewTask::submitted(sub, at(2)).unwrap();
            SubmitBatch {
                workflow: WorkflowRef::Existing {
                    id: flow.id,
                    paused: false,
                },
                tasks: vec![new],
                edges: vec![Edge {
                    dependency: flow.id("plan"),
                    dependent: id,
                }],
                transitions: Vec::new(),
            }
        };
        let before = s.counts(Some(flow.id)).await.unwrap();
        let err = s.submit(add(vec!["plan".into()])).await.unwrap_err();
        assert!(
            matches!(err, StoreError::DependencyReopened(_)) && err.is_conflict(),
            "{err:?}"
        );
        assert_eq!(
            s.counts(Some(flow.id)).await.unwrap(),
            before,
            "nothing written"
        );
        assert!(s
            .task_by_key(flow.id, "write".into())
            .await
            .unwrap()
            .is_none());
        // Decided blocked, it waits.
        s.submit(add(Vec::new())).await.unwrap();
        let write = s
            .task_by_key(flow.id, "write".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(write.kind(), StateKind::Blocked);
        assert_eq!(
            complete_releasing(s, flow.id("plan"), at(3)).await.1,
            vec![write.id]
        );
    }

    pub async fn decomposition_adds_tasks_and_makes_dependents_wait_in_one_transaction<S: Store>(
        s: &S,
    ) {
        let flow = workflow(&[def("plan", &[]), def("publish", &["plan"])], None);
        s.submit(flow.batch.clone()).await.unwrap();
        let plan = claim_one(s, agent(1), at(1)).await.unwrap();
        let publish = s.task(flow.id("publish")).await.unwrap().unwrap();

        let sub_id = TaskId(Uuid::now_v7());
        let sub = Submission {
            task: sub_id,
            workflow: flow.id,
            spec: Arc::new(spec(&def("research", &[]))),
            completed: Vec::new(),
            seed: 3,
            input: None,
            unresolved: None,
        };
        let t = submit(&sub, at(2)).unwrap();
        let wait = record(
            &publish,
            Event::DependencyAdded {
                dependency: "research".into(),
            },
            at(2),
        );
        s.submit(SubmitBatch {
            workflow: WorkflowRef::Existing {
                id: flow.id,
                paused: false,
            },
            tasks: vec![NewTask {
                task: t.task,
                entry: HistoryEntry {
                    seq: 1,
                    at: at(2),
                    event: Event::Submitted(sub),
                },
                outbox: Vec::new(),
            }],
            edges: vec![Edge {
                dependency: sub_id,
                dependent: publish.id,
            }],
            transitions: vec![wait],
        })
        .await
        .unwrap();

        let deps = s.dependencies(publish.id).await.unwrap();
        assert_eq!(deps.len(), 2);
        let token = plan.fencing_token;
        advance(
            s,
            plan.id,
            Event::ExecutionStarted {
                by_claim: false,
                agent: agent(1),
                token,
            },
            at(3),
        )
        .await;
        advance(
            s,
            plan.id,
            Event::SubtasksAdded {
                agent: agent(1),
                token,
                tasks: vec!["research".into()],
            },
            at(3),
        )
        .await;
        advance(
            s,
            plan.id,
            Event::ExecutionSucceeded {
                usage: Default::default(),
                agent: agent(1),
                token,
                result: Some(json!("plan")),
            },
            at(4),
        )
        .await;
        assert!(
            s.released_blocked(10).await.unwrap().is_empty(),
            "publish still waits for research"
        );
        assert_eq!(
            complete_releasing(s, sub_id, at(5)).await.1,
            vec![publish.id]
        );

        assert_eq!(
            s.subtasks_added(flow.id).await.unwrap(),
            vec![(plan.id, vec![TaskKey::from("research")])]
        );
        // The workflow's history, task by task in id order, without the events' data.
        let marks = s.workflow_history(flow.id, None, 10).await.unwrap();
        let of_plan: Vec<EventKind> = marks
            .iter()
            .filter(|m| m.task == plan.id)
            .map(|m| m.event)
            .collect();
        assert_eq!(
            of_plan,
            [
                EventKind::Submitted,
                EventKind::AgentAssigned,
                EventKind::ExecutionStarted,
                EventKind::SubtasksAdded,
                EventKind::ExecutionSucceeded
            ]
        );
        let tasks: Vec<TaskId> = marks.iter().map(|m| m.task).collect();
        let mut in_order = tasks.clone();
        in_order.sort();
        assert_eq!(tasks, in_order);
        let first = s.workflow_history(flow.id, None, 1).await.unwrap();
        assert!(first.iter().all(|m| m.task == tasks[0]));
        let rest = s
            .workflow_history(flow.id, Some(tasks[0]), 10)
            .await
            .unwrap();
        assert_eq!(first.len() + rest.len(), marks.len());
    }

    pub async fn workflows_keep_their_labels_and_list_by_them<S: Store>(s: &S) {
        let labelled = |pairs: &[(&str, &str)], key: Option<&str>| {
            let mut flow = workflow(&[def("solo", &[])], key);
            if let WorkflowRef::New(wf) = &mut flow.batch.workflow {
                wf.labels = pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
            }
            flow
        };
        let acme = labelled(&[("tenant", "acme"), ("env", "prod")], None);
        let plain = labelled(&[], None);
        let globex = labelled(&[("tenant", "globex"), ("env", "prod")], None);
        let acme_dev = labelled(&[("tenant", "acme"), ("env", "dev")], Some("acme-dev"));
        for f in [&acme, &plain, &globex, &acme_dev] {
            s.submit(f.batch.clone()).await.unwrap();
        }
        let wf = s.workflow(acme.id).await.unwrap().unwrap();
        assert_eq!(wf.labels.len(), 2);
        assert_eq!(wf.labels["tenant"], "acme");
        assert!(s
            .workflow(plain.id)
            .await
            .unwrap()
            .unwrap()
            .labels
            .is_empty());

        let ids = |ws: Vec<WorkflowRecord>| ws.into_iter().map(|w| w.id).collect::<Vec<_>>();
        let want = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let tenant = want(&[("tenant", "acme")]);
        assert_eq!(
            ids(s.workflows_labelled(&tenant, None, 10).await.unwrap()),
            vec![acme_dev.id, acme.id],
            "newest first"
        );
        assert_eq!(
            ids(s
                .workflows_labelled(&tenant, Some(acme_dev.id), 10)
                .await
                .unwrap()),
            vec![acme.id],
            "paged by id"
        );
        assert_eq!(
            ids(s.workflows_labelled(&tenant, None, 1).await.unwrap()),
            vec![acme_dev.id]
        );
        let both = want(&[("tenant", "acme"), ("env", "prod")]);
        assert_eq!(
            ids(s.workflows_labelled(&both, None, 10).await.unwrap()),
            vec![acme.id],
            "every label must match"
        );
        let prod = want(&[("env", "prod")]);
        assert_eq!(
            ids(s.workflows_labelled(&prod, None, 10).await.unwrap()),
            vec![globex.id, acme.id]
        );
        let none = want(&[("tenant", "initech")]);
        assert!(s
            .workflows_labelled(&none, None, 10)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            s.workflows_labelled(&Labels::new(), None, 10)
                .await
                .unwrap()
                .len(),
            4,
            "no label: every workflow"
        );
        // The short-id lookup and the listing carry the labels too.
        let listed = s.workflows(None, 10).await.unwrap();
        assert_eq!(
            listed.iter().find(|w| w.id == globex.id).unwrap().labels["tenant"],
            "globex"
        );
        // A resubmission under the same key writes no labels twice.
        let again = labelled(&[("tenant", "acme"), ("env", "dev")], Some("acme-dev"));
        assert!(matches!(
            s.submit(again.batch).await.unwrap(),
            SubmitOutcome::Existing { .. }
        ));
        assert_eq!(
            ids(s.workflows_labelled(&tenant, None, 10).await.unwrap()),
            vec![acme_dev.id, acme.id]
        );
    }

    pub async fn workflows_list_newest_first_with_their_edges<S: Store>(s: &S) {
        let first = diamond();
        s.submit(first.batch.clone()).await.unwrap();
        let second = workflow(&[def("solo", &[])], None);
        s.submit(second.batch.clone()).await.unwrap();
        let listed: Vec<WorkflowId> = s
            .workflows(None, 10)
            .await
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(listed, vec![second.id, first.id]);
        let page: Vec<WorkflowId> = s
            .workflows(Some(second.id), 10)
            .await
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect();
        assert_eq!(page, vec![first.id]);
        let mut edges: Vec<(TaskId, TaskId)> = s
            .workflow_edges(first.id)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.dependency, e.dependent))
            .collect();
        edges.sort();
        let mut expected: Vec<(TaskId, TaskId)> = first
            .batch
            .edges
            .iter()
            .map(|e| (e.dependency, e.dependent))
            .collect();
        expected.sort();
        assert_eq!(edges, expected);
        assert!(s.workflow_edges(second.id).await.unwrap().is_empty());
    }

    pub async fn concurrent_claims_of_one_agent_never_exceed_its_limit<S: Store + 'static>(
        s: Arc<S>,
    ) {
        let keys: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        let defs: Vec<Def<'_>> = keys.iter().map(|k| def(k, &[])).collect();
        s.submit(workflow(&defs, None).batch).await.unwrap();
        s.upsert_agent(AgentRecord {
            id: agent(9),
            name: "limited".into(),
            capabilities: caps(&["work"]),
            concurrency: 3,
            registered_at: T0,
            last_seen: T0,
            registered_by: String::new(),
        })
        .await
        .unwrap();
        let mut handles = Vec::new();
        for _ in 0..6 {
            let s = Arc::clone(&s);
            handles.push(tokio::spawn(async move {
                s.claim(ClaimRequest {
                    start: false,
                    agent: agent(9),
                    capabilities: caps(&["work"]),
                    leases: (0..2).map(|_| LeaseId(Uuid::now_v7())).collect(),
                    now: at(1),
                    max_held: Some(3),
                })
                .await
                .unwrap()
                .len()
            }));
        }
        let mut total = 0;
        for h in handles {
            total += h.await.unwrap();
        }
        assert_eq!(total, 3);
        assert_eq!(s.leased_to(agent(9)).await.unwrap().len(), 3);
    }

    /// Claims racing from many tasks (on PostgreSQL, many connections) never hand out more
    /// tasks of a concurrency key than its `max`, nor more units than a limit holds; a task
    /// leaving Executing frees its slot and unparks the next; a limit change wakes its tasks.
    pub async fn concurrent_claims_respect_concurrency_keys_and_rate_limits<S: Store + 'static>(
        s: Arc<S>,
    ) {
        let existed = s
            .write_limit(LimitWrite {
                key: "llm".into(),
                limit: Some(Limit {
                    units: 5,
                    per_ms: 3_600_000,
                }),
                now: at(0),
            })
            .await
            .unwrap();
        assert!(!existed);
        let keys: Vec<String> = (0..24).map(|i| format!("f{i}")).collect();
        let defs: Vec<Def<'_>> = keys.iter().map(|k| def(k, &[])).collect();
        let mut flow = workflow(&defs, None);
        for (i, new) in flow.batch.tasks.iter_mut().enumerate() {
            let spec = Arc::make_mut(&mut new.task.spec);
            if i % 2 == 0 {
                spec.concurrency = vec![ConcurrencyKey {
                    key: "tenant-{/t}".into(),
                    max: 2,
                }];
                spec.input = json!({ "t": "acme" });
            } else {
                spec.rate = vec![RateUse {
                    key: "llm".into(),
                    units: 1,
                    usage_unit: None,
                }];
            }
        }
        s.submit(flow.batch.clone()).await.unwrap();
        let mut handles = Vec::new();
        for n in 0..8 {
            let s = Arc::clone(&s);
            handles.push(tokio::spawn(async move {
                s.claim(ClaimRequest {
                    start: false,
                    agent: agent(20 + n),
                    capabilities: caps(&["work"]),
                    leases: (0..4).map(|_| LeaseId(Uuid::now_v7())).collect(),
                    now: at(1),
                    max_held: None,
                })
                .await
                .unwrap()
            }));
        }
        let mut claimed = Vec::new();
        for h in handles {
            claimed.extend(h.await.unwrap());
        }
        let keyed = claimed
            .iter()
            .filter(|t| !t.spec.concurrency.is_empty())
            .count();
        let drawn = claimed.iter().filter(|t| !t.spec.rate.is_empty()).count();
        assert_eq!((keyed, drawn), (2, 5), "two slots, five units");
        let hold = s
            .flow_hold(flow.batch.tasks[0].task.id, at(1))
            .await
            .unwrap();
        assert_eq!(
            hold,
            Some(FlowHold::Concurrency {
                key: "tenant-acme".into(),
                held: 2,
                max: 2
            })
        );
        let limits = s.limits(at(1)).await.unwrap();
        assert_eq!((limits[0].available, limits[0].limit.units), (0, 5));
        for _ in 0..3 {
            assert!(
                claim_one(&*s, agent(30), at(2)).await.is_none(),
                "all parked"
            );
        }
        assert_eq!(s.limits(at(2)).await.unwrap()[0].parked, 7);

        // A slot freed hands out the next task of the key, and only one.
        let slot = claimed
            .iter()
            .find(|t| !t.spec.concurrency.is_empty())
            .unwrap();
        let token = slot.fencing_token;
        let running = advance(
            &*s,
            slot.id,
            Event::ExecutionStarted {
                by_claim: false,
                agent: slot.state.lease().unwrap().agent,
                token,
            },
            at(3),
        )
        .await;
        advance(
            &*s,
            running.id,
            Event::ExecutionSucceeded {
                agent: slot.state.lease().unwrap().agent,
                token,
                result: Some(json!(1)),
                usage: Default::default(),
            },
            at(4),
        )
        .await;
        let next = claim_one(&*s, agent(30), at(5))
            .await
            .expect("the freed slot");
        assert!(!next.spec.concurrency.is_empty());
        assert!(claim_one(&*s, agent(30), at(5)).await.is_none());

        // A bigger limit keeps what was drawn and wakes the tasks parked on it.
        s.write_limit(LimitWrite {
            key: "llm".into(),
            limit: Some(Limit {
                units: 8,
                per_ms: 3_600_000,
            }),
            now: at(6),
        })
        .await
        .unwrap();
        let mut more = 0;
        while let Some(t) = claim_one(&*s, agent(30), at(7)).await {
            assert!(!t.spec.rate.is_empty());
            more += 1;
        }
        assert_eq!(more, 3, "eight units, five drawn before");
    }

    /// Among ready tasks of equal priority, claims take from each fairness group in turn,
    /// [`FAIR_QUANTUM`] tasks of a group a turn: a small workflow submitted after a big one is
    /// handed out after the rest of the big one's current turn, not behind all of it; a fairness
    /// key groups tasks across workflows (and splits one workflow's).
    pub async fn claims_take_from_each_fairness_group_in_turn<S: Store>(s: &S) {
        let q = FAIR_QUANTUM as usize;
        let claim = |n: usize, t: u64| ClaimRequest {
            start: false,
            agent: agent(40),
            capabilities: caps(&["work"]),
            leases: (0..n).map(|_| LeaseId(Uuid::now_v7())).collect(),
            now: at(t),
            max_held: None,
        };
        let keys: Vec<String> = (0..3 * q).map(|i| format!("big{i}")).collect();
        let big = workflow(&keys.iter().map(|k| def(k, &[])).collect::<Vec<_>>(), None);
        s.submit(big.batch.clone()).await.unwrap();
        assert_eq!(s.claim(claim(5, 1)).await.unwrap().len(), 5);
        let small = workflow(&[def("s0", &[]), def("s1", &[]), def("s2", &[])], None);
        s.submit(small.batch.clone()).await.unwrap();
        let next = s.claim(claim(q + 8, 2)).await.unwrap();
        let at_: Vec<usize> = (0..next.len())
            .filter(|&i| next[i].workflow == small.id)
            .collect();
        assert_eq!(
            at_,
            [q - 5, q - 4, q - 3],
            "after the rest of the big workflow's first turn, before its second"
        );

        // Fairness keys: one workflow's tasks for two tenants, the first tenant's all first.
        let mut names: Vec<String> = (0..q + 2).map(|i| format!("a{i}")).collect();
        names.extend(["b0".to_owned(), "b1".to_owned()]);
        let mut keyed = workflow(&names.iter().map(|k| def(k, &[])).collect::<Vec<_>>(), None);
        for new in keyed.batch.tasks.iter_mut() {
            let spec = Arc::make_mut(&mut new.task.spec);
            spec.fairness_key = Some("tenant-{/t}".into());
            spec.input = json!({ "t": &spec.key.0[..1] });
            spec.priority = 1;
        }
        s.submit(keyed.batch.clone()).await.unwrap();
        let order: Vec<String> = s
            .claim(claim(q + 4, 3))
            .await
            .unwrap()
            .iter()
            .map(|t| t.spec.key.0.clone())
            .collect();
        assert_eq!(&order[q..q + 2], ["b0", "b1"], "{order:?}");
        assert_eq!(order[q + 2], format!("a{q}"));
    }

    pub async fn hot_paths_read_indexes_not_whole_tables<S: Store>(s: &S) {
        s.submit(diamond().batch).await.unwrap();
        for (path, index) in [
            (HotPath::Claim, "tasks_ready"),
            (HotPath::DueTimers, "tasks_timers"),
            (HotPath::ReleaseDependents, "edges_pkey|primary key"),
            (HotPath::ReleasedBlocked, "tasks_released"),
            (HotPath::WorkflowOpen, "tasks_by_workflow|workflow_counts"),
        ] {
            let plan = s.query_plan(path).await.unwrap();
            let lower = plan.to_lowercase();
            assert!(
                index.split('|').any(|i| lower.contains(i)),
                "{path:?} must use index {index}:\n{plan}"
            );
            assert!(
                !lower.contains("seq scan"),
                "{path:?} scans a table:\n{plan}"
            );
            assert!(
                !plan.lines().any(|l| l.trim() == "SCAN tasks"),
                "{path:?} scans all tasks:\n{plan}"
            );
        }
        let counts = s.query_plan(HotPath::Counts).await.unwrap();
        assert!(
            counts.contains("state_counts"),
            "counts come from counters:\n{counts}"
        );
        assert!(
            !counts.contains("tasks"),
            "counts never read tasks:\n{counts}"
        );
    }
}

/// Puts `bytes` as an artifact at `now`.
async fn put_bytes<S: Store>(s: &S, bytes: &[u8], now: Timestamp) -> PutArtifact {
    let mut w = s.stage_artifact().unwrap();
    for part in bytes.chunks(100_000) {
        w.write(part).unwrap();
    }
    s.put_artifact(w.finish().unwrap(), Some("text/plain".into()), now)
        .await
        .unwrap()
}

/// A one-task workflow whose input is `input`.
fn referring(input: serde_json::Value) -> (TaskId, SubmitBatch) {
    let mut flow = workflow(&[def("x", &[])], None);
    let spec = TaskSpec {
        input,
        ..(*flow.batch.tasks[0].task.spec).clone()
    };
    let sub = Submission {
        task: flow.id("x"),
        workflow: flow.id,
        spec: Arc::new(spec),
        completed: Vec::new(),
        seed: 7,
        input: None,
        unresolved: None,
    };
    flow.batch.tasks[0] = NewTask::submitted(sub, T0).unwrap().0;
    (flow.id("x"), flow.batch)
}

mod artifact_cases {
    use super::*;

    pub async fn artifacts_are_stored_read_and_kept_while_a_task_refers_to_them<S: Store>(s: &S) {
        // Over one chunk (1 MiB), not a whole number of them.
        let big: Vec<u8> = (0..ARTIFACT_CHUNK_BYTES * 2 + 5)
            .map(|i| (i % 251) as u8)
            .collect();
        let a = put_bytes(s, &big, at(10)).await;
        assert!(a.created);
        assert_eq!(a.meta.size, big.len() as u64);
        let again = put_bytes(s, &big, at(20)).await;
        assert!(!again.created, "the same bytes are stored once");
        assert_eq!(
            again.meta.uploaded_at,
            at(20),
            "the upload time is refreshed"
        );

        let (meta, mut chunks) = s.read_artifact(a.meta.artifact).await.unwrap().unwrap();
        assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
        let mut read = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= ARTIFACT_CHUNK_BYTES);
            read.extend(chunk);
        }
        assert!(read == big, "the bytes read are the bytes put");

        let loose = put_bytes(s, b"loose", at(10)).await.meta.artifact;
        let never: ArtifactRef = format!("sha256:{}", "1".repeat(64)).parse().unwrap();
        assert!(s.read_artifact(never).await.unwrap().is_none());
        assert_eq!(
            s.missing_artifacts(vec![a.meta.artifact, never])
                .await
                .unwrap(),
            vec![never]
        );

        let (id, batch) = referring(json!({"doc": {"$artifact": a.meta.artifact.to_string()}}));
        s.submit(batch).await.unwrap();
        // A reference to an artifact the store does not hold fails the write (the engine
        // checks first; this is the store's guard against a sweep in between).
        let (dangling, batch) = referring(json!([{"$artifact": never.to_string()}]));
        assert!(s.submit(batch).await.is_err());
        assert!(
            s.task(dangling).await.unwrap().is_none(),
            "nothing was written"
        );

        // Uploaded before the cutoff and referred to by no task: swept; the other is kept.
        assert!(s.sweep_artifacts(at(10), 10).await.unwrap().is_empty());
        assert_eq!(s.sweep_artifacts(at(1_000), 10).await.unwrap(), vec![loose]);
        assert!(s.artifact(loose).await.unwrap().is_none());
        assert!(s.artifact(a.meta.artifact).await.unwrap().is_some());
        assert!(s.task(id).await.unwrap().is_some());
        assert!(s.sweep_artifacts(at(1_000), 10).await.unwrap().is_empty());
    }
}

mod retention_cases {
    use super::*;

    /// Acknowledges every outbox item, as the engine does once it carried them out.
    async fn ack_all<S: Store>(s: &S) {
        loop {
            let items = s.outbox(100).await.unwrap();
            if items.is_empty() {
                return;
            }
            s.ack_outbox(items.iter().map(|o| o.id).collect())
                .await
                .unwrap();
        }
    }

    fn cancel() -> Event {
        Event::CancelRequested {
            requested_by: "ops".into(),
            reason: "done with it".into(),
        }
    }

    fn scan(before: u64, limit: usize) -> GcScan {
        GcScan {
            finished_before: at(before),
            after: None,
            limit,
        }
    }

    fn batch(mark: Vec<WorkflowId>, tasks_max: usize) -> GcBatch {
        GcBatch {
            mark,
            finished_before: at(1_000),
            now: at(2_000),
            tasks_max,
        }
    }

    /// A finished workflow goes a batch at a time with everything that is its own; a live
    /// one, a recent one, a paused one and one retrying stay, and so does what they refer to.
    pub async fn retention_deletes_finished_workflows_a_batch_at_a_time<S: Store>(s: &S) {
        let own = put_bytes(s, b"own", at(1)).await.meta.artifact;
        let shared = put_bytes(s, b"shared", at(1)).await.meta.artifact;
        let refs = json!({"own": {"$artifact": own.to_string()},
                          "shared": {"$artifact": shared.to_string()}});
        // b's input is a template: a's completion leaves b to the engine, through the outbox.
        let mut old = with_input(
            with_input(
                workflow(&[def("a", &[]), def("b", &["a"])], Some("old-key")),
                "a",
                refs,
            ),
            "b",
            json!({"$from": "a"}),
        );
        if let WorkflowRef::New(wf) = &mut old.batch.workflow {
            wf.labels.insert("team".into(), "x".into());
        }
        s.submit(old.batch.clone()).await.unwrap();
        run_to_completion(s, old.id("a"), at(50)).await;
        release_blocked(s, at(60)).await;
        run_to_completion(s, old.id("b"), at(100)).await;
        let kept = NewSignal {
            workflow: old.id,
            name: "never-awaited".into(),
            data: json!(1),
            reject: None,
            sent_by: "alice".into(),
            idempotency_key: None,
            request_hash: "h".into(),
            sent_at: at(90),
        };
        s.put_signal(kept.clone()).await.unwrap();

        let recent = workflow(&[def("r", &[])], None);
        s.submit(recent.batch.clone()).await.unwrap();
        advance(s, recent.id("r"), cancel(), at(5_000)).await;

        let paused = workflow(&[def("p", &[])], None);
        s.submit(paused.batch.clone()).await.unwrap();
        advance(s, paused.id("p"), cancel(), at(100)).await;
        let mark = Paused {
            by: "ops".into(),
            reason: "keep".into(),
            at: at(110),
            frozen_at: None,
        };
        s.control(ControlWrite {
            records: Vec::new(),
            workflow_pause: Some((paused.id, Some(mark))),
            budgets: None,
            audit: None,
        })
        .await
        .unwrap();

        let retrying = workflow(&[def("f", &[])], None);
        s.submit(retrying.batch.clone()).await.unwrap();
        let f = claim_one(s, agent(2), at(70)).await.unwrap();
        assert_eq!(f.id, retrying.id("f"));
        let token = f.fencing_token;
        advance(
            s,
            f.id,
            Event::ExecutionStarted {
                by_claim: false,
                agent: agent(2),
                token,
            },
            at(80),
        )
        .await;
        let failed = advance(
            s,
            f.id,
            Event::ExecutionFailed {
                agent: agent(2),
                token,
                error: ErrorReport {
                    kind: "flaky".into(),
                    message: "try again".into(),
                    retryable: true,
                },
                usage: Default::default(),
            },
            at(90),
        )
        .await;
        assert!(matches!(
            failed.state,
            State::Failed {
                retry_at: Some(_),
                ..
            }
        ));

        let live = with_input(
            workflow(&[def("l", &[])], None),
            "l",
            json!({"shared": {"$artifact": shared.to_string()}}),
        );
        s.submit(live.batch.clone()).await.unwrap();
        // The completions' effects wait in the outbox: not finished until they are carried out.
        assert!(s
            .gc_candidates(scan(1_000, 100))
            .await
            .unwrap()
            .candidates
            .is_empty());
        ack_all(s).await;

        let page = s.gc_candidates(scan(1_000, 100)).await.unwrap();
        assert_eq!(page.next, None, "fewer than the limit: the scan is over");
        assert_eq!(page.candidates.len(), 1, "{page:?}");
        let c = &page.candidates[0];
        assert_eq!(
            (c.workflow, c.tasks, c.finished_at, c.created_at),
            (old.id, 2, at(100), T0)
        );
        assert_eq!(c.idempotency_key.as_deref(), Some("old-key"));
        // Page by page, one workflow at a time: the same candidate, once.
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .gc_candidates(GcScan {
                    after,
                    ..scan(1_000, 1)
                })
                .await
                .unwrap();
            found.extend(page.candidates.iter().map(|c| c.workflow));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(found, vec![old.id]);
        assert!(s
            .gc_candidates(scan(100, 100))
            .await
            .unwrap()
            .candidates
            .is_empty());

        let history: u64 = {
            let a = s.history(old.id("a"), 0, 100).await.unwrap().len();
            let b = s.history(old.id("b"), 0, 100).await.unwrap().len();
            (a + b) as u64
        };
        let preview = s.gc_preview(vec![old.id]).await.unwrap();
        assert_eq!(
            (preview.tasks, preview.history, preview.signals),
            (2, history, 1)
        );
        let mut expected = vec![(own, 1), (shared, 1)];
        expected.sort_by_key(|(a, _)| a.hex());
        assert_eq!(preview.artifact_refs, expected);
        let refs = s.artifact_refs(vec![own, shared]).await.unwrap();
        assert_eq!(
            refs.iter()
                .map(|r| (r.artifact, r.refs))
                .collect::<Vec<_>>(),
            vec![(own, 1), (shared, 2)]
        );
        let counts_before = s.counts(None).await.unwrap();
        let every_group = GcPrune {
            agents_seen_before: None,
            audit_before: None,
            fair_pass_upto: Some(i64::MAX),
            concurrency_freed_before: T0,
            artifacts_uploaded_before: T0,
            limit: 1,
        };
        let groups = s
            .gc_prune(every_group.clone(), true)
            .await
            .unwrap()
            .fair_groups;
        assert_eq!(groups, 5, "one fairness group per workflow");

        // The first batch marks it (and refuses the live one) and deletes one task.
        let first = s
            .gc_workflows(batch(vec![old.id, live.id, paused.id], 1))
            .await
            .unwrap();
        assert_eq!(first.marked, vec![old.id]);
        assert_eq!((first.tasks, first.more), (1, true));
        assert!(first.workflows.is_empty());
        assert_eq!(s.gc_marked(10).await.unwrap(), vec![old.id]);
        assert!(
            s.workflow(old.id).await.unwrap().is_none(),
            "no longer shown"
        );
        // Being deleted, it takes nothing more: controls, tasks, signals are refused.
        let refused = s
            .control(ControlWrite {
                records: Vec::new(),
                workflow_pause: Some((old.id, None)),
                budgets: None,
                audit: None,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::WorkflowNotFound(w) if w == old.id),
            "{refused:?}"
        );
        let added = SubmitBatch {
            workflow: WorkflowRef::Existing {
                id: old.id,
                paused: false,
            },
            tasks: Vec::new(),
            edges: Vec::new(),
            transitions: Vec::new(),
        };
        let refused = s.submit(added).await.unwrap_err();
        assert!(
            matches!(refused, StoreError::WorkflowNotFound(_)),
            "{refused:?}"
        );
        let refused = s.put_signal(kept).await.unwrap_err();
        assert!(
            matches!(refused, StoreError::WorkflowNotFound(_)),
            "{refused:?}"
        );

        // The next batch, asked to mark nothing, finishes it.
        let second = s.gc_workflows(batch(Vec::new(), 10)).await.unwrap();
        assert_eq!(second.workflows, vec![old.id]);
        assert_eq!((second.tasks, second.signals), (1, 1));
        assert_eq!(first.history + second.history, history);
        assert_eq!(
            first.artifacts_released + second.artifacts_released,
            1,
            "`own`; `shared` is still referred to"
        );
        assert!(!second.more);
        assert!(s.gc_marked(10).await.unwrap().is_empty());
        for key in ["a", "b"] {
            assert!(s.task(old.id(key)).await.unwrap().is_none());
            assert!(s.history(old.id(key), 0, 10).await.unwrap().is_empty());
        }
        assert!(s.signals(old.id, 0, 10).await.unwrap().is_empty());
        assert!(s.workflow_usage(old.id).await.unwrap().is_empty());
        let mut team = Labels::new();
        team.insert("team".into(), "x".into());
        assert!(s
            .workflows_labelled(&team, None, 10)
            .await
            .unwrap()
            .is_empty());
        let mut counts = counts_before;
        counts.0[StateKind::Completed.index()] -= 2;
        assert_eq!(s.counts(None).await.unwrap(), counts);
        assert_eq!(
            s.gc_prune(every_group, true).await.unwrap().fair_groups,
            groups - 1,
            "its fairness group went with it"
        );
        // Nothing else changed.
        for (flow, key) in [
            (&live, "l"),
            (&recent, "r"),
            (&paused, "p"),
            (&retrying, "f"),
        ] {
            assert!(s.task(flow.id(key)).await.unwrap().is_some());
            assert!(s.workflow(flow.id).await.unwrap().is_some());
        }
        // The released artifact goes with the sweep (its upload is old); the shared one stays.
        assert_eq!(s.sweep_artifacts(at(10_000), 10).await.unwrap(), vec![own]);
        assert!(s.artifact(shared).await.unwrap().is_some());
        // A batch with nothing to do does nothing.
        assert_eq!(
            s.gc_workflows(batch(vec![old.id], 10)).await.unwrap(),
            GcDeleted::default()
        );
        // Its idempotency key went with it.
        let again = workflow(&[def("a", &[])], Some("old-key"));
        assert!(matches!(
            s.submit(again.batch).await.unwrap(),
            SubmitOutcome::Created { .. }
        ));
    }

    /// The mark checks again, in its own transaction, what the scan saw: a task reopened
    /// since (an operator's rerun) keeps the workflow.
    pub async fn retention_checks_again_before_it_marks<S: Store>(s: &S) {
        let flow = workflow(&[def("a", &[])], None);
        s.submit(flow.batch.clone()).await.unwrap();
        let done = run_to_completion(s, flow.id("a"), at(100)).await;
        ack_all(s).await;
        let page = s.gc_candidates(scan(1_000, 10)).await.unwrap();
        assert_eq!(page.candidates.len(), 1);
        let rerun = Event::Reopened {
            requested_by: "ops".into(),
            reason: "again".into(),
            root: "a".into(),
            input: None,
            keep_items: false,
            retired: Vec::new(),
        };
        s.control(ControlWrite {
            records: vec![record(&done, rerun, at(200))],
            workflow_pause: None,
            budgets: None,
            audit: None,
        })
        .await
        .unwrap();
        let out = s.gc_workflows(batch(vec![flow.id], 10)).await.unwrap();
        assert_eq!(out, GcDeleted::default(), "reopened: kept");
        assert!(s.task(flow.id("a")).await.unwrap().is_some());
        // Finished again, but after the cutoff: still kept.
        advance(s, flow.id("a"), cancel(), at(1_500)).await;
        ack_all(s).await;
        let out = s.gc_workflows(batch(vec![flow.id], 10)).await.unwrap();
        assert!(out.marked.is_empty());
        let later = GcBatch {
            finished_before: at(2_000),
            ..batch(vec![flow.id], 10)
        };
        let out = s.gc_workflows(later).await.unwrap();
        assert_eq!((out.marked, out.workflows), (vec![flow.id], vec![flow.id]));
    }

    /// Pruning deletes agents silent since the cutoff that hold no lease, audit entries older
    /// than theirs, fairness groups the clock has passed and concurrency keys no task holds
    /// whose last slot was freed long ago; a dry run counts the same and deletes nothing.
    pub async fn pruning_deletes_what_only_served_work_that_is_gone<S: Store>(s: &S) {
        let agent_at = |n: u128, seen: u64| AgentRecord {
            id: agent(200 + n),
            name: format!("a{n}"),
            capabilities: caps(&["work"]),
            concurrency: 5,
            registered_at: at(seen),
            last_seen: at(seen),
            registered_by: "ci".into(),
        };
        s.register_agent(agent_at(0, 10), 100).await.unwrap();
        s.register_agent(agent_at(1, 10), 100).await.unwrap();
        s.register_agent(agent_at(2, 5_000), 100).await.unwrap();
        // Agent 1 holds a lease on a task with a concurrency key; another such task completes.
        let mut flow = workflow(&[def("k1", &[]), def("k2", &[])], None);
        for new in flow.batch.tasks.iter_mut() {
            Arc::make_mut(&mut new.task.spec).concurrency = vec![ConcurrencyKey {
                key: "gpu".into(),
                max: 5,
            }];
        }
        s.submit(flow.batch.clone()).await.unwrap();
        let first = claim_one(s, agent(201), at(20)).await.unwrap();
        let second = claim_one(s, agent(201), at(20)).await.unwrap();
        advance(s, second.id, cancel(), at(30)).await;
        let write_audit = |t: u64| AuditEntry {
            id: 0,
            at: at(t),
            actor: "ops".into(),
            action: "cancel".into(),
            workflow: None,
            task: None,
            reason: "r".into(),
            detail: "{}".into(),
        };
        for t in [10, 20, 3_000] {
            s.control(ControlWrite {
                records: Vec::new(),
                workflow_pause: None,
                budgets: None,
                audit: Some(write_audit(t)),
            })
            .await
            .unwrap();
        }
        // A workflow of more tasks than a turn holds: claiming them all moves the clock to
        // its second turn, past the first workflow's group, whose turns it can no longer
        // change; the big workflow's group stays (its last turn is past the clock).
        let names: Vec<String> = (0..FAIR_QUANTUM + 8).map(|i| format!("big{i}")).collect();
        let big = workflow(&names.iter().map(|k| def(k, &[])).collect::<Vec<_>>(), None);
        s.submit(big.batch.clone()).await.unwrap();
        let taken = s
            .claim(ClaimRequest {
                start: false,
                agent: agent(202),
                capabilities: caps(&["work"]),
                leases: (0..names.len()).map(|_| LeaseId(Uuid::now_v7())).collect(),
                now: at(25),
                max_held: None,
            })
            .await
            .unwrap();
        assert_eq!(taken.len(), names.len());
        let clock = s.fair_clock().await.unwrap();
        assert_eq!(clock, FAIR_QUANTUM, "the claims took the second turn");
        let prune = GcPrune {
            agents_seen_before: Some(at(1_000)),
            audit_before: Some(at(1_000)),
            fair_pass_upto: Some(clock),
            concurrency_freed_before: at(1_000),
            artifacts_uploaded_before: at(1_000),
            limit: 100,
        };
        let held = s.concurrency_held().await.unwrap();
        assert_eq!(held, vec![("gpu".to_owned(), 1)]);
        let counted = s.gc_prune(prune.clone(), true).await.unwrap();
        assert_eq!(
            (
                counted.agents,
                counted.audit,
                counted.fair_groups,
                counted.concurrency_keys
            ),
            (1, 2, 1, 0),
            "{counted:?}"
        );
        assert!(
            s.agent(agent(200)).await.unwrap().is_some(),
            "a dry run deletes nothing"
        );
        let pruned = s.gc_prune(prune.clone(), false).await.unwrap();
        assert_eq!(
            pruned,
            GcPruned {
                artifacts: 0,
                ..counted
            }
        );
        assert!(s.agent(agent(200)).await.unwrap().is_none());
        assert!(
            s.agent(agent(201)).await.unwrap().is_some(),
            "it holds a lease"
        );
        assert!(s.agent(agent(202)).await.unwrap().is_some(), "seen since");
        let audit = s
            .audit(AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            audit.iter().map(|a| a.at).collect::<Vec<_>>(),
            vec![at(3_000)]
        );

        // The key's last holder gives it back: kept while freed recently, then pruned.
        advance(s, first.id, cancel(), at(40)).await;
        assert!(s.concurrency_held().await.unwrap().is_empty());
        let recently = GcPrune {
            concurrency_freed_before: at(40),
            ..prune.clone()
        };
        assert_eq!(
            s.gc_prune(recently, false).await.unwrap().concurrency_keys,
            0
        );
        let pruned = s.gc_prune(prune.clone(), false).await.unwrap();
        assert_eq!(pruned.concurrency_keys, 1);
        assert_eq!(s.gc_prune(prune, true).await.unwrap(), GcPruned::default());
    }
}

mod signal_cases {
    use super::*;

    fn new_signal(workflow: WorkflowId, key: Option<&str>, data: serde_json::Value) -> NewSignal {
        NewSignal {
            workflow,
            name: "approve".into(),
            data,
            reject: None,
            sent_by: "alice".into(),
            idempotency_key: key.map(Into::into),
            request_hash: "h1".into(),
            sent_at: at(5),
        }
    }

    pub async fn signals_are_kept_until_a_waiting_task_takes_one<S: Store>(s: &S) {
        // A signal task, ready at once: it waits for `approve`, and no claim finds it.
        let mut flow = workflow(&[def("review", &[])], None);
        let spec = TaskSpec {
            wait_for: Some(WaitFor {
                signal: "approve".into(),
                timeout_ms: None,
            }),
            ..TaskSpec::new("review")
        };
        let sub = Submission {
            task: flow.id("review"),
            workflow: flow.id,
            spec: Arc::new(spec),
            completed: Vec::new(),
            seed: 7,
            input: None,
            unresolved: None,
        };
        flow.batch.tasks[0] = NewTask::submitted(sub, T0).unwrap().0;
        s.submit(flow.batch.clone()).await.unwrap();
        let claimed = s
            .claim(ClaimRequest {
                start: false,
                agent: AgentId(Uuid::now_v7()),
                capabilities: Default::default(),
                leases: vec![LeaseId(Uuid::now_v7())],
                max_held: None,
                now: at(1),
            })
            .await
            .unwrap();
        assert!(claimed.is_empty(), "no agent is handed a signal task");
        let all = TaskFilter {
            limit: 10,
            ..TaskFilter::default()
        };
        let waiting = s.waiting_for_signal(all.clone(), None).await.unwrap();
        assert_eq!(waiting.len(), 1);
        let of_name = TaskFilter {
            workflow: Some(flow.id),
            ..all.clone()
        };
        assert_eq!(
            s.waiting_for_signal(of_name.clone(), Some("approve".into()))
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(s
            .waiting_for_signal(of_name, Some("other".into()))
            .await
            .unwrap()
            .is_empty());

        let first = s
            .put_signal(new_signal(flow.id, Some("k1"), json!({"ok": true})))
            .await
            .unwrap();
        assert!(first.created);
        assert_eq!(first.signal.delivered_at, None);
        let again = s
            .put_signal(new_signal(flow.id, Some("k1"), json!({"ok": true})))
            .await
            .unwrap();
        assert!(!again.created);
        assert_eq!(again.signal, first.signal);
        let mismatch = NewSignal {
            request_hash: "h2".into(),
            ..new_signal(flow.id, Some("k1"), json!(0))
        };
        assert!(matches!(
            s.put_signal(mismatch).await,
            Err(StoreError::IdempotencyMismatch { .. })
        ));
        let second = s
            .put_signal(new_signal(flow.id, None, json!(2)))
            .await
            .unwrap();
        assert!(second.signal.id > first.signal.id);
        let kept = s
            .kept_signals(Some((flow.id, "approve".into())), 10)
            .await
            .unwrap();
        assert_eq!(
            kept.iter().map(|k| k.id).collect::<Vec<_>>(),
            vec![first.signal.id, second.signal.id]
        );

        // The transition that takes the first marks it delivered in the same commit.
        let task = s.task(flow.id("review")).await.unwrap().unwrap();
        let event = Event::SignalReceived {
            signal: "approve".into(),
            id: first.signal.id,
            data: json!({"ok": true}),
            reject: None,
            sent_by: "alice".into(),
        };
        s.apply(TransitionRecord::apply(&task, event, at(6)).unwrap())
            .await
            .unwrap();
        let kept = s.kept_signals(None, 10).await.unwrap();
        assert_eq!(
            kept.iter().map(|k| k.id).collect::<Vec<_>>(),
            vec![second.signal.id]
        );
        let listed = s.signals(flow.id, 0, 10).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].delivered_at, Some(at(6)));
        assert_eq!(listed[0].data, json!({"ok": true}));
        assert!(s.waiting_for_signal(all, None).await.unwrap().is_empty());
        assert_eq!(
            s.signals(flow.id, first.signal.id, 10).await.unwrap().len(),
            1,
            "paged after an id"
        );
    }
}

mod id_cases {
    use super::*;

    /// An id made of `prefix`'s digits then `suffix`'s.
    fn id(prefix: u128, suffix: u32) -> Uuid {
        Uuid::from_u128((prefix << 32) | u128::from(suffix))
    }

    pub async fn short_ids_find_the_tasks_and_workflows_whose_ids_end_in_them<S: Store>(s: &S) {
        let flow = workflow_with_ids(
            &[def("a", &[]), def("b", &["a"]), def("c", &[])],
            None,
            id(0x0192_0001, 0xabcd_1234),
            &[
                id(0x0192_0002, 0x1111_5678),
                id(0x0192_0003, 0x2222_5678),
                id(0x0192_0004, 0xabcd_9999),
            ],
        );
        s.submit(flow.batch.clone()).await.unwrap();
        let other = workflow(&[def("z", &[])], None);
        s.submit(other.batch.clone()).await.unwrap();
        let ending = |digits: &str, limit| {
            let suffix = IdSuffix::parse(digits).unwrap();
            async move { s.ids_ending(suffix, limit).await.unwrap() }
        };

        let one = ending("11115678", 10).await;
        assert_eq!(
            one.tasks,
            [TaskIdMatch {
                id: flow.id("a"),
                workflow: flow.id,
                key: "a".into()
            }]
        );
        assert!(one.workflows.is_empty());

        let two = ending("5678", 10).await;
        let keys: Vec<&str> = two.tasks.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"], "in id order");
        assert_eq!(ending("5678", 1).await.tasks.len(), 1, "at most `limit`");

        let workflow_only = ending("ABCD-1234", 10).await;
        assert!(workflow_only.tasks.is_empty());
        assert_eq!(workflow_only.workflows.len(), 1);
        assert_eq!(workflow_only.workflows[0].id, flow.id);
        assert_eq!(workflow_only.workflows[0].name, "test");

        let whole = flow.id("c").0.to_string();
        let by_whole = ending(&whole, 10).await;
        assert_eq!(by_whole.tasks.len(), 1);
        assert_eq!(by_whole.tasks[0].id, flow.id("c"));

        let middle = ending("abcd", 10).await;
        assert!(
            middle.tasks.is_empty() && middle.workflows.is_empty(),
            "digits inside an id are no suffix: {middle:?}"
        );
        let z = other.id("z").0.simple().to_string();
        let last = ending(&z[24..], 10).await;
        assert_eq!(last.tasks.len(), 1, "{last:?}");
        assert_eq!(last.tasks[0].key.as_str(), "z");
    }
}

macro_rules! conformance {
    ($backend:ident, $open:expr) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some((store, _guard)) = $open else {
                    return;
                };
                        cases::$name(&store).await;
                    }
                };
                (rows $name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some((store, guard)) = $open else {
                            return;
                        };
                        cases::$name(&store, &guard).await;
                    }
                };
                (arc $name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some((store, _guard)) = $open else {
                    return;
                };
                        cases::$name(Arc::new(store)).await;
                    }
                };
            }

            case!(submission_writes_tasks_edges_history_and_counts);
            case!(resubmission_with_the_same_key_returns_the_first_and_writes_nothing);
            case!(a_submission_that_fails_writes_nothing);
            case!(a_stale_version_is_a_typed_conflict_not_an_overwrite);
            case!(arc of_many_concurrent_writers_of_one_version_exactly_one_wins);
            case!(apply_all_commits_each_record_on_its_own);
            case!(apply_all_undoes_a_record_that_fails_after_writing);
            case!(completion_releases_dependents_in_its_own_commit);
            case!(a_dependent_with_an_input_template_is_left_to_the_engine);
            case!(completions_in_one_commit_release_a_dependent_once);
            case!(rows a_dependent_that_does_not_decode_is_left_to_the_engine);
            case!(a_superseded_task_is_no_longer_a_dependency);
            case!(usage_adds_up_per_workflow_and_label_and_budgets_are_kept);
            case!(a_task_released_on_an_open_dependency_is_refused);
            case!(a_control_writes_all_its_transitions_or_none_with_its_audit_entry);
            case!(claims_take_the_highest_priority_then_the_oldest_the_agent_can_run);
            case!(a_claim_that_starts_writes_both_transitions);
            case!(arc concurrent_claimers_never_get_the_same_task);
            case!(due_timers_come_from_deadlines_and_retries);
            case!(history_is_ordered_and_replays_to_the_stored_task);
            case!(rows a_task_input_is_stored_once_and_read_back_exactly);
            case!(tasks_list_by_workflow_and_state_in_pages);
            case!(agents_are_registered_updated_and_listed);
            case!(agents_register_under_their_registrar_cap_and_page_by_id);
            case!(schedules_and_triggers_page_by_name);
            case!(decomposition_adds_tasks_and_makes_dependents_wait_in_one_transaction);
            case!(hot_paths_read_indexes_not_whole_tables);
            case!(arc concurrent_claims_of_one_agent_never_exceed_its_limit);
            case!(arc concurrent_claims_respect_concurrency_keys_and_rate_limits);
            case!(claims_take_from_each_fairness_group_in_turn);
            case!(workflows_list_newest_first_with_their_edges);
            case!(workflows_keep_their_labels_and_list_by_them);

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn short_ids_find_the_tasks_and_workflows_whose_ids_end_in_them() {
                let Some((store, _guard)) = $open else {
                    return;
                };
                id_cases::short_ids_find_the_tasks_and_workflows_whose_ids_end_in_them(&store)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retention_deletes_finished_workflows_a_batch_at_a_time() {
                let Some((store, _guard)) = $open else {
                    return;
                };
                retention_cases::retention_deletes_finished_workflows_a_batch_at_a_time(&store)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retention_checks_again_before_it_marks() {
                let Some((store, _guard)) = $open else {
                    return;
                };
                retention_cases::retention_checks_again_before_it_marks(&store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pruning_deletes_what_only_served_work_that_is_gone() {
                let Some((store, _guard)) = $open else {
                    return;
                };
                retention_cases::pruning_deletes_what_only_served_work_that_is_gone(&store)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn signals_are_kept_until_a_waiting_task_takes_one() {
                let Some((store, _guard)) = $open else {
                    return;
                };
                signal_cases::signals_are_kept_until_a_waiting_task_takes_one(&store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn artifacts_are_stored_read_and_kept_while_a_task_refers_to_them() {
                let Some((store, _guard)) = $open else {
                    return;
                };
                artifact_cases::artifacts_are_stored_read_and_kept_while_a_task_refers_to_them(
                    &store,
                )
                .await;
            }
        }
    };
}

fn sqlite_store() -> Option<(baton_store::sqlite::SqliteStore, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let store = baton_store::sqlite::SqliteStore::open(dir.path().join("baton.db")).unwrap();
    Some((store, dir))
}

conformance!(sqlite, sqlite_store());

/// `None` when no PostgreSQL server answers: the test is skipped.
async fn pg_store() -> Option<(baton_store::postgres::PgStore, common::pg::Schema)> {
    let schema = common::pg::Schema::new()?;
    let store = schema.open().await;
    Some((store, schema))
}

conformance!(postgres, pg_store().await);
