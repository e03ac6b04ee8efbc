//! Report batching: a [`Client`] made with [`Client::batching_reports`] sends its reports
//! through one background task, which sends whatever has queued while its previous batch was
//! in flight as one `POST /v1/reports`. A lone report goes at once; under load, reports
//! share requests (and the server's commits) without waiting on a timer.

use tokio::sync::{mpsc, oneshot};

use baton_api::{Report, ReportAnswer, REPORTS_PER_BATCH_MAX};

use crate::{Client, Result};

/// Most bytes of JSON one batch carries, well under the server's body limit (8 MiB) however
/// large the results in it; a report larger than this alone is sent as its own request.
const BATCH_BYTES_MAX: usize = 1024 * 1024;

/// A report's size as JSON.
fn size(report: &Report) -> usize {
    serde_json::to_vec(report).map_or(usize::MAX, |v| v.len())
}

struct Queued {
    report: Report,
    answer: oneshot::Sender<Result<ReportAnswer>>,
}

/// The handle a batching client sends through; its task ends when every handle is dropped.
#[derive(Debug)]
pub(crate) struct Batcher {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Batcher {
    /// Starts the batching task on the current Tokio runtime, sending with `client`.
    pub(crate) fn start(client: Client) -> Batcher {
        let (queue, mut queued) = mpsc::unbounded_channel::<Queued>();
        tokio::spawn(async move {
            let mut carried: Option<(Queued, usize)> = None;
            loop {
                let (first, first_bytes) = match carried.take() {
                    Some(c) => c,
                    None => match queued.recv().await {
                        Some(q) => {
                            let bytes = size(&q.report);
                            (q, bytes)
                        }
                        None => return,
                    },
                };
                if first_bytes > BATCH_BYTES_MAX {
                    // Too large to share a request: sent as its own.
                    let answer = client.send_report(first.report).await;
                    let _ = first.answer.send(answer);
                    continue;
                }
                let mut bytes = first_bytes;
                let mut batch = vec![first];
                while batch.len() < REPORTS_PER_BATCH_MAX {
                    let Ok(more) = queued.try_recv() else { break };
                    let more_bytes = size(&more.report);
                    if bytes + more_bytes > BATCH_BYTES_MAX {
                        carried = Some((more, more_bytes));
                        break;
                    }
                    bytes += more_bytes;
                    batch.push(more);
                }
                let (reports, answers): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|q| (q.report, q.answer)).unzip();
                match client.reports(&reports).await {
                    Ok(outcomes) => {
                        for (answer, outcome) in answers.into_iter().zip(outcomes) {
                            let _ = answer.send(outcome);
                        }
                    }
                    Err(e) => {
                        for answer in answers {
                            let _ = answer.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Batcher { queue }
    }

    /// Queues `report` for the next batch and waits for its own answer.
    pub(crate) async fn send(&self, report: Report) -> Result<ReportAnswer> {
        let (answer, answered) = oneshot::channel();
        if self.queue.send(Queued { report, answer }).is_err() {
            return Err(crate::ClientError::Local(
                "the report batcher stopped".into(),
            ));
        }
        answered.await.unwrap_or_else(|_| {
            Err(crate::ClientError::Local(
                "the report batcher stopped".into(),
            ))
        })
    }
}
