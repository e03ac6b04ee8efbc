//! Engine nodes sharing one store tell each other what they committed: new ready work (wake
//! long-polling agents), new outbox items and timers (wake the leader's loops), and every
//! transition (so each node's event stream shows the whole cluster). Notices are batched and
//! best-effort: a lost one only delays, since every waiter also polls on a bounded interval.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::stream::TransitionEvent;

/// Pending outbound items before new ones are dropped (the fallback polls cover for them).
pub(crate) const OUTBOUND_MAX: usize = 16_384;
/// Most items gathered into one notice round.
const BATCH_MAX: usize = 256;
/// Longest notice payload sent (PostgreSQL accepts 8,000 bytes).
const NOTICE_BYTES_MAX: usize = 7_900;

/// Something this node wants the others to know.
#[derive(Clone, Debug)]
pub(crate) enum Outbound {
    Work,
    Outbox,
    Timers,
    Event(TransitionEvent),
}

/// One notice between nodes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Notice {
    pub node: Uuid,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub work: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outbox: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timers: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<TransitionEvent>,
}

/// Takes what is waiting (at least `first`) and packs it into notices that fit.
pub(crate) fn pack(node: Uuid, first: Outbound, rx: &mut mpsc::Receiver<Outbound>) -> Vec<String> {
    let mut items = vec![first];
    while items.len() < BATCH_MAX {
        match rx.try_recv() {
            Ok(item) => items.push(item),
            Err(_) => break,
        }
    }
    let mut notices = Vec::new();
    let mut current = Notice {
        node,
        ..Notice::default()
    };
    let mut size = 0;
    for item in items {
        match item {
            Outbound::Work => current.work = true,
            Outbound::Outbox => current.outbox = true,
            Outbound::Timers => current.timers = true,
            Outbound::Event(ev) => {
                let len = serde_json::to_string(&ev).map(|s| s.len() + 1).unwrap_or(0);
                if size + len > NOTICE_BYTES_MAX - 128 && !current.events.is_empty() {
                    notices.push(std::mem::replace(
                        &mut current,
                        Notice {
                            node,
                            ..Notice::default()
                        },
                    ));
                    size = 0;
                }
                size += len;
                current.events.push(ev);
            }
        }
    }
    notices.push(current);
    notices
        .into_iter()
        .filter_map(|n| serde_json::to_string(&n).ok())
        .collect()
}
