//! `baton agent` against a real `baton serve`: commands run per task with their JSON results,
//! failures carry stderr, a cancelled task's command is killed, and SIGINT drains, stops and
//! releases. Every wait is bounded.

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use baton_client::wire::TaskView;
use baton_client::Client;
use baton_core::StateKind;
use common::{Lines, Server, WAIT_MAX};
use serde_json::{json, Value};
use uuid::Uuid;

/// Between two looks at something awaited.
const POLL: Duration = Duration::from_millis(25);
/// Longest a killed command may take to disappear.
const KILLED_WITHIN: Duration = Duration::from_secs(10);

/// A running `baton agent`, killed when dropped.
struct Agent {
    child: Child,
    stderr: Lines,
}

impl Agent {
    fn start(server: &Server, args: &[&str], env: &[(&str, &Path)]) -> Agent {
        let mut cmd = server.command(&["agent"]);
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("baton agent starts");
        let stderr = Lines::of_stderr(child.stderr.take().expect("piped stderr"));
        stderr
            .until("agent registered")
            .expect("the agent registers");
        Agent { child, stderr }
    }

    fn interrupt(&self) {
        // SAFETY: kill(2) on our own child, not yet waited for.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(rc, 0, "SIGINT sent");
    }

    /// Waits for the agent to exit; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Some(status) = self.child.try_wait().expect("the agent can be waited on") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit within {WAIT_MAX:?}"
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` until it gives a value, at most `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn task_in(client: &Client, id: Uuid, states: &[StateKind]) -> TaskView {
    eventually(&format!("task {id} to be {states:?}"), WAIT_MAX, || async {
        let view = client.task(id).await.ok()?;
        states.contains(&view.state).then_some(view)
    })
    .await
}

async fn submit(client: &Client, tasks: Value) -> Vec<Uuid> {
    let keys: Vec<String> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap().to_owned())
        .collect();
    let created = client
        .submit_workflow_json(&json!({"name": "agent test", "tasks": tasks}))
        .await
        .expect("the workflow is accepted");
    keys.iter().map(|k| created.tasks[k]).collect()
}

/// Whether the process is gone: no such process, or a zombie nobody reaped yet.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The pids written by a command into `dir/KEY` (`$$ $!`: the shell and its `sleep`).
async fn pids_of(dir: &Path, key: &str) -> Vec<u32> {
    let path: PathBuf = dir.join(key);
    eventually(
        &format!("{} to be written", path.display()),
        WAIT_MAX,
        || async {
            let text = std::fs::read_to_string(&path).ok()?;
            let pids: Vec<u32> = text
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            (pids.len() == 2).then_some(pids)
        },
    )
    .await
}

/// Starts a `sleep 30` in the background, writes `$$ $!` to `$PIDS/$BATON_TASK_KEY`, waits.
const SLEEPER: &str = r#"sleep 30 & echo "$$ $!" > "$PIDS/$BATON_TASK_KEY"; wait"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_the_command_per_task_and_reports_its_outcome() {
    let server = Server::start();
    let client = Client::new(&server.url).unwrap();
    let once = json!({"max_attempts": 1});
    let ids = submit(
        &client,
        json!([
            {"key": "first", "capabilities": ["sh"], "input": {"n": 1, "text": "a \"quoted\" word"}},
            {"key": "second", "capabilities": ["sh"], "depends_on": ["first"], "input": [2]},
            {"key": "empty", "capabilities": ["sh"]},
            {"key": "garbage", "capabilities": ["sh"]},
            {"key": "boom", "capabilities": ["sh"], "retry": once},
        ]),
    )
    .await;
    let script = r#"
        input=$(cat)
        case "$BATON_TASK_KEY" in
        boom) head -c 10000 /dev/zero | tr '\0' x >&2; printf '\nit broke\n' >&2; exit 3 ;;
        garbage) echo "not json" ;;
        empty) ;;
        *) printf '{"input": %s, "key": "%s", "attempt": %s, "task": "%s", "workflow": "%s",
                    "idempotency_key": "%s", "traceparent": "%s"}\n' \
             "$input" "$BATON_TASK_KEY" "$BATON_ATTEMPT" "$BATON_TASK_ID" "$BATON_WORKFLOW_ID" \
             "$BATON_IDEMPOTENCY_KEY" "$TRACEPARENT" ;;
        esac"#;
    let _agent = Agent::start(
        &server,
        &[
            "--capability",
            "sh",
            "--concurrency",
            "2",
            "--",
            "sh",
            "-c",
            script,
        ],
        &[],
    );
    let ended = [StateKind::Completed, StateKind::Failed];
    let first = task_in(&client, ids[0], &ended).await;
    let result = first.result.clone().expect("a result");
    assert_eq!(first.state, StateKind::Completed, "{first:#?}");
    assert_eq!(
        result["input"],
        json!({"n": 1, "text": "a \"quoted\" word"})
    );
    assert_eq!(result["key"], "first");
    assert_eq!(result["attempt"], 1);
    assert_eq!(result["task"], first.id.to_string());
    assert_eq!(result["workflow"], first.workflow.to_string());
    assert_eq!(result["idempotency_key"], format!("{}:1", first.id));
    let traceparent = result["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with("00-") && traceparent.len() == 55,
        "{traceparent}"
    );

    let second = task_in(&client, ids[1], &ended).await;
    assert_eq!(second.result.unwrap()["input"], json!([2]));

    let empty = task_in(&client, ids[2], &ended).await;
    assert_eq!(empty.state, StateKind::Completed);
    assert_eq!(empty.result, Some(json!({})));

    let garbage = task_in(&client, ids[3], &ended).await;
    assert_eq!(garbage.state, StateKind::Failed, "not JSON fails for good");
    let error = &garbage.errors[0];
    assert_eq!(error["kind"], "invalid_output");
    assert_eq!(error["retryable"], false);
    assert!(
        error["message"].as_str().unwrap().contains("not json"),
        "{error}"
    );

    let boom = task_in(&client, ids[4], &ended).await;
    assert_eq!(boom.state, StateKind::Failed);
    let error = &boom.errors[0];
    assert_eq!(error["kind"], "exit_3");
    assert_eq!(error["retryable"], true);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.ends_with("it broke"),
        "the tail of stderr: {message}"
    );
    assert!(
        message.len() <= 4 * 1024 + 8,
        "bounded: {} bytes",
        message.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_s_command_is_killed() {
    let server = Server::start();
    let client = Client::new(&server.url).unwrap();
    let pids = tempfile::tempdir().unwrap();
    let ids = submit(&client, json!([{"key": "sleepy", "capabilities": ["sh"]}])).await;
    let agent = Agent::start(
        &server,
        &[
            "--capability",
            "sh",
            "--heartbeat-ms",
            "100",
            "--",
            "sh",
            "-c",
            SLEEPER,
        ],
        &[("PIDS", pids.path())],
    );
    let running = pids_of(pids.path(), "sleepy").await;
    task_in(&client, ids[0], &[StateKind::Executing]).await;
    assert!(running.iter().all(|p| !gone(*p)), "the command runs");

    client
        .cancel_task(ids[0], "no longer needed")
        .await
        .unwrap();
    let started = Instant::now();
    eventually("the command to be killed", KILLED_WITHIN, || async {
        running.iter().all(|p| gone(*p)).then_some(())
    })
    .await;
    let line = agent
        .stderr
        .until("task taken back")
        .expect("the agent says why");
    assert!(line.contains("task_cancelled"), "{line}");
    let line = agent
        .stderr
        .until("command stopped")
        .expect("the agent reports the kill");
    assert!(line.contains("SIGTERM"), "{line}");
    assert!(started.elapsed() < KILLED_WITHIN);
    let view = client.task(ids[0]).await.unwrap();
    assert_eq!(view.state, StateKind::Cancelled);
    assert_eq!(view.result, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_running_commands_finish_then_releases_what_it_holds() {
    let server = Server::start();
    let client = Client::new(&server.url).unwrap();
    let pids = tempfile::tempdir().unwrap();
    let ids = submit(
        &client,
        json!([
            {"key": "quick", "capabilities": ["sh"]},
            {"key": "slow", "capabilities": ["sh"]},
        ]),
    )
    .await;
    let script = format!(
        r#"if [ "$BATON_TASK_KEY" = quick ]; then echo "$$ $$" > "$PIDS/quick"; sleep 1; echo '{{"done": true}}'; else {SLEEPER}; fi"#
    );
    let mut agent = Agent::start(
        &server,
        &[
            "--capability",
            "sh",
            "--concurrency",
            "2",
            "--grace-ms",
            "3000",
            "--",
            "sh",
            "-c",
            &script,
        ],
        &[("PIDS", pids.path())],
    );
    pids_of(pids.path(), "quick").await;
    let slow = pids_of(pids.path(), "slow").await;
    task_in(&client, ids[1], &[StateKind::Executing]).await;

    agent.interrupt();
    assert_eq!(agent.exit_code(), Some(0), "a clean stop");
    let quick = client.task(ids[0]).await.unwrap();
    assert_eq!(
        quick.state,
        StateKind::Completed,
        "finished within the grace period"
    );
    assert_eq!(quick.result, Some(json!({"done": true})));
    let held = client.task(ids[1]).await.unwrap();
    assert_eq!(held.state, StateKind::Pending, "released: {held:#?}");
    assert_eq!(held.attempt, 1, "a release does not use up an attempt");
    assert_eq!(
        held.history.last().unwrap().event.as_str(),
        "assignment_released"
    );
    assert!(
        slow.iter().all(|p| gone(*p)),
        "the slow command was stopped"
    );
    assert!(agent.stderr.until("task released").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_shell_agent_works_the_example_workflow() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: the example agent needs python3");
        return;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let server = Server::start();
    let client = Client::new(&server.url).unwrap();
    let submitted = server.run(&[
        "submit",
        "--output",
        "json",
        examples.join("workflow.yaml").to_str().unwrap(),
    ]);
    let created = submitted.ok().json();
    let agent_path = examples.join("shell-agent.sh");
    let _agent = Agent::start(
        &server,
        &[
            "--capability",
            "researcher",
            "--capability",
            "writer",
            "--capability",
            "reviewer",
            "--capability",
            "publisher",
            "--concurrency",
            "3",
            "--",
            agent_path.to_str().unwrap(),
        ],
        &[],
    );
    let tasks = created["tasks"].as_object().expect("task ids by key");
    assert_eq!(tasks.len(), 6);
    let id = |key: &str| tasks[key].as_str().unwrap().parse::<Uuid>().unwrap();
    let publish = task_in(
        &client,
        id("publish"),
        &[StateKind::Completed, StateKind::Failed],
    )
    .await;
    assert_eq!(
        publish.result,
        Some(json!({"published": true, "channel": "briefing"}))
    );
    let write = client.task(id("write")).await.unwrap();
    assert_eq!(
        write.result.unwrap()["paragraphs"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
}

/// `--start-on-claim --no-batch`: each task is started by its claim (no `started` report) and
/// every report is its own request; by default reports go through `POST /v1/reports`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_on_claim_and_no_batch_change_the_calls_not_the_outcome() {
    let server = Server::start();
    let client = Client::new(&server.url).unwrap();
    let timeouts = json!({"heartbeat_ms": 30_000});
    let ids = submit(
        &client,
        json!([
            {"key": "a", "capabilities": ["sh"], "timeouts": timeouts},
            {"key": "b", "capabilities": ["sh"], "timeouts": timeouts},
        ]),
    )
    .await;
    let _agent = Agent::start(
        &server,
        &[
            "--capability",
            "sh",
            "--start-on-claim",
            "--no-batch",
            "--",
            "sh",
            "-c",
            "echo '{\"ok\": true}'",
        ],
        &[],
    );
    for id in &ids {
        let task = task_in(&client, *id, &[StateKind::Completed]).await;
        let events: Vec<(String, bool)> = task
            .history
            .iter()
            .map(|h| {
                (
                    h.data["event"].as_str().unwrap().to_owned(),
                    h.data["by_claim"] == json!(true),
                )
            })
            .collect();
        let expected = [
            ("submitted", false),
            ("agent_assigned", false),
            ("execution_started", true),
            ("execution_succeeded", false),
        ]
        .map(|(e, b)| (e.to_owned(), b));
        assert_eq!(events, expected, "{task:#?}");
    }
    let metrics = String::from_utf8(client.get_json("/metrics").await.unwrap()).unwrap();
    let requests = |route: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("baton_http_requests_total")
                    && l.contains(&format!("route=\"{route}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(requests("/v1/tasks/{id}/started"), 0, "{metrics}");
    assert_eq!(requests("/v1/reports"), 0, "{metrics}");
    assert_eq!(requests("/v1/tasks/{id}/succeeded"), 2, "{metrics}");
}
