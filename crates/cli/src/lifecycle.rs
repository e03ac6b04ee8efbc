//! `baton lifecycle`: check and draw the lifecycle table.

use std::process::ExitCode;

use baton_core::{DiagramFormat, DEFAULT};
use clap::{Subcommand, ValueEnum};

#[derive(Subcommand)]
pub enum LifecycleCommand {
    /// Check the lifecycle table: reachability, dead ends, terminal exits, determinism.
    Check,
    /// Print the lifecycle as a diagram.
    Diagram {
        #[arg(long, value_enum, default_value_t = Format::Mermaid)]
        format: Format,
    },
    /// Print the lifecycle table, one rule per line.
    Table,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Mermaid,
    Dot,
}

pub fn lifecycle(command: LifecycleCommand) -> ExitCode {
    match command {
        LifecycleCommand::Check => {
            let problems = DEFAULT.check();
            if problems.is_empty() {
                println!(
                    "lifecycle ok: {} rules, every state reachable, no dead ends, terminal \
                     states closed, every non-terminal state cancellable, deterministic",
                    DEFAULT.rules.len()
                );
                ExitCode::SUCCESS
            } else {
                for problem in &problems {
                    eprintln!("error: {problem}");
                }
                eprintln!("lifecycle check failed: {} problem(s)", problems.len());
                ExitCode::FAILURE
            }
        }
        LifecycleCommand::Diagram { format } => {
            let format = match format {
                Format::Mermaid => DiagramFormat::Mermaid,
                Format::Dot => DiagramFormat::Dot,
            };
            print_all(&DEFAULT.diagram(format))
        }
        LifecycleCommand::Table => {
            let mut text = String::new();
            for rule in DEFAULT.rules {
                let effects: Vec<String> = rule.effects.iter().map(|e| format!("{e:?}")).collect();
                text.push_str(&format!("{rule}  / {}\n", effects.join(", ")));
            }
            print_all(&text)
        }
    }
}

/// Writes `text` on standard output; a closed output (`baton lifecycle table | head`) is no
/// failure.
fn print_all(text: &str) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: writing the output: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}
