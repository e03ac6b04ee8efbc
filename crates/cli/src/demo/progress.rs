//! Following the workflow while it runs: counters fed by the event stream, a progress bar (or
//! plain lines when the output is not a terminal) fed by the counts endpoint, and the decision
//! that the workflow has ended.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_client::wire::Counts;
use baton_client::{Client, StreamItem};
use baton_core::{EventKind, StateKind};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use uuid::Uuid;

/// How often the counts are read.
const TICK: Duration = Duration::from_millis(100);
/// How often a plain progress line is printed when the output is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(1);
/// Consecutive ticks with every task ended and nothing changing before the run counts as
/// finished: effects (a compensation task, cancelled dependents) land just after the
/// transition that causes them.
const QUIET_TICKS: u32 = 3;
/// Failed tasks looked at per tick to tell a final failure from one waiting for its retry.
const FAILED_CHECKED_MAX: usize = 100;

/// What the event stream showed.
#[derive(Default)]
pub struct Live {
    pub transitions: AtomicU64,
    pub retries: AtomicU64,
    pub timeouts: AtomicU64,
    pub upstream_cancelled: AtomicU64,
    pub lagged: AtomicU64,
}

impl Live {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Counts the workflow's transitions from the event stream until aborted.
pub async fn count_events(client: Client, workflow: Uuid, live: Arc<Live>) {
    let Ok(mut events) = client.events(Some(workflow)).await else {
        return;
    };
    while let Some(Ok(item)) = events.next().await {
        match item {
            StreamItem::Transition(t) => {
                live.transitions.fetch_add(1, Ordering::Relaxed);
                let counter = match t.event {
                    EventKind::Retry => &live.retries,
                    EventKind::TimeoutExpired => &live.timeouts,
                    EventKind::UpstreamFailed => &live.upstream_cancelled,
                    _ => continue,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            StreamItem::Lagged(n) => {
                live.lagged.fetch_add(n, Ordering::Relaxed);
            }
            StreamItem::Workflow(_) => {}
        }
    }
}

/// How following the workflow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every task ended and nothing moved for a while.
    Settled,
    /// The deadline passed first.
    TimedOut,
    /// Ctrl-C.
    Interrupted,
}

/// Where progress goes.
pub struct Display {
    bar: Option<ProgressBar>,
    /// Plain lines go to stderr (JSON output keeps stdout for the summary) or stdout.
    plain_to_stderr: bool,
    last_plain: Option<Instant>,
    started: Instant,
}

impl Display {
    /// A bar when the chosen stream is a terminal, plain lines otherwise.
    pub fn new(to_stderr: bool, started: Instant) -> Display {
        let terminal = if to_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        let bar = terminal.then(|| {
            let target = if to_stderr {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::stdout()
            };
            let bar = ProgressBar::with_draw_target(Some(1), target);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner:.green} {elapsed:>3} [{bar:40.cyan/blue}] {pos}/{len} tasks ended\n  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(TICK);
            bar
        });
        Display {
            bar,
            plain_to_stderr: to_stderr,
            last_plain: None,
            started,
        }
    }

    fn show(&mut self, counts: &Counts, live: &Live) {
        let ended = counts.completed + counts.failed + counts.cancelled;
        let line = format!(
            "{} │ retries {} · timeouts {}",
            states(counts),
            Live::get(&live.retries),
            Live::get(&live.timeouts),
        );
        if let Some(bar) = &self.bar {
            bar.set_length(counts.total.max(1));
            bar.set_position(ended);
            bar.set_message(line);
            return;
        }
        if self.last_plain.is_some_and(|t| t.elapsed() < PLAIN_EVERY) {
            return;
        }
        self.last_plain = Some(Instant::now());
        let text = format!(
            "[{:>5.1}s] {ended}/{} tasks ended │ {line}",
            self.started.elapsed().as_secs_f64(),
            counts.total
        );
        if self.plain_to_stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
            let _ = std::io::stdout().flush();
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// `blocked 3 · pending 1 · …`, every state.
pub fn states(c: &Counts) -> String {
    StateKind::ALL
        .iter()
        .map(|s| format!("{} {}", s.as_str(), count_of(c, *s)))
        .collect::<Vec<_>>()
        .join(" · ")
}

pub fn count_of(c: &Counts, state: StateKind) -> u64 {
    match state {
        StateKind::Blocked => c.blocked,
        StateKind::Pending => c.pending,
        StateKind::Assigned => c.assigned,
        StateKind::Executing => c.executing,
        StateKind::Completed => c.completed,
        StateKind::Failed => c.failed,
        StateKind::Cancelled => c.cancelled,
    }
}

/// Shows progress until every task of the workflow has ended and things stay quiet, the
/// deadline passes, or Ctrl-C.
pub async fn follow(
    client: &Client,
    workflow: Uuid,
    live: &Live,
    display: &mut Display,
    deadline: Duration,
) -> End {
    let give_up = tokio::time::Instant::now() + deadline;
    let mut quiet = 0;
    let mut last: Option<Counts> = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = tokio::time::sleep_until(give_up) => return End::TimedOut,
            _ = &mut interrupted => return End::Interrupted,
        }
        let Ok(counts) = client.counts(Some(workflow)).await else {
            continue;
        };
        display.show(&counts, live);
        let open = counts.blocked + counts.pending + counts.assigned + counts.executing;
        let settled = open == 0
            && last.as_ref() == Some(&counts)
            && (counts.failed == 0 || all_failures_final(client, workflow).await);
        quiet = if settled { quiet + 1 } else { 0 };
        last = Some(counts);
        if quiet >= QUIET_TICKS {
            return End::Settled;
        }
    }
}

/// Whether every failed task has failed for good (none waits for a retry).
async fn all_failures_final(client: &Client, workflow: Uuid) -> bool {
    let Ok(page) = client
        .tasks(
            Some(workflow),
            Some(StateKind::Failed),
            None,
            FAILED_CHECKED_MAX,
        )
        .await
    else {
        return false;
    };
    if page.next.is_some() {
        return false;
    }
    for task in page.tasks {
        match client.task(task.id).await {
            Ok(view) if view.waiting.is_none() => {}
            _ => return false,
        }
    }
    true
}
