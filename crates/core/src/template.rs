//! Input templates: values in a task's `input` that stand for its dependencies' results.
//!
//! `{"$from": "plan", "pointer": "/sections"}` stands for what the JSON Pointer (RFC 6901)
//! finds in the result of the dependency `plan` (no `pointer`: the whole result);
//! `{"$literal": v}` stands for `v` itself, so that an object with a `$from` key can be written.
//! A template is checked at submission ([`references`]) and resolved when the task becomes
//! ready ([`resolve`]); the resolved input is recorded in the event that makes the task ready,
//! so a replay never resolves anything again.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::TaskKey;
use crate::spec::SpecError;

/// The key that makes an object a reference to a dependency's result.
pub const FROM: &str = "$from";
/// The key of an escaped literal object.
pub const LITERAL: &str = "$literal";
/// The optional key of a reference: where in the result to look.
pub const POINTER: &str = "pointer";
/// Error kind of a task whose template found nothing.
pub const INPUT_UNRESOLVED: &str = "input_unresolved";
/// Where an expanded task finds its element of a `for_each` array, in its input.
pub const ITEM: &str = "item";
/// Most elements one `for_each` expands into.
pub const FOR_EACH_ITEMS_MAX: usize = 10_000;

/// One reference in an input: where it stands and what it refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Its place in the input, as a field path (`input.doc.sections`).
    pub at: String,
    pub from: TaskKey,
    /// RFC 6901; empty for the whole result.
    pub pointer: String,
}

/// A reference that found nothing: the task cannot run with this input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unresolved {
    /// The reference's place in the input (`input.doc.sections`).
    pub at: String,
    /// The dependency it names.
    pub from: TaskKey,
    /// The JSON Pointer that found nothing in that dependency's result.
    pub pointer: String,
    /// When it found something that cannot be used (a `for_each` that is not an array, or
    /// too long): what is wrong with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Unresolved {
    /// In words, for the task's error message.
    pub fn message(&self) -> String {
        if let Some(reason) = &self.reason {
            format!("{}: {reason}", self.at)
        } else if self.pointer.is_empty() {
            format!(
                "{}: dependency `{}` has no result to take",
                self.at, self.from
            )
        } else {
            format!(
                "{}: pointer {:?} finds nothing in the result of `{}`",
                self.at, self.pointer, self.from
            )
        }
    }
}

/// Whether `input` holds a template (a reference or an escaped literal) anywhere: only then
/// must it be resolved before the task runs.
pub fn is_template(input: &Value) -> bool {
    match input {
        Value::Object(map) => {
            map.contains_key(FROM) || map.contains_key(LITERAL) || map.values().any(is_template)
        }
        Value::Array(items) => items.iter().any(is_template),
        _ => false,
    }
}

/// Every reference in `input`, in document order, checked for shape: a reference has a string
/// `$from` naming a task key and an optional string `pointer` that is a JSON Pointer, nothing
/// else; a `$literal` object has no other key. `field` names `input` in errors.
pub fn references(input: &Value, field: &str) -> Result<Vec<Reference>, SpecError> {
    let mut out = Vec::new();
    walk(input, &mut field.to_owned(), &mut out)?;
    Ok(out)
}

fn walk(value: &Value, at: &mut String, out: &mut Vec<Reference>) -> Result<(), SpecError> {
    match value {
        Value::Object(map) if map.contains_key(FROM) => {
            out.push(reference(map, at)?);
        }
        Value::Object(map) if map.contains_key(LITERAL) && map.len() != 1 => {
            return Err(SpecError::new(
                at.clone(),
                format!("an escaped literal `{{\"{LITERAL}\": …}}` with no other key"),
            ));
        }
        Value::Object(map) if map.contains_key(LITERAL) => {}
        Value::Object(map) => {
            for (k, v) in map {
                let len = at.len();
                at.push('.');
                at.push_str(k);
                walk(v, at, out)?;
                at.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                walk(v, at, out)?;
                at.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn reference(map: &Map<String, Value>, at: &str) -> Result<Reference, SpecError> {
    let shape = || {
        SpecError::new(
            at,
            format!(
                "a reference `{{\"{FROM}\": \"KEY\", \"{POINTER}\": \"/json/pointer\"}}` \
                 (`{POINTER}` optional; write `{{\"{LITERAL}\": …}}` for an object that is \
                 not one)"
            ),
        )
    };
    if map.keys().any(|k| k != FROM && k != POINTER) {
        return Err(shape());
    }
    let Some(Value::String(from)) = map.get(FROM) else {
        return Err(shape());
    };
    let pointer = match map.get(POINTER) {
        None => String::new(),
        Some(Value::String(p)) => p.clone(),
        Some(_) => return Err(shape()),
    };
    if !is_pointer(&pointer) {
        return Err(SpecError::new(
            format!("{at}.{POINTER}"),
            format!(
                "a JSON Pointer (RFC 6901): empty or starting with `/`, `~` only as `~0` or \
                 `~1`, got {pointer:?}"
            ),
        ));
    }
    Ok(Reference {
        at: at.to_owned(),
        from: TaskKey(from.clone()),
        pointer,
    })
}

fn is_pointer(p: &str) -> bool {
    if !(p.is_empty() || p.starts_with('/')) {
        return false;
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return false;
        }
    }
    true
}

/// The one reference a `for_each` must be, checked like a reference in an input.
pub fn for_each_reference(value: &Value) -> Result<Reference, SpecError> {
    match value {
        Value::Object(map) if map.contains_key(FROM) => reference(map, "for_each"),
        _ => Err(SpecError::new(
            "for_each",
            format!(
                "a reference to an array in a dependency's result: `{{\"{FROM}\": \"KEY\", \
                 \"{POINTER}\": \"/json/pointer\"}}`"
            ),
        )),
    }
}

/// The elements a `for_each` reference finds in `result` (the named dependency's result): an
/// array of at most [`FOR_EACH_ITEMS_MAX`] elements, or why not.
pub fn for_each_items<'r>(
    r: &Reference,
    result: Option<&'r Value>,
) -> Result<&'r [Value], Unresolved> {
    let unresolved = |reason: Option<String>| Unresolved {
        at: r.at.clone(),
        from: r.from.clone(),
        pointer: r.pointer.clone(),
        reason,
    };
    match result.and_then(|v| v.pointer(&r.pointer)) {
        None => Err(unresolved(None)),
        Some(Value::Array(items)) if items.len() <= FOR_EACH_ITEMS_MAX => Ok(items),
        Some(Value::Array(items)) => Err(unresolved(Some(format!(
            "{:?} in the result of `{}` has {} elements, more than the {FOR_EACH_ITEMS_MAX} \
             one for_each expands into (FOR_EACH_ITEMS_MAX)",
            r.pointer,
            r.from,
            items.len()
        )))),
        Some(other) => Err(unresolved(Some(format!(
            "{:?} in the result of `{}` is {}, not an array",
            r.pointer,
            r.from,
            kind_of(other)
        )))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The key of element `i` of the `for_each` task `key`.
pub fn item_key(key: &TaskKey, i: usize) -> TaskKey {
    TaskKey(format!("{}[{i}]", key.0))
}

/// The input with every reference replaced by what it finds in `result_of(key)` (the result
/// of that dependency, `None` if it has none) and every escaped literal unwrapped; or the
/// first reference, in document order, that finds nothing.
pub fn resolve<'r>(
    input: &Value,
    field: &str,
    result_of: &dyn Fn(&TaskKey) -> Option<&'r Value>,
) -> Result<Value, Unresolved> {
    let mut at = field.to_owned();
    substitute(input, &mut at, result_of)
}

fn substitute<'r>(
    value: &Value,
    at: &mut String,
    result_of: &dyn Fn(&TaskKey) -> Option<&'r Value>,
) -> Result<Value, Unresolved> {
    match value {
        Value::Object(map) if map.contains_key(FROM) => {
            let from = TaskKey(map[FROM].as_str().unwrap_or_default().to_owned());
            let pointer = map
                .get(POINTER)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match result_of(&from).and_then(|r| r.pointer(&pointer)) {
                Some(found) => Ok(found.clone()),
                None => Err(Unresolved {
                    at: at.clone(),
                    from,
                    pointer,
                    reason: None,
                }),
            }
        }
        Value::Object(map) if map.len() == 1 && map.contains_key(LITERAL) => {
            Ok(map[LITERAL].clone())
        }
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let len = at.len();
                at.push('.');
                at.push_str(k);
                out.insert(k.clone(), substitute(v, at, result_of)?);
                at.truncate(len);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                out.push(substitute(v, at, result_of)?);
                at.truncate(len);
            }
            Ok(Value::Array(out))
        }
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: &str) -> TaskKey {
        TaskKey(k.into())
    }

    #[test]
    fn references_are_found_in_document_order_with_their_place() {
        let input = json!({
            "title": {"$from": "plan", "pointer": "/title"},
            "parts": [{"$from": "a"}, {"$literal": {"$from": "not a reference"}}],
        });
        let refs = references(&input, "input").unwrap();
        assert_eq!(
            refs,
            vec![
                Reference {
                    at: "input.parts[0]".into(),
                    from: key("a"),
                    pointer: String::new()
                },
                Reference {
                    at: "input.title".into(),
                    from: key("plan"),
                    pointer: "/title".into()
                },
            ]
        );
        assert!(is_template(&input));
        assert!(!is_template(&json!({"plain": [1, {"x": "$from"}]})));
    }

    #[test]
    fn malformed_templates_are_refused_at_their_place() {
        let cases = [
            (json!({"a": {"$from": 3}}), "input.a"),
            (json!({"a": {"$from": "p", "extra": 1}}), "input.a"),
            (json!({"a": {"$from": "p", "pointer": 1}}), "input.a"),
            (
                json!({"a": [{"$from": "p", "pointer": "x"}]}),
                "input.a[0].pointer",
            ),
            (
                json!({"a": {"$from": "p", "pointer": "/a~2"}}),
                "input.a.pointer",
            ),
            (json!({"$literal": 1, "b": 2}), "input"),
        ];
        for (input, field) in cases {
            let err = references(&input, "input").unwrap_err();
            assert_eq!(err.field, field, "{input}");
        }
    }

    #[test]
    fn resolution_substitutes_references_and_unwraps_literals() {
        let plan = json!({"sections": ["intro", "body"], "a/b": {"~": 7}});
        let results = |k: &TaskKey| (k.0 == "plan").then_some(&plan);
        let input = json!({
            "all": {"$from": "plan"},
            "first": {"$from": "plan", "pointer": "/sections/0"},
            "escaped": {"$from": "plan", "pointer": "/a~1b/~0"},
            "kept": {"$literal": {"$from": "plan"}},
            "n": 1,
        });
        let out = resolve(&input, "input", &results).unwrap();
        assert_eq!(
            out,
            json!({
                "all": plan,
                "first": "intro",
                "escaped": 7,
                "kept": {"$from": "plan"},
                "n": 1,
            })
        );
    }

    #[test]
    fn a_reference_that_finds_nothing_is_named_never_null() {
        let plan = json!({"sections": []});
        let results = |k: &TaskKey| (k.0 == "plan").then_some(&plan);
        let input = json!({"x": [{"$from": "plan", "pointer": "/sections/0"}]});
        let err = resolve(&input, "input", &results).unwrap_err();
        assert_eq!(
            err,
            Unresolved {
                at: "input.x[0]".into(),
                from: key("plan"),
                pointer: "/sections/0".into(),
                reason: None,
            }
        );
        assert!(err.message().contains("/sections/0"), "{}", err.message());
        let none = |_: &TaskKey| None;
        assert!(resolve(&json!({"$from": "gone"}), "input", &none).is_err());
    }
}
