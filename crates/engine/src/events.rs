//! The stream of accepted transitions: subscribers on this node (the API's event stream,
//! resumable from a position), and the exchange with the other nodes sharing the store
//! (what this node committed goes out as batched notices; theirs come in as wake-ups and
//! transitions for this node's subscribers).

use baton_core::{StateKind, Task};
use baton_store::Store;
use tokio::sync::{broadcast, mpsc};
use tracing::warn;

use crate::cluster::{Notice, Outbound};
use crate::engine::Engine;
use crate::stream::{StreamPosition, Subscription, TransitionEvent};

impl<S: Store + 'static> Engine<S> {
    /// Transition events from now on, after each is durable.
    pub fn subscribe(&self) -> broadcast::Receiver<TransitionEvent> {
        self.inner.events.subscribe()
    }

    /// Transition events after `after` (those still kept, at most
    /// [`crate::EVENT_BACKLOG_MAX`]), then from now on. A position of another process (or not
    /// yet reached) cannot be resumed: `expected` is then `None`.
    pub fn subscribe_from(&self, after: Option<StreamPosition>) -> Subscription {
        let log = self.inner.log.lock().expect("event log lock");
        log.subscribe_from(self.inner.node, after, self.inner.events.subscribe())
    }

    /// Publishes one durable transition: to this node's subscribers and to the other nodes.
    pub(crate) fn publish(
        &self,
        task: &Task,
        from: Option<StateKind>,
        event: baton_core::EventKind,
    ) {
        let ev = TransitionEvent {
            task: task.id,
            workflow: task.workflow,
            key: task.spec.key.clone(),
            event,
            from,
            to: task.kind(),
            version: task.version,
            attempt: task.attempt,
            at: task.updated_at,
            agent: task.state.lease().map(|l| l.agent),
            seq: 0,
        };
        if self.inner.outbound.is_some() {
            self.tell(Outbound::Event(ev.clone()));
        }
        self.emit(ev);
    }

    fn emit(&self, ev: TransitionEvent) {
        let mut log = self.inner.log.lock().expect("event log lock");
        log.emit(ev, &self.inner.events);
    }

    /// Tells the other nodes, if any; a full queue drops the item (they poll anyway).
    pub(crate) fn tell(&self, item: Outbound) {
        if let Some(tx) = &self.inner.outbound {
            let _ = tx.try_send(item);
        }
    }

    /// Sends what this node committed to the others, batched.
    pub(crate) async fn publish_loop(&self, mut rx: mpsc::Receiver<Outbound>) {
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let first = tokio::select! {
                item = rx.recv() => match item { Some(i) => i, None => return },
                _ = shutdown.changed() => return,
            };
            for payload in crate::cluster::pack(self.inner.node, first, &mut rx) {
                if let Err(e) = self.inner.store.notify(payload).await {
                    warn!(error = %e, "cannot notify the other nodes");
                }
            }
        }
    }

    /// Acts on what the other nodes committed: wake-ups, and their transitions for this
    /// node's subscribers.
    pub(crate) async fn listen_loop(&self, mut notices: broadcast::Receiver<String>) {
        let mut shutdown = self.inner.shutdown.subscribe();
        loop {
            let payload = tokio::select! {
                n = notices.recv() => n,
                _ = shutdown.changed() => return,
            };
            let notice = match payload {
                Ok(p) if p.is_empty() => None,
                Ok(p) if crate::cluster::sent_by(self.inner.node, &p) => continue,
                Ok(p) => match serde_json::from_str::<Notice>(&p) {
                    Ok(n) if n.node == self.inner.node => continue,
                    Ok(n) => Some(n),
                    Err(e) => {
                        warn!(error = %e, "unreadable notice from another node");
                        continue;
                    }
                },
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            match notice {
                // Some notices may be lost: look at everything again.
                None => {
                    self.inner.log.lock().expect("event log lock").skip();
                    self.inner.work.notify_waiters();
                    self.inner.outbox.notify_one();
                    self.inner.timers.poke();
                }
                Some(n) => {
                    if n.work {
                        self.inner.work.notify_waiters();
                    }
                    if n.outbox {
                        self.inner.outbox.notify_one();
                    }
                    if n.timers {
                        self.inner.timers.poke();
                    }
                    for ev in n.events {
                        self.emit(ev);
                    }
                }
            }
        }
    }
}
