//! The numbered stream of accepted transitions a node publishes, and the log of the latest
//! ones that lets a subscriber resume where it stopped. Data only: the engine's `events`
//! module feeds it and the cluster's notices carry its events between nodes.

use std::collections::VecDeque;

use baton_core::{AgentId, StateKind, TaskId, TaskKey, Timestamp, WorkflowId};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

/// Most subscribers' backlog of transition events before the slowest one lags.
pub const EVENT_BACKLOG_MAX: usize = 16_384;

/// One accepted transition, as published to subscribers after it is durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransitionEvent {
    pub task: TaskId,
    pub workflow: WorkflowId,
    pub key: TaskKey,
    pub event: baton_core::EventKind,
    pub from: Option<StateKind>,
    pub to: StateKind,
    pub version: u64,
    pub attempt: u32,
    pub at: Timestamp,
    pub agent: Option<AgentId>,
    /// Its number in this node's stream (see `Engine::subscribe_from`); a number skipped
    /// stands for transitions this node may not have seen (another node's, while its notices
    /// were lost).
    #[serde(default)]
    pub seq: u64,
}

/// A place in one node's stream of transitions, to resume it from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamPosition {
    /// The node (the engine process) whose stream it is.
    pub node: Uuid,
    /// The last transition received.
    pub seq: u64,
}

/// A subscription to the transitions: those missed since the position asked for, then live.
pub struct Subscription {
    /// Published after the position asked for and before subscribing, in order.
    pub backlog: Vec<TransitionEvent>,
    /// The `seq` the next transition should have; `None` when unknown (the position asked
    /// for was another process's stream): the subscriber may have missed some.
    pub expected: Option<u64>,
    pub live: broadcast::Receiver<TransitionEvent>,
}

/// The latest transitions published on this node, numbered.
pub(crate) struct EventLog {
    next: u64,
    recent: VecDeque<TransitionEvent>,
}

impl EventLog {
    pub(crate) fn new() -> EventLog {
        EventLog {
            next: 1,
            recent: VecDeque::new(),
        }
    }

    /// Numbers `ev`, keeps it for resuming subscribers, and sends it to the live ones.
    pub(crate) fn emit(
        &mut self,
        mut ev: TransitionEvent,
        live: &broadcast::Sender<TransitionEvent>,
    ) {
        ev.seq = self.next;
        self.next += 1;
        if self.recent.len() == EVENT_BACKLOG_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(ev.clone());
        let _ = live.send(ev);
    }

    /// Transitions may have been missed (other nodes' notices were lost): skips a number.
    pub(crate) fn skip(&mut self) {
        self.next += 1;
    }

    /// A subscription from `after` on `node`'s stream; `live` was subscribed while this log
    /// was locked, so each transition reaches it once, in the backlog or live.
    pub(crate) fn subscribe_from(
        &self,
        node: Uuid,
        after: Option<StreamPosition>,
        live: broadcast::Receiver<TransitionEvent>,
    ) -> Subscription {
        match after {
            Some(p) if p.node == node && p.seq < self.next => Subscription {
                backlog: self
                    .recent
                    .iter()
                    .filter(|e| e.seq > p.seq)
                    .cloned()
                    .collect(),
                expected: Some(p.seq + 1),
                live,
            },
            Some(_) => Subscription {
                backlog: Vec::new(),
                expected: None,
                live,
            },
            None => Subscription {
                backlog: Vec::new(),
                expected: Some(self.next),
                live,
            },
        }
    }
}
