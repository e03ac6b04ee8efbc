//! Deterministic simulation with injected faults: the real engine over the real SQLite store
//! (behind a fault-injecting `Store`), a manual clock, misbehaving agents, operators and
//! process restarts, all drawn from one seeded generator; every action is awaited before the
//! next, on a current-thread runtime, and the store runs the engine's concurrent calls one at a
//! time in their polling order, so a seed replays exactly (checked by `a_seed_replays_exactly`).
//! See `sim/world.rs` for the actions, the faults and the invariants.
//!
//! - `cargo test -p baton-engine --test simulation` runs `BATON_SIM_SEEDS` seeds (default 200)
//!   from `BATON_SIM_FIRST_SEED` (default 0) and prints totals with `--nocapture`;
//! - `BATON_SIM_SEED=<n>` runs that one seed (its whole trace is printed if it fails, or always
//!   with `BATON_SIM_TRACE=1`); `BATON_SIM_STEPS=<n>` fixes the number of steps.
//!
//! A failing seed is named in the panic message with the command that reproduces it.

mod sim;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use sim::world::{self, RunStats, Settings};

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
    )
}

fn settings() -> Settings {
    Settings {
        steps: env_u64("BATON_SIM_STEPS").map(|s| s as usize),
    }
}

fn reproduce(seed: u64) -> String {
    format!("reproduce with: BATON_SIM_SEED={seed} cargo test -p baton-engine --test simulation")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs the seeds, each on its own current-thread runtime (so that nothing but the seed decides
/// what happens), on up to `BATON_SIM_THREADS` threads (default: 2, or 1 on one core).
#[test]
fn seeded_simulations_keep_every_invariant() {
    let settings = settings();
    if let Some(seed) = env_u64("BATON_SIM_SEED") {
        let (result, trace) = runtime().block_on(world::run_traced(seed, settings));
        if result.is_err() || std::env::var_os("BATON_SIM_TRACE").is_some() {
            eprintln!("{trace}");
        }
        if let Err(message) = result {
            panic!(
                "simulation seed {seed} failed: {message}\n{}",
                reproduce(seed)
            );
        }
        return;
    }
    let count = env_u64("BATON_SIM_SEEDS").unwrap_or(200);
    let first = env_u64("BATON_SIM_FIRST_SEED").unwrap_or(0);
    let threads = env_u64("BATON_SIM_THREADS").map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get().min(2)),
        |n| n.max(1) as usize,
    );
    let started = Instant::now();
    let next = AtomicU64::new(first);
    let total = Mutex::new(RunStats::default());
    let failures: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= first + count || !failures.lock().unwrap().is_empty() {
                    return;
                }
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    runtime().block_on(world::run(seed, settings))
                }));
                let failure = match outcome {
                    Ok(Ok(o)) => {
                        total.lock().unwrap().add(&o.stats);
                        continue;
                    }
                    Ok(Err(f)) => format!(
                        "{}\n--- last lines of its trace ---\n{}",
                        f.message, f.trace_tail
                    ),
                    Err(panic) => format!(
                        "it panicked: {}",
                        panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("(no message)")
                    ),
                };
                failures.lock().unwrap().push((seed, failure));
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(seed, _)| *seed);
    if let Some((seed, failure)) = failures.first() {
        panic!(
            "simulation seed {seed} failed: {failure}\n{}",
            reproduce(*seed)
        );
    }
    let total = total.into_inner().unwrap();
    println!(
        "{count} seeds ({first}..{}) on {threads} threads in {:.1} s: {total:#?}",
        first + count,
        started.elapsed().as_secs_f64()
    );
    if count >= 20 {
        assert!(
            total.completed > 0 && total.restarts > 0 && total.faults_after > 0,
            "the runs exercised too little: {total:#?}"
        );
        assert!(
            total.signal_tasks > 0
                && total.sleeps > 0
                && total.delayed > 0
                && total.signals_delivered > 0
                && total.kept_signals_taken > 0
                && total.signals_repeated > 0
                && total.signals_refused > 0
                && total.schedule_ticks > 0,
            "the runs sent too few signals or timers: {total:#?}"
        );
        assert!(
            total.pauses > 0
                && total.resumes > 0
                && total.skips > 0
                && total.forced_failures > 0
                && total.reruns > 0,
            "the operators used too few controls: {total:#?}"
        );
    }
}

/// The same seed gives the same run: the same trace line for line, the same final state of
/// every task. On a difference, the first differing lines are shown.
#[tokio::test]
async fn a_seed_replays_exactly() {
    for seed in [7, 42, 1_001, 31_337] {
        let settings = Settings { steps: None };
        let (a, trace_a) = world::run_traced(seed, settings).await;
        let (b, trace_b) = world::run_traced(seed, settings).await;
        if let Err(message) = a.and(b) {
            panic!(
                "simulation seed {seed} failed: {message}\n{}",
                reproduce(seed)
            );
        }
        let (la, lb): (Vec<&str>, Vec<&str>) =
            (trace_a.lines().collect(), trace_b.lines().collect());
        if let Some(i) = (0..la.len().max(lb.len())).find(|&i| la.get(i) != lb.get(i)) {
            let from = i.saturating_sub(15);
            panic!(
                "seed {seed} played twice gave two different runs, from line {i}:\n--- first\n{}\n--- second\n{}",
                la[from..la.len().min(i + 5)].join("\n"),
                lb[from..lb.len().min(i + 5)].join("\n"),
            );
        }
    }
}
