//! `baton`: the command line of the Baton orchestration engine.

use std::process::ExitCode;

use clap::{
    Arg, Command as ClapCommand, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum,
};

mod agent;
mod backup;
mod check;
mod demo;
mod duration;
mod gc;
mod lifecycle;
mod mcp;
mod ops;
mod serve;

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Durable orchestration for multi-agent systems"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Where the server is and how to talk to it: shared by every client command.
#[derive(clap::Args, Clone, Debug)]
pub struct Global {
    /// Baton server URL.
    #[arg(
        long,
        global = true,
        env = "BATON_URL",
        default_value = "http://127.0.0.1:7700"
    )]
    pub url: String,
    /// Bearer token.
    #[arg(long, global = true, env = "BATON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM certificates to trust besides the system's, for an https:// URL whose server has
    /// a private CA or a self-signed certificate.
    #[arg(long, global = true, env = "BATON_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine and its HTTP API.
    Serve(Box<serve::ServeArgs>),
    /// Run a multi-agent demo workflow on an embedded engine.
    Demo(demo::DemoArgs),
    /// Turn any program into an agent: run it for every task it claims.
    Agent(agent::AgentArgs),
    /// Serve Baton to LLM agents over the Model Context Protocol (stdio, or HTTP with --http).
    Mcp(mcp::McpArgs),
    #[command(flatten)]
    Ops(ops::OpsCommand),
    /// Verify a store against the lifecycle, task by task (read-only; works on a live store).
    Check(check::CheckArgs),
    /// Delete what outlived its retention, as the server does every minute (--dry-run: say
    /// what would go).
    Gc(gc::GcArgs),
    /// Copy an SQLite store while it runs (a consistent snapshot, with its artifacts).
    Backup(backup::BackupArgs),
    /// Measure Baton: throughput, DAG latency, timeouts, scale, retention, core, store, crash
    /// recovery.
    Bench(baton_bench::BenchArgs),
    /// Inspect the task lifecycle: check it, draw it.
    Lifecycle {
        #[command(subcommand)]
        command: lifecycle::LifecycleCommand,
    },
}

/// The global flags each command ignores: hidden from its help (and its subcommands'), still
/// accepted.
const IGNORED_GLOBALS: &[(&str, &[&str])] = &[
    ("serve", &["url", "token", "output"]),
    ("demo", &["url", "token"]),
    ("lifecycle", &["url", "token", "output"]),
    ("check", &["url", "token"]),
    ("gc", &["url", "token"]),
    ("backup", &["url", "token"]),
    ("bench", &["url", "token"]),
    ("agent", &["output"]),
    ("mcp", &["output"]),
    ("completions", &["url", "token", "output"]),
];

/// The command line as `baton` parses it and documents it.
pub fn command() -> ClapCommand {
    let mut cmd = Cli::command();
    let globals: Vec<Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    for (name, ignored) in IGNORED_GLOBALS {
        cmd = cmd.mut_subcommand(*name, |mut sub| {
            // A command's own copy of a global flag is not propagated over; being global
            // itself, it goes on to the command's subcommands.
            for arg in globals
                .iter()
                .filter(|a| ignored.contains(&a.get_id().as_str()))
            {
                sub = sub.arg(arg.clone().hide(true));
            }
            sub
        });
    }
    cmd
}

/// mimalloc, set up by `serve::memory`: the server makes many small allocations per request,
/// which glibc's allocator served slower (see there and BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    baton_server::listen::install_crypto_provider();
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Lifecycle { command } => return lifecycle::lifecycle(command),
        Command::Serve(args) => serve::serve(*args).map(|()| ExitCode::SUCCESS),
        Command::Demo(args) => demo::run(&cli.global, args),
        Command::Agent(args) => agent::run(&cli.global, args),
        Command::Mcp(args) => mcp::run(&cli.global, args),
        Command::Check(args) => check::run(&cli.global, args),
        Command::Gc(args) => gc::run(&cli.global, args),
        Command::Backup(args) => backup::run(&cli.global, args),
        Command::Bench(args) => baton_bench::run(
            args,
            match cli.global.output {
                Output::Table => baton_bench::Output::Table,
                Output::Json => baton_bench::Output::Json,
            },
        ),
        Command::Ops(cmd) => ops::run(&cli.global, cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
