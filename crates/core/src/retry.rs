//! Exponential backoff with a cap and seeded jitter.
//!
//! The jitter is a pure function of the task's seed and the attempt, so replaying a history
//! schedules the retry at exactly the same moment.

use crate::spec::RetryPolicy;

/// How long to wait after `attempt` (from 1) failed before the next one starts.
///
/// `initial * multiplier^(attempt-1)`, capped at `max_backoff_ms`, then reduced by up to
/// `jitter` of itself, the fraction drawn from `seed` and `attempt`.
pub fn backoff_ms(policy: &RetryPolicy, attempt: u32, seed: u64) -> u64 {
    let exponent = attempt.saturating_sub(1).min(1_000) as i32;
    let raw = policy.initial_backoff_ms as f64 * policy.backoff_multiplier.powi(exponent);
    let capped = raw.min(policy.max_backoff_ms as f64);
    let fraction = unit_interval(splitmix64(seed ^ u64::from(attempt).wrapping_mul(GOLDEN)));
    let jittered = capped * (1.0 - policy.jitter.clamp(0.0, 1.0) * fraction);
    jittered.round() as u64
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a well-mixed 64-bit hash of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps 64 random bits to `[0, 1)`.
fn unit_interval(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            backoff_multiplier: 2.0,
            max_backoff_ms: 1_000,
            jitter,
            non_retryable: Vec::new(),
        }
    }

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let p = policy(0.0);
        let waits: Vec<u64> = (1..=6).map(|a| backoff_ms(&p, a, 7)).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_depends_on_the_seed() {
        let p = policy(0.5);
        let waits: Vec<u64> = (0..200).map(|seed| backoff_ms(&p, 3, seed)).collect();
        assert!(waits.iter().all(|&w| (200..=400).contains(&w)), "{waits:?}");
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 50, "jitter should spread: {distinct:?}");
        assert_eq!(backoff_ms(&p, 3, 42), backoff_ms(&p, 3, 42));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(backoff_ms(&policy(0.0), u32::MAX, 1), 1_000);
    }
}
