//! `/metrics` parsed with a real OpenMetrics parser, checked against what the test did.

mod common;

use common::*;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use reqwest::StatusCode;
use serde_json::{json, Value};

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

async fn scrape(srv: &TestServer) -> Exposition {
    let res = srv
        .client
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("unparseable metrics: {e:?}\n{text}"))
}

/// The value of the sample of `family` whose labels include all of `labels`.
fn value(exp: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    let fam = exp
        .families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}: {:?}", exp.families.keys()));
    let sample = fam
        .iter_samples()
        .find(|s| {
            let set = s.get_labelset().unwrap();
            labels
                .iter()
                .all(|(k, v)| set.get_label_value(k) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample of {family} with {labels:?}"));
    match &sample.value {
        OpenMetricsValue::Counter(c) => c.value.as_f64(),
        OpenMetricsValue::Gauge(g) | OpenMetricsValue::Unknown(g) => g.as_f64(),
        OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
        other => panic!("unexpected value {other:?}"),
    }
}

fn histogram_sum(exp: &Exposition, family: &str) -> f64 {
    let sample = exp.families[family].iter_samples().next().unwrap();
    match &sample.value {
        OpenMetricsValue::Histogram(h) => h.sum.as_ref().map(|s| s.as_f64()).unwrap_or(0.0),
        other => panic!("{family} is not a histogram: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let srv = TestServer::start().await;
    let mut flaky = task("c", &[]);
    flaky["retry"] = json!({"max_attempts": 2, "initial_backoff_ms": 1000, "max_backoff_ms": 1000, "jitter": 0.0});
    let wf = srv
        .submit(json!([task("a", &[]), task("b", &["a"]), flaky]))
        .await;
    let agent = srv.register("worker", &["work"], 4).await;

    let first = srv.claim(&agent, 4).await;
    assert_eq!(first.len(), 2, "a and c are ready");
    let mut c: Option<Value> = None;
    for t in &first {
        if t["key"] == "a" {
            srv.finish(t, &agent).await;
        } else {
            srv.report(t, &agent, "started", json!({})).await;
            let (s, b) = srv
                .report(
                    t,
                    &agent,
                    "failed",
                    json!({"error": {"kind": "flaky", "message": "try again"}}),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            c = Some(t.clone());
        }
    }
    let c_id = c.unwrap()["task"].as_str().unwrap().to_owned();
    let b_id = wf["tasks"]["b"].as_str().unwrap().to_owned();
    srv.wait_state(&b_id, "pending").await;
    let b = srv.claim(&agent, 1).await.remove(0);
    srv.finish(&b, &agent).await;

    srv.clock.advance(1_000);
    srv.engine.tick().await.unwrap();
    srv.wait_state(&c_id, "pending").await;
    let again = srv.claim(&agent, 1).await.remove(0);
    srv.report(&again, &agent, "started", json!({})).await;
    srv.clock.advance(10_000);
    srv.engine.tick().await.unwrap();
    srv.wait_state(&c_id, "failed").await;

    let m = scrape(&srv).await;
    let t = |from, to, event| {
        value(
            &m,
            "baton_transitions",
            &[("from", from), ("to", to), ("event", event)],
        )
    };
    assert_eq!(t("pending", "assigned", "agent_assigned"), 4.0);
    assert_eq!(t("executing", "completed", "execution_succeeded"), 2.0);
    assert_eq!(t("executing", "failed", "execution_failed"), 1.0);
    assert_eq!(t("executing", "failed", "timeout_expired"), 1.0);
    assert_eq!(t("failed", "pending", "retry"), 1.0);
    assert_eq!(t("new", "pending", "submitted"), 2.0);
    assert_eq!(t("new", "blocked", "submitted"), 1.0);

    assert_eq!(value(&m, "baton_tasks", &[("state", "completed")]), 2.0);
    assert_eq!(value(&m, "baton_tasks", &[("state", "failed")]), 1.0);
    assert_eq!(value(&m, "baton_tasks", &[("state", "pending")]), 0.0);
    assert_eq!(value(&m, "baton_queue_wait_seconds", &[]), 4.0);
    assert_eq!(
        value(&m, "baton_execution_seconds", &[("outcome", "succeeded")]),
        2.0
    );
    assert_eq!(
        value(&m, "baton_execution_seconds", &[("outcome", "failed")]),
        2.0
    );
    assert_eq!(value(&m, "baton_timeouts", &[("kind", "heartbeat")]), 1.0);
    assert_eq!(value(&m, "baton_retries", &[]), 1.0);
    assert_eq!(value(&m, "baton_agents_online", &[]), 1.0);
    assert_eq!(value(&m, "baton_claims_waiting", &[]), 0.0);
    assert_eq!(value(&m, "baton_event_subscribers", &[]), 0.0);
    assert_eq!(
        value(&m, "baton_claim_latency_seconds", &[]),
        3.0,
        "three claims got tasks"
    );

    let commits = value(&m, "baton_store_commit_batch_size", &[]);
    assert!(commits > 0.0);
    assert_eq!(value(&m, "baton_store_commit_seconds", &[]), commits);
    let writes = histogram_sum(&m, "baton_store_commit_batch_size");
    assert!(writes >= commits, "{writes} writes in {commits} commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_claims_and_event_streams_are_counted_while_open() {
    let srv = TestServer::start().await;
    let agent = srv.register("idle", &["work"], 1).await;
    let stream = srv.events().await;
    let waiting = srv.claim_waiting(&agent, 30_000);
    srv.wait_metric("baton_claims_waiting", |n| n == 1.0).await;
    srv.wait_metric("baton_event_subscribers", |n| n == 1.0)
        .await;
    let m = scrape(&srv).await;
    assert_eq!(value(&m, "baton_claims_waiting", &[]), 1.0);
    srv.submit(json!([{"key": "a", "capabilities": ["work"]}]))
        .await;
    let res = waiting.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    srv.wait_metric("baton_claims_waiting", |n| n == 0.0).await;
    drop(stream);
    srv.stop().await;
}
