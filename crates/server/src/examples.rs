//! The document's examples: for each operation, a request body and its success answers, taken
//! from one real session (a research workflow with an agent, a signal, a schedule, a trigger
//! and an operator's controls), so that ids and values agree across operations.
//! `examples.json` holds them by `operationId`; `tests/openapi.rs` checks that each fits its
//! schema and that every JSON body has one, and Schemathesis sends the requests.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use utoipa::openapi::{OpenApi, RefOr};

/// The examples, as `tests/openapi.rs` reads them too.
pub const EXAMPLES: &str = include_str!("examples.json");

/// One operation's examples.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationExamples {
    /// Its request body.
    #[serde(default)]
    pub request: Option<Value>,
    /// Its answers, by status.
    #[serde(default)]
    pub responses: BTreeMap<String, Value>,
}

/// The examples by `operationId`.
///
/// # Panics
/// If `examples.json` is not a map of [`OperationExamples`]: it is compiled in, so every test
/// that builds a router finds out.
pub fn examples() -> BTreeMap<String, OperationExamples> {
    serde_json::from_str(EXAMPLES).expect("examples.json is a map of operation examples")
}

/// Sets each operation's examples on its `application/json` request body and answers.
pub fn document(doc: &mut OpenApi) {
    let examples = examples();
    crate::each_operation(doc, |_, _, op| {
        let Some(ours) = op.operation_id.as_ref().and_then(|id| examples.get(id)) else {
            return;
        };
        if let (Some(example), Some(body)) = (&ours.request, op.request_body.as_mut()) {
            if let Some(content) = body.content.get_mut("application/json") {
                content.example = Some(example.clone());
            }
        }
        for (status, example) in &ours.responses {
            if let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) {
                if let Some(content) = response.content.get_mut("application/json") {
                    content.example = Some(example.clone());
                }
            }
        }
    });
}
