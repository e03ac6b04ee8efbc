//! `baton watch`: counts per state and the latest transitions, live from the event stream.
//! On a terminal the view is redrawn in place; otherwise each transition is a line of its
//! own (`--output json`: the transition event as a JSON line).

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use baton_client::wire::{Counts, TransitionEventView};
use baton_client::{Client, StreamItem};
use baton_core::StateKind;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::render::{clock, short_id, timestamp, truncate, Color, Paint};
use super::{call, REQUEST_TIME_MAX};
use crate::Output;

/// Transitions read ahead of the display.
const EVENTS_QUEUED_MAX: usize = 1_024;
/// Transitions listed in the live view.
const RECENT_SHOWN: usize = 10;
/// Widest task key in the live view.
const KEY_SHOWN: usize = 24;
/// How often the live view is redrawn at least (updates in between may be skipped).
const REDRAW_EVERY: Duration = Duration::from_millis(250);
/// How often the live view's counts are checked against the server's.
const RESYNC_EVERY: Duration = Duration::from_secs(5);

/// How long a broken stream is retried before `baton watch` gives up.
const RECONNECT_FOR: Duration = Duration::from_secs(30);
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(250);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the stream reader hands to the display.
enum Msg {
    Item(StreamItem),
    /// Something to tell the user about the stream itself.
    Note(String),
    /// The server could not be reached again.
    Failed(anyhow::Error),
}

/// `baton watch`: until Ctrl-C. A stream that breaks or ends (a server restarting, another
/// node behind a load balancer) is resumed where it stopped, for up to 30 s of retries.
pub async fn watch(client: &Client, workflow: Option<Uuid>, output: Output) -> anyhow::Result<()> {
    let events = call(client, client.events(workflow)).await?;
    let counts = call(client, client.counts(workflow)).await?;
    eprintln!(
        "Watching transitions at {}{}; Ctrl-C to stop.",
        client.base_url(),
        workflow
            .map(|w| format!(" for workflow {w}"))
            .unwrap_or_default()
    );
    let (tx, mut rx) = mpsc::channel(EVENTS_QUEUED_MAX);
    let reader = tokio::spawn(read_resuming(client.clone(), workflow, events, tx));
    let live = output == Output::Table
        && std::io::stdout().is_terminal()
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
    let mut view = match output {
        Output::Json => View::Json,
        Output::Table if live => View::Live(Live::new(counts)),
        Output::Table => {
            println!("{}", counts_line(&counts, Paint::stdout()));
            View::Plain(Paint::stdout())
        }
    };
    let mut resync = tokio::time::interval(RESYNC_EVERY);
    resync.tick().await;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let end = loop {
        tokio::select! {
            _ = &mut ctrl_c => break End::Interrupted,
            item = rx.recv() => match item {
                None => break End::Closed,
                Some(Msg::Failed(e)) => break End::Failed(e),
                Some(Msg::Note(note)) => view.stream_note(note),
                Some(Msg::Item(StreamItem::Transition(t))) => match view.transition(&t) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break End::Interrupted,
                    Err(e) => break End::Failed(e.into()),
                },
                // The transitions already show it; `GET /v1/workflows/{id}` has its result.
                Some(Msg::Item(StreamItem::Workflow(_))) => {}
                Some(Msg::Item(StreamItem::Lagged(skipped))) => {
                    view.lagged(skipped);
                    if let View::Live(live) = &mut view {
                        live.resync(client, workflow).await;
                    }
                }
            },
            _ = resync.tick(), if matches!(view, View::Live(_)) => {
                if let View::Live(live) = &mut view {
                    live.resync(client, workflow).await;
                }
            }
        }
    };
    reader.abort();
    view.finish(matches!(end, End::Interrupted));
    match end {
        End::Interrupted => Ok(()),
        End::Closed => {
            eprintln!("The server closed the event stream.");
            Ok(())
        }
        End::Failed(e) => Err(e),
    }
}

/// Reads the stream into `tx`; when it breaks or ends, opens it again after the last event
/// received (the server sends what was missed, or `lagged`), with backoff, for up to
/// [`RECONNECT_FOR`].
async fn read_resuming(
    client: Client,
    workflow: Option<Uuid>,
    mut events: baton_client::Events,
    tx: mpsc::Sender<Msg>,
) {
    loop {
        let why = loop {
            match events.next().await {
                Some(Ok(item)) => {
                    if tx.send(Msg::Item(item)).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => break e.to_string(),
                None => break "the server ended it".to_owned(),
            }
        };
        let note = format!("event stream lost ({why}); reconnecting");
        if tx.send(Msg::Note(note)).await.is_err() {
            return;
        }
        let last = events.last_event_id().map(str::to_owned);
        let started = std::time::Instant::now();
        let mut backoff = RECONNECT_BACKOFF_MIN;
        events = loop {
            tokio::time::sleep(backoff).await;
            match client.events_after(workflow, last.as_deref()).await {
                Ok(events) => break events,
                Err(_) if started.elapsed() < RECONNECT_FOR => {
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                }
                Err(e) => {
                    let e = anyhow::Error::new(e).context(format!(
                        "the event stream could not be opened again for {} s",
                        RECONNECT_FOR.as_secs()
                    ));
                    let _ = tx.send(Msg::Failed(e)).await;
                    return;
                }
            }
        };
        if tx
            .send(Msg::Note("event stream resumed".into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Why watching stopped.
enum End {
    /// Ctrl-C, or the reader of the output went away.
    Interrupted,
    /// The server ended the stream.
    Closed,
    Failed(anyhow::Error),
}

enum View {
    /// Each transition event as a JSON line.
    Json,
    /// Each transition as a plain line.
    Plain(Paint),
    /// Counts, progress and the latest transitions, redrawn in place.
    Live(Live),
}

impl View {
    fn transition(&mut self, t: &TransitionEventView) -> std::io::Result<()> {
        let line = match self {
            View::Json => serde_json::to_string(t)?,
            View::Plain(paint) => log_line(t, *paint),
            View::Live(live) => {
                live.transition(t);
                return Ok(());
            }
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()
    }

    /// A note about the stream: on standard error, or in the live view.
    fn stream_note(&mut self, note: String) {
        match self {
            View::Json | View::Plain(_) => eprintln!("note: {note}"),
            View::Live(live) => live.note(note),
        }
    }

    fn lagged(&mut self, skipped: u64) {
        let note = match skipped {
            0 => "some transitions may have been missed; counts re-read".to_owned(),
            n => format!("fell behind: {n} transitions skipped"),
        };
        match self {
            View::Json | View::Plain(_) => eprintln!("warning: {note}"),
            View::Live(live) => live.note(note),
        }
    }

    /// Leaves the live view on screen as last drawn: drawn once more unless interrupted, as
    /// the terminal has echoed `^C` below it.
    fn finish(&mut self, interrupted: bool) {
        if let View::Live(live) = self {
            if interrupted {
                live.bar.set_draw_target(ProgressDrawTarget::hidden());
            } else {
                live.bar.abandon();
            }
        }
    }
}

struct Live {
    bar: ProgressBar,
    counts: Counts,
    recent: VecDeque<String>,
    paint: Paint,
}

impl Live {
    fn new(counts: Counts) -> Live {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        bar.set_style(
            ProgressStyle::with_template("{prefix}\n[{bar:40}] {pos}/{len} ended\n{msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(REDRAW_EVERY);
        let live = Live {
            bar,
            counts,
            recent: VecDeque::with_capacity(RECENT_SHOWN + 1),
            paint: Paint::stdout(),
        };
        live.redraw();
        live
    }

    fn transition(&mut self, t: &TransitionEventView) {
        if let Some(from) = t.from {
            let n = slot(&mut self.counts, from);
            *n = n.saturating_sub(1);
        } else {
            self.counts.total += 1;
        }
        *slot(&mut self.counts, t.to) += 1;
        let line = live_line(t, self.paint);
        self.note(line);
    }

    fn note(&mut self, line: String) {
        if self.recent.len() == RECENT_SHOWN {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
        self.redraw();
    }

    /// Takes the server's counts, which the transitions seen may have drifted from (events
    /// skipped, or in flight when the counts were first read).
    async fn resync(&mut self, client: &Client, workflow: Option<Uuid>) {
        if let Ok(Ok(counts)) =
            tokio::time::timeout(REQUEST_TIME_MAX, client.counts(workflow)).await
        {
            if counts != self.counts {
                self.counts = counts;
                self.redraw();
            }
        }
    }

    fn redraw(&self) {
        let c = &self.counts;
        self.bar.set_length(c.total);
        self.bar
            .set_position((c.completed + c.failed + c.cancelled).min(c.total));
        self.bar.set_prefix(counts_line(c, self.paint));
        let recent: Vec<&str> = self.recent.iter().map(String::as_str).collect();
        self.bar.set_message(if recent.is_empty() {
            "(no transitions yet)".to_owned()
        } else {
            recent.join("\n")
        });
    }
}

fn slot(c: &mut Counts, state: StateKind) -> &mut u64 {
    match state {
        StateKind::Blocked => &mut c.blocked,
        StateKind::Pending => &mut c.pending,
        StateKind::Assigned => &mut c.assigned,
        StateKind::Executing => &mut c.executing,
        StateKind::Completed => &mut c.completed,
        StateKind::Failed => &mut c.failed,
        StateKind::Cancelled => &mut c.cancelled,
    }
}

/// `Blocked 0  Pending 3  …  Total 16`, each state in its colour.
fn counts_line(c: &Counts, paint: Paint) -> String {
    let mut counts = c.clone();
    let mut parts: Vec<String> = StateKind::ALL
        .into_iter()
        .map(|s| format!("{} {}", paint.state(s), slot(&mut counts, s)))
        .collect();
    parts.push(format!("{} {}", paint.paint(Color::Bold, "Total"), c.total));
    parts.join("  ")
}

/// A transition for a log: date and time, the task's id and key, from → to, event, agent.
fn log_line(t: &TransitionEventView, paint: Paint) -> String {
    let agent = t.agent.map(|a| format!("  agent {a}")).unwrap_or_default();
    format!(
        "{}  {}  {}  {}  {}{agent}",
        timestamp(t.at),
        t.task,
        t.key,
        states(t, paint),
        t.event
    )
}

/// A transition for the live view: time of day, short id, key, from → to, event.
fn live_line(t: &TransitionEventView, paint: Paint) -> String {
    format!(
        "{}  {}  {:<KEY_SHOWN$}  {}  {}",
        clock(t.at),
        short_id(&t.task),
        truncate(&t.key, KEY_SHOWN),
        states(t, paint),
        t.event
    )
}

fn states(t: &TransitionEventView, paint: Paint) -> String {
    let to = paint.paint(Color::of(t.to), t.to.name());
    match t.from {
        Some(from) => format!("{} → {to}", from.name()),
        None => format!("→ {to}"),
    }
}
