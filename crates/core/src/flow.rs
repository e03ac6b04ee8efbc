//! Flow control: the named rate limits a task draws from when it is claimed, and the
//! concurrency keys it holds while it is `Assigned` or `Executing`.
//!
//! A rate limit is a token bucket: `units` per `per_ms` milliseconds, refilled continuously and
//! holding at most `units`. A claim hands out a task only if every limit it names has the
//! task's units; an agent that reports what it really used (in the rate's `usage_unit`)
//! corrects the charge when the attempt ends. A concurrency key lets at most `max` tasks that
//! hold it be assigned or executing at once.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::SpecError;
use crate::usage::{Amount, Usage};
use crate::Task;

/// Most rate limits and most concurrency keys one task may name (each).
pub const FLOW_KEYS_MAX: usize = 8;
/// Longest key (rate limit name, or concurrency key once resolved), in bytes.
pub const FLOW_KEY_LEN_MAX: usize = 128;
/// Most units a limit holds or a task draws: a billion.
pub const LIMIT_UNITS_MAX: u64 = 1_000_000_000;
/// Longest refill period of a limit: one day.
pub const LIMIT_PER_MS_MAX: u64 = 86_400_000;

/// A named rate limit: at most `units` handed out per `per_ms` milliseconds (a token bucket that
/// refills continuously and holds at most `units`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Limit {
    /// Units the bucket holds when full, and refills per `per_ms`.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000000000_u64))]
    #[serde(deserialize_with = "crate::whole::de")]
    pub units: u64,
    /// The refill period in milliseconds.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86400000_u64))]
    #[serde(deserialize_with = "crate::whole::de")]
    pub per_ms: u64,
}

impl Limit {
    pub fn validate(&self) -> Result<(), SpecError> {
        if !(1..=LIMIT_UNITS_MAX).contains(&self.units) {
            return Err(SpecError::new(
                "units",
                format!("a whole number from 1 to {LIMIT_UNITS_MAX}"),
            ));
        }
        if !(1..=LIMIT_PER_MS_MAX).contains(&self.per_ms) {
            return Err(SpecError::new(
                "per_ms",
                format!("1 to {LIMIT_PER_MS_MAX} milliseconds (one day)"),
            ));
        }
        Ok(())
    }
}

/// Units a task draws from a named rate limit when it is claimed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateUse {
    /// The limit's name, as set with `PUT /v1/limits/{key}`; unknown names are refused at
    /// submission. 1 to 128 bytes without control characters, `{` or `}`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^[^{}\x00-\x1f\x7f-\x9f]*$"
        )
    )]
    pub key: String,
    /// Units drawn per claim (the estimate, when `usage_unit` is set).
    #[serde(default = "one", deserialize_with = "crate::whole::de")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 1000000000_u64, default = 1)
    )]
    pub units: u64,
    /// A usage unit the agent reports (e.g. `tokens`): when the attempt ends, the limit is
    /// charged what the agent reported in it (rounded up) instead of `units`, the difference
    /// taken or given back then. Without a report, `units` stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[a-z0-9_.-]{1,64}$"))]
    pub usage_unit: Option<String>,
}

fn one() -> u64 {
    1
}

/// A concurrency key the task holds while it is assigned or executing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConcurrencyKey {
    /// The key; it may name values of the task's input as `{/json/pointer}` (e.g.
    /// `tenant-{/tenant}`), filled in from the input it runs with (a string as is, another
    /// value as JSON, nothing found as an empty string). 1 to 128 bytes without control
    /// characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 128,
            pattern = r"^(?:[^{\x00-\x1f\x7f-\x9f]|\{/[^}\x00-\x1f\x7f-\x9f]*\})*$"
        )
    )]
    pub key: String,
    /// At most this many tasks holding the key are assigned or executing at once (counting by
    /// the `max` of the task being claimed).
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    #[serde(deserialize_with = "crate::whole::de")]
    pub max: u32,
}

/// A task's flow control with its keys filled in from its input: what claims are gated on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// `(limit, units)` drawn when claimed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate: Vec<(String, u64)>,
    /// `(key, max)` held while assigned or executing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub concurrency: Vec<(String, u32)>,
}

impl Flow {
    pub fn is_empty(&self) -> bool {
        self.rate.is_empty() && self.concurrency.is_empty()
    }
}

/// Checks a task spec's `rate` and `concurrency` lists.
pub(crate) fn validate(rate: &[RateUse], concurrency: &[ConcurrencyKey]) -> Result<(), SpecError> {
    if rate.len() > FLOW_KEYS_MAX {
        return Err(SpecError::new(
            "rate",
            format!("at most {FLOW_KEYS_MAX} rate limits"),
        ));
    }
    for (i, r) in rate.iter().enumerate() {
        validate_key(&format!("rate[{i}].key"), &r.key, false)?;
        if rate[..i].iter().any(|o| o.key == r.key) {
            return Err(SpecError::new(
                format!("rate[{i}].key"),
                format!("each limit once, but {:?} is listed twice", r.key),
            ));
        }
        if !(1..=LIMIT_UNITS_MAX).contains(&r.units) {
            return Err(SpecError::new(
                format!("rate[{i}].units"),
                format!("a whole number from 1 to {LIMIT_UNITS_MAX}"),
            ));
        }
        if let Some(unit) = &r.usage_unit {
            crate::usage::check_units(std::iter::once(unit), "usage").map_err(
                |(_, expected)| SpecError::new(format!("rate[{i}].usage_unit"), expected),
            )?;
        }
    }
    if concurrency.len() > FLOW_KEYS_MAX {
        return Err(SpecError::new(
            "concurrency",
            format!("at most {FLOW_KEYS_MAX} concurrency keys"),
        ));
    }
    for (i, c) in concurrency.iter().enumerate() {
        validate_key(&format!("concurrency[{i}].key"), &c.key, true)?;
        if concurrency[..i].iter().any(|o| o.key == c.key) {
            return Err(SpecError::new(
                format!("concurrency[{i}].key"),
                format!("each key once, but {:?} is listed twice", c.key),
            ));
        }
        if c.max == 0 {
            return Err(SpecError::new(
                format!("concurrency[{i}].max"),
                "at least 1 (0 would never let the task run)",
            ));
        }
    }
    Ok(())
}

/// A key: 1 to [`FLOW_KEY_LEN_MAX`] bytes without control characters; with `templated`, every
/// `{` opens a `{/json/pointer}` closed by `}`.
pub(crate) fn validate_key(field: &str, key: &str, templated: bool) -> Result<(), SpecError> {
    if key.is_empty() || key.len() > FLOW_KEY_LEN_MAX || key.chars().any(char::is_control) {
        return Err(SpecError::new(
            field,
            format!("1 to {FLOW_KEY_LEN_MAX} bytes without control characters, got {key:?}"),
        ));
    }
    if templated {
        let mut rest = key;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close) if after.starts_with('/') => {
                    rest = &after[close + 1..];
                }
                _ => {
                    return Err(SpecError::new(
                        field,
                        format!(
                            "a key whose `{{` each open a JSON pointer into the input closed \
                             by `}}` (e.g. \"tenant-{{/tenant}}\"), got {key:?}"
                        ),
                    ))
                }
            }
        }
    } else if key.contains(['{', '}']) {
        return Err(SpecError::new(
            field,
            format!("a limit's name (no `{{` or `}}`), got {key:?}"),
        ));
    }
    Ok(())
}

/// `template` with every `{/pointer}` replaced by what the pointer finds in `input`, cut to
/// [`FLOW_KEY_LEN_MAX`] bytes (at a character boundary).
pub fn fill_key(template: &str, input: Option<&Value>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        match input.and_then(|v| v.pointer(&after[..close])) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    if out.len() > FLOW_KEY_LEN_MAX {
        let mut end = FLOW_KEY_LEN_MAX;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// Whole units of `amount`, rounded up.
fn whole_units(amount: Amount) -> u64 {
    amount.0.div_ceil(1_000_000)
}

impl Task {
    /// The task's flow control, its keys filled in from the input it runs with; `None` without
    /// any.
    pub fn flow(&self) -> Option<Flow> {
        if self.spec.rate.is_empty() && self.spec.concurrency.is_empty() {
            return None;
        }
        let input = self.input();
        Some(Flow {
            rate: self
                .spec
                .rate
                .iter()
                .map(|r| (r.key.clone(), r.units))
                .collect(),
            concurrency: self
                .spec
                .concurrency
                .iter()
                .map(|c| (fill_key(&c.key, input), c.max))
                .collect(),
        })
    }

    /// The fairness group the task takes its turn in: its `fairness_key` filled in from its
    /// input, or its workflow.
    pub fn fairness_group(&self) -> String {
        match &self.spec.fairness_key {
            Some(key) => format!("key:{}", fill_key(key, self.input())),
            None => format!("workflow:{}", self.workflow),
        }
    }

    /// What an attempt that ended with `lease_usage` reported changes in the charge of each of
    /// the task's rate limits that names a `usage_unit`: the units reported (rounded up) less
    /// the estimate drawn at the claim, for the units reported at all.
    pub fn rate_corrections(&self, lease_usage: &Usage) -> Vec<(String, i64)> {
        self.spec
            .rate
            .iter()
            .filter_map(|r| {
                let used = lease_usage.get(r.usage_unit.as_ref()?)?;
                let delta = whole_units(*used) as i64 - r.units as i64;
                (delta != 0).then(|| (r.key.clone(), delta))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_filled_in_from_the_input() {
        let input = json!({"tenant": "acme", "n": 42, "deep": {"a": [1, "x"]}});
        assert_eq!(fill_key("tenant-{/tenant}", Some(&input)), "tenant-acme");
        assert_eq!(fill_key("{/n}:{/deep/a/1}", Some(&input)), "42:x");
        assert_eq!(fill_key("t-{/missing}", Some(&input)), "t-");
        assert_eq!(fill_key("plain", None), "plain");
        assert_eq!(fill_key(&"é".repeat(100), None).len(), 128);
    }

    #[test]
    fn bad_flow_control_names_the_field() {
        let rate = |key: &str, units| RateUse {
            key: key.into(),
            units,
            usage_unit: None,
        };
        let conc = |key: &str, max| ConcurrencyKey {
            key: key.into(),
            max,
        };
        let field = |r: Result<(), SpecError>| r.unwrap_err().field;
        assert_eq!(field(validate(&[rate("a", 0)], &[])), "rate[0].units");
        assert_eq!(
            field(validate(&[rate("a", 1), rate("a", 2)], &[])),
            "rate[1].key"
        );
        assert_eq!(field(validate(&[rate("a{", 1)], &[])), "rate[0].key");
        assert_eq!(field(validate(&[], &[conc("t", 0)])), "concurrency[0].max");
        assert_eq!(
            field(validate(&[], &[conc("t-{x}", 1)])),
            "concurrency[0].key"
        );
        assert_eq!(
            field(validate(&[], &[conc("t-{/x", 1)])),
            "concurrency[0].key"
        );
        assert_eq!(field(validate(&[], &[conc("", 1)])), "concurrency[0].key");
        assert!(validate(&[rate("openai", 5)], &[conc("tenant-{/t}", 3)]).is_ok());
        let limit = |units, per_ms| Limit { units, per_ms }.validate().map_err(|e| e.field);
        assert_eq!(limit(0, 1000), Err("units".to_owned()));
        assert_eq!(limit(10, 0), Err("per_ms".to_owned()));
        assert_eq!(limit(10, 1000), Ok(()));
    }
}
