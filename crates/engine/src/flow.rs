//! Flow control: named rate limits operators set, and the check that every limit a submitted
//! task draws from exists and can hold what it draws. Claims enforce limits and concurrency
//! keys in the store (see `baton_store::flow`).

use std::collections::HashMap;

use baton_core::flow::FLOW_KEY_LEN_MAX;
use baton_core::{Limit, TaskSpec};
use baton_store::{LimitRecord, LimitWrite, Store};
use tracing::info;

use crate::engine::Engine;

/// Most named rate limits: all of them fit in one read ([`baton_store::PAGE_ROWS_MAX`]).
pub const LIMITS_MAX: usize = baton_store::PAGE_ROWS_MAX;
use crate::error::EngineError;

/// Checks a limit's name as given in a path or request: what a task's `rate[].key` may be.
pub fn check_limit_key(key: &str) -> Result<(), EngineError> {
    if key.is_empty() || key.len() > FLOW_KEY_LEN_MAX || key.chars().any(char::is_control) {
        return Err(EngineError::invalid(
            "key",
            format!("1 to {FLOW_KEY_LEN_MAX} bytes without control characters"),
        ));
    }
    if key.contains(['{', '}']) {
        return Err(EngineError::invalid("key", "a name without `{` or `}`"));
    }
    if baton_core::spec::is_dot_segment(key) {
        return Err(EngineError::invalid(
            "key",
            "a name other than `.` and `..`, which a URL path cannot hold",
        ));
    }
    Ok(())
}

impl<S: Store + 'static> Engine<S> {
    /// Creates or changes the named rate limit; `true` if it was created. What a changed limit
    /// had handed out stays drawn (a bigger limit has its extra units at once); tasks parked on
    /// it are looked at again.
    pub async fn set_limit(&self, key: String, limit: Limit) -> Result<bool, EngineError> {
        check_limit_key(&key)?;
        limit
            .validate()
            .map_err(|e| EngineError::invalid(e.field, e.expected))?;
        // Every limit is read at once (for listings and for checking submissions), so there
        // are at most as many as one read returns.
        let limits = self.limits().await?;
        if limits.len() >= LIMITS_MAX && !limits.iter().any(|l| l.key == key) {
            return Err(EngineError::invalid(
                "key",
                format!(
                    "one of the {LIMITS_MAX} limits that exist (the most there may be): delete \
                     one first (DELETE /v1/limits/{{key}})"
                ),
            ));
        }
        let existed = self
            .inner
            .store
            .write_limit(LimitWrite {
                key: key.clone(),
                limit: Some(limit),
                now: self.now(),
            })
            .await?;
        info!(limit = %key, units = limit.units, per_ms = limit.per_ms, "rate limit set");
        Ok(!existed)
    }

    /// Deletes the named rate limit: tasks that draw from it are no longer held by it.
    pub async fn delete_limit(&self, key: String) -> Result<(), EngineError> {
        let existed = self
            .inner
            .store
            .write_limit(LimitWrite {
                key: key.clone(),
                limit: None,
                now: self.now(),
            })
            .await?;
        if !existed {
            return Err(EngineError::LimitNotFound(key));
        }
        info!(limit = %key, "rate limit deleted");
        Ok(())
    }

    /// Every named rate limit, its bucket as of now.
    pub async fn limits(&self) -> Result<Vec<LimitRecord>, EngineError> {
        Ok(self.inner.store.limits(self.now()).await?)
    }

    pub async fn limit(&self, key: &str) -> Result<LimitRecord, EngineError> {
        self.limits()
            .await?
            .into_iter()
            .find(|l| l.key == key)
            .ok_or_else(|| EngineError::LimitNotFound(key.to_owned()))
    }

    /// Refuses specs (given at `field[i]`) that draw from a limit that does not exist, or more
    /// units than it holds.
    pub(crate) async fn check_limit_refs(
        &self,
        specs: &[TaskSpec],
        field: &str,
    ) -> Result<(), EngineError> {
        if specs.iter().all(|s| s.rate.is_empty()) {
            return Ok(());
        }
        let limits: HashMap<String, Limit> = self
            .limits()
            .await?
            .into_iter()
            .map(|l| (l.key, l.limit))
            .collect();
        for (i, spec) in specs.iter().enumerate() {
            for (j, rate) in spec.rate.iter().enumerate() {
                match limits.get(&rate.key) {
                    None => {
                        return Err(EngineError::invalid(
                            format!("{field}[{i}].rate[{j}].key"),
                            format!(
                                "the name of a rate limit (set with PUT /v1/limits/{{key}}), not \
                                 {:?}",
                                rate.key
                            ),
                        ))
                    }
                    Some(limit) if rate.units > limit.units => {
                        return Err(EngineError::invalid(
                            format!("{field}[{i}].rate[{j}].units"),
                            format!(
                                "at most the {} units limit {:?} holds",
                                limit.units, rate.key
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}
