//! Synthetic workloads for benchmarks and tests of stores.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::{
    AgentId, Capability, Event, LeaseId, Rejection, Submission, TaskId, TaskSpec, Timestamp,
    WorkflowId,
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    ClaimRequest, NewTask, NewWorkflow, Store, StoreError, SubmitBatch, TransitionRecord,
    WorkflowRef,
};

/// A new workflow of `n` independent tasks (keys `t0`, `t1`, …) that need `capabilities`,
/// submitted at `at`.
pub fn independent_tasks(
    n: usize,
    capabilities: &BTreeSet<Capability>,
    at: Timestamp,
) -> Result<SubmitBatch, Rejection> {
    let workflow = WorkflowId(Uuid::now_v7());
    let tasks = (0..n)
        .map(|i| {
            let mut spec = TaskSpec::new(format!("t{i}"));
            spec.capabilities = capabilities.clone();
            spec.input = json!({ "i": i });
            let sub = Submission {
                task: TaskId(Uuid::now_v7()),
                workflow,
                spec: Arc::new(spec),
                completed: Vec::new(),
                seed: i as u64,
                input: None,
                unresolved: None,
            };
            NewTask::submitted(sub, at).map(|(new, _)| new)
        })
        .collect::<Result<_, _>>()?;
    Ok(SubmitBatch {
        workflow: WorkflowRef::New(NewWorkflow {
            id: workflow,
            name: "bench".into(),
            idempotency_key: None,
            request_hash: String::new(),
            created_at: at,
            outputs: None,
            budgets: Default::default(),
            labels: Default::default(),
        }),
        tasks,
        edges: Vec::new(),
        transitions: Vec::new(),
    })
}

/// Durable transitions per second with `writers` concurrent writers, and writes per commit:
/// each writer's task is leased, started, then heartbeats for `span`, every write awaited
/// (durable) before the next, so that concurrent writes share commits.
pub async fn concurrent_heartbeats<S: Store + 'static>(
    store: Arc<S>,
    writers: usize,
    span: Duration,
) -> Result<(f64, f64), StoreError> {
    let now = || {
        Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        )
    };
    let capabilities = BTreeSet::from([Capability::from("bench")]);
    let batch = independent_tasks(writers, &capabilities, now())
        .unwrap_or_else(|r| panic!("the workload's own tasks are valid, yet refused: {r}"));
    store.submit(batch).await?;
    let agent = AgentId(Uuid::now_v7());
    let claimed = store
        .claim(ClaimRequest {
            start: false,
            agent,
            capabilities,
            leases: (0..writers).map(|_| LeaseId(Uuid::now_v7())).collect(),
            now: now(),
            max_held: None,
        })
        .await?;
    if claimed.len() != writers {
        return Err(StoreError::Backend(format!(
            "claimed {} tasks for {writers} writers",
            claimed.len()
        )));
    }
    let before = store.stats();
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in claimed {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let token = task.fencing_token;
            let mut event = Event::ExecutionStarted {
                agent,
                token,
                by_claim: false,
            };
            let mut task = task;
            let mut done = 0u64;
            while done == 0 || started.elapsed() < span {
                let rec = TransitionRecord::apply(&task, event, now())
                    .expect("a leased task takes its holder's start and heartbeats");
                task = rec.task.clone();
                store.apply(rec).await?;
                done += 1;
                event = Event::Heartbeat {
                    usage: Default::default(),
                    agent,
                    token,
                    progress: Some(json!(done)),
                };
            }
            Ok::<u64, StoreError>(done)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.expect("a writer does not panic")?;
    }
    let secs = started.elapsed().as_secs_f64();
    let after = store.stats();
    let commits = (after.commits - before.commits).max(1);
    Ok((
        total as f64 / secs,
        (after.writes - before.writes) as f64 / commits as f64,
    ))
}
