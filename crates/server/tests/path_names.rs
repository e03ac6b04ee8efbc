//! Names that are path segments (schedules, triggers, rate limits) cannot be `.` or `..`: URL
//! clients resolve those away, so no request could address them. Creating one is refused,
//! naming the field, and stores nothing. SQLite by default; PostgreSQL with
//! `BATON_E2E_STORE=postgres`.

mod common;

use std::io::{Read, Write};

use common::{task, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Sends `method path` with `body` over a socket of its own, the path exactly as written
/// (a client would have resolved `.` and `..` away), and answers the status and the body.
async fn unresolved(srv: &TestServer, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let addr = srv.url.trim_start_matches("http://").to_owned();
    let body = body.to_string();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(&addr).unwrap();
        socket.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        socket.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_refused_as_names_and_nothing_is_stored() {
    let srv = TestServer::start().await;
    for name in [".", ".."] {
        let schedule = json!({"name": name, "cron": "0 0 * * * *",
                              "workflow": {"tasks": [task("a", &[])]}});
        let (status, problem) = srv.post("/v1/schedules", schedule).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(
            (&problem["code"], &problem["field"]),
            (&json!("invalid_field"), &json!("name")),
            "{problem}"
        );

        let segment = name.replace('.', "%2E");
        let template = json!({"tasks": [task("a", &[])]});
        for path in [
            format!("/v1/triggers/{name}"),
            format!("/v1/triggers/{segment}"),
        ] {
            let (status, problem) = unresolved(&srv, "PUT", &path, &template).await;
            assert_eq!(status, 422, "{path}: {problem}");
            assert_eq!(
                (&problem["code"], &problem["field"]),
                (&json!("invalid_field"), &json!("name")),
                "{path}: {problem}"
            );
        }
        let limit = json!({"units": 1, "per_ms": 1000});
        for path in [
            format!("/v1/limits/{name}"),
            format!("/v1/limits/{segment}"),
        ] {
            let (status, problem) = unresolved(&srv, "PUT", &path, &limit).await;
            assert_eq!(status, 422, "{path}: {problem}");
            assert_eq!(
                (&problem["code"], &problem["field"]),
                (&json!("invalid_field"), &json!("key")),
                "{path}: {problem}"
            );
        }
    }
    for (list, field) in [
        ("/v1/schedules", "schedules"),
        ("/v1/triggers", "triggers"),
        ("/v1/limits", "limits"),
    ] {
        let (_, page) = srv.get(list).await;
        assert_eq!(page[field], json!([]), "{list}");
    }
    // A dot within a name is fine.
    let (status, body) = srv
        .post(
            "/v1/schedules",
            json!({"name": "...", "cron": "0 0 * * * *", "workflow": {"tasks": [task("a", &[])]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
