//! Engine nodes sharing one store tell each other what they committed: new ready work (wake
//! long-polling agents), new outbox items and timers (wake the leader's loops), and every
//! transition (so each node's event stream shows the whole cluster). Notices are batched and
//! best-effort: a lost one only delays, since every waiter also polls on a bounded interval.

use baton_store::NOTICE_BYTES_MAX;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::stream::TransitionEvent;

/// Pending outbound items before new ones are dropped (the fallback polls cover for them).
pub(crate) const OUTBOUND_MAX: usize = 16_384;
/// Most items gathered into one notice round.
const BATCH_MAX: usize = 256;

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

/// Takes what is waiting (at least `first`) and packs it into notices that fit. Each event is
/// encoded once, and a notice is written around the encoded events.
pub(crate) fn pack(node: Uuid, first: Outbound, rx: &mut mpsc::Receiver<Outbound>) -> Vec<String> {
    let mut items = vec![first];
    while items.len() < BATCH_MAX {
        match rx.try_recv() {
            Ok(item) => items.push(item),
            Err(_) => break,
        }
    }
    let (mut work, mut outbox, mut timers) = (false, false, false);
    let mut events: Vec<String> = Vec::new();
    for item in items {
        match item {
            Outbound::Work => work = true,
            Outbound::Outbox => outbox = true,
            Outbound::Timers => timers = true,
            Outbound::Event(ev) => events.extend(serde_json::to_string(&ev).ok()),
        }
    }
    let head = {
        let flags = Notice {
            node,
            work,
            outbox,
            timers,
            events: Vec::new(),
        };
        let mut head = serde_json::to_string(&flags).expect("a notice serialises");
        head.pop(); // the closing brace: the events go before it
        head
    };
    let mut notices = Vec::new();
    let mut events = events.into_iter().peekable();
    loop {
        let mut notice = head.clone();
        if events.peek().is_some() {
            notice.push_str(",\"events\":[");
            let mut first = true;
            while let Some(ev) =
                events.next_if(|ev| first || notice.len() + ev.len() + 3 <= NOTICE_BYTES_MAX)
            {
                if !first {
                    notice.push(',');
                }
                notice.push_str(&ev);
                first = false;
            }
            notice.push(']');
        }
        notice.push('}');
        notices.push(notice);
        if events.peek().is_none() {
            return notices;
        }
    }
}

/// Whether `payload` is a notice this node sent itself, told from its start without decoding
/// the rest (a notice's first field is its node).
pub(crate) fn sent_by(node: Uuid, payload: &str) -> bool {
    let mut id = Uuid::encode_buffer();
    let id = node.hyphenated().encode_lower(&mut id);
    payload
        .strip_prefix("{\"node\":\"")
        .and_then(|rest| rest.strip_prefix(&*id))
        .is_some_and(|rest| rest.starts_with('"'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{EventKind, StateKind, TaskId, TaskKey, Timestamp, WorkflowId};

    fn event(n: u64) -> TransitionEvent {
        TransitionEvent {
            task: TaskId(Uuid::from_u128(n as u128)),
            workflow: WorkflowId(Uuid::from_u128(7)),
            key: TaskKey(format!("task-{n}")),
            event: EventKind::ExecutionSucceeded,
            from: Some(StateKind::Executing),
            to: StateKind::Completed,
            version: 4,
            attempt: 1,
            at: Timestamp(n),
            agent: None,
            seq: n,
        }
    }

    #[test]
    fn notices_carry_every_event_in_order_within_the_size_limit() {
        let node = Uuid::from_u128(42);
        let (tx, mut rx) = mpsc::channel(1_000);
        for n in 1..200 {
            tx.try_send(Outbound::Event(event(n))).unwrap();
        }
        tx.try_send(Outbound::Work).unwrap();
        let notices = pack(node, Outbound::Event(event(0)), &mut rx);
        assert!(notices.len() > 1, "200 events do not fit in one notice");
        let mut seen = Vec::new();
        for payload in &notices {
            assert!(payload.len() <= NOTICE_BYTES_MAX, "{} bytes", payload.len());
            assert!(sent_by(node, payload));
            assert!(!sent_by(Uuid::from_u128(43), payload));
            let notice: Notice = serde_json::from_str(payload).unwrap();
            assert_eq!(notice.node, node);
            assert!(notice.work);
            assert!(!notice.outbox && !notice.timers);
            seen.extend(notice.events);
        }
        assert_eq!(seen, (0..200).map(event).collect::<Vec<_>>());
    }

    #[test]
    fn a_notice_without_events_carries_its_flags() {
        let node = Uuid::from_u128(42);
        let (_tx, mut rx) = mpsc::channel(1);
        let notices = pack(node, Outbound::Timers, &mut rx);
        assert_eq!(notices.len(), 1);
        let notice: Notice = serde_json::from_str(&notices[0]).unwrap();
        assert!(notice.timers && !notice.work && notice.events.is_empty());
        assert!(sent_by(node, &notices[0]));
        assert!(!sent_by(
            node,
            "{\"node\":\"00000000-0000-0000-0000-00000000002a0\"}"
        ));
    }
}
