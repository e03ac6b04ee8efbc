//! The bearer tokens a server accepts: each has a name (recorded as the actor of what it
//! does), a [`Role`], and for an agent token the agent names it may register (`planner`, or a
//! prefix `worker-*`) with a cap on how many of them may be online at once; any token may be
//! scoped to workflows carrying given labels.
//!
//! Tokens come from flags (`--operator-token`, `--agent-token NAME=TOKEN`, …) and from a tokens
//! file (`baton serve --tokens FILE`, JSON, see [`parse_tokens_file`]); [`Tokens::build`]
//! checks them all together (unique names and secrets, the rules of each role) and refuses
//! the whole set at the first fault, naming it (`tokens[2].role`). Secrets are kept only as
//! their SHA-256 digests: a presented token is hashed and looked up, and a file may give the
//! digest alone (`secret_sha256`), so that it holds no secret.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use baton_core::labels::{parse_label, LABELS_MAX};
use baton_core::Labels;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::Role;

/// How many agents an agent token may have online at once, unless its entry says otherwise:
/// enough for a pool, far from the thousands one leaked token could otherwise register.
pub const AGENTS_MAX_DEFAULT: u32 = 64;
/// The highest `agents_max` a token may set.
pub const AGENTS_MAX_LIMIT: u32 = 10_000;
/// Longest token name, in characters.
pub const TOKEN_NAME_LEN_MAX: usize = 64;
/// Most agent name patterns one token may hold.
pub const AGENT_PATTERNS_MAX: usize = 64;
/// Most tokens one server holds (flags and file together).
pub const TOKENS_MAX: usize = 10_000;
/// Largest tokens file read, in bytes.
pub const TOKENS_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Longest agent name a pattern may give (the engine's bound on agent names).
const AGENT_NAME_LEN_MAX: usize = 256;

/// What a token name must be, for error messages.
const TOKEN_NAME_EXPECTED: &str = "1 to 64 characters among letters, digits and `_.:@-`";

/// A token as configured, before it is checked: from a flag or an entry of the tokens file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSpec {
    /// Where it was given, for error messages: `tokens[2]`, `--operator-token`.
    pub origin: String,
    pub name: String,
    pub role: Role,
    pub secret: Secret,
    /// Agent tokens: the names it may register and act as (`planner`, `worker-*`).
    pub agents: Vec<String>,
    /// Agent tokens: at most this many of its agents online at once.
    pub agents_max: Option<u32>,
    /// Only workflows carrying every one of these labels (none: all).
    pub scope: Labels,
}

/// A token's secret, or only its SHA-256 digest.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    Sha256([u8; 32]),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed, even in a debug log.
        f.write_str("Secret(…)")
    }
}

impl Secret {
    fn digest(&self) -> [u8; 32] {
        match self {
            Secret::Plain(s) => sha256(s),
            Secret::Sha256(d) => *d,
        }
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// A token refused: the field at fault (`tokens[2].agents[0]`, `--agent-token`) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct TokenError {
    pub field: String,
    pub message: String,
}

impl TokenError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> TokenError {
        TokenError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A checked token.
#[derive(Debug)]
pub struct Token {
    pub name: String,
    pub role: Role,
    /// Agent tokens: the names it may register and act as.
    pub agents: Vec<AgentPattern>,
    /// Agent tokens: at most this many of its agents online at once.
    pub agents_max: u32,
    /// Only workflows carrying every one of these labels (empty: all).
    pub scope: Labels,
    /// Held while one of its agents registers, so that concurrent registrations on this node
    /// cannot together pass the cap.
    pub(crate) registering: tokio::sync::Mutex<()>,
    /// The stand-in for loopback clients when no tokens are configured.
    pub(crate) local: bool,
}

impl Token {
    /// Whether this token may act as the agent named `name`: an admin as any; an agent token
    /// as the names its patterns match; no other role as any.
    pub fn binds(&self, name: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Agent => self.agents.iter().any(|p| p.matches(name)),
            Role::Viewer | Role::Operator => false,
        }
    }

    /// The token that stands for every loopback client when no tokens are configured.
    pub(crate) fn local() -> Token {
        Token {
            name: "local".into(),
            role: Role::Admin,
            agents: Vec::new(),
            agents_max: AGENTS_MAX_LIMIT,
            scope: Labels::new(),
            registering: tokio::sync::Mutex::new(()),
            local: true,
        }
    }
}

/// An agent name, or a prefix of names when it ends in `*` (`worker-*`; `*` alone is any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPattern(String);

impl AgentPattern {
    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == self.0,
        }
    }
}

impl std::fmt::Display for AgentPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tokens a server accepts, by the digest of their secrets.
#[derive(Debug, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Arc<Token>>,
    /// Every spec, in order, so that tokens can be added one by one (tests, flags).
    specs: Vec<TokenSpec>,
}

impl Tokens {
    pub fn none() -> Tokens {
        Tokens::default()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Checks `specs` together and builds the set, or names the first fault.
    pub fn build(specs: impl IntoIterator<Item = TokenSpec>) -> Result<Tokens, TokenError> {
        let mut tokens = Tokens::none();
        for spec in specs {
            tokens.insert(spec)?;
        }
        Ok(tokens)
    }

    /// Adds one token, checked against those already here.
    pub fn insert(&mut self, spec: TokenSpec) -> Result<(), TokenError> {
        let token = check(&spec)?;
        if self.specs.len() >= TOKENS_MAX {
            return Err(TokenError::new(
                &spec.origin,
                format!("at most {TOKENS_MAX} tokens"),
            ));
        }
        if let Some(other) = self.specs.iter().find(|s| s.name == spec.name) {
            return Err(TokenError::new(
                format!("{}.name", spec.origin),
                format!(
                    "`{}` is already the name of {}: token names must be unique",
                    spec.name, other.origin
                ),
            ));
        }
        let digest = spec.secret.digest();
        if let Some(other) = self.by_digest.get(&digest) {
            let origin = self
                .specs
                .iter()
                .find(|s| s.name == other.name)
                .map_or("another token", |s| s.origin.as_str());
            return Err(TokenError::new(
                format!("{}.secret", spec.origin),
                format!(
                    "the same secret as {origin} (`{}`): each token needs its own",
                    other.name
                ),
            ));
        }
        self.by_digest.insert(digest, Arc::new(token));
        self.specs.push(spec);
        Ok(())
    }

    /// Adds an operator token named `operator` (or `operator-2`, … if taken).
    ///
    /// # Panics
    /// If the secret is another token's (a test's mistake).
    pub fn add_operator(&mut self, secret: impl Into<String>) {
        self.add_simple(Role::Operator, secret.into());
    }

    /// Adds an admin token named `admin` (or `admin-2`, …).
    ///
    /// # Panics
    /// If the secret is another token's.
    pub fn add_admin(&mut self, secret: impl Into<String>) {
        self.add_simple(Role::Admin, secret.into());
    }

    /// Adds a viewer token named `viewer` (or `viewer-2`, …).
    ///
    /// # Panics
    /// If the secret is another token's.
    pub fn add_viewer(&mut self, secret: impl Into<String>) {
        self.add_simple(Role::Viewer, secret.into());
    }

    /// Adds an agent token bound to the agent name `name` (or, ending in `*`, to the names
    /// it begins), named `agent:NAME`, with the default cap.
    ///
    /// # Panics
    /// If the name is not an agent name or the secret is another token's.
    pub fn add_agent(&mut self, name: impl Into<String>, secret: impl Into<String>) {
        let spec = flag_agent_token(self.specs(), name.into(), secret.into());
        self.insert(spec).expect("a valid agent token");
    }

    fn add_simple(&mut self, role: Role, secret: String) {
        let spec = flag_token(self.specs(), role, secret);
        self.insert(spec).expect("a token with a secret of its own");
    }

    /// The specs, in the order they were added.
    pub fn specs(&self) -> &[TokenSpec] {
        &self.specs
    }

    /// The token whose secret this is.
    pub(crate) fn find(&self, secret: &str) -> Option<&Arc<Token>> {
        self.by_digest.get(&sha256(secret))
    }

    /// How many tokens of each role: what a log line may say about them.
    pub fn count_by_role(&self) -> BTreeMap<&'static str, usize> {
        let mut counts: BTreeMap<&'static str, usize> =
            [Role::Viewer, Role::Operator, Role::Admin, Role::Agent]
                .into_iter()
                .map(|r| (r.as_str(), 0))
                .collect();
        for token in self.by_digest.values() {
            *counts.entry(token.role.as_str()).or_default() += 1;
        }
        counts
    }
}

/// A token given by a role's flag (`--operator-token SECRET`), named after the role:
/// `operator`, then `operator-2`, … if `taken` has that name.
pub fn flag_token(taken: &[TokenSpec], role: Role, secret: String) -> TokenSpec {
    TokenSpec {
        origin: format!("--{}-token", role.as_str()),
        name: unique_name(taken, role.as_str()),
        role,
        secret: Secret::Plain(secret),
        agents: Vec::new(),
        agents_max: None,
        scope: Labels::new(),
    }
}

/// A token given by `--agent-token NAME=SECRET`: bound to NAME, named `agent:NAME` (then
/// `agent:NAME-2`, … if taken; a character a token name may not hold, as the `*` of a
/// prefix, written `_`).
pub fn flag_agent_token(taken: &[TokenSpec], agent: String, secret: String) -> TokenSpec {
    let named: String = agent
        .chars()
        .map(|c| if is_token_name_char(c) { c } else { '_' })
        .collect();
    TokenSpec {
        origin: "--agent-token".into(),
        name: unique_name(taken, &format!("agent:{named}")),
        role: Role::Agent,
        secret: Secret::Plain(secret),
        agents: vec![agent],
        agents_max: None,
        scope: Labels::new(),
    }
}

fn unique_name(taken: &[TokenSpec], base: &str) -> String {
    let base: String = base.chars().take(TOKEN_NAME_LEN_MAX - 6).collect();
    let free = |n: &str| !taken.iter().any(|s| s.name == n);
    if free(&base) {
        return base;
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| free(n))
        .expect("some suffix is free")
}

fn is_token_name(name: &str) -> bool {
    (1..=TOKEN_NAME_LEN_MAX).contains(&name.chars().count()) && name.chars().all(is_token_name_char)
}

fn is_token_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '-')
}

/// The rules of one token on its own.
fn check(spec: &TokenSpec) -> Result<Token, TokenError> {
    let at = |field: &str| format!("{}.{field}", spec.origin);
    if !is_token_name(&spec.name) {
        return Err(TokenError::new(
            at("name"),
            format!("{:?} is not a token name: {TOKEN_NAME_EXPECTED}", spec.name),
        ));
    }
    if let Secret::Plain(s) = &spec.secret {
        if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenError::new(
                at("secret"),
                "a secret is at least one character, without spaces or control characters",
            ));
        }
    }
    let mut agents = Vec::new();
    match spec.role {
        Role::Agent => {
            if spec.agents.is_empty() || spec.agents.len() > AGENT_PATTERNS_MAX {
                return Err(TokenError::new(
                    at("agents"),
                    format!(
                        "an agent token names the agents it may register: 1 to \
                         {AGENT_PATTERNS_MAX} names, each exact (`planner`) or a prefix \
                         ending in `*` (`worker-*`)"
                    ),
                ));
            }
            for (i, p) in spec.agents.iter().enumerate() {
                let stem = p.strip_suffix('*').unwrap_or(p);
                if p.is_empty()
                    || p.len() > AGENT_NAME_LEN_MAX
                    || stem.contains('*')
                    || p.chars().any(char::is_control)
                {
                    return Err(TokenError::new(
                        at(&format!("agents[{i}]")),
                        format!(
                            "{p:?} is not an agent name or prefix: 1 to {AGENT_NAME_LEN_MAX} \
                             bytes, `*` only at the end"
                        ),
                    ));
                }
                agents.push(AgentPattern(p.clone()));
            }
            if let Some(max) = spec.agents_max {
                if !(1..=AGENTS_MAX_LIMIT).contains(&max) {
                    return Err(TokenError::new(
                        at("agents_max"),
                        format!("from 1 to {AGENTS_MAX_LIMIT}, not {max}"),
                    ));
                }
            }
            if !spec.scope.is_empty() {
                return Err(TokenError::new(
                    at("scope"),
                    "agent tokens take no scope: agents claim by capability, whatever the \
                     workflow; give a tenant's agents capabilities of their own",
                ));
            }
        }
        Role::Viewer | Role::Operator | Role::Admin => {
            if !spec.agents.is_empty() || spec.agents_max.is_some() {
                let field = if spec.agents.is_empty() {
                    "agents_max"
                } else {
                    "agents"
                };
                return Err(TokenError::new(
                    at(field),
                    format!(
                        "only agent tokens name agents; this token's role is {}",
                        spec.role.as_str()
                    ),
                ));
            }
        }
    }
    if spec.scope.len() > LABELS_MAX {
        return Err(TokenError::new(
            at("scope.label"),
            format!("at most {LABELS_MAX} labels"),
        ));
    }
    Ok(Token {
        name: spec.name.clone(),
        role: spec.role,
        agents,
        agents_max: spec.agents_max.unwrap_or(AGENTS_MAX_DEFAULT),
        scope: spec.scope.clone(),
        registering: tokio::sync::Mutex::new(()),
        local: false,
    })
}

// ---- the tokens file ------------------------------------------------------------------------

/// The tokens file: `{"tokens": [ENTRY, …]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<Entry>,
}

/// One token of the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: Role,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_sha256: Option<String>,
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    agents_max: Option<u32>,
    #[serde(default)]
    scope: Option<ScopeEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeEntry {
    label: OneOrMany,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Reads a tokens file (JSON):
///
/// ```json
/// {"tokens": [
///   {"name": "ci", "role": "operator", "secret_sha256": "<64 hex digits>"},
///   {"name": "grafana", "role": "viewer", "secret": "…"},
///   {"name": "acme-ops", "role": "operator", "secret": "…", "scope": {"label": "tenant=acme"}},
///   {"name": "workers", "role": "agent", "secret": "…", "agents": ["worker-*"], "agents_max": 128}
/// ]}
/// ```
///
/// `role` is `viewer`, `operator`, `admin` or `agent`; exactly one of `secret` and
/// `secret_sha256` (the hex SHA-256 of the secret, so the file need not hold it); `agents`
/// and `agents_max` (default [`AGENTS_MAX_DEFAULT`]) for agent tokens only; `scope.label` one
/// label `key=value` or a list, all of which a workflow must carry. Each token is checked
/// alone here; [`Tokens::build`] checks them together. Errors name the field
/// (`tokens[2].role`) and, for syntax and shape, the line and column.
pub fn parse_tokens_file(text: &str) -> Result<Vec<TokenSpec>, TokenError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let file: TokensFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." { "file".into() } else { path };
        TokenError::new(field, inner.to_string())
    })?;
    let mut specs = Vec::with_capacity(file.tokens.len());
    for (i, entry) in file.tokens.into_iter().enumerate() {
        let origin = format!("tokens[{i}]");
        let secret = match (entry.secret, entry.secret_sha256) {
            (Some(s), None) => Secret::Plain(s),
            (None, Some(hex)) => Secret::Sha256(parse_sha256(&hex).ok_or_else(|| {
                TokenError::new(
                    format!("{origin}.secret_sha256"),
                    "64 hex digits: the SHA-256 of the secret (`printf %s SECRET | sha256sum`)",
                )
            })?),
            _ => {
                return Err(TokenError::new(
                    format!("{origin}.secret"),
                    "give exactly one of `secret` and `secret_sha256`",
                ))
            }
        };
        let mut scope = Labels::new();
        if let Some(s) = entry.scope {
            let labels = match s.label {
                OneOrMany::One(l) => vec![l],
                OneOrMany::Many(ls) => ls,
            };
            for (j, text) in labels.iter().enumerate() {
                let Some((k, v)) = parse_label(text) else {
                    return Err(TokenError::new(
                        format!("{origin}.scope.label[{j}]"),
                        format!(
                            "{text:?} is not a label: `key=value`, the key of 1 to 63 \
                             characters among a-z, 0-9 and `_.-`, the value of 1 to 255 bytes"
                        ),
                    ));
                };
                if scope.insert(k.clone(), v).is_some() {
                    return Err(TokenError::new(
                        format!("{origin}.scope.label[{j}]"),
                        format!("the label `{k}` is given twice"),
                    ));
                }
            }
            if scope.is_empty() {
                return Err(TokenError::new(
                    format!("{origin}.scope.label"),
                    "at least one label (or leave `scope` out)",
                ));
            }
        }
        specs.push(TokenSpec {
            origin,
            name: entry.name,
            role: entry.role,
            secret,
            agents: entry.agents,
            agents_max: entry.agents_max,
            scope,
        });
    }
    Ok(specs)
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> Result<Tokens, TokenError> {
        Tokens::build(parse_tokens_file(text)?)
    }

    #[test]
    fn a_file_of_every_role() {
        let digest: String = sha256("hashed")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let tokens = build(&format!(
            r#"{{"tokens": [
                {{"name": "ci", "role": "operator", "secret_sha256": "{digest}"}},
                {{"name": "grafana", "role": "viewer", "secret": "v"}},
                {{"name": "root", "role": "admin", "secret": "a"}},
                {{"name": "acme", "role": "operator", "secret": "o",
                  "scope": {{"label": ["tenant=acme", "env:prod"]}}}},
                {{"name": "workers", "role": "agent", "secret": "w",
                  "agents": ["worker-*", "planner"], "agents_max": 3}}
            ]}}"#
        ))
        .unwrap();
        assert_eq!(tokens.len(), 5);
        assert_eq!(tokens.find("hashed").unwrap().name, "ci");
        assert!(tokens.find(&digest).is_none(), "a digest is not a secret");
        let acme = tokens.find("o").unwrap();
        assert_eq!(acme.scope.get("tenant").map(String::as_str), Some("acme"));
        assert_eq!(acme.scope.get("env").map(String::as_str), Some("prod"));
        let workers = tokens.find("w").unwrap();
        assert_eq!(workers.agents_max, 3);
        assert!(workers.binds("worker-17") && workers.binds("planner"));
        assert!(!workers.binds("planner-2") && !workers.binds("worke"));
        assert!(tokens.find("a").unwrap().binds("anyone"));
        assert!(!tokens.find("v").unwrap().binds("worker-1"));
        let counts = tokens.count_by_role();
        assert_eq!(counts["operator"], 2);
        assert_eq!(counts["agent"], 1);
    }

    #[test]
    fn faults_are_named_by_field() {
        for (text, field, says) in [
            (
                r#"{"tokens": [{"name": "x", "role": "operater", "secret": "s"}]}"#,
                "tokens[0].role",
                "line 1",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "viewer"}]}"#,
                "tokens[0].secret",
                "exactly one",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "viewer", "secret": "s", "secret_sha256": "00"}]}"#,
                "tokens[0].secret",
                "exactly one",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "viewer", "secret_sha256": "abc"}]}"#,
                "tokens[0].secret_sha256",
                "64 hex",
            ),
            (
                r#"{"tokens": [{"name": "a b", "role": "viewer", "secret": "s"}]}"#,
                "tokens[0].name",
                "not a token name",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "agent", "secret": "s"}]}"#,
                "tokens[0].agents",
                "names the agents",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "agent", "secret": "s", "agents": ["a*b"]}]}"#,
                "tokens[0].agents[0]",
                "only at the end",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "agent", "secret": "s", "agents": ["a"], "agents_max": 0}]}"#,
                "tokens[0].agents_max",
                "from 1",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "agent", "secret": "s", "agents": ["a"], "scope": {"label": "t=a"}}]}"#,
                "tokens[0].scope",
                "no scope",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "viewer", "secret": "s", "agents": ["a"]}]}"#,
                "tokens[0].agents",
                "only agent tokens",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "viewer", "secret": "s", "scope": {"label": "Tenant=a"}}]}"#,
                "tokens[0].scope.label[0]",
                "not a label",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "viewer", "secret": "s", "colour": 1}]}"#,
                "tokens[0].colour",
                "unknown field",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "viewer", "secret": "s"}, {"name": "x", "role": "admin", "secret": "t"}]}"#,
                "tokens[1].name",
                "tokens[0]",
            ),
            (
                r#"{"tokens": [{"name": "x", "role": "viewer", "secret": "s"}, {"name": "y", "role": "admin", "secret": "s"}]}"#,
                "tokens[1].secret",
                "same secret",
            ),
            (
                "{\"tokens\": [\n{\"name\": \"x\",\n \"role\": 7}]}",
                "tokens[0].role",
                "line 3",
            ),
            ("{\"tokens\": [", "tokens", "EOF"),
            ("[]", "file", "expected struct"),
        ] {
            let e = build(text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(e.message.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn flag_tokens_are_named_after_their_role_and_agent() {
        let mut tokens = Tokens::none();
        tokens.add_operator("a");
        tokens.add_operator("b");
        tokens.add_agent("alpha", "c");
        tokens.add_agent("alpha", "d");
        tokens.add_agent("pool-*", "e");
        let names: Vec<&str> = tokens.specs().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "operator",
                "operator-2",
                "agent:alpha",
                "agent:alpha-2",
                "agent:pool-_"
            ]
        );
        assert!(tokens.find("e").unwrap().binds("pool-9"));
        assert!(!tokens.find("c").unwrap().binds("alpha-2"));
        // A file's token may not take a flag's name.
        let file = parse_tokens_file(
            r#"{"tokens": [{"name": "operator", "role": "viewer", "secret": "z"}]}"#,
        )
        .unwrap();
        let e = Tokens::build(tokens.specs().iter().cloned().chain(file)).unwrap_err();
        assert_eq!(e.field, "tokens[0].name");
        assert!(e.message.contains("--operator-token"), "{e}");
    }
}
