//! One run of the agent's command: spawned in its own process group with the task's input on
//! stdin, its stdout captured up to a bound, the tail of its stderr kept, and stopped (SIGTERM
//! to the group, then SIGKILL) on request.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Most bytes of stdout kept as the result. Baton accepts request bodies up to 8 MiB
/// (`baton_server::BODY_BYTES_MAX`); half of it leaves room for re-encoding and the envelope.
pub const STDOUT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes of stderr kept: the end of it becomes the message of a failure.
pub const STDERR_TAIL_BYTES: usize = 4 * 1024;
/// Size of one read from a pipe.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How long, after the command exited, its pipes may stay open (held by a process it left
/// behind) before what was read so far is taken as its output.
pub const PIPE_DRAIN: Duration = Duration::from_secs(2);
/// How long to wait for the command to be reaped after SIGKILL.
pub const KILL_WAIT: Duration = Duration::from_secs(5);

/// What a finished command left behind.
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// Stdout went beyond [`STDOUT_BYTES_MAX`]; `stdout` holds its beginning only.
    pub stdout_overflow: bool,
    /// The last [`STDERR_TAIL_BYTES`] of stderr.
    pub stderr_tail: Vec<u8>,
    /// Stderr was longer than its tail.
    pub stderr_truncated: bool,
}

/// A running command.
pub struct Process {
    child: Child,
    pid: Option<u32>,
    stdout: Arc<Mutex<Capture>>,
    stderr: Arc<Mutex<Capture>>,
    pipes: Vec<JoinHandle<()>>,
}

impl Process {
    /// Starts `program args` with `env` added to the agent's environment and `input` written
    /// to its stdin (then closed). On Unix it leads a process group of its own, so that
    /// stopping it stops whatever it started, and a Ctrl-C meant for the agent does not reach
    /// it directly.
    pub fn spawn(
        program: &str,
        args: &[String],
        env: &[(&str, String)],
        input: Vec<u8>,
    ) -> io::Result<Process> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let stdout = Arc::new(Mutex::new(Capture::head(STDOUT_BYTES_MAX)));
        let stderr = Arc::new(Mutex::new(Capture::tail(STDERR_TAIL_BYTES)));
        let mut pipes = Vec::with_capacity(3);
        if let Some(mut stdin) = child.stdin.take() {
            pipes.push(tokio::spawn(async move {
                // A command that exits without reading its input closes the pipe: not an error.
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            }));
        }
        if let Some(out) = child.stdout.take() {
            pipes.push(tokio::spawn(capture(out, Arc::clone(&stdout))));
        }
        if let Some(err) = child.stderr.take() {
            pipes.push(tokio::spawn(capture(err, Arc::clone(&stderr))));
        }
        Ok(Process {
            child,
            pid,
            stdout,
            stderr,
            pipes,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Waits for the command to exit. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Stops the command: SIGTERM to its process group, then SIGKILL if it has not exited
    /// within `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.signal(Signal::Terminate)?;
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            return status;
        }
        self.signal(Signal::Kill)?;
        match tokio::time::timeout(KILL_WAIT, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("still running {KILL_WAIT:?} after SIGKILL"),
            )),
        }
    }

    fn signal(&mut self, signal: Signal) -> io::Result<()> {
        #[cfg(unix)]
        if let Some(pid) = self.pid {
            let sig = match signal {
                Signal::Terminate => libc::SIGTERM,
                Signal::Kill => libc::SIGKILL,
            };
            // SAFETY: kill(2) has no memory effects. The group's leader is our child and has
            // not been reaped (we hold its `Child` and have not seen it exit), so the group id
            // cannot have been reused.
            let rc = unsafe { libc::kill(-(pid as libc::pid_t), sig) };
            let err = io::Error::last_os_error();
            return match rc {
                0 => Ok(()),
                _ if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                _ => Err(err),
            };
        }
        let _ = signal;
        self.child.start_kill()
    }

    /// Gathers the output of a command that has exited.
    pub async fn collect(mut self, status: ExitStatus) -> Outcome {
        let mut pipes = std::mem::take(&mut self.pipes);
        let drained = async {
            for pipe in pipes.iter_mut() {
                let _ = pipe.await;
            }
        };
        if tokio::time::timeout(PIPE_DRAIN, drained).await.is_err() {
            for pipe in &pipes {
                pipe.abort();
            }
        }
        let (stdout, stdout_overflow) = take(&self.stdout);
        let (stderr_tail, stderr_truncated) = take(&self.stderr);
        Outcome {
            status,
            stdout,
            stdout_overflow,
            stderr_tail,
            stderr_truncated,
        }
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Terminate,
    Kill,
}

fn take(capture: &Mutex<Capture>) -> (Vec<u8>, bool) {
    let mut c = capture.lock().unwrap_or_else(|e| e.into_inner());
    c.finish()
}

/// Bytes read from a pipe, bounded: the first `limit` bytes, or the last.
struct Capture {
    bytes: Vec<u8>,
    limit: usize,
    keep_tail: bool,
    dropped: bool,
}

impl Capture {
    fn head(limit: usize) -> Capture {
        Capture {
            bytes: Vec::new(),
            limit,
            keep_tail: false,
            dropped: false,
        }
    }

    fn tail(limit: usize) -> Capture {
        Capture {
            keep_tail: true,
            ..Capture::head(limit)
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        if self.keep_tail {
            self.bytes.extend_from_slice(chunk);
            if self.bytes.len() > 2 * self.limit {
                let cut = self.bytes.len() - self.limit;
                self.bytes.drain(..cut);
                self.dropped = true;
            }
        } else {
            let room = self.limit.saturating_sub(self.bytes.len());
            self.bytes
                .extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.len() > room {
                self.dropped = true;
            }
        }
    }

    fn finish(&mut self) -> (Vec<u8>, bool) {
        if self.keep_tail && self.bytes.len() > self.limit {
            let cut = self.bytes.len() - self.limit;
            self.bytes.drain(..cut);
            self.dropped = true;
        }
        (std::mem::take(&mut self.bytes), self.dropped)
    }
}

/// Reads a pipe to its end into `sink`; what goes beyond the bound is read and dropped, so the
/// command never blocks on a full pipe.
async fn capture(mut pipe: impl AsyncRead + Unpin, sink: Arc<Mutex<Capture>>) {
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => sink
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Capture;

    #[test]
    fn head_keeps_the_beginning_and_notes_the_overflow() {
        let mut c = Capture::head(4);
        c.push(b"abc");
        c.push(b"def");
        assert_eq!(c.finish(), (b"abcd".to_vec(), true));
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut c = Capture::tail(4);
        for chunk in [&b"hello "[..], b"wor", b"ld"] {
            c.push(chunk);
        }
        assert_eq!(c.finish(), (b"orld".to_vec(), true));
        let mut short = Capture::tail(4);
        short.push(b"ok");
        assert_eq!(short.finish(), (b"ok".to_vec(), false));
    }
}
