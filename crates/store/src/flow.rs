//! Flow control as the store keeps it: named rate limits (token buckets in `limits`), the
//! tasks assigned or executing per concurrency key (`concurrency_held`), and pending tasks a
//! claim parked because a key had no room.
//!
//! Every change happens in the transactions that claim and move tasks, so limits and keys hold
//! across restarts and across the nodes sharing a PostgreSQL store (claims lock the key rows
//! they read). A claim that finds a candidate whose key has no room parks it: the task leaves
//! the claim index until a slot of its concurrency key frees (the best parked task comes back
//! at once) or until its limit has its units again (its `parked_until`); claims then read on,
//! so tasks of a full key never stand in front of the others.

use std::collections::HashMap;

use baton_core::{Flow, Limit, Timestamp};
use serde::{Deserialize, Serialize};

use crate::decide::Bucket;

/// A named rate limit and its bucket now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitRecord {
    pub key: String,
    pub limit: Limit,
    /// Whole units a claim could draw now.
    pub available: u64,
    /// When the bucket is full again (now if it is).
    pub full_at: Timestamp,
    /// Pending tasks parked until it has their units.
    pub parked: u64,
    pub updated_at: Timestamp,
}

/// A change to a named rate limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitWrite {
    pub key: String,
    /// The new limit; `None` deletes it.
    pub limit: Option<Limit>,
    pub now: Timestamp,
}

/// What keeps a pending task from being handed out, as its keys stand now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FlowHold {
    /// The named limit has fewer units than the task draws until `until`.
    Rate {
        key: String,
        units: u64,
        available: u64,
        until: Timestamp,
    },
    /// `held` tasks with the key are assigned or executing, and the task allows `max`.
    Concurrency { key: String, held: u64, max: u32 },
}

/// The state of a task's keys, as a read found them: its limits' buckets (those that exist)
/// and the tasks holding its concurrency keys.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyStates {
    pub(crate) buckets: HashMap<String, Bucket>,
    pub(crate) held: HashMap<String, i64>,
    /// When a slot of each concurrency key was last freed.
    pub(crate) freed: HashMap<String, i64>,
}

impl KeyStates {
    /// The first key of `flow` without room at `now`, if any.
    pub(crate) fn hold(&self, flow: &Flow, now: Timestamp) -> Option<FlowHold> {
        for (key, max) in &flow.concurrency {
            let held = self.held.get(key).copied().unwrap_or(0).max(0) as u64;
            if held >= u64::from(*max) {
                return Some(FlowHold::Concurrency {
                    key: key.clone(),
                    held,
                    max: *max,
                });
            }
        }
        let now = now.0 as i64;
        for (key, units) in &flow.rate {
            let Some(mut bucket) = self.buckets.get(key).copied() else {
                continue;
            };
            bucket.refill(now);
            if let Some(until) = bucket.short_until(*units) {
                return Some(FlowHold::Rate {
                    key: key.clone(),
                    units: *units,
                    available: bucket.available() as u64,
                    until: Timestamp(until as u64),
                });
            }
        }
        None
    }
}

/// A limit's record from its row, its bucket refilled to `now`.
pub(crate) fn limit_record(
    key: String,
    bucket: Bucket,
    parked: u64,
    updated_at: i64,
    now: Timestamp,
) -> LimitRecord {
    let mut b = bucket;
    b.refill(now.0 as i64);
    LimitRecord {
        key,
        limit: Limit {
            units: b.units as u64,
            per_ms: b.per_ms as u64,
        },
        available: b.available() as u64,
        full_at: Timestamp(b.full_at() as u64),
        parked,
        updated_at: Timestamp(updated_at as u64),
    }
}
