//! What agents spend (named units: `tokens`, `usd`, …) and the budgets a workflow sets on it.
//!
//! Amounts are exact: millionths of a unit in a `u64`, written in JSON as plain numbers (at most
//! six decimals), so sums never drift and a history replays to the same totals.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Millionths in one unit.
const MICROS: u64 = 1_000_000;
/// The largest amount one report or budget may carry: a trillion units.
pub const AMOUNT_MAX: f64 = 1e12;
/// Most units one report, one task (all its reports together) or one workflow's budgets may
/// name.
pub const UNITS_MAX: usize = 32;
/// Longest unit name, in bytes.
pub const UNIT_LEN_MAX: usize = 64;

/// An exact, non-negative amount of a unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub u64);

impl Amount {
    /// `x` units, if it is a finite number from 0 to [`AMOUNT_MAX`].
    pub fn of(x: f64) -> Option<Amount> {
        (x.is_finite() && (0.0..=AMOUNT_MAX).contains(&x))
            .then(|| Amount((x * MICROS as f64).round() as u64))
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / MICROS as f64
    }

    pub fn saturating_add(self, other: Amount) -> Amount {
        Amount(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / MICROS, self.0 % MICROS);
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let frac = format!("{frac:06}");
        write!(f, "{whole}.{}", frac.trim_end_matches('0'))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(MICROS) {
            s.serialize_u64(self.0 / MICROS)
        } else {
            s.serialize_f64(self.as_f64())
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        let x = f64::deserialize(d)?;
        Amount::of(x).ok_or_else(|| {
            serde::de::Error::custom(format!("an amount from 0 to {AMOUNT_MAX:e}, not {x}"))
        })
    }
}

/// Amounts per unit.
pub type Usage = BTreeMap<String, Amount>;

/// What a workflow does once a unit's budget is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BudgetPolicy {
    /// The workflow pauses, its running tasks taken back from their agents (their next report
    /// is refused with `task_paused`): nothing of it runs until an operator raises the budget
    /// and resumes it.
    #[default]
    Pause,
    /// Every task of it that has not ended fails for good (error kind `budget_exceeded`).
    Fail,
    /// Every task of it that has not ended is cancelled.
    Cancel,
}

impl BudgetPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPolicy::Pause => "pause",
            BudgetPolicy::Fail => "fail",
            BudgetPolicy::Cancel => "cancel",
        }
    }
}

/// A workflow's budget on one unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Budget {
    /// The most the workflow's tasks may spend of the unit, all attempts together: a number
    /// above 0, at most six decimals counted.
    /// Above 0 (amounts count millionths), at most 1e12.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = f64, minimum = 0.000001, maximum = 1000000000000.0)
    )]
    pub limit: Amount,
    #[serde(default)]
    pub policy: BudgetPolicy,
}

/// Budgets per unit.
pub type Budgets = BTreeMap<String, Budget>;

/// A unit name that is not well formed, or too many units: the field and what was expected.
pub fn check_units<'u>(
    units: impl ExactSizeIterator<Item = &'u String>,
    field: &str,
) -> Result<(), (String, String)> {
    if units.len() > UNITS_MAX {
        return Err((field.to_owned(), format!("at most {UNITS_MAX} units")));
    }
    for unit in units {
        let ok = !unit.is_empty()
            && unit.len() <= UNIT_LEN_MAX
            && unit
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !ok {
            return Err((
                format!("{field}.{unit}"),
                format!(
                    "a unit name of 1 to {UNIT_LEN_MAX} lowercase letters, digits, `_`, `.` or \
                     `-` (e.g. `tokens`, `usd`)"
                ),
            ));
        }
    }
    Ok(())
}

/// Takes in `reported`, what the agent says it has spent so far under its current lease:
/// `lease` (spent under it before) moves up to it, unit by unit, and what it went up by is
/// added to `total` and answered. A report that says less than before changes nothing: the
/// counts are cumulative, so a report sent twice counts once.
pub fn take_report(total: &mut Usage, lease: &mut Usage, reported: &Usage) -> Usage {
    let mut added = Usage::new();
    for (unit, &now) in reported {
        let before = lease.get(unit).copied().unwrap_or_default();
        if now > before {
            let delta = Amount(now.0 - before.0);
            lease.insert(unit.clone(), now);
            let sum = total.entry(unit.clone()).or_default();
            *sum = sum.saturating_add(delta);
            added.insert(unit.clone(), delta);
        }
    }
    added
}

/// The first unit whose budget `spent` has reached, with its budget and what was spent.
pub fn reached<'b>(
    budgets: &'b Budgets,
    spent: &Usage,
) -> Option<(&'b String, &'b Budget, Amount)> {
    budgets.iter().find_map(|(unit, b)| {
        let s = spent.get(unit).copied().unwrap_or_default();
        (s >= b.limit).then_some((unit, b, s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_and_read_as_they_were_written() {
        let a: Amount = serde_json::from_str("0.012").unwrap();
        assert_eq!(a, Amount(12_000));
        assert_eq!(serde_json::to_string(&a).unwrap(), "0.012");
        assert_eq!(a.to_string(), "0.012");
        let sum = (0..1000).fold(Amount::default(), |s, _| {
            s.saturating_add(Amount::of(0.001).unwrap())
        });
        assert_eq!(sum.to_string(), "1");
        assert_eq!(serde_json::to_string(&sum).unwrap(), "1");
        for bad in ["-1", "1e13", "\"3\""] {
            assert!(serde_json::from_str::<Amount>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cumulative_reports_count_each_amount_once() {
        let (mut total, mut lease) = (Usage::new(), Usage::new());
        let report = |t: u64| Usage::from([("tokens".to_owned(), Amount(t * MICROS))]);
        assert_eq!(
            take_report(&mut total, &mut lease, &report(100)),
            report(100)
        );
        assert!(
            take_report(&mut total, &mut lease, &report(100)).is_empty(),
            "sent twice"
        );
        assert!(
            take_report(&mut total, &mut lease, &report(50)).is_empty(),
            "went down"
        );
        assert_eq!(
            take_report(&mut total, &mut lease, &report(130)),
            report(30)
        );
        assert_eq!(total, report(130));
        // A new lease counts from zero again; the total goes on.
        lease.clear();
        take_report(&mut total, &mut lease, &report(20));
        assert_eq!(total, report(150));
    }

    #[test]
    fn unit_names_are_checked() {
        let ok = [
            "tokens".to_owned(),
            "usd".to_owned(),
            "gpt-4o.input_tokens".to_owned(),
        ];
        assert!(check_units(ok.iter(), "usage").is_ok());
        let bad = ["Tokens".to_owned()];
        assert_eq!(
            check_units(bad.iter(), "usage").unwrap_err().0,
            "usage.Tokens"
        );
    }
}
