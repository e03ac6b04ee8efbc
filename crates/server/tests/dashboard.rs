//! The dashboard in a real browser: headless Chromium driven through ChromeDriver (W3C
//! WebDriver), against a real server and store, while tasks move through the HTTP API.
//!
//! The WebDriver client is the few commands below over `reqwest` (already a dev-dependency):
//! a session, navigation, scripts, clicks, typing, screenshots. A crate such as fantoccini
//! would bring about 35 more crates (the `webdriver` crate, ICU segmentation data, `time`, a
//! second `thiserror` and `cookie`) for the same handful of calls.
//!
//! Chromium and ChromeDriver must be installed (`./test` does, as root, with `.ci/chromium`);
//! without them the browser tests are skipped, loudly, or fail under `BATON_REQUIRE_ALL=1`
//! (`common::require::chromium`). Browsers run one at a time (the machine has two cores), each test with a
//! fresh profile. Screenshots land in `target/dashboard-screenshots/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use baton_server::Role;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Longest wait for the page to show something.
const WAIT_MS_MAX: u64 = 15_000;
/// Longest wait for the 1,000-task graph to be laid out (dagre on a shared two-core machine).
const BIG_GRAPH_WAIT_MS_MAX: u64 = 90_000;
const POLL_MS: u64 = 50;
const WINDOW_WIDTH: u32 = 1280;
const WINDOW_HEIGHT: u32 = 1000;
const COMPLETED_FILL: &str = "rgb(30, 138, 76)";
const PENDING_FILL: &str = "rgb(246, 195, 67)";
const STATES: [&str; 7] = [
    "blocked",
    "pending",
    "assigned",
    "executing",
    "completed",
    "failed",
    "cancelled",
];

/// One browser at a time: each is a few hundred MB and a core while it starts.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---- a minimal WebDriver client -----------------------------------------------------------------

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    /// The Baton server the pages come from.
    base: String,
    test: &'static str,
}

struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn start_driver(http: &reqwest::Client, chromedriver: &Path) -> Driver {
    let port = free_port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: tempfile::tempdir().unwrap(),
    };
    let start = Instant::now();
    loop {
        let ready = http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .ok()
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_millis(WAIT_MS_MAX),
            "chromedriver did not answer on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    driver
}

impl Browser {
    async fn open(
        base: &str,
        test: &'static str,
        (chromium, chromedriver): &(PathBuf, PathBuf),
    ) -> (Browser, Driver) {
        baton_server::listen::install_crypto_provider();
        let http = reqwest::Client::new();
        let driver = start_driver(&http, chromedriver).await;
        let profile = driver._profile.path().display().to_string();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // Keeps what the browser logs as errors, for `console_errors`.
            "goog:loggingPrefs": {"browser": "SEVERE"},
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={WINDOW_WIDTH},{WINDOW_HEIGHT}"),
                    format!("--user-data-dir={profile}"),
                ],
            },
        }}});
        let res = http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert!(status.is_success(), "new WebDriver session: {body:#}");
        let id = body["value"]["sessionId"].as_str().unwrap().to_owned();
        let browser = Browser {
            http,
            session: format!("{}/session/{id}", driver.url),
            base: base.to_owned(),
            test,
        };
        (browser, driver)
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.try_cmd(method.clone(), path, body).await;
        assert!(
            status.is_success(),
            "WebDriver {method} {path} answered {status}: {body:#}"
        );
        body["value"].clone()
    }

    /// A WebDriver command and its answer, whatever its status.
    async fn try_cmd(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (reqwest::StatusCode, Value) {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let res = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn quit(&self) {
        let _ = self.http.delete(&self.session).send().await;
    }

    /// Leaves the dashboard: the next `goto` loads a new document, and its scripts again.
    async fn blank(&self) {
        self.cmd(
            reqwest::Method::POST,
            "/url",
            Some(json!({ "url": "about:blank" })),
        )
        .await;
    }

    /// Opens a dashboard URL (`#/…`).
    async fn goto(&self, hash: &str) {
        let url = format!("{}/{hash}", self.base);
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Runs a script in the page (its body: use `return`).
    async fn js(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Polls `script` until it returns something truthy, and returns that.
    async fn wait(&self, what: &str, script: &str) -> Value {
        self.wait_for(what, script, WAIT_MS_MAX).await
    }

    async fn wait_for(&self, what: &str, script: &str, timeout_ms: u64) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if start.elapsed() > Duration::from_millis(timeout_ms) {
                let shot = format!("{}-timeout", self.test);
                self.screenshot(&shot).await;
                let errors = self.js("return window.__batonErrors || []").await;
                let logged = self.console_errors().await;
                let text = self
                    .js("return document.querySelector('main')?.innerText.slice(0, 3000)")
                    .await;
                panic!(
                    "waited {timeout_ms} ms for {what} (screenshot {shot}.png)\n\
                     page errors: {errors}\nbrowser errors: {logged:#?}\npage text:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT_KEY].as_str().unwrap().to_owned()
    }

    /// Clicks like a user: WebDriver scrolls the element into view and checks it can be hit.
    /// A live page may redraw the element between finding and clicking it: then it is found
    /// again, a few times at most.
    async fn click(&self, css: &str) {
        for _ in 0..5 {
            let id = self.element(css).await;
            let path = format!("/element/{id}/click");
            let (status, body) = self
                .try_cmd(reqwest::Method::POST, &path, Some(json!({})))
                .await;
            if status.is_success() {
                return;
            }
            assert_eq!(
                body["value"]["error"], "stale element reference",
                "WebDriver POST {path} answered {status}: {body:#}"
            );
        }
        panic!("`{css}` kept being redrawn before it could be clicked");
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Empties a text field like a user selecting all and deleting.
    async fn clear(&self, css: &str) {
        let id = self.element(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
    }

    async fn count(&self, css: &str) -> u64 {
        let script = format!(
            "return document.querySelectorAll({}).length",
            serde_json::to_string(css).unwrap()
        );
        self.js(&script).await.as_u64().unwrap()
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// A screenshot as tall as the page (up to a bound), then back to the normal window.
    async fn screenshot_page(&self, name: &str) -> PathBuf {
        let height = self
            .js("return document.documentElement.scrollHeight")
            .await
            .as_u64()
            .map_or(u64::from(WINDOW_HEIGHT), |h| h + 120)
            .clamp(u64::from(WINDOW_HEIGHT), 4000);
        self.resize(WINDOW_WIDTH, height as u32).await;
        let path = self.screenshot(name).await;
        self.resize(WINDOW_WIDTH, WINDOW_HEIGHT).await;
        path
    }

    async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// What the browser logged as errors since the last call: failed loads, modules refused,
    /// policy violations, uncaught errors, `console.error` (ChromeDriver's log of them).
    async fn console_errors(&self) -> Vec<String> {
        let log = self
            .cmd(
                reqwest::Method::POST,
                "/se/log",
                Some(json!({"type": "browser"})),
            )
            .await;
        log.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// No script error was reported by the page.
    async fn assert_no_page_errors(&self) {
        let errors = self.js("return window.__batonErrors").await;
        assert_eq!(errors, json!([]), "the page reported errors");
    }
}

/// Runs one scenario with a fresh server and browser; the browser is closed even if it fails.
/// Without Chromium, skips (`require::chromium`).
async fn scenario<F, Fut>(test: &'static str, srv: TestServer, body: F)
where
    F: FnOnce(Arc<TestServer>, Arc<Browser>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(binaries) = require::chromium() else {
        return;
    };
    let _one_at_a_time = BROWSER.lock().await;
    let srv = Arc::new(srv);
    let (browser, driver) = Browser::open(&srv.url, test, &binaries).await;
    let browser = Arc::new(browser);
    let outcome = tokio::spawn(body(Arc::clone(&srv), Arc::clone(&browser))).await;
    browser.quit().await;
    drop(driver);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

// ---- helpers over the API -----------------------------------------------------------------------

fn ids(receipt: &Value) -> std::collections::HashMap<String, String> {
    receipt["tasks"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

/// Claims exactly the task `id` (it must be the only ready one) and completes it.
async fn complete_next(srv: &TestServer, agent: &str, expect: &str) {
    let claimed = srv.claim(agent, 1).await;
    assert_eq!(claimed.len(), 1, "one task ready");
    assert_eq!(claimed[0]["task"], expect, "the expected task was claimed");
    srv.finish(&claimed[0], agent).await;
}

fn js_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

// ---- the scenarios ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_follow_the_event_stream_without_reloading() {
    let srv = TestServer::start().await;
    scenario("overview", srv, |srv, b| async move {
        let wf = srv
            .submit(json!([task("fetch", &[]), task("parse", &["fetch"]), task("store", &["fetch"])]))
            .await;
        let ids = ids(&wf);
        b.goto("#/").await;
        b.wait(
            "the stream to be live and the counts loaded",
            "return document.querySelector('[data-testid=stream-status]').dataset.state === 'live' \
             && document.querySelector('[data-testid=counts]').dataset.loaded === 'true' \
             && document.querySelectorAll('[data-testid=workflow-row]').length === 1",
        )
        .await;
        let count = |state: &str| {
            format!("return document.querySelector('[data-testid=count-{state}]').dataset.count")
        };
        assert_eq!(b.js(&count("total")).await, "3");
        assert_eq!(b.js(&count("pending")).await, "1");
        assert_eq!(b.js(&count("blocked")).await, "2");
        assert_eq!(b.js(&count("completed")).await, "0");
        // Marks this document: if the page reloaded, the mark would be gone.
        b.js("window.__sameDocument = 42; return null").await;

        let agent = srv.register("worker", &["work"], 4).await;
        complete_next(&srv, &agent, &ids["fetch"]).await;
        b.wait(
            "completed = 1 and pending = 2 on the page",
            "return document.querySelector('[data-testid=count-completed]').dataset.count === '1' \
             && document.querySelector('[data-testid=count-pending]').dataset.count === '2'",
        )
        .await;
        b.wait(
            "the workflow's progress bar to show 1 of 3",
            "const p = document.querySelector('[data-testid=workflow-progress]'); \
             return p.dataset.completed === '1' && p.dataset.total === '3'",
        )
        .await;
        b.wait(
            "the throughput chart to count the completion",
            "return document.querySelector('[data-testid=throughput-summary]').dataset.total === '1'",
        )
        .await;

        for claimed in srv.claim(&agent, 2).await {
            srv.finish(&claimed, &agent).await;
        }
        b.wait(
            "completed = 3",
            "return document.querySelector('[data-testid=count-completed]').dataset.count === '3'",
        )
        .await;
        b.wait(
            "the progress bar at 3 of 3",
            "return document.querySelector('[data-testid=workflow-progress]').dataset.completed === '3'",
        )
        .await;

        // A workflow submitted while the page is open appears in the list.
        srv.submit(json!([task("next", &[])])).await;
        b.wait(
            "the new workflow's row",
            "return document.querySelectorAll('[data-testid=workflow-row]').length === 2 \
             && document.querySelector('[data-testid=count-total]').dataset.count === '4'",
        )
        .await;
        assert_eq!(
            b.js("return window.__sameDocument").await,
            42,
            "the page updated without reloading"
        );
        let bars = b
            .js("return [...document.querySelectorAll('[data-testid=throughput-bar]')].map(r => +r.dataset.count)")
            .await;
        let bars: Vec<u64> = serde_json::from_value(bars).unwrap();
        assert_eq!(bars.len(), 30, "30 buckets of 10 s");
        assert_eq!(bars.iter().sum::<u64>(), 3, "three completions counted");
        assert_eq!(srv.counts().await["completed"], 3);
        b.assert_no_page_errors().await;
        b.screenshot("overview").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_page_shows_its_history_errors_and_links() {
    let srv = TestServer::start().await;
    scenario("task", srv, |srv, b| async move {
        let wf = srv
            .submit(json!([task("flaky", &[]), task("after", &["flaky"])]))
            .await;
        let ids = ids(&wf);
        let agent = srv.register("worker", &["work"], 1).await;
        let first = srv.claim(&agent, 1).await.remove(0);
        srv.report(&first, &agent, "started", json!({})).await;
        let (status, body) = srv
            .report(
                &first,
                &agent,
                "failed",
                json!({"error": {"kind": "upstream", "message": "the API said 503"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        srv.clock.advance(1_000);
        srv.engine.tick().await.unwrap();
        srv.wait_state(&ids["flaky"], "pending").await;
        complete_next(&srv, &agent, &ids["flaky"]).await;

        b.goto(&format!("#/tasks/{}", ids["flaky"])).await;
        b.wait(
            "the task page",
            "return document.querySelector('[data-testid=task-page]')?.dataset.loaded === 'true'",
        )
        .await;
        let events = b
            .js("return [...document.querySelectorAll('[data-testid=history-entry]')].map(e => e.dataset.event)")
            .await;
        assert_eq!(
            events,
            json!([
                "submitted",
                "agent_assigned",
                "execution_started",
                "execution_failed",
                "retry",
                "agent_assigned",
                "execution_started",
                "execution_succeeded"
            ]),
            "one timeline entry per history entry, oldest first"
        );
        let text = |testid: &str| {
            format!("return document.querySelector('[data-testid={testid}]').textContent")
        };
        assert_eq!(b.js(&text("task-attempt")).await, "2 of 3");
        assert_eq!(b.js(&text("task-state")).await, "completed");
        let errors = b.js(&text("task-errors")).await;
        assert!(
            errors.as_str().unwrap().contains("the API said 503"),
            "{errors}"
        );
        let result = b.js(&text("task-result")).await;
        assert!(result.as_str().unwrap().contains(&agent), "{result}");
        assert_eq!(
            b.js(&text("task-upstream")).await,
            "none: no dependency has completed"
        );
        let timeline = b.js(&text("history")).await;
        assert!(
            timeline.as_str().unwrap().contains("upstream: the API said 503"),
            "{timeline}"
        );
        b.assert_no_page_errors().await;
        b.screenshot_page("task").await;

        // Its dependent links back to it, and says what it waits for.
        b.click(&format!(
            "[data-testid=task-dependents] a[href='#/tasks/{}']",
            ids["after"]
        ))
        .await;
        b.wait(
            "the dependent's page",
            &format!(
                "return document.querySelector('[data-testid=task-page] h1')?.textContent.startsWith('after') \
                 && document.querySelector('[data-testid=task-dependencies] a[href=\"#/tasks/{}\"]')",
                ids["flaky"]
            ),
        )
        .await;
        let waiting = b.js(&text("task-waiting")).await;
        assert!(
            waiting.as_str().unwrap().contains("no online agent")
                || waiting.as_str().unwrap().contains("agent(s) online"),
            "a pending task says why it waits: {waiting}"
        );
        // And shows the result it will be handed, under its dependency's key.
        let upstream = b
            .js("return document.querySelector('[data-testid=task-upstream] pre[data-key=flaky]')?.textContent")
            .await;
        assert!(
            upstream.as_str().is_some_and(|u| u.contains(&agent)),
            "the dependency's result: {upstream}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_page_shows_its_status_and_its_result_once_completed() {
    let srv = TestServer::start().await;
    scenario("workflow-result", srv, |srv, b| async move {
        let (status, wf) = srv
            .post(
                "/v1/workflows",
                json!({"name": "with-result", "tasks": [task("plan", &[])],
                       "outputs": {"who": {"$from": "plan", "pointer": "/by"}}}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{wf}");
        let workflow = wf["workflow"].as_str().unwrap();
        b.goto(&format!("#/workflows/{workflow}")).await;
        b.wait(
            "the status to read running",
            "return document.querySelector('[data-testid=workflow-status] [data-status]')?.dataset.status === 'running'",
        )
        .await;
        let agent = srv.register("worker", &["work"], 1).await;
        complete_next(&srv, &agent, wf["tasks"]["plan"].as_str().unwrap()).await;
        b.wait(
            "the status to turn completed, live",
            "return document.querySelector('[data-testid=workflow-status] [data-status]')?.dataset.status === 'completed'",
        )
        .await;
        let shown = b
            .js("return document.querySelector('[data-testid=workflow-result-json]').textContent")
            .await;
        let shown: Value = serde_json::from_str(shown.as_str().unwrap()).unwrap();
        assert_eq!(shown, json!({"who": agent}));
        // An ended task says when it ended, not why it waits.
        b.goto(&format!("#/tasks/{}", wf["tasks"]["plan"].as_str().unwrap()))
            .await;
        b.wait(
            "the ended task's page",
            "const dd = document.querySelector('[data-testid=task-waiting]'); \
             return !!dd && dd.previousElementSibling.textContent === 'Ended' \
             && dd.textContent.startsWith('completed ')",
        )
        .await;
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_page_shows_spend_against_budgets_and_a_budgets_pause() {
    let srv = TestServer::start().await;
    scenario("workflow-spend", srv, |srv, b| async move {
        let (status, wf) = srv
            .post(
                "/v1/workflows",
                json!({"name": "spending", "tasks": [task("a", &[]), task("b", &[])],
                       "budgets": {"usd": {"limit": 1}, "tokens": {"limit": 5000, "policy": "fail"}}}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{wf}");
        let workflow = wf["workflow"].as_str().unwrap();
        b.goto(&format!("#/workflows/{workflow}")).await;
        b.wait(
            "a row per budget, nothing spent",
            "return document.querySelectorAll('[data-testid=spend-row]').length === 2 \
             && document.querySelector('[data-unit=usd] [data-testid=spend-spent]')?.textContent === '0'",
        )
        .await;
        let agent = srv.register("spender", &["work"], 1).await;
        let claimed = srv.claim_one(&agent).await;
        let (s, _) = srv.report(&claimed, &agent, "started", json!({})).await;
        assert_eq!(s, reqwest::StatusCode::OK);
        let done = json!({"result": 1, "usage": {"usd": 1.25, "tokens": 1200}});
        let (s, body) = srv.report(&claimed, &agent, "succeeded", done).await;
        assert_eq!(s, reqwest::StatusCode::OK, "{body}");
        b.goto(&format!("#/workflows/{workflow}")).await;
        b.wait(
            "usd reached, tokens not, and the budget's pause",
            "const usd = document.querySelector('[data-unit=usd]'); \
             const tokens = document.querySelector('[data-unit=tokens]'); \
             const paused = document.querySelector('[data-testid=workflow-paused-reason]'); \
             return !!usd && usd.dataset.reached === 'true' \
             && usd.querySelector('[data-testid=spend-spent]').textContent === '1.25' \
             && tokens.dataset.reached === 'false' \
             && tokens.querySelector('[data-testid=spend-limit]').textContent === '5,000' \
             && paused?.textContent === 'budget usd 1 reached (1.25)'",
        )
        .await;
        doc_screenshot(&b, "[data-testid=workflow-spend]", "dashboard-spend").await;
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_graph_has_a_node_per_task_coloured_by_state_and_live() {
    let srv = TestServer::start().await;
    scenario("graph", srv, |srv, b| async move {
        let wf = srv
            .submit(json!([
                task("plan", &[]),
                task("research", &["plan"]),
                task("draft", &["plan"]),
                task("review", &["research", "draft"]),
                task("publish", &["review"]),
                task("notify", &["publish"])
            ]))
            .await;
        let ids = ids(&wf);
        let workflow = wf["workflow"].as_str().unwrap();
        let agent = srv.register("worker", &["work"], 1).await;
        complete_next(&srv, &agent, &ids["plan"]).await;

        b.goto(&format!("#/workflows/{workflow}")).await;
        b.wait(
            "the graph to be drawn",
            "return document.querySelector('[data-testid=graph]').dataset.ready === 'true'",
        )
        .await;
        assert_eq!(b.count("[data-testid=graph-node]").await, 6, "one node per task");
        assert_eq!(b.count("[data-testid=graph-edge]").await, 6, "one arrow per dependency");
        let node = |key: &str| format!("document.querySelector('[data-testid=graph-node][data-key={}]')", js_str(key));
        let fill = |key: &str| format!("return getComputedStyle({}.querySelector('rect')).fill", node(key));
        assert_eq!(b.js(&format!("return {}.dataset.state", node("plan"))).await, "completed");
        assert_eq!(
            b.js(&format!("return {}.classList.contains('s-completed')", node("plan"))).await,
            true
        );
        assert_eq!(b.js(&fill("plan")).await, COMPLETED_FILL);
        assert_eq!(b.js(&fill("research")).await, PENDING_FILL);
        assert_eq!(
            b.js("return getComputedStyle(document.querySelector('.legend .swatch.s-completed')).backgroundColor")
                .await,
            COMPLETED_FILL,
            "the legend shows the same colour"
        );
        assert_eq!(b.count("[data-testid=task-row]").await, 6);

        // A task completed while the page is open changes colour in place.
        b.js("window.__sameDocument = 7; return null").await;
        let claimed = srv.claim(&agent, 1).await.remove(0);
        let key = claimed["key"].as_str().unwrap().to_owned();
        srv.finish(&claimed, &agent).await;
        b.wait(
            "the completed task's node to turn completed",
            &format!("return {}.dataset.state === 'completed'", node(&key)),
        )
        .await;
        assert_eq!(b.js(&fill(&key)).await, COMPLETED_FILL);
        b.wait(
            "its table row to follow",
            &format!(
                "return document.querySelector('[data-testid=task-row][data-task=\"{}\"]').dataset.state === 'completed'",
                claimed["task"].as_str().unwrap()
            ),
        )
        .await;
        assert_eq!(b.js("return window.__sameDocument").await, 7);
        b.wait(
            "the legend to count two completed tasks",
            "return document.querySelector('[data-testid=legend-count-completed]').textContent.trim() === '2'",
        )
        .await;
        b.assert_no_page_errors().await;
        b.screenshot_page("graph").await;

        // The state filter is applied by the server.
        b.click("[data-testid=state-filter]").await;
        b.click("[data-testid=state-filter] option[value=completed]").await;
        b.wait(
            "the table to list the two completed tasks only",
            "const rows = [...document.querySelectorAll('[data-testid=task-row]')]; \
             return rows.length === 2 && rows.every(r => r.dataset.state === 'completed')",
        )
        .await;

        // Clicking a node opens its task.
        b.js(&format!("{}.dispatchEvent(new MouseEvent('click', {{bubbles: true}})); return null", node("notify")))
            .await;
        b.wait(
            "the task page of the clicked node",
            "return document.querySelector('[data-testid=task-page] h1')?.textContent.startsWith('notify')",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_task_graph_is_laid_out_and_shows_labels_when_zoomed_in() {
    let srv = TestServer::start().await;
    scenario("graph-1000", srv, |srv, b| async move {
        let tasks: Vec<Value> = (0..1000)
            .map(|i| {
                if i < 10 {
                    task(&format!("t{i}"), &[])
                } else {
                    let dep = format!("t{}", i / 100);
                    task(&format!("t{i}"), &[dep.as_str()])
                }
            })
            .collect();
        let wf = srv.submit(Value::Array(tasks)).await;
        let workflow = wf["workflow"].as_str().unwrap();
        let agent = srv.register("worker", &["work"], 10).await;
        for claimed in srv.claim(&agent, 10).await {
            srv.finish(&claimed, &agent).await;
        }
        b.goto(&format!("#/workflows/{workflow}")).await;
        b.wait_for(
            "the 1,000-task graph to be drawn",
            "return document.querySelector('[data-testid=graph]').dataset.ready === 'true'",
            BIG_GRAPH_WAIT_MS_MAX,
        )
        .await;
        assert_eq!(b.count("[data-testid=graph-node]").await, 1000);
        assert_eq!(b.count("[data-testid=graph-node][data-state=completed]").await, 10);
        assert_eq!(b.count("[data-testid=task-row]").await, 50, "the table is paginated");
        assert_eq!(
            b.count("[data-testid=graph-node] text").await,
            0,
            "no labels while zoomed out"
        );
        b.screenshot("graph-1000").await;
        for _ in 0..12 {
            b.click("[data-testid=zoom-in]").await;
        }
        b.wait(
            "labels once zoomed in",
            "return document.querySelectorAll('[data-testid=graph-node] text').length === 1000 \
             && !document.querySelector('[data-testid=graph-svg]').classList.contains('labels-off')",
        )
        .await;
        b.screenshot("graph-1000-zoomed").await;
        b.click("[data-testid=page-next]").await;
        b.wait(
            "the second page of tasks",
            "return document.querySelector('[data-testid=page-number]').textContent === 'page 2' \
             && document.querySelectorAll('[data-testid=task-row]').length === 50",
        )
        .await;
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_from_the_task_page_go_through_a_confirmation() {
    let srv = TestServer::start().await;
    scenario("cancel", srv, |srv, b| async move {
        let wf = srv
            .submit(json!([task("doomed", &[]), task("downstream", &["doomed"])]))
            .await;
        let first = ids(&wf);
        b.goto(&format!("#/tasks/{}", first["doomed"])).await;
        b.wait(
            "the task page",
            "return document.querySelector('[data-testid=task-page]')?.dataset.loaded === 'true' \
             && document.querySelector('[data-testid=stream-status]').dataset.state === 'live'",
        )
        .await;

        // Going back from the dialog changes nothing.
        b.click("[data-testid=action-cancel]").await;
        b.wait("the dialog", "return document.querySelector('dialog[open]')").await;
        b.click("[data-testid=confirm-no]").await;
        b.wait("the dialog to close", "return !document.querySelector('dialog[open]')").await;
        assert_eq!(srv.state_of(&first["doomed"]).await, "pending");

        b.click("[data-testid=action-cancel]").await;
        b.wait("the dialog", "return document.querySelector('dialog[open] [data-testid=confirm-ok]')")
            .await;
        b.type_into("[data-testid=confirm-reason]", "no longer needed").await;
        b.screenshot("cancel-dialog").await;
        b.click("[data-testid=confirm-ok]").await;
        srv.wait_state(&first["doomed"], "cancelled").await;
        srv.wait_state(&first["downstream"], "cancelled").await;
        let doomed = srv.task(&first["doomed"]).await;
        assert_eq!(doomed["detail"]["reason"]["reason"], "no longer needed");
        b.wait(
            "the page to show the cancellation",
            "return document.querySelector('[data-testid=task-state]').dataset.state === 'cancelled' \
             && document.querySelector('[data-testid=action-result]')?.textContent.includes('cancelled')",
        )
        .await;
        assert_eq!(
            b.js("return document.querySelector('[data-testid=action-cancel]').disabled").await,
            true
        );
        b.screenshot_page("cancelled").await;

        // A refusal shows the server's own explanation: a task whose retry is already
        // scheduled cannot be retried by hand.
        let wf = srv.submit(json!([task("flaky", &[])])).await;
        let flaky = ids(&wf)["flaky"].clone();
        let agent = srv.register("worker", &["work"], 1).await;
        let claimed = srv.claim(&agent, 1).await.remove(0);
        srv.report(&claimed, &agent, "started", json!({})).await;
        srv.report(
            &claimed,
            &agent,
            "failed",
            json!({"error": {"kind": "io", "message": "disk hiccup"}}),
        )
        .await;
        b.goto(&format!("#/tasks/{flaky}")).await;
        b.wait(
            "the failed task's page",
            "return document.querySelector('[data-testid=task-state]')?.dataset.state === 'failed'",
        )
        .await;
        b.click("[data-testid=action-retry]").await;
        b.wait("the dialog", "return document.querySelector('dialog[open] [data-testid=confirm-ok]')")
            .await;
        b.click("[data-testid=confirm-ok]").await;
        let shown = b
            .wait(
                "the refusal",
                "return document.querySelector('[data-testid=action-error]')?.textContent",
            )
            .await;
        let (status, problem) = srv.post(&format!("/v1/tasks/{flaky}/retry"), json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            shown.as_str().unwrap().contains(detail),
            "the page shows the server's detail `{detail}`: {shown}"
        );
        assert_eq!(srv.state_of(&flaky).await, "failed");
        b.assert_no_page_errors().await;
        b.screenshot("refused").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_page_draws_a_node_per_state_from_the_rules() {
    let srv = TestServer::start().await;
    scenario("lifecycle", srv, |srv, b| async move {
        let (status, rules) = srv.get("/v1/lifecycle?format=json").await;
        assert_eq!(status, StatusCode::OK);
        let rules = rules.as_array().unwrap().clone();
        let pairs: std::collections::HashSet<(String, String)> = rules
            .iter()
            .map(|r| (r["from"].as_str().unwrap_or("(new)").to_owned(), r["to"].as_str().unwrap().to_owned()))
            .collect();

        b.goto("#/lifecycle").await;
        b.wait(
            "the lifecycle diagram",
            "return document.querySelector('[data-testid=lifecycle-graph]').dataset.ready === 'true'",
        )
        .await;
        let states = b
            .js("return [...document.querySelectorAll('[data-testid=lifecycle-node]')].map(n => n.dataset.state)")
            .await;
        let mut states: Vec<String> = serde_json::from_value(states).unwrap();
        states.sort();
        let mut expected: Vec<String> = STATES.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(states, expected, "one node per state");
        assert_eq!(b.count("[data-testid=lifecycle-start]").await, 1);
        assert_eq!(
            b.count("[data-testid=lifecycle-edge]").await,
            pairs.len() as u64,
            "one arrow per (from, to) pair of the rules"
        );
        assert_eq!(b.count("[data-testid=lifecycle-rule]").await, rules.len() as u64);
        b.assert_no_page_errors().await;
        b.screenshot("lifecycle").await;
        b.screenshot_page("lifecycle-rules").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_page_shows_who_is_online_and_what_they_hold() {
    let srv = TestServer::start().await;
    scenario("agents", srv, |srv, b| async move {
        let wf = srv.submit(json!([task("held", &[]), task("other", &[])])).await;
        let ids = ids(&wf);
        let busy = srv.register("busy-bee", &["work", "gpu"], 2).await;
        srv.register("idle", &["work"], 1).await;
        let claimed = srv.claim(&busy, 1).await.remove(0);
        b.goto("#/agents").await;
        b.wait(
            "both agents",
            "return document.querySelectorAll('[data-testid=agent-row]').length === 2",
        )
        .await;
        let row = format!("document.querySelector('[data-testid=agent-row][data-agent=\"{busy}\"]')");
        assert_eq!(b.js(&format!("return {row}.dataset.online")).await, "true");
        let held = b
            .js(&format!("return {row}.querySelector('[data-testid=agent-leased]').textContent"))
            .await;
        assert!(held.as_str().unwrap().starts_with("1 of 2"), "{held}");
        assert_eq!(
            b.js(&format!("return !!{row}.querySelector('a[href=\"#/tasks/{}\"]')", claimed["task"].as_str().unwrap()))
                .await,
            true
        );
        // Taking the other task shows up live.
        b.wait(
            "the stream to be live",
            "return document.querySelector('[data-testid=stream-status]').dataset.state === 'live'",
        )
        .await;
        let second = srv.claim(&busy, 1).await.remove(0);
        assert!(ids.values().any(|id| id == second["task"].as_str().unwrap()));
        b.wait(
            "two tasks in hand",
            &format!("return {row}.querySelector('[data-testid=agent-leased]').textContent.startsWith('2 of 2')"),
        )
        .await;
        b.assert_no_page_errors().await;
        b.screenshot("agents").await;
    })
    .await;
}

/// A server that takes one token, `op-secret`, of `role`, which its own requests send.
async fn server_with_token(role: Role) -> TestServer {
    let (url, dir) = store_url().await;
    let mut tokens = baton_server::Tokens::none();
    match role {
        Role::Admin => tokens.add_admin("op-secret"),
        _ => tokens.add_operator("op-secret"),
    }
    let mut srv = TestServer::start_with(
        url,
        dir,
        tokens,
        Arc::new(baton_engine::ManualClock::new(T0)),
    )
    .await;
    srv.token = Some("op-secret".into());
    srv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_dashboard_asks_for_one_and_streams_with_it() {
    // An admin: the fixture registers and works an agent with it too.
    let srv = server_with_token(Role::Admin).await;
    scenario("token", srv, |srv, b| async move {
        let wf = srv.submit(json!([task("guarded", &[])])).await;
        let id = ids(&wf)["guarded"].clone();
        b.goto("#/").await;
        b.wait(
            "the token dialog",
            "return document.querySelector('dialog[open] [data-testid=token-input]')",
        )
        .await;
        b.type_into("[data-testid=token-input]", "op-secret").await;
        b.click("[data-testid=token-save]").await;
        b.wait(
            "the counts, read with the token, and the stream live",
            "return document.querySelector('[data-testid=count-total]').dataset.count === '1' \
             && document.querySelector('[data-testid=stream-status]').dataset.state === 'live'",
        )
        .await;
        let agent = srv.register("worker", &["work"], 1).await;
        complete_next(&srv, &agent, &id).await;
        b.wait(
            "the completion, streamed with the token",
            "return document.querySelector('[data-testid=count-completed]').dataset.count === '1'",
        )
        .await;
        assert_eq!(
            b.js("return localStorage.getItem('baton.token')").await,
            "op-secret"
        );
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_from_the_api_is_shown_as_text_never_run_as_markup() {
    let srv = TestServer::start().await;
    scenario("escaping", srv, |srv, b| async move {
        let hostile = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>";
        let mut spec = task("plain", &[]);
        spec["input"] = json!({ "html": hostile });
        let waits = signal_task("approval", "approve", json!({ "html": hostile }));
        let (status, wf) = srv
            .post(
                "/v1/workflows",
                json!({"name": hostile, "tasks": [spec, waits]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{wf}");
        b.goto("#/").await;
        b.wait(
            "the workflow row",
            "return document.querySelector('[data-testid=workflow-row] a')?.textContent",
        )
        .await;
        assert_eq!(
            b.js("return document.querySelector('[data-testid=workflow-row] a').textContent")
                .await,
            hostile,
            "the name is shown as it is"
        );
        b.goto(&format!("#/tasks/{}", ids(&wf)["plain"])).await;
        let input = b
            .wait(
                "the task's input",
                "return document.querySelector('[data-testid=task-input]')?.textContent",
            )
            .await;
        assert!(input.as_str().unwrap().contains("<script>"), "{input}");
        assert_eq!(
            b.count("main img, main script").await,
            0,
            "no markup was made"
        );
        assert_eq!(b.js("return window.__pwned ?? null").await, Value::Null);

        // The waiting page and its dialog show the name and the input as text too.
        b.goto("#/waiting").await;
        let name = b
            .wait(
                "the waiting task's row",
                "return document.querySelector('[data-testid=waiting-row] a')?.textContent",
            )
            .await;
        assert_eq!(name, hostile);
        let input = b
            .js("return document.querySelector('[data-testid=waiting-input]').textContent")
            .await;
        assert!(input.as_str().unwrap().contains("<script>"), "{input}");
        b.click("[data-testid=waiting-approve]").await;
        let told = b
            .wait(
                "the dialog",
                "return document.querySelector('dialog[open] form')?.textContent",
            )
            .await;
        assert!(told.as_str().unwrap().contains(hostile), "{told}");
        b.click("[data-testid=signal-back]").await;
        // A signal whose data and sender hold markup, on the workflow's page.
        let workflow = wf["workflow"].as_str().unwrap();
        let mut path = reqwest::Url::parse(&format!(
            "{}/v1/workflows/{workflow}/signals/approve",
            srv.url
        ))
        .unwrap();
        path.query_pairs_mut().append_pair("by", hostile);
        let (status, sent) = srv
            .post(
                &format!("{}?{}", path.path(), path.query().unwrap()),
                json!({ "html": hostile }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{sent}");
        b.goto(&format!("#/workflows/{workflow}")).await;
        let row = b
            .wait(
                "the signal's row",
                "return document.querySelector('[data-testid=signal-row]')?.textContent",
            )
            .await;
        assert!(row.as_str().unwrap().contains(hostile), "{row}");
        assert_eq!(
            b.count("main img, main script, dialog img, dialog script")
                .await,
            0,
            "no markup was made"
        );
        assert_eq!(b.js("return window.__pwned ?? null").await, Value::Null);

        // An operator's reason with markup, in the workflow's and the task's paused banners; on
        // the audit page, with the signal's sender (the actor) holding markup too.
        let (status, paused) = srv
            .post(
                &format!("/v1/workflows/{workflow}/pause"),
                json!({ "reason": hostile }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{paused}");
        b.goto(&format!("#/workflows/{workflow}")).await;
        let reason = b
            .wait(
                "the workflow's paused banner",
                "return document.querySelector('[data-testid=workflow-paused-reason]')?.textContent",
            )
            .await;
        assert_eq!(reason, hostile);
        b.goto(&format!("#/tasks/{}", ids(&wf)["plain"])).await;
        let reason = b
            .wait(
                "the task's paused banner",
                "return document.querySelector('[data-testid=task-paused-reason]')?.textContent",
            )
            .await;
        assert_eq!(reason, hostile);
        b.goto("#/audit").await;
        let rows = b
            .wait(
                "the pause and the signal in the audit log",
                "const rows = [...document.querySelectorAll('[data-testid=audit-row]')]; \
                 return rows.length === 2 && rows.map(r => [r.dataset.action, \
                   r.querySelector('[data-testid=audit-actor]').textContent, \
                   r.querySelector('[data-testid=audit-reason]').textContent])",
            )
            .await;
        assert_eq!(
            rows,
            json!([["pause", "local", hostile], ["signal", hostile, "—"]])
        );
        assert_eq!(
            b.count("main img, main script").await,
            0,
            "no markup was made"
        );
        assert_eq!(b.js("return window.__pwned ?? null").await, Value::Null);

        // A schedule's name holds only letters, digits and `-_.:/`; its workflow template's
        // name and input may hold markup, shown in the list and on its page.
        let mut templated = task("plain", &[]);
        templated["input"] = json!({ "html": hostile });
        let (status, created) = srv
            .post(
                "/v1/schedules",
                json!({"name": "hostile", "cron": "0 0 * * * *",
                       "workflow": {"name": hostile, "tasks": [templated]}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        b.goto("#/schedules").await;
        let submits = b
            .wait(
                "the schedule's row",
                "return document.querySelector('[data-testid=schedule-submits]')?.textContent",
            )
            .await;
        assert!(submits.as_str().unwrap().contains(hostile), "{submits}");
        b.goto("#/schedules/hostile").await;
        let template = b
            .wait(
                "the schedule's template",
                "return document.querySelector('[data-testid=schedule-template]')?.textContent",
            )
            .await;
        let template: Value = serde_json::from_str(template.as_str().unwrap()).unwrap();
        assert_eq!(template["name"], hostile);
        assert_eq!(template["tasks"][0]["input"]["html"], hostile);
        assert_eq!(
            b.count("main img, main script").await,
            0,
            "no markup was made"
        );
        assert_eq!(b.js("return window.__pwned ?? null").await, Value::Null);

        // A rate limit's key may hold markup too.
        let mut url = reqwest::Url::parse("http://x/v1/limits/").unwrap();
        url.path_segments_mut().unwrap().pop_if_empty().push(hostile);
        let put = srv
            .send_json(
                reqwest::Method::PUT,
                url.path(),
                None,
                &json!({"units": 1, "per_ms": 1000}),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{}", put.json());
        b.goto("#/limits").await;
        let key = b
            .wait(
                "the limit's row",
                "return document.querySelector('[data-testid=limit-name]')?.textContent",
            )
            .await;
        assert_eq!(key, hostile, "the key is shown as it is");
        b.click("[data-testid=limit-delete]").await;
        let message = b
            .wait(
                "the delete confirmation",
                "return document.querySelector('dialog[open] [data-testid=confirm-message]')?.textContent",
            )
            .await;
        assert!(message.as_str().unwrap().contains(hostile), "{message}");
        b.click("[data-testid=confirm-no]").await;
        assert_eq!(
            b.count("main img, main script, dialog img, dialog script").await,
            0,
            "no markup was made"
        );
        assert_eq!(b.js("return window.__pwned ?? null").await, Value::Null);
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_with_their_types_and_policy() {
    let srv = TestServer::start().await;
    let page = srv.raw(reqwest::Method::GET, "/", None, None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&page.body).contains("/assets/js/main.js"));
    for (path, kind) in [
        ("/assets/js/main.js", "text/javascript; charset=utf-8"),
        ("/assets/layout.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/dagre.min.js", "text/javascript; charset=utf-8"),
        ("/assets/layout-worker.js", "text/javascript; charset=utf-8"),
        ("/assets/dagre/LICENSE", "text/plain; charset=utf-8"),
        ("/reference", "text/html; charset=utf-8"),
        ("/assets/reference.js", "text/javascript; charset=utf-8"),
        (
            "/assets/redoc/redoc.standalone.js",
            "text/javascript; charset=utf-8",
        ),
        ("/assets/redoc/LICENSE", "text/plain; charset=utf-8"),
        (
            "/assets/redoc/THIRD-PARTY-LICENSES.txt",
            "text/plain; charset=utf-8",
        ),
    ] {
        let res = srv.raw(reqwest::Method::GET, path, None, None, None).await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
        assert_eq!(res.content_type.as_deref(), Some(kind), "{path}");
    }
    let res = srv
        .client
        .get(format!("{}/", srv.url))
        .send()
        .await
        .unwrap();
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    // The API reference lets Redoc write its styles, and nothing more.
    let reference = srv
        .client
        .get(format!("{}/reference", srv.url))
        .send()
        .await
        .unwrap();
    let csp = reference.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("style-src 'self' 'unsafe-inline'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let etag = res.headers()["etag"].clone();
    let again = srv
        .client
        .get(format!("{}/", srv.url))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let missing = srv
        .raw(reqwest::Method::GET, "/assets/nope.js", None, None, None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_loads_all_its_modules_without_a_browser_error() {
    let srv = TestServer::start().await;
    scenario("modules", srv, |srv, b| async move {
        let wf = srv
            .submit(json!([task("first", &[]), task("second", &["first"])]))
            .await;
        let workflow = wf["workflow"].as_str().unwrap().to_owned();
        let task = ids(&wf)["second"].clone();
        srv.register("worker", &["work"], 1).await;
        let (status, created) = srv
            .post(
                "/v1/schedules",
                json!({"name": "nightly", "cron": "0 0 2 * * *", "workflow": {"tasks": [common::task("a", &[])]}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let loaded = |testid: &str, mark: &str| {
            format!("return document.querySelector('[data-testid={testid}]')?.dataset.{mark} === 'true'")
        };
        let pages = [
            ("#/".to_owned(), loaded("counts", "loaded")),
            (format!("#/workflows/{workflow}"), loaded("graph", "ready")),
            (format!("#/tasks/{task}"), loaded("task-page", "loaded")),
            (
                "#/agents".to_owned(),
                "return document.querySelector('[data-testid=agent-row]') !== null".to_owned(),
            ),
            ("#/lifecycle".to_owned(), loaded("lifecycle-graph", "ready")),
            ("#/waiting".to_owned(), loaded("waiting-panel", "loaded")),
            ("#/schedules".to_owned(), loaded("schedules-panel", "loaded")),
            ("#/schedules/nightly".to_owned(), loaded("schedule-page", "loaded")),
            ("#/limits".to_owned(), loaded("limits-panel", "loaded")),
            ("#/audit".to_owned(), loaded("audit-panel", "loaded")),
        ];
        for (hash, shown) in pages {
            // A new document for each page: each loads every module again (revalidated).
            b.blank().await;
            b.goto(&hash).await;
            b.wait(
                &format!("main.js to have run on {hash}: every module it imports loaded"),
                "return document.documentElement.dataset.ready === '1'",
            )
            .await;
            b.wait(&format!("{hash} to show its data"), &shown).await;
            b.assert_no_page_errors().await;
            assert_eq!(b.console_errors().await, Vec::<String>::new(), "on {hash}");
        }

        // The layout worker runs under the policy sent with its own script: dagre loads and
        // lays out (were it refused, the page would lay out on its main thread, unnoticed).
        b.js(
            "const w = new Worker('/assets/layout-worker.js'); \
             w.onmessage = (m) => { window.__laidOut = m.data; }; \
             w.onerror = (e) => { window.__laidOut = { error: String(e.message) }; }; \
             w.postMessage({ id: 1, graph: { options: {}, nodes: [{ id: 'a', width: 10, height: 10 }, \
               { id: 'b', width: 10, height: 10 }], edges: [{ v: 'a', w: 'b' }] } }); \
             return null",
        )
        .await;
        let laid_out = b
            .wait("the worker's layout", "return window.__laidOut")
            .await;
        assert_eq!(laid_out["error"], Value::Null, "{laid_out}");
        assert_eq!(laid_out["result"]["nodes"].as_array().unwrap().len(), 2);
        assert_eq!(b.console_errors().await, Vec::<String>::new());
    })
    .await;
}

/// The modules a script imports, as paths resolved against its own: the dashboard writes each
/// static import on a line of its own (`import { h } from './dom.js';`).
fn module_imports(path: &str, source: &str) -> Vec<String> {
    let dir = &path[..=path.rfind('/').unwrap()];
    source
        .lines()
        .filter(|line| line.starts_with("import "))
        .map(|line| {
            let quoted = line.trim_end_matches(';').trim_end_matches('\'');
            let spec = &quoted[quoted.rfind('\'').unwrap() + 1..];
            let name = spec
                .strip_prefix("./")
                .unwrap_or_else(|| panic!("{path}: a relative import: {line}"));
            format!("{dir}{name}")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_module_the_page_imports_is_served_as_javascript_under_the_policy() {
    let srv = TestServer::start().await;
    let get = |path: String| {
        let req = srv.client.get(format!("{}{path}", srv.url));
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            let headers = res.headers().clone();
            (headers, res.text().await.unwrap())
        }
    };
    let (page_headers, index) = get("/".into()).await;
    let policy = page_headers["content-security-policy"].clone();
    assert!(
        !policy.to_str().unwrap().contains("unsafe"),
        "no unsafe-inline, no unsafe-eval: {policy:?}"
    );
    // The entry points: <script type="module" src="…">.
    let tag = "<script type=\"module\" src=\"";
    let mut queue: Vec<String> = index
        .match_indices(tag)
        .map(|(at, _)| {
            let src = &index[at + tag.len()..];
            src[..src.find('"').unwrap()].to_owned()
        })
        .collect();
    assert_eq!(queue, ["/assets/js/main.js"], "one entry module");
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let (headers, source) = get(path.clone()).await;
        assert_eq!(
            headers["content-type"], "text/javascript; charset=utf-8",
            "{path}: a module is refused under any other type"
        );
        assert_eq!(headers["content-security-policy"], policy, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert!(headers.contains_key("etag"), "{path}");
        queue.extend(module_imports(&path, &source));
    }
    for page in ["overview", "workflow", "task", "agents", "lifecycle"] {
        let module = format!("/assets/js/{page}.js");
        assert!(seen.contains(&module), "{module} is imported: {seen:?}");
    }
    // The layout worker runs under the policy sent with its own script.
    let (headers, _) = get("/assets/layout-worker.js".into()).await;
    assert_eq!(headers["content-security-policy"], policy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_in_a_tasks_input_and_result_are_download_links() {
    let srv = TestServer::start().await;
    scenario("artifacts", srv, |srv, b| async move {
        let put = |bytes: &'static [u8]| {
            let srv = Arc::clone(&srv);
            async move {
                let res = srv
                    .client
                    .put(format!("{}/v1/artifacts", srv.url))
                    .body(bytes)
                    .send()
                    .await
                    .unwrap();
                let body: Value = res.json().await.unwrap();
                body["artifact"].as_str().unwrap().to_owned()
            }
        };
        let doc = put(b"the input document").await;
        let report = put(b"the final report").await;
        let mut spec = task("review", &[]);
        spec["input"] = json!({"doc": {"$artifact": doc}, "pages": 3});
        let wf = srv.submit(json!([spec])).await;
        let agent = srv.register("w", &["work"], 1).await;
        let claimed = srv.claim(&agent, 1).await.remove(0);
        srv.report(&claimed, &agent, "started", json!({})).await;
        let (status, body) = srv
            .report(
                &claimed,
                &agent,
                "succeeded",
                json!({"result": {"report": {"$artifact": report}}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");

        b.goto(&format!("#/tasks/{}", ids(&wf)["review"])).await;
        let hrefs = |testid: &str| {
            format!(
                "return [...document.querySelectorAll('[data-testid={testid}] a')]\
                 .map(a => a.getAttribute('href'))"
            )
        };
        let input = b
            .wait("the input's artifact link", &hrefs("task-input-artifacts"))
            .await;
        assert_eq!(
            input,
            json!([format!("/v1/artifacts/{}", doc.replace(':', "%3A"))])
        );
        let result = b
            .wait(
                "the result's artifact link",
                &hrefs("task-result-artifacts"),
            )
            .await;
        assert_eq!(
            result,
            json!([format!("/v1/artifacts/{}", report.replace(':', "%3A"))])
        );
        // The JSON is still shown as it is, beside the links.
        let shown = b
            .js("return document.querySelector('[data-testid=task-input]').textContent")
            .await;
        assert!(shown.as_str().unwrap().contains(&doc), "{shown}");
        // The link serves the artifact's bytes.
        b.js(
            "fetch(document.querySelector('[data-testid=task-result-artifacts] a').href)\
              .then(r => r.text()).then(t => { window.__artifact = t; }); return null",
        )
        .await;
        let got = b.wait("the download", "return window.__artifact").await;
        assert_eq!(got, "the final report");
        b.assert_no_page_errors().await;
    })
    .await;
}

// ---- real workflows: groups, search, timeline, the workflows filter ----------------------------

/// Longest wait for the 10,000-task workflow's graph (fetch, grouping and layout).
const HUGE_GRAPH_WAIT_MS_MAX: u64 = 120_000;

/// Writes a screenshot of the element `css` into `docs/NAME.png`, for the README.
async fn doc_screenshot(b: &Browser, css: &str, name: &str) {
    // The browser shoots what the window shows of the element: bring all of it in.
    b.js(&format!(
        "document.querySelector({}).scrollIntoView(); return null",
        js_str(css)
    ))
    .await;
    let id = b.element(css).await;
    let v = b
        .cmd(
            reqwest::Method::GET,
            &format!("/element/{id}/screenshot"),
            None,
        )
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    std::fs::write(docs.join(format!("{name}.png")), &png).unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), &png).unwrap();
}

/// A fan-out over `from`'s result at `pointer`.
fn fan_out(key: &str, from: &str, pointer: &str) -> Value {
    let mut t = task(key, &[from]);
    t["for_each"] = json!({"$from": from, "pointer": pointer});
    t
}

/// Claims (up to 256 at a time) and completes tasks until `n` have been completed, moving the
/// clock `step_ms` between each start and success so that the timeline has widths.
async fn complete_some(srv: &TestServer, agent: &str, n: usize, step_ms: u64) {
    let mut done = 0;
    while done < n {
        let claimed = srv.claim_within(agent, (n - done).min(256)).await;
        assert!(!claimed.is_empty(), "tasks to complete");
        for c in &claimed {
            srv.report(c, agent, "started", json!({})).await;
        }
        srv.clock.advance(step_ms);
        for c in &claimed {
            srv.report(c, agent, "succeeded", json!({"result": {"ok": true}}))
                .await;
        }
        done += claimed.len();
    }
}

/// The demo's shape, 252 tasks: a plan that fails once and then succeeds, an outline that
/// decomposes into 125 sections, a fan-out over 120 topics, a task that fails for good and
/// has its compensation run.
async fn submit_demo_like(srv: &TestServer) -> (String, std::collections::HashMap<String, String>) {
    let mut announce = task("announce", &["plan"]);
    announce["retry"]["max_attempts"] = json!(1);
    announce["compensation"] = json!({"key": "announce-undo", "capabilities": ["work"]});
    let (status, wf) = srv
        .post(
            "/v1/workflows",
            json!({"name": "book-report", "tasks": [
                task("plan", &[]),
                task("outline", &["plan"]),
                fan_out("write", "plan", "/topics"),
                task("assemble", &["outline", "write"]),
                task("publish", &["assemble"]),
                announce,
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");
    let ids = ids(&wf);
    let agent = srv.register("worker", &["work"], 256).await;
    // plan: fails once, then its retry succeeds.
    let plan = srv.claim_one(&agent).await;
    srv.clock.advance(1_500);
    srv.report(&plan, &agent, "started", json!({})).await;
    srv.clock.advance(4_000);
    let (s, b) = srv
        .report(
            &plan,
            &agent,
            "failed",
            json!({"error": {"kind": "upstream", "message": "the model timed out"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    srv.clock.advance(1_500);
    srv.engine.tick().await.unwrap();
    let plan = srv.claim_one(&agent).await;
    srv.clock.advance(500);
    srv.report(&plan, &agent, "started", json!({})).await;
    srv.clock.advance(5_000);
    let topics: Vec<u32> = (0..120).collect();
    let (s, b) = srv
        .report(
            &plan,
            &agent,
            "succeeded",
            json!({"result": {"topics": topics}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    srv.clock.advance(1_000);
    // outline and announce are ready; the fan-out expands.
    let ready = srv.claim_within(&agent, 2).await;
    let mut ready = ready.into_iter();
    let (mut outline, mut announce) = (None, None);
    for c in ready.by_ref() {
        match c["key"].as_str().unwrap() {
            "outline" => outline = Some(c),
            "announce" => announce = Some(c),
            // The fan-out may already have expanded (the effects loop runs meanwhile): an
            // item claimed now goes back, to be worked on with the others below.
            item if item.starts_with("write[") => {
                let (s, b) = srv.report(&c, &agent, "released", json!({})).await;
                assert_eq!(s, StatusCode::OK, "{b}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    let announce = match announce {
        Some(a) => a,
        None => srv.claim_one(&agent).await,
    };
    let outline = match outline {
        Some(o) => o,
        None => srv.claim_one(&agent).await,
    };
    srv.report(&outline, &agent, "started", json!({})).await;
    srv.report(&announce, &agent, "started", json!({})).await;
    srv.clock.advance(3_000);
    let sections: Vec<Value> = (1..=125)
        .map(|i| json!({"key": format!("section-{i}"), "capabilities": ["work"]}))
        .collect();
    let (s, b) = srv
        .report(&outline, &agent, "subtasks", json!({ "tasks": sections }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    srv.report(
        &outline,
        &agent,
        "succeeded",
        json!({"result": {"sections": 125}}),
    )
    .await;
    srv.report(
        &announce,
        &agent,
        "failed",
        json!({"error": {"kind": "refused", "message": "the list is closed"}}),
    )
    .await;
    srv.clock.advance(2_000);
    // Most items and some sections done, a few running: a workflow in progress.
    complete_some(srv, &agent, 200, 2_000).await;
    (wf["workflow"].as_str().unwrap().to_owned(), ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_workflows_graph_groups_sub_tasks_and_items_and_finds_a_task() {
    let srv = TestServer::start().await;
    scenario("graph-groups", srv, |srv, b| async move {
        let (workflow, ids) = submit_demo_like(&srv).await;
        // The compensation is created by the engine's effects, after the failure's answer.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let total = srv.get(&format!("/v1/workflows/{workflow}")).await.1["counts"]["total"].clone();
            if total == 252 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{total} tasks, not 252");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        b.goto(&format!("#/workflows/{workflow}")).await;
        let ready = "return document.querySelector('[data-testid=graph]').dataset.ready === 'true'";
        b.wait("the graph to be drawn", ready).await;
        // Two groups of more than 20 start collapsed: 125 sections and 120 items.
        let groups = b
            .js("return [...document.querySelectorAll('[data-testid=graph-group]')].map(g => g.dataset.key + ':' + g.dataset.count).sort()")
            .await;
        assert_eq!(groups, json!(["outline:125", "write:120"]));
        assert_eq!(b.count("[data-testid=graph-node]").await, 7, "the six tasks and the compensation");
        let edge = |t: &str| format!("[data-testid=graph-edge][data-type={t}]");
        assert_eq!(b.count(&edge("parent")).await, 1, "outline to its sections");
        assert_eq!(b.count(&edge("comp")).await, 1, "announce to announce-undo");
        assert_eq!(
            b.js(&format!("return document.querySelector('{}').dataset.from", edge("comp"))).await,
            ids["announce"]
        );
        b.wait("the timeline", "return document.querySelector('[data-testid=timeline]').dataset.ready === 'true'")
            .await;
        b.assert_no_page_errors().await;
        doc_screenshot(&b, "section[aria-labelledby=graph-h]", "dashboard-graph").await;

        // The plan failed once and then succeeded: its row has both attempts.
        let bars = b
            .js(&format!(
                "return [...document.querySelectorAll('[data-testid=timeline-row][data-task=\"{}\"] [data-testid=timeline-bar]')]\
                 .map(r => r.dataset.state + '@' + r.dataset.attempt)",
                ids["plan"]
            ))
            .await;
        assert_eq!(
            bars,
            json!(["pending@1", "assigned@1", "executing@1", "failed@1", "pending@2", "assigned@2", "executing@2"])
        );
        assert_eq!(
            b.js(&format!(
                "return document.querySelector('[data-testid=timeline-row][data-task=\"{}\"] [data-testid=timeline-end]').dataset.state",
                ids["plan"]
            ))
            .await,
            "completed"
        );
        let title = b
            .js("return document.querySelector('[data-testid=timeline-bar][data-state=failed] title').textContent")
            .await;
        assert!(title.as_str().unwrap().starts_with("plan · failed · attempt 1"), "{title}");
        assert_eq!(
            b.count("[data-testid=timeline-row][data-group]").await,
            2,
            "the collapsed groups are one row each"
        );
        doc_screenshot(&b, "section[aria-labelledby=timeline-h]", "dashboard-timeline").await;

        // Expanding a group draws its members; its parent's − collapses it again.
        b.js("document.querySelector('[data-testid=graph-group][data-key=outline]').dispatchEvent(new MouseEvent('click', {bubbles: true})); return null")
            .await;
        b.wait(
            "the sections drawn",
            "return document.querySelector('[data-testid=graph]').dataset.ready === 'true' \
             && document.querySelectorAll('[data-testid=graph-node][data-key^=section-]').length === 125",
        )
        .await;
        assert_eq!(b.count("[data-testid=graph-group]").await, 1);
        b.screenshot("graph-groups-expanded").await;
        b.js("document.querySelector('[data-testid=group-collapse]').dispatchEvent(new MouseEvent('click', {bubbles: true})); return null")
            .await;
        b.wait(
            "the sections collapsed again",
            "return document.querySelector('[data-testid=graph]').dataset.ready === 'true' \
             && document.querySelectorAll('[data-testid=graph-group]').length === 2",
        )
        .await;

        // Search: the item is inside a collapsed group, which opens; the item is centred.
        b.type_into("[data-testid=graph-search]", "write[77]").await;
        b.click("[data-testid=graph-search-go]").await;
        let found = b
            .wait("the item found", "return document.querySelector('[data-testid=graph-search-result]').dataset.found")
            .await;
        let item = b
            .js("return document.querySelector('[data-testid=graph-node][data-key=\"write[77]\"]')?.dataset.task")
            .await;
        assert_eq!(found, item);
        assert_eq!(
            b.js("return document.querySelector('[data-testid=graph-node].found').dataset.key").await,
            "write[77]"
        );
        let centred = b
            .js("const r = document.querySelector('[data-testid=graph-node].found').getBoundingClientRect(); \
                 const w = document.querySelector('[data-testid=graph-svg]').getBoundingClientRect(); \
                 return Math.abs((r.left + r.right) / 2 - (w.left + w.right) / 2) < 40 \
                   && Math.abs((r.top + r.bottom) / 2 - (w.top + w.bottom) / 2) < 40")
            .await;
        assert_eq!(centred, true, "the found task is in the middle of the graph");
        b.screenshot("graph-search").await;
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_task_workflow_is_drawn_as_groups() {
    let srv = TestServer::start().await;
    scenario("graph-10k", srv, |srv, b| async move {
        const CHAPTERS: usize = 40;
        const PARAGRAPHS: usize = 243;
        const SECTIONS: usize = 198;
        let mut tasks = vec![task("outline", &[])];
        for c in 0..CHAPTERS {
            tasks.push(task(&format!("chapter-{c:02}"), &[]));
            tasks.push(fan_out(&format!("draft-{c:02}"), &format!("chapter-{c:02}"), "/paragraphs"));
        }
        let drafts: Vec<String> = (0..CHAPTERS).map(|c| format!("draft-{c:02}")).collect();
        let mut deps: Vec<&str> = drafts.iter().map(String::as_str).collect();
        deps.push("outline");
        tasks.push(task("assemble", &deps));
        let wf = srv.submit(Value::Array(tasks)).await;
        let workflow = wf["workflow"].as_str().unwrap().to_owned();
        let agent = srv.register("worker", &["work"], 256).await;
        let paragraphs: Vec<usize> = (0..PARAGRAPHS).collect();
        let mut started = Vec::new();
        while started.len() < CHAPTERS + 1 {
            started.extend(srv.claim_within(&agent, 64).await);
        }
        for c in &started {
            srv.report(c, &agent, "started", json!({})).await;
            if c["key"] == "outline" {
                let sections: Vec<Value> = (0..SECTIONS)
                    .map(|i| json!({"key": format!("section-{i}"), "capabilities": ["work"]}))
                    .collect();
                let (s, body) = srv.report(c, &agent, "subtasks", json!({ "tasks": sections })).await;
                assert_eq!(s, StatusCode::CREATED, "{body}");
            }
            srv.report(c, &agent, "succeeded", json!({"result": {"paragraphs": paragraphs}}))
                .await;
        }
        // Every fan-out expanded: 10,000 tasks.
        let start = Instant::now();
        loop {
            let total = srv.get(&format!("/v1/workflows/{workflow}")).await.1["counts"]["total"].clone();
            if total == 10_000 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the fan-outs expand: {total}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        complete_some(&srv, &agent, 600, 1_000).await;

        b.goto(&format!("#/workflows/{workflow}")).await;
        let opened = Instant::now();
        b.wait_for(
            "the 10,000-task graph to be drawn",
            "return document.querySelector('[data-testid=graph]').dataset.ready === 'true'",
            HUGE_GRAPH_WAIT_MS_MAX,
        )
        .await;
        let took = opened.elapsed();
        let layout_ms = b.js("return document.querySelector('[data-testid=graph]').dataset.loadMs").await;
        println!(
            "10,000 tasks: graph drawn {} ms after opening the page (fetch, grouping and layout in the page: {layout_ms} ms)",
            took.as_millis()
        );
        assert_eq!(b.js("return document.querySelector('[data-testid=graph]').dataset.nodes").await, "10000");
        assert_eq!(b.count("[data-testid=graph-group]").await, (CHAPTERS + 1) as u64);
        let members: u64 = serde_json::from_value::<Vec<u64>>(
            b.js("return [...document.querySelectorAll('[data-testid=graph-group]')].map(g => +g.dataset.count)").await,
        )
        .unwrap()
        .iter()
        .sum();
        assert_eq!(members, (CHAPTERS * PARAGRAPHS + SECTIONS) as u64, "every item and section is in a group");
        assert_eq!(b.count("[data-testid=graph-node]").await, (2 * CHAPTERS + 2) as u64);
        b.assert_no_page_errors().await;
        doc_screenshot(&b, "section[aria-labelledby=graph-h]", "dashboard-graph-10k").await;

        // Search finds a paragraph deep in a collapsed fan-out.
        b.type_into("[data-testid=graph-search]", "draft-17[200]").await;
        b.click("[data-testid=graph-search-go]").await;
        b.wait_for(
            "the paragraph found and drawn",
            "return document.querySelector('[data-testid=graph-node].found')?.dataset.key === 'draft-17[200]'",
            HUGE_GRAPH_WAIT_MS_MAX,
        )
        .await;
        assert_eq!(b.count("[data-testid=graph-group]").await, CHAPTERS as u64);
        b.screenshot("graph-10k-search").await;
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflows_list_filters_by_status_and_name() {
    let srv = TestServer::start().await;
    scenario("workflow-filter", srv, |srv, b| async move {
        let submit = |name: &'static str, key: &'static str| {
            let srv = Arc::clone(&srv);
            async move {
                let (s, wf) = srv.post("/v1/workflows", json!({"name": name, "tasks": [task(key, &[])]})).await;
                assert_eq!(s, StatusCode::CREATED, "{wf}");
                ids(&wf)[key].clone()
            }
        };
        let done = submit("nightly-report", "a").await;
        let agent = srv.register("worker", &["work"], 1).await;
        complete_next(&srv, &agent, &done).await;
        let cancelled = submit("nightly-backup", "b").await;
        srv.post(&format!("/v1/tasks/{cancelled}/cancel"), json!({})).await;
        submit("weekly-digest", "c").await;
        b.goto("#/").await;
        let rows = "return document.querySelector('[data-testid=workflows]').closest('section').dataset.loaded === 'true' \
                    && [...document.querySelectorAll('[data-testid=workflow-row]')].map(r => r.dataset.status).join(',')";
        assert_eq!(b.wait("three workflows", rows).await, "running,cancelled,completed");
        b.click("[data-testid=workflow-status-filter]").await;
        b.click("[data-testid=workflow-status-filter] option[value=completed]").await;
        b.wait("the completed one only", &rows.replace("join(',')", "join(',') === 'completed'")).await;
        b.click("[data-testid=workflow-status-filter] option[value='']").await;
        b.type_into("[data-testid=workflow-name-filter]", "NIGHTLY").await;
        b.wait("the two nightly ones", &rows.replace("join(',')", "join(',') === 'cancelled,completed'")).await;
        b.click("[data-testid=workflow-status-filter] option[value=running]").await;
        b.wait(
            "none running among the nightly ones",
            "return document.querySelectorAll('[data-testid=workflow-row]').length === 0 \
             && document.querySelector('[data-testid=workflows]').closest('section').textContent.includes('No workflow matches')",
        )
        .await;
        b.assert_no_page_errors().await;
    })
    .await;
}

/// A task that waits for the signal `signal`, with an input for the person who decides.
fn signal_task(key: &str, signal: &str, input: Value) -> Value {
    json!({"key": key, "input": input, "wait_for": {"signal": signal, "timeout_ms": 3_600_000}})
}

/// Submits a workflow named `name`; returns its id and its tasks' ids by key.
async fn submit_named(
    srv: &TestServer,
    name: &str,
    tasks: Value,
) -> (String, std::collections::HashMap<String, String>) {
    let (status, wf) = srv
        .post("/v1/workflows", json!({"name": name, "tasks": tasks}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{wf}");
    (wf["workflow"].as_str().unwrap().to_owned(), ids(&wf))
}

/// The signals a workflow was sent, through the API.
async fn signals_of(srv: &TestServer, wf: &str) -> Vec<Value> {
    let (status, list) = srv.get(&format!("/v1/workflows/{wf}/signals")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["signals"].as_array().unwrap().clone()
}

const WAITING_ROWS: &str = "return document.querySelector('[data-testid=waiting-panel]')?.dataset.loaded === 'true' \
     && document.querySelector('[data-testid=stream-status]').dataset.state === 'live' \
     && [...document.querySelectorAll('[data-testid=waiting-row]')].map(r => r.dataset.task).sort().join(',')";

fn rows_are(ids: &[&str]) -> String {
    let mut ids: Vec<&str> = ids.to_vec();
    ids.sort();
    WAITING_ROWS.replace(
        ".join(',')",
        &format!(".join(',') === {}", js_str(&ids.join(","))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_and_rejects_waiting_tasks_from_the_waiting_page() {
    let srv = TestServer::start().await;
    scenario("waiting", srv, |srv, b| async move {
        let mut deploy = task("deploy", &["review"]);
        deploy["input"] = json!({"approval": {"$from": "review"}});
        let (release, r) = submit_named(
            &srv,
            "release",
            json!([signal_task("review", "approve", json!({"plan": "spend $40"})), deploy]),
        )
        .await;
        let (refund, f) = submit_named(
            &srv,
            "refund",
            json!([signal_task("check", "go", json!({"amount": 1200}))]),
        )
        .await;
        let (review, check) = (r["review"].clone(), f["check"].clone());

        b.goto("#/waiting").await;
        b.wait("both waiting tasks", &rows_are(&[&review, &check])).await;
        assert_eq!(
            b.js("return document.querySelector('[data-testid=waiting-count]').dataset.count")
                .await,
            "2",
            "the header counts them"
        );
        let row = |id: &str, what: &str| {
            format!("[data-testid=waiting-row][data-task='{id}'] [data-testid={what}]")
        };
        let shown = b
            .js(&format!(
                "return document.querySelector({}).closest('tr').innerText",
                js_str(&row(&review, "waiting-signal"))
            ))
            .await;
        for part in ["release", "review", "approve", "spend $40"] {
            assert!(shown.as_str().unwrap().contains(part), "{part} in {shown}");
        }

        // A new waiting task appears without reloading the page.
        let (_, late) = submit_named(
            &srv,
            "late",
            json!([signal_task("sign-off", "approve", json!(null))]),
        )
        .await;
        let late = late["sign-off"].clone();
        b.wait("the new task", &rows_are(&[&review, &check, &late]))
            .await;
        doc_screenshot(&b, "[data-testid=waiting-panel]", "dashboard-waiting").await;

        // Data that is not JSON is refused in the dialog: nothing is sent.
        b.click(&row(&review, "waiting-approve")).await;
        b.wait(
            "the approval dialog",
            "return document.querySelector('dialog[open] [data-testid=signal-data]')?.value.includes('\"approved\": true')",
        )
        .await;
        b.clear("[data-testid=signal-data]").await;
        b.type_into("[data-testid=signal-data]", "{\"approved\": tru").await;
        b.click("[data-testid=signal-next]").await;
        let error = b
            .wait(
                "the JSON error",
                "return document.querySelector('dialog[open] [data-testid=signal-dialog-error]')?.textContent",
            )
            .await;
        assert!(error.as_str().unwrap().contains("Not valid JSON"), "{error}");
        b.screenshot("waiting-invalid-json").await;
        assert_eq!(b.count("dialog[open] [data-testid=signal-data]").await, 1, "the editor stays open");
        assert_eq!(signals_of(&srv, &release).await, Vec::<Value>::new(), "nothing was sent");
        assert_eq!(srv.state_of(&review).await, "pending");

        // Valid data, a name, then the confirmation: one signal, recorded with the name.
        b.clear("[data-testid=signal-data]").await;
        b.type_into(
            "[data-testid=signal-data]",
            "{\"approved\": true, \"note\": \"ship it\"}",
        )
        .await;
        b.clear("[data-testid=signal-by]").await;
        b.type_into("[data-testid=signal-by]", "alice").await;
        b.click("[data-testid=signal-next]").await;
        let message = b
            .wait(
                "the confirmation",
                "return document.querySelector('dialog[open] [data-testid=confirm-message]')?.textContent",
            )
            .await;
        assert!(message.as_str().unwrap().contains("alice"), "{message}");
        b.screenshot("waiting-confirm").await;
        b.click("[data-testid=confirm-ok]").await;
        let done = srv.wait_state(&review, "completed").await;
        assert_eq!(done["result"], json!({"approved": true, "note": "ship it"}));
        let received: Vec<&Value> = done["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"] == "signal_received")
            .collect();
        assert_eq!(received.len(), 1, "{done}");
        assert_eq!(received[0]["data"]["sent_by"], "alice", "{}", received[0]);
        let sent = signals_of(&srv, &release).await;
        assert_eq!(sent.len(), 1, "sent once: {sent:?}");
        assert!(
            sent[0]["idempotency_key"].as_str().is_some_and(|k| !k.is_empty()),
            "sent with an Idempotency-Key: {}",
            sent[0]
        );
        // The data flows on to the dependent.
        let agent = srv.register("deployer", &["work"], 1).await;
        let claimed = srv.claim_one(&agent).await;
        assert_eq!(claimed["key"], "deploy");
        assert_eq!(claimed["input"]["approval"]["note"], "ship it");

        let outcome = b
            .wait(
                "the outcome",
                "const o = document.querySelector('[data-testid=signal-outcome]'); \
                 return o?.dataset.outcome === 'delivered' && o.textContent",
            )
            .await;
        assert!(outcome.as_str().unwrap().contains("review (completed)"), "{outcome}");
        b.wait("the approved task to leave the list", &rows_are(&[&check, &late]))
            .await;

        // Reject: a reason is required; the name is remembered.
        b.click(&row(&check, "waiting-reject")).await;
        b.wait(
            "the rejection dialog",
            "return document.querySelector('dialog[open] [data-testid=signal-reason]')",
        )
        .await;
        assert_eq!(
            b.js("return document.querySelector('[data-testid=signal-by]').value").await,
            "alice"
        );
        b.click("[data-testid=signal-next]").await;
        let error = b
            .wait(
                "the missing reason",
                "return document.querySelector('dialog[open] [data-testid=signal-dialog-error]')?.textContent",
            )
            .await;
        assert!(error.as_str().unwrap().contains("reason is required"), "{error}");
        b.type_into("[data-testid=signal-reason]", "over the refund limit").await;
        b.click("[data-testid=signal-next]").await;
        b.wait(
            "the confirmation",
            "return document.querySelector('dialog[open] [data-testid=confirm-ok]')",
        )
        .await;
        // Back goes to the editor as it was; nothing is sent.
        b.click("[data-testid=confirm-no]").await;
        let kept = b
            .wait(
                "the editor again",
                "return document.querySelector('dialog[open] [data-testid=signal-reason]')?.value",
            )
            .await;
        assert_eq!(kept, "over the refund limit");
        assert_eq!(signals_of(&srv, &refund).await, Vec::<Value>::new());
        b.click("[data-testid=signal-next]").await;
        b.wait(
            "the confirmation",
            "return document.querySelector('dialog[open] [data-testid=confirm-ok]')",
        )
        .await;
        b.click("[data-testid=confirm-ok]").await;
        let failed = srv.wait_state(&check, "failed").await;
        assert_eq!(failed["errors"][0]["kind"], "rejected", "{failed}");
        assert!(
            failed["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("over the refund limit"),
            "{failed}"
        );
        let sent = signals_of(&srv, &refund).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["sent_by"], "alice");
        assert_eq!(sent[0]["reject"], "over the refund limit");
        b.wait("the rejected task to leave the list", &rows_are(&[&late]))
            .await;
        let outcome = b
            .js("return document.querySelector('[data-testid=signal-outcome]').textContent")
            .await;
        assert!(outcome.as_str().unwrap().starts_with("Rejected"), "{outcome}");
        b.screenshot_page("waiting").await;
        b.assert_no_page_errors().await;

        // The workflow's page lists the signals it was sent.
        b.goto(&format!("#/workflows/{release}")).await;
        let listed = b
            .wait(
                "the workflow's signals",
                "const r = document.querySelector('[data-testid=signal-row]'); \
                 return r?.dataset.delivered === 'true' && r.innerText",
            )
            .await;
        for part in ["approve", "alice", "ship it"] {
            assert!(listed.as_str().unwrap().contains(part), "{part} in {listed}");
        }
        // And the task's history says who sent it.
        b.goto(&format!("#/tasks/{review}")).await;
        let entry = b
            .wait(
                "the signal in the task's history",
                "return document.querySelector('[data-testid=history-entry][data-event=signal_received]')?.textContent",
            )
            .await;
        assert!(entry.as_str().unwrap().contains("signal approve #1 from alice"), "{entry}");
        b.assert_no_page_errors().await;
    })
    .await;
}

/// A schedule of a one-task workflow named `workflow`.
fn schedule_spec(name: &str, cron: &str, timezone: &str, workflow: &str) -> Value {
    json!({"name": name, "cron": cron, "timezone": timezone,
           "workflow": {"name": workflow, "tasks": [task("collect", &[])]},
           "overlap": "allow", "catch_up": {"policy": "latest"}})
}

async fn create_schedule(srv: &TestServer, spec: Value) -> Value {
    let (status, created) = srv.post("/v1/schedules", spec).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

fn schedule_api_path(name: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/v1/schedules/").unwrap();
    url.path_segments_mut().unwrap().pop_if_empty().push(name);
    url.path().to_owned()
}

/// The rows of the schedules page, by name, once it has loaded: `name=paused@next,…`.
const SCHEDULE_ROWS: &str = "return document.querySelector('[data-testid=schedules-panel]')?.dataset.loaded === 'true' \
     && [...document.querySelectorAll('[data-testid=schedule-row]')].map(r => \
          `${r.dataset.name}=${r.dataset.paused}@${r.querySelector('[data-testid=schedule-next]').dataset.at ?? ''}`).sort().join(',')";

fn schedule_rows_are(rows: &[String]) -> String {
    let mut rows = rows.to_vec();
    rows.sort();
    SCHEDULE_ROWS.replace(
        ".sort().join(',')",
        &format!(".sort().join(',') === {}", js_str(&rows.join(","))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_listed_paused_resumed_and_deleted_from_the_schedules_page() {
    let srv = TestServer::start().await;
    scenario("schedules", srv, |srv, b| async move {
        b.goto("#/schedules").await;
        let empty = b
            .wait(
                "the empty state",
                "const e = document.querySelector('[data-testid=schedules-empty]'); return e && !e.hidden && e.textContent",
            )
            .await;
        assert!(empty.as_str().unwrap().contains("baton schedules create FILE"), "{empty}");

        let ping = "ping";
        let berlin = "reports/berlin:weekdays";
        let every = create_schedule(&srv, schedule_spec(ping, "* * * * * *", "UTC", "ping")).await;
        let weekly = create_schedule(
            &srv,
            schedule_spec(berlin, "0 30 9 * * MON-FRI", "Europe/Berlin", "report"),
        )
        .await;
        let next = |s: &Value| s["next"][0].as_u64().unwrap();
        let row = |name: &str, paused: bool, at: Option<u64>| {
            format!("{name}={paused}@{}", at.map_or(String::new(), |t| t.to_string()))
        };
        b.wait(
            "both schedules with their next fire times",
            &schedule_rows_are(&[
                row(ping, false, Some(next(&every))),
                row(berlin, false, Some(next(&weekly))),
            ]),
        )
        .await;
        let text = b
            .js(&format!(
                "return document.querySelector('[data-testid=schedule-row][data-name={}]').innerText",
                js_str(berlin)
            ))
            .await;
        for part in ["0 30 9 * * MON-FRI", "Europe/Berlin", "latest", "allow", "active", "never"] {
            assert!(text.as_str().unwrap().contains(part), "{part} in {text}");
        }

        // A tick fires: the page, re-reading the list, shows the next fire time move on and
        // the last tick, with its workflow.
        srv.clock.set(baton_core::Timestamp(next(&every)));
        srv.engine.tick().await.unwrap();
        let (_, fired) = srv.get("/v1/schedules/ping").await;
        assert!(next(&fired) > next(&every), "{fired}");
        b.wait(
            "the next fire time to move on",
            &schedule_rows_are(&[
                row(ping, false, Some(next(&fired))),
                row(berlin, false, Some(next(&weekly))),
            ]),
        )
        .await;
        let run = fired["last_workflow"].as_str().unwrap().to_owned();
        b.wait(
            "the last tick's workflow",
            &format!(
                "return document.querySelector('[data-testid=schedule-row][data-name=ping] [data-testid=schedule-last] a')?.getAttribute('href') === {}",
                js_str(&format!("#/workflows/{run}"))
            ),
        )
        .await;

        // Pause through the confirmation.
        b.click("[data-testid=schedule-row][data-name=ping] [data-testid=schedule-pause]")
            .await;
        let message = b
            .wait(
                "the pause confirmation",
                "return document.querySelector('dialog[open] [data-testid=confirm-message]')?.textContent",
            )
            .await;
        assert!(message.as_str().unwrap().contains("ping"), "{message}");
        b.click("[data-testid=confirm-ok]").await;
        b.wait(
            "the row to say paused",
            &schedule_rows_are(&[row(ping, true, None), row(berlin, false, Some(next(&weekly)))]),
        )
        .await;
        let (_, paused) = srv.get("/v1/schedules/ping").await;
        assert_eq!(paused["paused"], true, "{paused}");
        assert_eq!(
            b.js("return document.querySelector('[data-testid=schedule-row][data-name=ping] [data-testid=schedule-state]').textContent")
                .await,
            "paused"
        );
        doc_screenshot(&b, "[data-testid=schedules-panel]", "dashboard-schedules").await;

        // Resume.
        b.click("[data-testid=schedule-row][data-name=ping] [data-testid=schedule-resume]")
            .await;
        b.wait(
            "the resume confirmation",
            "return document.querySelector('dialog[open] [data-testid=confirm-ok]')",
        )
        .await;
        b.click("[data-testid=confirm-ok]").await;
        b.wait(
            "the row to say active",
            "return document.querySelector('[data-testid=schedule-row][data-name=ping]')?.dataset.paused === 'false'",
        )
        .await;
        let (_, resumed) = srv.get("/v1/schedules/ping").await;
        assert_eq!(resumed["paused"], false, "{resumed}");
        b.wait(
            "its next fire time again",
            &schedule_rows_are(&[
                row(ping, false, Some(next(&resumed))),
                row(berlin, false, Some(next(&weekly))),
            ]),
        )
        .await;

        // Its page: the five next fire times, the template, the run it submitted.
        b.click("[data-testid=schedule-row][data-name=ping] [data-testid=schedule-link]")
            .await;
        let times = b
            .wait(
                "the schedule's page",
                "const l = document.querySelectorAll('[data-testid=schedule-next-list] li'); \
                 return l.length === 5 && [...l].map(li => li.dataset.at).join(',')",
            )
            .await;
        let want: Vec<String> = resumed["next"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.to_string())
            .collect();
        assert_eq!(times, want.join(","));
        let template = b
            .js("return document.querySelector('[data-testid=schedule-template]').textContent")
            .await;
        let template: Value = serde_json::from_str(template.as_str().unwrap()).unwrap();
        // Compared field by field: JavaScript writes the float 2.0 as 2.
        assert_eq!(template["name"], "ping");
        assert_eq!(template["tasks"][0]["key"], "collect");
        assert_eq!(template["tasks"][0]["capabilities"], json!(["work"]));
        let link = b
            .wait(
                "the schedule's run",
                "return document.querySelector('[data-testid=schedule-run] a')?.getAttribute('href')",
            )
            .await;
        assert_eq!(link, format!("#/workflows/{run}"));
        assert_eq!(b.count("[data-testid=schedule-run]").await, 1);
        b.screenshot_page("schedule").await;

        // Delete the other one, from the list: its workflows are not affected.
        b.goto("#/schedules").await;
        b.wait("the list", &SCHEDULE_ROWS.replace(".sort().join(',')", ".length === 2"))
            .await;
        b.click(&format!(
            "[data-testid=schedule-row][data-name={}] [data-testid=schedule-delete]",
            js_str(berlin)
        ))
        .await;
        let message = b
            .wait(
                "the delete confirmation",
                "return document.querySelector('dialog[open] [data-testid=confirm-message]')?.textContent",
            )
            .await;
        assert!(message.as_str().unwrap().contains("not affected"), "{message}");
        b.click("[data-testid=confirm-ok]").await;
        b.wait(
            "the deleted schedule to leave the list",
            &schedule_rows_are(&[row(ping, false, Some(next(&resumed)))]),
        )
        .await;
        let (status, gone) = srv.get(&schedule_api_path(berlin)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
        let outcome = b
            .js("return document.querySelector('[data-testid=schedule-outcome]').textContent")
            .await;
        assert!(outcome.as_str().unwrap().contains("Deleted"), "{outcome}");
        b.screenshot_page("schedules").await;
        b.assert_no_page_errors().await;
    })
    .await;
}

// ---- rate limits ---------------------------------------------------------------------------------

async fn put_limit(srv: &TestServer, key: &str, units: u64, per_ms: u64) -> Value {
    let r = srv
        .send_json(
            reqwest::Method::PUT,
            &format!("/v1/limits/{key}"),
            None,
            &json!({"units": units, "per_ms": per_ms}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json());
    r.json()
}

/// The rows of the Limits page, by key, once it has loaded: `key=units/per_ms:available:parked,…`.
const LIMIT_ROWS: &str = "return document.querySelector('[data-testid=limits-panel]')?.dataset.loaded === 'true' \
     && [...document.querySelectorAll('[data-testid=limit-row]')].map(r => \
          `${r.dataset.key}=${r.dataset.units}/${r.dataset.perMs}:${r.dataset.available}:${r.dataset.parked}`).join(',')";

fn limit_rows_are(rows: &[&str]) -> String {
    LIMIT_ROWS.replace(
        ".join(',')",
        &format!(".join(',') === {}", js_str(&rows.join(","))),
    )
}

/// The text of a cell (`testid`) of the Limits page's row of `key`.
async fn limit_cell(b: &Browser, key: &str, testid: &str) -> String {
    b.js(&format!(
        "return document.querySelector('[data-testid=limit-row][data-key={}] [data-testid={testid}]').innerText",
        js_str(key)
    ))
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_listed_set_and_deleted_from_the_limits_page() {
    let srv = TestServer::start().await;
    scenario("limits", srv, |srv, b| async move {
        b.goto("#/limits").await;
        let empty = b
            .wait(
                "the empty state",
                "const e = document.querySelector('[data-testid=limits-empty]'); return e && !e.hidden && e.textContent",
            )
            .await;
        assert!(empty.as_str().unwrap().contains("baton limits set"), "{empty}");
        assert_eq!(
            b.js("return document.querySelector('[data-testid=nav-limits]').getAttribute('aria-current')")
                .await,
            "page"
        );

        // A limit set over the API appears, full.
        put_limit(&srv, "llm", 2, 3_600_000).await;
        b.wait("the limit set over the API", &limit_rows_are(&["llm=2/3600000:2:0"]))
            .await;
        assert_eq!(limit_cell(&b, "llm", "limit-rate").await, "2 / 1h");
        assert_eq!(limit_cell(&b, "llm", "limit-available").await, "2 of 2");
        assert_eq!(limit_cell(&b, "llm", "limit-full").await, "full now");

        // A bad value through the form: the server's refusal, naming the field, is shown.
        b.type_into("[data-testid=limit-key]", "search").await;
        b.type_into("[data-testid=limit-units]", "0").await;
        b.type_into("[data-testid=limit-period]", "1m").await;
        b.click("[data-testid=limit-set]").await;
        let shown = b
            .wait(
                "the refusal",
                "return document.querySelector('[data-testid=limit-error]').textContent",
            )
            .await;
        let refused = srv
            .send_json(
                reqwest::Method::PUT,
                "/v1/limits/search",
                None,
                &json!({"units": 0, "per_ms": 60_000}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
        let detail = refused.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            shown.as_str().unwrap().contains(&detail),
            "the page shows the server's detail `{detail}`: {shown}"
        );
        assert_eq!(
            b.js("return document.querySelector('[data-testid=limit-units]').getAttribute('aria-invalid')")
                .await,
            "true",
            "the field at fault is marked"
        );
        b.screenshot("limits-refused").await;
        let (status, _) = srv.get("/v1/limits/search").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "nothing was set");

        // Corrected, it is set: the page lists it and the API has it.
        b.clear("[data-testid=limit-units]").await;
        b.type_into("[data-testid=limit-units]", "5").await;
        b.click("[data-testid=limit-set]").await;
        b.wait(
            "the limit set from the page",
            &limit_rows_are(&["llm=2/3600000:2:0", "search=5/60000:5:0"]),
        )
        .await;
        let (status, search) = srv.get("/v1/limits/search").await;
        assert_eq!(status, StatusCode::OK, "{search}");
        assert_eq!((search["units"].as_u64(), search["per_ms"].as_u64()), (Some(5), Some(60_000)));
        let outcome = b
            .js("return document.querySelector('[data-testid=limit-outcome]').textContent")
            .await;
        assert!(outcome.as_str().unwrap().contains("Created limit \"search\""), "{outcome}");
        assert_eq!(limit_cell(&b, "search", "limit-rate").await, "5 / 1m");
        assert_eq!(
            b.js("return document.querySelector('[data-testid=limit-error]').textContent").await,
            ""
        );

        // Three tasks draw from the 2-unit limit: two are claimed, the third is parked.
        let tasks: Vec<Value> = (0..3)
            .map(|i| {
                let mut t = task(&format!("call{i}"), &[]);
                t["rate"] = json!([{"key": "llm"}]);
                t
            })
            .collect();
        let wf = srv.submit(json!(tasks)).await;
        let agent = srv.register("worker", &["work"], 3).await;
        let claimed = srv.claim(&agent, 3).await;
        assert_eq!(claimed.len(), 2, "two units: {claimed:?}");
        let held = ids(&wf)
            .into_iter()
            .find(|(_, id)| claimed.iter().all(|c| c["task"] != id.as_str()))
            .map(|(_, id)| id)
            .unwrap();
        let (_, llm) = srv.get("/v1/limits/llm").await;
        assert_eq!((llm["available"].as_u64(), llm["parked"].as_u64()), (Some(0), Some(1)), "{llm}");
        b.wait(
            "the limit drawn down, with a task parked",
            &limit_rows_are(&["llm=2/3600000:0:1", "search=5/60000:5:0"]),
        )
        .await;
        assert_eq!(limit_cell(&b, "llm", "limit-available").await, "0 of 2");
        assert_eq!(
            b.js("return document.querySelector('[data-testid=limit-row][data-key=llm] [data-testid=limit-full]').dataset.at")
                .await,
            llm["full_at"].to_string(),
            "when it is full again"
        );
        doc_screenshot(&b, "[data-testid=main]", "dashboard-limits").await;

        // The parked task says what it waits for, and links to the Limits page.
        b.goto(&format!("#/tasks/{held}")).await;
        let waiting = b
            .wait(
                "the task's wait",
                "return document.querySelector('[data-testid=task-page]')?.dataset.loaded === 'true' \
                 && document.querySelector('[data-testid=task-waiting]').textContent",
            )
            .await;
        let waiting = waiting.as_str().unwrap();
        assert!(
            waiting.contains("rate limit llm has 0 of the 1 unit(s) it draws"),
            "{waiting}"
        );
        b.click("[data-testid=task-waiting] a[href='#/limits']").await;
        b.wait(
            "the Limits page, from the task's link",
            &limit_rows_are(&["llm=2/3600000:0:1", "search=5/60000:5:0"]),
        )
        .await;
        assert_eq!(b.js("return location.hash").await, "#/limits");

        // Edit fills the form with the limit; a bigger one has its extra unit at once.
        b.click("[data-testid=limit-row][data-key=llm] [data-testid=limit-edit]").await;
        let filled = b
            .js("return ['limit-key', 'limit-units', 'limit-period'].map(t => \
                 document.querySelector(`[data-testid=${t}]`).value).join(' ')")
            .await;
        assert_eq!(filled, "llm 2 1h");
        b.clear("[data-testid=limit-units]").await;
        b.type_into("[data-testid=limit-units]", "3").await;
        b.click("[data-testid=limit-set]").await;
        b.wait(
            "the changed limit",
            "return document.querySelector('[data-testid=limit-row][data-key=llm]')?.dataset.units === '3'",
        )
        .await;
        let (_, llm) = srv.get("/v1/limits/llm").await;
        assert_eq!(llm["units"], 3, "{llm}");
        let outcome = b
            .js("return document.querySelector('[data-testid=limit-outcome]').textContent")
            .await;
        assert!(outcome.as_str().unwrap().contains("Changed limit \"llm\""), "{outcome}");

        // Delete, through the confirmation; going back first changes nothing.
        let delete = "[data-testid=limit-row][data-key=search] [data-testid=limit-delete]";
        b.click(delete).await;
        b.wait("the dialog", "return document.querySelector('dialog[open] [data-testid=confirm-no]')")
            .await;
        b.click("[data-testid=confirm-no]").await;
        b.wait("the dialog to close", "return !document.querySelector('dialog[open]')").await;
        assert_eq!(srv.get("/v1/limits/search").await.0, StatusCode::OK);
        b.click(delete).await;
        let message = b
            .wait(
                "the delete confirmation",
                "return document.querySelector('dialog[open] [data-testid=confirm-message]')?.textContent",
            )
            .await;
        assert!(message.as_str().unwrap().contains("\"search\" is deleted"), "{message}");
        b.click("[data-testid=confirm-ok]").await;
        b.wait(
            "the deleted limit to leave the list",
            "return document.querySelector('[data-testid=limits-panel]').dataset.loaded === 'true' \
             && [...document.querySelectorAll('[data-testid=limit-row]')].map(r => r.dataset.key).join(',') === 'llm'",
        )
        .await;
        let (status, gone) = srv.get("/v1/limits/search").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{gone}");
        let outcome = b
            .js("return document.querySelector('[data-testid=limit-outcome]').textContent")
            .await;
        assert!(outcome.as_str().unwrap().contains("Deleted limit \"search\""), "{outcome}");
        b.screenshot_page("limits").await;
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_token_sets_a_limit_from_the_limits_page() {
    let srv = server_with_token(Role::Operator).await;
    scenario("limits-operator", srv, |srv, b| async move {
        b.goto("#/limits").await;
        b.wait(
            "the token dialog",
            "return document.querySelector('dialog[open] [data-testid=token-input]')",
        )
        .await;
        b.type_into("[data-testid=token-input]", "op-secret").await;
        b.click("[data-testid=token-save]").await;
        b.wait(
            "the (empty) list, read with an operator's token",
            "const e = document.querySelector('[data-testid=limits-empty]'); return e && !e.hidden",
        )
        .await;
        b.type_into("[data-testid=limit-key]", "llm").await;
        b.type_into("[data-testid=limit-units]", "2").await;
        b.type_into("[data-testid=limit-period]", "1m").await;
        b.click("[data-testid=limit-set]").await;
        let shown = b
            .wait(
                "the refusal",
                "return document.querySelector('[data-testid=limit-error]').textContent",
            )
            .await;
        let refused = srv
            .send_json(
                reqwest::Method::PUT,
                "/v1/limits/llm",
                Some("op-secret"),
                &json!({"units": 2, "per_ms": 60_000}),
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let detail = refused.json()["detail"].as_str().unwrap().to_owned();
        assert!(
            shown.as_str().unwrap().contains(&detail),
            "the page shows the server's detail `{detail}`: {shown}"
        );
        let (_, list) = srv.get("/v1/limits").await;
        assert_eq!(list["limits"], json!([]), "nothing was set");
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_a_signal_is_sent_as_the_token_without_asking_who() {
    let srv = server_with_token(Role::Operator).await;
    scenario("signal-as-token", srv, |srv, b| async move {
        let (release, tasks) = submit_named(
            &srv,
            "release",
            json!([signal_task("review", "approve", json!(null))]),
        )
        .await;
        let review = tasks["review"].clone();
        b.goto("#/waiting").await;
        b.wait(
            "the token dialog",
            "return document.querySelector('dialog[open] [data-testid=token-input]')",
        )
        .await;
        b.type_into("[data-testid=token-input]", "op-secret").await;
        b.click("[data-testid=token-save]").await;
        b.wait("the waiting task", &rows_are(&[&review])).await;
        b.click("[data-testid=waiting-approve]").await;
        b.wait(
            "the approval dialog",
            "return document.querySelector('dialog[open] [data-testid=signal-data]')",
        )
        .await;
        assert_eq!(b.count("dialog[open] [data-testid=signal-by]").await, 0, "not asked");
        b.click("[data-testid=signal-next]").await;
        let message = b
            .wait(
                "the confirmation",
                "return document.querySelector('dialog[open] [data-testid=confirm-message]')?.textContent",
            )
            .await;
        assert!(message.as_str().unwrap().contains("your token"), "{message}");
        b.click("[data-testid=confirm-ok]").await;
        srv.wait_state(&review, "completed").await;
        let sent = signals_of(&srv, &release).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["sent_by"], "operator", "the token's name: {}", sent[0]);
        b.assert_no_page_errors().await;
    })
    .await;
}

// ---- operators in control: pause, resume, skip, fail, rerun, the audit log ----------------------

const TASK_PAGE_LIVE: &str =
    "return document.querySelector('[data-testid=task-page]')?.dataset.loaded === 'true' \
     && document.querySelector('[data-testid=stream-status]').dataset.state === 'live'";

/// Opens a control's dialog with `button`, types `reason`, ticks `ticks` (checkbox ids) and
/// continues to the confirmation; returns what it says (the caller confirms, or goes back).
async fn through_control(b: &Browser, button: &str, reason: &str, ticks: &[&str]) -> String {
    open_control(b, button, reason, ticks).await;
    continue_to_confirmation(b).await
}

/// Clicks `button` and fills the control's dialog with `reason` and the checkboxes `ticks`.
async fn open_control(b: &Browser, button: &str, reason: &str, ticks: &[&str]) {
    b.click(button).await;
    b.wait(
        "the control's dialog",
        "return document.querySelector('dialog[open] [data-testid=control-reason]')",
    )
    .await;
    b.type_into("[data-testid=control-reason]", reason).await;
    for id in ticks {
        b.click(&format!("[data-testid={id}]")).await;
    }
}

/// Continues from the control's dialog to its confirmation; returns what it says.
async fn continue_to_confirmation(b: &Browser) -> String {
    b.click("[data-testid=control-next]").await;
    let message = b
        .wait(
            "the confirmation",
            "return document.querySelector('dialog[open] [data-testid=confirm-message]')?.textContent",
        )
        .await;
    message.as_str().unwrap().to_owned()
}

/// The audit log through the API, newest first.
async fn audit_of(srv: &TestServer, query: &str) -> Vec<Value> {
    let (status, page) = srv.get(&format!("/v1/audit?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["entries"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_paused_from_its_page_hands_out_nothing_until_resumed() {
    let srv = TestServer::start().await;
    scenario("pause-workflow", srv, |srv, b| async move {
        let (wf, t) = submit_named(
            &srv,
            "nightly-report",
            json!([task("fetch", &[]), task("draw", &[]), task("send", &["fetch", "draw"])]),
        )
        .await;
        let agent = srv.register("worker", &["work"], 4).await;
        // An agent holds one of the ready tasks: the pause takes it back at once ("now").
        let held = srv.claim(&agent, 1).await.remove(0);
        let held_id = held["task"].as_str().unwrap().to_owned();
        b.goto(&format!("#/workflows/{wf}")).await;
        b.wait(
            "the graph and the stream",
            "return document.querySelector('[data-testid=graph]').dataset.ready === 'true' \
             && document.querySelector('[data-testid=stream-status]').dataset.state === 'live'",
        )
        .await;
        assert_eq!(
            b.count("[data-testid=workflow-resume]:not([hidden])").await,
            0,
            "nothing to resume"
        );

        let said = through_control(
            &b,
            "[data-testid=workflow-pause]",
            "hold: the warehouse is migrating",
            &["control-now"],
        )
        .await;
        assert!(said.contains("taken back from their agents"), "{said}");
        assert!(said.contains("hold: the warehouse is migrating"), "{said}");
        b.click("[data-testid=confirm-ok]").await;
        let result = b
            .wait(
                "the outcome",
                "return document.querySelector('[data-testid=action-result]')?.textContent",
            )
            .await;
        assert_eq!(result, "Paused: 3 task(s) paused.");

        // The API: the workflow and every task of it paused, the held one taken back.
        let banner = b
            .wait(
                "the paused banner",
                "return document.querySelector('[data-testid=workflow-paused]')?.textContent",
            )
            .await;
        assert!(banner.as_str().unwrap().contains("hold: the warehouse is migrating"), "{banner}");
        assert!(banner.as_str().unwrap().contains("by local"), "{banner}");
        let (status, view) = srv.get(&format!("/v1/workflows/{wf}")).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["paused"]["reason"], "hold: the warehouse is migrating", "{view}");
        for key in ["fetch", "draw", "send"] {
            let shown = srv.task(&t[key]).await;
            assert_eq!(shown["paused"]["by"], "local", "{key}: {shown}");
        }
        assert_eq!(srv.state_of(&held_id).await, "pending", "taken back from its agent");
        let (status, refused) = srv.report(&held, &agent, "started", json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{refused}");
        assert!(
            srv.claim(&agent, 4).await.is_empty(),
            "no task of a paused workflow is handed out"
        );
        // The page marks every task paused, in the table and in the graph: live, and as read
        // afresh (the task list and the graph say which tasks are paused).
        let all_marked = "const rows = [...document.querySelectorAll('[data-testid=task-row]')]; \
             const nodes = [...document.querySelectorAll('[data-testid=graph-node]')]; \
             return rows.length === 3 && rows.every(r => r.dataset.paused === 'true' && r.querySelector('[data-testid=task-row-paused]')) \
               && nodes.length === 3 && nodes.every(n => n.dataset.paused === 'true' && n.classList.contains('paused'))";
        b.wait("every row and node marked paused", all_marked).await;
        let (_, list) = srv.get(&format!("/v1/tasks?workflow={wf}")).await;
        assert!(
            list["tasks"].as_array().unwrap().iter().all(|t| t["paused"] == true),
            "{list}"
        );
        let (_, graph) = srv.get(&format!("/v1/workflows/{wf}/graph")).await;
        assert!(
            graph["nodes"].as_array().unwrap().iter().all(|n| n["paused"] == true),
            "{graph}"
        );
        b.blank().await;
        b.goto(&format!("#/workflows/{wf}")).await;
        b.wait("every row and node marked paused, read afresh", all_marked).await;
        assert_eq!(b.count("[data-testid=workflow-pause]:not([hidden])").await, 0);
        assert_eq!(
            b.js("return document.querySelector('[data-testid=workflow-status]').textContent")
                .await,
            "Status: running paused"
        );
        b.screenshot_page("workflow-paused").await;

        // Resume: the tasks are handed out again.
        let said = through_control(&b, "[data-testid=workflow-resume]", "migration done", &[]).await;
        assert!(said.contains("migration done"), "{said}");
        b.click("[data-testid=confirm-ok]").await;
        b.wait(
            "the banner to go and every mark with it",
            "return !document.querySelector('[data-testid=workflow-paused]') \
             && [...document.querySelectorAll('[data-testid=task-row]')].every(r => r.dataset.paused === 'false') \
             && [...document.querySelectorAll('[data-testid=graph-node]')].every(n => n.dataset.paused === 'false')",
        )
        .await;
        let (_, view) = srv.get(&format!("/v1/workflows/{wf}")).await;
        assert!(view.get("paused").is_none(), "{view}");
        let mut claimed: Vec<String> = srv
            .claim(&agent, 4)
            .await
            .iter()
            .map(|c| c["task"].as_str().unwrap().to_owned())
            .collect();
        claimed.sort();
        let mut ready = vec![t["fetch"].clone(), t["draw"].clone()];
        ready.sort();
        assert_eq!(claimed, ready, "both ready tasks are handed out after the resume");

        // The audit page lists both, newest first, with their reasons, linking to the workflow.
        b.click("[data-testid=workflow-audit]").await;
        b.wait(
            "the workflow's audit entries",
            "return document.querySelector('[data-testid=audit-panel]')?.dataset.loaded === 'true' \
             && document.querySelectorAll('[data-testid=audit-row]').length === 2",
        )
        .await;
        let rows = b
            .js("return [...document.querySelectorAll('[data-testid=audit-row]')].map(r => [ \
                   r.dataset.action, r.querySelector('[data-testid=audit-actor]').textContent, \
                   r.querySelector('[data-testid=audit-reason]').textContent, \
                   r.querySelector('[data-testid=audit-target] a').getAttribute('href'), \
                   r.querySelector('[data-testid=audit-detail]').textContent])")
            .await;
        let href = format!("#/workflows/{wf}");
        assert_eq!(
            rows,
            json!([
                // A workflow's control is on record before any of its tasks changes.
                ["resume", "local", "migration done", href, ""],
                ["pause", "local", "hold: the warehouse is migrating", href, "now: true"],
            ])
        );
        assert_eq!(
            b.js("return document.querySelector('[data-testid=audit-filter-workflow]').value")
                .await,
            wf.as_str(),
            "the filter came with the link"
        );
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_from_the_task_page_lists_what_it_reopens_then_reopens_it() {
    let srv = TestServer::start().await;
    scenario("rerun", srv, |srv, b| async move {
        let (_, t) = submit_named(
            &srv,
            "digest",
            json!([task("collect", &[]), task("summarise", &["collect"]), task("publish", &["summarise"])]),
        )
        .await;
        let agent = srv.register("worker", &["work"], 1).await;
        for key in ["collect", "summarise", "publish"] {
            let claimed = srv.claim_one(&agent).await;
            assert_eq!(claimed["task"], t[key].as_str());
            srv.finish(&claimed, &agent).await;
        }
        b.goto(&format!("#/tasks/{}", t["summarise"])).await;
        b.wait("the completed task's page", TASK_PAGE_LIVE).await;
        let buttons = b
            .js("return [...document.querySelectorAll('[data-testid=task-actions] button')].map(b => b.dataset.testid)")
            .await;
        assert_eq!(
            buttons,
            json!(["action-cancel", "action-retry", "action-rerun"]),
            "a completed task can only be rerun (cancel and retry shown disabled)"
        );

        // A new input that is not JSON is refused in the dialog; nothing is asked or sent.
        open_control(&b, "[data-testid=action-rerun]", "the summary missed a source", &["control-new-input"]).await;
        b.clear("[data-testid=control-json]").await;
        b.type_into("[data-testid=control-json]", "{\"sources\": ").await;
        b.click("[data-testid=control-next]").await;
        let error = b
            .wait(
                "the JSON error",
                "return document.querySelector('dialog[open] [data-testid=control-error]')?.textContent",
            )
            .await;
        assert!(error.as_str().unwrap().contains("Not valid JSON"), "{error}");
        b.clear("[data-testid=control-json]").await;
        b.type_into("[data-testid=control-json]", "{\"sources\": 12}").await;

        // The dry run's list is the confirmation: the task and what is downstream of it.
        let said = continue_to_confirmation(&b).await;
        assert!(said.contains("2 tasks will be reopened"), "{said}");
        assert!(said.contains("{\"sources\":12}"), "{said}");
        let plan = b
            .js("return [...document.querySelectorAll('dialog[open] [data-testid=rerun-plan-task]')].map(li => [li.dataset.task, li.textContent])")
            .await;
        assert_eq!(
            plan,
            json!([[t["summarise"], "summarise completed"], [t["publish"], "publish completed"]])
        );
        b.screenshot("rerun-confirm").await;
        assert_eq!(srv.state_of(&t["summarise"]).await, "completed", "a dry run changes nothing");
        assert!(audit_of(&srv, "").await.is_empty(), "a dry run is not audited");

        b.click("[data-testid=confirm-ok]").await;
        let said = b
            .wait(
                "the outcome",
                "return document.querySelector('[data-testid=action-result]')?.textContent",
            )
            .await;
        assert_eq!(said, "Rerun: 2 tasks reopened (summarise, publish).");
        let summarise = srv.wait_state(&t["summarise"], "pending").await;
        assert_eq!(summarise["spec"]["input"], json!({"sources": 12}), "{summarise}");
        assert_eq!(summarise["overruled"]["event"], "reopened", "{summarise}");
        assert_eq!(srv.state_of(&t["publish"]).await, "blocked");
        assert_eq!(srv.state_of(&t["collect"]).await, "completed", "upstream keeps its result");
        let events: Vec<&str> = summarise["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        let reopened = events.iter().position(|e| *e == "reopened");
        let succeeded = events.iter().position(|e| *e == "execution_succeeded");
        assert!(
            events[0] == "submitted" && succeeded.is_some() && reopened > succeeded,
            "the history is kept, and the rerun added to it: {events:?}"
        );
        b.wait(
            "the page to show the reopened task",
            "return document.querySelector('[data-testid=task-state]').dataset.state === 'pending' \
             && document.querySelector('[data-testid=task-overruled]')?.textContent.includes('rerun by local: the summary missed a source') \
             && document.querySelector('[data-testid=history-entry][data-event=reopened]')",
        )
        .await;
        // It runs again, with the new input.
        let again = srv.claim_one(&agent).await;
        assert_eq!(again["task"], t["summarise"].as_str());
        assert_eq!(again["input"], json!({"sources": 12}));

        // The audit page lists the rerun with its reason and what it reopened.
        b.click("[data-testid=nav-audit]").await;
        let row = b
            .wait(
                "the rerun's audit entry",
                "const r = document.querySelector('[data-testid=audit-row][data-action=rerun]'); \
                 return r && [r.querySelector('[data-testid=audit-reason]').textContent, \
                   r.querySelector('[data-testid=audit-detail]').textContent, \
                   r.querySelector('[data-testid=audit-target] a').getAttribute('href')]",
            )
            .await;
        assert_eq!(
            row,
            json!([
                "the summary missed a source",
                "new input: true · reopened: summarise, publish · tasks: 2 · tasks changed: 2",
                // A rerun's entry names the task it starts from.
                format!("#/tasks/{}", t["summarise"]),
            ])
        );
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_paused_skipped_and_failed_from_its_page_each_with_a_reason() {
    let srv = TestServer::start().await;
    scenario("task-controls", srv, |srv, b| async move {
        let (_, t) = submit_named(
            &srv,
            "ingest",
            json!([task("load", &[]), task("index", &["load"]), task("notify", &[])]),
        )
        .await;
        let agent = srv.register("worker", &["work"], 2).await;
        b.goto(&format!("#/tasks/{}", t["load"])).await;
        b.wait("the task page", TASK_PAGE_LIVE).await;
        let buttons = b
            .js("return [...document.querySelectorAll('[data-testid=task-actions] button')].map(b => b.dataset.testid)")
            .await;
        assert_eq!(
            buttons,
            json!(["action-cancel", "action-retry", "action-pause", "action-skip", "action-fail", "action-rerun"])
        );

        // Without a reason, a control cannot be sent: Continue stays disabled, Enter does
        // nothing, blanks are no reason.
        b.click("[data-testid=action-pause]").await;
        b.wait(
            "the pause dialog",
            "return document.querySelector('dialog[open] [data-testid=control-reason]')",
        )
        .await;
        let disabled = "return document.querySelector('[data-testid=control-next]').disabled";
        assert_eq!(b.js(disabled).await, true);
        b.type_into("[data-testid=control-reason]", "   \u{E007}").await;
        assert_eq!(b.js(disabled).await, true, "blanks are no reason");
        assert_eq!(
            b.count("dialog[open] [data-testid=control-reason]").await,
            1,
            "Enter sent nothing: the dialog is still open"
        );
        assert_eq!(b.count("[data-testid=confirm-dialog]").await, 0);
        b.clear("[data-testid=control-reason]").await;
        b.type_into("[data-testid=control-reason]", "quota").await;
        assert_eq!(b.js(disabled).await, false, "a reason enables Continue");
        b.screenshot("control-dialog").await;
        b.clear("[data-testid=control-reason]").await;
        assert_eq!(b.js(disabled).await, true);
        b.click("[data-testid=control-back]").await;
        b.wait("the dialog to close", "return !document.querySelector('dialog[open]')").await;
        let shown = srv.task(&t["load"]).await;
        assert!(shown.get("paused").is_none(), "{shown}");
        assert_eq!(shown["version"], 1, "nothing changed");
        assert!(audit_of(&srv, "").await.is_empty(), "nothing was sent");

        // Pause: the banner says who, why and since when; no agent is handed it.
        let said = through_control(&b, "[data-testid=action-pause]", "over the API quota", &[]).await;
        assert!(said.contains("over the API quota"), "{said}");
        b.click("[data-testid=confirm-ok]").await;
        let banner = b
            .wait(
                "the paused banner",
                "return document.querySelector('[data-testid=task-paused]')?.textContent",
            )
            .await;
        let banner = banner.as_str().unwrap();
        assert!(banner.starts_with("Paused by local since "), "{banner}");
        assert!(banner.contains("over the API quota"), "{banner}");
        let load = srv.task(&t["load"]).await;
        assert_eq!(load["paused"]["reason"], "over the API quota", "{load}");
        assert_eq!(load["state"], "pending");
        let claimed = srv.claim(&agent, 2).await;
        assert_eq!(claimed.len(), 1, "only the other ready task: {claimed:?}");
        assert_eq!(claimed[0]["task"], t["notify"].as_str());
        let waiting = b
            .js("return document.querySelector('[data-testid=task-waiting]').textContent")
            .await;
        assert!(waiting.as_str().unwrap().starts_with("Paused by local"), "{waiting}");
        let buttons = b
            .js("return [...document.querySelectorAll('[data-testid=task-actions] button')].map(b => b.dataset.testid)")
            .await;
        assert_eq!(
            buttons,
            json!(["action-cancel", "action-retry", "action-resume", "action-skip", "action-fail", "action-rerun"]),
            "a paused task is resumed, not paused again"
        );
        b.screenshot_page("task-paused").await;

        // Skip with a result typed as JSON: null is refused in the dialog.
        open_control(&b, "[data-testid=action-skip]", "loaded by hand", &[]).await;
        b.clear("[data-testid=control-json]").await;
        b.type_into("[data-testid=control-json]", "null").await;
        b.click("[data-testid=control-next]").await;
        let error = b
            .wait(
                "the null result refused",
                "return document.querySelector('dialog[open] [data-testid=control-error]')?.textContent",
            )
            .await;
        assert!(error.as_str().unwrap().contains("cannot be null"), "{error}");
        b.clear("[data-testid=control-json]").await;
        b.type_into("[data-testid=control-json]", "{\"rows\": 1200}").await;
        let said = continue_to_confirmation(&b).await;
        assert!(said.contains("{\"rows\":1200}"), "{said}");
        b.click("[data-testid=confirm-ok]").await;
        let load = srv.wait_state(&t["load"], "completed").await;
        assert_eq!(load["result"], json!({"rows": 1200}));
        assert!(load.get("paused").is_none(), "a skip ends the pause: {load}");
        b.wait(
            "the page to show the skip",
            "return document.querySelector('[data-testid=task-state]').dataset.state === 'completed' \
             && !document.querySelector('[data-testid=task-paused]') \
             && document.querySelector('[data-testid=task-overruled]')?.textContent === 'skipped by local: loaded by hand'",
        )
        .await;
        // Its dependent proceeds with that result.
        let index = srv.claim_one(&agent).await;
        assert_eq!(index["task"], t["index"].as_str());
        assert_eq!(index["upstream"]["load"]["result"], json!({"rows": 1200}));

        // Fail the dependent for good, with an error kind and message, from its page.
        b.goto(&format!("#/tasks/{}", t["index"])).await;
        b.wait(
            "the leased task's page",
            "return document.querySelector('[data-testid=task-state]')?.dataset.state === 'assigned'",
        )
        .await;
        open_control(&b, "[data-testid=action-fail]", "the index format changed", &[]).await;
        b.type_into("[data-testid=control-error-kind]", "schema_changed").await;
        b.type_into("[data-testid=control-error-message]", "v2 columns").await;
        let said = continue_to_confirmation(&b).await;
        assert!(said.contains("(schema_changed: v2 columns)"), "{said}");
        b.click("[data-testid=confirm-ok]").await;
        let failed = srv.wait_state(&t["index"], "failed").await;
        assert_eq!(failed["errors"][0]["kind"], "schema_changed", "{failed}");
        assert_eq!(failed["errors"][0]["message"], "v2 columns", "{failed}");
        let (status, refused) = srv.report(&index, &agent, "started", json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "the agent lost its lease: {refused}");
        b.wait(
            "the failed task's buttons",
            "return document.querySelector('[data-testid=task-state]').dataset.state === 'failed' \
             && [...document.querySelectorAll('[data-testid=task-actions] button')].map(b => b.dataset.testid).join() \
                === 'action-cancel,action-retry,action-skip,action-rerun'",
        )
        .await;

        // A refusal shows the server's detail: resuming a task that is no longer paused (the
        // page is stale: another operator resumed it meanwhile).
        let (_, t2) = submit_named(&srv, "other", json!([task("solo", &[])])).await;
        let (status, body) = srv
            .post(&format!("/v1/tasks/{}/pause", t2["solo"]), json!({"reason": "wait"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.goto(&format!("#/tasks/{}", t2["solo"])).await;
        b.wait(
            "the paused task's page",
            "return document.querySelector('[data-testid=action-resume]')",
        )
        .await;
        open_control(&b, "[data-testid=action-resume]", "go on", &[]).await;
        continue_to_confirmation(&b).await;
        let (status, body) = srv
            .post(&format!("/v1/tasks/{}/resume", t2["solo"]), json!({"reason": "elsewhere"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        b.click("[data-testid=confirm-ok]").await;
        let shown = b
            .wait(
                "the refusal",
                "return document.querySelector('[data-testid=action-error]')?.textContent",
            )
            .await;
        let (status, problem) = srv
            .post(&format!("/v1/tasks/{}/resume", t2["solo"]), json!({"reason": "again"}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            shown.as_str().unwrap().contains(detail),
            "the page shows the server's detail `{detail}`: {shown}"
        );
        b.assert_no_page_errors().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_page_lists_every_action_filters_them_and_pages_back() {
    let srv = TestServer::start().await;
    scenario("audit", srv, |srv, b| async move {
        let (wf, t) = submit_named(
            &srv,
            "quarterly-close",
            json!([task("extract", &[]), task("reconcile", &["extract"]), task("report", &["reconcile"]),
                   signal_task("sign-off", "approve", json!({"amount": 1200}))]),
        )
        .await;
        let (other, o) = submit_named(&srv, "refund-batch", json!([task("refund", &[])])).await;
        let post = |path: String, body: Value| {
            let srv = Arc::clone(&srv);
            async move {
                let (status, answer) = srv.post(&path, body).await;
                assert_eq!(status, StatusCode::OK, "{path}: {answer}");
                srv.clock.advance(60_000);
            }
        };
        // 30 pauses and resumes of one task: more than a page (50 entries) in all.
        for i in 0..30 {
            post(format!("/v1/tasks/{}/pause", o["refund"]), json!({"reason": format!("batch hold {i}")})).await;
            post(format!("/v1/tasks/{}/resume", o["refund"]), json!({"reason": format!("batch go {i}")})).await;
        }
        post(format!("/v1/workflows/{wf}/pause"), json!({"reason": "auditors asked to hold", "now": true})).await;
        post(format!("/v1/workflows/{wf}/resume"), json!({"reason": "auditors are done"})).await;
        post(format!("/v1/tasks/{}/skip", t["extract"]), json!({"reason": "extracted by hand", "result": {"rows": 12}})).await;
        post(format!("/v1/tasks/{}/fail", t["report"]), json!({"reason": "template broken", "error": {"kind": "template", "message": "missing logo"}})).await;
        post(format!("/v1/tasks/{}/rerun", t["report"]), json!({"reason": "template fixed"})).await;
        let mut path = reqwest::Url::parse(&format!("{}/v1/workflows/{wf}/signals/approve", srv.url)).unwrap();
        path.query_pairs_mut().append_pair("by", "alice");
        let (status, sent) = srv
            .post(&format!("{}?{}", path.path(), path.query().unwrap()), json!({"ok": true}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{sent}");

        let all = audit_of(&srv, "limit=1000").await;
        assert_eq!(all.len(), 66, "{all:?}");
        b.goto("#/audit").await;
        let rows = "return document.querySelector('[data-testid=audit-panel]')?.dataset.loaded === 'true' \
             && [...document.querySelectorAll('[data-testid=audit-row]')].map(r => r.dataset.id).join()";
        let first_page: Vec<String> = all[..50].iter().map(|e| e["id"].to_string()).collect();
        b.wait(
            "the newest 50 entries",
            &rows.replace(".join()", &format!(".join() === {}", js_str(&first_page.join(",")))),
        )
        .await;
        let newest = b
            .js("const r = document.querySelector('[data-testid=audit-row]'); \
                 return [r.dataset.action, r.querySelector('[data-testid=audit-actor]').textContent, \
                   r.querySelector('[data-testid=audit-target] a').getAttribute('href'), \
                   r.querySelector('[data-testid=audit-detail]').textContent]")
            .await;
        assert_eq!(newest[0], "signal");
        assert_eq!(newest[1], "alice");
        assert_eq!(newest[2], format!("#/workflows/{wf}"));
        let detail = newest[3].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("delivered to: {} · id: 1 · signal: approve", t["sign-off"])),
            "{newest}"
        );
        assert_eq!(
            b.js("return document.querySelector('[data-testid=nav-audit]').getAttribute('aria-current')").await,
            "page"
        );

        // Older: the rest, then back to the newest.
        b.click("[data-testid=audit-older]").await;
        let older: Vec<String> = all[50..].iter().map(|e| e["id"].to_string()).collect();
        b.wait(
            "the older entries",
            &rows.replace(".join()", &format!(".join() === {}", js_str(&older.join(",")))),
        )
        .await;
        assert_eq!(
            b.js("return document.querySelector('[data-testid=audit-older]').disabled").await,
            true,
            "the last page"
        );
        b.click("[data-testid=audit-newest]").await;
        b.wait(
            "the newest entries again",
            &rows.replace(".join()", &format!(".join() === {}", js_str(&first_page.join(",")))),
        )
        .await;

        // Filters: by actor, by action, by workflow; kept in the address.
        let actions = "return document.querySelector('[data-testid=audit-panel]')?.dataset.loaded === 'true' \
             && [...document.querySelectorAll('[data-testid=audit-row]')].map(r => r.dataset.action).join()";
        b.type_into("[data-testid=audit-filter-actor]", "alice").await;
        b.wait("alice's one action", &actions.replace(".join()", ".join() === 'signal'")).await;
        assert_eq!(b.js("return location.hash").await, "#/audit?actor=alice");
        b.clear("[data-testid=audit-filter-actor]").await;
        b.js("const s = document.querySelector('[data-testid=audit-filter-action]'); \
              s.value = 'pause'; s.dispatchEvent(new Event('change')); return null")
            .await;
        b.wait(
            "the pauses only",
            &actions.replace(".join()", ".join().split(',').every(a => a === 'pause') && true"),
        )
        .await;
        b.type_into("[data-testid=audit-filter-workflow]", &wf).await;
        let reasons = b
            .wait(
                "the pause of the workflow only",
                "const rows = [...document.querySelectorAll('[data-testid=audit-row]')]; \
                 return rows.length === 1 && rows[0].dataset.workflow === location.hash.split('workflow=')[1] \
                   && rows[0].querySelector('[data-testid=audit-reason]').textContent",
            )
            .await;
        assert_eq!(reasons, "auditors asked to hold");
        assert_eq!(
            b.js("return location.hash").await,
            format!("#/audit?action=pause&workflow={wf}")
        );
        // The other workflow's actions are not among them.
        assert_eq!(b.count(&format!("[data-testid=audit-row][data-workflow='{other}']")).await, 0);
        // Every action on the workflow, for the README.
        b.js("const s = document.querySelector('[data-testid=audit-filter-action]'); \
              s.value = ''; s.dispatchEvent(new Event('change')); return null")
            .await;
        b.wait(
            "the workflow's six actions",
            &actions.replace(".join()", ".join() === 'signal,rerun,fail,skip,resume,pause'"),
        )
        .await;
        doc_screenshot(&b, "[data-testid=audit-panel]", "dashboard-audit").await;
        b.assert_no_page_errors().await;
    })
    .await;
}

/// The API reference (`/reference`, linked from the dashboard's header) renders this server's
/// OpenAPI document with the vendored Redoc, under the dashboard's Content-Security-Policy and
/// with nothing fetched from elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reference_renders_the_document() {
    let srv = TestServer::start().await;
    scenario("reference", srv, |_srv, b| async move {
        b.goto("#/").await;
        let href = b
            .wait(
                "the dashboard's link to the API reference",
                "return document.querySelector('[data-testid=nav-reference]')?.getAttribute('href')",
            )
            .await;
        assert_eq!(href, "/reference");
        b.goto("reference").await;
        let state = b
            .wait(
                "Redoc to render the document",
                "return document.getElementById('redoc').dataset.state",
            )
            .await;
        assert_eq!(state, "rendered");
        // The operations are there, with their summaries and the codes they answer.
        let text = b
            .wait(
                "the operations' summaries",
                "const t = document.getElementById('redoc').innerText; \
                 return t.includes('Submit a workflow') && t.includes('Claim ready tasks') && t",
            )
            .await;
        let text = text.as_str().unwrap();
        assert!(text.contains("stale_lease"), "the codes are listed");
        // Nothing came from elsewhere. Redoc always tries one image, its logo from its CDN:
        // the page's policy refuses it (and Redoc drops the image), so no byte arrives.
        let foreign = b
            .js("return performance.getEntriesByType('resource') \
                 .filter((e) => !e.name.startsWith(location.origin)) \
                 .map((e) => [e.name, e.transferSize + e.decodedBodySize])")
            .await;
        let logo = "https://cdn.redoc.ly/redoc/logo-mini.svg";
        for entry in foreign.as_array().unwrap() {
            assert_eq!(entry, &json!([logo, 0]), "only the logo was tried, and refused");
        }
        let errors = b.console_errors().await;
        assert!(
            errors
                .iter()
                .all(|e| e.contains(logo) && e.contains("Content Security Policy")),
            "{errors:#?}"
        );
        b.screenshot_page("reference").await;
    })
    .await;
}
