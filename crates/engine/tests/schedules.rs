//! Schedules through the engine, with a manual clock: each tick submits one workflow (however
//! often it is fired), daylight-saving changes, downtime under each catch-up policy, overlap
//! policies, pause and resume, and bad schedules refused with the field named.

mod common;

use baton_core::{CatchUp, Overlap, ScheduleSpec, TaskSpec, Timestamp, WorkflowTemplate};
use baton_engine::EngineError;
use baton_store::Store;
use chrono::TimeZone;
use common::*;

fn schedule(name: &str, cron: &str, timezone: &str) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        cron: cron.into(),
        timezone: timezone.into(),
        workflow: WorkflowTemplate {
            budgets: Default::default(),
            name: "nightly".into(),
            tasks: vec![spec("report", &[])],
            outputs: None,
            labels: Default::default(),
        },
        overlap: Overlap::Allow,
        catch_up: CatchUp::None,
    }
}

/// Milliseconds since the epoch of a local time in `tz`.
fn local(tz: chrono_tz::Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    let t = tz.with_ymd_and_hms(y, mo, d, h, mi, 0).earliest().unwrap();
    Timestamp(t.timestamp_millis() as u64)
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
    local(chrono_tz::UTC, y, mo, d, h, mi)
}

/// The workflows submitted so far, oldest first, with their idempotency keys.
async fn submitted(h: &Harness) -> Vec<String> {
    let mut keys: Vec<(Timestamp, String)> = h
        .engine
        .store()
        .workflows(None, 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.created_at, w.idempotency_key.unwrap_or_default()))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

fn key(name: &str, t: Timestamp) -> String {
    format!("schedule:{name}:{}", t.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_submits_one_workflow_however_often_it_is_fired() {
    let h = Harness::new();
    h.set(utc(2026, 5, 1, 9, 59));
    let info = h
        .engine
        .create_schedule(schedule("hourly", "0 0 * * * *", "UTC"))
        .await
        .unwrap();
    assert_eq!(info.next[0], utc(2026, 5, 1, 10, 0));
    assert_eq!(info.next[1], utc(2026, 5, 1, 11, 0));
    h.tick().await;
    assert!(submitted(&h).await.is_empty(), "not yet");
    h.set(utc(2026, 5, 1, 10, 0));
    h.tick().await;
    h.tick().await;
    assert_eq!(
        submitted(&h).await,
        vec![key("hourly", utc(2026, 5, 1, 10, 0))]
    );
    let shown = h.engine.schedule("hourly").await.unwrap();
    assert_eq!(shown.record.next_fire_at, utc(2026, 5, 1, 11, 0));
    assert_eq!(shown.record.last_tick_at, Some(utc(2026, 5, 1, 10, 0)));
    // Fired again from a stale copy (another node, a crash before the schedule moved on): the
    // idempotency key keeps it to one workflow.
    let receipt = h
        .engine
        .submit_workflow(baton_engine::WorkflowRequest {
            budgets: Default::default(),
            name: "nightly".into(),
            idempotency_key: Some(key("hourly", utc(2026, 5, 1, 10, 0))),
            tasks: vec![spec("report", &[])],
            outputs: None,
            labels: Default::default(),
        })
        .await
        .unwrap();
    assert!(!receipt.created);
    let h = h.restart();
    h.set(utc(2026, 5, 1, 11, 0));
    h.tick().await;
    assert_eq!(submitted(&h).await.len(), 2, "and after a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_local_time_fires_after_the_gap_and_a_repeated_one_fires_once() {
    let berlin = chrono_tz::Europe::Berlin;
    let h = Harness::new();
    // 2026-03-29: clocks go from 02:00 to 03:00 in Berlin; 02:30 does not exist.
    h.set(local(berlin, 2026, 3, 28, 12, 0));
    h.engine
        .create_schedule(schedule("night", "0 30 2 * * *", "Europe/Berlin"))
        .await
        .unwrap();
    let mut fired = Vec::new();
    for (d, hh, mm) in [(29, 1, 0), (29, 3, 0), (29, 4, 0), (30, 2, 30)] {
        h.set(local(berlin, 2026, 3, d, hh, mm));
        h.tick().await;
        fired = submitted(&h).await;
    }
    assert_eq!(
        fired,
        vec![
            key("night", local(berlin, 2026, 3, 29, 3, 0)),
            key("night", local(berlin, 2026, 3, 30, 2, 30)),
        ],
        "the skipped 02:30 fires at 03:00, then 02:30 as usual"
    );

    // 2026-10-25: clocks go from 03:00 back to 02:00; 02:30 happens twice and fires once.
    let h = Harness::new();
    h.set(local(berlin, 2026, 10, 24, 12, 0));
    h.engine
        .create_schedule(schedule("night", "0 30 2 * * *", "Europe/Berlin"))
        .await
        .unwrap();
    let first = local(berlin, 2026, 10, 25, 2, 30);
    for ms in [0, 30 * 60_000, 60 * 60_000, 90 * 60_000, 3 * 3_600_000] {
        h.set(first.plus_ms(ms));
        h.tick().await;
    }
    assert_eq!(submitted(&h).await, vec![key("night", first)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_two_hours_of_downtime_each_catch_up_policy_fires_what_it_says() {
    let start = utc(2026, 6, 1, 0, 0);
    let every_10_min = |catch_up| ScheduleSpec {
        catch_up,
        ..schedule("tenmin", "0 */10 * * * *", "UTC")
    };
    let cases = [
        (CatchUp::None, 0),
        (CatchUp::Latest, 1),
        (CatchUp::All { max: 5 }, 5),
        (CatchUp::All { max: 100 }, 12),
    ];
    for (policy, expected) in cases {
        let h = Harness::new();
        h.set(start.plus_ms(1_000));
        h.engine
            .create_schedule(every_10_min(policy))
            .await
            .unwrap();
        // Down from before the first tick (00:10) until 02:05: ticks 00:10 … 02:00 missed.
        let h = h.restart();
        h.set(utc(2026, 6, 1, 2, 5));
        h.tick().await;
        let fired = submitted(&h).await;
        assert_eq!(fired.len(), expected, "{policy:?}: {fired:?}");
        if expected > 0 {
            assert_eq!(
                fired.last().unwrap(),
                &key("tenmin", utc(2026, 6, 1, 2, 0)),
                "{policy:?}: the latest missed tick is among them"
            );
        }
        let shown = h.engine.schedule("tenmin").await.unwrap();
        assert_eq!(
            shown.record.next_fire_at,
            utc(2026, 6, 1, 2, 10),
            "{policy:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_policies_skip_cancel_or_allow_a_tick_while_the_last_run_is_going() {
    for (overlap, expected) in [
        (Overlap::Skip, 1),
        (Overlap::CancelPrevious, 2),
        (Overlap::Allow, 2),
    ] {
        let h = Harness::new();
        h.set(utc(2026, 6, 1, 0, 0));
        let s = ScheduleSpec {
            overlap,
            ..schedule("minutely", "0 * * * * *", "UTC")
        };
        h.engine.create_schedule(s).await.unwrap();
        h.set(utc(2026, 6, 1, 0, 1));
        h.tick().await;
        // No agent runs `report`: the first run is still going at the next tick.
        h.set(utc(2026, 6, 1, 0, 2));
        h.tick().await;
        let workflows = h.engine.store().workflows(None, 10).await.unwrap();
        assert_eq!(workflows.len(), expected, "{overlap:?}");
        if overlap == Overlap::CancelPrevious {
            let first = workflows.iter().min_by_key(|w| w.created_at).unwrap();
            let counts = h.engine.store().counts(Some(first.id)).await.unwrap();
            assert_eq!(
                counts.get(baton_core::StateKind::Cancelled),
                1,
                "the first run was cancelled"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedule_fires_nothing_and_resumes_from_its_next_tick() {
    let h = Harness::new();
    h.set(utc(2026, 6, 1, 0, 0));
    h.engine
        .create_schedule(schedule("minutely", "0 * * * * *", "UTC"))
        .await
        .unwrap();
    let paused = h.engine.pause_schedule("minutely", true).await.unwrap();
    assert!(paused.record.paused);
    assert!(paused.next.is_empty());
    h.set(utc(2026, 6, 1, 0, 5));
    h.tick().await;
    assert!(submitted(&h).await.is_empty());
    let resumed = h.engine.pause_schedule("minutely", false).await.unwrap();
    assert_eq!(resumed.record.next_fire_at, utc(2026, 6, 1, 0, 6));
    h.set(utc(2026, 6, 1, 0, 6));
    h.tick().await;
    assert_eq!(
        submitted(&h).await,
        vec![key("minutely", utc(2026, 6, 1, 0, 6))]
    );
    h.engine.delete_schedule("minutely").await.unwrap();
    assert!(matches!(
        h.engine.schedule("minutely").await,
        Err(EngineError::ScheduleNotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_naming_the_field() {
    let h = Harness::new();
    let field = |e: EngineError| match e {
        EngineError::Invalid { field, .. } => field,
        other => panic!("expected an invalid field, got {other:?}"),
    };
    let cases = [
        (
            ScheduleSpec {
                cron: "61 * * * * *".into(),
                ..schedule("a", "", "UTC")
            },
            "cron",
        ),
        (schedule("a", "0 * * * * *", "Mars/Olympus"), "timezone"),
        (schedule("bad name", "0 * * * * *", "UTC"), "name"),
        (
            ScheduleSpec {
                catch_up: CatchUp::All { max: 0 },
                ..schedule("a", "0 * * * * *", "UTC")
            },
            "catch_up.max",
        ),
        (
            ScheduleSpec {
                workflow: WorkflowTemplate {
                    budgets: Default::default(),
                    name: String::new(),
                    tasks: vec![TaskSpec::new("bad key")],
                    outputs: None,
                    labels: Default::default(),
                },
                ..schedule("a", "0 * * * * *", "UTC")
            },
            "workflow.tasks[0].key",
        ),
    ];
    for (spec, expected) in cases {
        let e = h.engine.create_schedule(spec).await.unwrap_err();
        assert_eq!(field(e), expected);
    }
    assert!(
        h.engine.schedules(None, 1).await.unwrap().is_empty(),
        "nothing was stored"
    );
    h.engine
        .create_schedule(schedule("a", "0 * * * * *", "UTC"))
        .await
        .unwrap();
    let again = h
        .engine
        .create_schedule(schedule("a", "0 * * * * *", "UTC"))
        .await
        .unwrap_err();
    assert!(matches!(again, EngineError::ScheduleExists(_)), "{again:?}");
}
