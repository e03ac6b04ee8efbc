//! The engine itself: its shared state, construction, and the start and stop of its
//! background loops. What it does is split by concern, each an `impl Engine` of its own:
//! `intake` (workflows, sub-tasks), `agents` (registration, liveness, claims), `transition`
//! (the one load/apply/commit/after-commit path), `control` (operators' actions), `events`
//! (the stream of transitions, within and between nodes), `background` (watchdog, dead
//! agents, durable effects) and `views` (what the API reads).
//!
//! Nothing is answered, published or woken before it is durable; every decision is taken
//! from the task's current version, and a lost compare-and-set is decided again; durable
//! effects run from the store's outbox and are idempotent.

use std::sync::Arc;

use baton_core::Timestamp;
use baton_store::Store;
use tokio::sync::{broadcast, mpsc, watch, Notify};
use uuid::Uuid;

use crate::clock::Clock;
use crate::cluster::Outbound;
use crate::ids::{IdSource, RandomIds};
use crate::metrics::Metrics;
use crate::stream::{EventLog, TransitionEvent, EVENT_BACKLOG_MAX};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// An agent not heard from (register, keep-alive, claim, report) for this long is declared
    /// dead and its leases are taken back.
    pub agent_ttl_ms: u64,
    /// A waiting claim looks for work again at least this often, whatever it was told: the
    /// bound on how long a lost wake-up (another node's notice) can delay it.
    pub claim_recheck_ms: u64,
    /// Largest payload, in bytes of JSON: each task's input (and its compensation's), a
    /// result, progress, a signal's data; a larger one is refused where it comes in, and
    /// larger data goes in artifacts (`baton serve --payload-bytes-max`).
    pub payload_bytes_max: u64,
    /// Largest artifact, in bytes; a larger upload is refused and nothing is stored
    /// (`baton serve --artifact-bytes-max`).
    pub artifact_bytes_max: u64,
    /// An artifact no task refers to is deleted once its latest upload is this old: the time
    /// an upload has to be referenced (`baton serve --artifact-unreferenced-grace-ms`).
    pub artifact_unreferenced_grace_ms: u64,
    /// Retention: a workflow is deleted once it has finished (none of its tasks can move
    /// again) for this long, with its tasks, history, edges, signals and usage (`baton serve
    /// --retain`); 0 keeps every workflow forever.
    pub retain_ms: u64,
    /// An agent not heard from for this long, holding no lease, is deleted (`baton serve
    /// --agent-retention`); 0 keeps every agent. At least the liveness window
    /// (`agent_ttl_ms`) when set.
    pub agent_retention_ms: u64,
    /// Audit entries older than this are deleted (`baton serve --audit-retain`); 0 keeps them
    /// forever. Apart from `retain_ms`: an audit trail outlives the workflows it acted on.
    pub audit_retain_ms: u64,
    /// Agents one registrar (a token, or every loopback client without tokens) may have
    /// stored at once (`baton serve --agents-per-token-max`).
    pub agents_per_token_max: u32,
    /// How often the leading node runs a retention pass ([`crate::RETENTION_INTERVAL_MS`];
    /// shorter for benches and tests).
    pub retention_interval_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            agent_ttl_ms: 30_000,
            claim_recheck_ms: 500,
            payload_bytes_max: crate::upstream::PAYLOAD_BYTES_MAX_DEFAULT,
            artifact_bytes_max: crate::artifacts::ARTIFACT_BYTES_MAX_DEFAULT,
            artifact_unreferenced_grace_ms:
                crate::artifacts::ARTIFACT_UNREFERENCED_GRACE_MS_DEFAULT,
            retain_ms: crate::retention::RETAIN_MS_DEFAULT,
            agent_retention_ms: crate::retention::AGENT_RETENTION_MS_DEFAULT,
            audit_retain_ms: crate::retention::AUDIT_RETAIN_MS_DEFAULT,
            agents_per_token_max: crate::agents::AGENTS_PER_TOKEN_MAX_DEFAULT,
            retention_interval_ms: crate::retention::RETENTION_INTERVAL_MS,
        }
    }
}

/// The orchestration engine. Cheap to clone; clones share everything.
pub struct Engine<S> {
    pub(crate) inner: Arc<Inner<S>>,
}

impl<S> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            inner: Arc::clone(&self.inner),
        }
    }
}

pub(crate) struct Inner<S> {
    pub(crate) store: S,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ids: Arc<dyn IdSource>,
    pub(crate) config: EngineConfig,
    /// New ready work: wakes claimers.
    pub(crate) work: Notify,
    /// Deadlines or retries changed: wakes the watchdog.
    pub(crate) timers: crate::alarm::TimerAlarm,
    /// New outbox items: wakes the effect runner.
    pub(crate) outbox: Notify,
    pub(crate) events: broadcast::Sender<TransitionEvent>,
    /// What `events` carried lately, for subscribers resuming a stream; locked while sending
    /// so that a subscription sees each transition once, in the backlog or live.
    pub(crate) log: std::sync::Mutex<EventLog>,
    /// Workflows that ended, told to this node's subscribers.
    pub(crate) workflow_events: broadcast::Sender<crate::ending::WorkflowEvent>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) metrics: Metrics,
    /// This node, among the nodes sharing the store.
    pub(crate) node: Uuid,
    /// What to tell the other nodes; `None` when the store is not shared.
    pub(crate) outbound: Option<mpsc::Sender<Outbound>>,
    outbound_rx: std::sync::Mutex<Option<mpsc::Receiver<Outbound>>>,
    /// When the leader last swept kept signals (ms since the epoch).
    pub(crate) kept_signals_swept: std::sync::atomic::AtomicU64,
    /// The fairness clock retention read at its last pass (`i64::MIN`: none yet): fairness
    /// groups whose last turn it has reached are forgotten at the next pass (see
    /// `retention`).
    pub(crate) fair_clock_seen: std::sync::atomic::AtomicI64,
    /// Leased tasks as this node last committed them: what agents' reports are decided from.
    pub(crate) leased: crate::leased::Leased,
}

impl<S: Store + 'static> Engine<S> {
    pub fn new(store: S, clock: Arc<dyn Clock>, config: EngineConfig) -> Engine<S> {
        Engine::with_ids(store, clock, Arc::new(RandomIds), config)
    }

    /// An engine taking its ids and seeds from `ids` (a [`crate::SeededIds`] replays a run).
    pub fn with_ids(
        store: S,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        config: EngineConfig,
    ) -> Engine<S> {
        let (events, _) = broadcast::channel(EVENT_BACKLOG_MAX);
        let shared = store.notices().is_some();
        let (outbound, outbound_rx) = if shared {
            let (tx, rx) = mpsc::channel(crate::cluster::OUTBOUND_MAX);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let (shutdown, _) = watch::channel(false);
        let node = ids.id();
        Engine {
            inner: Arc::new_cyclic(|weak: &std::sync::Weak<Inner<S>>| {
                let weak = weak.clone();
                Inner {
                    store,
                    clock,
                    ids,
                    config,
                    work: Notify::new(),
                    timers: crate::alarm::TimerAlarm::default(),
                    outbox: Notify::new(),
                    events,
                    log: std::sync::Mutex::new(EventLog::new()),
                    workflow_events: broadcast::channel(crate::ending::WORKFLOW_EVENTS_MAX).0,
                    shutdown,
                    metrics: Metrics::new(Arc::new(move || {
                        weak.upgrade().map(|inner| inner.store.stats())
                    })),
                    node,
                    outbound,
                    outbound_rx: std::sync::Mutex::new(outbound_rx),
                    kept_signals_swept: std::sync::atomic::AtomicU64::new(0),
                    fair_clock_seen: std::sync::atomic::AtomicI64::new(i64::MIN),
                    leased: Default::default(),
                }
            }),
        }
    }

    /// The store, for tests and tools that inspect it directly; the API reads through the
    /// engine's views.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// This node's identity in the cluster, which also names its stream of transitions.
    pub fn node(&self) -> Uuid {
        self.inner.node
    }

    /// This node's metrics, for what the server around the engine counts.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Starts the watchdog, the effect runner, the artifact sweep, the schedules and retention
    /// (and, on a shared store, the exchange of notices with the other nodes); they stop at
    /// [`Engine::shutdown`].
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let watchdog = self.clone();
        let effects = self.clone();
        let sweeper = self.clone();
        let mut loops = vec![
            tokio::spawn(async move { watchdog.watchdog_loop().await }),
            tokio::spawn(async move { effects.effects_loop().await }),
            tokio::spawn(async move { sweeper.artifact_sweep_loop().await }),
        ];
        let ending = self.clone();
        loops.push(tokio::spawn(async move { ending.ending_loop().await }));
        let scheduler = self.clone();
        loops.push(tokio::spawn(async move { scheduler.schedule_loop().await }));
        let collector = self.clone();
        loops.push(tokio::spawn(
            async move { collector.retention_loop().await },
        ));
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

    pub(crate) fn stopping(&self) -> bool {
        *self.inner.shutdown.borrow()
    }
}
