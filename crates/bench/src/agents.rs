//! No-op agents over real HTTP (`baton_client::Runner`): each claims a full batch of tasks,
//! starts and completes them all concurrently, and claims again, until the bench has seen
//! every task complete.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::{Call, Client, Observer, Runner, RunnerConfig, RunnerEvent, StopHandle};
use baton_core::Capability;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokio::task::JoinSet;

/// The capability every bench task requires and every bench agent offers.
pub const CAPABILITY: &str = "bench";
/// How long an agent's claim waits when there is no known work.
const LONG_POLL: Duration = Duration::from_millis(250);
/// Pause after a failed request.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What the agents and the bench share.
#[derive(Default)]
pub struct Shared {
    /// Tasks whose submission was acknowledged.
    pub submitted: AtomicU64,
    /// Tasks handed to an agent.
    pub claimed: AtomicU64,
    /// Tasks whose completion was acknowledged.
    pub completed: AtomicU64,
    pub stop: AtomicBool,
    /// When the last expected completion was acknowledged.
    pub done_at: Mutex<Option<Instant>>,
    pub errors: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("error lock");
        if first.is_none() {
            *first = Some(what);
        }
    }
}

/// What the agents measured.
#[derive(Default)]
pub struct Measured {
    /// From the claim's answer to the completion's acknowledgement, per task.
    pub claim_to_complete: Vec<Duration>,
    /// Round trips of claims sent with `wait_ms` 0 because work was known to wait.
    pub claim_rtt: Vec<Duration>,
    pub claims: u64,
}

pub struct Fleet {
    shared: Arc<Shared>,
    agents: JoinSet<()>,
    stops: Vec<StopHandle>,
    probes: Vec<Arc<Probe>>,
}

pub struct FleetConfig {
    pub agents: usize,
    pub batch: usize,
    /// Completions after which the fleet stops.
    pub expected: u64,
    /// Claim without waiting while submitted tasks are known to be unclaimed (and measure
    /// those claims); otherwise every claim long-polls.
    pub probe_claims: bool,
    /// The four-request protocol (claim, started, succeeded, each its own request): no start
    /// on claim, no batched reports.
    pub plain: bool,
}

impl Fleet {
    /// Starts the agents (agent `i` on `clients[i % clients.len()]`) once registered.
    pub async fn start(
        clients: &[Client],
        config: FleetConfig,
        shared: Arc<Shared>,
        bar: ProgressBar,
    ) -> anyhow::Result<Fleet> {
        let mut agents = JoinSet::new();
        let mut stops = Vec::new();
        let mut probes = Vec::new();
        for i in 0..config.agents {
            let client = clients[i % clients.len()].clone();
            let mut c = RunnerConfig::new(
                format!("bench-{i}"),
                vec![Capability(CAPABILITY.into())],
                config.batch as u32,
            );
            c.claim_wait = LONG_POLL;
            c.claim_max = config.batch;
            c.claim_min_slots = config.batch;
            c.start_on_claim = !config.plain;
            c.batch_reports = !config.plain;
            c.keepalive = None;
            c.grace = Duration::ZERO;
            c.backoff_min = RETRY_PAUSE;
            c.backoff_max = RETRY_PAUSE;
            let probe = Arc::new(Probe {
                shared: Arc::clone(&shared),
                expected: config.expected,
                probe: config.probe_claims,
                bar: bar.clone(),
                measured: Mutex::default(),
            });
            let mut runner = Runner::new(vec![client], c).observed(probe.clone());
            // Registered up front, so that the clock starts with every agent ready.
            runner.register().await?;
            stops.push(runner.stop_handle());
            probes.push(probe);
            let shared = Arc::clone(&shared);
            agents.spawn(async move {
                if let Err(e) = runner.run(|_| async { Ok::<Value, _>(json!({})) }).await {
                    shared.error(format!("agent: {e}"));
                }
            });
        }
        Ok(Fleet {
            shared,
            agents,
            stops,
            probes,
        })
    }

    /// Waits until every expected task completed or `limit` passed; then stops the agents.
    /// Returns whether all completed.
    pub async fn finish(mut self, limit: Duration) -> (bool, Measured) {
        let shared = Arc::clone(&self.shared);
        let expected_done = super::wait_until(limit, Duration::from_millis(5), || {
            shared.stop.load(Ordering::Relaxed)
        })
        .await;
        self.shared.stop.store(true, Ordering::Relaxed);
        for stop in &self.stops {
            stop.stop_now();
        }
        while self.agents.join_next().await.is_some() {}
        let mut all = Measured::default();
        for p in &self.probes {
            let mut m = p.measured.lock().expect("measured lock");
            all.claim_to_complete.append(&mut m.claim_to_complete);
            all.claim_rtt.append(&mut m.claim_rtt);
            all.claims += m.claims;
        }
        (expected_done, all)
    }
}

/// One agent's observer: counts for the bench, latencies for the report.
struct Probe {
    shared: Arc<Shared>,
    expected: u64,
    probe: bool,
    bar: ProgressBar,
    measured: Mutex<Measured>,
}

impl Observer for Probe {
    fn claim_wait(&self, configured: Duration) -> Duration {
        let s = &self.shared;
        let waiting = s
            .submitted
            .load(Ordering::Relaxed)
            .saturating_sub(s.claimed.load(Ordering::Relaxed));
        if self.probe && waiting > 0 {
            Duration::ZERO
        } else {
            configured
        }
    }

    fn event(&self, event: RunnerEvent<'_>) {
        let s = &self.shared;
        match event {
            RunnerEvent::Claimed {
                tasks,
                wait,
                round_trip,
            } => {
                let mut m = self.measured.lock().expect("measured lock");
                m.claims += 1;
                if wait.is_zero() {
                    m.claim_rtt.push(round_trip);
                }
                s.claimed.fetch_add(tasks.len() as u64, Ordering::Relaxed);
            }
            RunnerEvent::Reported {
                call: Call::Succeeded,
                since_claim,
                ..
            } => {
                let mut m = self.measured.lock().expect("measured lock");
                m.claim_to_complete.push(since_claim);
                self.bar.inc(1);
                let done = s.completed.fetch_add(1, Ordering::Relaxed) + 1;
                if done == self.expected {
                    *s.done_at.lock().expect("done lock") = Some(Instant::now());
                    s.stop.store(true, Ordering::Relaxed);
                }
            }
            RunnerEvent::Retrying { call, error, .. } | RunnerEvent::Error { call, error, .. } => {
                s.error(format!("{}: {error}", call.as_str()))
            }
            RunnerEvent::Lost { call, reason, .. } => {
                s.error(format!("{}: {reason}", call.as_str()))
            }
            _ => {}
        }
    }
}
