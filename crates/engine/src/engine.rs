//! The orchestration loop around the pure core: every event is validated by `baton_core`,
//! persisted through the store (compare-and-set on the version, group-committed), and only
//! then acted on: agents are woken, the watchdog re-armed, and durable effects (releasing,
//! failing or reviving dependents, compensation) are carried out from the store's outbox, so a
//! crash between commit and effect loses nothing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use baton_core::dag::TASKS_PER_WORKFLOW_MAX;
use baton_core::{
    apply, AgentId, Capability, Dag, Effect, Event, FencingToken, HistoryEntry, LeaseId, State,
    StateKind, Submission, Task, TaskId, TaskKey, TaskSpec, Timestamp, Transition, WorkflowId,
};
use baton_store::{
    AgentRecord, ClaimRequest, Edge, NewTask, NewWorkflow, Store, StoreError, SubmitBatch,
    SubmitOutcome, TaskFilter, TaskPages, TransitionRecord, WorkflowRef,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tracing::{debug, info, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use crate::clock::Clock;
use crate::cluster::Outbound;
use crate::error::EngineError;
use crate::metrics::Metrics;

/// Times a transition is retried after losing a compare-and-set race before giving up.
const CAS_RETRIES_MAX: usize = 16;
/// Due timers handled per watchdog round.
const TIMERS_PER_ROUND_MAX: usize = 512;
/// Outbox items handled per round.
const OUTBOX_PER_ROUND_MAX: usize = 256;
/// Released tasks handled per round.
const RELEASED_PER_ROUND_MAX: usize = 512;
/// Due timers or released tasks whose transitions run at once (their writes share commits).
const EFFECTS_IN_FLIGHT_MAX: usize = 64;
/// Longest a watchdog or outbox loop sleeps without looking (a lost notification only delays).
const IDLE_POLL_MS: u64 = 1_000;
/// How many times per liveness window a busy agent's `last_seen` is written at most.
const LIVENESS_WRITES_PER_TTL: u64 = 10;
/// A waiting claim looks again at least this often, whatever it was told.
const CLAIM_RECHECK_MS: u64 = 500;
/// Most tasks one claim may ask for.
pub const CLAIM_TASKS_MAX: usize = 256;
/// Longest a claim may wait for work.
pub const CLAIM_WAIT_MAX_MS: u64 = 60_000;
/// Most subscribers' backlog of transition events before the slowest one lags.
pub const EVENT_BACKLOG_MAX: usize = 16_384;
/// Longest workflow name, in bytes.
pub const NAME_LEN_MAX: usize = 256;
/// Most capabilities an agent may offer.
pub const AGENT_CAPABILITIES_MAX: usize = 64;
/// Highest concurrency an agent may ask for.
pub const AGENT_CONCURRENCY_MAX: u32 = 10_000;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// An agent not heard from (register, keep-alive, claim, report) for this long is declared
    /// dead and its leases are taken back.
    pub agent_ttl_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            agent_ttl_ms: 30_000,
        }
    }
}

/// A workflow submission.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRequest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    pub tasks: Vec<TaskSpec>,
}

/// What a submission created (or, for a repeated idempotency key, had created).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowReceipt {
    pub workflow: WorkflowId,
    /// Task ids by key.
    pub tasks: Vec<(TaskKey, TaskId)>,
    /// `false` when an earlier submission with the same idempotency key is returned.
    pub created: bool,
}

/// One accepted transition, as published to subscribers after it is durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransitionEvent {
    pub task: TaskId,
    pub workflow: WorkflowId,
    pub key: TaskKey,
    pub event: baton_core::EventKind,
    pub from: Option<StateKind>,
    pub to: StateKind,
    pub version: u64,
    pub attempt: u32,
    pub at: Timestamp,
    pub agent: Option<AgentId>,
    /// Its number in this node's stream (see [`Engine::subscribe_from`]); a number skipped
    /// stands for transitions this node may not have seen (another node's, while its notices
    /// were lost).
    #[serde(default)]
    pub seq: u64,
}

/// A place in one node's stream of transitions, to resume it from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamPosition {
    /// The node (the engine process) whose stream it is.
    pub node: Uuid,
    /// The last transition received.
    pub seq: u64,
}

/// A subscription to the transitions: those missed since the position asked for, then live.
pub struct Subscription {
    /// Published after the position asked for and before subscribing, in order.
    pub backlog: Vec<TransitionEvent>,
    /// The `seq` the next transition should have; `None` when unknown (the position asked
    /// for was another process's stream): the subscriber may have missed some.
    pub expected: Option<u64>,
    pub live: broadcast::Receiver<TransitionEvent>,
}

/// The latest transitions published on this node, numbered.
struct EventLog {
    next: u64,
    recent: std::collections::VecDeque<TransitionEvent>,
}

/// Why a task that is not terminal is where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum WaitReason {
    /// Waiting for these dependencies to complete.
    Dependencies { open: Vec<OpenDependency> },
    /// Ready, but no online agent offers every required capability.
    NoCapableAgent { missing: Vec<Capability> },
    /// Ready; capable agents are online but busy.
    AgentsBusy { capable_online: usize },
    /// Leased to an agent; the lease runs until the next deadline.
    Leased {
        agent: AgentId,
        state: StateKind,
        until: Option<Timestamp>,
    },
    /// Failed and backing off before the next attempt.
    BackingOff {
        until: Timestamp,
        attempt: u32,
        max_attempts: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDependency {
    pub key: TaskKey,
    pub id: TaskId,
    pub state: StateKind,
}

/// The orchestration engine. Cheap to clone; clones share everything.
pub struct Engine<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<S> {
    store: S,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    /// New ready work: wakes claimers.
    work: Notify,
    /// Deadlines or retries changed: wakes the watchdog.
    timers: Notify,
    /// New outbox items: wakes the effect runner.
    outbox: Notify,
    events: broadcast::Sender<TransitionEvent>,
    /// What `events` carried lately, for subscribers resuming a stream; locked while sending
    /// so that a subscription sees each transition once, in the backlog or live.
    log: std::sync::Mutex<EventLog>,
    shutdown: watch::Sender<bool>,
    metrics: Metrics,
    /// This node, among the nodes sharing the store.
    node: Uuid,
    /// What to tell the other nodes; `None` when the store is not shared.
    outbound: Option<mpsc::Sender<Outbound>>,
    outbound_rx: std::sync::Mutex<Option<mpsc::Receiver<Outbound>>>,
}

impl<S: Store + 'static> Engine<S> {
    pub fn new(store: S, clock: Arc<dyn Clock>, config: EngineConfig) -> Engine<S> {
        let (events, _) = broadcast::channel(EVENT_BACKLOG_MAX);
        let shared = store.notices().is_some();
        let (outbound, outbound_rx) = if shared {
            let (tx, rx) = mpsc::channel(crate::cluster::OUTBOUND_MAX);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (shutdown, _) = watch::channel(false);
        Engine {
            inner: Arc::new_cyclic(|weak: &std::sync::Weak<Inner<S>>| {
                let weak = weak.clone();
                Inner {
                    store,
                    clock,
                    config,
                    work: Notify::new(),
                    timers: Notify::new(),
                    outbox: Notify::new(),
                    events,
                    log: std::sync::Mutex::new(EventLog {
                        next: 1,
                        recent: std::collections::VecDeque::new(),
                    }),
                    shutdown,
                    metrics: Metrics::new(Arc::new(move || {
                        weak.upgrade().map(|inner| inner.store.stats())
                    })),
                    node: Uuid::new_v4(),
                    outbound,
                    outbound_rx: std::sync::Mutex::new(outbound_rx),
                }
            }),
        }
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Transition events from now on, after each is durable.
    pub fn subscribe(&self) -> broadcast::Receiver<TransitionEvent> {
        self.inner.events.subscribe()
    }

    /// Transition events after `after` (those still kept, at most [`EVENT_BACKLOG_MAX`]),
    /// then from now on. A position of another process (or not yet reached) cannot be
    /// resumed: `expected` is then `None`.
    pub fn subscribe_from(&self, after: Option<StreamPosition>) -> Subscription {
        let log = self.inner.log.lock().expect("event log lock");
        let live = self.inner.events.subscribe();
        match after {
            Some(p) if p.node == self.inner.node && p.seq < log.next => Subscription {
                backlog: log
                    .recent
                    .iter()
                    .filter(|e| e.seq > p.seq)
                    .cloned()
                    .collect(),
                expected: Some(p.seq + 1),
                live,
            },
            Some(_) => Subscription {
                backlog: Vec::new(),
                expected: None,
                live,
            },
            None => Subscription {
                backlog: Vec::new(),
                expected: Some(log.next),
                live,
            },
        }
    }

    /// This node's identity in the cluster, which also names its stream of transitions.
    pub fn node(&self) -> Uuid {
        self.inner.node
    }

    /// Numbers `ev`, keeps it for resuming subscribers, and sends it to the live ones.
    fn emit(&self, mut ev: TransitionEvent) {
        let mut log = self.inner.log.lock().expect("event log lock");
        ev.seq = log.next;
        log.next += 1;
        if log.recent.len() == EVENT_BACKLOG_MAX {
            log.recent.pop_front();
        }
        log.recent.push_back(ev.clone());
        let _ = self.inner.events.send(ev);
    }

    /// Transitions may have been missed (other nodes' notices were lost): skips a number.
    fn emit_gap(&self) {
        self.inner.log.lock().expect("event log lock").next += 1;
    }

    /// Starts the watchdog and the effect runner; they stop at [`Engine::shutdown`].
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let watchdog = self.clone();
        let effects = self.clone();
        let mut loops = vec![
            tokio::spawn(async move { watchdog.watchdog_loop().await }),
            tokio::spawn(async move { effects.effects_loop().await }),
        ];
        if let Some(notices) = self.inner.store.notices() {
            let listener = self.clone();
            loops.push(tokio::spawn(
                async move { listener.listen_loop(notices).await },
            ));
        }
        let outbound = self.inner.outbound_rx.lock().expect("outbound lock").take();
        if let Some(rx) = outbound {
            let publisher = self.clone();
            loops.push(tokio::spawn(
                async move { publisher.publish_loop(rx).await },
            ));
        }
        loops
    }

    /// Tells the other nodes, if any; a full queue drops the item (they poll anyway).
    fn tell(&self, item: Outbound) {
        if let Some(tx) = &self.inner.outbound {
            let _ = tx.try_send(item);
        }
    }

    /// Sends what this node committed to the others, batched.
    async fn publish_loop(&self, mut rx: mpsc::Receiver<Outbound>) {
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let first = tokio::select! {
                item = rx.recv() => match item { Some(i) => i, None => return },
                _ = shutdown.changed() => return,
            };
            for payload in crate::cluster::pack(self.inner.node, first, &mut rx) {
                if let Err(e) = self.inner.store.notify(payload).await {
                    warn!(error = %e, "cannot notify the other nodes");
                }
            }
        }
    }

    /// Acts on what the other nodes committed: wake-ups, and their transitions for this
    /// node's subscribers.
    async fn listen_loop(&self, mut notices: broadcast::Receiver<String>) {
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let payload = tokio::select! {
                n = notices.recv() => n,
                _ = shutdown.changed() => return,
            };
            let notice = match payload {
                Ok(p) if p.is_empty() => None,
                Ok(p) => match serde_json::from_str::<crate::cluster::Notice>(&p) {
                    Ok(n) if n.node == self.inner.node => continue,
                    Ok(n) => Some(n),
                    Err(e) => {
                        warn!(error = %e, "unreadable notice from another node");
                        continue;
                    }
                },
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            match notice {
                // Some notices may be lost: look at everything again.
                None => {
                    self.emit_gap();
                    self.inner.work.notify_waiters();
                    self.inner.outbox.notify_one();
                    self.inner.timers.notify_one();
                }
                Some(n) => {
                    if n.work {
                        self.inner.work.notify_waiters();
                    }
                    if n.outbox {
                        self.inner.outbox.notify_one();
                    }
                    if n.timers {
                        self.inner.timers.notify_one();
                    }
                    for ev in n.events {
                        self.emit(ev);
                    }
                }
            }
        }
    }

    /// Stops the background loops; in-flight requests finish, leases stay as they are.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        self.inner.work.notify_waiters();
    }

    /// Resolves once [`Engine::shutdown`] was called.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shutdown.subscribe();
        async move {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    // ---- submission -------------------------------------------------------------------

    /// Validates and submits a workflow in one transaction.
    pub async fn submit_workflow(
        &self,
        req: WorkflowRequest,
    ) -> Result<WorkflowReceipt, EngineError> {
        validate_workflow(&req)?;
        let now = self.now();
        let workflow = WorkflowId(Uuid::now_v7());
        let ids: HashMap<&TaskKey, TaskId> = req
            .tasks
            .iter()
            .map(|t| (&t.key, TaskId(Uuid::now_v7())))
            .collect();
        let mut tasks = Vec::with_capacity(req.tasks.len());
        let mut edges = Vec::new();
        let mut transitions = Vec::with_capacity(req.tasks.len());
        for spec in &req.tasks {
            let id = ids[&spec.key];
            for dep in &spec.depends_on {
                edges.push(Edge {
                    dependency: ids[dep],
                    dependent: id,
                });
            }
            let (new, t) = new_task(workflow, id, spec.clone(), Vec::new(), now)?;
            tasks.push(new);
            transitions.push(t);
        }
        let batch = SubmitBatch {
            workflow: WorkflowRef::New(NewWorkflow {
                id: workflow,
                name: req.name.clone(),
                idempotency_key: req.idempotency_key.clone(),
                request_hash: request_hash(&req),
                created_at: now,
            }),
            tasks,
            edges,
            transitions: Vec::new(),
        };
        match self.inner.store.submit(batch).await? {
            SubmitOutcome::Created { workflow } => {
                for t in &transitions {
                    self.after_commit(t, &Event::Submitted(submission_of(t)));
                }
                info!(workflow = %workflow, tasks = transitions.len(), "workflow submitted");
                let mut keys: Vec<(TaskKey, TaskId)> =
                    ids.into_iter().map(|(k, id)| (k.clone(), id)).collect();
                keys.sort_by_key(|(_, id)| *id);
                Ok(WorkflowReceipt {
                    workflow,
                    tasks: keys,
                    created: true,
                })
            }
            SubmitOutcome::Existing { workflow, tasks } => Ok(WorkflowReceipt {
                workflow,
                tasks,
                created: false,
            }),
        }
    }

    /// Decomposition: the agent executing `parent` adds sub-tasks to its workflow; the
    /// parent's dependents then also wait for every sub-task.
    pub async fn add_subtasks(
        &self,
        parent: TaskId,
        agent: AgentId,
        token: FencingToken,
        specs: Vec<TaskSpec>,
    ) -> Result<Vec<(TaskKey, TaskId)>, EngineError> {
        if specs.is_empty() {
            return Err(EngineError::invalid("tasks", "at least one sub-task"));
        }
        for (i, spec) in specs.iter().enumerate() {
            spec.validate()
                .map_err(|e| EngineError::invalid(format!("tasks[{i}].{}", e.field), e.expected))?;
        }
        for _ in 0..CAS_RETRIES_MAX {
            let task = self.load(parent).await?;
            match &task.state {
                State::Executing { lease, .. } if lease.token == token && lease.agent == agent => {}
                _ => {
                    return Err(EngineError::Rejected(Box::new(baton_core::Rejection {
                        task: parent,
                        state: Some(task.kind()),
                        event: baton_core::EventKind::DependencyAdded,
                        refusal: baton_core::Refusal::GuardFailed {
                            guard: "current lease".into(),
                            detail: format!(
                                "only the agent executing the task under its current lease \
                                 (token {}) may add sub-tasks",
                                task.fencing_token
                            ),
                        },
                    })))
                }
            }
            let existing = self.workflow_tasks(task.workflow).await?;
            let mut dag = Dag::build(
                existing
                    .iter()
                    .map(|t| (&t.spec.key, t.dependencies.as_slice())),
            )?;
            let dependents: Vec<&Task> = existing
                .iter()
                .filter(|t| t.dependencies.contains(&task.spec.key))
                .collect();
            let new_edges: Vec<(TaskKey, TaskKey)> = dependents
                .iter()
                .flat_map(|d| specs.iter().map(|s| (d.spec.key.clone(), s.key.clone())))
                .collect();
            dag.extend(
                specs.iter().map(|s| (&s.key, s.depends_on.as_slice())),
                new_edges.iter().map(|(a, b)| (a, b)),
            )?;
            let by_key: HashMap<&TaskKey, &Task> =
                existing.iter().map(|t| (&t.spec.key, t)).collect();
            validate_subtasks(&specs, &by_key)?;
            // After every change of the workflow so far (see `transition_linked`).
            let now = existing
                .iter()
                .map(|t| t.updated_at)
                .fold(self.now(), Timestamp::max);
            let new_ids: HashMap<&TaskKey, TaskId> = specs
                .iter()
                .map(|s| (&s.key, TaskId(Uuid::now_v7())))
                .collect();
            let id_of = |k: &TaskKey| {
                new_ids
                    .get(k)
                    .copied()
                    .or_else(|| by_key.get(k).map(|t| t.id))
            };
            let mut tasks = Vec::new();
            let mut created = Vec::new();
            let mut edges = Vec::new();
            for spec in &specs {
                let id = new_ids[&spec.key];
                let completed: Vec<TaskKey> = spec
                    .depends_on
                    .iter()
                    .filter(|d| {
                        by_key
                            .get(d)
                            .is_some_and(|t| t.kind() == StateKind::Completed)
                    })
                    .cloned()
                    .collect();
                for dep in &spec.depends_on {
                    edges.push(Edge {
                        dependency: id_of(dep).expect("the graph checked every dependency"),
                        dependent: id,
                    });
                }
                let (new, t) = new_task(task.workflow, id, spec.clone(), completed, now)?;
                tasks.push(new);
                created.push(t);
            }
            let mut records = Vec::new();
            let mut applied = Vec::new();
            // A dependent that has ended (cancelled) takes no event, only the edges: if it is
            // ever revived, it catches up (`catch_up_dependencies`) and waits for them too.
            for dependent in &dependents {
                if dependent.state.is_terminal() {
                    for spec in &specs {
                        edges.push(Edge {
                            dependency: new_ids[&spec.key],
                            dependent: dependent.id,
                        });
                    }
                    continue;
                }
                let mut current = (*dependent).clone();
                for spec in &specs {
                    edges.push(Edge {
                        dependency: new_ids[&spec.key],
                        dependent: dependent.id,
                    });
                    let event = Event::DependencyAdded {
                        dependency: spec.key.clone(),
                    };
                    let t = apply(&current, &event, now)?;
                    current = t.task.clone();
                    records.push(TransitionRecord::of(&t, event.clone(), now));
                    applied.push((t, event));
                }
            }
            let batch = SubmitBatch {
                workflow: WorkflowRef::Existing(task.workflow),
                tasks,
                edges,
                transitions: records,
            };
            match self.inner.store.submit(batch).await {
                Ok(_) => {
                    for t in &created {
                        self.after_commit(t, &Event::Submitted(submission_of(t)));
                    }
                    for (t, event) in &applied {
                        self.after_commit(t, event);
                    }
                    // One revived meanwhile has caught up before these edges existed.
                    for dependent in dependents.iter().filter(|d| d.state.is_terminal()) {
                        self.catch_up_dependencies(dependent.id).await?;
                    }
                    info!(parent = %parent, subtasks = specs.len(), "sub-tasks added");
                    return Ok(specs
                        .iter()
                        .map(|s| (s.key.clone(), new_ids[&s.key]))
                        .collect());
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::DuplicateKey { key, .. }) => {
                    return Err(EngineError::Graph(baton_core::DagError::DuplicateTask(key)))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended(parent))
    }

    async fn workflow_tasks(&self, workflow: WorkflowId) -> Result<Vec<Task>, EngineError> {
        let mut all = Vec::new();
        let mut pages = TaskPages::new(TaskFilter {
            workflow: Some(workflow),
            ..TaskFilter::default()
        });
        while let Some(page) = pages.next(&self.inner.store).await? {
            all.extend(page);
            if all.len() > TASKS_PER_WORKFLOW_MAX {
                break;
            }
        }
        Ok(all)
    }

    // ---- agents -----------------------------------------------------------------------

    pub async fn register_agent(
        &self,
        id: Option<AgentId>,
        name: String,
        capabilities: BTreeSet<Capability>,
        concurrency: u32,
    ) -> Result<AgentRecord, EngineError> {
        validate_agent(&name, &capabilities, concurrency)?;
        let now = self.now();
        let id = id.unwrap_or_else(|| AgentId(Uuid::now_v7()));
        let registered_at = match self.inner.store.agent(id).await? {
            Some(existing) => existing.registered_at,
            None => now,
        };
        let record = AgentRecord {
            id,
            name,
            capabilities,
            concurrency,
            registered_at,
            last_seen: now,
        };
        self.inner.store.upsert_agent(record.clone()).await?;
        info!(agent = %id, name = %record.name, "agent registered");
        self.inner.work.notify_waiters();
        Ok(record)
    }

    /// Records that the agent was heard from, at most once per tenth of its liveness window:
    /// a report need not cost a second write.
    async fn refresh_liveness(&self, mut record: AgentRecord) -> Result<AgentRecord, EngineError> {
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

    // ---- claims -----------------------------------------------------------------------

    /// Hands the agent up to `max` ready tasks it can run (highest priority, then longest
    /// ready), waiting up to `wait` for some to appear. Counts as a keep-alive.
    pub async fn claim(
        &self,
        agent: AgentId,
        max: usize,
        wait: Duration,
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
                        .map(|_| LeaseId(Uuid::now_v7()))
                        .collect(),
                    now: self.now(),
                    max_held: Some(record.concurrency),
                })
                .await?;
            if !tasks.is_empty() {
                self.inner.metrics.claimed(started.elapsed().as_secs_f64());
                for task in &tasks {
                    self.record(
                        task,
                        Some(StateKind::Pending),
                        baton_core::EventKind::AgentAssigned,
                        Some(agent),
                        None,
                    );
                }
                self.inner.timers.notify_one();
                return Ok(tasks);
            }
            if tokio::time::Instant::now() >= give_up {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = &mut work => {}
                // A wake-up lost between nodes only delays a waiting claim.
                _ = tokio::time::sleep(Duration::from_millis(CLAIM_RECHECK_MS)) => {}
                _ = tokio::time::sleep_until(give_up) => return Ok(Vec::new()),
                _ = shutdown.changed() => return Err(EngineError::ShuttingDown),
            }
        }
    }

    // ---- events -------------------------------------------------------------------------

    /// Applies an agent's report (started, heartbeat, succeeded, failed, released). A duplicate
    /// of an applied report answers with the task as it stands. An accepted report keeps its
    /// agent alive; a refused one changes nothing.
    pub async fn report(&self, id: TaskId, event: Event) -> Result<Task, EngineError> {
        self.report_traced(id, event, None).await
    }

    /// [`Engine::report`], with the agent's own W3C `traceparent`: the transition's span links
    /// to the agent's span. A malformed `traceparent` is ignored.
    pub async fn report_traced(
        &self,
        id: TaskId,
        event: Event,
        traceparent: Option<&str>,
    ) -> Result<Task, EngineError> {
        self.report_by(None, id, event, traceparent).await
    }

    /// [`Engine::report_traced`] by an agent whose record the caller has just read (to
    /// authorise the report): it keeps the agent alive without reading the record again.
    pub async fn report_by(
        &self,
        reporter: Option<&AgentRecord>,
        id: TaskId,
        event: Event,
        traceparent: Option<&str>,
    ) -> Result<Task, EngineError> {
        let Some((agent, _)) = event.report() else {
            return Err(EngineError::invalid("event", "an agent's report"));
        };
        if matches!(event, Event::AgentLost { .. }) {
            return Err(EngineError::invalid("event", "an agent's report"));
        }
        let link = traceparent.and_then(crate::trace::parse_traceparent);
        let task = self
            .transition_linked(id, |_| Some(event.clone()), link, Timestamp(0))
            .await?;
        let record = match reporter {
            Some(r) if r.id == agent => Some(r.clone()),
            _ => self.agent(agent).await.ok(),
        };
        if let Some(record) = record {
            self.refresh_liveness(record).await?;
        }
        Ok(task)
    }

    pub async fn cancel_task(
        &self,
        id: TaskId,
        by: String,
        reason: String,
    ) -> Result<Task, EngineError> {
        self.transition(id, |_| {
            Some(Event::CancelRequested {
                requested_by: by.clone(),
                reason: reason.clone(),
            })
        })
        .await
    }

    /// Cancels every task of the workflow that has not ended; returns how many it cancelled.
    pub async fn cancel_workflow(
        &self,
        workflow: WorkflowId,
        by: String,
        reason: String,
    ) -> Result<usize, EngineError> {
        if self.inner.store.workflow(workflow).await?.is_none() {
            return Err(EngineError::WorkflowNotFound(workflow));
        }
        let mut cancelled = 0;
        for task in self.workflow_tasks(workflow).await? {
            if task.state.is_terminal() {
                continue;
            }
            match self.cancel_task(task.id, by.clone(), reason.clone()).await {
                Ok(_) => cancelled += 1,
                Err(EngineError::Rejected(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(cancelled)
    }

    /// An operator reopens a task that failed for good; the dependents its failure cancelled
    /// come back too.
    pub async fn retry_task(&self, id: TaskId, by: String) -> Result<Task, EngineError> {
        self.transition(id, |_| {
            Some(Event::RetryRequested {
                requested_by: by.clone(),
            })
        })
        .await
    }

    /// Applies the event `make` derives from the task's current version; on a lost
    /// compare-and-set, reloads and decides again. `make` returning `None` means nothing to do.
    async fn transition(
        &self,
        id: TaskId,
        make: impl Fn(&Task) -> Option<Event>,
    ) -> Result<Task, EngineError> {
        self.transition_linked(id, make, None, Timestamp(0)).await
    }

    /// Loads the task, makes its event, applies and stores it; a lost compare-and-set starts
    /// over from the fresh version. The transition is stamped no earlier than the task's last
    /// change and `after` (what caused it), so that histories stay in causal order when the
    /// clock steps back or nodes' clocks disagree.
    async fn transition_linked(
        &self,
        id: TaskId,
        make: impl Fn(&Task) -> Option<Event>,
        link: Option<opentelemetry::trace::SpanContext>,
        after: Timestamp,
    ) -> Result<Task, EngineError> {
        for _ in 0..CAS_RETRIES_MAX {
            let task = self.load(id).await?;
            let Some(event) = make(&task) else {
                return Ok(task);
            };
            let now = self.now().max(task.updated_at).max(after);
            let t = match apply(&task, &event, now) {
                Ok(t) => t,
                Err(r) if r.is_duplicate() => return Ok(task),
                Err(r) => {
                    debug!(task = %id, state = %task.kind(), event = %event.kind(), "event refused");
                    return Err(r.into());
                }
            };
            match self
                .inner
                .store
                .apply(TransitionRecord::of(&t, event.clone(), now))
                .await
            {
                Ok(()) => {
                    self.after_commit_linked(&t, &event, link.clone());
                    return Ok(t.task);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended(id))
    }

    async fn load(&self, id: TaskId) -> Result<Task, EngineError> {
        self.inner
            .store
            .task(id)
            .await?
            .ok_or(EngineError::TaskNotFound(id))
    }

    /// After a commit: log, publish, and nudge whoever the effects concern.
    fn after_commit(&self, t: &Transition, event: &Event) {
        self.after_commit_linked(t, event, None)
    }

    fn after_commit_linked(
        &self,
        t: &Transition,
        event: &Event,
        link: Option<opentelemetry::trace::SpanContext>,
    ) {
        self.record(
            &t.task,
            t.from,
            event.kind(),
            event.report().map(|(a, _)| a),
            link,
        );
        match event {
            Event::TimeoutExpired { deadline } => self.inner.metrics.timeout(Some(*deadline)),
            Event::AgentLost { .. } => self.inner.metrics.timeout(None),
            _ => {}
        }
        for effect in &t.effects {
            match effect {
                Effect::WakeAgents { .. } => {
                    self.inner.work.notify_waiters();
                    self.tell(Outbound::Work);
                }
                Effect::ArmDeadline { .. }
                | Effect::DisarmDeadline { .. }
                | Effect::ScheduleRetry { .. } => {
                    self.inner.timers.notify_one();
                    self.tell(Outbound::Timers);
                }
                Effect::ReleaseDependents
                | Effect::FailDependents
                | Effect::ReviveDependents
                | Effect::Compensate { .. } => {
                    self.inner.outbox.notify_one();
                    self.tell(Outbound::Outbox);
                }
                Effect::EndLease { .. } | Effect::RevokeLease { .. } => {
                    self.inner.work.notify_waiters();
                    self.tell(Outbound::Work);
                }
            }
        }
    }

    /// One accepted transition: exactly one log line, its metrics, and its event for
    /// subscribers. Payloads and tokens of callers are never logged.
    fn record(
        &self,
        task: &Task,
        from: Option<StateKind>,
        event: baton_core::EventKind,
        agent: Option<AgentId>,
        link: Option<opentelemetry::trace::SpanContext>,
    ) {
        let in_previous_ms = from
            .and_then(|s| task.entered_at.get(s))
            .map_or(0, |at| task.updated_at.ms_since(at));
        let agent = agent
            .or_else(|| task.state.lease().map(|l| l.agent))
            .map(|a| a.to_string())
            .unwrap_or_default();
        let to = task.kind().as_str();
        let from_name = from.map_or("new", StateKind::as_str);
        let span = tracing::info_span!(
            "transition",
            otel.name = %format_args!("{event} {from_name}->{to}"),
            task = %task.id,
            workflow = %task.workflow,
            key = %task.spec.key,
            event = %event,
            from = from_name,
            to,
            attempt = task.attempt,
        );
        let _ = span.set_parent(crate::trace::task_context(task.workflow, task.id));
        if let Some(link) = link {
            span.add_link(link);
        }
        span.in_scope(|| {
            info!(
                task = %task.id,
                workflow = %task.workflow,
                key = %task.spec.key,
                attempt = task.attempt,
                agent = %agent,
                event = %event,
                from = from.map_or("new", StateKind::as_str),
                to = task.kind().as_str(),
                fencing_token = task.fencing_token.0,
                in_previous_ms,
                "transition"
            );
        });
        self.inner.metrics.transition(task, from, event);
        self.publish(task, from, event);
    }

    /// The metrics in the Prometheus text format, with counts per state and agents online
    /// read from the store now.
    pub async fn metrics_text(&self) -> Result<String, EngineError> {
        let counts = self.inner.store.counts(None).await?;
        let online = self
            .inner
            .store
            .agents()
            .await?
            .iter()
            .filter(|a| self.agent_online(a))
            .count();
        let subscribers = self.inner.events.receiver_count();
        Ok(self.inner.metrics.encode(counts, online, subscribers))
    }

    fn publish(&self, task: &Task, from: Option<StateKind>, event: baton_core::EventKind) {
        let ev = TransitionEvent {
            task: task.id,
            workflow: task.workflow,
            key: task.spec.key.clone(),
            event,
            from,
            to: task.kind(),
            version: task.version,
            attempt: task.attempt,
            at: task.updated_at,
            agent: task.state.lease().map(|l| l.agent),
            seq: 0,
        };
        if self.inner.outbound.is_some() {
            self.tell(Outbound::Event(ev.clone()));
        }
        self.emit(ev);
    }

    // ---- background work ------------------------------------------------------------------

    async fn watchdog_loop(&self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        while !self.stopping() {
            let timers = self.inner.timers.notified();
            tokio::pin!(timers);
            timers.as_mut().enable();
            if !self.leading_or_wait(&mut shutdown).await {
                continue;
            }
            if let Err(e) = self.fire_timers().await {
                warn!(error = %e, "watchdog round failed");
            }
            if let Err(e) = self.reap_dead_agents().await {
                warn!(error = %e, "agent liveness round failed");
            }
            let now = self.now();
            let idle = now.plus_ms(IDLE_POLL_MS);
            let next = match self.inner.store.next_timer().await {
                Ok(Some(t)) => t.min(idle),
                _ => idle,
            };
            let clock = Arc::clone(&self.inner.clock);
            tokio::select! {
                _ = clock.sleep_until(next) => {}
                _ = tokio::time::sleep(Duration::from_millis(IDLE_POLL_MS)) => {}
                _ = &mut timers => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn effects_loop(&self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        while !self.stopping() {
            let outbox = self.inner.outbox.notified();
            tokio::pin!(outbox);
            outbox.as_mut().enable();
            if !self.leading_or_wait(&mut shutdown).await {
                continue;
            }
            if let Err(e) = self.run_effects().await {
                warn!(error = %e, "effect round failed");
            }
            tokio::select! {
                _ = &mut outbox => {}
                _ = tokio::time::sleep(Duration::from_millis(IDLE_POLL_MS)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Whether to run a round of periodic work now; when another node leads, waits one poll
    /// interval first.
    async fn leading_or_wait(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        if self.lead().await {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(IDLE_POLL_MS)) => {}
            _ = shutdown.changed() => {}
        }
        false
    }

    /// Whether this node runs the periodic work now (the store says who leads).
    async fn lead(&self) -> bool {
        match self.inner.store.try_lead().await {
            Ok(leading) => leading,
            Err(e) => {
                warn!(error = %e, "cannot tell whether this node leads");
                false
            }
        }
    }

    /// One watchdog round: fires every due deadline and retry, and declares silent agents
    /// dead. The background loop calls it; tests call it after moving a manual clock.
    pub async fn tick(&self) -> Result<(), EngineError> {
        if !self.inner.store.try_lead().await? {
            return Ok(());
        }
        self.fire_timers().await?;
        self.reap_dead_agents().await?;
        while self.run_effects().await? > 0 {}
        Ok(())
    }

    /// Fires the due timers, each decided from the task's current version: a task completed
    /// a moment before its deadline passed stays completed.
    async fn fire_timers(&self) -> Result<usize, EngineError> {
        let now = self.now();
        let due = self
            .inner
            .store
            .due_timers(now, TIMERS_PER_ROUND_MAX)
            .await?;
        let mut fired = 0;
        // Several at once, so that their writes share commits instead of one flush each.
        for chunk in due.chunks(EFFECTS_IN_FLIGHT_MAX) {
            let outcomes = join_all(
                chunk
                    .iter()
                    .map(|(id, _)| self.transition(*id, move |task| timer_event(task, now))),
            )
            .await;
            for ((id, _), outcome) in chunk.iter().zip(outcomes) {
                match outcome {
                    Ok(_) => fired += 1,
                    Err(EngineError::Rejected(r)) => debug!(task = %id, "timer refused: {r}"),
                    Err(EngineError::TaskNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(fired)
    }

    /// Takes the leases of agents not heard from within the liveness window.
    async fn reap_dead_agents(&self) -> Result<(), EngineError> {
        let now = self.now();
        for agent in self.inner.store.agents().await? {
            if agent.last_seen.plus_ms(self.inner.config.agent_ttl_ms) >= now {
                continue;
            }
            for id in self.inner.store.leased_to(agent.id).await? {
                let lost = |task: &Task| {
                    let lease = task.state.lease()?;
                    (lease.agent == agent.id).then_some(Event::AgentLost {
                        agent: agent.id,
                        token: lease.token,
                    })
                };
                match self.transition(id, lost).await {
                    Ok(task) => {
                        info!(task = %id, agent = %agent.id, to = %task.kind(), "lease of a dead agent taken back")
                    }
                    Err(EngineError::Rejected(_) | EngineError::TaskNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Carries out durable effects from the outbox, then releases blocked tasks whose
    /// dependencies all completed. Every handler is idempotent: an item done twice (after a
    /// crash, or by two nodes) changes nothing the second time.
    async fn run_effects(&self) -> Result<usize, EngineError> {
        let items = self.inner.store.outbox(OUTBOX_PER_ROUND_MAX).await?;
        let mut done = Vec::with_capacity(items.len());
        for item in &items {
            match self.run_effect(item.task, &item.effect).await {
                Ok(()) => done.push(item.id),
                Err(e) => warn!(task = %item.task, error = %e, "effect failed; will retry"),
            }
        }
        let acked = done.len();
        if !done.is_empty() {
            self.inner.store.ack_outbox(done).await?;
        }
        let released = self.release_ready().await?;
        Ok(acked + released)
    }

    async fn run_effect(&self, id: TaskId, effect: &Effect) -> Result<(), EngineError> {
        match effect {
            Effect::ReleaseDependents => {
                self.release_ready().await?;
            }
            Effect::FailDependents => {
                let task = self.load(id).await?;
                for dependent in self.inner.store.dependents(id).await? {
                    let upstream = task.spec.key.clone();
                    let fail = |d: &Task| {
                        (d.kind() == StateKind::Blocked).then(|| Event::UpstreamFailed {
                            upstream: upstream.clone(),
                        })
                    };
                    applied(self.transition(dependent, fail).await)?;
                }
            }
            Effect::ReviveDependents => {
                let task = self.load(id).await?;
                for dependent in self.inner.store.dependents(id).await? {
                    let upstream = task.spec.key.clone();
                    let revive = |d: &Task| match &d.state {
                        State::Cancelled {
                            reason: baton_core::CancelReason::Upstream { upstream: cause },
                        } if *cause == upstream => Some(Event::UpstreamRevived {
                            upstream: upstream.clone(),
                        }),
                        _ => None,
                    };
                    applied(self.transition(dependent, revive).await)?;
                    self.catch_up_dependencies(dependent).await?;
                    self.cancel_if_upstream_ended(dependent).await?;
                }
            }
            Effect::Compensate { spec } => {
                let task = self.load(id).await?;
                let mut comp = TaskSpec::new(spec.key.0.clone());
                comp.capabilities = spec.capabilities.clone();
                comp.input = serde_json::json!({
                    "compensates": task.spec.key,
                    "task": task.id,
                    "input": spec.input,
                    "error": task.errors.last(),
                });
                comp.priority = task.spec.priority;
                let now = self.now().max(task.updated_at);
                let (new, t) =
                    new_task(task.workflow, TaskId(Uuid::now_v7()), comp, Vec::new(), now)?;
                let batch = SubmitBatch {
                    workflow: WorkflowRef::Existing(task.workflow),
                    tasks: vec![new],
                    edges: Vec::new(),
                    transitions: Vec::new(),
                };
                match self.inner.store.submit(batch).await {
                    Ok(_) => {
                        info!(task = %id, compensation = %t.task.id, "compensation task created");
                        self.inner.metrics.compensation();
                        self.after_commit(&t, &Event::Submitted(submission_of(&t)));
                    }
                    Err(StoreError::DuplicateKey { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Sub-tasks added while the task was cancelled are in the graph but not in its own list
    /// of dependencies: once it is blocked again, `dependency_added` brings them in, so that
    /// its record, `upstream_failed` and the check all see what it waits for. Idempotent.
    async fn catch_up_dependencies(&self, id: TaskId) -> Result<(), EngineError> {
        let task = self.load(id).await?;
        if task.kind() != StateKind::Blocked {
            return Ok(());
        }
        for dep in self.inner.store.dependencies(id).await? {
            if task.dependencies.contains(&dep.key) {
                continue;
            }
            let add = |t: &Task| {
                (t.kind() == StateKind::Blocked && !t.dependencies.contains(&dep.key)).then(|| {
                    Event::DependencyAdded {
                        dependency: dep.key.clone(),
                    }
                })
            };
            applied(self.transition(id, add).await)?;
        }
        Ok(())
    }

    /// A revived task may still wait for another dependency that ended failed (for good) or
    /// cancelled: that one's `upstream_failed` was sent while the task was already cancelled,
    /// so without this the task (and everything below it) would stay blocked for ever. It is
    /// cancelled again, naming that dependency; if that dependency is itself revived later, its
    /// own revival brings the task back. Idempotent: only a blocked task is touched.
    async fn cancel_if_upstream_ended(&self, id: TaskId) -> Result<(), EngineError> {
        for dep in self.inner.store.dependencies(id).await? {
            if !matches!(dep.state, StateKind::Failed | StateKind::Cancelled) {
                continue;
            }
            let ended = match self.inner.store.task(dep.id).await? {
                Some(t) => t.state.is_terminal(),
                None => false,
            };
            if ended {
                let fail = |d: &Task| {
                    (d.kind() == StateKind::Blocked).then(|| Event::UpstreamFailed {
                        upstream: dep.key.clone(),
                    })
                };
                applied(self.transition(id, fail).await)?;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Sends `dependencies_met` to blocked tasks whose dependencies all completed (the store
    /// counts open dependencies in the transaction that completes each one).
    async fn release_ready(&self) -> Result<usize, EngineError> {
        let mut released = 0;
        loop {
            let ready = self
                .inner
                .store
                .released_blocked(RELEASED_PER_ROUND_MAX)
                .await?;
            let before = released;
            let met = |t: &Task| {
                (t.kind() == StateKind::Blocked).then(|| Event::DependenciesMet {
                    completed: t.dependencies.clone(),
                })
            };
            // Several at once, so that their writes share commits instead of one flush each.
            for chunk in ready.chunks(EFFECTS_IN_FLIGHT_MAX) {
                let outcomes = join_all(chunk.iter().map(|id| self.release(*id, met))).await;
                for outcome in outcomes {
                    if applied(outcome)? {
                        released += 1;
                    }
                }
            }
            if ready.len() < RELEASED_PER_ROUND_MAX || released == before {
                return Ok(released);
            }
        }
    }

    /// Sends `met` to `id`, stamped after the last of its dependencies completed.
    async fn release(
        &self,
        id: TaskId,
        met: impl Fn(&Task) -> Option<Event>,
    ) -> Result<Task, EngineError> {
        let dependencies = self.inner.store.dependencies(id).await?;
        let last = dependencies.iter().map(|d| d.updated_at).max();
        self.transition_linked(id, met, None, last.unwrap_or(Timestamp(0)))
            .await
    }

    // ---- views ----------------------------------------------------------------------------

    /// Why a non-terminal task is where it is; `None` once it has ended.
    pub async fn wait_reason(&self, task: &Task) -> Result<Option<WaitReason>, EngineError> {
        Ok(match &task.state {
            State::Blocked => {
                let open = self
                    .inner
                    .store
                    .dependencies(task.id)
                    .await?
                    .into_iter()
                    .filter(|d| d.state != StateKind::Completed)
                    .map(|d| OpenDependency {
                        key: d.key,
                        id: d.id,
                        state: d.state,
                    })
                    .collect();
                Some(WaitReason::Dependencies { open })
            }
            State::Pending => {
                let online: Vec<AgentRecord> = self
                    .inner
                    .store
                    .agents()
                    .await?
                    .into_iter()
                    .filter(|a| self.agent_online(a))
                    .collect();
                let capable = online
                    .iter()
                    .filter(|a| task.spec.capabilities.is_subset(&a.capabilities))
                    .count();
                if capable == 0 {
                    let offered: HashSet<&Capability> =
                        online.iter().flat_map(|a| a.capabilities.iter()).collect();
                    let mut missing: Vec<Capability> = task
                        .spec
                        .capabilities
                        .iter()
                        .filter(|c| !offered.contains(c))
                        .cloned()
                        .collect();
                    if missing.is_empty() {
                        missing = task.spec.capabilities.iter().cloned().collect();
                    }
                    Some(WaitReason::NoCapableAgent { missing })
                } else {
                    Some(WaitReason::AgentsBusy {
                        capable_online: capable,
                    })
                }
            }
            State::Assigned { lease } | State::Executing { lease, .. } => {
                Some(WaitReason::Leased {
                    agent: lease.agent,
                    state: task.kind(),
                    until: task.deadlines.next().map(|(_, at)| at),
                })
            }
            State::Failed {
                retry_at: Some(until),
                ..
            } => Some(WaitReason::BackingOff {
                until: *until,
                attempt: task.attempt,
                max_attempts: task.attempts_allowed,
            }),
            _ => None,
        })
    }

    pub async fn history(
        &self,
        id: TaskId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, EngineError> {
        Ok(self.inner.store.history(id, after, limit).await?)
    }
}

/// Awaits every future, all polled together on this task (in order, so a deterministic store
/// gives a deterministic run); returns their outputs in order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// The watchdog's event for a due task: the retry if its backoff passed, else the earliest
/// passed deadline.
fn timer_event(task: &Task, now: Timestamp) -> Option<Event> {
    if let State::Failed {
        retry_at: Some(at), ..
    } = task.state
    {
        return (at <= now).then_some(Event::Retry);
    }
    let (kind, at) = task.deadlines.next()?;
    (at <= now).then_some(Event::TimeoutExpired { deadline: kind })
}

/// Whether an effect's transition was applied; a refusal means it was already done (or no
/// longer applies), which is not an error for an idempotent effect.
fn applied<T>(r: Result<T, EngineError>) -> Result<bool, EngineError> {
    match r {
        Ok(_) => Ok(true),
        Err(EngineError::Rejected(_) | EngineError::TaskNotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn new_task(
    workflow: WorkflowId,
    id: TaskId,
    spec: TaskSpec,
    completed: Vec<TaskKey>,
    now: Timestamp,
) -> Result<(NewTask, Transition), EngineError> {
    let sub = Submission {
        task: id,
        workflow,
        spec: Arc::new(spec),
        completed,
        seed: Uuid::new_v4().as_u64_pair().0,
    };
    Ok(NewTask::submitted(sub, now)?)
}

fn submission_of(t: &Transition) -> Submission {
    Submission {
        task: t.task.id,
        workflow: t.task.workflow,
        spec: Arc::clone(&t.task.spec),
        completed: Vec::new(),
        seed: t.task.seed,
    }
}

/// A stable fingerprint of a request (FNV-1a, 64 bits), so that a reused idempotency key
/// with a different request is recognised across restarts and versions.
fn request_hash(req: &WorkflowRequest) -> String {
    let bytes = serde_json::to_vec(&(&req.name, &req.tasks)).expect("a request serialises");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Every check [`Engine::submit_workflow`] makes before storing anything: field bounds, each
/// task's spec, compensation keys, and the dependency graph. Clients call it to refuse a bad
/// workflow before sending it.
pub fn validate_workflow(req: &WorkflowRequest) -> Result<(), EngineError> {
    if req.name.len() > NAME_LEN_MAX {
        return Err(EngineError::invalid(
            "name",
            format!("at most {NAME_LEN_MAX} bytes"),
        ));
    }
    if let Some(key) = &req.idempotency_key {
        if key.is_empty() || key.len() > NAME_LEN_MAX {
            return Err(EngineError::invalid(
                "idempotency_key",
                format!("1 to {NAME_LEN_MAX} bytes"),
            ));
        }
    }
    if req.tasks.is_empty() || req.tasks.len() > TASKS_PER_WORKFLOW_MAX {
        return Err(EngineError::invalid(
            "tasks",
            format!("1 to {TASKS_PER_WORKFLOW_MAX} tasks"),
        ));
    }
    for (i, spec) in req.tasks.iter().enumerate() {
        spec.validate()
            .map_err(|e| EngineError::invalid(format!("tasks[{i}].{}", e.field), e.expected))?;
    }
    let keys: HashSet<&TaskKey> = req.tasks.iter().map(|t| &t.key).collect();
    let mut comps = HashSet::new();
    for (i, spec) in req.tasks.iter().enumerate() {
        if let Some(c) = &spec.compensation {
            if keys.contains(&c.key) || !comps.insert(&c.key) {
                return Err(EngineError::invalid(
                    format!("tasks[{i}].compensation.key"),
                    format!(
                        "a key used by no other task or compensation, not {:?}",
                        c.key.0
                    ),
                ));
            }
        }
    }
    Dag::from_specs(&req.tasks)?;
    Ok(())
}

/// What decomposition must refuse beyond the graph's rules, given the workflow's tasks by key:
/// a sub-task waiting for a task that already ended failed or cancelled (that task's
/// `upstream_failed` was sent before the sub-task existed, so it would stay blocked for ever,
/// and so would the parent's dependents), and keys that collide with compensation keys (the
/// compensation task would silently never be created, its key being taken).
fn validate_subtasks(
    specs: &[TaskSpec],
    by_key: &HashMap<&TaskKey, &Task>,
) -> Result<(), EngineError> {
    let new_keys: HashSet<&TaskKey> = specs.iter().map(|s| &s.key).collect();
    let mut comps: HashSet<&TaskKey> = by_key
        .values()
        .filter_map(|t| t.spec.compensation.as_ref().map(|c| &c.key))
        .collect();
    for (i, spec) in specs.iter().enumerate() {
        if comps.contains(&spec.key) {
            return Err(EngineError::invalid(
                format!("tasks[{i}].key"),
                format!(
                    "a key not reserved for a compensation task, not {:?}",
                    spec.key.0
                ),
            ));
        }
        for dep in &spec.depends_on {
            if let Some(t) = by_key.get(dep) {
                if t.state.is_terminal() && t.kind() != StateKind::Completed {
                    return Err(EngineError::invalid(
                        format!("tasks[{i}].depends_on"),
                        format!(
                            "tasks that can still complete, but {:?} has ended {}",
                            dep.0,
                            t.kind()
                        ),
                    ));
                }
            }
        }
    }
    for (i, spec) in specs.iter().enumerate() {
        if let Some(c) = &spec.compensation {
            if by_key.contains_key(&c.key) || new_keys.contains(&c.key) || !comps.insert(&c.key) {
                return Err(EngineError::invalid(
                    format!("tasks[{i}].compensation.key"),
                    format!(
                        "a key used by no other task or compensation, not {:?}",
                        c.key.0
                    ),
                ));
            }
        }
    }
    Ok(())
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
