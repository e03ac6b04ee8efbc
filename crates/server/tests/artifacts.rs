//! Artifacts over HTTP: streamed uploads addressed by their SHA-256, downloads, the size limit
//! (nothing stored past it), references in submissions and results checked with their field
//! paths, durability across a restart, and the sweep that keeps referenced artifacts only.
//! SQLite by default; PostgreSQL with `BATON_E2E_STORE=postgres`.

mod common;

use std::sync::Arc;

use baton_engine::{EngineConfig, ManualClock, ARTIFACT_UNREFERENCED_GRACE_MS_DEFAULT};
use baton_server::Tokens;
use common::{store_url, task, TestServer, T0};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// `n` bytes that do not repeat in any short period (xorshift), seeded.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn address(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

async fn put(srv: &TestServer, data: Vec<u8>, content_type: Option<&str>) -> (StatusCode, Value) {
    let mut rb = srv
        .client
        .put(format!("{}/v1/artifacts", srv.url))
        .body(data);
    if let Some(ct) = content_type {
        rb = rb.header(header::CONTENT_TYPE, ct);
    }
    let res = rb.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap())
}

async fn get(srv: &TestServer, artifact: &str) -> reqwest::Response {
    srv.client
        .get(format!("{}/v1/artifacts/{artifact}", srv.url))
        .send()
        .await
        .unwrap()
}

async fn stored(srv: &TestServer, artifact: &str) -> bool {
    match get(srv, artifact).await.status() {
        StatusCode::OK => true,
        StatusCode::NOT_FOUND => false,
        other => panic!("GET {artifact}: {other}"),
    }
}

/// A server whose engine has `config`, on a fresh store.
async fn start(config: EngineConfig) -> TestServer {
    let (url, dir) = store_url().await;
    let clock = Arc::new(ManualClock::new(T0));
    TestServer::start_with_config(url, dir, Tokens::none(), clock, config).await
}

/// SQLite's artifact directory beside the database, or `None` on PostgreSQL.
fn artifact_dir(srv: &TestServer) -> Option<std::path::PathBuf> {
    (!srv.store_url.starts_with("postgres")).then(|| format!("{}-artifacts", srv.store_url).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_artifact_round_trips_and_a_second_upload_of_it_is_recognised() {
    let srv = TestServer::start().await;
    // Over the JSON body limit (8 MiB) and many store chunks (1 MiB): streamed both ways.
    let data = bytes(20 * 1024 * 1024 + 7, 1);
    let expected = address(&data);
    let (status, body) = put(&srv, data.clone(), Some("application/x-parquet")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["artifact"], expected.as_str());
    assert_eq!(body["size"], data.len());
    assert_eq!(body["created"], true);

    let res = get(&srv, &expected).await;
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert_eq!(h[header::CONTENT_LENGTH], data.len().to_string().as_str());
    assert_eq!(h[header::CONTENT_TYPE], "application/x-parquet");
    assert_eq!(h[header::ETAG], format!("\"{expected}\"").as_str());
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let got = res.bytes().await.unwrap();
    assert!(
        got.as_ref() == data.as_slice(),
        "the bytes come back as sent"
    );

    // The bare hex names it too; HEAD answers the same headers without the bytes.
    let bare = expected.strip_prefix("sha256:").unwrap();
    let res = srv
        .client
        .head(format!("{}/v1/artifacts/{bare}", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()[header::CONTENT_LENGTH],
        data.len().to_string().as_str()
    );
    // A cached copy is still good.
    let res = srv
        .client
        .get(format!("{}/v1/artifacts/{expected}", srv.url))
        .header(header::IF_NONE_MATCH, format!("\"{expected}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);

    // The same bytes again: recognised, not stored twice; the first content type stays.
    let (status, again) = put(&srv, data, None).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["artifact"], expected.as_str());
    assert_eq!(again["created"], false);
    assert_eq!(again["content_type"], "application/x-parquet");

    // An empty artifact is an artifact.
    let (status, empty) = put(&srv, Vec::new(), None).await;
    assert_eq!(status, StatusCode::CREATED, "{empty}");
    assert_eq!(empty["artifact"], address(&[]).as_str());
    let res = get(&srv, empty["artifact"].as_str().unwrap()).await;
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    assert!(res.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_limit_is_refused_and_nothing_is_stored() {
    let limit = 1024 * 1024;
    let srv = start(EngineConfig {
        artifact_bytes_max: limit,
        ..EngineConfig::default()
    })
    .await;
    let over = bytes(limit as usize + 1, 2);
    let (status, problem) = put(&srv, over.clone(), None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert_eq!(problem["code"], "artifact_too_large");
    assert_eq!(problem["field"], "artifact");
    let expected = problem["expected"].as_str().unwrap();
    assert!(
        expected.contains(&limit.to_string()) && expected.contains("artifact-bytes-max"),
        "the limit is named: {expected}"
    );
    assert!(!stored(&srv, &address(&over)).await, "nothing is stored");

    // Sent without a length (chunked), the limit is found while streaming.
    let (status, problem) = put_chunked(&srv, &over).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["code"], "artifact_too_large");
    assert!(!stored(&srv, &address(&over)).await, "nothing is stored");
    if let Some(dir) = artifact_dir(&srv) {
        let staged: Vec<_> = std::fs::read_dir(dir.join("tmp")).unwrap().collect();
        assert!(staged.is_empty(), "no staging file is left: {staged:?}");
    }

    // At the limit exactly: stored.
    let at = bytes(limit as usize, 3);
    let (status, body) = put(&srv, at.clone(), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(stored(&srv, &address(&at)).await);
}

/// `PUT /v1/artifacts` with `Transfer-Encoding: chunked` over a plain socket (no
/// `Content-Length`); returns the status and the JSON body.
async fn put_chunked(srv: &TestServer, data: &[u8]) -> (u16, Value) {
    let addr = srv.url.strip_prefix("http://").unwrap().to_owned();
    let data = data.to_vec();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "PUT /v1/artifacts HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n"
        )
        .unwrap();
        for chunk in data.chunks(64 * 1024) {
            // The server may answer (and close) before taking every chunk.
            if write!(s, "{:x}\r\n", chunk.len()).is_err()
                || s.write_all(chunk).is_err()
                || s.write_all(b"\r\n").is_err()
            {
                break;
            }
        }
        let _ = s.write_all(b"0\r\n\r\n");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            // One chunk: its size line, then the JSON.
            body.split_once("\r\n")
                .unwrap()
                .1
                .rsplit_once("\r\n0")
                .unwrap()
                .0
                .to_owned()
        } else {
            body.to_owned()
        };
        (status, serde_json::from_str(body.trim()).unwrap())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_references_are_refused_on_download() {
    let srv = TestServer::start().await;
    let unknown = format!("sha256:{}", "0".repeat(64));
    let res = get(&srv, &unknown).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "artifact_not_found");

    for bad in ["sha256:abc", "md5:0123", &"G".repeat(64)] {
        let res = get(&srv, bad).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["code"], "artifact_ref_invalid", "{bad}");
        assert_eq!(problem["field"], "artifact");
    }
}

fn with_input(key: &str, input: Value) -> Value {
    let mut t = task(key, &[]);
    t["input"] = input;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_must_refer_to_artifacts_that_exist() {
    let srv = TestServer::start().await;
    let (_, doc) = put(&srv, b"the document".to_vec(), Some("text/plain")).await;
    let doc = doc["artifact"].as_str().unwrap().to_owned();
    let missing = address(b"never uploaded");

    let tasks = json!([
        with_input("a", json!({"doc": {"$artifact": doc}})),
        with_input("b", json!({})),
        with_input("c", json!({"pages": [1, {"doc": {"$artifact": missing}}]})),
    ]);
    let (status, problem) = srv
        .post("/v1/workflows", json!({"name": "refs", "tasks": tasks}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "artifact_not_found");
    assert_eq!(problem["field"], "tasks[2].input.pages[1].doc");
    assert!(problem["detail"].as_str().unwrap().contains(&missing));
    assert_eq!(srv.counts().await["total"], 0, "nothing was created");

    let malformed = json!([with_input(
        "a",
        json!({"doc": {"$artifact": "sha256:short"}})
    )]);
    let (status, problem) = srv
        .post("/v1/workflows", json!({"name": "refs", "tasks": malformed}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "artifact_ref_invalid");
    assert_eq!(problem["field"], "tasks[0].input.doc");

    let comp = json!([{"key": "a", "compensation": {"key": "undo",
                       "input": {"$artifact": missing}}}]);
    let (status, problem) = srv
        .post("/v1/workflows", json!({"name": "refs", "tasks": comp}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "tasks[0].compensation.input");

    // One task on its own: the field is named as that endpoint names it.
    let (status, problem) = srv
        .post(
            "/v1/tasks",
            json!({"task": with_input("solo", json!({"$artifact": missing}))}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "task.input");

    let ok = json!([with_input("a", json!({"doc": {"$artifact": doc}}))]);
    srv.submit(ok).await;

    // Sub-tasks are checked the same way.
    let agent = srv.register("w", &["work"], 1).await;
    let claimed = srv.claim(&agent, 1).await.remove(0);
    let (s, b) = srv.report(&claimed, &agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (status, problem) = srv
        .report(
            &claimed,
            &agent,
            "subtasks",
            json!({"tasks": [with_input("sub", json!({"x": {"$artifact": missing}}))]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "artifact_not_found");
    assert_eq!(problem["field"], "tasks[0].input.x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_must_refer_to_artifacts_that_exist() {
    let srv = TestServer::start().await;
    srv.submit(json!([task("a", &[])])).await;
    let agent = srv.register("w", &["work"], 1).await;
    let claimed = srv.claim(&agent, 1).await.remove(0);
    let (s, b) = srv.report(&claimed, &agent, "started", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let missing = address(b"not there");
    let (status, problem) = srv
        .report(
            &claimed,
            &agent,
            "succeeded",
            json!({"result": {"report": {"$artifact": missing}}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "artifact_not_found");
    assert_eq!(problem["field"], "result.report");
    let id = claimed["task"].as_str().unwrap();
    assert_eq!(
        srv.state_of(id).await,
        "executing",
        "the refusal changed nothing"
    );

    let (_, report) = put(&srv, b"the report".to_vec(), None).await;
    let report = report["artifact"].clone();
    let (status, body) = srv
        .report(
            &claimed,
            &agent,
            "succeeded",
            json!({"result": {"report": {"$artifact": report}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(srv.state_of(id).await, "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_survive_a_restart() {
    let srv = TestServer::start().await;
    let data = bytes(3 * 1024 * 1024 + 1, 4);
    let (status, body) = put(&srv, data.clone(), Some("image/png")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let artifact = body["artifact"].as_str().unwrap().to_owned();

    let (url, dir, clock) = srv.stop().await;
    let srv = TestServer::start_with(url, dir, Tokens::none(), clock).await;
    let res = get(&srv, &artifact).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "image/png");
    assert!(res.bytes().await.unwrap().as_ref() == data.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_unreferenced_artifacts_after_the_grace_period_only() {
    let srv = TestServer::start().await;
    let grace = ARTIFACT_UNREFERENCED_GRACE_MS_DEFAULT;
    let upload = |n: u8| {
        let srv = &srv;
        async move {
            let (status, body) = put(srv, vec![n; 1000], None).await;
            assert!(status.is_success(), "{body}");
            body["artifact"].as_str().unwrap().to_owned()
        }
    };
    let loose = upload(1).await;
    let in_input = upload(2).await;
    let in_result = upload(3).await;
    let refreshed = upload(4).await;

    srv.submit(json!([
        with_input("a", json!({"doc": {"$artifact": in_input}})),
        task("b", &[]),
    ]))
    .await;
    let agent = srv.register("w", &["work"], 2).await;
    for claimed in srv.claim(&agent, 2).await {
        let (s, b) = srv.report(&claimed, &agent, "started", json!({})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = srv
            .report(
                &claimed,
                &agent,
                "succeeded",
                json!({"result": {"out": {"$artifact": in_result}}}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }

    // Within the grace period nothing goes.
    srv.clock.advance(grace - 1);
    assert_eq!(srv.engine.sweep_artifacts().await.unwrap(), 0);
    // Uploaded again: its grace period starts again.
    assert_eq!(upload(4).await, refreshed);
    srv.clock.advance(2);
    assert_eq!(srv.engine.sweep_artifacts().await.unwrap(), 1);
    assert!(!stored(&srv, &loose).await, "unreferenced and old: swept");
    if let Some(dir) = artifact_dir(&srv) {
        let hex = loose.strip_prefix("sha256:").unwrap();
        assert!(
            !dir.join("sha256").join(&hex[..2]).join(hex).exists(),
            "its file is gone"
        );
    }
    for kept in [&in_input, &in_result, &refreshed] {
        assert!(stored(&srv, kept).await, "{kept} is kept");
    }

    // Long after, what tasks refer to stays; the refreshed one goes.
    srv.clock.advance(10 * grace);
    assert_eq!(srv.engine.sweep_artifacts().await.unwrap(), 1);
    assert!(!stored(&srv, &refreshed).await);
    assert!(stored(&srv, &in_input).await);
    assert!(stored(&srv, &in_result).await);

    // A swept artifact can be uploaded again.
    assert_eq!(upload(1).await, loose);
    assert!(stored(&srv, &loose).await);
}
