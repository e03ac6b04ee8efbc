//! Replay: a task is the fold of its history. Replaying the recorded entries through the same
//! lifecycle rebuilds the task field for field; the first entry that breaks the lifecycle is
//! reported with its sequence number.

use serde::{Deserialize, Serialize};

use crate::apply::{apply, submit, Rejection};
use crate::event::{Event, EventKind};
use crate::ids::Timestamp;
use crate::task::Task;

/// One applied event, as the store keeps it. `seq` equals the task's version after the event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: u64,
    pub at: Timestamp,
    pub event: Event,
}

/// Why a history does not replay.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReplayError {
    #[error("the history is empty")]
    Empty,
    #[error("entry {seq} is `{event}`, but a history must start with `submitted`")]
    NotSubmitted { seq: u64, event: EventKind },
    #[error("entry {seq} is out of order: expected sequence number {expected}")]
    OutOfOrder { seq: u64, expected: u64 },
    #[error("entry {seq} breaks the lifecycle: {rejection}")]
    Rejected { seq: u64, rejection: Box<Rejection> },
}

/// Rebuilds a task from its history.
pub fn replay(history: &[HistoryEntry]) -> Result<Task, ReplayError> {
    let (first, rest) = history.split_first().ok_or(ReplayError::Empty)?;
    let Event::Submitted(submission) = &first.event else {
        return Err(ReplayError::NotSubmitted {
            seq: first.seq,
            event: first.event.kind(),
        });
    };
    check_seq(first.seq, 1)?;
    let mut task = submit(submission, first.at)
        .map_err(|r| rejected(first.seq, r))?
        .task;
    for entry in rest {
        check_seq(entry.seq, task.version + 1)?;
        task = apply(&task, &entry.event, entry.at)
            .map_err(|r| rejected(entry.seq, r))?
            .task;
    }
    Ok(task)
}

fn check_seq(seq: u64, expected: u64) -> Result<(), ReplayError> {
    if seq == expected {
        Ok(())
    } else {
        Err(ReplayError::OutOfOrder { seq, expected })
    }
}

fn rejected(seq: u64, rejection: Rejection) -> ReplayError {
    ReplayError::Rejected {
        seq,
        rejection: Box::new(rejection),
    }
}
