//! No-op agents over real HTTP: each claims up to a batch of tasks, starts and completes them
//! all concurrently, and claims again, until the bench has seen every task complete.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::Client;
use baton_core::Capability;
use indicatif::ProgressBar;
use serde_json::json;
use tokio::task::JoinSet;
use uuid::Uuid;

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
    agents: JoinSet<Measured>,
}

pub struct FleetConfig {
    pub agents: usize,
    pub batch: usize,
    /// Completions after which the fleet stops.
    pub expected: u64,
    /// Claim without waiting while submitted tasks are known to be unclaimed (and measure
    /// those claims); otherwise every claim long-polls.
    pub probe_claims: bool,
}

impl Fleet {
    /// Registers the agents (agent `i` on `clients[i % clients.len()]`) and starts them.
    pub async fn start(
        clients: &[Client],
        config: FleetConfig,
        shared: Arc<Shared>,
        bar: ProgressBar,
    ) -> anyhow::Result<Fleet> {
        let mut agents = JoinSet::new();
        for i in 0..config.agents {
            let client = clients[i % clients.len()].clone();
            let view = client
                .register_agent(
                    &format!("bench-{i}"),
                    &[Capability(CAPABILITY.into())],
                    config.batch as u32,
                )
                .await?;
            let agent = Agent {
                client,
                id: view.id,
                batch: config.batch,
                expected: config.expected,
                probe: config.probe_claims,
                shared: Arc::clone(&shared),
                bar: bar.clone(),
            };
            agents.spawn(agent.run());
        }
        Ok(Fleet { shared, agents })
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
        let mut all = Measured::default();
        while let Some(m) = self.agents.join_next().await {
            if let Ok(m) = m {
                all.claim_to_complete.extend(m.claim_to_complete);
                all.claim_rtt.extend(m.claim_rtt);
                all.claims += m.claims;
            }
        }
        (expected_done, all)
    }
}

struct Agent {
    client: Client,
    id: Uuid,
    batch: usize,
    expected: u64,
    probe: bool,
    shared: Arc<Shared>,
    bar: ProgressBar,
}

impl Agent {
    async fn run(self) -> Measured {
        let mut m = Measured::default();
        let s = &self.shared;
        while !s.stop.load(Ordering::Relaxed) {
            let waiting = s
                .submitted
                .load(Ordering::Relaxed)
                .saturating_sub(s.claimed.load(Ordering::Relaxed));
            let wait = if self.probe && waiting > 0 {
                Duration::ZERO
            } else {
                LONG_POLL
            };
            let sent = Instant::now();
            let tasks = match self.client.claim(self.id, self.batch, wait).await {
                Ok(t) => t,
                Err(e) => {
                    s.error(format!("claim: {e}"));
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            m.claims += 1;
            if wait.is_zero() {
                m.claim_rtt.push(sent.elapsed());
            }
            if tasks.is_empty() {
                continue;
            }
            s.claimed.fetch_add(tasks.len() as u64, Ordering::Relaxed);
            let at = Instant::now();
            let mut runs = JoinSet::new();
            for task in tasks {
                let client = self.client.clone();
                let agent = self.id;
                runs.spawn(async move {
                    client.started(&task, agent).await?;
                    client.succeeded(&task, agent, json!({})).await?;
                    Ok::<Duration, baton_client::ClientError>(at.elapsed())
                });
            }
            while let Some(r) = runs.join_next().await {
                match r {
                    Ok(Ok(latency)) => {
                        m.claim_to_complete.push(latency);
                        self.bar.inc(1);
                        let done = s.completed.fetch_add(1, Ordering::Relaxed) + 1;
                        if done == self.expected {
                            *s.done_at.lock().expect("done lock") = Some(Instant::now());
                            s.stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(Err(e)) => s.error(format!("report: {e}")),
                    Err(e) => s.error(format!("report task: {e}")),
                }
            }
        }
        m
    }
}
