//! Request extractors whose refusals are problem documents that name the field at fault.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// A JSON body, decoded with the path of any field that does not fit.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        decode(&json_body(req, state).await?).map(ApiJson)
    }
}

/// A JSON body that is itself a payload (a signal's data): any JSON value, checked for syntax
/// and nesting depth only.
pub struct PayloadJson(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for PayloadJson {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let bytes = json_body(req, state).await?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Problem::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        })?;
        if depth(&value) > PAYLOAD_DEPTH_MAX {
            return Err(invalid(
                "body",
                &format!("JSON nested at most {PAYLOAD_DEPTH_MAX} levels deep"),
            ));
        }
        Ok(PayloadJson(value))
    }
}

/// The body of a request sent as JSON, within [`crate::BODY_BYTES_MAX`].
async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<axum::body::Bytes, Problem> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime == "application/json" || mime.ends_with("+json")
        })
        .unwrap_or(false);
    if !json {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body is larger than {} bytes", crate::BODY_BYTES_MAX),
                )
            } else if stalled(&e) {
                Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the body stopped arriving: nothing came for longer than the body timeout \
                     (`baton serve --body-timeout`)",
                )
            } else {
                Problem::bad_request("unreadable_body", e.body_text())
            }
        })
}

/// Whether reading a body failed because it stalled past the body timeout.
pub(crate) fn stalled(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Deepest nesting accepted inside opaque payloads (`input`, `result`, `progress`), so that
/// every document Baton serves back stays within common JSON parsers' limits.
pub const PAYLOAD_DEPTH_MAX: usize = 64;

/// Keys whose values are opaque payloads: any JSON, not checked for shape.
const OPAQUE: &[&str] = &["input", "result", "progress", "outputs", "for_each"];
/// Keys whose values, when present, must be objects (serde would also accept arrays for them,
/// matched by position, which hides mistakes).
const OBJECTS: &[&str] = &["retry", "timeouts", "compensation", "error", "task"];

/// Decodes JSON, reporting the path of the field that does not fit: syntax errors (including
/// trailing bytes) are 400, shape and value errors 422.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(Problem::bad_request(
            "malformed_json",
            "the body is not valid UTF-8",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        Problem::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(invalid("body", "a JSON object"));
    }
    check_shape(&value, "")?;
    match serde_path_to_error::deserialize(value) {
        Ok(v) => Ok(v),
        Err(e) => {
            let mut path = e.path().to_string();
            let inner = e.into_inner();
            let msg = in_words(&strip_position(&inner.to_string()));
            if let Some(missing) = msg
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'))
            {
                path = if path == "." {
                    missing.to_owned()
                } else {
                    format!("{path}.{missing}")
                };
            }
            // An unknown empty key at the top has the empty path: the body is at fault.
            let field = if path == "." || path.is_empty() {
                "body".to_owned()
            } else {
                path
            };
            Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                format!("`{field}`: {msg}"),
            )
            .field(field, msg))
        }
    }
}

fn invalid(field: &str, expected: &str) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        format!("`{field}` must be {expected}"),
    )
    .field(field, expected)
}

/// Structs are objects (never positional arrays), `tasks` holds objects, and payloads are not
/// nested deeper than [`PAYLOAD_DEPTH_MAX`].
fn check_shape(value: &serde_json::Value, path: &str) -> Result<(), Problem> {
    let Some(obj) = value.as_object() else {
        return Ok(());
    };
    for (key, v) in obj {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if OPAQUE.contains(&key.as_str()) {
            if depth(v) > PAYLOAD_DEPTH_MAX {
                return Err(invalid(
                    &here,
                    &format!("JSON nested at most {PAYLOAD_DEPTH_MAX} levels deep"),
                ));
            }
            continue;
        }
        if OBJECTS.contains(&key.as_str()) && !(v.is_object() || v.is_null()) {
            return Err(invalid(&here, "an object"));
        }
        if key == "tasks" {
            if let Some(items) = v.as_array() {
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{here}[{i}]");
                    if !item.is_object() {
                        return Err(invalid(&at, "an object"));
                    }
                    check_shape(item, &at)?;
                }
                continue;
            }
        }
        check_shape(v, &here)?;
    }
    Ok(())
}

fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// serde's message in the words of JSON, not Rust: `expected i32` is `expected an integer`,
/// `a sequence` an array, `a map` an object; an unknown field gets a "did you mean" when a
/// known one is close.
fn in_words(msg: &str) -> String {
    const TYPES: &[(&str, &str)] = &[
        (
            "expected i32",
            "expected an integer from -2147483648 to 2147483647",
        ),
        ("expected i64", "expected an integer"),
        ("expected u8", "expected an integer from 0 to 255"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected u64", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("a sequence", "an array"),
        ("a map", "an object"),
        ("unit value", "null"),
    ];
    let mut out = msg.to_owned();
    for (rust, json) in TYPES {
        // Whole words only: `expected u32` must not turn `expected u32x` into nonsense.
        let mut from = 0;
        while let Some(i) = out[from..].find(rust).map(|i| i + from) {
            let end = i + rust.len();
            let whole = out[end..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
            if whole {
                out.replace_range(i..end, json);
                from = i + json.len();
            } else {
                from = end;
            }
        }
    }
    if let Some(rest) = out.strip_prefix("unknown field `") {
        let (unknown, rest) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
        if let Some(close) = closest(unknown, &known) {
            out.push_str(&format!("; did you mean `{close}`?"));
        }
    }
    out
}

/// The known name closest to `unknown`, if it is close: at most a third of its letters
/// changed (and at least one).
fn closest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (unknown.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edits(unknown, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, case-insensitive (`dependsOn` is close to `depends_on`).
fn edits(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().filter(|c| *c != '_').collect();
    let b: Vec<char> = b.to_lowercase().chars().filter(|c| *c != '_').collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Query parameters, refused with a problem document.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded_de(query)?;
        Ok(ApiQuery(de))
    }
}

fn serde_urlencoded_de<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    axum::extract::Query::<T>::try_from_uri(
        &format!("/?{query}")
            .parse()
            .map_err(|_| Problem::bad_request("invalid_query", "the query string is malformed"))?,
    )
    .map(|q| q.0)
    .map_err(|e| query_problem(&e.body_text()))
}

/// A query parameter refused, in the words of the API: which parameter, and what it takes
/// (`limit` takes a non-negative integer, not "invalid digit found in string").
fn query_problem(text: &str) -> Problem {
    let text = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(text);
    let named = text.split_once(": ").filter(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    let Some((name, why)) = named else {
        return Problem::bad_request("invalid_query", in_words(text));
    };
    let expected = if why.starts_with("UUID parsing failed") {
        "a UUID such as 0192d0c6-8f5e-7cc3-9a4e-2b1f0c9d8e7a".to_owned()
    } else if ["invalid digit", "number too", "cannot parse integer"]
        .iter()
        .any(|p| why.starts_with(p))
    {
        "a non-negative integer".to_owned()
    } else {
        in_words(why)
    };
    Problem::bad_request(
        "invalid_query",
        format!("invalid query parameter `{name}`: expected {expected}"),
    )
    .field(name, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> (String, String) {
        let p = decode::<baton_api::SubmitWorkflow>(body.as_bytes()).unwrap_err();
        (p.field.clone().unwrap_or_default(), p.detail.clone())
    }

    #[test]
    fn type_errors_are_in_the_words_of_json() {
        let (field, detail) = refusal(r#"{"tasks": [{"key": "a", "priority": "high"}]}"#);
        assert_eq!(field, "tasks[0].priority");
        assert!(
            detail.contains("expected an integer from -2147483648 to 2147483647"),
            "{detail}"
        );
        assert!(!detail.contains("i32"), "{detail}");
        let (_, detail) = refusal(r#"{"tasks": {"key": "a"}}"#);
        assert!(detail.contains("expected an array"), "{detail}");
    }

    #[test]
    fn a_bad_query_parameter_is_named_with_what_it_takes() {
        let refused =
            |query: &str| serde_urlencoded_de::<baton_api::ListQuery>(query).expect_err("refused");
        for (query, field, expected) in [
            ("limit=abc", "limit", "a non-negative integer"),
            ("limit=-1", "limit", "a non-negative integer"),
            ("workflow=xyz", "workflow", "a UUID such as"),
        ] {
            let p = refused(query);
            assert_eq!(p.field.as_deref(), Some(field), "{query}: {p:?}");
            assert!(
                p.expected.as_deref().unwrap().starts_with(expected),
                "{p:?}"
            );
            assert!(!p.detail.contains("deserialize"), "{p:?}");
        }
        let p = refused("limt=1");
        assert!(p.detail.contains("unknown field `limt`"), "{p:?}");
    }

    #[test]
    fn an_unknown_field_close_to_a_known_one_gets_a_suggestion() {
        let (field, detail) = refusal(r#"{"tasks": [{"key": "a", "dependsOn": []}]}"#);
        assert_eq!(field, "tasks[0].dependsOn");
        assert!(detail.contains("did you mean `depends_on`?"), "{detail}");
        let (_, detail) = refusal(r#"{"tasks": [{"key": "a", "colour": "red"}]}"#);
        assert!(!detail.contains("did you mean"), "nothing close: {detail}");
    }
}
