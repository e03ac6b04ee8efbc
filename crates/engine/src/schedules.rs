//! Schedules: a cron expression in a time zone submits a workflow at each tick, with the
//! idempotency key `schedule:NAME:TICK_MS`, so a tick submits one workflow however often it is
//! fired (two nodes, a crash between submitting and moving the schedule on).
//!
//! The leader's schedule loop fires the due ones. A tick later than
//! [`SCHEDULE_MISSED_AFTER_MS`] was missed (no node ran): the schedule's catch-up policy says
//! whether it is skipped, whether only the latest missed tick fires, or all of them (up to a
//! limit). A tick that finds the previous tick's workflow still running follows the overlap
//! policy. Each schedule moves on by a compare-and-set on its version.

use std::str::FromStr;
use std::time::Duration;

use baton_core::{CatchUp, Overlap, ScheduleSpec, Timestamp, WorkflowId};
use baton_store::{ScheduleRecord, ScheduleWrite, Store};
use chrono::TimeZone;
use chrono_tz::Tz;
use croner::Cron;
use tracing::{info, warn};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::intake::{validate_workflow, WorkflowRequest, NAME_LEN_MAX};
use crate::outcome::WorkflowStatus;

/// A tick this much later than its time was missed (no node was running it).
pub const SCHEDULE_MISSED_AFTER_MS: u64 = 60_000;
/// Next fire times shown with a schedule.
pub const NEXT_FIRES_SHOWN: usize = 5;
/// Most ticks looked at when catching up on one schedule after downtime.
const TICKS_SCANNED_MAX: usize = 1_000_000;
/// Due schedules fired per round.
const DUE_PER_ROUND_MAX: usize = 64;
/// Longest the schedule loop sleeps without looking (a schedule created on another node).
const SCHEDULE_POLL_MS: u64 = 1_000;

/// A schedule's timing: its cron expression read in its time zone.
struct Timing {
    cron: Cron,
    tz: Tz,
}

impl Timing {
    fn of(spec: &ScheduleSpec) -> Result<Timing, EngineError> {
        let cron = Cron::new(&spec.cron)
            .with_seconds_optional()
            .parse()
            .map_err(|e| {
                EngineError::invalid(
                    "cron",
                    format!(
                        "a cron expression `SEC MIN HOUR DAY MONTH WEEKDAY` (or five fields \
                         without seconds), but {:?} is not: {e}",
                        spec.cron
                    ),
                )
            })?;
        let tz = Tz::from_str(&spec.timezone).map_err(|_| {
            EngineError::invalid(
                "timezone",
                format!(
                    "an IANA time zone such as `UTC` or `Europe/Berlin`, not {:?}",
                    spec.timezone
                ),
            )
        })?;
        Ok(Timing { cron, tz })
    }

    /// The first tick strictly after `t`; `None` when the expression never fires again.
    fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let whole_second = (t.0 / 1_000 * 1_000) as i64;
        let at = self.tz.timestamp_millis_opt(whole_second).single()?;
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok().map(Timestamp)
    }

    /// Up to `n` ticks after `t`.
    fn next_n(&self, mut t: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

/// A schedule as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleInfo {
    pub spec: ScheduleSpec,
    pub record: ScheduleRecord,
    /// Its next fire times (none while paused).
    pub next: Vec<Timestamp>,
}

/// Which of the due ticks fire, oldest first: those on time, and the missed ones the
/// catch-up policy keeps.
fn ticks_to_fire(
    timing: &Timing,
    spec: &ScheduleSpec,
    first: Timestamp,
    now: Timestamp,
) -> Vec<Timestamp> {
    let keep = match spec.catch_up {
        CatchUp::None => 0,
        CatchUp::Latest => 1,
        CatchUp::All { max } => max as usize,
    };
    let mut missed = std::collections::VecDeque::with_capacity(keep.min(1_024));
    let mut on_time = Vec::new();
    let mut tick = Some(first);
    let mut scanned = 0;
    while let Some(t) = tick.filter(|t| *t <= now) {
        if now.ms_since(t) <= SCHEDULE_MISSED_AFTER_MS {
            on_time.push(t);
        } else if keep > 0 {
            if missed.len() == keep {
                missed.pop_front();
            }
            missed.push_back(t);
        }
        scanned += 1;
        if scanned >= TICKS_SCANNED_MAX {
            break;
        }
        tick = timing.next_after(t);
    }
    if spec.catch_up == CatchUp::Latest && !on_time.is_empty() {
        missed.clear();
    }
    missed.into_iter().chain(on_time).collect()
}

impl<S: Store + 'static> Engine<S> {
    /// Creates a schedule; its first tick is the first after now.
    pub async fn create_schedule(&self, spec: ScheduleSpec) -> Result<ScheduleInfo, EngineError> {
        let timing = check_schedule(&spec)?;
        let now = self.now();
        let next_fire_at = timing.next_after(now).ok_or_else(|| {
            EngineError::invalid("cron", "an expression that fires again after now")
        })?;
        let record = ScheduleRecord {
            name: spec.name.clone(),
            spec: serde_json::to_string(&spec).expect("a schedule serialises"),
            paused: false,
            next_fire_at,
            last_tick_at: None,
            last_workflow: None,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        self.inner
            .store
            .write_schedule(ScheduleWrite::Create(record.clone()))
            .await?;
        info!(schedule = %spec.name, next_fire_at = next_fire_at.0, "schedule created");
        Ok(info_of(spec, record, &timing))
    }

    /// A page of schedules by name, after `after`, at most `limit` (and
    /// [`baton_store::PAGE_ROWS_MAX`]).
    pub async fn schedules(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ScheduleInfo>, EngineError> {
        let mut out = Vec::new();
        for record in self.inner.store.schedules(after, limit).await? {
            out.push(decode(record)?);
        }
        Ok(out)
    }

    pub async fn schedule(&self, name: &str) -> Result<ScheduleInfo, EngineError> {
        decode(self.schedule_record(name).await?)
    }

    async fn schedule_record(&self, name: &str) -> Result<ScheduleRecord, EngineError> {
        self.inner
            .store
            .schedule(name.to_owned())
            .await?
            .ok_or_else(|| EngineError::ScheduleNotFound(name.to_owned()))
    }

    /// Pauses (no tick fires) or resumes a schedule; a resumed schedule fires from its next
    /// tick after now: the ticks it slept through are not caught up.
    pub async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
    ) -> Result<ScheduleInfo, EngineError> {
        for _ in 0..crate::transition::CAS_RETRIES_MAX {
            let record = self.schedule_record(name).await?;
            if record.paused == paused {
                return decode(record);
            }
            let spec = spec_of(&record)?;
            let timing = Timing::of(&spec)?;
            let now = self.now();
            let next = ScheduleRecord {
                paused,
                next_fire_at: if paused {
                    record.next_fire_at
                } else {
                    timing.next_after(now).unwrap_or(record.next_fire_at)
                },
                version: record.version + 1,
                updated_at: now,
                ..record
            };
            if self
                .inner
                .store
                .write_schedule(ScheduleWrite::Update(next.clone()))
                .await?
            {
                info!(schedule = name, paused, "schedule paused or resumed");
                return Ok(info_of(spec, next, &timing));
            }
        }
        Err(EngineError::ScheduleContended(name.to_owned()))
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<(), EngineError> {
        for _ in 0..crate::transition::CAS_RETRIES_MAX {
            let record = self.schedule_record(name).await?;
            let delete = ScheduleWrite::Delete {
                name: name.to_owned(),
                version: record.version,
            };
            if self.inner.store.write_schedule(delete).await? {
                info!(schedule = name, "schedule deleted");
                return Ok(());
            }
        }
        Err(EngineError::ScheduleContended(name.to_owned()))
    }

    /// Fires every due schedule once; returns how many workflows were submitted.
    pub(crate) async fn fire_schedules(&self) -> Result<usize, EngineError> {
        let now = self.now();
        let mut submitted = 0;
        for record in self
            .inner
            .store
            .due_schedules(now, DUE_PER_ROUND_MAX)
            .await?
        {
            let name = record.name.clone();
            match self.fire(record, now).await {
                Ok(n) => submitted += n,
                Err(e) => warn!(schedule = %name, error = %e, "schedule tick failed; will retry"),
            }
        }
        Ok(submitted)
    }

    async fn fire(&self, record: ScheduleRecord, now: Timestamp) -> Result<usize, EngineError> {
        let spec = &spec_of(&record)?;
        let timing = Timing::of(spec)?;
        let due = ticks_to_fire(&timing, spec, record.next_fire_at, now);
        let mut last = (record.last_tick_at, record.last_workflow);
        let mut submitted = 0;
        for tick in due {
            if let Some(previous) = last.1 {
                if self.running(previous).await? {
                    match spec.overlap {
                        Overlap::Skip => {
                            info!(schedule = %spec.name, tick = tick.0, previous = %previous, "tick skipped: the previous run is still going");
                            self.inner.metrics.schedule_tick("skipped");
                            continue;
                        }
                        Overlap::CancelPrevious => {
                            self.cancel_workflow(
                                previous,
                                format!("schedule {}", spec.name),
                                format!("the tick at {} replaces it", tick.0),
                            )
                            .await?;
                        }
                        Overlap::Allow => {}
                    }
                }
            }
            let receipt = self
                .submit_workflow(WorkflowRequest {
                    name: if spec.workflow.name.is_empty() {
                        spec.name.clone()
                    } else {
                        spec.workflow.name.clone()
                    },
                    idempotency_key: Some(format!("schedule:{}:{}", spec.name, tick.0)),
                    tasks: spec.workflow.tasks.clone(),
                    outputs: spec.workflow.outputs.clone(),
                    labels: spec.workflow.labels.clone(),
                    budgets: spec.workflow.budgets.clone(),
                })
                .await?;
            info!(schedule = %spec.name, tick = tick.0, workflow = %receipt.workflow, created = receipt.created, "schedule fired");
            self.inner.metrics.schedule_tick("submitted");
            submitted += 1;
            last = (Some(tick), Some(receipt.workflow));
        }
        let skipped_missed = timing.next_after(now).unwrap_or(Timestamp(u64::MAX));
        let next = ScheduleRecord {
            next_fire_at: skipped_missed,
            last_tick_at: last.0,
            last_workflow: last.1,
            version: record.version + 1,
            updated_at: now,
            ..record
        };
        // Lost to another node: it moved the schedule on, and the idempotency keys kept the
        // ticks both fired to one workflow each.
        self.inner
            .store
            .write_schedule(ScheduleWrite::Update(next))
            .await?;
        Ok(submitted)
    }

    async fn running(&self, workflow: WorkflowId) -> Result<bool, EngineError> {
        let counts = self.inner.store.counts(Some(workflow)).await?;
        Ok(self.workflow_status(workflow, &counts).await? == WorkflowStatus::Running)
    }

    /// The leader fires due schedules; it looks again at the next tick, or within
    /// [`SCHEDULE_POLL_MS`] (a schedule made on another node).
    pub(crate) async fn schedule_loop(&self) {
        let mut shutdown = self.inner.shutdown.subscribe();
        while !self.stopping() {
            let leading = match self.inner.store.try_lead().await {
                Ok(leading) => leading,
                Err(e) => {
                    warn!(error = %e, "cannot tell whether this node leads");
                    false
                }
            };
            if leading {
                if let Err(e) = self.fire_schedules().await {
                    warn!(error = %e, "schedule round failed");
                }
            }
            let clock = std::sync::Arc::clone(&self.inner.clock);
            let next = self.now().plus_ms(SCHEDULE_POLL_MS);
            tokio::select! {
                _ = clock.sleep_until(next) => {}
                _ = tokio::time::sleep(Duration::from_millis(SCHEDULE_POLL_MS)) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Every check of a schedule before it is stored.
fn check_schedule(spec: &ScheduleSpec) -> Result<Timing, EngineError> {
    baton_core::spec::validate_path_name("name", &spec.name)
        .map_err(|e| EngineError::invalid(e.field, e.expected))?;
    let timing = Timing::of(spec)?;
    if let CatchUp::All { max } = spec.catch_up {
        if !(1..=baton_core::schedule::CATCH_UP_MAX).contains(&max) {
            return Err(EngineError::invalid(
                "catch_up.max",
                format!("1 to {}", baton_core::schedule::CATCH_UP_MAX),
            ));
        }
    }
    if spec.workflow.name.len() > NAME_LEN_MAX {
        return Err(EngineError::invalid(
            "workflow.name",
            format!("at most {NAME_LEN_MAX} bytes"),
        ));
    }
    validate_workflow(&WorkflowRequest {
        name: spec.workflow.name.clone(),
        idempotency_key: None,
        tasks: spec.workflow.tasks.clone(),
        outputs: spec.workflow.outputs.clone(),
        labels: spec.workflow.labels.clone(),
        budgets: spec.workflow.budgets.clone(),
    })
    .map_err(|e| match e {
        EngineError::Invalid { field, expected } => EngineError::Invalid {
            field: format!("workflow.{field}"),
            expected,
        },
        other => other,
    })?;
    Ok(timing)
}

/// The stored schedule's spec.
fn spec_of(record: &ScheduleRecord) -> Result<ScheduleSpec, EngineError> {
    serde_json::from_str(&record.spec).map_err(|e| {
        EngineError::Store(baton_store::StoreError::Backend(format!(
            "stored schedule {}: {e}",
            record.name
        )))
    })
}

fn decode(record: ScheduleRecord) -> Result<ScheduleInfo, EngineError> {
    let spec = spec_of(&record)?;
    let timing = Timing::of(&spec)?;
    Ok(info_of(spec, record, &timing))
}

fn info_of(spec: ScheduleSpec, record: ScheduleRecord, timing: &Timing) -> ScheduleInfo {
    let next = if record.paused {
        Vec::new()
    } else {
        let mut next = vec![record.next_fire_at];
        next.extend(timing.next_n(record.next_fire_at, NEXT_FIRES_SHOWN - 1));
        next
    };
    ScheduleInfo { spec, record, next }
}
