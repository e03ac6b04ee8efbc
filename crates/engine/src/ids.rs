//! Ids and seeds as a dependency, like the clock: random in production, drawn from one seed
//! in tests and the simulation, so that a run replays exactly.

use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// Where the engine takes new ids (tasks, workflows, agents, leases, its node) and the seeds
/// of tasks' retry jitter.
pub trait IdSource: Send + Sync + 'static {
    /// A new id, ordered after the ids this source made before (UUIDv7 layout).
    fn id(&self) -> Uuid;
    /// A new seed for a task's retry jitter.
    fn seed(&self) -> u64;
}

/// UUIDv7 ids from the system clock and random bits; random seeds.
#[derive(Clone, Copy, Debug, Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn id(&self) -> Uuid {
        Uuid::now_v7()
    }

    fn seed(&self) -> u64 {
        Uuid::new_v4().as_u64_pair().0
    }
}

/// Ids and seeds drawn from one seed: the same seed gives the same sequence. Ids keep the
/// UUIDv7 layout, their timestamp field counting up from the epoch, so they stay ordered.
#[derive(Debug)]
pub struct SeededIds {
    state: AtomicU64,
    made: AtomicU64,
}

impl SeededIds {
    pub fn new(seed: u64) -> SeededIds {
        SeededIds {
            state: AtomicU64::new(seed),
            made: AtomicU64::new(0),
        }
    }

    /// splitmix64: a well-mixed 64-bit stream from a counter.
    fn next(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl IdSource for SeededIds {
    fn id(&self) -> Uuid {
        let n = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&self.next().to_le_bytes());
        random[8..].copy_from_slice(&self.next().to_le_bytes()[..2]);
        uuid::Builder::from_unix_timestamp_millis(n, &random).into_uuid()
    }

    fn seed(&self) -> u64 {
        self.next()
    }
}
