//! `baton demo`: an embedded engine and its HTTP API, a fleet of in-process agents that talk to
//! it over HTTP, and a multi-agent workflow of a few hundred tasks that shows decomposition,
//! retries with backoff, a timeout recovered by the watchdog, and a failure for good with its
//! compensation and cancelled dependents. Needs no network and no setup.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use baton_client::Client;
use baton_engine::{Engine, EngineConfig, SystemClock};
use baton_server::{AppState, Tokens};
use baton_store::AnyStore;

use crate::{Global, Output};

mod agents;
mod progress;
mod report;
mod scenario;

use agents::{AgentStats, Fleet, FLEET};
use progress::{Display, End, Live};
use scenario::Scenario;

/// Where the demo listens unless told otherwise (if it is free): `baton serve`'s address, so
/// the README's commands work against it.
const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
/// Where it listens when that one is taken: any free port.
const FALLBACK_LISTEN: &str = "127.0.0.1:0";
/// Longest a run may take before it is reported as unfinished, besides the agents' work.
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// Simulated work per task unless `--pace` says otherwise: the default workflow then takes
/// about ten seconds, long enough to watch.
const PACE_DEFAULT_MS: u64 = 300;
/// Slowest `--pace`.
const PACE_MAX_MS: u64 = 10_000;
/// Longest reading the workflow back for the summary may take.
const GATHER_MAX: Duration = Duration::from_secs(30);
/// Longest the server may take to stop (open event streams can hold it up).
const SERVER_STOP: Duration = Duration::from_secs(5);

/// Runs a multi-agent demo workflow on an embedded engine.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Keep the SQLite store in this directory (created if missing) instead of a temporary one
    /// removed at the end.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the API and the dashboard [default: 127.0.0.1:7700, or a free port if it is
    /// taken].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// After the summary, keep serving until Ctrl-C, to look around in the dashboard or the API.
    #[arg(long)]
    pub keep_serving: bool,
    /// About how long an agent spends on a task, in milliseconds, so that the progress can
    /// be watched (here and in the dashboard); 0 runs as fast as the machine allows.
    #[arg(long, value_name = "MS", default_value_t = PACE_DEFAULT_MS,
          value_parser = clap::value_parser!(u64).range(0..=PACE_MAX_MS))]
    pub pace: u64,
    /// About how many tasks the workflow grows to.
    #[arg(long, value_name = "N", default_value_t = 250,
          value_parser = clap::value_parser!(u32).range(30..=5_000))]
    pub tasks: u32,
}

pub fn run(global: &Global, args: DemoArgs) -> anyhow::Result<ExitCode> {
    init_logs();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(demo(global.output, args))
}

/// Human lines: on stdout, unless stdout carries the JSON summary.
struct Say {
    json: bool,
}

impl Say {
    fn line(&self, text: impl AsRef<str>) {
        if self.json {
            eprintln!("{}", text.as_ref());
        } else {
            println!("{}", text.as_ref());
        }
    }
}

async fn demo(output: Output, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let json = output == Output::Json;
    let say = Say { json };
    let (dir, _temporary) = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
            (dir.clone(), None)
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("baton-demo-")
                .tempdir()
                .context("creating a temporary directory")?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let db = dir.join("baton.db");
    let store = AnyStore::open(&db.display().to_string())
        .await
        .context("opening the store")?;
    let engine = Engine::new(store, Arc::new(SystemClock), EngineConfig::default());
    let loops = engine.start();
    let listener = listen(args.listen).await?;
    let addr = listener.local_addr()?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(baton_server::serve(
        listener,
        AppState::new(engine.clone(), Tokens::none()),
        None,
        async {
            let _ = server_stopped.await;
        },
    ));
    let base = format!("http://{addr}");
    let client = Client::new(&base)?;
    let scenario = Scenario::for_tasks(args.tasks as usize);

    say.line("Baton demo: an embedded engine, its HTTP API, and agents working a workflow.");
    say.line(format!("  dashboard  {base}/"));
    say.line(format!(
        "  API        {base}/v1/  (e.g. curl {base}/v1/counts)"
    ));
    say.line(format!(
        "  store      {}{}",
        db.display(),
        if args.data_dir.is_none() {
            " (temporary)"
        } else {
            ""
        }
    ));
    let fleet_text: Vec<String> = FLEET
        .iter()
        .map(|(name, _, c)| format!("{name} ×{c}"))
        .collect();
    let pace = match args.pace {
        0 => "as fast as they can".to_owned(),
        ms => format!("about {ms} ms a task"),
    };
    say.line(format!(
        "  agents     {} ({pace}: --pace MS)",
        fleet_text.join(", ")
    ));
    say.line(format!(
        "  workflow   a briefing of {} sections, about {} tasks once the planners have \
         decomposed it",
        scenario.sections,
        scenario.expected_total()
    ));
    say.line(format!(
        "  flow       research holds the concurrency key `{}`: at most {} searches at once",
        scenario::SEARCH_KEY,
        scenario::SEARCH_MAX
    ));
    say.line("");

    let started = Instant::now();
    let created = client
        .submit(&baton_client::wire::SubmitWorkflow {
            // Generous: the agents' usage shows against it, and it stays far from reached.
            budgets: [(
                "usd".to_owned(),
                baton_core::Budget {
                    limit: baton_core::Amount::of(50.0).expect("a valid amount"),
                    policy: baton_core::BudgetPolicy::Pause,
                },
            )]
            .into(),
            name: "demo: quarterly technology briefing".into(),
            idempotency_key: None,
            tasks: vec![scenario.root(), scenario.outline(), scenario.cover()],
            outputs: Some(scenario.outputs()),
            labels: Default::default(),
        })
        .await
        .context("submitting the demo workflow")?;
    let workflow = created.workflow;
    let live = Arc::new(Live::default());
    let events = tokio::spawn(progress::count_events(
        client.clone(),
        workflow,
        Arc::clone(&live),
    ));
    let stats = Arc::new(AgentStats::default());
    let fleet = Fleet::start(&client, Arc::clone(&stats), args.pace).await?;
    let mut display = Display::new(json, started);
    let slots: u32 = FLEET.iter().map(|(_, _, c)| c).sum();
    // Twice the agents' work spread over every slot, on top of the fixed allowance.
    let work = Duration::from_millis(
        2 * args.pace * scenario.expected_total() as u64 / u64::from(slots.max(1)),
    );
    let deadline = RUN_DEADLINE + work;
    let end = progress::follow(&client, workflow, &live, &mut display, deadline).await;
    let elapsed = started.elapsed();
    display.finish();
    fleet.stop().await;
    events.abort();
    let _ = events.await;

    let report = tokio::time::timeout(
        GATHER_MAX,
        report::gather(&client, workflow, &scenario, &live, &stats, elapsed),
    )
    .await
    .with_context(|| format!("reading the workflow back took over {GATHER_MAX:?}"))??;
    say.line("");
    match end {
        End::Settled => {}
        End::TimedOut => say.line(format!(
            "The workflow had not ended after {} s.",
            deadline.as_secs()
        )),
        End::Interrupted => say.line("Interrupted."),
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report.json(&base))?);
    } else {
        print!("{}", report.text());
        if args.keep_serving {
            say.line(format!(
                "Look closer: curl '{base}/v1/tasks?workflow={workflow}&state=failed', or the \
                 dashboard at {base}/."
            ));
        } else {
            say.line(
                "Look closer: run it again with --keep-serving, then open the dashboard or curl \
                 the failed tasks ('/v1/tasks?workflow=ID&state=failed').",
            );
        }
    }
    let ok = report.ok() && end == End::Settled;

    if args.keep_serving && end != End::Interrupted {
        say.line(format!(
            "Still serving on {base}/ (dashboard) and {base}/v1/ (API). Ctrl-C to stop."
        ));
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_server.send(());
    if tokio::time::timeout(SERVER_STOP, server).await.is_err() {
        engine.shutdown();
    }
    for l in loops {
        let _ = tokio::time::timeout(SERVER_STOP, l).await;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Binds `--listen`, or the default address if free, else any free port.
async fn listen(wanted: Option<SocketAddr>) -> anyhow::Result<tokio::net::TcpListener> {
    if let Some(addr) = wanted {
        return tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"));
    }
    match tokio::net::TcpListener::bind(DEFAULT_LISTEN).await {
        Ok(l) => Ok(l),
        Err(_) => tokio::net::TcpListener::bind(FALLBACK_LISTEN)
            .await
            .with_context(|| format!("listening on {FALLBACK_LISTEN}")),
    }
}

/// Warnings and errors only, unless `RUST_LOG` says otherwise: the engine's line per
/// transition would drown the progress.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}
