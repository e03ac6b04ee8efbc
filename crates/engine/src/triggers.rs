//! Triggers: a named workflow template that a request submits (`POST /v1/triggers/{name}`),
//! the request's body as its input: in the template, `{"$input": "/json/pointer"}` anywhere in
//! a task's input stands for what the pointer finds in the body (`""`: the whole body).

use baton_core::{Timestamp, WorkflowTemplate};
use baton_store::{Store, TriggerRecord, TriggerWrite};
use serde_json::Value;
use tracing::info;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::intake::{validate_workflow, WorkflowReceipt, WorkflowRequest};

/// The key of the placeholder for the request body in a trigger's template.
pub const INPUT: &str = "$input";

/// A trigger as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerInfo {
    pub name: String,
    pub template: WorkflowTemplate,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl<S: Store + 'static> Engine<S> {
    /// Registers (or replaces) a trigger; `true` when it was created.
    pub async fn put_trigger(
        &self,
        name: &str,
        template: WorkflowTemplate,
    ) -> Result<(TriggerInfo, bool), EngineError> {
        baton_core::spec::validate_path_name("name", name)
            .map_err(|e| EngineError::invalid(e.field, e.expected))?;
        validate_workflow(&request(&template, None)).map_err(|e| match e {
            EngineError::Invalid { field, expected } => EngineError::Invalid {
                field: format!("workflow.{field}"),
                expected,
            },
            other => other,
        })?;
        for (i, task) in template.tasks.iter().enumerate() {
            check_placeholders(&task.input, &format!("tasks[{i}].input"))?;
        }
        let now = self.now();
        let record = TriggerRecord {
            name: name.to_owned(),
            template: serde_json::to_string(&template).expect("a template serialises"),
            created_at: now,
            updated_at: now,
        };
        let created = self
            .inner
            .store
            .write_trigger(TriggerWrite::Put(record))
            .await?;
        info!(trigger = name, created, "trigger registered");
        let stored = self.trigger(name).await?;
        Ok((stored, created))
    }

    pub async fn trigger(&self, name: &str) -> Result<TriggerInfo, EngineError> {
        let record = self
            .inner
            .store
            .trigger(name.to_owned())
            .await?
            .ok_or_else(|| EngineError::TriggerNotFound(name.to_owned()))?;
        decode(record)
    }

    /// A page of triggers by name, after `after`, at most `limit` (and
    /// [`baton_store::PAGE_ROWS_MAX`]).
    pub async fn triggers(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<TriggerInfo>, EngineError> {
        self.inner
            .store
            .triggers(after, limit)
            .await?
            .into_iter()
            .map(decode)
            .collect()
    }

    pub async fn delete_trigger(&self, name: &str) -> Result<(), EngineError> {
        if self
            .inner
            .store
            .write_trigger(TriggerWrite::Delete(name.to_owned()))
            .await?
        {
            Ok(())
        } else {
            Err(EngineError::TriggerNotFound(name.to_owned()))
        }
    }

    /// Submits the trigger's workflow with `body` in place of its `$input` placeholders. With
    /// an idempotency key, the same key again returns the first workflow.
    pub async fn fire_trigger(
        &self,
        name: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<WorkflowReceipt, EngineError> {
        let trigger = self.trigger(name).await?;
        let mut template = trigger.template;
        for (i, task) in template.tasks.iter_mut().enumerate() {
            fill(&mut task.input, body, &format!("tasks[{i}].input"))?;
        }
        let key = idempotency_key.map(|k| format!("trigger:{name}:{k}"));
        let receipt = self.submit_workflow(request(&template, key)).await?;
        info!(trigger = name, workflow = %receipt.workflow, created = receipt.created, "trigger fired");
        Ok(receipt)
    }
}

fn request(template: &WorkflowTemplate, idempotency_key: Option<String>) -> WorkflowRequest {
    WorkflowRequest {
        name: template.name.clone(),
        idempotency_key,
        tasks: template.tasks.clone(),
        outputs: template.outputs.clone(),
        labels: template.labels.clone(),
        budgets: template.budgets.clone(),
    }
}

fn decode(record: TriggerRecord) -> Result<TriggerInfo, EngineError> {
    let template = serde_json::from_str(&record.template).map_err(|e| {
        EngineError::Store(baton_store::StoreError::Backend(format!(
            "stored trigger {}: {e}",
            record.name
        )))
    })?;
    Ok(TriggerInfo {
        name: record.name,
        template,
        created_at: record.created_at,
        updated_at: record.updated_at,
    })
}

/// The pointer of a placeholder `{"$input": POINTER}`, if `v` is one.
fn placeholder(v: &Value) -> Option<&Value> {
    match v {
        Value::Object(m) if m.len() == 1 => m.get(INPUT),
        _ => None,
    }
}

fn check_placeholders(v: &Value, at: &str) -> Result<(), EngineError> {
    if let Some(pointer) = placeholder(v) {
        return match pointer.as_str() {
            Some(p) if p.is_empty() || p.starts_with('/') => Ok(()),
            _ => Err(EngineError::invalid(
                format!("workflow.{at}.{INPUT}"),
                "a JSON Pointer into the request body, such as \"/user/id\" (\"\" for all of it)",
            )),
        };
    }
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_placeholders(x, &format!("{at}[{i}]"))),
        Value::Object(m) => m
            .iter()
            .try_for_each(|(k, x)| check_placeholders(x, &format!("{at}.{k}"))),
        _ => Ok(()),
    }
}

/// Replaces every placeholder in `v` by what its pointer finds in `body`.
fn fill(v: &mut Value, body: &Value, at: &str) -> Result<(), EngineError> {
    if let Some(pointer) = placeholder(v).and_then(Value::as_str).map(str::to_owned) {
        *v = body.pointer(&pointer).cloned().ok_or_else(|| {
            EngineError::invalid(
                "body",
                format!("a value at {pointer:?}, which {at} takes from the request body"),
            )
        })?;
        return Ok(());
    }
    match v {
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, x)| fill(x, body, &format!("{at}[{i}]"))),
        Value::Object(m) => m
            .iter_mut()
            .try_for_each(|(k, x)| fill(x, body, &format!("{at}.{k}"))),
        _ => Ok(()),
    }
}
