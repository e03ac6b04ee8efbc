//! `baton bench crash`: `baton serve` runs as a child process; agents work over HTTP and retry
//! through connection errors; the child is killed with SIGKILL at random moments and started
//! again on the same store, until every task has ended. Then the store is checked against the
//! lifecycle (`baton_engine::check::check_store`) and against what the agents were told:
//! every acknowledged completion must be in the store, and no task may be completed twice.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_client::{Call, Client, Observer, Runner, RunnerConfig, RunnerEvent, StopHandle};
use baton_core::{Capability, State};
use serde_json::json;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::agents::CAPABILITY;
use super::child::{free_port, store_args, Serve};
use super::{Common, Latency, Report, Target};

/// Pause before retrying a request that failed to reach the server.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long a claim waits for work.
const CLAIM_WAIT: Duration = Duration::from_millis(200);
/// Start timeout of the tasks: a claim whose answer died with the server is taken back soon.
const START_TIMEOUT_MS: u64 = 2_000;
/// Longest random extra delay before a kill, once its moment has come.
const KILL_JITTER_MS: u64 = 40;
/// Longest the whole run may take.
const RUN_LIMIT: Duration = Duration::from_secs(1_800);

#[derive(clap::Args, Debug)]
pub struct CrashArgs {
    /// SIGKILLs of the server [default: 30; 5 with --quick].
    #[arg(long)]
    pub kills: Option<usize>,
    /// Tasks, in workflows of four (a, then b and c, then d) [default: 2000; 200 with --quick].
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Agents working the tasks over HTTP.
    #[arg(long, default_value_t = 8)]
    pub agents: usize,
    /// Tasks per claim.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub batch: u32,
    /// Seed of the kill moments [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
}

/// What the agents were told.
struct Told {
    /// Acknowledged completions: task → the tokens they were acknowledged under.
    completions: Mutex<HashMap<Uuid, HashSet<u64>>>,
    completed: AtomicU64,
    /// Every 2xx answer to a report (started or succeeded).
    reports_acked: AtomicU64,
    /// Reports refused (a lease taken back meanwhile): the task goes to someone else.
    reports_refused: AtomicU64,
    transport_errors: AtomicU64,
    /// The first refusal no crash explains: the run fails.
    refused: Mutex<Option<String>>,
    stop: AtomicBool,
    bar: indicatif::ProgressBar,
}

pub async fn run(common: &Common, args: CrashArgs) -> anyhow::Result<Report> {
    let kills = super::size(args.kills, common.quick, 5, 30);
    let wanted = super::size(args.tasks, common.quick, 200, 2_000);
    let workflows = wanted.div_ceil(4).max(1);
    let tasks = workflows * 4;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let target = Target::new(common).await?;
    let logs = tempfile::tempdir().context("a directory for the server's log")?;
    let log = logs.path().join("serve.log");
    let out = drive(&target, &log, kills, workflows, &args, seed).await;
    let checked = match &out {
        Ok(_) => Some(check(&target).await),
        Err(_) => None,
    };
    let kept_log = std::fs::read_to_string(&log).unwrap_or_default();
    target.cleanup().await?;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            let tail: String = kept_log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(e.context(format!("server log tail:\n{tail}")));
        }
    };
    let (report, stored) = checked.expect("checked after a run")?;

    let completions = out.told.completions.lock().expect("told lock");
    let double: Vec<&Uuid> = completions
        .iter()
        .filter(|(_, tokens)| tokens.len() > 1)
        .map(|(t, _)| t)
        .collect();
    let mut lost = Vec::new();
    for (task, tokens) in completions.iter() {
        for token in tokens {
            let ok = matches!(stored.get(task), Some(Some(t)) if t == token);
            if !ok {
                lost.push(*task);
            }
        }
    }
    let mut r = Report::new("crash");
    r.param("store", target.kind())
        .param("tasks", tasks)
        .param("agents", args.agents)
        .param("batch", args.batch)
        .param("kills", kills)
        .param("seed", seed)
        .param("server", "child process (baton serve), SIGKILL");
    let mut restarts = out.restarts.clone();
    let restart = Latency::of(&mut restarts);
    r.figure("kills_survived", "kills survived", out.kills, "")
        .figure("tasks", "tasks", tasks, "")
        .figure(
            "tasks_completed",
            "tasks completed",
            out.completed_in_store,
            "",
        )
        .figure(
            "completions_acknowledged",
            "completions acknowledged to agents",
            completions.len(),
            "",
        )
        .figure(
            "reports_acknowledged",
            "reports acknowledged (started + succeeded)",
            out.told.reports_acked.load(Ordering::Relaxed),
            "",
        )
        .figure(
            "reports_refused",
            "reports refused (lease taken back meanwhile)",
            out.told.reports_refused.load(Ordering::Relaxed),
            "",
        )
        .figure(
            "transport_errors",
            "requests that failed to reach the server",
            out.told.transport_errors.load(Ordering::Relaxed),
            "",
        )
        .figure("double_completions", "double completions", double.len(), "")
        .figure(
            "lost_acknowledgements",
            "acknowledged completions missing",
            lost.len(),
            "",
        )
        .figure(
            "violations",
            "invariant violations (check_store)",
            report.violations.len(),
            "",
        )
        .figure(
            "history_entries",
            "history entries checked",
            report.history_entries,
            "",
        )
        .float(
            "restart_p50_ms",
            "restart to first answer p50",
            restart.p50,
            "ms",
        )
        .float(
            "restart_max_ms",
            "restart to first answer max",
            restart.max,
            "ms",
        )
        .float("elapsed_s", "elapsed", out.elapsed.as_secs_f64(), "s");
    for v in report.violations.iter().take(10) {
        r.note(format!(
            "violation: task {:?}: {}",
            v.task.map(|t| t.to_string()),
            v.detail
        ));
    }
    if !double.is_empty() {
        r.fail(format!("{} tasks completed twice", double.len()));
    }
    if !lost.is_empty() {
        r.fail(format!(
            "{} acknowledged completions are not in the store",
            lost.len()
        ));
    }
    if !report.violations.is_empty() {
        r.fail(format!("{} invariant violations", report.violations.len()));
    }
    if out.completed_in_store != tasks as u64 {
        r.fail(format!(
            "{} of {tasks} tasks completed",
            out.completed_in_store
        ));
    }
    if !out.finished {
        r.fail(format!("the tasks had not all ended after {RUN_LIMIT:?}"));
    }
    Ok(r)
}

struct Outcome {
    told: Arc<Told>,
    kills: usize,
    restarts: Vec<Duration>,
    completed_in_store: u64,
    finished: bool,
    elapsed: Duration,
}

async fn drive(
    target: &Target,
    log: &std::path::Path,
    kills: usize,
    workflows: usize,
    args: &CrashArgs,
    seed: u64,
) -> anyhow::Result<Outcome> {
    let listen = format!("127.0.0.1:{}", free_port()?);
    let store_args = store_args(target);
    let mut serve = Serve::start(&listen, &store_args, &[], log).await?;
    let client = Client::new(&serve.base)?;
    let tasks = workflows * 4;
    let bar = super::progress(tasks as u64, "crash");
    let told = Arc::new(Told {
        completions: Mutex::default(),
        completed: AtomicU64::new(0),
        reports_acked: AtomicU64::new(0),
        reports_refused: AtomicU64::new(0),
        transport_errors: AtomicU64::new(0),
        refused: Mutex::default(),
        stop: AtomicBool::new(false),
        bar: bar.clone(),
    });
    let started = Instant::now();

    let mut work = JoinSet::new();
    work.spawn(submit_all(client.clone(), workflows, Arc::clone(&told)));
    let mut stops = Vec::new();
    for i in 0..args.agents {
        let (runner, stop) = agent(client.clone(), i, args.batch, Arc::clone(&told));
        stops.push(stop);
        work.spawn(async move {
            runner
                .run(|ctx| async move { Ok(json!({"by": ctx.agent()})) })
                .await
                .map_err(anyhow::Error::from)
        });
    }

    let mut rng = seed | 1;
    let mut killed = 0;
    let mut restarts = Vec::new();
    let mut finished = false;
    let mut completed_in_store = 0;
    let give_up = started + RUN_LIMIT;
    while Instant::now() < give_up {
        // Kill k comes once k/(kills+1) of the tasks have completed, after a random delay.
        if killed < kills {
            let due = (killed as u64 + 1) * tasks as u64 / (kills as u64 + 1);
            if told.completed.load(Ordering::Relaxed) >= due {
                let jitter = xorshift(&mut rng) % KILL_JITTER_MS;
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                serve.kill().await?;
                killed += 1;
                bar.set_message(format!("kill {killed}"));
                serve = Serve::start(&listen, &store_args, &[], log).await?;
                restarts.push(serve.start_time);
                continue;
            }
        }
        if let Ok(c) = client.counts(None).await {
            completed_in_store = c.completed;
            if c.total == tasks as u64 && c.completed + c.failed + c.cancelled == c.total {
                finished = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bar.finish_and_clear();
    told.stop.store(true, Ordering::Relaxed);
    for stop in &stops {
        stop.stop_now();
    }
    while let Some(r) = work.join_next().await {
        r.context("an agent")??;
    }
    if let Some(refused) = told.refused.lock().expect("told lock").take() {
        bail!("a report was refused: {refused}");
    }
    let elapsed = started.elapsed();
    serve.stop(Duration::from_secs(10)).await?;
    Ok(Outcome {
        told,
        kills: killed,
        restarts,
        completed_in_store,
        finished,
        elapsed,
    })
}

/// Checks the store after the run: `check_store`, and the token each completed task
/// completed under.
async fn check(
    target: &Target,
) -> anyhow::Result<(baton_engine::check::CheckReport, HashMap<Uuid, Option<u64>>)> {
    let store = target.open().await?;
    let report = baton_engine::check::check_store(&store, |_| {}).await?;
    let mut completed = HashMap::new();
    let mut pages = baton_store::TaskPages::new(baton_store::TaskFilter::default());
    while let Some(page) = pages.next(&store).await? {
        for t in &page {
            let token = match &t.state {
                State::Completed { token, .. } => Some(token.0),
                _ => None,
            };
            completed.insert(t.id.0, token);
        }
        if page.len() < baton_store::PAGE_ROWS_MAX {
            break;
        }
    }
    Ok((report, completed))
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// Submits the workflows (a → b, c → d), each with an idempotency key, so that a submission
/// whose answer was lost is not made twice when retried.
async fn submit_all(client: Client, workflows: usize, told: Arc<Told>) -> anyhow::Result<()> {
    for w in 0..workflows {
        let timeouts = json!({"start_ms": START_TIMEOUT_MS});
        let body = json!({
            "name": format!("crash-{w}"),
            "idempotency_key": format!("crash-{w}"),
            "tasks": [
                {"key": "a", "capabilities": [CAPABILITY], "timeouts": timeouts},
                {"key": "b", "depends_on": ["a"], "capabilities": [CAPABILITY], "timeouts": timeouts},
                {"key": "c", "depends_on": ["a"], "capabilities": [CAPABILITY], "timeouts": timeouts},
                {"key": "d", "depends_on": ["b", "c"], "capabilities": [CAPABILITY], "timeouts": timeouts},
            ],
        });
        loop {
            if told.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match client.submit_workflow_json(&body).await {
                Ok(_) => break,
                // The server was not reached, died mid-request or is restarting: again.
                Err(e) if baton_client::runner::transient(&e) => {
                    told.transport_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => bail!("submitting workflow {w}: {e}"),
            }
        }
    }
    Ok(())
}

/// A no-op agent that keeps going through the server's deaths: every call is tried again
/// until answered (reports are idempotent), and the run's end stops it.
fn agent(client: Client, n: usize, batch: u32, told: Arc<Told>) -> (Runner, StopHandle) {
    let mut c = RunnerConfig::new(
        format!("crash-{n}"),
        vec![Capability(CAPABILITY.into())],
        batch,
    );
    c.claim_wait = CLAIM_WAIT;
    c.claim_max = batch as usize;
    c.claim_min_slots = batch as usize;
    c.keepalive = None;
    c.grace = Duration::ZERO;
    c.backoff_min = RETRY_PAUSE;
    c.backoff_max = RETRY_PAUSE;
    c.patience = RUN_LIMIT;
    let runner = Runner::new(vec![client], c).observed(told);
    let stop = runner.stop_handle();
    (runner, stop)
}

impl Observer for Told {
    fn event(&self, event: RunnerEvent<'_>) {
        match event {
            RunnerEvent::Started { .. } => {
                self.reports_acked.fetch_add(1, Ordering::Relaxed);
            }
            RunnerEvent::Reported {
                task,
                call: Call::Succeeded,
                ..
            } => {
                self.reports_acked.fetch_add(1, Ordering::Relaxed);
                let first = self
                    .completions
                    .lock()
                    .expect("told lock")
                    .entry(task.task)
                    .or_default()
                    .insert(task.token);
                if first {
                    self.completed.fetch_add(1, Ordering::Relaxed);
                    self.bar.inc(1);
                }
            }
            // The lease was taken back (start timeout while the server was down): the task
            // is someone else's now.
            RunnerEvent::Lost { .. } => {
                self.reports_refused.fetch_add(1, Ordering::Relaxed);
            }
            RunnerEvent::Retrying { .. } => {
                self.transport_errors.fetch_add(1, Ordering::Relaxed);
            }
            RunnerEvent::Error { task, call, error } => {
                let mut first = self.refused.lock().expect("told lock");
                if first.is_none() {
                    let task = task.map(|t| t.task.to_string()).unwrap_or_default();
                    *first = Some(format!("{} {task}: {error}", call.as_str()));
                }
            }
            _ => {}
        }
    }
}
