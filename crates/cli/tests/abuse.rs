//! The server under pressure, as an attacker or an unlucky client would put it: thousands of
//! idle connections, heads and bodies sent a byte at a time, large reads in parallel, a flood
//! from one token, more event streams than slots, a DNS-rebinding `Host`; and TLS. Drives the
//! real binary over real sockets. Bounds on time here are liveness bounds (the answer comes at
//! all), far above what the server takes.

#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// An answer read whole from a `Connection: close` request.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) and reads the answer.
fn send(addr: &str, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).expect("the request is sent");
    read_answer(&mut s)
}

fn read_answer(s: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn get(addr: &str, path: &str, token: Option<&str>) -> Answer {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

fn post(addr: &str, path: &str, token: Option<&str>, body: &str) -> Answer {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    send(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// Lets this test process hold thousands of sockets.
fn raise_fd_limit() {
    // SAFETY: getrlimit and setrlimit on a struct this function owns.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// A `/proc/PID/status` field, in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Whether the server closed `s` (end of stream, or reset) within `within`, having sent no
/// answer.
fn closed_without_answer(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

/// Registers an agent with capability `work` and claims once without waiting.
fn claim(addr: &str) -> Answer {
    let agent = post(
        addr,
        "/v1/agents",
        None,
        r#"{"name": "a", "capabilities": ["work"]}"#,
    );
    assert_eq!(agent.status, 201, "{}", agent.body);
    let id = agent.json()["id"].as_str().unwrap().to_owned();
    post(
        addr,
        &format!("/v1/agents/{id}/claim"),
        None,
        r#"{"max": 1}"#,
    )
}

#[test]
fn idle_connections_and_byte_at_a_time_clients_are_cut_off_while_others_are_served() {
    raise_fd_limit();
    let srv = Server::start_with(&[
        "--header-timeout",
        "2s",
        "--body-timeout",
        "1s",
        "--request-timeout",
        "3s",
    ]);
    let addr = srv.addr();

    let mut idle: Vec<TcpStream> = (0..5_000)
        .map(|i| TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    // A head sent a byte every 200 ms never completes.
    let loris_addr = addr.clone();
    let loris = thread::spawn(move || {
        let mut s = TcpStream::connect(&loris_addr).unwrap();
        let started = Instant::now();
        for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        (
            closed_without_answer(&mut s, Duration::from_secs(10)),
            started.elapsed(),
        )
    });

    // Meanwhile the server answers others.
    let started = Instant::now();
    assert_eq!(get(&addr, "/healthz", None).status, 200);
    let health = started.elapsed();
    let started = Instant::now();
    let claimed = claim(&addr);
    assert_eq!(claimed.status, 200, "{}", claimed.body);
    let claim_took = started.elapsed();
    eprintln!("with 5,000 idle connections: /healthz in {health:?}, a claim in {claim_took:?}");
    assert!(health < Duration::from_secs(5) && claim_took < Duration::from_secs(5));

    // A connection that sent no whole head is closed at the header timeout.
    for s in idle.iter_mut().step_by(100) {
        assert!(
            closed_without_answer(s, Duration::from_secs(10)),
            "an idle connection was still open after the header timeout"
        );
    }
    let (closed, after) = loris.join().unwrap();
    assert!(closed, "the byte-at-a-time head was answered or left open");
    assert!(
        after < Duration::from_secs(10),
        "closed only after {after:?}"
    );
    drop(idle);

    // A body that stops arriving is refused at the body timeout.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(
        format!(
            "POST /v1/workflows HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\nConnection: close\r\n\r\n{{\"tasks\""
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let stalled = read_answer(&mut s);
    assert_eq!(stalled.status, 408, "{}", stalled.body);
    assert_eq!(stalled.json()["code"], "body_timeout");

    // A body that trickles in under the body timeout still meets the request's deadline.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(
        format!(
            "POST /v1/workflows HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: 100\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let trickle = thread::spawn(move || {
        for _ in 0..100 {
            if s.write_all(b" ").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(400));
        }
        s
    });
    let mut s = trickle.join().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let late = read_answer(&mut s);
    assert_eq!(late.status, 503, "{}", late.body);
    assert_eq!(late.json()["code"], "deadline_exceeded");
    assert!(late.header("retry-after").is_some());

    // Nothing of that was stored.
    let workflows = get(&addr, "/v1/workflows", None).json();
    assert_eq!(workflows["workflows"], serde_json::json!([]), "{workflows}");
}

#[test]
fn large_reads_in_parallel_stay_within_bounded_memory() {
    let srv = Server::start();
    let addr = srv.addr();
    let input = "x".repeat(1_000_000);
    let mut ids = Vec::new();
    for w in 0..8 {
        let tasks: Vec<String> = (0..8)
            .map(|t| format!(r#"{{"key": "t{t}", "capabilities": ["none"], "input": "{input}"}}"#))
            .collect();
        let submitted = post(
            &addr,
            "/v1/workflows",
            None,
            &format!(r#"{{"name": "big-{w}", "tasks": [{}]}}"#, tasks.join(",")),
        );
        assert_eq!(
            submitted.status,
            201,
            "{}",
            &submitted.body[..200.min(submitted.body.len())]
        );
        let answer = submitted.json();
        ids.extend(
            answer["tasks"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(ids.len(), 64);

    // An input over the per-payload limit is refused, naming it.
    let over = "x".repeat(1024 * 1024);
    let refused = post(
        &addr,
        "/v1/workflows",
        None,
        &format!(r#"{{"tasks": [{{"key": "a", "input": "{over}"}}]}}"#),
    );
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert_eq!(refused.json()["code"], "payload_too_large");
    assert_eq!(refused.json()["field"], "tasks[0].input");

    thread::sleep(Duration::from_secs(6));
    let idle_kib = proc_kib(srv.pid(), "VmRSS:");
    let readers: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let addr = addr.clone();
            thread::spawn(move || {
                for _ in 0..4 {
                    let a = get(&addr, &format!("/v1/tasks/{id}"), None);
                    assert_eq!(a.status, 200);
                    assert!(a.body.len() > 1_000_000);
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let peak_kib = proc_kib(srv.pid(), "VmHWM:");
    eprintln!(
        "RSS idle {idle_kib} KiB, peak {peak_kib} KiB over 256 reads of 1 MB inputs, 64 at once"
    );
    assert!(
        peak_kib < 300 * 1024,
        "peak RSS {peak_kib} KiB over 300 MiB"
    );
    // Memory goes back to the system once the reads are over.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now_kib = proc_kib(srv.pid(), "VmRSS:");
        if now_kib < idle_kib + 64 * 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS still {now_kib} KiB, idle was {idle_kib} KiB"
        );
        thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn one_token_flooding_is_refused_while_another_is_served_and_excess_requests_are_shed() {
    let srv = Server::start_with(&[
        "--admin-token",
        "flood-secret",
        "--admin-token",
        "calm-secret",
        "--rate-per-token",
        "20",
        "--requests-max",
        "2",
        "--body-timeout",
        "30s",
    ]);
    let addr = srv.addr();

    let answers: Vec<Answer> = (0..100)
        .map(|_| get(&addr, "/v1/counts", Some("flood-secret")))
        .collect();
    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(
        limited.len() >= 50,
        "only {} of 100 requests in a burst over 20/s were refused",
        limited.len()
    );
    assert!(answers.iter().all(|a| a.status == 200 || a.status == 429));
    assert_eq!(limited[0].json()["code"], "rate_limited");
    assert!(limited[0].header("retry-after").is_some());
    for _ in 0..10 {
        assert_eq!(get(&addr, "/v1/counts", Some("calm-secret")).status, 200);
    }

    // Two requests whose bodies are still coming hold both slots: the next is shed at once.
    let holders: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(
                format!(
                    "POST /v1/workflows HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer \
                     calm-secret\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
                )
                .as_bytes(),
            )
            .unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let shed = get(&addr, "/v1/counts", Some("calm-secret"));
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert_eq!(shed.json()["code"], "overloaded");
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(
        get(&addr, "/healthz", None).status,
        200,
        "liveness is never shed"
    );
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&addr, "/v1/counts", Some("calm-secret")).status != 200 {
        assert!(Instant::now() < deadline, "the slots never came back");
        thread::sleep(Duration::from_millis(100));
    }

    // Both refusals are counted.
    let metrics = get(&addr, "/metrics", Some("calm-secret")).body;
    let count = |reason: &str| -> u64 {
        let prefix = format!("baton_http_refused_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in the metrics"))
    };
    assert!(count("rate_limited") >= limited.len() as u64);
    assert!(count("overloaded") >= 1);
    assert!(metrics.contains("baton_http_connections "), "{metrics}");
}

#[test]
fn viewers_cannot_take_the_operators_event_streams() {
    raise_fd_limit();
    let srv = Server::start_with(&[
        "--viewer-token",
        "eyes-secret",
        "--operator-token",
        "op-secret",
    ]);
    let addr = srv.addr();
    let open = |token: &str| {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(
            format!(
                "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            s.read_exact(&mut b).expect("a status line");
            line.push(b[0]);
        }
        let status: u16 = String::from_utf8_lossy(&line)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        (status, s)
    };
    let mut streams = Vec::new();
    loop {
        let (status, s) = open("eyes-secret");
        if status != 200 {
            assert_eq!(status, 503);
            break;
        }
        streams.push(s);
        assert!(streams.len() <= 256, "viewers were never refused a stream");
    }
    assert_eq!(streams.len(), 128, "the viewers' share of event streams");
    let (status, _operator) = open("op-secret");
    assert_eq!(status, 200, "an operator is locked out by viewers' streams");
}

#[test]
fn a_rebinding_host_and_a_cross_site_origin_are_refused() {
    let srv = Server::start();
    let addr = srv.addr();
    let rebound = send(
        &addr,
        b"GET /v1/counts HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(rebound.status, 403);
    assert_eq!(rebound.json()["code"], "host_not_loopback");
    let cross = send(
        &addr,
        format!(
            "POST /v1/workflows HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    assert_eq!(cross.status, 403);
    assert_eq!(cross.json()["code"], "cross_site_origin");
}

#[test]
fn tls_serves_https_and_plain_http_beyond_loopback_is_refused() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    let dir = tempfile::tempdir().unwrap();
    let refused = baton()
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--admin-token",
            "s",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--tls-cert") && err.contains("--insecure-http"),
        "{err}"
    );

    let cert = fixtures.join("cert.pem");
    let key = fixtures.join("key.pem");
    let ca = fixtures.join("ca.pem");
    let srv = Server::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(srv.url.starts_with("https://127.0.0.1:"), "{}", srv.url);
    // The CLI speaks HTTPS, trusting the test CA.
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let run = srv.run(&["workflows", "--ca-cert", ca.to_str().unwrap()]);
        if run.code == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "no HTTPS answer: {}", run.stderr);
        thread::sleep(Duration::from_millis(100));
    }
    // Without the CA, the certificate is not trusted.
    let untrusted = srv.run(&["workflows"]);
    assert_ne!(untrusted.code, Some(0));
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "{}",
        untrusted.stderr
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut s = TcpStream::connect(srv.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(!raw.starts_with(b"HTTP/1.1 200"), "plain HTTP was served");
}
