//! The embedded default: one SQLite file in WAL mode, `synchronous=FULL` unless asked otherwise.
//!
//! All writes go through one writer thread. It takes every write waiting in its queue (up to
//! [`crate::BATCH_WRITES_MAX`]), runs each in its own savepoint inside one transaction, commits once,
//! and only then answers the callers: that is the group commit, one disk flush for the batch.
//! Reads run on a small pool of read connections, which WAL lets proceed beside the writer.

mod backup;
mod commands;
mod counts;
mod error;
mod flow;
mod open;
mod reads;
mod recent;
mod retention;
mod writer;

pub use backup::{backup, BackupReport};
pub use open::{Durability, SqliteOptions, SqliteStore};
