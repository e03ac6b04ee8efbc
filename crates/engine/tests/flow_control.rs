//! Flow control through the engine: concurrency keys, named rate limits, the wait reasons they
//! give, usage correcting a limit's charge, and what survives a restart. The manual clock moves
//! only when a test moves it, so every bucket level here is exact.

mod common;

use baton_core::{ConcurrencyKey, Limit, RateUse, StateKind, Task, TaskSpec};
use baton_engine::{EngineError, WaitReason};
use common::*;
use proptest::prelude::*;
use serde_json::json;

fn keyed(k: &str, tenant: &str, max: u32) -> TaskSpec {
    TaskSpec {
        input: json!({ "tenant": tenant }),
        concurrency: vec![ConcurrencyKey {
            key: "tenant-{/tenant}".into(),
            max,
        }],
        ..spec(k, &[])
    }
}

fn drawing(k: &str, limit: &str, units: u64) -> TaskSpec {
    TaskSpec {
        rate: vec![RateUse {
            key: limit.into(),
            units,
            usage_unit: None,
        }],
        ..spec(k, &[])
    }
}

fn keys_of(tasks: &[Task]) -> Vec<String> {
    let mut keys: Vec<String> = tasks.iter().map(|t| t.spec.key.0.clone()).collect();
    keys.sort();
    keys
}

async fn waiting(h: &Harness, task: &Task) -> Option<WaitReason> {
    let task = h.task(task.id).await;
    h.engine.wait_reason(&task).await.expect("wait reason")
}

async fn set_limit(h: &Harness, key: &str, units: u64, per_ms: u64) {
    h.engine
        .set_limit(key.into(), Limit { units, per_ms })
        .await
        .expect("the limit is set");
}

#[tokio::test]
async fn a_concurrency_key_runs_at_most_max_tasks_and_a_freed_slot_hands_out_the_next() {
    let h = Harness::new();
    let wf = h
        .submit(vec![
            keyed("a1", "acme", 2),
            keyed("a2", "acme", 2),
            keyed("a3", "acme", 2),
            keyed("a4", "acme", 2),
            keyed("b1", "bolt", 2),
        ])
        .await;
    let agent = h.agent("worker", &["work"], 10).await;
    let first = h.claim(agent, 10).await;
    assert_eq!(
        keys_of(&first),
        ["a1", "a2", "b1"],
        "two of acme, and bolt's own"
    );
    let a3 = h.task(wf.id("a3")).await;
    assert_eq!(
        waiting(&h, &a3).await,
        Some(WaitReason::ConcurrencyFull {
            key: "tenant-acme".into(),
            held: 2,
            max: 2
        })
    );
    assert!(h.claim(agent, 10).await.is_empty(), "acme is full");

    let a1 = first.iter().find(|t| t.spec.key.0 == "a1").unwrap();
    let a1 = h.start(a1).await;
    h.succeed(&a1).await;
    let next = h.claim(agent, 10).await;
    assert_eq!(
        keys_of(&next),
        ["a3"],
        "the freed slot hands out the best parked task"
    );
    assert!(h.claim(agent, 10).await.is_empty());

    // A slot is freed by any way out of Assigned or Executing: a cancellation too.
    h.engine
        .cancel_task(next[0].id, "test".into(), "no longer needed".into())
        .await
        .expect("cancelled");
    assert_eq!(keys_of(&h.claim(agent, 10).await), ["a4"]);
    assert_eq!(h.state(wf.id("a4")).await, StateKind::Assigned);
}

#[tokio::test]
async fn a_rate_limit_hands_out_its_units_per_period_and_says_when_it_has_more() {
    let h = Harness::new();
    set_limit(&h, "llm", 3, 1_000).await;
    let specs = (0..10)
        .map(|i| drawing(&format!("t{i}"), "llm", 1))
        .collect();
    let wf = h.submit(specs).await;
    let agent = h.agent("worker", &["work"], 100).await;
    assert_eq!(
        h.claim(agent, 10).await.len(),
        3,
        "a full bucket: three units"
    );
    let t9 = h.task(wf.id("t9")).await;
    assert_eq!(
        waiting(&h, &t9).await,
        Some(WaitReason::RateLimited {
            limit: "llm".into(),
            units: 1,
            available: 0,
            until: baton_core::Timestamp(T0.0 + 334),
        }),
        "one unit refills every 333.3 ms"
    );
    h.advance(333);
    assert!(h.claim(agent, 10).await.is_empty(), "not yet a whole unit");
    h.advance(1);
    assert_eq!(h.claim(agent, 10).await.len(), 1);
    h.advance(10_000);
    assert_eq!(
        h.claim(agent, 10).await.len(),
        3,
        "a bucket holds at most its units, however long it waited"
    );
    let limits = h.engine.limits().await.expect("limits");
    assert_eq!(limits.len(), 1);
    assert_eq!((limits[0].available, limits[0].parked), (0, 3));
}

async fn parked(h: &Harness) -> u64 {
    h.engine.limits().await.expect("limits")[0].parked
}

#[tokio::test]
async fn a_parked_task_that_leaves_pending_leaves_its_parking() {
    let h = Harness::new();
    set_limit(&h, "llm", 1, 60_000).await;
    let specs = (0..4)
        .map(|i| drawing(&format!("t{i}"), "llm", 1))
        .collect();
    let wf = h.submit(specs).await;
    let agent = h.agent("worker", &["work"], 100).await;
    assert_eq!(h.claim(agent, 10).await.len(), 1, "one unit");
    assert_eq!(parked(&h).await, 3, "the others wait for the next unit");
    let mut pending = Vec::new();
    for key in ["t0", "t1", "t2", "t3"] {
        if h.state(wf.id(key)).await == StateKind::Pending {
            pending.push(wf.id(key));
        }
    }
    assert_eq!(pending.len(), 3);
    let id = pending[0];
    h.engine
        .cancel_task(id, "test".into(), "no longer needed".into())
        .await
        .expect("cancelled");
    assert_eq!(h.state(id).await, StateKind::Cancelled);
    assert_eq!(parked(&h).await, 2, "a cancelled task is parked no more");
    assert_eq!(waiting(&h, &h.task(id).await).await, None);
}

#[tokio::test]
async fn what_an_agent_reports_corrects_the_units_its_claim_drew() {
    let h = Harness::new();
    set_limit(&h, "tokens", 1_000, 60_000).await;
    let with_usage = |k: &str| TaskSpec {
        rate: vec![RateUse {
            key: "tokens".into(),
            units: 400,
            usage_unit: Some("tokens".into()),
        }],
        ..spec(k, &[])
    };
    h.submit(vec![with_usage("a"), with_usage("b"), with_usage("c")])
        .await;
    let agent = h.agent("worker", &["work"], 10).await;
    let claimed = h.claim(agent, 10).await;
    assert_eq!(claimed.len(), 2, "800 of 1,000 drawn; the third needs 400");
    let a = h.start(&claimed[0]).await;
    let (agent_id, token) = lease(&a);
    let mut usage = baton_core::Usage::new();
    usage.insert("tokens".into(), baton_core::Amount::of(99.5).unwrap());
    h.report(
        a.id,
        baton_core::Event::ExecutionSucceeded {
            agent: agent_id,
            token,
            result: Some(json!({})),
            usage,
        },
    )
    .await
    .expect("succeeded");
    // Used 100 (99.5 rounded up), drew 400: 300 come back, 500 are there.
    let limits = h.engine.limits().await.expect("limits");
    assert_eq!(limits[0].available, 500);
    assert_eq!(h.claim(agent, 10).await.len(), 1);
}

#[tokio::test]
async fn bad_flow_control_is_refused_at_submission_naming_the_field() {
    let h = Harness::new();
    set_limit(&h, "llm", 10, 1_000).await;
    let refused = |r: Result<baton_engine::WorkflowReceipt, EngineError>| match r {
        Err(EngineError::Invalid { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let submit = |specs| h.engine.submit_workflow(request(specs));
    assert_eq!(
        refused(submit(vec![spec("ok", &[]), drawing("x", "nope", 1)]).await),
        "tasks[1].rate[0].key"
    );
    assert_eq!(
        refused(submit(vec![drawing("x", "llm", 11)]).await),
        "tasks[0].rate[0].units"
    );
    assert_eq!(
        refused(submit(vec![drawing("x", "llm", 0)]).await),
        "tasks[0].rate[0].units"
    );
    assert_eq!(
        refused(submit(vec![keyed("x", "acme", 0)]).await),
        "tasks[0].concurrency[0].max"
    );
    let bad_limit = h
        .engine
        .set_limit(
            "llm".into(),
            Limit {
                units: 0,
                per_ms: 1,
            },
        )
        .await;
    assert!(matches!(bad_limit, Err(EngineError::Invalid { field, .. }) if field == "units"));
    assert_eq!(
        h.engine.limit("llm").await.unwrap().limit.units,
        10,
        "unchanged"
    );
    assert!(h.counts(None).await.total() == 0, "nothing was created");
    assert!(matches!(
        h.engine.delete_limit("nope".into()).await,
        Err(EngineError::LimitNotFound(_))
    ));
}

#[tokio::test]
async fn keys_and_buckets_hold_across_a_restart_and_a_deleted_limit_holds_nothing() {
    let h = Harness::new();
    set_limit(&h, "llm", 2, 60_000).await;
    let mut specs: Vec<TaskSpec> = (0..4)
        .map(|i| drawing(&format!("r{i}"), "llm", 1))
        .collect();
    specs.extend((0..3).map(|i| keyed(&format!("k{i}"), "acme", 1)));
    h.submit(specs).await;
    let agent = h.agent("worker", &["work"], 100).await;
    assert_eq!(h.claim(agent, 10).await.len(), 3, "two units and one slot");

    let h = h.restart();
    let agent = h.agent("worker", &["work"], 100).await;
    assert!(
        h.claim(agent, 10).await.is_empty(),
        "still drawn, still held"
    );
    h.engine.delete_limit("llm".into()).await.expect("deleted");
    assert_eq!(
        h.claim(agent, 10).await.len(),
        2,
        "the tasks parked on the deleted limit run; the key still holds"
    );
}

/// One step of a random run: claim up to `n`, finish the `n`th task held, or let time pass.
#[derive(Clone, Debug)]
enum Step {
    Claim(usize),
    Finish(usize),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1usize..6).prop_map(Step::Claim),
        (0usize..8).prop_map(Step::Finish),
        (1u64..700).prop_map(Step::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Never more than `max` tasks of a key assigned or executing, and never more units handed
    /// out since the start than a full bucket plus its refills.
    #[test]
    fn claims_never_exceed_a_key_or_a_limit(steps in prop::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let h = Harness::new();
            let (units, per_ms, max) = (4u64, 1_000u64, 2u64);
            set_limit(&h, "llm", units, per_ms).await;
            let specs = (0..30)
                .map(|i| TaskSpec {
                    rate: if i % 3 == 0 { Vec::new() } else {
                        vec![RateUse { key: "llm".into(), units: 1, usage_unit: None }]
                    },
                    ..keyed(&format!("t{i}"), if i % 2 == 0 { "acme" } else { "bolt" }, max as u32)
                })
                .collect();
            h.submit(specs).await;
            let agent = h.agent("worker", &["work"], 100).await;
            let mut held: Vec<Task> = Vec::new();
            let mut drawn = 0u64;
            for step in steps {
                match step {
                    Step::Claim(n) => {
                        let claimed = h.claim(agent, n).await;
                        drawn += claimed.iter().filter(|t| !t.spec.rate.is_empty()).count() as u64;
                        held.extend(claimed);
                    }
                    Step::Finish(i) if !held.is_empty() => {
                        let t = held.remove(i % held.len());
                        let t = h.start(&t).await;
                        h.succeed(&t).await;
                    }
                    Step::Finish(_) => {}
                    Step::Wait(ms) => h.advance(ms),
                }
                for tenant in ["acme", "bolt"] {
                    let running = held
                        .iter()
                        .filter(|t| t.input() == Some(&json!({"tenant": tenant})))
                        .count() as u64;
                    assert!(running <= max, "{running} tasks of {tenant} run, max {max}");
                }
                let elapsed = h.now().0 - T0.0;
                let allowed = units + elapsed * units / per_ms;
                assert!(drawn <= allowed, "{drawn} units handed out, {allowed} allowed");
            }
        });
    }
}

#[tokio::test]
async fn there_are_at_most_limits_max_limits_so_every_one_is_read_at_once() {
    let h = Harness::new();
    let mut sets = tokio::task::JoinSet::new();
    for i in 0..baton_engine::LIMITS_MAX {
        let engine = h.engine.clone();
        sets.spawn(async move {
            engine
                .set_limit(
                    format!("l{i:04}"),
                    Limit {
                        units: 1,
                        per_ms: 1_000,
                    },
                )
                .await
        });
    }
    while let Some(set) = sets.join_next().await {
        set.unwrap().expect("the limit is set");
    }
    let refused = h
        .engine
        .set_limit(
            "one-more".into(),
            Limit {
                units: 1,
                per_ms: 1_000,
            },
        )
        .await;
    assert!(matches!(refused, Err(EngineError::Invalid { field, .. }) if field == "key"));
    let last = format!("l{:04}", baton_engine::LIMITS_MAX - 1);
    h.engine
        .set_limit(
            last.clone(),
            Limit {
                units: 2,
                per_ms: 1_000,
            },
        )
        .await
        .expect("an existing limit still changes");
    assert_eq!(
        h.engine.limits().await.unwrap().len(),
        baton_engine::LIMITS_MAX
    );
    h.submit(vec![drawing("t", &last, 2)]).await;
}
