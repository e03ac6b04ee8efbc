//! `baton serve --otlp-endpoint`: a span per transition reaches a real OTLP/HTTP endpoint (a
//! minimal receiver in the test), and is flushed at shutdown.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Accepts OTLP/HTTP exports and passes on each request's path and body.
fn receiver() -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_owned();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            if tx.send((path, body)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn transitions_are_exported_as_spans_over_otlp_http() {
    let (endpoint, exports) = receiver();
    let mut server = Server::start_with(&["--otlp-endpoint", &endpoint]);
    let file = server.file(
        "wf.json",
        r#"{"name": "traced", "tasks": [{"key": "only"}]}"#,
    );
    let submitted = server.run(&["submit", file.to_str().unwrap(), "--output", "json"]);
    submitted.ok();
    let task = submitted.json()["tasks"]["only"]
        .as_str()
        .unwrap()
        .to_owned();
    server.run(&["cancel", &task, "--reason", "traced"]).ok();
    assert!(server.terminate().success(), "{}", server.log());

    let mut bodies = Vec::new();
    while let Ok((path, body)) = exports.recv_timeout(Duration::from_secs(5)) {
        assert_eq!(path, "/v1/traces");
        bodies.extend(body);
    }
    let text = String::from_utf8_lossy(&bodies);
    assert!(
        text.contains("submitted new->pending"),
        "no submission span"
    );
    assert!(
        text.contains("cancel_requested pending->cancelled"),
        "no cancel span"
    );
    assert!(text.contains("baton"), "the service name is missing");
}
