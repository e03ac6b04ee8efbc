//! References to artifacts: large data stored beside the tasks (`PUT /v1/artifacts`) and named
//! in a task's input or result by its SHA-256, as the JSON value `{"$artifact": "sha256:…"}`.
//!
//! This module only reads and finds references; storing, serving and keeping the bytes is the
//! store's and the engine's. A reference is an object whose one key is `$artifact`; any
//! object with a `$artifact` key is taken for one, so a malformed one is refused rather than
//! passed on as data.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The key that makes a JSON object a reference to an artifact.
pub const ARTIFACT_KEY: &str = "$artifact";

/// Most references to artifacts one input or result may hold: each is looked up when the
/// payload is accepted.
pub const ARTIFACT_REFS_PER_PAYLOAD_MAX: usize = 1_000;

/// An artifact's address: the SHA-256 of its bytes. Written `sha256:<64 lowercase hex>`;
/// read from that or from the bare hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactRef(pub [u8; 32]);

impl ArtifactRef {
    /// The 64 lowercase hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 0xf) as usize] as char);
        }
        s
    }
}

impl fmt::Display for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for ArtifactRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a reference should look like, for errors.
pub const ARTIFACT_REF_EXPECTED: &str =
    "an artifact reference `sha256:` followed by 64 lowercase hex digits";

impl FromStr for ArtifactRef {
    type Err = String;

    /// `sha256:<hex>` or the bare hex, 64 lowercase digits.
    fn from_str(s: &str) -> Result<ArtifactRef, String> {
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        let bytes = hex.as_bytes();
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        if bytes.len() != 64 {
            return Err(format!("{ARTIFACT_REF_EXPECTED}, not {s:?}"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => out[i] = (h << 4) | l,
                _ => return Err(format!("{ARTIFACT_REF_EXPECTED}, not {s:?}")),
            }
        }
        Ok(ArtifactRef(out))
    }
}

impl Serialize for ArtifactRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ArtifactRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ArtifactRef, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A reference found in a payload, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundRef {
    /// The field path below the payload's own (`input.docs[2]`).
    pub field: String,
    pub artifact: ArtifactRef,
}

/// Why a payload's references are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// An object with a `$artifact` key that is not a valid reference.
    #[error("`{field}` is not a valid artifact reference: expected {expected}")]
    Malformed { field: String, expected: String },
    /// More references than [`ARTIFACT_REFS_PER_PAYLOAD_MAX`].
    #[error("`{field}` holds more than {ARTIFACT_REFS_PER_PAYLOAD_MAX} artifact references")]
    TooMany { field: String },
}

/// Every reference in `value`, whose own field path is `field` (`tasks[2].input`), in document
/// order; a malformed one (or too many) is refused with its path.
pub fn find_refs(value: &Value, field: &str) -> Result<Vec<FoundRef>, RefError> {
    let mut out = Vec::new();
    let mut path = field.to_owned();
    walk(value, &mut path, &mut out)?;
    Ok(out)
}

/// The references in `value` that parse, ignoring malformed ones: what a store records for a
/// payload the engine has checked already.
pub fn refs_in(value: &Value) -> Vec<ArtifactRef> {
    let mut out = Vec::new();
    collect(value, &mut out);
    out.sort_unstable();
    out.dedup();
    out
}

/// An escaped literal (`{"$literal": …}`, see [`crate::template`]) is taken as written: what
/// it holds is no reference.
fn escaped(map: &serde_json::Map<String, Value>) -> bool {
    map.len() == 1 && map.contains_key(crate::template::LITERAL)
}

fn walk(value: &Value, path: &mut String, out: &mut Vec<FoundRef>) -> Result<(), RefError> {
    match value {
        Value::Object(map) if escaped(map) => {}
        Value::Object(map) => {
            if let Some(v) = map.get(ARTIFACT_KEY) {
                let parsed = match v {
                    Value::String(s) if map.len() == 1 => s.parse::<ArtifactRef>().ok(),
                    _ => None,
                };
                let Some(artifact) = parsed else {
                    return Err(RefError::Malformed {
                        field: path.clone(),
                        expected: format!(
                            "{{\"{ARTIFACT_KEY}\": \"sha256:<64 lowercase hex digits>\"}} \
                             with no other key"
                        ),
                    });
                };
                if out.len() == ARTIFACT_REFS_PER_PAYLOAD_MAX {
                    return Err(RefError::TooMany {
                        field: path.clone(),
                    });
                }
                out.push(FoundRef {
                    field: path.clone(),
                    artifact,
                });
                return Ok(());
            }
            for (k, v) in map {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                walk(v, path, out)?;
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(v, path, out)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn collect(value: &Value, out: &mut Vec<ArtifactRef>) {
    match value {
        Value::Object(map) if escaped(map) => {}
        Value::Object(map) => match map.get(ARTIFACT_KEY) {
            Some(Value::String(s)) if map.len() == 1 => out.extend(s.parse::<ArtifactRef>().ok()),
            Some(_) => {}
            None => map.values().for_each(|v| collect(v, out)),
        },
        Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_reference_reads_with_or_without_its_prefix_and_writes_with_it() {
        let a: ArtifactRef = format!("sha256:{HEX}").parse().unwrap();
        let b: ArtifactRef = HEX.parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), format!("sha256:{HEX}"));
        assert_eq!(a.hex(), HEX);
        assert!("sha256:abc".parse::<ArtifactRef>().is_err());
        assert!(HEX.to_uppercase().parse::<ArtifactRef>().is_err());
        assert!(format!("md5:{HEX}").parse::<ArtifactRef>().is_err());
    }

    #[test]
    fn references_are_found_with_their_field_paths() {
        let r = format!("sha256:{HEX}");
        let input = json!({"doc": {"$artifact": r}, "more": [1, {"x": {"$artifact": HEX}}]});
        let found = find_refs(&input, "tasks[2].input").unwrap();
        let fields: Vec<&str> = found.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["tasks[2].input.doc", "tasks[2].input.more[1].x"]);
        assert_eq!(refs_in(&input).len(), 1, "the same artifact twice is one");
    }

    #[test]
    fn a_malformed_reference_is_refused_with_its_path() {
        for bad in [
            json!({"a": {"$artifact": "sha256:nothex"}}),
            json!({"a": {"$artifact": 7}}),
            json!({"a": {"$artifact": format!("sha256:{HEX}"), "extra": 1}}),
        ] {
            let err = find_refs(&bad, "result").unwrap_err();
            assert!(
                matches!(&err, RefError::Malformed { field, .. } if field == "result.a"),
                "{err:?}"
            );
            assert!(refs_in(&bad).is_empty());
        }
    }

    #[test]
    fn too_many_references_are_refused() {
        let many: Vec<Value> = (0..=ARTIFACT_REFS_PER_PAYLOAD_MAX)
            .map(|_| json!({"$artifact": HEX}))
            .collect();
        let err = find_refs(&Value::Array(many), "input").unwrap_err();
        assert!(matches!(err, RefError::TooMany { .. }), "{err:?}");
    }

    #[test]
    fn an_escaped_literal_holds_no_reference() {
        let v = json!({"a": {"$literal": {"$artifact": "not a reference"}}});
        assert_eq!(find_refs(&v, "input").unwrap(), vec![]);
        assert!(refs_in(&v).is_empty());
    }
}
