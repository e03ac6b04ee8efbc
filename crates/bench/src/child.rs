//! `baton serve` as a child process of the bench (this same binary): started, timed until it
//! answers, measured from `/proc`, and stopped gently or with SIGKILL.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use baton_client::Client;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Longest a child may take to answer after it was started.
const START_LIMIT: Duration = Duration::from_secs(120);
/// Variables that would change what the child serves.
const AMBIENT: &[&str] = &[
    "BATON_STORE",
    "BATON_DATA_DIR",
    "BATON_LISTEN",
    "BATON_OPERATOR_TOKENS",
    "BATON_AGENT_TOKENS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

pub struct Serve {
    child: Child,
    /// Run under `BATON_BENCH_SERVE_WRAPPER`, in a process group of its own.
    wrapped: bool,
    pub base: String,
    /// From spawning the process to its first answer to `GET /v1/counts`.
    pub start_time: Duration,
}

/// The `baton serve` arguments that select the target's store.
pub fn store_args(target: &super::Target) -> Vec<String> {
    match target {
        super::Target::Sqlite(dir) => vec!["--data-dir".into(), dir.path().display().to_string()],
        super::Target::Postgres { .. } => vec!["--store".into(), target.url()],
    }
}

/// A free loopback port (bound and released: a later bind may race, rarely).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl Serve {
    /// Starts `baton serve --listen LISTEN STORE_ARGS …`, logging to `log`, and waits until it
    /// answers.
    pub async fn start(
        listen: &str,
        store_args: &[String],
        extra: &[&str],
        log: &Path,
    ) -> anyhow::Result<Serve> {
        let exe = std::env::current_exe().context("finding the baton binary")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        // A profiler to run the child under (`heaptrack -o FILE`, `valgrind --tool=…`): the
        // command and its arguments, split on whitespace, before the binary.
        let wrapper = std::env::var("BATON_BENCH_SERVE_WRAPPER").unwrap_or_default();
        let mut wrapper = wrapper.split_whitespace();
        let (mut cmd, wrapped) = match wrapper.next() {
            Some(program) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper).arg(exe);
                // A process group of its own, signalled whole: a wrapper that runs the server
                // as its own child (heaptrack's script) would otherwise leave it running.
                #[cfg(unix)]
                cmd.process_group(0);
                (cmd, true)
            }
            None => (Command::new(exe), false),
        };
        for var in AMBIENT {
            cmd.env_remove(var);
        }
        cmd.args(["serve", "--listen", listen])
            .args(store_args)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("BATON_BENCH_SERVE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        let spawned = Instant::now();
        let mut child = cmd.spawn().context("starting baton serve")?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(START_LIMIT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line
                    .strip_prefix("Baton listening on ")
                    .and_then(|rest| rest.split_whitespace().next())
                {
                    return Ok::<_, std::io::Error>(Some(url.to_owned()));
                }
            }
            Ok(None)
        })
        .await;
        let base = match base {
            Ok(Ok(Some(url))) => url,
            _ => {
                let _ = child.start_kill();
                bail!("baton serve did not start (see its log)");
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let client = Client::new(&base)?;
        let give_up = spawned + START_LIMIT;
        loop {
            if client.counts(None).await.is_ok() {
                break;
            }
            if Instant::now() > give_up {
                let _ = child.start_kill();
                bail!("baton serve at {base} never answered");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Serve {
            child,
            base,
            start_time: spawned.elapsed(),
            wrapped,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `field` of the child's `/proc/PID/status`, in MiB.
    pub fn status_mib(&self, field: &str) -> f64 {
        self.pid().map_or(0.0, |pid| {
            super::proc_status_kib(&pid.to_string(), field) as f64 / 1024.0
        })
    }

    /// Resets the child's peak RSS (`VmHWM`) to its current RSS (`echo 5 >
    /// /proc/PID/clear_refs`), so that a later peak is that of what ran since. `false` where
    /// that is not possible (no `/proc`, or not allowed).
    pub fn reset_peak_rss(&self) -> bool {
        self.pid()
            .is_some_and(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
    }

    /// Sends `signal` to the child, or under a wrapper to its whole process group.
    #[cfg(unix)]
    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.child.id() {
            let target = if self.wrapped {
                -(pid as libc::pid_t)
            } else {
                pid as libc::pid_t
            };
            // SAFETY: sending a signal to our own child process (or its process group).
            unsafe {
                libc::kill(target, signal);
            }
        }
    }

    /// SIGKILL, and wait for it to be gone.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        #[cfg(unix)]
        self.signal(libc::SIGKILL);
        #[cfg(not(unix))]
        self.child.start_kill().context("killing baton serve")?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM (graceful shutdown), then SIGKILL if it takes over `limit`.
    pub async fn stop(mut self, limit: Duration) -> anyhow::Result<()> {
        #[cfg(unix)]
        self.signal(libc::SIGTERM);
        if tokio::time::timeout(limit, self.child.wait())
            .await
            .is_err()
        {
            #[cfg(unix)]
            self.signal(libc::SIGKILL);
            #[cfg(not(unix))]
            self.child.start_kill()?;
            self.child.wait().await?;
        }
        Ok(())
    }
}
