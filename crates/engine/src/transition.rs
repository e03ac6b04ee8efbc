//! The one path every change of a task takes: load it, let the core decide (`apply`), commit
//! through the store's compare-and-set (a lost race is decided again from the fresh
//! version), then, only once it is durable, carry out what the transition asks: one log
//! line, metrics and a span, the event for subscribers, and the wake-ups its effects name.

use std::future::Future;

use baton_core::{apply, Effect, Event, Rejection, StateKind, Task, TaskId, Timestamp, Transition};
use baton_store::{AgentRecord, Released, Store, StoreError, TransitionRecord};
use opentelemetry::trace::SpanContext;
use tracing::{debug, info};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::cluster::Outbound;
use crate::engine::Engine;
use crate::error::EngineError;

/// Times a transition is retried after losing a compare-and-set race before giving up.
pub(crate) const CAS_RETRIES_MAX: usize = 16;

/// What the caller of [`Engine::report`] knows beyond the event.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReportContext<'a> {
    /// The reporting agent's record, just read by the caller (to authorise the report): it
    /// keeps the agent alive without a second read.
    pub reporter: Option<&'a AgentRecord>,
    /// The agent's own W3C `traceparent`: the transition's span links to the agent's span. A
    /// malformed one is ignored.
    pub traceparent: Option<&'a str>,
}

/// What [`Engine::transition_from`] does next with a task.
// Returned and taken apart at once, never stored: boxing the write would only add an
// allocation per transition.
#[allow(clippy::large_enum_variant)]
enum Step {
    /// Write this transition.
    Write(Transition, Event, Timestamp),
    /// Decide again from the store's task: the guess was not confirmed by a write.
    Again,
    /// Answer without a write.
    Answer(Result<Task, EngineError>),
}

/// What caused a transition, beyond its event.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cause {
    /// The agent's span the transition's span links to.
    pub link: Option<SpanContext>,
    /// What caused the transition happened then: it is stamped no earlier, so that histories
    /// stay in causal order when the clock steps back or nodes' clocks disagree.
    pub after: Timestamp,
}

impl<S: Store + 'static> Engine<S> {
    /// Applies an agent's report (started, heartbeat, succeeded, failed, released). A duplicate
    /// of an applied report answers with the task as it stands. An accepted report keeps its
    /// agent alive; a refused one changes nothing.
    pub async fn report(
        &self,
        id: TaskId,
        event: Event,
        ctx: ReportContext<'_>,
    ) -> Result<Task, EngineError> {
        let Some((agent, _)) = event.report() else {
            return Err(EngineError::invalid("event", "an agent's report"));
        };
        if matches!(event, Event::AgentLost { .. }) {
            return Err(EngineError::invalid("event", "an agent's report"));
        }
        match &event {
            Event::ExecutionSucceeded {
                result: Some(result),
                ..
            } => self.check_payloads([("result".to_owned(), result)]).await?,
            Event::Heartbeat {
                progress: Some(progress),
                ..
            } => {
                self.check_payloads([("progress".to_owned(), progress)])
                    .await?
            }
            Event::ExecutionFailed { error, .. } => crate::control::check_error(error)?,
            _ => {}
        }
        let cause = Cause {
            link: ctx.traceparent.and_then(crate::trace::parse_traceparent),
            after: Timestamp(0),
        };
        if let Some(usage) = event.usage() {
            crate::budgets::check_usage(usage, "usage")?;
        }
        let task = self.transition(id, |_| Some(event.clone()), cause).await?;
        if event.usage().is_some_and(|u| !u.is_empty()) {
            // Boxed: its future is the largest here, and only reports with usage wait for it.
            Box::pin(self.enforce_budgets(task.workflow)).await;
        }
        let record = match ctx.reporter {
            Some(r) if r.id == agent => Some(r.clone()),
            _ => self.agent(agent).await.ok(),
        };
        if let Some(record) = record {
            self.refresh_liveness(record).await?;
        }
        Ok(task)
    }

    /// Loads the task, makes its event from the current version (`None`: nothing to do),
    /// applies and stores it; a lost compare-and-set starts over from the fresh version. The
    /// transition is stamped no earlier than the task's last change and `cause.after`.
    pub(crate) fn transition<'a>(
        &'a self,
        id: TaskId,
        make: impl Fn(&Task) -> Option<Event> + 'a,
        cause: Cause,
    ) -> impl Future<Output = Result<Task, EngineError>> + 'a {
        self.transition_from(id, None, make, cause)
    }

    /// [`Engine::transition`], starting from `loaded` (the task as the caller just read it)
    /// instead of reading it again; a lost compare-and-set reads it afresh.
    ///
    /// Without `loaded`, a leased task is first decided as this node last committed it (see
    /// `leased`): only a write confirms that guess, so a conflict, a duplicate, a refusal or
    /// nothing to do is decided again from the store.
    ///
    /// A plain function returning its future, like [`Engine::transition`], rather than an
    /// `async fn`: that would hold its arguments, `loaded` among them, beside what it moves
    /// them into. Every report and control awaits this future, so its size counts.
    pub(crate) fn transition_from<'a>(
        &'a self,
        id: TaskId,
        loaded: Option<Task>,
        make: impl Fn(&Task) -> Option<Event> + 'a,
        cause: Cause,
    ) -> impl Future<Output = Result<Task, EngineError>> + 'a {
        let (mut next, mut guessed) = match loaded {
            Some(task) => (Some(task), false),
            None => {
                let kept = self.inner.leased.get(id);
                let guessed = kept.is_some();
                (kept, guessed)
            }
        };
        async move {
            for _ in 0..CAS_RETRIES_MAX {
                let task = match next.take() {
                    Some(task) => task,
                    None => self.load(id).await?,
                };
                // The task is moved into the decision, so that only what is written is held
                // while the store writes it.
                let (t, event, now) =
                    match self.step(task, std::mem::take(&mut guessed), &make, &cause) {
                        Step::Write(t, event, now) => (t, event, now),
                        Step::Again => continue,
                        Step::Answer(answer) => return answer,
                    };
                match self
                    .inner
                    .store
                    .apply(TransitionRecord::of(&t, event.clone(), now))
                    .await
                {
                    Ok(released) => {
                        self.after_commit(&t, &event, cause.link.clone());
                        self.after_released(released);
                        return Ok(t.task);
                    }
                    Err(StoreError::Conflict { .. }) => {
                        self.inner.leased.forget(id);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(EngineError::Contended(id))
        }
    }

    /// One step of [`Engine::transition_from`] on `task`, which was `guessed` from the leased
    /// tasks or read from the store.
    fn step(
        &self,
        task: Task,
        guessed: bool,
        make: impl Fn(&Task) -> Option<Event>,
        cause: &Cause,
    ) -> Step {
        let Some(event) = make(&task) else {
            return if guessed {
                Step::Again
            } else {
                Step::Answer(Ok(task))
            };
        };
        match self.judge(&task, &event, cause) {
            Ok(Some((t, now))) => Step::Write(t, event, now),
            _ if guessed => Step::Again,
            Ok(None) => Step::Answer(Ok(task)),
            Err(refused) => Step::Answer(Err(self.refused(&task, &event, refused))),
        }
    }

    /// The core's decision on `event` for `task` as it stands, stamped no earlier than its
    /// last change and the cause: `None` for a duplicate of what was applied.
    pub(crate) fn decide(
        &self,
        task: &Task,
        event: &Event,
        cause: &Cause,
    ) -> Result<Option<(Transition, Timestamp)>, EngineError> {
        self.judge(task, event, cause)
            .map_err(|refused| self.refused(task, event, refused))
    }

    /// [`Engine::decide`], a refusal not yet told.
    fn judge(
        &self,
        task: &Task,
        event: &Event,
        cause: &Cause,
    ) -> Result<Option<(Transition, Timestamp)>, Rejection> {
        let now = self.now().max(task.updated_at).max(cause.after);
        match apply(task, event, now) {
            Ok(t) => Ok(Some((t, now))),
            Err(r) if r.is_duplicate() => Ok(None),
            Err(r) => Err(r),
        }
    }

    fn refused(&self, task: &Task, event: &Event, refused: Rejection) -> EngineError {
        debug!(task = %task.id, state = %task.kind(), event = %event.kind(), "event refused");
        refused.into()
    }

    /// [`Engine::transition_from`] for many tasks at once, each as the caller just read it:
    /// decided one by one, committed together in one store call, then carried out; a task
    /// that changed meanwhile is decided again on its own. One outcome per task `make` gave
    /// an event for, in their order.
    pub(crate) async fn transition_all(
        &self,
        loaded: Vec<Task>,
        make: impl Fn(&Task) -> Option<Event>,
        cause: Cause,
    ) -> Result<Vec<(TaskId, Result<Task, EngineError>)>, EngineError> {
        let mut outcomes = Vec::with_capacity(loaded.len());
        let mut decided = Vec::with_capacity(loaded.len());
        let mut records = Vec::with_capacity(loaded.len());
        for task in loaded {
            let Some(event) = make(&task) else { continue };
            match self.decide(&task, &event, &cause) {
                Ok(Some((t, now))) => {
                    records.push(TransitionRecord::of(&t, event.clone(), now));
                    decided.push((t, event));
                }
                Ok(None) => outcomes.push((task.id, Ok(task))),
                Err(e) => outcomes.push((task.id, Err(e))),
            }
        }
        if records.is_empty() {
            return Ok(outcomes);
        }
        let stored = self.inner.store.apply_all(records).await?;
        for ((t, event), stored) in decided.into_iter().zip(stored) {
            let id = t.task.id;
            let outcome = match stored {
                Ok(released) => {
                    self.after_commit(&t, &event, cause.link.clone());
                    self.after_released(released);
                    Ok(t.task)
                }
                Err(StoreError::Conflict { .. }) => self.transition(id, &make, cause.clone()).await,
                Err(e) => Err(e.into()),
            };
            outcomes.push((id, outcome));
        }
        Ok(outcomes)
    }

    pub(crate) async fn load(&self, id: TaskId) -> Result<Task, EngineError> {
        self.inner
            .store
            .task(id)
            .await?
            .ok_or(EngineError::TaskNotFound(id))
    }

    /// Carries out the releases the store made in a commit ([`Released`]) like the engine's
    /// own transitions.
    pub(crate) fn after_released(&self, released: Vec<Released>) {
        for r in released {
            self.after_commit(&r.transition, &r.event, None);
        }
    }

    /// After a commit: record the transition, then carry out its effects that are not
    /// durable (the durable ones run from the outbox): wake claimers for freed or new work,
    /// the watchdog for a timer earlier than it planned, the effect runner for the outbox.
    pub(crate) fn after_commit(&self, t: &Transition, event: &Event, link: Option<SpanContext>) {
        self.inner.leased.keep(&t.task);
        self.record(
            &t.task,
            t.from,
            event.kind(),
            event.report().map(|(a, _)| a),
            link,
        );
        for (unit, amount) in &t.usage_added {
            self.inner.metrics.usage(unit, amount.as_f64());
        }
        match event {
            Event::TimeoutExpired { deadline } => self.inner.metrics.timeout(Some(*deadline)),
            Event::AgentLost { .. } => self.inner.metrics.timeout(None),
            _ => {}
        }
        let mut outbox = false;
        for effect in &t.effects {
            match effect {
                Effect::WakeAgents { .. } | Effect::EndLease { .. } => {
                    self.inner.work.notify_waiters();
                    self.tell(Outbound::Work);
                }
                Effect::RevokeLease { agent, token, .. } => {
                    // The agent learns it on its next report for the lease, which the core
                    // refuses as `stale_lease` naming why; its slot is free now.
                    info!(task = %t.task.id, agent = %agent, fencing_token = token.0, "lease revoked");
                    self.inner.work.notify_waiters();
                    self.tell(Outbound::Work);
                }
                Effect::ArmDeadline { at, .. }
                | Effect::ScheduleRetry { at, .. }
                | Effect::ArmWake { at } => {
                    self.inner.timers.arm(*at);
                    self.tell(Outbound::Timers);
                }
                // A disarmed deadline needs no look: the watchdog finds it gone.
                Effect::DisarmDeadline { .. } => {}
                Effect::ReleaseDependents
                | Effect::FailDependents
                | Effect::ReviveDependents
                | Effect::CheckUpstream
                | Effect::Compensate { .. }
                | Effect::AwaitSignal { .. } => outbox = true,
            }
        }
        if outbox {
            self.inner.outbox.notify_one();
            self.tell(Outbound::Outbox);
        }
    }

    /// One accepted transition: exactly one log line, its metrics, its span and its event for
    /// subscribers. Payloads and tokens of callers are never logged.
    pub(crate) fn record(
        &self,
        task: &Task,
        from: Option<StateKind>,
        event: baton_core::EventKind,
        agent: Option<baton_core::AgentId>,
        link: Option<SpanContext>,
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
}
