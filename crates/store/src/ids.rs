//! Short ids: the trailing hex digits of a task's or workflow's id, as an operator types them.

use baton_core::{TaskId, TaskKey, WorkflowId};

use crate::WorkflowRecord;

/// The last hex digits of an id (lower case, no hyphens), at least [`IdSuffix::DIGITS_MIN`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdSuffix(String);

impl IdSuffix {
    /// Fewest digits looked up: fewer would match too many ids to be of use.
    pub const DIGITS_MIN: usize = 4;
    /// What a valid suffix is, for error messages.
    pub const EXPECTED: &'static str =
        "the last 4 to 32 hex digits of a task's or workflow's id (hyphens ignored)";

    /// `text` without its hyphens, in lower case; `None` unless that is 4 to 32 hex digits.
    pub fn parse(text: &str) -> Option<IdSuffix> {
        let digits: String = text
            .chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let valid = (IdSuffix::DIGITS_MIN..=32).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_hexdigit());
        valid.then_some(IdSuffix(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: a suffix has at least [`IdSuffix::DIGITS_MIN`] digits.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for IdSuffix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A task whose id ends in the digits looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskIdMatch {
    pub id: TaskId,
    pub workflow: WorkflowId,
    pub key: TaskKey,
}

/// The tasks and workflows whose ids end in the digits looked up, each in id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMatches {
    pub tasks: Vec<TaskIdMatch>,
    pub workflows: Vec<WorkflowRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suffix_is_4_to_32_hex_digits_hyphens_ignored() {
        assert_eq!(IdSuffix::parse("9D8E7A").unwrap().as_str(), "9d8e7a");
        assert_eq!(
            IdSuffix::parse("9a4e-2b1f0c9d8e7a").unwrap().as_str(),
            "9a4e2b1f0c9d8e7a"
        );
        let full = "0192d0c6-8f5e-7cc3-9a4e-2b1f0c9d8e7a";
        assert_eq!(IdSuffix::parse(full).unwrap().len(), 32);
        for bad in [
            "",
            "abc",
            "-a-b-c-",
            "xyz0",
            "0192d0c6-8f5e-7cc3-9a4e-2b1f0c9d8e7a0",
        ] {
            assert!(IdSuffix::parse(bad).is_none(), "{bad:?}");
        }
    }
}
