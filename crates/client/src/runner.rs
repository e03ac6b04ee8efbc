//! One agent loop for every Rust agent: register, long-poll claims within a concurrency bound,
//! `execution_started`, heartbeats in the background while a handler runs, the report of its
//! outcome, and a graceful stop. `baton agent`, the demo's agents, the benches and the test
//! fleet are all this loop with a different handler and [`Observer`].
//!
//! Invariants: at most `concurrency` tasks are held at once (a semaphore permit per task from
//! its claim to its last report); nothing is reported about a task whose lease is lost (the
//! handler is told through [`TaskContext::cancelled`] and its outcome dropped); a task still
//! running when the stop's grace period ends is released (`assignment_released`), not left to
//! time out. Calls that fail to reach a server, or get a 5xx or 429, are sent again with
//! backoff (on the next node when there are several): every report is idempotent, a
//! duplicate is answered and not applied.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton_api::{AgentView, ClaimedTask, ReportAnswer};
use baton_core::{Capability, ErrorReport};
use serde_json::Value;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::{Client, ClientError};

mod context;

pub use context::TaskContext;

/// Most tasks one claim may ask for (the server's own limit).
pub const CLAIM_TASKS_MAX: usize = 256;
/// Bounds of the heartbeat interval derived from a task's heartbeat deadline: a third of the
/// time left, so that two heartbeats may fail before the lease runs out.
const HEARTBEAT_MIN: Duration = Duration::from_millis(250);
const HEARTBEAT_MAX: Duration = Duration::from_secs(10);
/// Wait before trying a heartbeat again after it failed to reach the server.
const HEARTBEAT_RETRY: Duration = Duration::from_millis(500);
/// Longest a release is tried while stopping: the start deadline takes the task back anyway.
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);
/// Longest error message a handler's failure is reported with, in characters (as the SDKs):
/// a longer one is cut, as the server refuses one over 32,768 bytes.
const MESSAGE_CHARS_MAX: usize = 8_192;

/// How an agent behaves; [`RunnerConfig::new`] gives the defaults of `baton agent`.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub name: String,
    pub capabilities: Vec<Capability>,
    /// Tasks held at once (the agent's registered concurrency).
    pub concurrency: u32,
    /// Register under this id (keeps the identity across restarts); a new one otherwise.
    pub id: Option<Uuid>,
    /// How long a claim waits for work (long poll); also bounds how long stopping an idle
    /// runner takes.
    pub claim_wait: Duration,
    /// Most tasks per claim.
    pub claim_max: usize,
    /// Claim only once this many slots are free: 1 takes work as soon as a slot frees; the
    /// concurrency claims in full batches (fewer, larger claims).
    pub claim_min_slots: usize,
    /// A fixed heartbeat interval; `None`: a third of the time left before the heartbeat
    /// deadline, between 250 ms and 10 s.
    pub heartbeat: Option<Duration>,
    /// Agent keep-alive interval, whatever it is doing; `None` sends none (claims and reports
    /// keep an agent alive too).
    pub keepalive: Option<Duration>,
    /// After [`StopHandle::stop`], how long running handlers may still finish and report.
    pub grace: Duration,
    /// After a handler is told to stop, how long it has to return before it is dropped.
    pub cancel_grace: Duration,
    /// Bounds of the backoff between tries of a call that did not reach a server.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Longest one registration or report is tried (claims are tried until stopped).
    pub patience: Duration,
    /// Send each call to the next node in turn (claims, starts and reports then go to
    /// different nodes); otherwise stay on a node until it fails.
    pub rotate_nodes: bool,
    /// Claim with `start`: each task (with a heartbeat deadline) is started in its claim's
    /// commit, and no `started` report is sent: one round trip and one commit fewer per task.
    /// Off by default: a task started so whose first heartbeat a crash delays past its start
    /// timeout spends an attempt (`timeout_expired`), where an unstarted one is requeued free.
    pub start_on_claim: bool,
    /// Send reports through one batching task per node ([`Client::batching_reports`]): those
    /// that queue while a batch is in flight go together in one `POST /v1/reports`.
    pub batch_reports: bool,
}

impl RunnerConfig {
    pub fn new(name: impl Into<String>, capabilities: Vec<Capability>, concurrency: u32) -> Self {
        RunnerConfig {
            name: name.into(),
            capabilities,
            concurrency: concurrency.max(1),
            id: None,
            claim_wait: Duration::from_secs(2),
            claim_max: CLAIM_TASKS_MAX,
            claim_min_slots: 1,
            heartbeat: None,
            keepalive: Some(Duration::from_secs(10)),
            grace: Duration::from_secs(10),
            cancel_grace: Duration::from_secs(15),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            patience: Duration::from_secs(60),
            rotate_nodes: false,
            start_on_claim: false,
            batch_reports: true,
        }
    }
}

/// The calls a runner makes, as its events name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Register,
    KeepAlive,
    Claim,
    Started,
    Heartbeat,
    Succeeded,
    Failed,
    Released,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Register => "register",
            Call::KeepAlive => "keep-alive",
            Call::Claim => "claim",
            Call::Started => "started",
            Call::Heartbeat => "heartbeat",
            Call::Succeeded => "succeeded",
            Call::Failed => "failed",
            Call::Released => "released",
        }
    }
}

/// What a runner did, for its [`Observer`].
#[derive(Debug)]
pub enum RunnerEvent<'a> {
    Registered(&'a AgentView),
    /// A claim was answered (possibly with no task) after `round_trip`, having asked the
    /// server to wait up to `wait`.
    Claimed {
        tasks: &'a [ClaimedTask],
        wait: Duration,
        round_trip: Duration,
    },
    /// The server acknowledged `execution_started`; the handler runs next.
    Started {
        task: &'a ClaimedTask,
        answer: &'a ReportAnswer,
    },
    /// The server acknowledged the task's last report (`Succeeded`, `Failed` or `Released`),
    /// `since_claim` after the claim's answer.
    Reported {
        task: &'a ClaimedTask,
        call: Call,
        answer: &'a ReportAnswer,
        since_claim: Duration,
    },
    /// The task was taken back (cancelled, a newer lease, the lease ran out): its work is
    /// abandoned and nothing more is reported. `error` is the refusal that said so, if any.
    Lost {
        task: &'a ClaimedTask,
        call: Call,
        reason: &'a str,
        error: Option<&'a ClientError>,
    },
    /// A call did not reach a server (or got a 5xx or 429) and will be sent again.
    Retrying {
        task: Option<&'a ClaimedTask>,
        call: Call,
        error: &'a ClientError,
    },
    /// A call was refused for another reason, or gave up after the patience.
    Error {
        task: Option<&'a ClaimedTask>,
        call: Call,
        error: &'a ClientError,
    },
}

/// Sees what a runner does: logs, counts, a ledger of acknowledged reports, progress bars.
pub trait Observer: Send + Sync + 'static {
    fn event(&self, event: RunnerEvent<'_>);

    /// How long the next claim may wait for work; `configured` unless the observer knows
    /// work is waiting (a benchmark measuring claims that do not wait).
    fn claim_wait(&self, configured: Duration) -> Duration {
        configured
    }
}

/// An observer that looks at nothing.
pub struct Unobserved;

impl Observer for Unobserved {
    fn event(&self, _: RunnerEvent<'_>) {}
}

/// Why a handler must stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cancel {
    /// The task was taken back (the reason in words): nothing will be reported.
    Lost(String),
    /// The runner is stopping: the task will be released.
    Shutdown,
}

/// Where a runner is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// No new claims; running handlers may finish within the grace period.
    Draining,
    /// Handlers are told to stop; what they hold is released.
    Stopping,
    /// Never reached: for calls that go on while stopping.
    Never,
}

/// Reports about running work are given up once stopping (the task is released instead, or
/// taken back at its deadline).
const STOPPING: Option<Phase> = Some(Phase::Stopping);

/// Stops a runner from elsewhere (a signal handler, a test).
#[derive(Clone)]
pub struct StopHandle(Arc<watch::Sender<Phase>>);

impl StopHandle {
    /// Stop claiming; running handlers have the grace period to finish.
    pub fn stop(&self) {
        self.0.send_if_modified(|p| {
            let was = *p;
            *p = (*p).max(Phase::Draining);
            *p != was
        });
    }

    /// Stop now: running handlers are told to stop and their tasks released.
    pub fn stop_now(&self) {
        self.0.send_replace(Phase::Stopping);
    }
}

/// An agent over one or several nodes of one Baton deployment.
pub struct Runner {
    shared: Arc<Shared>,
}

struct Shared {
    nodes: Vec<Client>,
    cursor: AtomicUsize,
    config: RunnerConfig,
    observer: Arc<dyn Observer>,
    phase: Arc<watch::Sender<Phase>>,
    /// [`Runner::register`] registered the agent (as `config.id`).
    registered: bool,
    /// The agent's id now: a new one after the server forgot the agent and it registered
    /// again.
    agent: std::sync::Mutex<Option<Uuid>>,
}

/// Why a call gave no answer.
enum CallError {
    /// Refused, or gave up after the patience (already told to the observer unless lost).
    Failed(ClientError),
    /// The runner is stopping.
    Stopped,
}

/// Why a runner stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    // The source is not repeated in the message: error chains print it.
    #[error("cannot register agent {name}")]
    Register {
        name: String,
        #[source]
        source: ClientError,
    },
    #[error("the server refuses this agent's claims")]
    Claim(#[source] ClientError),
    #[error("stopped before the agent was registered")]
    Stopped,
}

impl Runner {
    /// A runner on `nodes` (at least one), observed by nothing.
    pub fn new(nodes: Vec<Client>, config: RunnerConfig) -> Runner {
        assert!(!nodes.is_empty(), "a runner needs a node to talk to");
        let (phase, _) = watch::channel(Phase::Running);
        Runner {
            shared: Arc::new(Shared {
                nodes,
                cursor: AtomicUsize::new(0),
                config,
                observer: Arc::new(Unobserved),
                phase: Arc::new(phase),
                registered: false,
                agent: std::sync::Mutex::new(None),
            }),
        }
    }

    pub fn observed(self, observer: Arc<dyn Observer>) -> Runner {
        let mut shared = Arc::into_inner(self.shared).expect("not yet running");
        shared.observer = observer;
        Runner {
            shared: Arc::new(shared),
        }
    }

    /// Starts on node `first` (of `nodes`) rather than the first.
    pub fn starting_at(self, first: usize) -> Runner {
        self.shared.cursor.store(first, Ordering::Relaxed);
        self
    }

    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.shared.phase))
    }

    /// Registers the agent now rather than when [`Runner::run`] starts (so that it is known
    /// before work is submitted, or a timed run starts with every agent ready); `run` then
    /// goes on under this registration.
    pub async fn register(&mut self) -> Result<AgentView, RunnerError> {
        let s = &self.shared;
        match s.register(s.config.id).await {
            Ok(view) => {
                let shared = Arc::get_mut(&mut self.shared).expect("not yet running");
                shared.config.id = Some(view.id);
                shared.registered = true;
                Ok(view)
            }
            Err(CallError::Failed(e)) => Err(RunnerError::Register {
                name: s.config.name.clone(),
                source: e,
            }),
            Err(CallError::Stopped) => Err(RunnerError::Stopped),
        }
    }

    /// Registers (unless [`Runner::register`] did), then claims and runs tasks with `handler`
    /// until stopped. A handler's error is reported as the attempt's failure, its message cut
    /// past 8,192 characters (the server takes at most 32,768 bytes). `Ok` after a clean stop
    /// (also when stopped before registering); `Err` when the server refuses the agent (its
    /// registration, or its claims for a reason other than having forgotten it).
    pub async fn run<H, Fut>(self, handler: H) -> Result<(), RunnerError>
    where
        H: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ErrorReport>> + Send + 'static,
    {
        let mut shared = Arc::into_inner(self.shared).expect("not yet running");
        if shared.config.batch_reports {
            shared.nodes = shared.nodes.iter().map(Client::batching_reports).collect();
        }
        let s = Arc::new(shared);
        let grace = tokio::spawn(grace_timer(Arc::clone(&s.phase), s.config.grace));
        let result = s.work(Arc::new(handler)).await;
        grace.abort();
        result
    }
}

/// Once draining starts, moves to stopping after the grace period.
async fn grace_timer(phase: Arc<watch::Sender<Phase>>, grace: Duration) {
    let mut rx = phase.subscribe();
    if rx.wait_for(|p| *p >= Phase::Draining).await.is_err() {
        return;
    }
    tokio::time::sleep(grace).await;
    phase.send_replace(Phase::Stopping);
}

impl Shared {
    fn node(&self) -> &Client {
        let i = self.cursor.load(Ordering::Relaxed);
        &self.nodes[i % self.nodes.len()]
    }

    fn next_node(&self) {
        self.cursor.fetch_add(1, Ordering::Relaxed);
    }

    fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    async fn reached(&self, phase: Phase) {
        let mut rx = self.phase.subscribe();
        let _ = rx.wait_for(|p| *p >= phase).await;
    }

    async fn work<H, Fut>(self: &Arc<Self>, handler: Arc<H>) -> Result<(), RunnerError>
    where
        H: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ErrorReport>> + Send + 'static,
    {
        let registered = match self.config.id {
            Some(id) if self.registered => Ok(id),
            id => self.register(id).await.map(|view| view.id),
        };
        let agent = match registered {
            Ok(id) => id,
            Err(CallError::Stopped) => return Ok(()),
            Err(CallError::Failed(e)) => {
                return Err(RunnerError::Register {
                    name: self.config.name.clone(),
                    source: e,
                })
            }
        };
        let keepalive = self
            .config
            .keepalive
            .map(|every| tokio::spawn(Arc::clone(self).keep_alive(every)));
        let mut running = JoinSet::new();
        let claimed = self.claim_loop(agent, &handler, &mut running).await;
        if claimed.is_err() {
            // The server takes no reports from this agent either: stop what runs now.
            self.phase.send_replace(Phase::Stopping);
        }
        while running.join_next().await.is_some() {}
        if let Some(k) = keepalive {
            k.abort();
        }
        claimed
    }

    /// Registers the agent: again under `id` if given, else (or if the server has no agent
    /// with that id) as a new agent, with the id the server makes.
    async fn register(&self, id: Option<Uuid>) -> Result<AgentView, CallError> {
        let view = match self.register_as(id).await {
            Err(CallError::Failed(e)) if id.is_some() && e.code() == Some("agent_not_found") => {
                self.register_as(None).await?
            }
            other => other?,
        };
        *self.agent.lock().expect("never poisoned") = Some(view.id);
        self.observer.event(RunnerEvent::Registered(&view));
        Ok(view)
    }

    async fn register_as(&self, id: Option<Uuid>) -> Result<AgentView, CallError> {
        let c = &self.config;
        self.call(
            None,
            Call::Register,
            c.patience,
            Some(Phase::Draining),
            |n| {
                let caps = &c.capabilities;
                async move {
                    match id {
                        Some(id) => n.reregister_agent(id, &c.name, caps, c.concurrency).await,
                        None => n.register_agent(&c.name, caps, c.concurrency).await,
                    }
                }
            },
        )
        .await
    }

    /// The agent's id now.
    fn agent(&self) -> Option<Uuid> {
        *self.agent.lock().expect("never poisoned")
    }

    async fn keep_alive(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(agent) = self.agent() else { continue };
            if let Err(e) = self.node().agent_heartbeat(agent).await {
                self.observer.event(RunnerEvent::Error {
                    task: None,
                    call: Call::KeepAlive,
                    error: &e,
                });
            }
        }
    }

    /// Claims while running, as many tasks as there are free slots. Returns when draining
    /// starts (a claim in flight is let finish and what it brings is released at once), or
    /// with a refusal that makes claiming pointless. A server that forgot the agent
    /// (`agent_not_found`) gets it registered again, as a new agent (the server makes ids):
    /// claims go on under the new id.
    async fn claim_loop<H, Fut>(
        self: &Arc<Self>,
        mut agent: Uuid,
        handler: &Arc<H>,
        running: &mut JoinSet<()>,
    ) -> Result<(), RunnerError>
    where
        H: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ErrorReport>> + Send + 'static,
    {
        let c = &self.config;
        let slots = Arc::new(Semaphore::new(c.concurrency as usize));
        let min_slots = c.claim_min_slots.clamp(1, c.concurrency as usize) as u32;
        let mut backoff = c.backoff_min;
        loop {
            while running.try_join_next().is_some() {}
            if self.phase() != Phase::Running {
                return Ok(());
            }
            let mut permits = tokio::select! {
                p = Arc::clone(&slots).acquire_many_owned(min_slots) => p.expect("never closed"),
                _ = self.reached(Phase::Draining) => return Ok(()),
            };
            while permits.num_permits() < c.claim_max {
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(p) => permits.merge(p),
                    Err(_) => break,
                }
            }
            let max = permits.num_permits().min(c.claim_max);
            let wait = self.observer.claim_wait(c.claim_wait);
            let sent = Instant::now();
            let node = self.node().clone();
            let claimed = tokio::select! {
                r = async {
                    if c.start_on_claim {
                        node.claim_and_start(agent, max, wait).await
                    } else {
                        node.claim(agent, max, wait).await
                    }
                } => r,
                _ = self.reached(Phase::Stopping) => return Ok(()),
            };
            let error = match claimed {
                Ok(tasks) => {
                    backoff = c.backoff_min;
                    let at = Instant::now();
                    self.observer.event(RunnerEvent::Claimed {
                        tasks: &tasks,
                        wait,
                        round_trip: at - sent,
                    });
                    let draining = self.phase() != Phase::Running;
                    for task in tasks {
                        let permit = permits.split(1).expect("no more tasks than permits");
                        let s = Arc::clone(self);
                        if draining {
                            running.spawn(async move {
                                s.release(agent, &task, at).await;
                                drop(permit);
                            });
                        } else {
                            let run = s.run_task(agent, task, at, Arc::clone(handler), permit);
                            running.spawn(run);
                        }
                    }
                    if c.rotate_nodes {
                        self.next_node();
                    }
                    continue;
                }
                Err(e) if e.code() == Some("agent_not_found") => {
                    // The server forgot the agent (a fresh store, or silent past the agents'
                    // retention): it registers again, as a new agent.
                    match self.register(None).await {
                        Ok(view) => {
                            agent = view.id;
                            continue;
                        }
                        Err(CallError::Stopped) => return Ok(()),
                        Err(CallError::Failed(e)) => return Err(RunnerError::Claim(e)),
                    }
                }
                Err(e) if transient(&e) => e,
                Err(e) => {
                    self.observer.event(RunnerEvent::Error {
                        task: None,
                        call: Call::Claim,
                        error: &e,
                    });
                    return Err(RunnerError::Claim(e));
                }
            };
            drop(permits);
            self.observer.event(RunnerEvent::Retrying {
                task: None,
                call: Call::Claim,
                error: &error,
            });
            self.next_node();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.reached(Phase::Draining) => return Ok(()),
            }
            backoff = (backoff * 2).min(c.backoff_max);
        }
    }

    /// One task: started, the handler (with heartbeats), its outcome reported.
    async fn run_task<H, Fut>(
        self: Arc<Self>,
        agent: Uuid,
        task: ClaimedTask,
        claimed_at: Instant,
        handler: Arc<H>,
        _slot: OwnedSemaphorePermit,
    ) where
        H: Fn(TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ErrorReport>> + Send + 'static,
    {
        let started = if task.started {
            Ok(started_by_claim(&task))
        } else {
            self.report(&task, Call::Started, self.config.patience, STOPPING, |n| {
                let task = &task;
                async move { n.started(task, agent).await }
            })
            .await
        };
        let started = match started {
            Ok(answer) if answer.cancelled => {
                return self.lost(&task, Call::Started, "task_cancelled", None);
            }
            Ok(answer) => answer,
            Err(_) => return,
        };
        self.observer.event(RunnerEvent::Started {
            task: &task,
            answer: &started,
        });
        let ctx = TaskContext::new(self.node().clone(), agent, task);
        let task = ctx.task();
        let mut work = std::pin::pin!(handler(ctx.clone()));
        let beat_at = Instant::now() + self.heartbeat_interval(&started);
        let mut beats = None;
        let mut cancelled = ctx.0.cancel.subscribe();
        let outcome = loop {
            tokio::select! {
                out = &mut work => break Some(out),
                _ = tokio::time::sleep_until(beat_at), if beats.is_none() => {
                    let s = Arc::clone(&self);
                    beats = Some(tokio::spawn(s.heartbeats(agent, started.clone(), ctx.clone())));
                }
                _ = cancelled.wait_for(Option::is_some) => break None,
                _ = self.reached(Phase::Stopping) => {
                    ctx.cancel(Cancel::Shutdown);
                    break None;
                }
            }
        };
        if let Some(b) = beats {
            b.abort();
        }
        let outcome = match outcome {
            Some(out) => out,
            None => {
                // Told to stop: let the handler wind down (stop a process, say), bounded.
                let _ = tokio::time::timeout(self.config.cancel_grace, work).await;
                if ctx.cancellation() == Some(Cancel::Shutdown) {
                    self.release(agent, task, claimed_at).await;
                }
                return;
            }
        };
        if ctx.cancellation().is_some() {
            return;
        }
        let error = match outcome {
            Ok(result) => {
                let sent = self
                    .report(task, Call::Succeeded, self.config.patience, STOPPING, |n| {
                        let (result, usage) = (result.clone(), ctx.usage());
                        async move { n.succeeded_with_usage(task, agent, result, &usage).await }
                    })
                    .await;
                match sent {
                    Ok(answer) => return self.reported(task, Call::Succeeded, &answer, claimed_at),
                    // A result the server will never take (too large, invalid): fail the
                    // task rather than leave it to time out.
                    Err(CallError::Failed(e)) if matches!(e.status(), Some(413 | 422)) => {
                        ErrorReport {
                            kind: "result_refused".into(),
                            message: format!("the server refused the result: {e}"),
                            retryable: false,
                        }
                    }
                    Err(_) => return,
                }
            }
            Err(error) => cut_message(error),
        };
        let sent = self
            .report(task, Call::Failed, self.config.patience, STOPPING, |n| {
                let (error, usage) = (error.clone(), ctx.usage());
                async move { n.failed_with_usage(task, agent, error, &usage).await }
            })
            .await;
        if let Ok(answer) = sent {
            self.reported(task, Call::Failed, &answer, claimed_at);
        }
    }

    async fn release(&self, agent: Uuid, task: &ClaimedTask, claimed_at: Instant) {
        let patience = RELEASE_PATIENCE.min(self.config.patience);
        let sent = self
            .report(task, Call::Released, patience, None, |n| async move {
                n.released(task, agent).await
            })
            .await;
        if let Ok(answer) = sent {
            self.reported(task, Call::Released, &answer, claimed_at);
        }
    }

    fn reported(&self, task: &ClaimedTask, call: Call, answer: &ReportAnswer, at: Instant) {
        self.observer.event(RunnerEvent::Reported {
            task,
            call,
            answer,
            since_claim: at.elapsed(),
        });
    }

    fn lost(&self, task: &ClaimedTask, call: Call, reason: &str, error: Option<&ClientError>) {
        self.observer.event(RunnerEvent::Lost {
            task,
            call,
            reason,
            error,
        });
    }

    /// Heartbeats until aborted or the lease is lost (then the handler is told).
    async fn heartbeats(self: Arc<Self>, agent: Uuid, mut last: ReportAnswer, ctx: TaskContext) {
        let task = ctx.task();
        let mut answered_at = Instant::now();
        loop {
            if ctx.0.silent.load(Ordering::Relaxed) {
                return;
            }
            let node = self.node().clone();
            let usage = ctx.usage();
            let reason = match node.heartbeat_with_usage(task, agent, None, &usage).await {
                Ok(answer) => match revoked(task, &answer) {
                    Some(why) => Some((why, None)),
                    None => {
                        last = answer;
                        answered_at = Instant::now();
                        tokio::time::sleep(self.heartbeat_interval(&last)).await;
                        continue;
                    }
                },
                Err(e) if !transient(&e) => {
                    let why = e.code().unwrap_or("refused").to_owned();
                    Some((why, Some(e)))
                }
                Err(e) => {
                    let left = lease_left(&last);
                    if left.is_some_and(|left| answered_at.elapsed() > left) {
                        let why =
                            format!("lease ran out while the server could not be reached ({e})");
                        Some((why, Some(e)))
                    } else {
                        self.observer.event(RunnerEvent::Retrying {
                            task: Some(task),
                            call: Call::Heartbeat,
                            error: &e,
                        });
                        self.next_node();
                        tokio::time::sleep(HEARTBEAT_RETRY).await;
                        None
                    }
                }
            };
            if let Some((why, error)) = reason {
                self.lost(task, Call::Heartbeat, &why, error.as_ref());
                ctx.cancel(Cancel::Lost(why));
                return;
            }
        }
    }

    fn heartbeat_interval(&self, last: &ReportAnswer) -> Duration {
        if let Some(fixed) = self.config.heartbeat {
            return fixed;
        }
        match last.deadlines.heartbeat {
            Some(at) => Duration::from_millis(at.saturating_sub(last.now) / 3)
                .clamp(HEARTBEAT_MIN, HEARTBEAT_MAX),
            None => HEARTBEAT_MAX,
        }
    }

    /// A report about a task, sent as [`Shared::call`] sends it; a refusal that says the task
    /// was taken back is told as [`RunnerEvent::Lost`], any other as [`RunnerEvent::Error`].
    async fn report<T, F, Fut>(
        &self,
        task: &ClaimedTask,
        call: Call,
        patience: Duration,
        give_up: Option<Phase>,
        f: F,
    ) -> Result<T, CallError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = crate::Result<T>>,
    {
        match self.call(Some(task), call, patience, give_up, f).await {
            Err(CallError::Failed(e)) if taken_back(&e) => {
                let why = e.code().unwrap_or("refused").to_owned();
                self.lost(task, call, &why, Some(&e));
                Err(CallError::Failed(e))
            }
            Err(CallError::Failed(e)) => {
                self.observer.event(RunnerEvent::Error {
                    task: Some(task),
                    call,
                    error: &e,
                });
                Err(CallError::Failed(e))
            }
            other => other,
        }
    }

    /// Sends a call until it is answered, refused, `patience` runs out, or the runner reaches
    /// `give_up`; through connection errors, 5xx and 429 with backoff, on the next node.
    async fn call<T, F, Fut>(
        &self,
        task: Option<&ClaimedTask>,
        call: Call,
        patience: Duration,
        give_up: Option<Phase>,
        f: F,
    ) -> Result<T, CallError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = crate::Result<T>>,
    {
        let first = Instant::now();
        let mut backoff = self.config.backoff_min;
        loop {
            if self.config.rotate_nodes {
                self.next_node();
            }
            let error = match f(self.node().clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if !transient(&e) || first.elapsed() + backoff > patience => {
                    return Err(CallError::Failed(e))
                }
                Err(e) => e,
            };
            self.observer.event(RunnerEvent::Retrying {
                task,
                call,
                error: &error,
            });
            let give_up = give_up.unwrap_or(Phase::Never);
            if self.phase() >= give_up {
                return Err(CallError::Stopped);
            }
            if !self.config.rotate_nodes {
                self.next_node();
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.reached(give_up) => return Err(CallError::Stopped),
            }
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
    }
}

/// `error` with its message cut to [`MESSAGE_CHARS_MAX`] characters, the last an ellipsis.
fn cut_message(mut error: ErrorReport) -> ErrorReport {
    if let Some((cut, _)) = error.message.char_indices().nth(MESSAGE_CHARS_MAX - 1) {
        if error.message[cut..].chars().nth(1).is_some() {
            error.message.truncate(cut);
            error.message.push('…');
        }
    }
    error
}

/// Why an answer means the work must stop, if it does.
fn revoked(task: &ClaimedTask, answer: &ReportAnswer) -> Option<String> {
    if answer.cancelled {
        Some("task_cancelled".into())
    } else if answer.token != task.token {
        Some(format!(
            "stale_lease (token {} is now {})",
            task.token, answer.token
        ))
    } else {
        None
    }
}

/// How long the lease lasts after `answer` unless renewed: to the heartbeat deadline, else
/// the execution's, on the server's clock.
fn lease_left(answer: &ReportAnswer) -> Option<Duration> {
    let d = &answer.deadlines;
    d.heartbeat
        .or(d.start_to_close)
        .map(|at| Duration::from_millis(at.saturating_sub(answer.now)))
}

/// Errors worth trying again: the server is unreachable, overloaded or restarting.
pub fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Transport { .. } => true,
        ClientError::Api(p) => matches!(p.status, 429 | 500 | 502 | 503 | 504),
        ClientError::Decode { .. } | ClientError::InvalidUrl(_) | ClientError::Local(_) => false,
    }
}

/// A refusal that means the task is no longer this agent's (cancelled, a newer lease, gone).
fn taken_back(e: &ClientError) -> bool {
    matches!(e.status(), Some(404 | 409))
}

/// What a `started` report would have answered for a task its claim started (`started`).
pub fn started_by_claim(task: &ClaimedTask) -> ReportAnswer {
    ReportAnswer {
        task: task.task,
        state: baton_core::StateKind::Executing,
        version: task.version,
        attempt: task.attempt,
        token: task.token,
        cancelled: false,
        deadlines: task.deadlines.clone(),
        now: task.now,
    }
}
