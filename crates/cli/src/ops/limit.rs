//! `baton limits`: list, set, show and delete the named rate limits tasks draw from.

use baton_client::wire::LimitView;
use baton_client::Client;
use clap::Subcommand;

use super::render::{now_ms, relative, timestamp, Cell, Table};
use super::{call, print_json};
use crate::Output;

#[derive(Subcommand)]
pub enum LimitCommand {
    /// List the limits with what each has available now (the default).
    List,
    /// Create or change limit KEY: UNITS per PERIOD (e.g. `--units 3000 --per 1m`). What a
    /// changed limit had handed out stays drawn.
    Set {
        key: String,
        /// Units the bucket holds when full, and refills per PERIOD.
        #[arg(long)]
        units: u64,
        /// The refill period: milliseconds, or with a unit (`500ms`, `30s`, `1m`, `1h`, `1d`).
        #[arg(long, value_name = "PERIOD", value_parser = parse_period)]
        per: u64,
    },
    /// Show limit KEY.
    Show { key: String },
    /// Delete limit KEY: tasks drawing from it are no longer held by it.
    Delete { key: String },
}

/// `1500`, `500ms`, `30s`, `1m`, `1h`, `1d`, as milliseconds.
fn parse_period(s: &str) -> Result<u64, String> {
    crate::duration::parse_ms(s)
}

/// `3000/1m`: the limit as it was set.
fn rate_text(l: &LimitView) -> String {
    let per = match l.per_ms {
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    };
    format!("{}/{per}", l.units)
}

fn print_one(l: &LimitView, now: u64) {
    println!("limit      {}", l.key);
    println!("rate       {} units", rate_text(l));
    println!("available  {} of {}", l.available, l.units);
    if l.full_at > now {
        println!(
            "full at    {} ({})",
            timestamp(l.full_at),
            relative(l.full_at, now)
        );
    }
    println!("parked     {} task(s) waiting for units", l.parked);
}

pub async fn run(client: &Client, cmd: Option<LimitCommand>, output: Output) -> anyhow::Result<()> {
    let now = now_ms();
    let one = |l: LimitView| match output {
        Output::Json => print_json(&l),
        Output::Table => {
            print_one(&l, now);
            Ok(())
        }
    };
    match cmd.unwrap_or(LimitCommand::List) {
        LimitCommand::List => {
            let list = call(client, client.limits()).await?;
            if output == Output::Json {
                return print_json(&list);
            }
            if list.limits.is_empty() {
                println!("No limit.");
                return Ok(());
            }
            let mut table = Table::new(&["LIMIT", "RATE", "AVAILABLE", "PARKED", "UPDATED"]);
            for l in &list.limits {
                table.row(vec![
                    l.key.as_str().into(),
                    Cell::from(rate_text(l)),
                    Cell::from(l.available.to_string()),
                    Cell::from(l.parked.to_string()),
                    Cell::from(timestamp(l.updated_at)),
                ]);
            }
            table.print()?;
            Ok(())
        }
        LimitCommand::Set { key, units, per } => {
            one(call(client, client.set_limit(&key, units, per)).await?)
        }
        LimitCommand::Show { key } => one(call(client, client.limit(&key)).await?),
        LimitCommand::Delete { key } => {
            call(client, client.delete_limit(&key)).await?;
            if output == Output::Table {
                println!("Deleted limit {key}.");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_read_with_or_without_a_unit() {
        assert_eq!(parse_period("1500"), Ok(1_500));
        assert_eq!(parse_period("500ms"), Ok(500));
        assert_eq!(parse_period("30s"), Ok(30_000));
        assert_eq!(parse_period("1m"), Ok(60_000));
        assert_eq!(parse_period("2h"), Ok(7_200_000));
        assert_eq!(parse_period("1d"), Ok(86_400_000));
        assert!(parse_period("1w").is_err());
        assert!(parse_period("m").is_err());
    }
}
