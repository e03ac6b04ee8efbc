//! Ids as typed: a whole UUID, or its last hex digits (a short id, as the tables show it),
//! looked up on the server.

use std::str::FromStr;

use baton_client::Client;
use baton_store::IdSuffix;
use uuid::Uuid;

use super::call;

/// A task or workflow id on the command line: a whole UUID, or a unique suffix of one.
#[derive(Clone, Debug)]
pub enum IdArg {
    Full(Uuid),
    Suffix(IdSuffix),
}

impl FromStr for IdArg {
    type Err = String;

    fn from_str(text: &str) -> Result<IdArg, String> {
        if let Ok(id) = Uuid::parse_str(text) {
            return Ok(IdArg::Full(id));
        }
        IdSuffix::parse(text).map(IdArg::Suffix).ok_or_else(|| {
            "expected an id: a UUID, or its last 4 or more hex digits (as tables show)".into()
        })
    }
}

/// What kind of id a command takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Task,
    Workflow,
    /// A task's or a workflow's (`baton show`).
    Either,
}

/// One task or workflow whose id ends in the digits given.
struct Candidate {
    kind: Kind,
    id: Uuid,
    /// The task's key or the workflow's name.
    label: String,
}

impl Candidate {
    fn kind(&self) -> &'static str {
        if self.kind == Kind::Task {
            "task"
        } else {
            "workflow"
        }
    }

    fn line(&self) -> String {
        format!("{:<8}  {}  {}", self.kind(), self.id, self.label)
    }
}

/// The id `arg` stands for: itself if whole, else the one task or workflow (as `kind` says)
/// whose id ends in its digits. None or several is an error naming them.
pub async fn resolve(client: &Client, arg: &IdArg, kind: Kind) -> anyhow::Result<Uuid> {
    let suffix = match arg {
        IdArg::Full(id) => return Ok(*id),
        IdArg::Suffix(suffix) => suffix,
    };
    let found = call(client, client.ids(suffix.as_str())).await?;
    let tasks = found.tasks.into_iter().map(|t| Candidate {
        kind: Kind::Task,
        id: t.id,
        label: t.key,
    });
    let workflows = found.workflows.into_iter().map(|w| Candidate {
        kind: Kind::Workflow,
        id: w.id,
        label: if w.name.is_empty() {
            "(unnamed)".into()
        } else {
            w.name
        },
    });
    let (wanted, others): (Vec<Candidate>, Vec<Candidate>) = tasks
        .chain(workflows)
        .partition(|c| kind == Kind::Either || c.kind == kind);
    let what = match kind {
        Kind::Task => "task's id",
        Kind::Workflow => "workflow's id",
        Kind::Either => "task's or workflow's id",
    };
    match wanted.as_slice() {
        [one] => Ok(one.id),
        [] => {
            let mut text = format!("no {what} ends in `{suffix}`");
            if let Some(other) = others.first() {
                text.push_str(&format!(
                    " (but {} {}, `{}`, does)",
                    other.kind(),
                    other.id,
                    other.label
                ));
            }
            Err(anyhow::anyhow!(text))
        }
        many => {
            let mut text = format!(
                "`{suffix}` is ambiguous: {}{} ids end in it; give more digits, or the whole id:",
                many.len(),
                if found.more { " or more" } else { "" }
            );
            for c in many {
                text.push_str(&format!("\n  {}", c.line()));
            }
            Err(anyhow::anyhow!(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_uuid_or_its_last_hex_digits() {
        let full = "0192d0c6-8f5e-7cc3-9a4e-2b1f0c9d8e7a";
        assert!(matches!(full.parse(), Ok(IdArg::Full(_))));
        match "9D8E7A".parse::<IdArg>() {
            Ok(IdArg::Suffix(s)) => assert_eq!(s.as_str(), "9d8e7a"),
            other => panic!("{other:?}"),
        }
        for bad in ["not-an-id", "abc", ""] {
            let err = bad.parse::<IdArg>().unwrap_err();
            assert!(err.contains("last 4 or more hex digits"), "{err}");
        }
    }
}
