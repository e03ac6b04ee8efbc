//! Workflow labels: a small map of `key → value` a workflow carries for its whole life (a
//! tenant, a team, an environment). The server lists workflows by label and limits tokens to
//! workflows carrying given labels; the engine stores them with the workflow, unread.
//!
//! Bounded so that a workflow's row stays small and a label filter stays an index lookup: at
//! most [`LABELS_MAX`] labels, keys of 1 to [`LABEL_KEY_LEN_MAX`] characters among `a-z`, `0-9`
//! and `_.-` (so a key never holds `=` or `:`, which separate a key from its value in
//! `tenant=acme` and `tenant:acme`), values of 1 to [`LABEL_VALUE_LEN_MAX`] bytes without
//! control characters.

use std::collections::BTreeMap;

use crate::spec::SpecError;

/// A workflow's labels, by key (ordered, so that equal maps serialise alike).
pub type Labels = BTreeMap<String, String>;

/// Most labels on one workflow.
pub const LABELS_MAX: usize = 16;
/// Longest label key, in characters (all ASCII).
pub const LABEL_KEY_LEN_MAX: usize = 63;
/// Longest label value, in bytes.
pub const LABEL_VALUE_LEN_MAX: usize = 255;

/// What a label key must be, for error messages.
pub const LABEL_KEY_EXPECTED: &str = "1 to 63 characters among a-z, 0-9, `_`, `.` and `-`";
/// What a label value must be, for error messages.
pub const LABEL_VALUE_EXPECTED: &str = "1 to 255 bytes without control characters";

/// Whether `key` may be a label's key.
pub fn is_label_key(key: &str) -> bool {
    (1..=LABEL_KEY_LEN_MAX).contains(&key.len())
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Whether `value` may be a label's value.
pub fn is_label_value(value: &str) -> bool {
    (1..=LABEL_VALUE_LEN_MAX).contains(&value.len()) && !value.chars().any(char::is_control)
}

/// Checks `labels` against the bounds; the error names the field under `prefix` (`labels`,
/// `workflow.labels`): the map itself, or `labels.KEY`.
pub fn validate_labels(labels: &Labels, prefix: &str) -> Result<(), SpecError> {
    if labels.len() > LABELS_MAX {
        return Err(SpecError::new(
            prefix,
            format!("at most {LABELS_MAX} labels, not {}", labels.len()),
        ));
    }
    for (key, value) in labels {
        if !is_label_key(key) {
            return Err(SpecError::new(
                format!("{prefix}.{}", key.escape_debug()),
                format!("a key of {LABEL_KEY_EXPECTED}"),
            ));
        }
        if !is_label_value(value) {
            return Err(SpecError::new(
                format!("{prefix}.{key}"),
                format!("a value of {LABEL_VALUE_EXPECTED}"),
            ));
        }
    }
    Ok(())
}

/// One label written as `key=value` or `key:value` (the first `=` or `:` separates them: a
/// key holds neither), both parts checked.
pub fn parse_label(text: &str) -> Option<(String, String)> {
    let at = text.find(['=', ':'])?;
    let (key, value) = (&text[..at], &text[at + 1..]);
    (is_label_key(key) && is_label_value(value)).then(|| (key.to_owned(), value.to_owned()))
}

/// Whether `labels` carries every label of `required`.
pub fn has_labels(labels: &Labels, required: &Labels) -> bool {
    required.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn keys_and_values_are_bounded() {
        assert!(validate_labels(
            &labels(&[("tenant", "acme"), ("k8s.io-x_1", "a b")]),
            "labels"
        )
        .is_ok());
        let e = validate_labels(&labels(&[("Tenant", "acme")]), "labels").unwrap_err();
        assert_eq!(e.field, "labels.Tenant");
        let e = validate_labels(&labels(&[("tenant", "")]), "labels").unwrap_err();
        assert_eq!(e.field, "labels.tenant");
        let e = validate_labels(&labels(&[("a=b", "c")]), "workflow.labels").unwrap_err();
        assert_eq!(e.field, "workflow.labels.a=b");
        let long = "k".repeat(LABEL_KEY_LEN_MAX + 1);
        assert!(validate_labels(&labels(&[(&long, "v")]), "labels").is_err());
        let long = "v".repeat(LABEL_VALUE_LEN_MAX + 1);
        assert!(validate_labels(&labels(&[("k", &long)]), "labels").is_err());
        assert!(validate_labels(&labels(&[("k", "a\nb")]), "labels").is_err());
        let many: Labels = (0..=LABELS_MAX)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert_eq!(
            validate_labels(&many, "labels").unwrap_err().field,
            "labels"
        );
    }

    #[test]
    fn a_label_is_read_at_its_first_separator() {
        assert_eq!(
            parse_label("tenant=acme"),
            Some(("tenant".into(), "acme".into()))
        );
        assert_eq!(
            parse_label("tenant:acme"),
            Some(("tenant".into(), "acme".into()))
        );
        assert_eq!(
            parse_label("url:http://x=y"),
            Some(("url".into(), "http://x=y".into()))
        );
        for bad in ["tenant", "=acme", "tenant=", "Tenant=acme", ""] {
            assert_eq!(parse_label(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_scope_is_a_subset() {
        let wf = labels(&[("tenant", "acme"), ("env", "prod")]);
        assert!(has_labels(&wf, &labels(&[("tenant", "acme")])));
        assert!(has_labels(&wf, &Labels::new()));
        assert!(!has_labels(&wf, &labels(&[("tenant", "other")])));
        assert!(!has_labels(&wf, &labels(&[("team", "x")])));
    }
}
