//! Workflow files for `baton submit`: YAML or JSON with the shape of the `POST /v1/workflows`
//! body. A file is parsed, decoded and checked with the engine's own rules before anything is
//! sent, and every error (the parser's, the schema's, a rule's or the server's refusal) is
//! placed at the line and column of the field at fault.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use baton_client::wire::{ProblemDoc, SubmitWorkflow};
use baton_core::{DagError, TaskKey};
use baton_engine::{validate_workflow, EngineError, WorkflowRequest};
use baton_server::extract::decode;
use saphyr::{MarkedYaml, Scalar, ScalarStyle, ScanError, Tag, YamlData, YamlLoader};
use saphyr_parser::{BufferedInput, Parser};
use serde_json::{Map, Number, Value};

/// Deepest nesting read from a file: beyond the server's payload limit, short of any stack's.
const DEPTH_MAX: usize = 128;

/// How a workflow file is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
}

impl Format {
    /// By extension (`.json`, `.yaml`, `.yml`); otherwise `None`: decided by the content.
    fn of(name: &str) -> Option<Format> {
        let ext = Path::new(name).extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// A place in a file: 1-based line and column (in characters), and the width of the item on
/// that line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    line: usize,
    col: usize,
    width: usize,
}

impl Span {
    fn of(node: &MarkedYaml) -> Span {
        let (start, end) = (node.span.start, node.span.end);
        let width = if end.line() == start.line() && end.col() > start.col() {
            end.col() - start.col()
        } else {
            1
        };
        Span {
            line: start.line(),
            col: start.col() + 1,
            width,
        }
    }

    fn point(line: usize, col: usize) -> Span {
        Span {
            line,
            col: col.max(1),
            width: 1,
        }
    }
}

/// An error in a workflow file: where, which field, what is wrong.
#[derive(Debug)]
pub struct Diagnostic {
    file: String,
    /// The field at fault as the server names it: `tasks[2].retry.max_attempts`.
    field: Option<String>,
    message: String,
    place: Option<Box<Place>>,
}

/// Where a diagnostic points, and the text of that line.
#[derive(Debug)]
struct Place {
    span: Span,
    line: Option<String>,
}

impl Diagnostic {
    fn new(
        file: &str,
        text: &str,
        span: Option<Span>,
        field: Option<String>,
        message: String,
    ) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            field,
            message,
            place: span.map(|span| {
                Box::new(Place {
                    span,
                    line: line_of(text, span.line),
                })
            }),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(place) = &self.place else {
            write!(f, "{}: {}", self.file, self.message)?;
            if let Some(field) = &self.field {
                write!(f, "\n  field `{field}`")?;
            }
            return Ok(());
        };
        let s = place.span;
        write!(f, "{}:{}:{}: {}", self.file, s.line, s.col, self.message)?;
        write!(f, "\n  at line {}, column {}", s.line, s.col)?;
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        if let Some(text) = &place.line {
            let number = s.line.to_string();
            let gutter = " ".repeat(number.len());
            let text: String = text
                .chars()
                .map(|c| if c == '\t' { ' ' } else { c })
                .collect();
            let width = s
                .width
                .min(text.chars().count().saturating_sub(s.col - 1).max(1));
            write!(
                f,
                "\n {gutter} |\n {number} | {text}\n {gutter} | {}{}",
                " ".repeat(s.col - 1),
                "^".repeat(width)
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

impl Diagnostic {
    /// The field at fault, named as the server names it (`tasks[2].retry.max_attempts`).
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// Where in the file: 1-based line and column (in characters).
    pub fn position(&self) -> Option<(usize, usize)> {
        self.place.as_ref().map(|p| (p.span.line, p.span.col))
    }

    /// What is wrong, without the place.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Where each node of a document starts, for pointing at fields by path.
#[derive(Debug)]
enum Node {
    Map(Span, Vec<Entry>),
    Seq(Span, Vec<Node>),
    Scalar(Span),
}

/// One entry of a mapping: its key, where the key is, its value.
#[derive(Debug)]
struct Entry {
    key: String,
    at: Span,
    value: Node,
}

impl Node {
    fn span(&self) -> Span {
        match self {
            Node::Map(s, _) | Node::Seq(s, _) | Node::Scalar(s) => *s,
        }
    }
}

/// One step of a field path.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    Key(&'a str),
    /// `[2]`; `None` for `[]`, "some element".
    Index(Option<usize>),
}

/// Splits `tasks[2].retry.max_attempts` into its steps.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() {
            out.push(Step::Key(name));
        }
        while let Some(open) = rest.strip_prefix('[') {
            let close = open.find(']').unwrap_or(open.len());
            out.push(Step::Index(open[..close].parse().ok()));
            rest = open.get(close + 1..).unwrap_or("");
        }
    }
    out
}

/// A parsed and checked workflow file, ready to submit.
#[derive(Debug)]
pub struct WorkflowFile {
    source: Source,
    /// The body to submit, exactly as written (defaults left to the server).
    pub body: Value,
    pub workflow: SubmitWorkflow,
}

/// A YAML or JSON document (by extension, else by content) as JSON; a syntax error is placed
/// at its line and column.
pub fn parse_document(name: &str, text: &str) -> Result<Value, Diagnostic> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    Ok(parse_any(name, text)?.0)
}

fn parse_any(name: &str, text: &str) -> Result<(Value, Option<Node>), Diagnostic> {
    Ok(match Format::of(name) {
        Some(Format::Json) => parse_json(text).map_err(|e| located(name, text, e))?,
        Some(Format::Yaml) => parse_yaml(text).map_err(|e| located(name, text, e))?,
        None if text.trim_start().starts_with(['{', '[']) => match parse_json(text) {
            Ok(parsed) => parsed,
            Err(json_err) => parse_yaml(text).map_err(|_| located(name, text, json_err))?,
        },
        None => parse_yaml(text).map_err(|e| located(name, text, e))?,
    })
}

impl WorkflowFile {
    /// Parses `text`, the contents of the file called `name`, and checks it as the server
    /// would: shape, fields, and the engine's rules for specs and dependency graphs.
    pub fn parse(name: &str, text: String) -> Result<WorkflowFile, Diagnostic> {
        let text = match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_owned(),
            None => text,
        };
        let (body, tree) = parse_any(name, &text)?;
        let source = Source {
            name: name.to_owned(),
            text,
            tree,
        };
        let workflow = source.check(&body)?;
        Ok(WorkflowFile {
            source,
            body,
            workflow,
        })
    }

    /// The server's refusal of this file, placed at the field it names.
    pub fn explain(&self, problem: &ProblemDoc) -> Diagnostic {
        let field = match &problem.cycle {
            Some(cycle) => {
                let keys: Vec<TaskKey> = cycle.iter().map(|k| TaskKey(k.clone())).collect();
                cycle_field(&self.workflow, &keys).or_else(|| problem.field.clone())
            }
            None => problem.field.clone(),
        };
        let message = format!(
            "the server refused the workflow: {} ({} {})",
            problem.detail, problem.status, problem.code
        );
        self.source.diagnostic(field, message)
    }

    /// The file's name, as given.
    pub fn name(&self) -> &str {
        &self.source.name
    }
}

/// A file's name and text, and where its nodes are.
#[derive(Debug)]
struct Source {
    name: String,
    text: String,
    tree: Option<Node>,
}

impl Source {
    /// Decodes `body` with the server's own decoder and checks it with the engine's rules.
    fn check(&self, body: &Value) -> Result<SubmitWorkflow, Diagnostic> {
        let bytes = serde_json::to_vec(body).expect("a JSON value serialises");
        let workflow: SubmitWorkflow = decode(&bytes).map_err(|p| {
            let field = p.field.clone().filter(|f| f != "body");
            let message = match &field {
                None => "a workflow is a mapping with `tasks` (and optionally `name` and \
                         `idempotency_key`)"
                    .to_owned(),
                Some(_) => p.detail.clone(),
            };
            self.diagnostic(field, message)
        })?;
        self.check_rules(&workflow)?;
        Ok(workflow)
    }

    /// The engine's checks of a workflow request, so that a bad file submits nothing.
    fn check_rules(&self, wf: &SubmitWorkflow) -> Result<(), Diagnostic> {
        let req = WorkflowRequest {
            name: wf.name.clone(),
            idempotency_key: wf.idempotency_key.clone(),
            tasks: wf.tasks.clone(),
            outputs: wf.outputs.clone(),
            labels: wf.labels.clone(),
            budgets: wf.budgets.clone(),
        };
        match validate_workflow(&req) {
            Ok(()) => Ok(()),
            Err(EngineError::Graph(e)) => Err(self.graph_error(wf, e)),
            Err(EngineError::Invalid { field, expected }) => {
                let message = format!("invalid `{field}`: expected {expected}");
                Err(self.diagnostic(Some(field), message))
            }
            Err(other) => Err(self.diagnostic(None, other.to_string())),
        }
    }

    fn graph_error(&self, wf: &SubmitWorkflow, e: DagError) -> Diagnostic {
        let field = match &e {
            DagError::DuplicateTask(key) => wf
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| &t.key == key)
                .nth(1)
                .map(|(i, _)| format!("tasks[{i}].key")),
            DagError::UnknownDependency { task, dependency }
            | DagError::DuplicateDependency { task, dependency } => {
                dependency_field(wf, task, dependency)
            }
            DagError::Cycle(keys) => cycle_field(wf, keys),
            _ => Some("tasks".to_owned()),
        };
        self.diagnostic(field, e.to_string())
    }

    /// A diagnostic at `field` (as far down its path as the file goes).
    fn diagnostic(&self, field: Option<String>, message: impl Into<String>) -> Diagnostic {
        let span = match (&self.tree, &field) {
            (Some(tree), Some(field)) => Some(locate(tree, field)),
            (Some(tree), None) => Some(tree.span()),
            (None, _) => None,
        };
        Diagnostic::new(&self.name, &self.text, span, field, message.into())
    }
}

/// The dependency entry of the first task in `cycle` (each depending on the next) that names
/// the next one.
fn cycle_field(wf: &SubmitWorkflow, cycle: &[TaskKey]) -> Option<String> {
    let wrap = cycle.last().zip(cycle.first());
    cycle
        .windows(2)
        .map(|w| (&w[0], &w[1]))
        .chain(wrap)
        .find_map(|(task, dep)| dependency_field(wf, task, dep))
}

fn dependency_field(wf: &SubmitWorkflow, task: &TaskKey, dep: &TaskKey) -> Option<String> {
    let i = wf.tasks.iter().position(|t| &t.key == task)?;
    let k = wf.tasks[i].depends_on.iter().position(|d| d == dep)?;
    Some(format!("tasks[{i}].depends_on[{k}]"))
}

/// The deepest node of `path` present in the file: a key's own position for a field, an
/// element's for an index.
fn locate(tree: &Node, path: &str) -> Span {
    let mut node = tree;
    let mut at = tree.span();
    for step in steps(path) {
        match (step, node) {
            (Step::Key(key), Node::Map(_, entries)) => {
                match entries.iter().find(|e| e.key == key) {
                    Some(entry) => {
                        at = entry.at;
                        node = &entry.value;
                    }
                    None => break,
                }
            }
            (Step::Index(Some(i)), Node::Seq(_, items)) => match items.get(i) {
                Some(item) => {
                    at = item.span();
                    node = item;
                }
                None => break,
            },
            _ => break,
        }
    }
    at
}

/// The lines of `text` as YAML counts them: broken by `\r\n`, `\n` or a lone `\r`.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\n', '\r']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

fn line_of(text: &str, line: usize) -> Option<String> {
    lines(text)
        .nth(line.checked_sub(1)?)
        .map(|l| l.trim_end().to_owned())
}

/// serde_json's position (lines broken by `\n` only, columns in bytes) as YAML's (lines as
/// [`lines`] breaks them, columns in characters).
fn json_position(text: &str, line: usize, col: usize) -> Span {
    let start: usize = text
        .split('\n')
        .take(line.saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    let mut offset = (start + col.saturating_sub(1)).min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let (mut line, mut col, mut after_cr) = (1, 1, false);
    for c in text[..offset].chars() {
        match c {
            '\n' if after_cr => {}
            '\n' | '\r' => (line, col) = (line + 1, 1),
            _ => col += 1,
        }
        after_cr = c == '\r';
    }
    Span::point(line, col)
}

/// A syntax error: where, and the parser's message.
struct SyntaxError {
    span: Option<Span>,
    message: String,
}

fn located(name: &str, text: &str, e: SyntaxError) -> Diagnostic {
    Diagnostic::new(name, text, e.span, None, e.message)
}

/// JSON, decoded by serde_json (exact JSON semantics and errors); positions come from reading
/// the same text as YAML, of which JSON is a subset.
fn parse_json(text: &str) -> Result<(Value, Option<Node>), SyntaxError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        SyntaxError {
            span: (e.line() > 0).then(|| json_position(text, e.line(), e.column())),
            message: format!("invalid JSON: {message}"),
        }
    })?;
    let tree = parse_yaml(&plain_escapes(text))
        .ok()
        .and_then(|(_, tree)| tree);
    Ok((value, tree))
}

/// `text` with every `\uXXXX` escape of a JSON string turned into `\u0041`: same length, so
/// the same positions, but read as YAML even where JSON pairs surrogates, which YAML refuses.
/// Only positions are taken from that reading.
fn plain_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    let (mut in_string, mut escaped) = (false, false);
    while let Some(c) = chars.next() {
        out.push(c);
        if escaped {
            escaped = false;
            if c == 'u' {
                let digits: String = chars.by_ref().take(4).collect();
                out.push_str(if digits.len() == 4 { "0041" } else { &digits });
            }
        } else if in_string && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_string = !in_string;
        }
    }
    out
}

fn parse_yaml(text: &str) -> Result<(Value, Option<Node>), SyntaxError> {
    let scan_error = |e: &ScanError| SyntaxError {
        span: Some(Span::point(e.marker().line(), e.marker().col() + 1)),
        message: format!("invalid YAML: {}", e.info()),
    };
    // Scalars are resolved here (`scalar_value`), not by the loader, which would read an
    // integer beyond `i64` as a float and lose its digits.
    let mut loader = YamlLoader::<MarkedYaml>::default();
    loader.early_parse(false);
    Parser::new(BufferedInput::new(text.chars()))
        .load(&mut loader, true)
        .map_err(|e| scan_error(&e))?;
    if let Some(e) = loader.error() {
        return Err(scan_error(e));
    }
    let docs = loader.into_documents();
    match docs.as_slice() {
        [] => Err(SyntaxError {
            span: None,
            message: "the file is empty".into(),
        }),
        [doc] => {
            let (value, node) = convert(doc, 0).map_err(|(span, message)| SyntaxError {
                span: Some(span),
                message,
            })?;
            Ok((value, Some(node)))
        }
        [_, second, ..] => Err(SyntaxError {
            span: Some(Span::of(second)),
            message: "expected one YAML document, found several".into(),
        }),
    }
}

/// A YAML node as JSON, with the positions of its parts.
fn convert(y: &MarkedYaml, depth: usize) -> Result<(Value, Node), (Span, String)> {
    let at = Span::of(y);
    if depth > DEPTH_MAX {
        return Err((at, format!("nested more than {DEPTH_MAX} levels deep")));
    }
    match &y.data {
        YamlData::Value(s) => Ok((scalar(s).map_err(|m| (at, m))?, Node::Scalar(at))),
        YamlData::Representation(text, style, tag) => Ok((
            scalar_value(text, *style, tag.as_ref()).map_err(|m| (at, m))?,
            Node::Scalar(at),
        )),
        YamlData::Sequence(items) => {
            let mut values = Vec::with_capacity(items.len());
            let mut nodes = Vec::with_capacity(items.len());
            for item in items {
                let (v, n) = convert(item, depth + 1)?;
                values.push(v);
                nodes.push(n);
            }
            Ok((Value::Array(values), Node::Seq(at, nodes)))
        }
        YamlData::Mapping(map) => {
            let mut values = Map::new();
            let mut entries = Vec::with_capacity(map.len());
            for (k, v) in map.iter() {
                let key = key_text(k).ok_or_else(|| {
                    (
                        Span::of(k),
                        "expected a plain key (text, number or boolean)".into(),
                    )
                })?;
                let (value, node) = convert(v, depth + 1)?;
                values.insert(key.clone(), value);
                entries.push(Entry {
                    key,
                    at: Span::of(k),
                    value: node,
                });
            }
            Ok((Value::Object(values), Node::Map(at, entries)))
        }
        YamlData::Tagged(_, inner) => convert(inner, depth + 1),
        YamlData::Alias(_) => Err((at, "an alias that names no anchor".into())),
        YamlData::BadValue => Err((at, "a value that does not match its tag".into())),
    }
}

/// A scalar as YAML's core schema reads it, except that a plain integer beyond `i64` but
/// within `u64` stays an integer, as it does in JSON.
fn scalar_value(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Cow<'_, Tag>>,
) -> Result<Value, String> {
    if style == ScalarStyle::Plain && tag.is_none() && text.parse::<i64>().is_err() {
        if let Ok(n) = text.parse::<u64>() {
            return Ok(Value::from(n));
        }
    }
    let parsed = Scalar::parse_from_cow_and_metadata(Cow::Borrowed(text), style, tag)
        .ok_or_else(|| format!("{text:?} does not match its tag"))?;
    scalar(&parsed)
}

fn scalar(s: &Scalar) -> Result<Value, String> {
    Ok(match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .ok_or_else(|| format!("{} has no JSON equivalent", f.into_inner()))?,
        Scalar::String(s) => Value::String(s.to_string()),
    })
}

fn key_text(k: &MarkedYaml) -> Option<String> {
    match &k.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        YamlData::Value(Scalar::Null) => Some("null".into()),
        YamlData::Representation(text, ..) => Some(text.to_string()),
        YamlData::Tagged(_, inner) => key_text(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(name: &str, text: &str) -> Diagnostic {
        WorkflowFile::parse(name, text.to_owned()).expect_err("the file should be refused")
    }

    fn line_col(d: &Diagnostic) -> (usize, usize) {
        let s = d.place.as_ref().expect("a position").span;
        (s.line, s.col)
    }

    #[test]
    fn paths_split_into_steps() {
        assert_eq!(
            steps("tasks[2].retry.max_attempts"),
            [
                Step::Key("tasks"),
                Step::Index(Some(2)),
                Step::Key("retry"),
                Step::Key("max_attempts")
            ]
        );
        assert_eq!(
            steps("tasks[].depends_on"),
            [
                Step::Key("tasks"),
                Step::Index(None),
                Step::Key("depends_on")
            ]
        );
        assert!(steps(".").is_empty());
    }

    #[test]
    fn yaml_and_json_give_the_same_body() {
        let yaml = "name: demo\ntasks:\n  - key: plan\n  - key: write\n    depends_on: [plan]\n    input: {text: hi, n: 2, ok: true, none: ~}\n";
        let json = r#"{"name": "demo", "tasks": [{"key": "plan"}, {"key": "write", "depends_on": ["plan"], "input": {"text": "hi", "n": 2, "ok": true, "none": null}}]}"#;
        let a = WorkflowFile::parse("wf.yaml", yaml.into()).unwrap();
        let b = WorkflowFile::parse("wf.json", json.into()).unwrap();
        assert_eq!(a.body, b.body);
        assert_eq!(a.workflow.tasks.len(), 2);
    }

    #[test]
    fn the_format_follows_the_content_when_the_extension_says_nothing() {
        assert!(WorkflowFile::parse("wf", r#"{"tasks": [{"key": "a"}]}"#.into()).is_ok());
        assert!(WorkflowFile::parse("wf.txt", "tasks:\n  - key: a\n".into()).is_ok());
        assert!(WorkflowFile::parse("-", "{tasks: [{key: a}]}".into()).is_ok());
    }

    #[test]
    fn syntax_errors_carry_the_parsers_position() {
        let d = err("wf.yaml", "tasks:\n  - key: a\n   bad: [\n");
        assert_eq!(line_col(&d).0, 3, "{d}");
        assert!(d.to_string().contains("invalid YAML"), "{d}");
        let d = err(
            "wf.json",
            "{\n  \"tasks\": [\n    {\"key\": \"a\",}\n  ]\n}\n",
        );
        assert_eq!(line_col(&d).0, 3, "{d}");
        assert!(d.to_string().contains("invalid JSON"), "{d}");
        let d = err("wf.yaml", "tasks:\n  - key: a\n    key: b\n");
        assert_eq!(line_col(&d), (3, 5), "{d}");
    }

    #[test]
    fn unknown_fields_point_at_their_key() {
        let d = err(
            "wf.yaml",
            "name: x\ntasks:\n  - key: a\n  - key: b\n    retries: 3\n",
        );
        assert_eq!(line_col(&d), (5, 5), "{d}");
        assert_eq!(d.field.as_deref(), Some("tasks[1].retries"));
        let text = d.to_string();
        assert!(text.contains("unknown field `retries`"), "{text}");
        assert!(
            text.contains(" 5 |     retries: 3\n   |     ^^^^^^^"),
            "{text}"
        );
    }

    #[test]
    fn type_errors_and_missing_fields_point_at_the_field_or_its_parent() {
        let d = err("wf.yaml", "tasks:\n  - key: a\n    priority: high\n");
        assert_eq!(line_col(&d), (3, 5), "{d}");
        assert_eq!(d.field.as_deref(), Some("tasks[0].priority"));
        let d = err("wf.yaml", "tasks:\n  - key: a\n  - depends_on: [a]\n");
        assert_eq!(line_col(&d), (3, 5), "{d}");
        assert_eq!(d.field.as_deref(), Some("tasks[1].key"));
        let d = err("wf.yaml", "tasks:\n  - key: a\n    retry: [3]\n");
        assert_eq!(d.field.as_deref(), Some("tasks[0].retry"));
        let d = err("wf.yaml", "name: x\n");
        assert_eq!(d.field.as_deref(), Some("tasks"));
    }

    #[test]
    fn rule_violations_point_at_the_field() {
        let d = err(
            "wf.yaml",
            "tasks:\n  - key: a\n    retry:\n      max_attempts: 0\n",
        );
        assert_eq!(line_col(&d), (4, 7), "{d}");
        assert_eq!(d.field.as_deref(), Some("tasks[0].retry.max_attempts"));
        let d = err("wf.json", "{\"tasks\": [\n {\"key\": \"a b\"}\n]}");
        assert_eq!(line_col(&d).0, 2, "{d}");
    }

    #[test]
    fn a_cycle_points_at_a_dependency_in_it() {
        let text = "tasks:\n  - key: a\n    depends_on:\n      - c\n  - key: b\n    depends_on: [a]\n  - key: c\n    depends_on: [b]\n";
        let d = err("wf.yaml", text);
        let msg = d.to_string();
        assert!(msg.contains("cycle"), "{msg}");
        let line = line_col(&d).0;
        assert!([4, 6, 8].contains(&line), "{msg}");
        let d = err("wf.yaml", "tasks:\n  - key: a\n    depends_on: [zz]\n");
        assert_eq!(line_col(&d), (3, 18), "{d}");
        let d = err("wf.yaml", "tasks:\n  - key: a\n  - key: a\n");
        assert_eq!(line_col(&d), (3, 5), "{d}");
    }

    #[test]
    fn server_refusals_map_back_to_the_file() {
        let file = WorkflowFile::parse(
            "wf.yaml",
            "tasks:\n  - key: a\n  - key: b\n    depends_on: [a]\n    retry:\n      jitter: 0.5\n"
                .into(),
        )
        .unwrap();
        let problem = ProblemDoc {
            kind: "/problems/invalid_field".into(),
            title: "Unprocessable Entity".into(),
            status: 422,
            code: "invalid_field".into(),
            detail: "invalid `tasks[1].retry.jitter`".into(),
            field: Some("tasks[1].retry.jitter".into()),
            expected: None,
            rule: None,
            state: None,
            cycle: None,
        };
        let d = file.explain(&problem);
        assert_eq!(line_col(&d), (6, 7), "{d}");
        let cycle = ProblemDoc {
            field: Some("tasks[].depends_on".into()),
            cycle: Some(vec!["b".into(), "a".into(), "b".into()]),
            ..problem.clone()
        };
        let d = file.explain(&cycle);
        assert_eq!(line_col(&d), (4, 18), "{d}");
        let unknown = ProblemDoc {
            cycle: Some(vec!["x".into(), "y".into(), "x".into()]),
            ..cycle
        };
        let d = file.explain(&unknown);
        assert_eq!(line_col(&d), (1, 1), "falls back to the list of tasks: {d}");
        assert_eq!(d.field.as_deref(), Some("tasks[].depends_on"));
    }

    #[test]
    fn json_positions_survive_escapes_that_yaml_refuses() {
        let text = r#"{"tasks": [{"key": "a", "input": "caf\u00e9 \ud83d\ude00 \\u"}, {"key": "b", "retry": {"max_attempts": 0}}]}"#;
        assert_eq!(plain_escapes(text).len(), text.len());
        let d = err("wf.json", text);
        assert_eq!(line_col(&d), (1, 88), "{d}");
        let file = WorkflowFile::parse("wf.json", text.replace(": 0}", ": 1}")).unwrap();
        assert_eq!(file.body["tasks"][0]["input"], "café 😀 \\u");
    }

    #[test]
    fn yaml_extras_resolve_to_json() {
        let file = WorkflowFile::parse(
            "wf.yaml",
            "defaults: &d {max_attempts: 2}\n".to_owned()
                + "tasks:\n  - key: a\n    input: {n: 0x10, f: 1.5, s: '1'}\n",
        );
        let d = file.expect_err("unknown top-level field");
        assert_eq!(d.field.as_deref(), Some("defaults"));
        let file = WorkflowFile::parse(
            "wf.yaml",
            "tasks:\n  - key: a\n    input: {n: 0x10, f: 1.5, s: '1'}\n".into(),
        )
        .unwrap();
        assert_eq!(
            file.body["tasks"][0]["input"],
            serde_json::json!({"n": 16, "f": 1.5, "s": "1"})
        );
        let d = err("wf.yaml", "tasks:\n  - key: a\n    input: .inf\n");
        assert_eq!(line_col(&d), (3, 12), "{d}");
        let d = err("wf.yaml", "tasks: []\n---\ntasks: []\n");
        assert!(d.to_string().contains("one YAML document"), "{d}");
    }

    #[test]
    fn integers_beyond_i64_stay_integers() {
        let file = WorkflowFile::parse(
            "wf.yaml",
            "tasks:\n  - key: a\n    input: {n: 18446744073709551615, m: -9223372036854775808}\n"
                .into(),
        )
        .unwrap();
        assert_eq!(
            file.body["tasks"][0]["input"],
            serde_json::json!({"n": u64::MAX, "m": i64::MIN})
        );
    }

    #[test]
    fn positions_count_lines_and_characters_as_an_editor_does() {
        let d = err("wf.yaml", "!\t.");
        assert_eq!(line_col(&d).0, 1, "{d}");
        let d = err("wf.yaml", "tasks:\r  - key: a\r    retries: 3\r");
        assert_eq!(line_col(&d), (3, 5), "{d}");
        assert!(d.to_string().contains(" 3 |     retries: 3\n"), "{d}");
        let d = err("wf.json", "{\"tasks\": [{\"key\": \"\u{e9}\u{e9}\", ]}");
        assert_eq!(line_col(&d), (1, 26), "the `]`, counted in characters: {d}");
    }
}
