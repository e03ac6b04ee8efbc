//! The audit log's query, built from the filter's conditions that are set (and only those, so
//! that the indexes on `(actor, id)` and `(workflow_id, id)` serve it), for either backend.

use crate::codec::ts;
use crate::AuditFilter;

/// One value the query is given, in the order of its placeholders.
pub(crate) enum AuditParam<'f> {
    Text(&'f str),
    Workflow(uuid::Uuid),
    Int(i64),
}

/// The query for `filter` and its values; `placeholder(n)` writes the n-th placeholder (from
/// 1: `?1` for SQLite, `$1` for PostgreSQL). The last value is the page's size.
pub(crate) fn audit_query<'f>(
    filter: &'f AuditFilter,
    limit: i64,
    placeholder: fn(usize) -> String,
) -> (String, Vec<AuditParam<'f>>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    let mut sql = String::from(
        "SELECT id, at, actor, action, workflow_id, task_id, reason, detail FROM audit",
    );
    let mut push = |column: &str, op: &str, p: AuditParam<'f>| {
        params.push(p);
        conditions.push(format!("{column} {op} {}", placeholder(params.len())));
    };
    if let Some(actor) = &filter.actor {
        push("actor", "=", AuditParam::Text(actor));
    }
    if let Some(w) = filter.workflow {
        push("workflow_id", "=", AuditParam::Workflow(w.0));
    }
    if let Some(action) = &filter.action {
        push("action", "=", AuditParam::Text(action));
    }
    if let Some(t) = filter.since {
        push("at", ">=", AuditParam::Int(ts(t)));
    }
    if let Some(t) = filter.until {
        push("at", "<", AuditParam::Int(ts(t)));
    }
    if let Some(id) = filter.before {
        push("id", "<", AuditParam::Int(id));
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    params.push(AuditParam::Int(limit));
    sql.push_str(&format!(
        " ORDER BY id DESC LIMIT {}",
        placeholder(params.len())
    ));
    (sql, params)
}
