//! A property of the graph with data flowing along it: no task is released (ready, leased,
//! running, or a fan-out completing) before every task it depends on has completed, the items
//! a fan-out expanded into included; a fan-out's result is its items' results in element
//! order; and `baton check` finds every history exact. Random workflows (dependencies, fan-outs
//! over a dependency's result, input templates that may find nothing), worked by an agent that
//! completes, fails and retries in random order, while an operator reruns random tasks (through
//! fan-outs, which expand anew, and from their items), on the real SQLite store.
//!
//! `BATON_FANOUT_SEEDS=500 cargo test --release -p baton-engine --test fanout` runs more seeds.

mod common;

use std::collections::HashMap;

use baton_core::{State, StateKind, Task, TaskKey, TaskSpec};
use baton_engine::check::check_store;
use common::*;
use serde_json::{json, Value};

/// splitmix64: enough randomness for drawing workflows, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

fn workflow(rng: &mut Rng) -> Vec<TaskSpec> {
    let n = 3 + rng.below(6) as usize;
    let mut specs = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("t{i}");
        let mut deps: Vec<String> = (0..i)
            .filter(|_| rng.chance(350))
            .map(|j| format!("t{j}"))
            .collect();
        deps.truncate(3);
        let dep_refs: Vec<&str> = deps.iter().map(String::as_str).collect();
        let mut s = spec(&key, &dep_refs);
        s.retry = retry(2, 100);
        if let Some(first) = deps.first() {
            // A reference to what a dependency produced (which may not be there: then the
            // task fails with `input_unresolved`).
            s.input = json!({"from": {"$from": first, "pointer": "/items/0"}, "key": key});
            if rng.chance(450) {
                s.input = json!({"key": key});
                s.for_each = Some(json!({"$from": first, "pointer": "/items"}));
            }
        }
        specs.push(s);
    }
    specs
}

/// The result an agent reports: a few items, for the fan-outs and references downstream.
fn result(rng: &mut Rng, task: &Task) -> Value {
    let items: Vec<Value> = (0..rng.below(4))
        .map(|i| json!(format!("{}-{i}", task.spec.key)))
        .collect();
    json!({ "items": items, "by": task.spec.key.0 })
}

/// No task is past `Blocked` (a fan-out: completed) while a task it depends on has not
/// completed; a completed fan-out holds its items' results in order.
fn check_releases(tasks: &[Task]) {
    let by_key: HashMap<&TaskKey, &Task> = tasks.iter().map(|t| (&t.spec.key, t)).collect();
    for t in tasks {
        let released = match t.kind() {
            StateKind::Pending | StateKind::Assigned | StateKind::Executing => true,
            StateKind::Completed => t.spec.for_each.is_some(),
            _ => false,
        };
        if released {
            for d in &t.dependencies {
                let dep = by_key.get(d).unwrap_or_else(|| {
                    panic!("{} depends on {d}, which does not exist", t.spec.key)
                });
                assert_eq!(
                    dep.kind(),
                    StateKind::Completed,
                    "{} is {} while its dependency {d} is {}",
                    t.spec.key,
                    t.kind(),
                    dep.kind()
                );
            }
        }
        if let (Some(n), State::Completed { result, .. }) = (t.expanded, &t.state) {
            let items: Vec<Value> = (0..n as usize)
                .map(|i| {
                    let item = by_key[&baton_core::template::item_key(&t.spec.key, i)];
                    match &item.state {
                        State::Completed { result, .. } => result.clone(),
                        other => panic!("{} completed while its item is {other:?}", t.spec.key),
                    }
                })
                .collect();
            assert_eq!(result, &Value::Array(items), "{}'s result", t.spec.key);
        }
    }
}

async fn all_tasks(h: &Harness, workflow: baton_core::WorkflowId) -> Vec<Task> {
    let mut all = Vec::new();
    let mut pages = baton_store::TaskPages::new(baton_store::TaskFilter {
        workflow: Some(workflow),
        ..baton_store::TaskFilter::default()
    });
    while let Some(page) = pages.next(h.engine.store()).await.expect("page") {
        all.extend(page);
    }
    all
}

/// What a seed exercised.
#[derive(Default)]
struct Seen {
    /// Fan-outs that completed having expanded into items.
    fanned_out: usize,
    /// Reruns that superseded a fan-out's items.
    reexpanded: usize,
}

/// Runs one seed. Now and then an operator reruns a random task (an item included), mid-run or
/// once the workflow ended, at most three times a seed.
async fn run_seed(seed: u64) -> Seen {
    let mut rng = Rng(seed);
    let mut seen = Seen::default();
    let h = Harness::new();
    let specs = workflow(&mut rng);
    let flow = h.submit(specs).await;
    let agent = h.agent("worker", &["work"], 8).await;
    let mut held: Vec<Task> = Vec::new();
    let mut reruns = 0;
    for _step in 0..600 {
        h.tick().await;
        held.extend(h.claim(agent, 1 + rng.below(4) as usize).await);
        let tasks = all_tasks(&h, flow.id).await;
        check_releases(&tasks);
        let ended = tasks.iter().all(|t| t.state.is_terminal());
        // Mid-run now and then, and once or twice after the workflow ended.
        if reruns < 3 && (rng.chance(40) || (ended && held.is_empty() && reruns < 2)) {
            reruns += 1;
            let t = &tasks[rng.below(tasks.len() as u64) as usize];
            let op = baton_engine::Operator::new("ops", "fuzz").unwrap();
            let plan = h
                .engine
                .rerun(t.id, op, None, false)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: rerun of {}: {e}", t.spec.key));
            if !plan.superseded.is_empty() {
                seen.reexpanded += 1;
            }
            continue;
        }
        if held.is_empty() {
            let open = tasks.iter().any(|t| !t.state.is_terminal());
            if !open {
                break;
            }
            // Backoffs and deadlines run on the manual clock.
            h.advance(500);
            continue;
        }
        let t = held.remove(rng.below(held.len() as u64) as usize);
        // A rerun may have taken the task back: its agent is told so and drops it.
        let started = match h.report(t.id, started(&t)).await {
            Ok(started) => started,
            Err(e) if overruled(&e) => continue,
            Err(e) => panic!("seed {seed}: start of {}: {e}", t.spec.key),
        };
        let event = if rng.chance(120) {
            failed(&started, "flaky", true)
        } else {
            baton_core::Event::ExecutionSucceeded {
                usage: Default::default(),
                agent,
                token: started.state.lease().expect("leased").token,
                result: Some(result(&mut rng, &started)),
            }
        };
        h.report(started.id, event).await.expect("the report");
    }
    seen.fanned_out = all_tasks(&h, flow.id)
        .await
        .iter()
        .filter(|t| t.expanded.is_some_and(|n| n > 0) && t.kind() == StateKind::Completed)
        .count();
    let tasks = all_tasks(&h, flow.id).await;
    check_releases(&tasks);
    let open: Vec<String> = tasks
        .iter()
        .filter(|t| !t.state.is_terminal())
        .map(|t| format!("{} {}", t.spec.key, t.kind()))
        .collect();
    assert!(open.is_empty(), "seed {seed}: tasks left open: {open:?}");
    let report = check_store(h.engine.store(), |_| {}).await.expect("check");
    assert!(report.is_clean(), "seed {seed}: {:?}", report.violations);
    h.assert_replays(flow.id).await;
    seen
}

fn overruled(e: &baton_engine::EngineError) -> bool {
    matches!(e, baton_engine::EngineError::Rejected(r) if matches!(r.code(), "task_rerun" | "task_superseded" | "stale_lease"))
}

#[tokio::test]
async fn no_dependent_is_released_before_its_dependencies_fan_outs_included() {
    let seeds: u64 = std::env::var("BATON_FANOUT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let (mut fanned_out, mut reexpanded) = (0, 0);
    for seed in 0..seeds {
        let seen = run_seed(seed).await;
        fanned_out += seen.fanned_out;
        reexpanded += seen.reexpanded;
    }
    assert!(
        fanned_out >= seeds as usize / 4,
        "only {fanned_out} fan-outs over items completed in {seeds} seeds: the test drew too few"
    );
    assert!(
        reexpanded > seeds as usize / 20,
        "only {reexpanded} reruns through an expanded fan-out in {seeds} seeds"
    );
}
