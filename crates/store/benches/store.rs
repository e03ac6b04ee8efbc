//! Durable transitions per second against the number of concurrent writers (which sets the
//! group-commit batch size), claim latency, and the disk's raw fsync rate for comparison.
//!
//! `cargo bench -p baton-store` runs SQLite, and PostgreSQL too when
//! `BATON_BENCH_POSTGRES_URL` is set (each store in a fresh schema, dropped at the end).
//! `-- --quick`, or running it under `cargo test`, runs each point briefly, so that CI keeps
//! the benchmark from rotting.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::*;
use baton_store::postgres::{PgOptions, PgStore};
use baton_store::sqlite::SqliteStore;
use baton_store::*;
use uuid::Uuid;

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

fn caps() -> BTreeSet<Capability> {
    BTreeSet::from([Capability::from("bench")])
}

fn batch(n: usize) -> SubmitBatch {
    workload::independent_tasks(n, &caps(), now()).unwrap()
}

/// Latency of claiming one task at a time from a queue of `n`.
async fn claim_latency<S: Store>(store: &S, n: usize) -> (Duration, Duration) {
    store.submit(batch(n)).await.unwrap();
    let agent = AgentId(Uuid::now_v7());
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let got = store
            .claim(ClaimRequest {
                start: false,
                agent,
                capabilities: caps(),
                leases: vec![LeaseId(Uuid::now_v7())],
                now: now(),
                max_held: None,
            })
            .await
            .unwrap();
        samples.push(t.elapsed());
        assert_eq!(got.len(), 1);
    }
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

/// Raw fsync rate of the disk under `dir`: 4 KiB appends, each followed by `fdatasync`.
fn fsyncs_per_second(dir: &std::path::Path, span: Duration) -> f64 {
    let path = dir.join("fsync.probe");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let block = [7u8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < span {
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    let _ = std::fs::remove_file(path);
    n as f64 / started.elapsed().as_secs_f64()
}

async fn run<S: Store + 'static>(name: &str, open: impl Fn() -> S, span: Duration, claims: usize) {
    for writers in [1, 4, 16, 64, 256] {
        let store = Arc::new(open());
        let (tps, batch) = workload::concurrent_heartbeats(store, writers, span)
            .await
            .unwrap();
        println!("{name:<10} writers {writers:>4}: {tps:>9.0} durable transitions/s, {batch:>6.1} writes/commit");
    }
    let store = open();
    let (p50, p99) = claim_latency(&store, claims).await;
    println!("{name:<10} claim latency (1 task, queue of {claims}): p50 {p50:?}, p99 {p99:?}");
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` each point runs briefly.
    let quick =
        std::env::args().any(|a| a == "--quick") || !std::env::args().any(|a| a == "--bench");
    let span = if quick {
        Duration::from_millis(150)
    } else {
        Duration::from_secs(3)
    };
    let claims = if quick { 50 } else { 2_000 };
    let dir = tempfile::tempdir_in(std::env::var("BATON_BENCH_DIR").unwrap_or_else(|_| ".".into()))
        .unwrap();
    println!(
        "disk fsync: {:.0} fsync/s (4 KiB append + fdatasync)",
        fsyncs_per_second(dir.path(), span)
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let counter = std::sync::atomic::AtomicUsize::new(0);
        run(
            "sqlite",
            || {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                SqliteStore::open(dir.path().join(format!("bench-{n}.db"))).unwrap()
            },
            span,
            claims,
        )
        .await;
        if let Ok(url) = std::env::var("BATON_BENCH_POSTGRES_URL") {
            let mut stores = Vec::new();
            let mut schemas = Vec::new();
            for _ in 0..6 {
                let schema = format!("baton_bench_{}", Uuid::now_v7().simple());
                let options = PgOptions {
                    schema: Some(schema.clone()),
                    ..PgOptions::default()
                };
                stores.push(PgStore::open_with(&url, options).await.unwrap());
                schemas.push(schema);
            }
            let stores = std::sync::Mutex::new(stores);
            run(
                "postgres",
                || stores.lock().unwrap().pop().unwrap(),
                span,
                claims,
            )
            .await;
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            for schema in schemas {
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await
                    .unwrap();
            }
        }
    });
}
