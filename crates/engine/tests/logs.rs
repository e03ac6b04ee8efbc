//! Every transition emits exactly one structured log line with its named fields, and no
//! payload ever reaches the logs.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

/// Collects the JSON log lines written on this thread.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn parsed(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test]
async fn each_transition_logs_one_line_with_its_fields_and_no_payload() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new();
    let mut secret = spec("summarize", &[]);
    secret.input = json!({"document": "TOP-SECRET-INPUT"});
    let flow = h.submit(vec![secret]).await;
    let agent = h.agent("writer", &["work"], 1).await;
    let task = h.claim_only(agent, flow.id("summarize")).await;
    let task = h.start(&task).await;
    h.advance(1_500);
    h.succeed(&task).await;

    let all = lines.parsed();
    let transitions: Vec<&Value> = all
        .iter()
        .filter(|l| l["fields"]["message"] == "transition")
        .collect();
    let events: Vec<&str> = transitions
        .iter()
        .map(|l| l["fields"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "submitted",
            "agent_assigned",
            "execution_started",
            "execution_succeeded"
        ],
        "exactly one line per transition"
    );
    let done = transitions[3]["fields"].clone();
    for field in [
        "task",
        "workflow",
        "key",
        "attempt",
        "agent",
        "event",
        "from",
        "to",
        "fencing_token",
        "in_previous_ms",
    ] {
        assert!(done.get(field).is_some(), "field {field} missing in {done}");
    }
    assert_eq!(done["from"], "executing");
    assert_eq!(done["to"], "completed");
    assert_eq!(done["task"], flow.id("summarize").to_string());
    assert_eq!(done["in_previous_ms"], 1500);
    assert_eq!(done["agent"], agent.to_string());
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(
        !text.contains("TOP-SECRET-INPUT"),
        "a payload reached the logs"
    );
    assert!(!text.contains(&result_of(&h.task(flow.id("summarize")).await).to_string()));
}

#[tokio::test]
async fn a_caller_supplied_name_cannot_forge_a_line_in_the_text_log() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new();
    h.agent("a\nINFO forged\r\u{1b}[2J", &["work"], 1).await;

    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("agent registered"), "{text}");
    for line in text.lines() {
        assert!(!line.starts_with("INFO forged"), "a forged line:\n{text}");
        assert!(!line.contains('\u{1b}') && !line.contains('\r'), "{line:?}");
    }
    assert!(
        text.contains(r"a\nINFO forged"),
        "the name, escaped: {text}"
    );
}
