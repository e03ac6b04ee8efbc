//! Prometheus metrics of the engine and its store, in the OpenMetrics text format. Names end in
//! their unit (`_seconds`; no `# UNIT` lines, which some parsers refuse on histograms); labels
//! carry states, events and kinds, never ids.

use std::sync::Arc;

use baton_core::{DeadlineKind, EventKind, StateKind, Task, Timestamp};
use baton_store::{CommitStats, StateCounts, BATCH_SIZE_BUCKETS, COMMIT_SECONDS_BUCKETS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabel {
    unit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 1 ms to about 9 hours.
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

/// Most units `baton_usage_total` has a series of; agents name units, so the rest are summed
/// under `other`.
pub const USAGE_UNITS_SHOWN_MAX: usize = 256;

/// The engine's metrics; the store's commit statistics are read at each scrape.
pub struct Metrics {
    registry: Registry,
    transitions: Family<TransitionLabels, Counter>,
    tasks: Family<StateLabel, Gauge>,
    queue_wait: Histogram,
    execution: Histograms<OutcomeLabel>,
    claim_latency: Histogram,
    retries: Counter,
    timeouts: Family<KindLabel, Counter>,
    compensations: Counter,
    signals: Counter,
    usage: Family<UnitLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// The units `usage` has a series of.
    usage_units: std::sync::Mutex<std::collections::HashSet<String>>,
    schedule_ticks: Family<KindLabel, Counter>,
    agents_online: Gauge,
    retention_deleted: Family<KindLabel, Counter>,
    retention_seconds: Histogram,
    store_bytes: Gauge,
    tasks_paused: Gauge,
    claims_waiting: Gauge,
    event_subscribers: Gauge,
    http_refused: Family<ReasonLabel, Counter>,
    http_requests: Family<RequestLabel, Counter>,
    http_connections: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    method: String,
    /// The route's template (`/v1/tasks/{id}/succeeded`), never the path itself.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Counts an open connection until dropped.
pub struct ConnectionOpen(Gauge);

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts a claim as in progress until dropped.
pub(crate) struct ClaimInProgress(Gauge);

impl Drop for ClaimInProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Metrics whose store statistics come from `store_stats`.
    pub fn new(store_stats: Arc<dyn Fn() -> Option<CommitStats> + Send + Sync>) -> Metrics {
        let mut registry = Registry::with_prefix("baton");
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "transitions",
            "Accepted transitions, by from-state, to-state and event",
            transitions.clone(),
        );
        let tasks = Family::<StateLabel, Gauge>::default();
        registry.register(
            "tasks",
            "Tasks per state, from the store's counters",
            tasks.clone(),
        );
        let queue_wait = seconds_histogram();
        registry.register(
            "queue_wait_seconds",
            "Time from becoming ready (Pending) to being claimed",
            queue_wait.clone(),
        );
        let execution: Histograms<OutcomeLabel> = Family::new_with_constructor(seconds_histogram);
        registry.register(
            "execution_seconds",
            "Time from execution_started to the attempt's end, by outcome",
            execution.clone(),
        );
        let claim_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "claim_latency_seconds",
            "Time to find and lease tasks for a claim that got some",
            claim_latency.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "retries",
            "Attempts started after a failure",
            retries.clone(),
        );
        let timeouts = Family::<KindLabel, Counter>::default();
        registry.register(
            "timeouts",
            "Watchdog firings by deadline kind, and leases of dead agents (`agent_lost`)",
            timeouts.clone(),
        );
        let compensations = Counter::default();
        registry.register(
            "compensations",
            "Compensation tasks created",
            compensations.clone(),
        );
        let usage = Family::<UnitLabel, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "usage",
            "What agents reported spending, by unit (tokens, usd, …), summed over all workflows",
            usage.clone(),
        );
        let signals = Counter::default();
        registry.register(
            "signals",
            "Signals sent to workflows (repeats of an idempotency key included)",
            signals.clone(),
        );
        let schedule_ticks = Family::<KindLabel, Counter>::default();
        registry.register(
            "schedule_ticks",
            "Schedule ticks by outcome: `submitted` a workflow, or `skipped` (the previous run still going)",
            schedule_ticks.clone(),
        );
        let agents_online = Gauge::default();
        registry.register(
            "agents_online",
            "Agents heard from within their liveness window",
            agents_online.clone(),
        );
        let retention_deleted = Family::<KindLabel, Counter>::default();
        registry.register(
            "retention_deleted",
            "What retention deleted, by kind: workflows, tasks, history (entries), signals, \
             artifacts, agents, audit (entries), fair_groups, concurrency_keys",
            retention_deleted.clone(),
        );
        let retention_seconds = seconds_histogram();
        registry.register(
            "retention_pass_seconds",
            "Duration of a retention pass on this node",
            retention_seconds.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "What the store takes on disk (SQLite: database and log; PostgreSQL: its tables)",
            store_bytes.clone(),
        );
        let tasks_paused = Gauge::default();
        registry.register(
            "tasks_paused",
            "Tasks an operator has paused, whatever their state",
            tasks_paused.clone(),
        );
        let claims_waiting = Gauge::default();
        registry.register(
            "claims_waiting",
            "Claims being served, long polls waiting for work included",
            claims_waiting.clone(),
        );
        let event_subscribers = Gauge::default();
        registry.register(
            "event_subscribers",
            "Subscribers of this node's transition stream (event streams, dashboards)",
            event_subscribers.clone(),
        );
        let http_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "http_refused",
            "Requests the server's limits refused, by reason: `overloaded`, `deadline_exceeded`, `rate_limited`, `body_timeout`, `too_many_subscribers`",
            http_refused.clone(),
        );
        let http_requests = Family::<RequestLabel, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by method, route (its template) and status",
            http_requests.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "HTTP connections open on this node",
            http_connections.clone(),
        );
        registry.register_collector(Box::new(StoreCollector(store_stats)));
        Metrics {
            registry,
            transitions,
            tasks,
            queue_wait,
            execution,
            claim_latency,
            retries,
            timeouts,
            compensations,
            signals,
            usage,
            usage_units: Default::default(),
            schedule_ticks,
            agents_online,
            retention_deleted,
            retention_seconds,
            store_bytes,
            tasks_paused,
            claims_waiting,
            event_subscribers,
            http_refused,
            http_requests,
            http_connections,
        }
    }

    /// Counts a request the server's limits refused for `reason`.
    pub fn http_refused(&self, reason: &'static str) {
        self.http_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a request answered on `route` (its template) with `status`.
    pub fn http_request(&self, method: &str, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&RequestLabel {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// Counts a connection as open until the guard is dropped.
    pub fn connection_opened(&self) -> ConnectionOpen {
        self.http_connections.inc();
        ConnectionOpen(self.http_connections.clone())
    }

    /// Records one accepted transition of `task` (after it), which was in `from`.
    pub(crate) fn transition(&self, task: &Task, from: Option<StateKind>, event: EventKind) {
        let to = task.kind();
        self.transitions
            .get_or_create(&TransitionLabels {
                from: from.map_or("new", StateKind::as_str),
                to: to.as_str(),
                event: event.as_str(),
            })
            .inc();
        let since = |state: StateKind| {
            task.entered_at
                .get(state)
                .map(|at| secs(task.updated_at, at))
        };
        match (from, to) {
            (Some(StateKind::Pending), StateKind::Assigned) => {
                if let Some(s) = since(StateKind::Pending) {
                    self.queue_wait.observe(s);
                }
            }
            (Some(StateKind::Executing), StateKind::Completed | StateKind::Failed) => {
                if let Some(s) = since(StateKind::Executing) {
                    let outcome = if to == StateKind::Completed {
                        "succeeded"
                    } else {
                        "failed"
                    };
                    self.execution
                        .get_or_create(&OutcomeLabel { outcome })
                        .observe(s);
                }
            }
            _ => {}
        }
        if event == EventKind::Retry || event == EventKind::RetryRequested {
            self.retries.inc();
        }
    }

    pub(crate) fn timeout(&self, kind: Option<DeadlineKind>) {
        let kind = kind.map_or("agent_lost", DeadlineKind::as_str);
        self.timeouts.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn compensation(&self) {
        self.compensations.inc();
    }

    pub(crate) fn signal(&self) {
        self.signals.inc();
    }

    /// Adds to the usage of `unit`; past [`USAGE_UNITS_SHOWN_MAX`] distinct units (agents
    /// name them), the others are counted under `other`.
    pub(crate) fn usage(&self, unit: &str, amount: f64) {
        let unit = {
            let mut shown = self.usage_units.lock().expect("not poisoned");
            if shown.contains(unit) || shown.len() < USAGE_UNITS_SHOWN_MAX {
                shown.insert(unit.to_owned());
                unit.to_owned()
            } else {
                "other".to_owned()
            }
        };
        self.usage.get_or_create(&UnitLabel { unit }).inc_by(amount);
    }

    /// Counts what a retention pass deleted.
    pub(crate) fn retention(&self, r: &crate::retention::GcReport, took: std::time::Duration) {
        for (kind, n) in [
            ("workflows", r.workflows),
            ("tasks", r.tasks),
            ("history", r.history),
            ("signals", r.signals),
            ("artifacts", r.artifacts_deleted),
            ("agents", r.agents),
            ("audit", r.audit),
            ("fair_groups", r.fair_groups),
            ("concurrency_keys", r.concurrency_keys),
        ] {
            self.retention_deleted
                .get_or_create(&KindLabel { kind })
                .inc_by(n);
        }
        self.retention_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn schedule_tick(&self, kind: &'static str) {
        self.schedule_ticks.get_or_create(&KindLabel { kind }).inc();
    }

    pub(crate) fn claim_started(&self) -> ClaimInProgress {
        self.claims_waiting.inc();
        ClaimInProgress(self.claims_waiting.clone())
    }

    pub(crate) fn claimed(&self, seconds: f64) {
        self.claim_latency.observe(seconds);
    }

    /// Sets the gauges read from the store, then encodes everything.
    pub(crate) fn encode(
        &self,
        counts: StateCounts,
        agents_online: usize,
        event_subscribers: usize,
        store_bytes: u64,
    ) -> String {
        for state in StateKind::ALL {
            self.tasks
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(counts.get(state) as i64);
        }
        self.agents_online.set(agents_online as i64);
        self.store_bytes
            .set(store_bytes.min(i64::MAX as u64) as i64);
        self.tasks_paused.set(counts.paused() as i64);
        self.event_subscribers.set(event_subscribers as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

fn secs(later: Timestamp, earlier: Timestamp) -> f64 {
    later.ms_since(earlier) as f64 / 1000.0
}

/// The store's commit statistics, read at each scrape.
struct StoreCollector(Arc<dyn Fn() -> Option<CommitStats> + Send + Sync>);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(stats) = (self.0)() else {
            return Ok(());
        };
        let buckets = |bounds: &[f64], counts: &[u64; 13]| -> Vec<(f64, u64)> {
            bounds
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY))
                .zip(counts.iter().copied())
                .collect()
        };
        let batch = buckets(&BATCH_SIZE_BUCKETS, &stats.batch_size_counts);
        encoder
            .encode_descriptor(
                "store_commit_batch_size",
                "Writes gathered into one store commit (group commit)",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(stats.writes as f64, stats.commits, &batch, None)?;
        let latency = buckets(&COMMIT_SECONDS_BUCKETS, &stats.commit_seconds_counts);
        encoder
            .encode_descriptor(
                "store_commit_seconds",
                "Duration of a store commit, from its first write to durable",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                stats.commit_micros_sum as f64 / 1e6,
                stats.commits,
                &latency,
                None,
            )?;
        Ok(())
    }
}
