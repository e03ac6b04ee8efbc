//! Fixtures for tests of the built `baton` binary: a real `baton serve` on a free loopback port
//! with a temporary data directory, and the binary run as a user would, every wait bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[path = "../../../store/tests/common/require.rs"]
pub mod require;

/// The binary under test.
pub const BATON: &str = env!("CARGO_BIN_EXE_baton");
/// Longest wait for anything: the server to start, a command to finish, a line to arrive.
pub const WAIT_MAX: Duration = Duration::from_secs(30);

/// Variables that would change what `baton` does under test.
const AMBIENT: &[&str] = &[
    "BATON_URL",
    "BATON_TOKEN",
    "BATON_LISTEN",
    "BATON_DATA_DIR",
    "BATON_STORE",
    "BATON_OPERATOR_TOKENS",
    "BATON_ADMIN_TOKENS",
    "BATON_VIEWER_TOKENS",
    "BATON_AGENT_TOKENS",
    "BATON_TOKENS_FILE",
];

/// `baton` with none of the ambient Baton settings and no colour.
pub fn baton() -> Command {
    let mut cmd = Command::new(BATON);
    for var in AMBIENT {
        cmd.env_remove(var);
    }
    cmd.env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

/// A `baton serve` of its own, killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts `baton serve` with `extra` arguments; waits until `/healthz` answers.
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("a log file");
        let mut child = baton()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("baton serve starts");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line
                    .strip_prefix("Baton listening on ")
                    .and_then(|rest| rest.split_whitespace().next())
                {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(WAIT_MAX) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("baton serve did not start: {}", read_log(dir.path()));
            }
        };
        let server = Server { child, url, dir };
        server.wait_healthy();
        server
    }

    /// `host:port` the server listens on.
    pub fn addr(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_healthy(&self) {
        if self.url.starts_with("https://") {
            // Plain HTTP cannot ask; a TLS test asks itself.
            return;
        }
        let addr = self.addr();
        let deadline = Instant::now() + WAIT_MAX;
        while Instant::now() < deadline {
            if http_status(&addr, "/healthz") == Some(200) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("/healthz never answered: {}", self.log());
    }

    /// `baton ARGS` against this server.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = baton();
        cmd.env("BATON_URL", &self.url).args(args);
        cmd
    }

    /// Runs `baton ARGS` against this server to the end.
    pub fn run(&self, args: &[&str]) -> Run {
        run(self.command(args))
    }

    /// A file in the server's temporary directory, with `text` in it.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("the file is written");
        path
    }

    /// Sends the server a signal (`libc::SIGHUP`, …).
    #[cfg(unix)]
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit.
    #[cfg(unix)]
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Some(status) = self.child.try_wait().expect("the server can be waited for") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "baton serve did not stop: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_log(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
}

/// The status of `GET path` on `addr`, over a plain socket.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = String::new();
    BufReader::new(s).read_line(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// The value of an unlabelled gauge or counter in the node's `/metrics`, read over a plain
/// socket (`url` is `http://host:port`).
pub fn metric(url: &str, name: &str) -> Option<f64> {
    let addr = url.strip_prefix("http://")?;
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// How a command ended.
#[derive(Debug)]
pub struct Run {
    /// `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts success; returns `self` for chaining.
    #[track_caller]
    pub fn ok(&self) -> &Run {
        assert_eq!(self.code, Some(0), "the command failed: {self:#?}");
        self
    }

    /// Standard output as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `cmd` to the end, killing it after [`WAIT_MAX`].
pub fn run(cmd: Command) -> Run {
    run_for(cmd, WAIT_MAX)
}

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = r.read_to_string(&mut text);
        text
    })
}

/// The lines of a running child's output, each awaited at most [`WAIT_MAX`].
pub struct Lines {
    rx: mpsc::Receiver<String>,
}

impl Lines {
    pub fn of_stdout(out: ChildStdout) -> Lines {
        Lines::of(out)
    }

    pub fn of_stderr(err: ChildStderr) -> Lines {
        Lines::of(err)
    }

    fn of(r: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { rx }
    }

    /// The next line, or `None` if none came within [`WAIT_MAX`] or the stream ended.
    pub fn next(&self) -> Option<String> {
        self.rx.recv_timeout(WAIT_MAX).ok()
    }

    /// Skips lines until one contains `needle`; returns it.
    pub fn until(&self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + WAIT_MAX;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Runs `cmd` to the end like [`run`], killing it after `limit` (for commands whose work grows
/// with the test's size, such as `baton check` of a large store).
pub fn run_for(mut cmd: Command, limit: Duration) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the command can be waited on") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not finish within {limit:?}: {cmd:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code(),
        stdout: stdout.join().expect("stdout is read"),
        stderr: stderr.join().expect("stderr is read"),
    }
}

/// A `baton serve` on a fixed loopback port that can be killed with SIGKILL and started again
/// on the same port and store, as a supervisor restarts a crashed process. Every start appends
/// to one log file. Killed when dropped.
pub struct Node {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, the same across restarts.
    pub url: String,
    addr: String,
    args: Vec<String>,
    log: PathBuf,
    /// Processes started so far.
    pub starts: u32,
}

impl Node {
    /// Starts `baton serve --listen 127.0.0.1:PORT ARGS` on a free port, logging to `log`, and
    /// waits until it answers. `RUST_LOG` is `warn` unless `BATON_TEST_RUST_LOG` says otherwise
    /// (a log line per transition costs a debug build dearly under load).
    pub fn start(args: &[&str], log: PathBuf) -> Node {
        let port = closed_port();
        let mut node = Node {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            addr: format!("127.0.0.1:{port}"),
            args: args.iter().map(|a| a.to_string()).collect(),
            log,
            starts: 0,
        };
        node.restart();
        node
    }

    /// Starts the process without waiting for it to answer.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the node is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the node's log file opens");
        let filter = std::env::var("BATON_TEST_RUST_LOG").unwrap_or_else(|_| "warn".into());
        let child = baton()
            .args(["serve", "--listen", &self.addr])
            .args(&self.args)
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("baton serve starts");
        self.child = Some(child);
        self.starts += 1;
    }

    /// Waits until `/healthz` answers; panics if the process exits or [`WAIT_MAX`] passes.
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + WAIT_MAX;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait().expect("the node can be waited for") {
                    panic!("baton serve exited with {status}: {}", self.log());
                }
            }
            if http_status(&self.addr, "/healthz") == Some(200) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("/healthz of {} never answered: {}", self.url, self.log());
    }

    /// Starts the process and waits until it answers.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_healthy();
    }

    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process gracefully (SIGTERM) and waits for it to exit.
    #[cfg(unix)]
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Some(status) = child.try_wait().expect("the node can be waited for") {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("baton serve did not stop on SIGTERM: {}", self.log());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Freezes the process (SIGSTOP), as a hung one: its connections stay open.
    #[cfg(unix)]
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen process go on (SIGCONT).
    #[cfg(unix)]
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    #[cfg(unix)]
    fn signal(&self, sig: libc::c_int) {
        let child = self.child.as_ref().expect("the node runs");
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(child.id() as libc::pid_t, sig);
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The node's log so far (every start), for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        // The end is what explains a failure.
        let skip = text.len().saturating_sub(20_000);
        let start = (skip..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}
