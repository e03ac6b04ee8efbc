//! Human-readable output: colour (only on a terminal, never with `NO_COLOR`), aligned tables,
//! times in UTC and durations.

use std::io::{self, IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use baton_core::StateKind;

/// An ANSI colour or emphasis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Red,
    Green,
    Yellow,
    Blue,
    Magenta,
    Cyan,
    Bold,
    Dim,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Red => "31",
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Blue => "34",
            Color::Magenta => "35",
            Color::Cyan => "36",
            Color::Bold => "1",
            Color::Dim => "2",
        }
    }

    /// The colour a state is shown in.
    pub fn of(state: StateKind) -> Color {
        match state {
            StateKind::Blocked => Color::Dim,
            StateKind::Pending => Color::Yellow,
            StateKind::Assigned => Color::Blue,
            StateKind::Executing => Color::Cyan,
            StateKind::Completed => Color::Green,
            StateKind::Failed => Color::Red,
            StateKind::Cancelled => Color::Magenta,
        }
    }
}

/// Whether one output stream gets colour.
#[derive(Clone, Copy, Debug)]
pub struct Paint {
    on: bool,
}

impl Paint {
    /// Colour for standard output: only a terminal, and only without `NO_COLOR`.
    pub fn stdout() -> Paint {
        Paint {
            on: io::stdout().is_terminal() && colour_allowed(),
        }
    }

    /// Colour for standard error, by the same rules.
    pub fn stderr() -> Paint {
        Paint {
            on: io::stderr().is_terminal() && colour_allowed(),
        }
    }

    pub fn paint(self, color: Color, text: &str) -> String {
        if self.on {
            format!("\x1b[{}m{text}\x1b[0m", color.code())
        } else {
            text.to_owned()
        }
    }

    /// A state's name in its colour.
    pub fn state(self, state: StateKind) -> String {
        self.paint(Color::of(state), state.name())
    }
}

/// <https://no-color.org>: set and not empty means no colour.
fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// One table cell: its text and, optionally, its colour.
pub struct Cell {
    text: String,
    color: Option<Color>,
}

impl Cell {
    pub fn colored(text: impl Into<String>, color: Color) -> Cell {
        Cell {
            text: text.into(),
            color: Some(color),
        }
    }

    pub fn state(state: StateKind) -> Cell {
        Cell::colored(state.name(), Color::of(state))
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell { text, color: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::from(text.to_owned())
    }
}

/// Columns aligned on the widest cell; headers in bold.
pub struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(head: &[&'static str]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    pub fn write(&self, paint: Paint, out: &mut impl Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.text.chars().count());
                }
            }
        }
        let head: Vec<Cell> = self
            .head
            .iter()
            .map(|h| Cell::colored(*h, Color::Bold))
            .collect();
        for row in std::iter::once(&head).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths.get(i).copied().unwrap_or(0) - cell.text.chars().count();
                match cell.color {
                    Some(c) => line.push_str(&paint.paint(c, &cell.text)),
                    None => line.push_str(&cell.text),
                }
                if i < last {
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }

    pub fn print(&self) -> io::Result<()> {
        self.write(Paint::stdout(), &mut io::stdout().lock())
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2026-05-01T12:00:00.123Z`.
pub fn timestamp(ms: u64) -> String {
    let (date, time) = civil(ms);
    format!("{date}T{time}Z")
}

/// `12:00:00.123` (UTC): enough for a live view of today's transitions.
pub fn clock(ms: u64) -> String {
    civil(ms).1
}

/// Date and time of day (UTC) of a time in milliseconds since the epoch.
fn civil(ms: u64) -> (String, String) {
    let days = (ms / 86_400_000) as i64;
    let of_day = ms % 86_400_000;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1_000 % 60,
        of_day % 1_000,
    );
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{h:02}:{m:02}:{s:02}.{milli:03}"),
    )
}

/// `350ms`, `42s`, `3m 5s`, `2h 10m`, `4d 3h`.
pub fn duration(ms: u64) -> String {
    let s = ms / 1_000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3_600 => format!("{}m {}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {}m", s / 3_600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3_600 % 24),
    }
}

/// `5s ago` or `in 5s`, relative to `now`.
pub fn relative(at: u64, now: u64) -> String {
    if at <= now {
        format!("{} ago", duration(now - at))
    } else {
        format!("in {}", duration(at - now))
    }
}

/// A UUID's last eight hex digits, as the dashboard shows them: the first ones of a UUIDv7 are
/// its timestamp, the same for everything made in the same minute.
pub fn short_id(id: &impl ToString) -> String {
    let id = id.to_string();
    id[id.len().saturating_sub(8)..].to_owned()
}

/// `text` on one line, for a table cell: its lines joined with ` ⏎ `.
pub fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ⏎ ")
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_civil_dates() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(timestamp(1_777_636_861_005), "2026-05-01T12:01:01.005Z");
        assert_eq!(clock(45_296_789), "12:34:56.789");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(350), "350ms");
        assert_eq!(duration(42_000), "42s");
        assert_eq!(duration(185_000), "3m 5s");
        assert_eq!(duration(7_800_000), "2h 10m");
        assert_eq!(relative(1_000, 6_000), "5s ago");
        assert_eq!(relative(66_000, 6_000), "in 1m 0s");
    }

    #[test]
    fn tables_align_on_plain_text() {
        let mut t = Table::new(&["ID", "STATE"]);
        t.row(vec!["a".into(), Cell::state(StateKind::Completed)]);
        t.row(vec!["longer".into(), Cell::state(StateKind::Failed)]);
        let mut out = Vec::new();
        t.write(Paint { on: false }, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID      STATE\na       Completed\nlonger  Failed\n"
        );
        let mut out = Vec::new();
        t.write(Paint { on: true }, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("a       \x1b[32mCompleted\x1b[0m"),
            "{text:?}"
        );
    }

    #[test]
    fn several_lines_become_one() {
        assert_eq!(
            one_line("boom\n  at main.py:3\n\n"),
            "boom ⏎   at main.py:3"
        );
        assert_eq!(one_line("one"), "one");
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
