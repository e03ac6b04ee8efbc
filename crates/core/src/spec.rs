//! What a user submits for a task: its key, dependencies, required capabilities, input, priority,
//! retry policy, timeouts and optional compensation. A spec never changes after submission.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{Capability, TaskKey, Timestamp};

/// Longest task key or capability name, in bytes.
pub const KEY_LEN_MAX: usize = 128;
/// Most dependencies one task may declare.
pub const DEPENDENCIES_PER_TASK_MAX: usize = 10_000;
/// Most capabilities one task may require.
pub const CAPABILITIES_PER_TASK_MAX: usize = 32;
/// Most attempts a retry policy may allow.
pub const ATTEMPTS_MAX: u32 = 100;
/// Longest backoff or timeout a spec may ask for: 30 days.
pub const DURATION_MAX_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most non-retryable error kinds one policy may list.
pub const NON_RETRYABLE_KINDS_MAX: usize = 64;

/// One task as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSpec {
    /// Unique within the workflow; dependencies name tasks by key. 1 to 128 letters, digits
    /// and `-_.:/`.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, pattern = r"^[A-Za-z0-9_.:/-]{1,128}$")
    )]
    pub key: TaskKey,
    /// Keys of the tasks that must complete before this one is ready, each once (at most
    /// 10,000).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 10000))]
    pub depends_on: Vec<TaskKey>,
    /// Capabilities an agent must have (all of them) to be assigned this task (at most 32).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Capability>, max_items = 32))]
    pub capabilities: BTreeSet<Capability>,
    /// Any JSON value, handed to the agent. It may be a template: any value in it written
    /// `{"$from": "KEY", "pointer": "/json/pointer"}` (KEY one of `depends_on`; `pointer` an
    /// RFC 6901 JSON Pointer, optional: the whole result) is replaced, when the task becomes
    /// ready, by what it finds in that dependency's result; a pointer that finds nothing fails
    /// the task with error kind `input_unresolved`. `{"$literal": v}` stands for `v` as
    /// written (for an object with a `$from` key).
    #[serde(default)]
    pub input: Value,
    /// Higher runs first among ready tasks.
    #[serde(default, deserialize_with = "crate::whole::de")]
    pub priority: i32,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// What happens to the task when its agent is declared dead while executing it.
    #[serde(default)]
    pub on_agent_lost: AgentLostPolicy,
    /// Submitted as a new task of the workflow if this task ends `Failed` (finally) or
    /// `Cancelled`.
    #[serde(default)]
    pub compensation: Option<CompensationSpec>,
    /// Fan-out: `{"$from": "KEY", "pointer": "/json/pointer"}`, an array in the result of
    /// dependency KEY. When its dependencies complete, the task is run by no agent: it expands
    /// into one task per element, keyed `KEY[0]`, `KEY[1]`, … (its own key), each a copy of
    /// this spec whose input (an object) holds the element at `item`. It then completes once
    /// they all have, its result their results in element order (an empty array completes it
    /// at once with `[]`). At most 10,000 elements (`FOR_EACH_ITEMS_MAX`); a pointer that
    /// finds no array fails it with error kind `input_unresolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub for_each: Option<Value>,
    /// Run by no agent: once ready, the task waits for a signal sent to its workflow
    /// (`POST /v1/workflows/{id}/signals/{name}`), whose data becomes its result (or whose
    /// rejection fails it, error kind `rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for: Option<WaitFor>,
    /// Not ready before this time (milliseconds since the Unix epoch), even once its
    /// dependencies have completed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::opt"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>, minimum = 0))]
    pub not_before: Option<Timestamp>,
    /// Ready only this many milliseconds after its dependencies completed (or after its
    /// submission, without dependencies).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::opt"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 2592000000_u64))]
    pub delay_ms: Option<u64>,
    /// Run by no agent: the task completes by itself this many milliseconds after its
    /// dependencies completed, with result `{"slept_ms": N}`. A durable sleep between steps.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::opt"
    )]
    #[cfg_attr(feature = "openapi", schema(maximum = 2592000000_u64))]
    pub sleep_ms: Option<u64>,
    /// Named rate limits the task draws from when it is claimed (`PUT /v1/limits/{key}`): it is
    /// handed out only while each has its units.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 8))]
    pub rate: Vec<crate::flow::RateUse>,
    /// Concurrency keys the task holds while assigned or executing: at most each key's `max`
    /// tasks holding it are, across every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 8))]
    pub concurrency: Vec<crate::flow::ConcurrencyKey>,
    /// Among ready tasks of equal priority, claims take from each fairness group in turn, up to
    /// 32 tasks of a group at a time: the group is this key (e.g. `tenant-{/tenant}`, filled in
    /// from the input as concurrency keys are), or the task's workflow without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^(?:[^{\x00-\x1f\x7f-\x9f]|\{/[^}\x00-\x1f\x7f-\x9f]*\})*$"
        )
    )]
    pub fairness_key: Option<String>,
}

/// What a signal task waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitFor {
    /// The signal's name, as sent to `POST /v1/workflows/{id}/signals/{name}`: 1 to 128
    /// letters, digits and `-_.:/`, but neither `.` nor `..` (which no URL path can hold).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^(?!\.\.?$)[A-Za-z0-9_.:/-]{1,128}$")
    )]
    pub signal: String,
    /// Fails the wait with `timeout_expired` (error kind `timeout.signal`) when no signal came
    /// this many milliseconds after it began; retried by the task's retry policy.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::opt"
    )]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2592000000_u64))]
    pub timeout_ms: Option<u64>,
}

impl TaskSpec {
    /// A spec with the given key and every other field at its default.
    pub fn new(key: impl Into<String>) -> TaskSpec {
        TaskSpec {
            key: TaskKey(key.into()),
            depends_on: Vec::new(),
            capabilities: BTreeSet::new(),
            input: Value::Null,
            priority: 0,
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            on_agent_lost: AgentLostPolicy::default(),
            compensation: None,
            for_each: None,
            wait_for: None,
            not_before: None,
            delay_ms: None,
            sleep_ms: None,
            rate: Vec::new(),
            concurrency: Vec::new(),
            fairness_key: None,
        }
    }

    /// Checks every field's bounds; the error names the field and what was expected.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name("key", &self.key.0)?;
        if self.depends_on.len() > DEPENDENCIES_PER_TASK_MAX {
            return Err(SpecError::new(
                "depends_on",
                format!("at most {DEPENDENCIES_PER_TASK_MAX} dependencies"),
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.depends_on.len());
        for dep in &self.depends_on {
            validate_name("depends_on[]", &dep.0)?;
            if dep == &self.key {
                return Err(SpecError::new(
                    "depends_on",
                    format!("keys of other tasks, not the task's own key {:?}", dep.0),
                ));
            }
            if !seen.insert(dep) {
                return Err(SpecError::new(
                    "depends_on",
                    format!("each dependency once, but {:?} is listed twice", dep.0),
                ));
            }
        }
        if self.capabilities.len() > CAPABILITIES_PER_TASK_MAX {
            return Err(SpecError::new(
                "capabilities",
                format!("at most {CAPABILITIES_PER_TASK_MAX} capabilities"),
            ));
        }
        for cap in &self.capabilities {
            validate_name("capabilities[]", &cap.0)?;
        }
        for r in crate::template::references(&self.input, "input")? {
            if !self.depends_on.contains(&r.from) {
                let deps: Vec<&str> = self
                    .depends_on
                    .iter()
                    .take(8)
                    .map(|d| d.0.as_str())
                    .collect();
                let listed = if deps.is_empty() {
                    "the task has none".to_owned()
                } else {
                    format!("one of {}", deps.join(", "))
                };
                return Err(SpecError::new(
                    format!("{}.{}", r.at, crate::template::FROM),
                    format!(
                        "the key of a dependency of this task ({listed}), not {:?}",
                        r.from.0
                    ),
                ));
            }
        }
        if let Some(for_each) = &self.for_each {
            let r = crate::template::for_each_reference(for_each)?;
            if !self.depends_on.contains(&r.from) {
                return Err(SpecError::new(
                    "for_each.$from",
                    format!("the key of a dependency of this task, not {:?}", r.from.0),
                ));
            }
            match &self.input {
                Value::Null => {}
                Value::Object(map) if !map.contains_key(crate::template::ITEM) => {}
                _ => {
                    return Err(SpecError::new(
                        "input",
                        "an object without an `item` field (or none) for a for_each task: \
                         each expanded task finds its element at `item`",
                    ))
                }
            }
        }
        self.retry.validate()?;
        self.timeouts.validate()?;
        self.validate_waits()?;
        crate::flow::validate(&self.rate, &self.concurrency)?;
        if let Some(key) = &self.fairness_key {
            crate::flow::validate_key("fairness_key", key, true)?;
        }
        // A fan-out's items copy its spec, so they hold its flow control.
        if self.wait_for.is_some() || self.sleep_ms.is_some() {
            for (field, declared) in [
                ("rate", !self.rate.is_empty()),
                ("concurrency", !self.concurrency.is_empty()),
            ] {
                if declared {
                    return Err(SpecError::new(
                        field,
                        "none on a task no agent runs (wait_for, sleep_ms): it is never \
                         claimed",
                    ));
                }
            }
        }
        if let Some(comp) = &self.compensation {
            validate_name("compensation.key", &comp.key.0)?;
            if comp.key == self.key {
                return Err(SpecError::new(
                    "compensation.key",
                    "a key different from the task's own",
                ));
            }
            for cap in &comp.capabilities {
                validate_name("compensation.capabilities[]", &cap.0)?;
            }
            let within =
                |e: SpecError| SpecError::new(format!("compensation.{}", e.field), e.expected);
            if let Some(retry) = &comp.retry {
                retry.validate().map_err(within)?;
            }
            if let Some(timeouts) = &comp.timeouts {
                timeouts.validate().map_err(within)?;
            }
        }
        Ok(())
    }
}

impl TaskSpec {
    /// The task is run by no agent: it waits for a signal, sleeps, or fans out.
    pub fn runs_without_agent(&self) -> bool {
        self.wait_for.is_some() || self.sleep_ms.is_some() || self.for_each.is_some()
    }

    fn validate_waits(&self) -> Result<(), SpecError> {
        for (field, ms) in [("delay_ms", self.delay_ms), ("sleep_ms", self.sleep_ms)] {
            if ms.is_some_and(|ms| ms > DURATION_MAX_MS) {
                return Err(SpecError::new(
                    field,
                    format!("at most {DURATION_MAX_MS} ms (30 days)"),
                ));
            }
        }
        if let Some(wait) = &self.wait_for {
            validate_path_name("wait_for.signal", &wait.signal)?;
            if wait
                .timeout_ms
                .is_some_and(|ms| ms == 0 || ms > DURATION_MAX_MS)
            {
                return Err(SpecError::new(
                    "wait_for.timeout_ms",
                    format!("1 to {DURATION_MAX_MS} ms (30 days)"),
                ));
            }
        }
        let no_agent = [
            ("wait_for", self.wait_for.is_some()),
            ("sleep_ms", self.sleep_ms.is_some()),
            ("for_each", self.for_each.is_some()),
        ];
        let mut chosen = no_agent.iter().filter(|(_, set)| *set).map(|(f, _)| *f);
        if let (Some(first), Some(second)) = (chosen.next(), chosen.next()) {
            return Err(SpecError::new(
                second,
                format!("no `{second}` on a task with `{first}`: a task waits for a signal, sleeps or fans out, one of them"),
            ));
        }
        if let Some(field) = no_agent
            .iter()
            .find(|(f, set)| *set && *f != "for_each")
            .map(|(f, _)| *f)
        {
            let run_by_agent = [
                ("capabilities", !self.capabilities.is_empty()),
                ("timeouts", self.timeouts != Timeouts::default()),
                (
                    "on_agent_lost",
                    self.on_agent_lost != AgentLostPolicy::default(),
                ),
            ];
            if let Some((what, _)) = run_by_agent.iter().find(|(_, set)| *set) {
                return Err(SpecError::new(
                    *what,
                    format!("none on a task with `{field}`, which no agent runs"),
                ));
            }
        }
        if self.sleep_ms.is_some() {
            for (what, set) in [
                ("not_before", self.not_before.is_some()),
                ("delay_ms", self.delay_ms.is_some()),
            ] {
                if set {
                    return Err(SpecError::new(
                        what,
                        "none on a task with `sleep_ms`, which waits for its sleep alone",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What to do with an executing task whose agent is declared dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AgentLostPolicy {
    /// Fail the attempt (error kind `agent_lost`); the retry policy decides what follows.
    #[default]
    Fail,
    /// Put the task back to `Pending` for another agent, within the same attempt. For tasks
    /// whose work is safe to start over.
    Requeue,
}

/// The task submitted when a task ends `Failed` for good or `Cancelled`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompensationSpec {
    /// A key no task or other compensation of the workflow has: 1 to 128 letters, digits and
    /// `-_.:/`.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, pattern = r"^[A-Za-z0-9_.:/-]{1,128}$")
    )]
    pub key: TaskKey,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Capability>))]
    pub capabilities: BTreeSet<Capability>,
    /// Handed to the compensation task as `input` inside its input (see the engine's
    /// compensation input: what failed, its input and errors).
    #[serde(default)]
    pub input: Value,
    /// The compensation task's retry policy; the default policy if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The compensation task's deadlines; the default ones if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// The compensation task's priority; the failed task's if absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::opt"
    )]
    pub priority: Option<i32>,
}

/// How often and how patiently a task is retried after a failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means never retry.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    #[serde(deserialize_with = "crate::whole::de")]
    pub max_attempts: u32,
    #[cfg_attr(feature = "openapi", schema(maximum = 2592000000_u64))]
    #[serde(deserialize_with = "crate::whole::de")]
    pub initial_backoff_ms: u64,
    /// Each retry waits this many times longer than the one before.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub backoff_multiplier: f64,
    /// At least `initial_backoff_ms`.
    #[cfg_attr(feature = "openapi", schema(maximum = 2592000000_u64))]
    #[serde(deserialize_with = "crate::whole::de")]
    pub max_backoff_ms: u64,
    /// Fraction of the backoff, in `[0, 1]`, that is randomly taken off (full jitter at 1).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1))]
    pub jitter: f64,
    /// Error kinds that fail the task at once, whatever attempts are left (at most 64, each 1
    /// to 128 letters, digits and `-_.:/`).
    #[cfg_attr(
        feature = "openapi",
        schema(max_items = 64, value_type = Vec<crate::openapi::NameSchema>)
    )]
    pub non_retryable: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 1_000,
            backoff_multiplier: 2.0,
            max_backoff_ms: 60_000,
            jitter: 0.2,
            non_retryable: Vec::new(),
        }
    }
}

impl RetryPolicy {
    fn validate(&self) -> Result<(), SpecError> {
        if !(1..=ATTEMPTS_MAX).contains(&self.max_attempts) {
            return Err(SpecError::new(
                "retry.max_attempts",
                format!("between 1 and {ATTEMPTS_MAX}"),
            ));
        }
        check_duration("retry.initial_backoff_ms", self.initial_backoff_ms, false)?;
        check_duration("retry.max_backoff_ms", self.max_backoff_ms, false)?;
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(SpecError::new(
                "retry.max_backoff_ms",
                "at least retry.initial_backoff_ms",
            ));
        }
        if !(self.backoff_multiplier.is_finite()
            && (1.0..=100.0).contains(&self.backoff_multiplier))
        {
            return Err(SpecError::new(
                "retry.backoff_multiplier",
                "a number between 1 and 100",
            ));
        }
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            return Err(SpecError::new("retry.jitter", "a number between 0 and 1"));
        }
        if self.non_retryable.len() > NON_RETRYABLE_KINDS_MAX {
            return Err(SpecError::new(
                "retry.non_retryable",
                format!("at most {NON_RETRYABLE_KINDS_MAX} error kinds"),
            ));
        }
        for kind in &self.non_retryable {
            validate_name("retry.non_retryable[]", kind)?;
        }
        Ok(())
    }
}

/// Watchdog deadlines, each in milliseconds; `None` disables that deadline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Timeouts {
    /// From becoming ready (`Pending`) to `Executing`; expiry fails the attempt.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2592000000_u64))]
    #[serde(deserialize_with = "crate::whole::opt")]
    pub schedule_to_start_ms: Option<u64>,
    /// From assignment to `execution_started`; expiry takes the task back from a silent agent
    /// and makes it `Pending` again, without using up an attempt.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2592000000_u64))]
    #[serde(deserialize_with = "crate::whole::opt")]
    pub start_ms: Option<u64>,
    /// From `execution_started` to a result; expiry fails the attempt.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2592000000_u64))]
    #[serde(deserialize_with = "crate::whole::opt")]
    pub start_to_close_ms: Option<u64>,
    /// Longest silence between heartbeats while executing; expiry fails the attempt.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2592000000_u64))]
    #[serde(deserialize_with = "crate::whole::opt")]
    pub heartbeat_ms: Option<u64>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            schedule_to_start_ms: None,
            start_ms: Some(60_000),
            start_to_close_ms: Some(3_600_000),
            heartbeat_ms: Some(60_000),
        }
    }
}

impl Timeouts {
    fn validate(&self) -> Result<(), SpecError> {
        let fields = [
            ("timeouts.schedule_to_start_ms", self.schedule_to_start_ms),
            ("timeouts.start_ms", self.start_ms),
            ("timeouts.start_to_close_ms", self.start_to_close_ms),
            ("timeouts.heartbeat_ms", self.heartbeat_ms),
        ];
        for (field, value) in fields {
            if let Some(ms) = value {
                check_duration(field, ms, true)?;
            }
        }
        Ok(())
    }
}

/// A spec field out of bounds: which field, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: expected {expected}")]
pub struct SpecError {
    pub field: String,
    pub expected: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, expected: impl Into<String>) -> SpecError {
        SpecError {
            field: field.into(),
            expected: expected.into(),
        }
    }
}

fn check_duration(field: &str, ms: u64, positive: bool) -> Result<(), SpecError> {
    if ms > DURATION_MAX_MS || (positive && ms == 0) {
        let low = if positive { 1 } else { 0 };
        return Err(SpecError::new(
            field,
            format!("milliseconds between {low} and {DURATION_MAX_MS}"),
        ));
    }
    Ok(())
}

/// A name that is a segment of URL paths (schedules, triggers): a name as [`validate_name`]
/// takes it, but neither `.` nor `..`, which clients resolve as dot-segments, so no request
/// could address it.
pub fn validate_path_name(field: &str, name: &str) -> Result<(), SpecError> {
    validate_name(field, name)?;
    if is_dot_segment(name) {
        return Err(SpecError::new(
            field,
            format!("a name other than `.` and `..`, which a URL path cannot hold, got {name:?}"),
        ));
    }
    Ok(())
}

/// `.` or `..`: what URL clients resolve away in a path.
pub fn is_dot_segment(name: &str) -> bool {
    matches!(name, "." | "..")
}

/// Keys, capabilities and error kinds: 1 to 128 bytes of letters, digits and `-_.:/`; a task
/// key may end in an index `[N]` (the tasks a `for_each` expands into).
pub fn validate_name(field: &str, name: &str) -> Result<(), SpecError> {
    let base = match name.strip_suffix(']').and_then(|n| n.rsplit_once('[')) {
        Some((base, index))
            if matches!(field, "key" | "depends_on[]" | "compensation.key")
                && !index.is_empty()
                && index.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => name,
    };
    let ok = !base.is_empty()
        && base.len() <= KEY_LEN_MAX
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("1 to {KEY_LEN_MAX} characters from letters, digits and `-_.:/`, got {name:?}"),
        ))
    }
}
