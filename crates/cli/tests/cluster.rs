//! Several `baton serve` processes on one PostgreSQL schema, as deployed: agents move between
//! nodes freely; a node killed with SIGKILL (the leader, even) loses nothing; a hung leader is
//! deposed; the watchdog fires once across nodes; wake-ups and the event stream cross nodes; a node that loses its
//! database (or every node, when the database goes away) answers 503 until it is back, then
//! carries on, and nothing it acknowledged is missing.
//!
//! Uses `BATON_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`); every test
//! has a schema of its own, dropped at the end, and is skipped without a server
//! (`common::require`). `BATON_CLUSTER_TASKS` (default 2,000) and
//! `BATON_OUTAGE_TASKS` (default 600) size the two long tests. The tests take turns.

mod common;
#[path = "common/fleet.rs"]
mod fleet;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::wire::ClaimedTask;
use baton_client::{Client, StreamItem};
use baton_core::{Capability, EventKind, StateKind, TaskKey, TaskSpec, Timeouts};
use baton_store::AnyStore;
use common::*;
use fleet::*;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// One test at a time: three debug nodes each are plenty for two cores, and for the
/// server's connection limit.
static SERIAL: Mutex<()> = Mutex::new(());

/// The leadership lock's first key ("BATL"), as `baton_store::postgres::cluster` takes it.
const LEADER_LOCK: i64 = 0x4241_544C;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn client(url: &str) -> Client {
    Client::new(url).expect("a valid URL")
}

fn caps(names: &[&str]) -> Vec<Capability> {
    names.iter().map(|n| Capability((*n).into())).collect()
}

/// Polls `done` every 20 ms until it holds; panics with `what` after `limit`.
#[track_caller]
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The backend pid holding the schema's leadership lock, if a node leads.
fn leader_pid(schema: &PgSchema) -> Option<String> {
    let rows = pg_exec(&format!(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND classid = {LEADER_LOCK} AND objsubid = 2 \
         AND objid = (hashtext('{}')::int8 & 4294967295)::oid",
        schema.name
    ))
    .expect("pg_locks is readable");
    rows.into_iter().next().and_then(|r| r[0].clone())
}

/// `n` nodes on `schema`, logging into `dir`; the first leads (it starts alone and takes the
/// leadership before the others start).
fn nodes(schema: &PgSchema, dir: &Path, n: usize) -> Vec<Node> {
    nodes_on(schema, dir, &vec![schema.url(); n])
}

/// One node per store URL (the same schema, reached however each URL says).
fn nodes_on(schema: &PgSchema, dir: &Path, urls: &[String]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        nodes.push(Node::start(
            &["--store", url],
            dir.join(format!("node{i}.log")),
        ));
        if i == 0 {
            wait_until("the first node leads", Duration::from_secs(15), || {
                leader_pid(schema).is_some()
            });
        }
    }
    nodes
}

fn urls(nodes: &[Node]) -> Vec<String> {
    nodes.iter().map(|n| n.url.clone()).collect()
}

fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| format!("--- node {i} ({}) ---\n{}", n.url, n.log()))
        .collect()
}

fn spec(key: &str, capability: &str) -> TaskSpec {
    let mut s = TaskSpec::new(key);
    s.capabilities = [Capability(capability.into())].into();
    s
}

/// The event kinds of a task's history, as `GET /v1/tasks/{id}` lists them.
async fn history(client: &Client, task: Uuid) -> Vec<EventKind> {
    client
        .task(task)
        .await
        .expect("the task is readable")
        .history
        .iter()
        .map(|h| h.event)
        .collect()
}

/// Waits (bounded) until every task of the workflow has ended, asking any node that answers.
fn wait_ended(
    rt: &tokio::runtime::Runtime,
    urls: &[String],
    workflow: Uuid,
    limit: Duration,
    ledger: &Ledger,
    nodes: &[Node],
) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some((ended, total)) = rt.block_on(progress(urls, workflow)) {
            if ended == total {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the workflow did not end within {limit:?}: {ended} of {total} tasks ended; \
                 unexpected answers: {:?}\n{}",
                ledger.unexpected_answers(),
                logs(nodes)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until the agents have had `n` successes acknowledged.
fn wait_succeeded(ledger: &Ledger, n: u64, nodes: &[Node]) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while ledger.succeeded() < n {
        assert!(
            Instant::now() < deadline,
            "the agents are stuck at {} successes (waiting for {n}); unexpected answers: {:?}\n{}",
            ledger.succeeded(),
            ledger.unexpected_answers(),
            logs(nodes)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops the nodes gracefully, checks the store (every task completed once, every acknowledged
/// report there) and runs `baton check` on it.
fn finish(
    rt: &tokio::runtime::Runtime,
    nodes: &mut [Node],
    url: &str,
    workflow: Uuid,
    ledger: &Ledger,
) -> Verified {
    let unexpected = ledger.unexpected_answers();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    for node in nodes.iter_mut() {
        let status = node.terminate().expect("the node runs");
        assert!(
            status.success(),
            "a node stopped with {status}: {}",
            node.log()
        );
    }
    let acks = ledger.acks();
    let verified = rt.block_on(async {
        let store = AnyStore::open(url).await.expect("the store opens");
        verify(&store, workflow, &acks).await
    });
    let mut check = baton();
    check.args(["check", "--store", url, "--output", "json"]);
    let out = run_for(check, Duration::from_secs(60 + verified.tasks as u64 / 50));
    let report = out.ok().json();
    assert_eq!(report["violations"], json!([]), "{report:#}");
    verified
}

#[test]
fn three_nodes_work_a_workflow_through_a_sigkill_of_the_leader() {
    let _turn = serial();
    let began = Instant::now();
    let Some(schema) = PgSchema::new("baton_cl_") else {
        return;
    };
    let url = schema.url();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tasks = env_or("BATON_CLUSTER_TASKS", 2_000);
    let mut nodes = nodes(&schema, dir.path(), 3);
    let leader = leader_pid(&schema).expect("node 0 leads");
    let urls = urls(&nodes);
    let rt = runtime();

    let workflow = rt.block_on(submit(&urls[1..], &workflow(tasks as usize, 2_000)));
    let fleet = Fleet::start(&rt, &urls, 9, true);
    let ledger = Arc::clone(&fleet.ledger);

    // Midway, the leader dies without a word.
    wait_succeeded(&ledger, tasks / 2, &nodes);
    nodes[0].kill();
    let mut successor = None;
    wait_until(
        "another node takes the lead",
        Duration::from_secs(20),
        || {
            successor = leader_pid(&schema).filter(|pid| *pid != leader);
            successor.is_some()
        },
    );
    // The others carry on (retries and releases need the new leader), then it comes back.
    wait_succeeded(&ledger, tasks * 6 / 10, &nodes);
    nodes[0].restart();

    wait_ended(
        &rt,
        &urls,
        workflow,
        Duration::from_secs(180),
        &ledger,
        &nodes,
    );
    let ledger = fleet.stop(&rt);
    let verified = finish(&rt, &mut nodes, &url, workflow, &ledger);
    assert_eq!(verified.tasks as u64, tasks);
    eprintln!(
        "cluster: {} tasks ({} retried) on 3 nodes, the leader killed at half-way and \
         restarted; {} acknowledged reports verified; {} connection errors and {} 503s retried \
         elsewhere; {:.1} s",
        verified.tasks,
        verified.retried_tasks,
        verified.acks,
        ledger.transport_errors.load(Ordering::Relaxed),
        ledger.unavailable.load(Ordering::Relaxed),
        began.elapsed().as_secs_f64()
    );
}

/// `n` tasks with a 1 s start timeout, submitted through `submit`, all claimed through `claim`
/// by an agent that then says nothing.
async fn silently_claimed(
    submit: &Client,
    claim: &Client,
    n: usize,
) -> baton_client::wire::WorkflowCreated {
    let specs: Vec<TaskSpec> = (0..n)
        .map(|i| {
            let mut s = spec(&format!("t{i}"), "work");
            s.timeouts = Timeouts {
                start_ms: Some(1_000),
                ..Timeouts::default()
            };
            s
        })
        .collect();
    let created = submit
        .submit_workflow("silent", None, &specs)
        .await
        .unwrap();
    let silent = claim
        .register_agent("silent", &caps(&["work"]), n as u32)
        .await
        .unwrap();
    let claimed = claim
        .claim(silent.id, n, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(claimed.len(), n);
    created
}

#[test]
fn the_watchdog_takes_back_expired_leases_once_across_nodes() {
    let _turn = serial();
    let Some(schema) = PgSchema::new("baton_cl_") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nodes = nodes(&schema, dir.path(), 3);
    let urls = urls(&nodes);
    let rt = runtime();
    rt.block_on(async {
        // Claimed through node 1 by an agent that never says another word.
        let created = silently_claimed(&client(&urls[0]), &client(&urls[1]), 40).await;

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let counts = client(&urls[2])
                .counts(Some(created.workflow))
                .await
                .unwrap();
            if counts.pending == 40 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the leases were not taken back: {counts:?}\n{}",
                logs(&nodes)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (i, task) in created.tasks.values().enumerate() {
            let history = history(&client(&urls[i % 3]), *task).await;
            assert_eq!(
                history,
                [
                    EventKind::Submitted,
                    EventKind::AgentAssigned,
                    EventKind::TimeoutExpired
                ],
                "task {task}"
            );
        }
    });
}

/// A leader that hangs with its connections open (SIGSTOP) keeps its session, hence the lock:
/// the next node deposes it once its session has been silent for `LEADER_SILENCE_MAX` (15 s),
/// and the watchdog goes on there. Thawed, the old leader serves as a follower.
#[test]
fn a_hung_leader_is_deposed_and_the_watchdog_goes_on_elsewhere() {
    let _turn = serial();
    let Some(schema) = PgSchema::new("baton_cl_") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nodes = nodes(&schema, dir.path(), 2);
    let hung = leader_pid(&schema).expect("node 0 leads");
    nodes[0].freeze();
    let rt = runtime();
    let outcome = rt.block_on(async {
        let node1 = client(&nodes[1].url);
        let created = silently_claimed(&node1, &node1, 10).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let counts = node1.counts(Some(created.workflow)).await.unwrap();
            if counts.pending == 10 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("the leases were not taken back: {counts:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    nodes[0].thaw();
    if let Err(e) = outcome {
        panic!("{e}\n{}", logs(&nodes));
    }
    let successor = leader_pid(&schema).expect("a node leads");
    assert_ne!(successor, hung, "node 1 took over");
    assert!(
        logs(&nodes).contains("silent too long"),
        "the takeover is logged:\n{}",
        logs(&nodes)
    );
    rt.block_on(async {
        let node0 = client(&nodes[0].url);
        let deadline = Instant::now() + Duration::from_secs(15);
        while node0.counts(None).await.is_err() {
            assert!(Instant::now() < deadline, "the thawed node answers again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert_eq!(
        leader_pid(&schema),
        Some(successor),
        "the thawed node does not take the lead back"
    );
}

#[test]
fn a_claim_waiting_on_one_node_is_woken_by_work_made_ready_on_another() {
    let _turn = serial();
    let Some(schema) = PgSchema::new("baton_cl_") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    // A waiting claim looks again on its own only after a minute, beyond its wait: within
    // the wait, only the other node's notice can wake it.
    let nodes: Vec<Node> = (0..2)
        .map(|i| {
            Node::start(
                &["--store", &schema.url(), "--claim-recheck-ms", "60000"],
                dir.path().join(format!("node{i}.log")),
            )
        })
        .collect();
    let (a, b) = (client(&nodes[0].url), client(&nodes[1].url));
    let rt = runtime();
    const WAIT: Duration = Duration::from_secs(20);
    let claim_waits = |url: &str| {
        wait_until("the claim waits", Duration::from_secs(10), || {
            common::metric(url, "baton_claims_waiting") == Some(1.0)
        })
    };
    rt.block_on(async {
        // A task submitted through B.
        let waiter = a
            .register_agent("waiter", &caps(&["wake"]), 1)
            .await
            .unwrap();
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.claim(waiter.id, 1, WAIT).await })
        };
        claim_waits(&nodes[0].url);
        let created = b
            .submit_workflow("wake", None, &[spec("wake", "wake")])
            .await
            .unwrap();
        let claimed = waiting.await.unwrap().unwrap();
        assert_eq!(claimed.len(), 1, "the claim is woken and returns the task");
        assert_eq!(claimed[0].task, created.tasks["wake"]);

        // A task released when its dependency completes through B.
        let waiter = a
            .register_agent("waiter2", &caps(&["after"]), 1)
            .await
            .unwrap();
        let helper = b
            .register_agent("helper", &caps(&["first"]), 1)
            .await
            .unwrap();
        let mut after = spec("after", "after");
        after.depends_on = vec![TaskKey("first".into())];
        let created = b
            .submit_workflow("release", None, &[spec("first", "first"), after])
            .await
            .unwrap();
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.claim(waiter.id, 1, WAIT).await })
        };
        let first = b.claim(helper.id, 1, Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.len(), 1);
        b.started(&first[0], helper.id).await.unwrap();
        claim_waits(&nodes[0].url);
        b.succeeded(&first[0], helper.id, json!("done"))
            .await
            .unwrap();
        let claimed = waiting.await.unwrap().unwrap();
        assert_eq!(
            claimed.len(),
            1,
            "the claim is woken and returns the released task"
        );
        assert_eq!(claimed[0].task, created.tasks["after"]);
    });
}

#[test]
fn the_event_stream_of_one_node_shows_transitions_committed_through_another() {
    let _turn = serial();
    let Some(schema) = PgSchema::new("baton_cl_") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nodes = nodes(&schema, dir.path(), 2);
    let (a, b) = (client(&nodes[0].url), client(&nodes[1].url));
    let rt = runtime();
    rt.block_on(async {
        let mut stream = a.events(None).await.unwrap();
        let created = b
            .submit_workflow("watched", None, &[spec("watched", "watch")])
            .await
            .unwrap();
        let task = created.tasks["watched"];
        let agent = b
            .register_agent("worker", &caps(&["watch"]), 1)
            .await
            .unwrap();
        let claimed: Vec<ClaimedTask> = b.claim(agent.id, 1, Duration::from_secs(5)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        b.started(&claimed[0], agent.id).await.unwrap();
        b.succeeded(&claimed[0], agent.id, json!({"ok": true}))
            .await
            .unwrap();

        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), async {
            while seen.len() < 4 {
                match stream.next().await {
                    Some(Ok(StreamItem::Transition(ev))) if ev.task == task => {
                        seen.push((ev.event, ev.to, ev.version))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("the stream broke: {e}"),
                    None => panic!("the stream ended"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("node A streamed only {seen:?}"));
        assert_eq!(
            seen,
            [
                (EventKind::Submitted, StateKind::Pending, 1),
                (EventKind::AgentAssigned, StateKind::Assigned, 2),
                (EventKind::ExecutionStarted, StateKind::Executing, 3),
                (EventKind::ExecutionSucceeded, StateKind::Completed, 4),
            ]
        );
    });
}

/// A TCP proxy between a node and PostgreSQL, so that a test can cut one node off the
/// database (every connection closed, new ones refused) and let it back, and knows which
/// backends are that node's.
struct Proxy {
    addr: SocketAddr,
    inner: Arc<ProxyInner>,
}

#[derive(Default)]
struct ProxyInner {
    up: AtomicBool,
    /// Connections refused while cut off.
    refused: AtomicU64,
    /// Open connections: the proxy's local port towards PostgreSQL (the backend's
    /// `client_port`), and the task copying its bytes.
    conns: Mutex<Vec<(u16, tokio::task::JoinHandle<()>)>>,
}

impl Proxy {
    fn start(rt: &tokio::runtime::Runtime, upstream: String) -> Proxy {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("a proxy port");
        let addr = listener.local_addr().expect("its address");
        let inner = Arc::new(ProxyInner::default());
        inner.up.store(true, Ordering::SeqCst);
        let state = Arc::clone(&inner);
        rt.spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                if !state.up.load(Ordering::SeqCst) {
                    state.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Ok(mut up) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let port = up.local_addr().map_or(0, |a| a.port());
                let copy = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
                let mut conns = state.conns.lock().unwrap();
                if state.up.load(Ordering::SeqCst) {
                    conns.push((port, copy));
                } else {
                    copy.abort();
                }
            }
        });
        Proxy { addr, inner }
    }

    /// `url` with its host and port replaced by the proxy's.
    fn url(&self, url: &str) -> String {
        let scheme = url.find("://").expect("a URL") + 3;
        let rest = &url[scheme..];
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let at = rest[..end].rfind('@').map_or(0, |i| i + 1);
        format!(
            "{}{}{}{}",
            &url[..scheme],
            &rest[..at],
            self.addr,
            &rest[end..]
        )
    }

    /// Closes every connection and refuses new ones.
    fn cut(&self) {
        self.inner.up.store(false, Ordering::SeqCst);
        for (_, copy) in self.inner.conns.lock().unwrap().drain(..) {
            copy.abort();
        }
    }

    fn restore(&self) {
        self.inner.up.store(true, Ordering::SeqCst);
    }

    /// `client_port`s of the node's live backends.
    fn ports(&self) -> Vec<u16> {
        let mut conns = self.inner.conns.lock().unwrap();
        conns.retain(|(_, copy)| !copy.is_finished());
        conns.iter().map(|(port, _)| *port).collect()
    }
}

/// `host:port` of the test server.
fn pg_address() -> String {
    let config: tokio_postgres::Config = pg_url().parse().expect("a PostgreSQL URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => panic!("the cluster tests reach PostgreSQL over TCP"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Terminates the backends on these client ports (`pg_terminate_backend`); returns how many.
fn terminate_backends(ports: &[u16]) -> usize {
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    pg_exec(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'baton' AND client_port IN ({list})"
    ))
    .expect("backends can be terminated")
    .iter()
    .filter(|r| r[0].as_deref() == Some("t"))
    .count()
}

/// A write through `client`: registering an agent.
async fn probe_write(client: &Client) -> baton_client::Result<()> {
    client
        .register_agent("probe", &caps(&["probe"]), 1)
        .await
        .map(drop)
}

#[test]
fn a_node_cut_off_from_the_database_answers_503_then_recovers_losing_nothing() {
    let _turn = serial();
    let began = Instant::now();
    let Some(schema) = PgSchema::new("baton_cl_") else {
        return;
    };
    let url = schema.url();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tasks = env_or("BATON_OUTAGE_TASKS", 600);
    let rt = runtime();
    let proxies = [
        Proxy::start(&rt, pg_address()),
        Proxy::start(&rt, pg_address()),
    ];
    let store_urls: Vec<String> = proxies.iter().map(|p| p.url(&url)).collect();
    let mut nodes = nodes_on(&schema, dir.path(), &store_urls);
    let urls = urls(&nodes);
    let (a, b) = (client(&urls[0]), client(&urls[1]));
    let workflow = rt.block_on(submit(&urls[1..], &workflow(tasks as usize, 2_000)));
    let fleet = Fleet::start(&rt, &urls, 4, true);
    let ledger = Arc::clone(&fleet.ledger);

    // Every session of both nodes is terminated: both reconnect and carry on.
    wait_succeeded(&ledger, tasks / 4, &nodes);
    let mut stream = rt.block_on(a.events(None)).expect("A streams");
    let ports: Vec<u16> = proxies.iter().flat_map(Proxy::ports).collect();
    let terminated = terminate_backends(&ports);
    assert!(
        terminated >= 8,
        "writers and listeners of both nodes are terminated, not {terminated}"
    );
    for (node, c) in [&a, &b].into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Err(e) = rt.block_on(probe_write(c)) {
            assert!(retryable(&e), "node {node} answered {e}");
            assert!(
                Instant::now() < deadline,
                "node {node} did not recover from terminated sessions: {e}\n{}",
                logs(&nodes)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // A's listener is back too: its stream shows what B commits.
    rt.block_on(async {
        let created = b
            .submit_workflow("after-terminate", None, &[spec("seen", "nobody")])
            .await
            .expect("B accepts a workflow");
        let task = created.tasks["seen"];
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match stream.next().await {
                    Some(Ok(StreamItem::Transition(ev))) if ev.task == task => return,
                    Some(Ok(_)) => {}
                    other => panic!("A's stream ended: {other:?}"),
                }
            }
        })
        .await
        .expect("A streams B's transitions again after its listener reconnected");
    });

    // A loses the database altogether: it acknowledges nothing, answering 503, while B goes on.
    wait_succeeded(&ledger, tasks / 2, &nodes);
    proxies[0].cut();
    let cut_at = ledger.succeeded();
    let since = Instant::now();
    let mut refusals = 0;
    let mut codes = BTreeSet::new();
    loop {
        match rt.block_on(probe_write(&a)) {
            Ok(()) => panic!("node A acknowledged a write it cannot have committed"),
            Err(e) => {
                assert_eq!(e.status(), Some(503), "node A answered {e}");
                codes.insert(e.code().unwrap_or_default().to_owned());
                refusals += 1;
            }
        }
        match rt.block_on(a.counts(Some(workflow))) {
            Ok(_) => panic!("node A answered a read without a database"),
            Err(e) => assert_eq!(e.status(), Some(503), "node A answered {e}"),
        }
        if since.elapsed() > Duration::from_secs(2) && ledger.succeeded() >= cut_at + 20 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "B made no progress while A was cut off ({} successes since)\n{}",
            ledger.succeeded() - cut_at,
            logs(&nodes)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(codes, BTreeSet::from(["store_unavailable".to_owned()]));
    let attempts = proxies[0].inner.refused.load(Ordering::Relaxed);
    assert!(attempts > 0, "node A tried to reconnect");

    // The database is back for A: it reconnects and acknowledges again.
    let meanwhile = ledger.succeeded() - cut_at;
    let cut_for = since.elapsed();
    proxies[0].restore();
    let restored = Instant::now();
    let deadline = restored + Duration::from_secs(20);
    while let Err(e) = rt.block_on(probe_write(&a)) {
        assert!(retryable(&e), "node A answered {e}");
        assert!(
            Instant::now() < deadline,
            "node A did not recover: {e}\n{}",
            logs(&nodes)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let recovered_in = restored.elapsed();

    // The database goes away for everyone: no node acknowledges anything; both come back.
    wait_succeeded(&ledger, tasks * 3 / 4, &nodes);
    for p in &proxies {
        p.cut();
    }
    let since = Instant::now();
    while since.elapsed() < Duration::from_millis(1_500) {
        for (node, c) in [&a, &b].into_iter().enumerate() {
            match rt.block_on(probe_write(c)) {
                Ok(()) => panic!("node {node} acknowledged a write without a database"),
                Err(e) => assert_eq!(e.status(), Some(503), "node {node} answered {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in &proxies {
        p.restore();
    }
    for (node, c) in [&a, &b].into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Err(e) = rt.block_on(probe_write(c)) {
            assert!(retryable(&e), "node {node} answered {e}");
            assert!(
                Instant::now() < deadline,
                "node {node} did not recover from the outage: {e}\n{}",
                logs(&nodes)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    wait_ended(
        &rt,
        &urls,
        workflow,
        Duration::from_secs(180),
        &ledger,
        &nodes,
    );
    let ledger = fleet.stop(&rt);
    let verified = finish(&rt, &mut nodes, &url, workflow, &ledger);
    assert_eq!(verified.tasks as u64, tasks);
    eprintln!(
        "outage: {terminated} sessions terminated, both nodes recovered; A cut off for {:.1} s \
         ({refusals} probes answered 503, {attempts} connections refused, B completed {} tasks \
         meanwhile), A acknowledged again {:.2} s after the database came back; both nodes \
         through a 1.5 s outage of the database; {} tasks, {} acknowledged reports verified; \
         {:.1} s",
        cut_for.as_secs_f64(),
        meanwhile,
        recovered_in.as_secs_f64(),
        verified.tasks,
        verified.acks,
        began.elapsed().as_secs_f64()
    );
}

/// Schedules and signals across nodes: with three nodes running and the leader killed, a
/// schedule firing every second submits exactly one workflow per tick and misses none (the
/// next leader fires the ticks of the failover, late but not missed); a signal sent to a node
/// that does not lead completes its waiting task once.
#[test]
fn schedule_ticks_fire_once_each_through_a_sigkill_of_the_leader_and_a_signal_lands_once() {
    let _turn = serial();
    let Some(schema) = PgSchema::new("baton_cl_") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut nodes = nodes(&schema, dir.path(), 3);
    let leader = leader_pid(&schema).expect("node 0 leads");
    let urls = urls(&nodes);
    let rt = runtime();
    let name = "every-second";
    rt.block_on(async {
        let spec = json!({"name": name, "cron": "* * * * * *", "timezone": "UTC",
                          "workflow": {"tasks": [{"key": "tick"}]},
                          "overlap": "allow", "catch_up": {"policy": "all", "max": 100}});
        client(&urls[1]).create_schedule(&spec).await.unwrap();

        let mut approval = TaskSpec::new("review");
        approval.wait_for = Some(baton_core::WaitFor {
            signal: "approve".into(),
            timeout_ms: None,
        });
        let created = client(&urls[1])
            .submit_workflow("gate", None, &[approval])
            .await
            .unwrap();
        let sent = client(&urls[2])
            .signal(
                created.workflow,
                "approve",
                &json!({"ok": true}),
                Some("once"),
            )
            .await
            .unwrap();
        assert_eq!(sent.delivered_to.len(), 1, "{sent:?}");
        let again = client(&urls[1])
            .signal(
                created.workflow,
                "approve",
                &json!({"ok": true}),
                Some("once"),
            )
            .await
            .unwrap();
        assert!(!again.created && again.delivered_to.is_empty(), "{again:?}");
        let review = created.tasks["review"];
        let history = history(&client(&urls[0]), review).await;
        assert_eq!(
            history
                .iter()
                .filter(|e| **e == EventKind::SignalReceived)
                .count(),
            1,
            "{history:?}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    nodes[0].kill();
    wait_until(
        "another node takes the lead",
        Duration::from_secs(20),
        || leader_pid(&schema).is_some_and(|pid| pid != leader),
    );
    rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        client(&urls[1]).pause_schedule(name, true).await.unwrap();
        // A tick being fired as the pause lands finishes; then nothing more.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut ticks = Vec::new();
        let mut before = None;
        loop {
            let page = client(&urls[2]).workflows(before, 100).await.unwrap();
            for w in &page.workflows {
                if let Some(key) = &w.idempotency_key {
                    if let Some(tick) = key.strip_prefix(&format!("schedule:{name}:")) {
                        ticks.push(tick.parse::<u64>().unwrap());
                    }
                }
            }
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        ticks.sort_unstable();
        assert!(
            ticks.len() >= 5,
            "too few ticks: {ticks:?}\n{}",
            logs(&nodes)
        );
        let distinct: BTreeSet<u64> = ticks.iter().copied().collect();
        assert_eq!(distinct.len(), ticks.len(), "a tick fired twice: {ticks:?}");
        for pair in ticks.windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                1_000,
                "a tick was missed between {} and {}: {ticks:?}\n{}",
                pair[0],
                pair[1],
                logs(&nodes)
            );
        }
        eprintln!(
            "schedule: {} ticks across a leader's SIGKILL, each fired once",
            ticks.len()
        );
    });
}

/// Three nodes, 12 agents spread over them: a concurrency key with `max` 2 and a rate limit hold
/// across every node, as measured from the tasks' histories afterwards.
#[test]
fn a_concurrency_key_and_a_rate_limit_hold_across_three_nodes() {
    let _turn = serial();
    let Some(schema) = PgSchema::new("baton_cl_") else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nodes = nodes(&schema, dir.path(), 3);
    let clients: Vec<Client> = nodes.iter().map(|n| client(&n.url)).collect();
    let (units, per_ms) = (5u64, 1_000u64);
    let rt = runtime();
    rt.block_on(async {
        clients[0].set_limit("llm", units, per_ms).await.unwrap();
        let mut specs = Vec::new();
        for i in 0..24 {
            let mut s = spec(&format!("keyed{i}"), "work");
            s.concurrency = vec![baton_core::ConcurrencyKey {
                key: "shared".into(),
                max: 2,
            }];
            specs.push(s);
            let mut s = spec(&format!("drawing{i}"), "work");
            s.rate = vec![baton_core::RateUse {
                key: "llm".into(),
                units: 1,
                usage_unit: None,
            }];
            specs.push(s);
        }
        let created = clients[1]
            .submit_workflow("flow", None, &specs)
            .await
            .unwrap();
        let done = Arc::new(AtomicU64::new(0));
        let mut agents = Vec::new();
        for i in 0..12 {
            let c = clients[i % 3].clone();
            let done = Arc::clone(&done);
            agents.push(tokio::spawn(async move {
                let me = c
                    .register_agent(&format!("agent-{i}"), &caps(&["work"]), 2)
                    .await
                    .unwrap();
                while done.load(Ordering::SeqCst) < 48 {
                    let claimed = c.claim(me.id, 2, Duration::from_millis(200)).await.unwrap();
                    for t in &claimed {
                        c.started(t, me.id).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(15)).await;
                        c.succeeded(t, me.id, json!({})).await.unwrap();
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
        let all = tokio::time::timeout(Duration::from_secs(120), async {
            for a in agents {
                a.await.unwrap();
            }
        })
        .await;
        assert!(all.is_ok(), "every task done in time:\n{}", logs(&nodes));

        // From the histories: when each task was assigned, and when its attempt ended.
        let (mut keyed, mut drawn) = (Vec::new(), Vec::new());
        for (key, id) in &created.tasks {
            let view = clients[2].task(*id).await.unwrap();
            let at = |event: &str| {
                view.history
                    .iter()
                    .find(|h| h.event.as_str() == event)
                    .map(|h| h.at)
                    .unwrap_or_else(|| panic!("{key}: no {event} in {:?}", view.history))
            };
            let assigned = at("agent_assigned");
            if key.starts_with("keyed") {
                keyed.push((assigned, at("execution_succeeded")));
            } else {
                drawn.push(assigned);
            }
        }
        // Most in flight at once: an attempt ending at the moment another is assigned does
        // not overlap it.
        let mut edges: Vec<(u64, i32)> = keyed
            .iter()
            .flat_map(|&(from, to)| [(from, 1), (to, -1)])
            .collect();
        edges.sort_by_key(|&(at, d)| (at, d));
        let (mut now, mut most) = (0, 0);
        for (_, d) in edges {
            now += d;
            most = most.max(now);
        }
        assert_eq!(
            most, 2,
            "at most (and, with 12 agents, exactly) 2 of the key in flight"
        );
        // Never more claims in a window than a full bucket and its refills since.
        drawn.sort_unstable();
        for (i, &first) in drawn.iter().enumerate() {
            for (j, &last) in drawn.iter().enumerate().skip(i) {
                let allowed = units + (last - first) * units / per_ms;
                assert!(
                    (j - i + 1) as u64 <= allowed,
                    "{} claims from {first} to {last}: at most {allowed}",
                    j - i + 1
                );
            }
        }
    });
}
