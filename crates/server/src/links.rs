//! OpenAPI links: what each creating operation's answer leads to, so that a client (or a
//! stateful test, such as Schemathesis's) can follow a new resource from the answer that made
//! it to the operations on it.

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::RefOr;

/// The operations an id leads to: `(path parameter, where the answer has it, operation ids)`.
type Leads = &'static [(&'static str, &'static str, &'static [&'static str])];

const WORKFLOW_OPS: &[&str] = &[
    "get_workflow",
    "workflow_graph",
    "workflow_history",
    "list_signals",
    "send_signal",
    "cancel_workflow",
    "pause_workflow",
    "resume_workflow",
    "set_budgets",
];

const TASK_OPS: &[&str] = &[
    "get_task",
    "task_history",
    "task_upstream",
    "cancel_task",
    "retry_task",
    "pause_task",
    "resume_task",
    "skip_task",
    "fail_task",
    "rerun_task",
];

/// Per creating operation (by operation id): the statuses whose answers carry the new
/// resource, and where each id leads.
const LINKS: &[(&str, &[&str], Leads)] = &[
    (
        "submit_workflow",
        &["201", "200"],
        &[("id", "/workflow", WORKFLOW_OPS)],
    ),
    (
        "fire_trigger",
        &["201", "200"],
        &[("id", "/workflow", WORKFLOW_OPS)],
    ),
    (
        "submit_task",
        &["201", "200"],
        &[("id", "/task", TASK_OPS), ("id", "/workflow", WORKFLOW_OPS)],
    ),
    (
        "create_schedule",
        &["201"],
        &[(
            "name",
            "/name",
            &[
                "get_schedule",
                "delete_schedule",
                "pause_schedule",
                "resume_schedule",
            ],
        )],
    ),
    (
        "put_trigger",
        &["201", "200"],
        &[(
            "name",
            "/name",
            &["get_trigger", "fire_trigger", "delete_trigger"],
        )],
    ),
    (
        "register_agent",
        &["201"],
        &[("id", "/id", &["claim", "agent_heartbeat"])],
    ),
    (
        "put_limit",
        &["201", "200"],
        &[("key", "/key", &["get_limit", "delete_limit"])],
    ),
    (
        "put_artifact",
        &["201", "200"],
        &[("artifact", "/artifact", &["get_artifact", "head_artifact"])],
    ),
];

/// Adds [`LINKS`] to the answers of the operations that create resources.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    crate::each_operation(doc, |_, _, op| {
        let Some(id) = op.operation_id.clone() else {
            return;
        };
        for (from, statuses, leads) in LINKS {
            if *from != id {
                continue;
            }
            for status in *statuses {
                let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) else {
                    continue;
                };
                for (param, pointer, targets) in *leads {
                    for target in *targets {
                        let name = match *pointer {
                            "/workflow" if id == "submit_task" => format!("{target}_of_workflow"),
                            _ => (*target).to_owned(),
                        };
                        // utoipa 5.5 writes `operation_id` as `operation_id`, not
                        // `operationId`: set the field by its OpenAPI name instead.
                        let link = LinkBuilder::new()
                            .parameter(*param, format!("$response.body#{pointer}"))
                            .extensions(Some(Extensions::from_iter([(
                                "operationId",
                                serde_json::Value::from(*target),
                            )])))
                            .build();
                        response.links.insert(name, RefOr::T(link));
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every link names an operation that exists and a parameter it has in its path.
    #[test]
    fn links_lead_to_operations_that_exist() {
        let (_, doc) = crate::api_routes().split_for_parts();
        let ops: std::collections::HashMap<String, String> = crate::operations(&doc)
            .filter_map(|(_, path, op)| Some((op.operation_id.clone()?, path.to_owned())))
            .collect();
        for (from, _, leads) in LINKS {
            assert!(ops.contains_key(*from), "{from}");
            for (param, _, targets) in *leads {
                for target in *targets {
                    let path = ops.get(*target).unwrap_or_else(|| panic!("{target}"));
                    assert!(path.contains(&format!("{{{param}}}")), "{target}: {param}");
                }
            }
        }
    }
}
