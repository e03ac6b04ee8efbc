//! The watchdog's alarm: when the background loop must look at timers next, as the committed
//! transitions' timer effects say.

use std::sync::atomic::{AtomicU64, Ordering};

use baton_core::Timestamp;
use tokio::sync::Notify;

/// When the watchdog must look next, as the committed transitions' timer effects say: an
/// armed deadline or a scheduled retry earlier than the watchdog's planned wake-up wakes it;
/// a later one does not (it would find nothing due).
#[derive(Debug)]
pub(crate) struct TimerAlarm {
    /// Until when the watchdog sleeps; `u64::MAX` while it runs a round, so that whatever is
    /// armed meanwhile wakes it again.
    wake_at_ms: AtomicU64,
    wake: Notify,
}

impl Default for TimerAlarm {
    fn default() -> TimerAlarm {
        TimerAlarm {
            wake_at_ms: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
        }
    }
}

impl TimerAlarm {
    /// A timer at `at` was armed.
    pub(crate) fn arm(&self, at: Timestamp) {
        if at.0 < self.wake_at_ms.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// The watchdog starts a round: whatever is armed from now on wakes it again (the wake-up
    /// is stored until `notified` is awaited).
    pub(crate) fn round_started(&self) {
        self.wake_at_ms.store(u64::MAX, Ordering::Release);
    }

    /// The watchdog will sleep until `next`: only a timer armed earlier wakes it.
    pub(crate) fn sleeping_until(&self, next: Timestamp) {
        self.wake_at_ms.store(next.0, Ordering::Release);
    }

    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Timers may have changed elsewhere (another node): look again.
    pub(crate) fn poke(&self) {
        self.wake.notify_one();
    }
}
