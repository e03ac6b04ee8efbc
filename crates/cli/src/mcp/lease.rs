//! What `baton mcp` remembers between tool calls: the agent it acts as (registered on the first
//! claim, registered again when Baton has forgotten it (as a new agent: Baton refuses an id it
//! does not know) or is asked for other capabilities) and the lease of each task claimed through it, so that a model reports on a
//! task by its id alone. While it holds a lease whose deadlines have not passed, a background
//! loop keeps the agent alive: a model may think for longer than the agent's liveness window
//! (30 s by default) between two calls, and Baton would otherwise declare the agent dead and
//! take its tasks back. The task's own deadlines (start, heartbeat) are the model's to meet.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_client::wire::{ClaimedTask, DeadlinesView, ReportAnswer};
use baton_client::{Client, ClientError};
use baton_core::Capability;
use tracing::{info, warn};
use uuid::Uuid;

/// Bounds of the wait between two keep-alives (a third of the agent's liveness window).
const KEEPALIVE_MIN: Duration = Duration::from_millis(250);
const KEEPALIVE_MAX: Duration = Duration::from_secs(10);
/// A lease without any deadline is kept alive this long after it was last heard of.
const UNBOUNDED_LEASE: Duration = Duration::from_secs(3600);
/// A lease whose deadline passed this long ago is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The agent this process acts as.
#[derive(Clone, Debug)]
pub struct AgentId {
    pub id: Uuid,
    pub name: String,
    pub capabilities: BTreeSet<Capability>,
    pub liveness_ms: u64,
}

/// A task held under a lease.
#[derive(Clone, Debug)]
pub struct Held {
    pub workflow: Uuid,
    pub key: String,
    pub agent: Uuid,
    pub token: u64,
    pub started: bool,
    /// Completed, failed, released or lost: kept a while only so that a repeated report is
    /// sent under the same lease (and answered as the first was).
    pub ended: bool,
    /// When its earliest deadline passes, as far as this process can tell (on its own clock).
    pub expires: Instant,
}

/// The lease a report is sent under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRef {
    pub agent: Uuid,
    pub token: u64,
}

impl LeaseRef {
    /// A `ClaimedTask` standing for this lease on `task`: the client's report calls read only
    /// its `task` and `token`.
    pub fn claimed(&self, task: Uuid) -> ClaimedTask {
        ClaimedTask {
            task,
            workflow: Uuid::nil(),
            key: String::new(),
            attempt: 0,
            lease: Uuid::nil(),
            token: self.token,
            input: serde_json::Value::Null,
            deadlines: DeadlinesView::default(),
            traceparent: String::new(),
            idempotency_key: String::new(),
            capabilities: BTreeSet::new(),
            heartbeat_ms: None,
            now: 0,
            upstream: Default::default(),
            started: false,
            version: 0,
        }
    }
}

/// Shared by every session of one `baton mcp` process.
pub struct Shared {
    pub client: Client,
    /// `--agent-name`, if given.
    name: Option<String>,
    concurrency: u32,
    agent: tokio::sync::Mutex<Option<AgentId>>,
    held: Mutex<HashMap<Uuid, Held>>,
}

impl Shared {
    pub fn new(client: Client, name: Option<String>, concurrency: u32) -> Arc<Shared> {
        Arc::new(Shared {
            client,
            name,
            concurrency,
            agent: tokio::sync::Mutex::new(None),
            held: Mutex::new(HashMap::new()),
        })
    }

    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// The agent, registered with `capabilities`: registered now if there is none yet (named
    /// `--agent-name`, or after the MCP client and this process), registered again under its
    /// id if it offered other capabilities.
    pub async fn agent_for(
        &self,
        capabilities: BTreeSet<Capability>,
        client_name: Option<&str>,
    ) -> Result<AgentId, ClientError> {
        let mut slot = self.agent.lock().await;
        match slot.as_ref() {
            Some(agent) if agent.capabilities == capabilities => Ok(agent.clone()),
            Some(agent) => {
                let (id, name) = (agent.id, agent.name.clone());
                let agent = self.register(Some(id), name, capabilities).await?;
                *slot = Some(agent.clone());
                Ok(agent)
            }
            None => {
                let name = self
                    .name
                    .clone()
                    .unwrap_or_else(|| default_name(client_name));
                let agent = self.register(None, name, capabilities).await?;
                *slot = Some(agent.clone());
                Ok(agent)
            }
        }
    }

    /// Registers the agent again, as it was but under the new id Baton makes (Baton forgot
    /// it, and refuses an id it does not know).
    pub async fn reregister(&self, agent: &AgentId) -> Result<AgentId, ClientError> {
        let mut slot = self.agent.lock().await;
        let again = self
            .register(None, agent.name.clone(), agent.capabilities.clone())
            .await?;
        info!(was = %agent.id, agent = %again.id, "Baton had forgotten the agent: registered again");
        *slot = Some(again.clone());
        Ok(again)
    }

    async fn register(
        &self,
        id: Option<Uuid>,
        name: String,
        capabilities: BTreeSet<Capability>,
    ) -> Result<AgentId, ClientError> {
        let caps: Vec<Capability> = capabilities.iter().cloned().collect();
        let view = match id {
            Some(id) => match self
                .client
                .reregister_agent(id, &name, &caps, self.concurrency)
                .await
            {
                Ok(view) => view,
                // An id Baton no longer knows: a new agent.
                Err(e) if e.code() == Some("agent_not_found") => {
                    self.client
                        .register_agent(&name, &caps, self.concurrency)
                        .await?
                }
                Err(e) => return Err(e),
            },
            None => {
                self.client
                    .register_agent(&name, &caps, self.concurrency)
                    .await?
            }
        };
        info!(agent = %view.id, name = view.name.as_str(), "registered");
        Ok(AgentId {
            id: view.id,
            name: view.name,
            capabilities: view.capabilities,
            liveness_ms: view.liveness_ms,
        })
    }

    /// The agent, if one is registered.
    pub async fn agent(&self) -> Option<AgentId> {
        self.agent.lock().await.clone()
    }

    /// Remembers the lease of a task just claimed by `agent`.
    pub fn hold(&self, claimed: &ClaimedTask, agent: Uuid) {
        let held = Held {
            workflow: claimed.workflow,
            key: claimed.key.clone(),
            agent,
            token: claimed.token,
            started: false,
            ended: false,
            expires: expiry(&claimed.deadlines, claimed.now),
        };
        self.held.lock().unwrap().insert(claimed.task, held);
    }

    /// The lease to report on `task` under: `agent` and `token` as given, or the one this
    /// process holds.
    pub fn lease(
        &self,
        task: Uuid,
        agent: Option<Uuid>,
        token: Option<u64>,
    ) -> Result<LeaseRef, String> {
        let held = self.held.lock().unwrap().get(&task).cloned();
        match (agent, token, held) {
            (Some(agent), Some(token), _) => Ok(LeaseRef { agent, token }),
            (None, Some(token), Some(h)) => Ok(LeaseRef {
                agent: h.agent,
                token,
            }),
            (agent, None, Some(h)) if agent.is_none_or(|a| a == h.agent) => Ok(LeaseRef {
                agent: h.agent,
                token: h.token,
            }),
            (Some(_), None, _) => Err(format!(
                "`agent` given without `token`: pass both (from the claim answer) to report on \
                 task {task} under a lease this server does not hold"
            )),
            (None, Some(_), None) => Err(format!(
                "`token` given without `agent`: pass both (from the claim answer) to report on \
                 task {task} under a lease this server does not hold"
            )),
            _ => Err(format!(
                "this server holds no lease on task {task}: claim it with claim_task first, or \
                 pass `agent` and `token` from the answer that claimed it (a report under \
                 another lease is refused)"
            )),
        }
    }

    /// The lease this process holds on `task`, if it holds one that has not ended.
    pub fn holding(&self, task: Uuid) -> Option<LeaseRef> {
        let held = self.held.lock().unwrap();
        let h = held.get(&task).filter(|h| !h.ended)?;
        Some(LeaseRef {
            agent: h.agent,
            token: h.token,
        })
    }

    /// An accepted report's answer: the lease runs on to its new deadlines.
    pub fn renewed(&self, task: Uuid, answer: &ReportAnswer, started: bool) {
        if let Some(h) = self.held.lock().unwrap().get_mut(&task) {
            if h.token == answer.token {
                h.expires = expiry(&answer.deadlines, answer.now);
                h.started |= started;
            }
        }
    }

    /// The task ended or its lease is lost: nothing is kept alive for it any more, and it is
    /// forgotten a while later.
    pub fn end(&self, task: Uuid) {
        if let Some(h) = self.held.lock().unwrap().get_mut(&task) {
            h.ended = true;
            h.expires = Instant::now();
        }
    }

    /// The tasks this process holds leases on (and has not ended), with their leases.
    pub fn held(&self) -> Vec<(Uuid, Held)> {
        let mut held: Vec<(Uuid, Held)> = self
            .held
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, h)| !h.ended)
            .map(|(t, h)| (*t, h.clone()))
            .collect();
        held.sort_by_key(|(_, h)| h.expires);
        held
    }

    /// Keeps the agent alive while it holds a lease whose deadlines have not passed;
    /// registers it again if Baton has forgotten it. Runs until the process ends.
    pub async fn keep_alive(self: Arc<Self>) {
        loop {
            // Until the first claim registers the agent, look often: its first lease may be
            // shorter-lived than any fixed wait.
            let every = match self.agent().await {
                Some(a) => Duration::from_millis(a.liveness_ms / 3),
                None => KEEPALIVE_MIN,
            };
            tokio::time::sleep(every.clamp(KEEPALIVE_MIN, KEEPALIVE_MAX)).await;
            let Some(agent) = self.agent().await else {
                continue;
            };
            let now = Instant::now();
            let busy = {
                let mut held = self.held.lock().unwrap();
                held.retain(|_, h| h.expires + FORGET_AFTER > now);
                held.values()
                    .any(|h| !h.ended && h.agent == agent.id && h.expires > now)
            };
            if !busy {
                continue;
            }
            match self.client.agent_heartbeat(agent.id).await {
                Ok(_) => {}
                Err(e) if e.code() == Some("agent_not_found") => {
                    if let Err(e) = self.reregister(&agent).await {
                        warn!(error = %e, "could not register the agent again");
                    }
                }
                Err(e) => warn!(error = %e, "agent keep-alive failed"),
            }
        }
    }

    /// Gives back every task held (back to `Pending`, no attempt used): `baton mcp` is
    /// stopping, and nobody would finish them.
    pub async fn release_all(&self) {
        for (task, h) in self.held() {
            let lease = LeaseRef {
                agent: h.agent,
                token: h.token,
            };
            let released = tokio::time::timeout(
                Duration::from_secs(5),
                self.client.released(&lease.claimed(task), h.agent),
            )
            .await;
            match released {
                Ok(Ok(_)) => info!(task = %task, key = h.key.as_str(), "released"),
                Ok(Err(e)) => warn!(task = %task, error = %e, "could not release the task"),
                Err(_) => warn!(task = %task, "releasing the task took too long"),
            }
            self.end(task);
        }
    }
}

/// `mcp-CLIENT-PID`: which MCP client and which process, for `baton agents`.
fn default_name(client_name: Option<&str>) -> String {
    let client: String = client_name
        .unwrap_or("client")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    format!("mcp-{client}-{}", std::process::id())
}

/// When the earliest of `deadlines` passes, on this process's clock (`now` is the server's
/// when it answered).
fn expiry(deadlines: &DeadlinesView, now: u64) -> Instant {
    let earliest = [
        deadlines.start,
        deadlines.start_to_close,
        deadlines.heartbeat,
    ]
    .into_iter()
    .flatten()
    .min();
    match earliest {
        Some(at) => Instant::now() + Duration::from_millis(at.saturating_sub(now)),
        None => Instant::now() + UNBOUNDED_LEASE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        Shared::new(Client::new("http://127.0.0.1:1").unwrap(), None, 1)
    }

    fn claimed(task: Uuid, agent_token: u64) -> ClaimedTask {
        let mut c = LeaseRef {
            agent: Uuid::nil(),
            token: agent_token,
        }
        .claimed(task);
        c.deadlines.start = Some(61_000);
        c.now = 1_000;
        c
    }

    #[test]
    fn a_held_lease_is_found_by_task_alone() {
        let s = shared();
        let (task, agent) = (Uuid::new_v4(), Uuid::new_v4());
        s.hold(&claimed(task, 7), agent);
        assert_eq!(
            s.lease(task, None, None).unwrap(),
            LeaseRef { agent, token: 7 }
        );
        // A token given replaces the one held (a lease the model read elsewhere).
        assert_eq!(s.lease(task, None, Some(9)).unwrap().token, 9);
        // Both given: used as they are, held or not.
        let other = Uuid::new_v4();
        assert_eq!(
            s.lease(Uuid::new_v4(), Some(other), Some(3)).unwrap(),
            LeaseRef {
                agent: other,
                token: 3
            }
        );
        let err = s.lease(Uuid::new_v4(), None, None).unwrap_err();
        assert!(err.contains("holds no lease"), "{err}");
        assert!(s.lease(Uuid::new_v4(), Some(other), None).is_err());
        // An ended lease is still found (a repeated report goes under it), but not held.
        s.end(task);
        assert_eq!(s.lease(task, None, None).unwrap().token, 7);
        assert!(s.held().is_empty());
    }

    #[test]
    fn expiry_is_the_earliest_deadline() {
        let d = DeadlinesView {
            schedule_to_start: None,
            start: None,
            start_to_close: Some(10_000_000),
            heartbeat: Some(61_000),
        };
        let e = expiry(&d, 1_000);
        let left = e.saturating_duration_since(Instant::now());
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
    }

    #[test]
    fn default_names_are_safe() {
        let n = default_name(Some("Claude Desktop/1"));
        assert!(n.starts_with("mcp-Claude-Desktop-1-"), "{n}");
    }
}
