//! Background work, run by the node that leads (the store says which): the watchdog fires
//! due deadlines and retries and takes back the leases of dead agents; the effect runner
//! carries out durable effects from the store's outbox (releasing, failing or reviving
//! dependents, compensation tasks). Every handler is idempotent and decides from the task's
//! current version, so a round run twice (after a crash, or by an old leader) changes
//! nothing the second time.

use std::sync::Arc;
use std::time::Duration;

use baton_core::{
    DependencyEnd, Effect, Event, StateKind, Task, TaskId, TaskKey, TaskSpec, Timestamp,
};
use baton_store::{Store, StoreError, SubmitBatch, TransitionRecord, WorkflowRef};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::intake::{new_task, submission_of};
use crate::transition::Cause;
use crate::transition::CAS_RETRIES_MAX;
use crate::upstream::resolution;

/// Due timers read, and committed together, at a time.
const TIMERS_PAGE: usize = baton_store::PAGE_ROWS_MAX;
/// Pages of due timers per watchdog round (the round then looks at dead agents).
const TIMER_PAGES_PER_ROUND_MAX: usize = 20;
/// Outbox items handled per round.
const OUTBOX_PER_ROUND_MAX: usize = 256;
/// Released tasks handled per round.
const RELEASED_PER_ROUND_MAX: usize = 512;
/// Released tasks whose transitions run at once (their writes share commits).
const EFFECTS_IN_FLIGHT_MAX: usize = 64;
/// Longest a watchdog or outbox loop sleeps without looking (a lost notification only delays).
const IDLE_POLL_MS: u64 = 1_000;

impl<S: Store + 'static> Engine<S> {
    pub(crate) async fn watchdog_loop(&self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        let alarm = &self.inner.timers;
        while !self.stopping() {
            let woken = alarm.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            alarm.round_started();
            if !self.leading_or_wait(&mut shutdown).await {
                continue;
            }
            if let Err(e) = self.fire_timers().await {
                warn!(error = %e, "watchdog round failed");
            }
            if let Err(e) = self.reap_dead_agents().await {
                warn!(error = %e, "agent liveness round failed");
            }
            let idle = self.now().plus_ms(IDLE_POLL_MS);
            let next = match self.inner.store.next_timer().await {
                Ok(Some(t)) => t.min(idle),
                _ => idle,
            };
            // A timer armed from here on earlier than `next` wakes the loop; one armed since
            // the store was read already has (the wake-up is stored until awaited).
            alarm.sleeping_until(next);
            let clock = Arc::clone(&self.inner.clock);
            tokio::select! {
                _ = clock.sleep_until(next) => {}
                _ = tokio::time::sleep(Duration::from_millis(IDLE_POLL_MS)) => {}
                _ = &mut woken => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    pub(crate) async fn effects_loop(&self) {
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
        self.sweep_kept_signals(true).await?;
        self.fire_schedules().await?;
        while self.run_effects().await? > 0 {}
        Ok(())
    }

    /// Fires the due timers a page at a time, each page read with its tasks and committed
    /// together while the next is read; each task decided from the version read (a task that
    /// changed meanwhile is decided again from its new one: a task completed a moment before
    /// its deadline passed stays completed).
    async fn fire_timers(&self) -> Result<usize, EngineError> {
        let now = self.now();
        let store = &self.inner.store;
        let mut page = store.due_timers(now, None, TIMERS_PAGE).await?;
        let mut fired = 0;
        for round in 1.. {
            let Some(last) = page.last() else { break };
            let after = last.next_timer().map(|(_, at)| (at, last.id));
            let more = page.len() == TIMERS_PAGE && round < TIMER_PAGES_PER_ROUND_MAX;
            let next = async {
                match after {
                    Some(after) if more => store.due_timers(now, Some(after), TIMERS_PAGE).await,
                    _ => Ok(Vec::new()),
                }
            };
            let fire = self.transition_all(page, |task| task.on_timer(now), Cause::default());
            let (outcomes, next) = tokio::join!(fire, next);
            for (id, outcome) in outcomes? {
                match outcome {
                    Ok(_) => fired += 1,
                    Err(EngineError::Rejected(r)) => debug!(task = %id, "timer refused: {r}"),
                    Err(EngineError::TaskNotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            page = next?;
        }
        Ok(fired)
    }

    /// Takes the leases of agents not heard from within the liveness window: those holding
    /// a lease, read from the leased tasks (so a round costs what is leased, not every agent
    /// ever registered).
    async fn reap_dead_agents(&self) -> Result<(), EngineError> {
        let now = self.now();
        let silent_since =
            baton_core::Timestamp(now.0.saturating_sub(self.inner.config.agent_ttl_ms));
        let dead = self
            .inner
            .store
            .silent_lease_holders(silent_since, baton_store::PAGE_ROWS_MAX)
            .await?;
        for agent in dead {
            for id in self.inner.store.leased_to(agent.id).await? {
                let lost = |task: &Task| {
                    let lease = task.state.lease()?;
                    (lease.agent == agent.id).then_some(Event::AgentLost {
                        agent: agent.id,
                        token: lease.token,
                    })
                };
                match self.transition(id, lost, Cause::default()).await {
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
        self.sweep_kept_signals(false).await?;
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
                    applied(self.transition(dependent, fail, Cause::default()).await)?;
                }
            }
            Effect::CheckUpstream => {
                // A dependency that ended before this task waited for it again cancels it, as
                // if it had been waiting then; one that ends later sends its own.
                if let Some(ended) = self
                    .dependency_ends(id)
                    .await?
                    .into_iter()
                    .find(|d| d.ended)
                {
                    let fail = |t: &Task| {
                        (t.kind() == StateKind::Blocked).then(|| Event::UpstreamFailed {
                            upstream: ended.key.clone(),
                        })
                    };
                    applied(self.transition(id, fail, Cause::default()).await)?;
                }
            }
            Effect::ReviveDependents => {
                let task = self.load(id).await?;
                for dependent in self.inner.store.dependents(id).await? {
                    // The core decides from the evidence: revived (blocked again, its own
                    // dependents revived in turn), kept cancelled behind another ended
                    // upstream, or refused (not cancelled by this task).
                    let revive = Event::UpstreamRevived {
                        upstream: task.spec.key.clone(),
                        dependencies: self.dependency_ends(dependent).await?,
                    };
                    let revive = |_: &Task| Some(revive.clone());
                    applied(self.transition(dependent, revive, Cause::default()).await)?;
                }
            }
            Effect::AwaitSignal { signal } => self.take_kept_signal(id, signal).await?,
            Effect::Compensate { spec } => {
                let task = self.load(id).await?;
                let mut comp = TaskSpec::new(spec.key.0.clone());
                comp.capabilities = spec.capabilities.clone();
                comp.input = compensation_input(&task, &spec.input);
                comp.priority = spec.priority.unwrap_or(task.spec.priority);
                if let Some(retry) = &spec.retry {
                    comp.retry = retry.clone();
                }
                if let Some(timeouts) = &spec.timeouts {
                    comp.timeouts = timeouts.clone();
                }
                for _ in 0..CAS_RETRIES_MAX {
                    let now = self.now().max(task.updated_at);
                    let pause = self.creation_pause(task.workflow).await?;
                    let (new, t) = new_task(
                        task.workflow,
                        TaskId(self.inner.ids.id()),
                        comp.clone(),
                        Vec::new(),
                        &std::collections::BTreeMap::new(),
                        self.inner.ids.seed(),
                        now,
                    )?;
                    let held = match &pause {
                        Some(pause) => Some(Self::held_by(pause, &t)?),
                        None => None,
                    };
                    let batch = SubmitBatch {
                        workflow: WorkflowRef::Existing {
                            id: task.workflow,
                            paused: pause.is_some(),
                        },
                        tasks: vec![new],
                        edges: Vec::new(),
                        transitions: held
                            .iter()
                            .map(|(h, e)| TransitionRecord::of(h, e.clone(), h.task.updated_at))
                            .collect(),
                    };
                    match self.inner.store.submit(batch).await {
                        Ok(_) => {
                            info!(task = %id, compensation = %t.task.id, "compensation task created");
                            self.inner.metrics.compensation();
                            self.after_commit(&t, &Event::Submitted(submission_of(&t)), None);
                            if let Some((h, event)) = &held {
                                self.after_commit(h, event, None);
                            }
                            return Ok(());
                        }
                        Err(StoreError::DuplicateKey { .. }) => return Ok(()),
                        Err(e) if e.is_conflict() => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                return Err(EngineError::Contended(id));
            }
            _ => {}
        }
        Ok(())
    }

    /// Every dependency of the task in the graph, and whether it has ended failed (no retry
    /// left) or cancelled: the evidence of `upstream_revived`.
    async fn dependency_ends(&self, id: TaskId) -> Result<Vec<DependencyEnd>, EngineError> {
        let mut ends = Vec::new();
        for dep in self.inner.store.dependencies(id).await? {
            let ended = match dep.state {
                StateKind::Cancelled => true,
                StateKind::Failed => match self.inner.store.task(dep.id).await? {
                    Some(t) => t.state.is_terminal(),
                    None => false,
                },
                _ => false,
            };
            ends.push(DependencyEnd {
                key: dep.key,
                ended,
            });
        }
        Ok(ends)
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
            // Several at once, so that their writes share commits instead of one flush each.
            for chunk in ready.chunks(EFFECTS_IN_FLIGHT_MAX) {
                let outcomes = join_all(chunk.iter().map(|id| self.release(*id))).await;
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

    /// Sends `dependencies_met` to `id` with the evidence the core checks: the dependencies
    /// the store has seen completed and, for an input template, its resolution against their
    /// results. Only a rerun takes a completion back, and it reopens this task in the same
    /// commit, so evidence read before it loses the compare-and-set and is read again. The
    /// store's open-dependency count only nominates the task; the core decides. Stamped after
    /// the last of its dependencies completed.
    async fn release(&self, id: TaskId) -> Result<Task, EngineError> {
        // A rerun can reopen a dependency read as completed here; it reopens this task too,
        // so the write below loses its compare-and-set, and the evidence is read again.
        for _ in 0..CAS_RETRIES_MAX {
            let task = self.load(id).await?;
            let blocked = task.kind() == StateKind::Blocked;
            if blocked && task.spec.for_each.is_some() && task.expanded.is_none() {
                return self.expand(task).await;
            }
            let dependencies = self.inner.store.dependencies(id).await?;
            let last = dependencies.iter().map(|d| d.updated_at).max();
            let (input, unresolved, results) = if !blocked {
                (None, None, None)
            } else if task.expanded.is_some() {
                let (results, unresolved) = self.gather_items(&task, &dependencies).await?;
                (None, unresolved, results)
            } else {
                let results = self
                    .referenced_results(&task.spec, None, &dependencies)
                    .await?;
                let (input, unresolved) = resolution(&task.spec, &results);
                (input, unresolved, None)
            };
            let completed: Vec<TaskKey> = dependencies
                .into_iter()
                .filter(|d| d.state == StateKind::Completed)
                .map(|d| d.key)
                .collect();
            let event = Event::DependenciesMet {
                completed,
                input,
                unresolved,
                results,
            };
            let cause = Cause {
                link: None,
                after: last.unwrap_or(Timestamp(0)),
            };
            let Some((t, now)) = self.decide(&task, &event, &cause)? else {
                return Ok(task);
            };
            match self
                .inner
                .store
                .apply(TransitionRecord::of(&t, event.clone(), now))
                .await
            {
                Ok(released) => {
                    self.after_commit(&t, &event, None);
                    self.after_released(released);
                    return Ok(t.task);
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended(id))
    }
    // ---- views ----------------------------------------------------------------------------
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

/// Whether an effect's transition was applied; a refusal means it was already done (or no
/// longer applies), which is not an error for an idempotent effect.
fn applied<T>(r: Result<T, EngineError>) -> Result<bool, EngineError> {
    match r {
        Ok(_) => Ok(true),
        Err(EngineError::Rejected(_) | EngineError::TaskNotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The input of a compensation task (`baton_api::CompensationInput` documents it): what it
/// compensates (key and id), the input its spec declares, the failed or cancelled task's own
/// input (resolved, or `null` if its template never resolved), every error of its attempts
/// and the last one. The task's upstream results are read with `GET
/// /v1/tasks/{task}/upstream`, not copied. Handed as written: were anything in it to look
/// like an input template, it is escaped as a literal.
fn compensation_input(task: &Task, input: &serde_json::Value) -> serde_json::Value {
    let input = serde_json::json!({
        "compensates": task.spec.key,
        "task": task.id,
        "input": input,
        "task_input": task.input(),
        "errors": task.errors,
        "error": task.errors.last(),
    });
    if baton_core::template::is_template(&input) {
        serde_json::json!({ baton_core::template::LITERAL: input })
    } else {
        input
    }
}

/// The task a compensation task's input (see [`compensation_input`]) names, read from its
/// spec as stored without decoding the input: only the input's `compensates` and `task`
/// members are read, the rest is skipped.
pub(crate) fn compensated_task(spec_json: &RawValue) -> Option<TaskId> {
    #[derive(Deserialize)]
    struct Spec<'a> {
        #[serde(borrow)]
        input: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Mark<'a> {
        /// Present, whatever its value (`null` included).
        #[serde(default, borrow, deserialize_with = "present")]
        compensates: Option<&'a RawValue>,
        task: Option<String>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
        <&RawValue>::deserialize(d).map(Some)
    }
    /// The input escaped as a literal (see `compensation_input`).
    #[derive(Deserialize)]
    struct Literal<'a> {
        #[serde(rename = "$literal", borrow)]
        literal: &'a RawValue,
    }
    let spec: Spec<'_> = serde_json::from_str(spec_json.get()).ok()?;
    let mut input = spec.input?.get();
    if let Ok(Literal { literal }) = serde_json::from_str::<Literal<'_>>(input) {
        input = literal.get();
    }
    // Only an object has members (a struct would also be read from an array).
    if !input.starts_with('{') {
        return None;
    }
    let mark: Mark<'_> = serde_json::from_str(input).ok()?;
    mark.compensates?;
    uuid::Uuid::parse_str(&mark.task?).ok().map(TaskId)
}
