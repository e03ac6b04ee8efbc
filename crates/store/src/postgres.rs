//! PostgreSQL backend: several engine processes share one database.
//!
//! Writes go through a bounded queue to three writer tasks (`writer.rs`), each owning one
//! connection with its statements prepared once (`conn.rs`). A writer takes every write
//! waiting in the queue (up to [`crate::BATCH_WRITES_MAX`]), runs them in one transaction,
//! adds the batch's changes to the per-state counters, commits once, and only then answers the
//! callers: the group commit, one WAL flush for the batch. While one writer commits, the next
//! gathers the following batch.
//!
//! A batch first locks, in id order, every task its transitions name and reads their versions
//! and states; it holds them until the commit (`commands.rs`). Each transition's
//! compare-and-set is checked against those (no round trip), and the writes of the whole
//! batch are pipelined: sent back to back with the next read or the COMMIT and run by
//! PostgreSQL in order, so a batch costs a few round trips, not a few per write. A conflict is
//! found before anything is written, so only submissions (whose duplicate keys show in the
//! insert's answer) need a savepoint. Should a statement fail anyway, the batch is rolled back
//! and run again carefully, by the same code with each command in its own savepoint, waiting
//! for every answer, like the SQLite backend, so the failing command alone fails.
//!
//! Invariants across processes:
//! - A transition is a compare-and-set: the task row is read `FOR UPDATE` and written only if
//!   its version is the record's `seq - 1`; a lost race is a [`crate::StoreError::Conflict`]
//!   for that record alone.
//! - Row locks are taken in a fixed order where the batch knows its rows up front (the tasks
//!   its transitions name, by id; its counter rows, by state, in a shard of its own), so
//!   batches of different processes rarely deadlock; a batch PostgreSQL still aborts as a
//!   deadlock or serialization failure runs again from the start, at most five runs in all.
//!   So does a batch whose connection failed before its COMMIT was sent, on a new connection;
//!   one whose connection failed during the COMMIT is answered
//!   [`crate::StoreError::OutcomeUnknown`].
//! - A claim locks its candidates with `FOR UPDATE SKIP LOCKED`, so two processes never hand
//!   out the same task for the same attempt.
//!
//! Reads run on a connection pool (`reads.rs`). Every connection (pool and writers) starts
//! with the store's schema as its `search_path`, so one database can hold several isolated
//! stores. Connections are made without TLS.

mod artifacts;
mod cluster;
mod commands;
mod conn;
mod connect;
mod error;
mod flow;
mod migrate;
mod reads;
mod retention;
mod schedules;
mod signals;
mod writer;

pub use connect::{PgOptions, PgStore};
