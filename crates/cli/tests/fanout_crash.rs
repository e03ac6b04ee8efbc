//! A fan-out killed while it expands: `baton serve` is killed with SIGKILL at moments around
//! the expansion of a `for_each` over 2,000 elements (one commit creates the items and records
//! `for_each_expanded`). Read right after each kill, the store holds all the items or none;
//! started again, the server finishes the expansion once, and `baton check` is clean. On
//! SQLite and PostgreSQL.

mod common;
#[path = "common/fleet.rs"]
mod fleet;

use std::time::{Duration, Instant};

use baton_client::Client;
use baton_core::{Capability, TaskKey, TaskSpec};
use baton_store::{AnyStore, Store, TaskFilter};
use common::*;
use fleet::PgSchema;
use serde_json::json;
use uuid::Uuid;

const ITEMS: usize = 2_000;
/// Kill moments after the planner's success was acknowledged, in ms: before, during and after
/// the expansion (a debug build takes a few hundred ms to create 2,000 items).
const DELAYS_MS: [u64; 9] = [0, 100, 140, 170, 200, 230, 260, 300, 1_500];

fn specs() -> Vec<TaskSpec> {
    let cap = |c: &str| [Capability(c.into())].into();
    let mut plan = TaskSpec::new("plan");
    plan.capabilities = cap("plan");
    let mut map = TaskSpec::new("map");
    map.capabilities = cap("item");
    map.depends_on = vec![TaskKey("plan".into())];
    map.for_each = Some(json!({"$from": "plan", "pointer": "/items"}));
    map.input = json!({"n": 1});
    let mut join = TaskSpec::new("join");
    join.capabilities = cap("item");
    join.depends_on = vec![TaskKey("map".into())];
    vec![plan, map, join]
}

/// Submits the workflow and completes its planner with `ITEMS` elements; returns the
/// workflow once the success is acknowledged.
async fn plan(url: &str) -> Uuid {
    let client = Client::new(url).unwrap();
    let created = client
        .submit_workflow("fan-out crash", None, &specs())
        .await
        .expect("submitted");
    let agent = client
        .register_agent("planner", &[Capability("plan".into())], 1)
        .await
        .expect("registered");
    let claimed = client
        .claim(agent.id, 1, Duration::from_secs(10))
        .await
        .expect("claimed")
        .pop()
        .expect("the plan is handed out");
    client.started(&claimed, agent.id).await.expect("started");
    let items: Vec<usize> = (0..ITEMS).collect();
    client
        .succeeded(&claimed, agent.id, json!({ "items": items }))
        .await
        .expect("succeeded");
    created.workflow
}

/// The workflow's tasks as the store holds them, and whether the map recorded its expansion.
async fn stored(store_url: &str, workflow: Uuid) -> (usize, Option<u32>) {
    let store = AnyStore::open(store_url).await.expect("the store opens");
    let mut tasks = Vec::new();
    let mut pages = baton_store::TaskPages::new(TaskFilter {
        workflow: Some(baton_core::WorkflowId(workflow)),
        ..TaskFilter::default()
    });
    while let Some(page) = pages.next(&store).await.expect("a page") {
        tasks.extend(page);
    }
    let map = store
        .task_by_key(baton_core::WorkflowId(workflow), TaskKey("map".into()))
        .await
        .expect("read")
        .expect("the map");
    (tasks.len(), map.expanded)
}

fn crash_during_expansion(args: &[&str], store_url: &str, dir: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut node = Node::start(args, dir.join("serve.log"));
    let mut workflows = Vec::new();
    for delay in DELAYS_MS {
        let workflow = rt.block_on(plan(&node.url));
        std::thread::sleep(Duration::from_millis(delay));
        node.kill();
        let (tasks, expanded) = rt.block_on(stored(store_url, workflow));
        eprintln!("killed {delay} ms after the planner's success: {tasks} tasks stored");
        match expanded {
            None => assert_eq!(tasks, 3, "killed {delay} ms after: no expansion, no items"),
            Some(n) => {
                assert_eq!(n as usize, ITEMS);
                assert_eq!(tasks, 3 + ITEMS, "killed {delay} ms after: every item");
            }
        }
        node.restart();
        workflows.push(workflow);
    }
    // Started again, every fan-out expands, once.
    let client = Client::new(&node.url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    for workflow in &workflows {
        loop {
            let counts = rt.block_on(client.counts(Some(*workflow))).expect("counts");
            if counts.total == (3 + ITEMS) as u64 {
                // The items wait for an agent; the map and the join for them.
                assert_eq!(counts.pending, ITEMS as u64, "{counts:?}");
                assert_eq!(counts.blocked, 2, "{counts:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never expanded: {counts:?}\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(node.terminate().expect("runs").success());
    let mut check = baton();
    check.args(["check", "--store", store_url, "--output", "json"]);
    let report = run_for(check, Duration::from_secs(120)).ok().json();
    assert_eq!(report["violations"], json!([]), "{report:#}");
}

#[test]
fn sqlite_a_fan_out_killed_while_it_expands_has_all_its_items_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    crash_during_expansion(
        &["--data-dir", data],
        &format!("{data}/baton.db"),
        dir.path(),
    );
}

#[test]
fn postgres_a_fan_out_killed_while_it_expands_has_all_its_items_or_none() {
    let Some(schema) = PgSchema::new("baton_fx_") else {
        return;
    };
    let url = schema.url();
    let dir = tempfile::tempdir().unwrap();
    crash_during_expansion(&["--store", &url], &url, dir.path());
}
