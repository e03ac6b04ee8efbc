//! Throughput of the pure core: `apply` over a task's happy path, `submit`, `replay`, and the
//! dependency graph's build and readiness walk at 10,000 tasks.
//!
//! Run with `cargo bench -p baton-core`.

use std::collections::BTreeSet;
use std::sync::Arc;

use baton_core::{
    apply, replay, submit, AgentId, Capability, Dag, Event, FencingToken, HistoryEntry, LeaseId,
    StateKind, Submission, Task, TaskId, TaskKey, TaskSpec, Timestamp, WorkflowId,
};
use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use serde_json::json;
use uuid::Uuid;

fn main() {
    divan::main();
}

const AGENT: AgentId = AgentId(Uuid::from_u128(0xa6e7));
const TOKEN: FencingToken = FencingToken(1);

fn submission() -> Submission {
    let mut spec = TaskSpec::new("summarize");
    spec.capabilities = BTreeSet::from([Capability::from("llm"), Capability::from("summarize")]);
    spec.input = json!({ "document": "s3://bucket/report.pdf", "words": 200 });
    Submission {
        task: TaskId(Uuid::from_u128(1)),
        workflow: WorkflowId(Uuid::from_u128(2)),
        spec: Arc::new(spec),
        completed: Vec::new(),
        seed: 42,
        input: None,
        unresolved: None,
    }
}

/// The four events that take a pending task to completion, each with the time it arrives.
fn happy_path() -> [(Event, Timestamp); 4] {
    [
        (
            Event::AgentAssigned {
                agent: AGENT,
                capabilities: BTreeSet::from([
                    Capability::from("llm"),
                    Capability::from("summarize"),
                ]),
                lease: LeaseId(Uuid::from_u128(3)),
            },
            Timestamp(1_000),
        ),
        (
            Event::ExecutionStarted {
                by_claim: false,
                agent: AGENT,
                token: TOKEN,
            },
            Timestamp(1_010),
        ),
        (
            Event::Heartbeat {
                usage: Default::default(),
                agent: AGENT,
                token: TOKEN,
                progress: Some(json!({ "done": 0.5 })),
            },
            Timestamp(5_000),
        ),
        (
            Event::ExecutionSucceeded {
                usage: Default::default(),
                agent: AGENT,
                token: TOKEN,
                result: Some(json!({ "summary": "fine" })),
            },
            Timestamp(9_000),
        ),
    ]
}

fn pending_task() -> Task {
    let task = submit(&submission(), Timestamp(0)).unwrap().task;
    assert_eq!(task.kind(), StateKind::Pending);
    task
}

fn run_happy_path(pending: &Task, events: &[(Event, Timestamp)]) -> Task {
    let (first, rest) = events.split_first().unwrap();
    let mut task = apply(pending, &first.0, first.1).unwrap().task;
    for (event, at) in rest {
        task = apply(&task, event, *at).unwrap().task;
    }
    task
}

/// One task from `Pending` to `Completed`: four transitions per iteration.
#[divan::bench]
fn apply_happy_path(bencher: Bencher) {
    let pending = pending_task();
    let events = happy_path();
    assert_eq!(
        run_happy_path(&pending, &events).kind(),
        StateKind::Completed
    );
    bencher
        .counter(ItemsCount::new(events.len()))
        .bench_local(|| run_happy_path(black_box(&pending), black_box(&events)));
}

#[divan::bench]
fn submit_task(bencher: Bencher) {
    let submission = submission();
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| submit(black_box(&submission), Timestamp(0)).unwrap());
}

/// Rebuilds a completed task from its five history entries.
#[divan::bench]
fn replay_five_entries(bencher: Bencher) {
    let mut history = vec![HistoryEntry {
        seq: 1,
        at: Timestamp(0),
        event: Event::Submitted(submission()),
    }];
    history.extend(
        happy_path()
            .into_iter()
            .zip(2..)
            .map(|((event, at), seq)| HistoryEntry { seq, at, event }),
    );
    assert_eq!(replay(&history).unwrap().kind(), StateKind::Completed);
    bencher
        .counter(ItemsCount::new(history.len()))
        .bench_local(|| replay(black_box(&history)).unwrap());
}

const LAYERS: usize = 100;
const WIDTH: usize = 100;
const NODES: usize = LAYERS * WIDTH;

fn node(layer: usize, i: usize) -> TaskKey {
    TaskKey(format!("l{layer}.n{i}"))
}

/// 100 layers of 100 tasks; each task after the first layer waits for two or three tasks of
/// the layer before, spread so that every task has dependents.
fn layered_graph() -> Vec<(TaskKey, Vec<TaskKey>)> {
    (0..LAYERS)
        .flat_map(|layer| (0..WIDTH).map(move |i| (layer, i)))
        .map(|(layer, i)| {
            let deps = match layer {
                0 => Vec::new(),
                _ => {
                    let mut picks = vec![i, (i + 1) % WIDTH];
                    if i % 2 == 0 {
                        picks.push((i + 37) % WIDTH);
                    }
                    picks.into_iter().map(|j| node(layer - 1, j)).collect()
                }
            };
            (node(layer, i), deps)
        })
        .collect()
}

/// A single chain of 10,000 tasks, each waiting for the one listed after it, so that cycle
/// detection walks the whole depth at once.
fn chain_graph() -> Vec<(TaskKey, Vec<TaskKey>)> {
    (0..NODES)
        .map(|i| {
            let deps = if i + 1 < NODES {
                vec![TaskKey(format!("c{}", i + 1))]
            } else {
                Vec::new()
            };
            (TaskKey(format!("c{i}")), deps)
        })
        .collect()
}

fn build(graph: &[(TaskKey, Vec<TaskKey>)]) -> Dag {
    Dag::build(graph.iter().map(|(key, deps)| (key, deps.as_slice()))).unwrap()
}

/// Completes every task as soon as it is ready; returns how many completed.
fn walk(dag: &mut Dag) -> usize {
    let mut ready: Vec<TaskKey> = dag.ready().into_iter().cloned().collect();
    let mut completed = 0;
    while let Some(key) = ready.pop() {
        ready.extend(dag.complete(&key).unwrap().into_iter().cloned());
        completed += 1;
    }
    completed
}

#[divan::bench]
fn dag_build_layered_10k(bencher: Bencher) {
    let graph = layered_graph();
    bencher
        .counter(ItemsCount::new(NODES))
        .bench_local(|| build(black_box(&graph)));
}

#[divan::bench]
fn dag_build_chain_10k(bencher: Bencher) {
    let graph = chain_graph();
    bencher
        .counter(ItemsCount::new(NODES))
        .bench_local(|| build(black_box(&graph)));
}

/// Completes all 10,000 tasks of the layered graph in readiness order.
#[divan::bench]
fn dag_readiness_walk_10k(bencher: Bencher) {
    let dag = build(&layered_graph());
    assert_eq!(walk(&mut dag.clone()), NODES);
    bencher
        .counter(ItemsCount::new(NODES))
        .with_inputs(|| dag.clone())
        .bench_local_refs(walk);
}
