//! Synthetic workloads for benchmarks and tests of stores.

use std::collections::BTreeSet;
use std::sync::Arc;

use baton_core::{Capability, Rejection, Submission, TaskId, TaskSpec, Timestamp, WorkflowId};
use serde_json::json;
use uuid::Uuid;

use crate::{NewTask, NewWorkflow, SubmitBatch, WorkflowRef};

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
        }),
        tasks,
        edges: Vec::new(),
        transitions: Vec::new(),
    })
}
