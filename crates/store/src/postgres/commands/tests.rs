//! A batch run pipelined and the same batch run carefully must answer and write the same.
//!
//! Tested here, below the `Store` trait, because through it a careful run cannot be asked
//! for: it only follows a statement failing in a pipelined batch, and which concurrent
//! commands share that batch is up to timing.

use std::collections::BTreeSet;

use baton_core::{AgentId, Capability, Event, LeaseId, StateKind, Timestamp};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::run_batch;
use crate::batch::Reply;
use crate::batch::{Command, Outcome};
use crate::postgres::conn::Conn;
use crate::postgres::{PgOptions, PgStore};
use crate::{workload, AgentRecord, ClaimRequest, StoreError, SubmitOutcome, TransitionRecord};
use require::postgres_url as url;

#[path = "../../../tests/common/require.rs"]
mod require;

/// A reply nobody waits for: the test reads the outcomes `run_batch` returns.
fn reply<T>() -> Reply<T> {
    oneshot::channel().0
}

/// What a batch's outcomes and writes come to, comparable across runs.
#[derive(Debug, PartialEq)]
struct Summary {
    submitted: bool,
    applied: Vec<Result<(), String>>,
    claimed: usize,
    done: Vec<bool>,
    counts: Vec<(String, i64)>,
}

/// Migrates a fresh schema, then runs one batch in it on a writer connection: a submission,
/// a transition of one of its tasks and a stale one, a claim under a limit, an agent, an
/// (empty) acknowledgement.
async fn run(careful: bool) -> Summary {
    let schema = format!("baton_t_{}", Uuid::now_v7().simple());
    let options = PgOptions {
        schema: Some(schema.clone()),
        ..PgOptions::default()
    };
    drop(PgStore::open_with(&url(), options).await.unwrap());
    let mut config: tokio_postgres::Config = url().parse().unwrap();
    config.options(format!("-c search_path={schema}"));
    let conn = Conn::connect(&config, "test").await.unwrap();

    let caps = BTreeSet::from([Capability::from("work")]);
    let now = Timestamp(1_700_000_000_000);
    let batch = workload::independent_tasks(3, &caps, now).unwrap();
    let task = |i: usize| batch.tasks[i].task.clone();
    let cancel = Event::CancelRequested {
        requested_by: "ops".into(),
        reason: "test".into(),
    };
    let cancelled = TransitionRecord::apply(&task(0), cancel.clone(), now).unwrap();
    let mut stale = TransitionRecord::apply(&task(1), cancel, now).unwrap();
    stale.task.version += 1;
    stale.entry.seq += 1;
    let agent = AgentId(Uuid::now_v7());
    let commands = vec![
        Command::Submit(Box::new(batch.clone()), reply()),
        Command::Apply(vec![cancelled, stale], reply()),
        Command::UpsertAgent(
            AgentRecord {
                id: agent,
                name: "a".into(),
                capabilities: caps.clone(),
                concurrency: 5,
                registered_at: now,
                last_seen: now,
                registered_by: "test".into(),
            },
            reply(),
        ),
        Command::Claim(
            ClaimRequest {
                start: false,
                agent,
                capabilities: caps,
                leases: (0..3).map(|_| LeaseId(Uuid::now_v7())).collect(),
                max_held: Some(5),
                now,
            },
            reply(),
        ),
        Command::AckOutbox(Vec::new(), reply()),
    ];
    let outcomes = run_batch(&conn, &commands, careful).await.unwrap();

    let mut summary = Summary {
        submitted: false,
        applied: Vec::new(),
        claimed: 0,
        done: Vec::new(),
        counts: Vec::new(),
    };
    for outcome in outcomes {
        match outcome {
            Outcome::Submit(o) => {
                summary.submitted = matches!(o, Ok(SubmitOutcome::Created { .. }));
            }
            Outcome::Apply(results) => {
                summary.applied = results
                    .into_iter()
                    .map(|r| {
                        r.map(drop).map_err(|e| match e {
                            StoreError::Conflict { .. } => "conflict".to_owned(),
                            other => other.to_string(),
                        })
                    })
                    .collect();
            }
            Outcome::Claim(o) => {
                let claimed = o.unwrap();
                assert!(claimed.iter().all(|t| t.kind() == StateKind::Assigned));
                summary.claimed = claimed.len();
            }
            Outcome::Done(o) => summary.done.push(o.is_ok()),
            Outcome::Released(o) => summary.done.push(o.is_ok()),
            Outcome::PutArtifact(_)
            | Outcome::Collected(_)
            | Outcome::Pruned(_)
            | Outcome::Reclaimed(_)
            | Outcome::Swept(_)
            | Outcome::PutSignal(_)
            | Outcome::Written(_) => {
                unreachable!("PostgreSQL runs no artifact or signal commands in its writers")
            }
        }
    }
    let rows = conn
        .client
        .query(
            "SELECT state, sum(n)::int8 FROM state_counts GROUP BY state HAVING sum(n) <> 0
             ORDER BY state",
            &[],
        )
        .await
        .unwrap();
    summary.counts = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let stored = conn
        .client
        .query(
            "SELECT state, count(*) FROM tasks GROUP BY state ORDER BY state",
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<(String, i64)> = stored.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(summary.counts, stored, "the counters agree with the tasks");
    conn.client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_careful_run_answers_and_writes_like_a_pipelined_one() {
    if require::postgres().is_none() {
        return;
    }
    let pipelined = run(false).await;
    assert_eq!(
        pipelined,
        Summary {
            submitted: true,
            applied: vec![Ok(()), Err("conflict".to_owned())],
            claimed: 2,
            done: vec![true, true],
            counts: vec![("assigned".to_owned(), 2), ("cancelled".to_owned(), 1)],
        }
    );
    assert_eq!(run(true).await, pipelined);
}
