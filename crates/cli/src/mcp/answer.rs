//! What a tool answers: JSON kept small (values over a budget are cut, each cut saying how big
//! the whole is and which call reads it), and failures as MCP tool errors (`is_error`) whose
//! text and structured content carry the server's problem document.

use std::io::Write;
use std::time::Duration;

use baton_client::ClientError;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{json, Map, Value};

/// What one answer may hold by default, in bytes of JSON.
pub const ANSWER_BYTES: usize = 16 * 1024;
/// The most a caller may ask one answer to hold (`max_bytes`).
pub const ANSWER_BYTES_MAX: usize = 1024 * 1024;
/// Below this, a part of a value is not cut further: its place says only that it was cut.
const PART_BYTES_MIN: usize = 160;

/// Why a tool call did not do what was asked.
#[derive(Debug)]
pub enum Failure {
    /// Baton answered with a refusal or could not be reached.
    Client(ClientError),
    /// No answer within the time allowed.
    Timeout { url: String, after: Duration },
    /// The arguments, checked here before anything was sent.
    Invalid(String),
    /// Anything else (an id that matches no task, or several).
    Other(anyhow::Error),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        match e.downcast::<ClientError>() {
            Ok(c) => Failure::Client(c),
            Err(e) => Failure::Other(e),
        }
    }
}

pub type Answer = Result<Value, Failure>;

/// The tool result for `answer`: its JSON as text, and as structured content when it is an
/// object (MCP's structured content is one), or a tool error.
pub fn finish(answer: Answer) -> CallToolResult {
    match answer {
        Ok(value) if value.is_object() => CallToolResult::structured(value),
        Ok(value) => CallToolResult::success(vec![ContentBlock::text(value.to_string())]),
        Err(failure) => failed(failure),
    }
}

fn failed(failure: Failure) -> CallToolResult {
    let (text, structured) = match failure {
        Failure::Client(ClientError::Api(p)) => {
            let hint = hint(&p.code);
            let mut text = format!("Baton refused: {} {}: {}", p.status, p.code, p.detail);
            if let Some(state) = &p.state {
                text.push_str(&format!("\ntask state: {state}"));
            }
            if let Some(rule) = p.rule.as_ref().filter(|r| **r != p.code) {
                text.push_str(&format!("\nrule: {rule}"));
            }
            match (&p.field, &p.expected) {
                (Some(field), Some(expected)) => {
                    text.push_str(&format!("\nfield `{field}`: expected {expected}"))
                }
                (Some(field), None) => text.push_str(&format!("\nfield `{field}`")),
                (None, Some(expected)) => text.push_str(&format!("\nexpected: {expected}")),
                (None, None) => {}
            }
            if let Some(cycle) = &p.cycle {
                text.push_str(&format!("\ncycle: {}", cycle.join(" -> ")));
            }
            if let Some(hint) = hint {
                text.push_str(&format!("\nwhat to do: {hint}"));
            }
            let mut doc = serde_json::to_value(&*p).unwrap_or(Value::Null);
            if let (Value::Object(doc), Some(hint)) = (&mut doc, hint) {
                doc.insert("hint".into(), json!(hint));
            }
            (text, doc)
        }
        Failure::Client(ClientError::Transport { url, source }) => {
            let mut cause: &dyn std::error::Error = &source;
            while let Some(deeper) = cause.source() {
                cause = deeper;
            }
            let text = format!(
                "cannot reach Baton at {url}: {cause}. Is `baton serve` running there? \
                 (`baton mcp` talks to --url or BATON_URL.) Nothing was done; the call is safe \
                 to repeat once Baton answers."
            );
            (text.clone(), json!({"code": "unreachable", "detail": text}))
        }
        Failure::Client(e) => {
            let text = e.to_string();
            (
                text.clone(),
                json!({"code": "client_error", "detail": text}),
            )
        }
        Failure::Timeout { url, after } => {
            let text = format!(
                "no answer from Baton at {url} within {}s; whether it was done is unknown: read \
                 the task or workflow to see, or repeat the call (reports are safe to repeat)",
                after.as_secs()
            );
            (text.clone(), json!({"code": "timeout", "detail": text}))
        }
        Failure::Invalid(detail) => {
            let text = format!("invalid arguments: {detail}");
            (text, json!({"code": "invalid_arguments", "detail": detail}))
        }
        Failure::Other(e) => {
            let text = format!("{e:#}");
            (text.clone(), json!({"code": "failed", "detail": text}))
        }
    };
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

/// What the model should do after a refusal with `code`, where that is not plain from the
/// detail.
fn hint(code: &str) -> Option<&'static str> {
    Some(match code {
        "stale_lease"
        | "task_cancelled"
        | "task_paused"
        | "task_skipped"
        | "task_failed_by_operator"
        | "task_rerun"
        | "task_superseded" => {
            "the lease on this task is lost (a deadline passed, an operator took the task back, \
             or another agent holds it now): stop working on it and report nothing more about \
             it; claim_task for other work"
        }
        "agent_not_found" => "Baton has forgotten the agent: claim_task registers it again",
        "task_not_found" | "workflow_not_found" => {
            "check the id (list_tasks, list_workflows); a short id must be the last 4 or more \
             hex digits of exactly one id"
        }
        "cycle"
        | "unknown_dependency"
        | "duplicate_task"
        | "duplicate_dependency"
        | "invalid_field"
        | "invalid_spec" => "fix the field named and submit again; nothing was created",
        "not_accepted" | "guard_failed" => {
            "the task's state does not allow this now: get_task shows its state and why it waits"
        }
        "idempotency_mismatch" => {
            "this idempotency key was used for a different request: use a new key, or send the \
             first request again"
        }
        "store_unavailable" | "contended" | "shutting_down" => {
            "Baton is briefly unable to answer: nothing was done, repeat the call in a moment"
        }
        _ => return None,
    })
}

/// `value` cut to about `budget` bytes of JSON. Strings, arrays and objects too big are cut,
/// each cut saying what it left out and `read(pointer)`: how to read the whole of it, where
/// `pointer` is the JSON Pointer of the cut value under `at`.
pub fn clip(value: &Value, budget: usize, at: &str, read: &dyn Fn(&str) -> String) -> Value {
    let mut pointer = at.to_owned();
    clip_at(value, budget.max(PART_BYTES_MIN), &mut pointer, read)
}

fn clip_at(
    value: &Value,
    budget: usize,
    pointer: &mut String,
    read: &dyn Fn(&str) -> String,
) -> Value {
    let size = json_len(value);
    if size <= budget {
        return value.clone();
    }
    match value {
        Value::String(s) => {
            let keep = budget.saturating_sub(120).max(40).min(s.len());
            let mut end = keep;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            json!(format!(
                "{}… [cut: {size} bytes in all; {}]",
                &s[..end],
                read(pointer)
            ))
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            let mut used = 2;
            for (i, item) in items.iter().enumerate() {
                let left = budget.saturating_sub(used);
                if left < PART_BYTES_MIN {
                    break;
                }
                let share = (left / (items.len() - i)).max(PART_BYTES_MIN);
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                let part = clip_at(item, share, pointer, read);
                pointer.truncate(len);
                used += json_len(&part) + 1;
                out.push(part);
            }
            if out.len() < items.len() {
                out.push(json!(format!(
                    "… cut: {} more of {} items ({size} bytes in all); {}",
                    items.len() - out.len(),
                    items.len(),
                    read(pointer)
                )));
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let mut out = Map::new();
            let mut used = 2;
            for (i, (key, item)) in map.iter().enumerate() {
                let left = budget.saturating_sub(used + key.len() + 4);
                if left < PART_BYTES_MIN {
                    break;
                }
                let share = (left / (map.len() - i)).max(PART_BYTES_MIN);
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                let part = clip_at(item, share, pointer, read);
                pointer.truncate(len);
                used += json_len(&part) + key.len() + 4;
                out.insert(key.clone(), part);
            }
            if out.len() < map.len() {
                out.insert(
                    "…".into(),
                    json!(format!(
                        "cut: {} more of {} fields ({size} bytes in all); {}",
                        map.len() - out.len(),
                        map.len(),
                        read(pointer)
                    )),
                );
            }
            Value::Object(out)
        }
        // Numbers, booleans and null are never long.
        other => other.clone(),
    }
}

/// Bytes of `value` as compact JSON, counted without building the text.
pub fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pointer: &str) -> String {
        format!("read {pointer}")
    }

    #[test]
    fn small_values_are_kept_whole() {
        let v = json!({"a": [1, 2, 3], "b": "text"});
        assert_eq!(clip(&v, 1000, "", &read), v);
    }

    #[test]
    fn a_long_string_is_cut_with_its_pointer_and_size() {
        let v = json!({"input": {"doc": "x".repeat(10_000)}});
        let c = clip(&v, 1000, "", &read);
        let doc = c["input"]["doc"].as_str().unwrap();
        assert!(doc.len() < 1000, "{}", doc.len());
        assert!(doc.contains("10002 bytes in all; read /input/doc"), "{doc}");
        assert!(json_len(&c) <= 1000, "{}", json_len(&c));
    }

    #[test]
    fn long_arrays_and_objects_say_how_many_were_left_out() {
        let v = json!({"items": (0..1000).map(|i| json!({"i": i, "text": "y".repeat(50)})).collect::<Vec<_>>()});
        let c = clip(&v, 2000, "/result", &read);
        let items = c["items"].as_array().unwrap();
        let last = items.last().unwrap().as_str().unwrap();
        assert!(last.contains("more of 1000 items"), "{last}");
        assert!(last.ends_with("read /result/items"), "{last}");
        assert!(json_len(&c) <= 2200, "{}", json_len(&c));
        let o: Map<String, Value> = (0..500)
            .map(|i| (format!("k{i}"), json!("z".repeat(40))))
            .collect();
        let c = clip(&Value::Object(o), 1000, "", &read);
        assert!(c["…"].as_str().unwrap().contains("more of 500 fields"));
    }

    #[test]
    fn cuts_fall_on_character_boundaries_and_pointers_are_escaped() {
        let v = json!({"a/b~c": "é".repeat(5000)});
        let c = clip(&v, 500, "", &read);
        assert!(c["a/b~c"].as_str().unwrap().contains("read /a~1b~0c"));
    }
}
