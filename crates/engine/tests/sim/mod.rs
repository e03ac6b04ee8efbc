//! Deterministic simulation of the engine: see `world.rs` for the actions, faults and
//! invariants, `store.rs` for the fault-injecting store, `rng.rs` for the seeded generator.

pub mod rng;
pub mod store;
pub mod world;

use std::sync::Mutex;

/// What happened in one run, line by line, labelled with workflow names and task keys (never
/// ids, which are drawn from the real clock and entropy): two runs of one seed must give the
/// same lines, and the last ones explain a failure.
#[derive(Default)]
pub struct Trace {
    lines: Mutex<Vec<String>>,
}

impl Trace {
    pub fn new() -> Trace {
        Trace::default()
    }

    pub fn push(&self, line: String) {
        self.lines.lock().expect("trace lock").push(line);
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().expect("trace lock");
        let from = lines.len().saturating_sub(n);
        lines[from..].join("\n")
    }
}
