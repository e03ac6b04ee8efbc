//! Agents: registration, liveness (an agent is online while heard from within
//! `agent_ttl_ms`), and claims, the long poll that hands ready tasks to an agent.

use std::collections::BTreeSet;
use std::time::Duration;

use baton_core::{AgentId, Capability, LeaseId, StateKind, Task, TaskSpec};
use baton_store::{AgentRecord, ClaimRequest, Store};
use tracing::info;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::intake::NAME_LEN_MAX;

/// How many times per liveness window a busy agent's `last_seen` is written at most.
const LIVENESS_WRITES_PER_TTL: u64 = 10;
/// Most tasks one claim may ask for.
pub const CLAIM_TASKS_MAX: usize = 256;
/// Longest a claim may wait for work.
pub const CLAIM_WAIT_MAX_MS: u64 = 60_000;
/// Most capabilities an agent may offer.
pub const AGENT_CAPABILITIES_MAX: usize = 64;
/// Highest concurrency an agent may ask for.
pub const AGENT_CONCURRENCY_MAX: u32 = 10_000;
/// Agents one registrar (a token; every loopback client without tokens together) may have
/// stored, unless `EngineConfig::agents_per_token_max` says otherwise: room for big pools,
/// far from the tens of thousands a runaway loop registers.
pub const AGENTS_PER_TOKEN_MAX_DEFAULT: u32 = 1_000;
/// The registrar of agents registered without a token (loopback clients, no tokens
/// configured): the name the server gives them as actors.
pub const LOCAL_REGISTRAR: &str = "local";
/// Agents read per page when the engine goes through all of them.
const AGENTS_PAGE: usize = baton_store::PAGE_ROWS_MAX;

impl<S: Store + 'static> Engine<S> {
    /// Registers an agent (or re-registers it under its id, keeping when it first came) for
    /// loopback clients without tokens ([`LOCAL_REGISTRAR`], under the configured cap).
    pub async fn register_agent(
        &self,
        id: Option<AgentId>,
        name: String,
        capabilities: BTreeSet<Capability>,
        concurrency: u32,
    ) -> Result<AgentRecord, EngineError> {
        let max = self.inner.config.agents_per_token_max;
        self.register_agent_by(LOCAL_REGISTRAR, max, id, name, capabilities, concurrency)
            .await
    }

    /// Registers an agent for `registered_by` (a token's name), which may have at most
    /// `agents_max` agents stored: one more is refused with [`EngineError::TooManyAgents`],
    /// counted in the store's transaction (so it holds across concurrent registrations, on
    /// every node). An agent registered already (by id) registers again at any count,
    /// keeping who registered it first and when.
    pub async fn register_agent_by(
        &self,
        registered_by: &str,
        agents_max: u32,
        id: Option<AgentId>,
        name: String,
        capabilities: BTreeSet<Capability>,
        concurrency: u32,
    ) -> Result<AgentRecord, EngineError> {
        validate_agent(&name, &capabilities, concurrency)?;
        let now = self.now();
        let id = id.unwrap_or_else(|| AgentId(self.inner.ids.id()));
        let record = AgentRecord {
            id,
            name,
            capabilities,
            concurrency,
            registered_at: now,
            last_seen: now,
            registered_by: registered_by.to_owned(),
        };
        self.inner.store.register_agent(record, agents_max).await?;
        // Read back: one registered before keeps when and by whom it first came.
        let record = self.agent(id).await?;
        // The name is the caller's, any bytes: logged as a string field, which the text log
        // quotes and escapes, so a newline in it cannot forge a line.
        info!(agent = %id, name = record.name.as_str(), "agent registered");
        self.inner.work.notify_waiters();
        Ok(record)
    }

    /// Records that the agent was heard from, at most once per tenth of its liveness window:
    /// a report need not cost a second write.
    pub(crate) async fn refresh_liveness(
        &self,
        mut record: AgentRecord,
    ) -> Result<AgentRecord, EngineError> {
        let now = self.now();
        let slack = self.inner.config.agent_ttl_ms / LIVENESS_WRITES_PER_TTL;
        if record.last_seen.plus_ms(slack) < now {
            record.last_seen = now;
            self.inner.store.upsert_agent(record.clone()).await?;
        }
        Ok(record)
    }

    /// Keeps an agent alive.
    pub async fn agent_keepalive(&self, id: AgentId) -> Result<AgentRecord, EngineError> {
        let mut agent = self.agent(id).await?;
        agent.last_seen = self.now();
        self.inner.store.upsert_agent(agent.clone()).await?;
        Ok(agent)
    }

    pub async fn agent(&self, id: AgentId) -> Result<AgentRecord, EngineError> {
        self.inner
            .store
            .agent(id)
            .await?
            .ok_or(EngineError::AgentNotFound(id))
    }

    pub fn agent_online(&self, agent: &AgentRecord) -> bool {
        agent.last_seen.plus_ms(self.inner.config.agent_ttl_ms) >= self.now()
    }

    /// A page of agents by id, after `after`, at most `limit` (and
    /// [`baton_store::PAGE_ROWS_MAX`]).
    pub async fn agents_page(
        &self,
        after: Option<AgentId>,
        limit: usize,
    ) -> Result<Vec<AgentRecord>, EngineError> {
        Ok(self.inner.store.agents(after, limit).await?)
    }

    /// Every agent, read a page at a time (their number is bounded by the registrars' caps
    /// and the agent retention).
    pub async fn agents(&self) -> Result<Vec<AgentRecord>, EngineError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.inner.store.agents(after, AGENTS_PAGE).await?;
            let done = page.len() < AGENTS_PAGE;
            after = page.last().map(|a| a.id);
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    // ---- claims -----------------------------------------------------------------------

    /// Hands the agent up to `max` ready tasks it can run (highest priority, then longest
    /// ready), waiting up to `wait` for some to appear. Counts as a keep-alive.
    pub async fn claim(
        &self,
        agent: AgentId,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Task>, EngineError> {
        self.claim_and(agent, max, wait, false).await
    }

    /// [`Engine::claim`], and with `start` also starts each task it hands out, as the agent's
    /// start report would (`execution_started` under the new lease), in the claim's commit:
    /// one round trip and one commit instead of two, for an agent that runs what it claims at
    /// once. The tasks come back executing.
    pub async fn claim_and(
        &self,
        agent: AgentId,
        max: usize,
        wait: Duration,
        start: bool,
    ) -> Result<Vec<Task>, EngineError> {
        if !(1..=CLAIM_TASKS_MAX).contains(&max) {
            return Err(EngineError::invalid(
                "max",
                format!("between 1 and {CLAIM_TASKS_MAX}"),
            ));
        }
        if wait > Duration::from_millis(CLAIM_WAIT_MAX_MS) {
            return Err(EngineError::invalid(
                "wait_ms",
                format!("at most {CLAIM_WAIT_MAX_MS}"),
            ));
        }
        let _in_progress = self.inner.metrics.claim_started();
        let record = self.refresh_liveness(self.agent(agent).await?).await?;
        let give_up = tokio::time::Instant::now() + wait;
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let work = self.inner.work.notified();
            tokio::pin!(work);
            work.as_mut().enable();
            if self.stopping() {
                return Err(EngineError::ShuttingDown);
            }
            // The store counts the agent's leases in the claim's own transaction, so its
            // concurrency limit holds however many claims of it run at once, on any node.
            let started = std::time::Instant::now();
            let tasks = self
                .inner
                .store
                .claim(ClaimRequest {
                    agent,
                    capabilities: record.capabilities.clone(),
                    leases: (0..max.min(record.concurrency as usize))
                        .map(|_| LeaseId(self.inner.ids.id()))
                        .collect(),
                    now: self.now(),
                    max_held: Some(record.concurrency),
                    start,
                })
                .await?;
            if !tasks.is_empty() {
                self.inner.metrics.claimed(started.elapsed().as_secs_f64());
                for task in &tasks {
                    let assigned = baton_core::EventKind::AgentAssigned;
                    if start {
                        let started = baton_core::EventKind::ExecutionStarted;
                        let before = as_assigned(task);
                        self.record(
                            &before,
                            Some(StateKind::Pending),
                            assigned,
                            Some(agent),
                            None,
                        );
                        self.record(task, Some(StateKind::Assigned), started, Some(agent), None);
                    } else {
                        self.record(task, Some(StateKind::Pending), assigned, Some(agent), None);
                    }
                }
                for task in &tasks {
                    self.inner.leased.keep(task);
                    if let Some((_, at)) = task.next_timer() {
                        self.inner.timers.arm(at);
                    }
                }
                return Ok(tasks);
            }
            if tokio::time::Instant::now() >= give_up {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = &mut work => {}
                // A wake-up lost between nodes only delays a waiting claim.
                _ = tokio::time::sleep(Duration::from_millis(self.inner.config.claim_recheck_ms)) => {}
                _ = tokio::time::sleep_until(give_up) => return Ok(Vec::new()),
                _ = shutdown.changed() => return Err(EngineError::ShuttingDown),
            }
        }
    }

    // ---- events -------------------------------------------------------------------------
}

/// The task as a claim's assignment left it, before the start in the same commit.
fn as_assigned(task: &Task) -> Task {
    let mut assigned = task.clone();
    if let baton_core::State::Executing { lease, .. } = &task.state {
        assigned.state = baton_core::State::Assigned {
            lease: lease.clone(),
        };
        assigned.version -= 1;
    }
    assigned
}

fn validate_agent(
    name: &str,
    capabilities: &BTreeSet<Capability>,
    concurrency: u32,
) -> Result<(), EngineError> {
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        return Err(EngineError::invalid(
            "name",
            format!("1 to {NAME_LEN_MAX} bytes"),
        ));
    }
    if capabilities.len() > AGENT_CAPABILITIES_MAX {
        return Err(EngineError::invalid(
            "capabilities",
            format!("at most {AGENT_CAPABILITIES_MAX} capabilities"),
        ));
    }
    for c in capabilities {
        let mut probe = TaskSpec::new("probe");
        probe.capabilities.insert(c.clone());
        probe
            .validate()
            .map_err(|e| EngineError::invalid("capabilities[]", e.expected))?;
    }
    if !(1..=AGENT_CONCURRENCY_MAX).contains(&concurrency) {
        return Err(EngineError::invalid(
            "concurrency",
            format!("between 1 and {AGENT_CONCURRENCY_MAX}"),
        ));
    }
    Ok(())
}
