//! The OpenAPI document stays true: every documented operation is served, and real responses
//! carry the properties, with the types, that the document promises.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

fn type_ok(expected: &Value, actual: &Value) -> bool {
    let fits = |t: &str| match t {
        "string" => actual.is_string(),
        "integer" => actual.is_i64() || actual.is_u64(),
        "number" => actual.is_number(),
        "boolean" => actual.is_boolean(),
        "array" => actual.is_array(),
        "object" => actual.is_object(),
        "null" => actual.is_null(),
        _ => true,
    };
    match expected {
        Value::String(t) => fits(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(fits),
        _ => true,
    }
}

/// Checks required properties, the types of the properties present and enums, recursively;
/// an object whose schema lists its properties (and says nothing of others) may carry no other.
fn check(doc: &Value, schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        // One object schema with every part's properties and requirements.
        let mut merged = json!({"type": "object", "properties": {}, "required": []});
        for part in parts {
            let part = resolve(doc, part);
            for (name, sub) in part["properties"].as_object().into_iter().flatten() {
                merged["properties"][name] = sub.clone();
            }
            for req in part["required"].as_array().into_iter().flatten() {
                merged["required"].as_array_mut().unwrap().push(req.clone());
            }
        }
        return check(doc, &merged, value, path, problems);
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            problems.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(alts) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        let fits_one = alts.iter().any(|alt| {
            let mut p = Vec::new();
            check(doc, alt, value, path, &mut p);
            p.is_empty()
        });
        if !fits_one {
            problems.push(format!("{path}: fits none of the alternatives: {value}"));
        }
        return;
    }
    if let Some(t) = schema.get("type") {
        if !type_ok(t, value) {
            problems.push(format!("{path}: expected type {t}, got {value}"));
            return;
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = req.as_str().unwrap_or_default();
            if !obj.contains_key(name) {
                problems.push(format!("{path}: required property `{name}` is missing"));
            }
        }
        for (name, sub) in props {
            if let Some(v) = obj.get(name) {
                check(doc, sub, v, &format!("{path}.{name}"), problems);
            }
        }
        if schema
            .get("additionalProperties")
            .is_none_or(|a| *a == Value::Bool(false))
        {
            for name in obj.keys().filter(|k| !props.contains_key(*k)) {
                problems.push(format!("{path}: property `{name}` is not in the schema"));
            }
        }
    }
    if let (Some(values), Some(obj)) = (
        schema.get("additionalProperties").filter(|s| s.is_object()),
        value.as_object(),
    ) {
        for (name, v) in obj {
            if schema["properties"].get(name).is_none() {
                check(doc, values, v, &format!("{path}.{name}"), problems);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(doc, items, v, &format!("{path}[{i}]"), problems);
        }
    }
}

fn response_schema<'a>(doc: &'a Value, path: &str, method: &str, status: u16) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let res = &op["responses"][status.to_string()];
    assert!(
        res.is_object(),
        "{method} {path} does not document status {status}"
    );
    &res["content"]["application/json"]["schema"]
}

async fn call(srv: &TestServer, method: Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut rb = srv.client.request(method, format!("{}{url}", srv.url));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let res = rb.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let srv = TestServer::start().await;
    let (_, doc) = srv.get("/v1/openapi.json").await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 15, "{} paths documented", paths.len());
    let fake = uuid::Uuid::now_v7().to_string();
    let mut operations = 0;
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            let url = path.replace("{id}", &fake);
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (method == "post").then(|| json!({}));
            if path == "/v1/events" {
                let res = srv
                    .client
                    .get(format!("{}{url}", srv.url))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::OK);
                continue;
            }
            let (status, body) = call(&srv, m, &url, body).await;
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert_ne!(
                body["code"], "no_route",
                "{method} {path} is documented but not routed"
            );
            assert!(status < 500, "{method} {path} answered {status}: {body}");
        }
    }
    assert!(operations >= 20, "{operations} operations documented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_match_their_documented_schemas() {
    let srv = TestServer::start().await;
    let (_, doc) = srv.get("/v1/openapi.json").await;
    let mut problems = Vec::new();
    let mut expect = |path: &str, method: &str, status: u16, body: &Value| {
        let schema = response_schema(&doc, path, method, status).clone();
        check(
            &doc,
            &schema,
            body,
            &format!("{method} {path} {status}"),
            &mut problems,
        );
    };

    let (s, wf) = srv
        .post(
            "/v1/workflows",
            json!({"tasks": [task("a", &[]), task("b", &["a"])]}),
        )
        .await;
    expect("/v1/workflows", "post", s.as_u16(), &wf);
    let a = wf["tasks"]["a"].as_str().unwrap().to_owned();
    let workflow = wf["workflow"].as_str().unwrap().to_owned();
    let (s, body) = srv.get(&format!("/v1/workflows/{workflow}")).await;
    expect("/v1/workflows/{id}", "get", s.as_u16(), &body);
    let (s, body) = srv.get(&format!("/v1/ids/{}", &a[a.len() - 8..])).await;
    expect("/v1/ids/{suffix}", "get", s.as_u16(), &body);
    assert_eq!(body["tasks"][0]["id"], a.as_str());
    let (s, body) = srv.get("/v1/ids/xyz").await;
    expect("/v1/ids/{suffix}", "get", s.as_u16(), &body);
    let (s, body) = srv.get("/v1/tasks?limit=10").await;
    expect("/v1/tasks", "get", s.as_u16(), &body);
    // The last page has no `next` at all (not `null`).
    assert!(body.get("next").is_none(), "{body}");
    let (_, page) = srv.get("/v1/tasks?limit=1").await;
    assert!(page["next"].is_string(), "{page}");
    let (s, body) = srv.get("/v1/counts").await;
    expect("/v1/counts", "get", s.as_u16(), &body);
    let (s, body) = srv
        .post(
            "/v1/agents",
            json!({"name": "w", "capabilities": ["work"], "concurrency": 2}),
        )
        .await;
    expect("/v1/agents", "post", s.as_u16(), &body);
    let agent = body["id"].as_str().unwrap().to_owned();
    let (s, body) = srv.get("/v1/agents").await;
    expect("/v1/agents", "get", s.as_u16(), &body);
    let (s, claimed) = srv
        .post(&format!("/v1/agents/{agent}/claim"), json!({"max": 2}))
        .await;
    expect("/v1/agents/{id}/claim", "post", s.as_u16(), &claimed);
    let t = &claimed["tasks"][0];
    let (s, body) = srv.report(t, &agent, "started", json!({})).await;
    expect("/v1/tasks/{id}/started", "post", s.as_u16(), &body);
    let (s, body) = srv
        .report(t, &agent, "heartbeat", json!({"progress": 1}))
        .await;
    expect("/v1/tasks/{id}/heartbeat", "post", s.as_u16(), &body);
    let (s, body) = srv
        .report(t, &agent, "succeeded", json!({"result": {"ok": true}}))
        .await;
    expect("/v1/tasks/{id}/succeeded", "post", s.as_u16(), &body);
    let (s, body) = srv.get(&format!("/v1/tasks/{a}")).await;
    expect("/v1/tasks/{id}", "get", s.as_u16(), &body);
    let (s, body) = srv.post(&format!("/v1/tasks/{a}/cancel"), json!({})).await;
    expect("/v1/tasks/{id}/cancel", "post", s.as_u16(), &body);
    assert_eq!(
        body["code"], "not_accepted",
        "a completed task cannot be cancelled"
    );
    let (s, body) = srv.post("/v1/workflows", json!({"tasks": []})).await;
    expect("/v1/workflows", "post", s.as_u16(), &body);

    assert!(
        problems.is_empty(),
        "responses differ from the document:\n{}",
        problems.join("\n")
    );
}

/// A generated client must put each parameter where the router reads it: a parameter declared
/// `in: path` names a `{segment}` of its path, every `{segment}` is declared, and the rest are
/// query parameters (a struct the router reads from the query string).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_declared_where_the_router_reads_them() {
    let srv = TestServer::start().await;
    let (_, doc) = srv.get("/v1/openapi.json").await;
    let mut problems = Vec::new();
    let mut queries = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let segments: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let in_path: Vec<&str> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            for name in &in_path {
                if !segments.contains(name) {
                    problems.push(format!("{method} {path}: `{name}` is not in the path"));
                }
            }
            for segment in &segments {
                if !in_path.contains(segment) {
                    problems.push(format!("{method} {path}: `{{{segment}}}` is not declared"));
                }
            }
            queries += params.iter().filter(|p| p["in"] == "query").count();
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        queries >= 30,
        "only {queries} query parameters are declared"
    );
}

/// Every refusal of every operation is a problem document whose `code` is an `enum` of the
/// codes the route can answer at that status, each named in the response's description; a
/// debug build (this test's) turns any other answer into `500 undocumented_answer`, so every
/// test that reaches a refusal checks the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_lists_the_codes_it_can_carry() {
    let srv = TestServer::start().await;
    let (_, doc) = srv.get("/v1/openapi.json").await;
    let mut problems = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, res) in op["responses"].as_object().unwrap() {
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                let description = res["description"].as_str().unwrap_or_default();
                if method == "head" {
                    assert!(res.get("content").is_none(), "{method} {path} {status}");
                    continue;
                }
                let schema = &res["content"]["application/problem+json"]["schema"];
                let codes = schema["allOf"][1]["properties"]["code"]["enum"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if codes.is_empty() {
                    problems.push(format!("{method} {path} {status}: no code enum"));
                }
                for code in codes {
                    let code = code.as_str().unwrap().to_owned();
                    if !description.contains(&format!("`{code}`")) {
                        problems.push(format!("{method} {path} {status}: `{code}` not described"));
                    }
                    listed.insert(code);
                }
            }
            let statuses: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            let has_body = op.get("requestBody").is_some();
            for needed in ["503"].into_iter().chain(has_body.then_some("408")) {
                if !statuses.iter().any(|s| *s == needed) {
                    problems.push(format!("{method} {path}: no {needed}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    for code in [
        "unauthorized",
        "forbidden",
        "task_not_found",
        "stale_lease",
        "invalid_field",
        "payload_too_large",
        "rate_limited",
        "overloaded",
    ] {
        assert!(listed.contains(code), "`{code}` is listed nowhere");
    }

    // An answer is held to its route's list: a report on an unknown task is a listed 404.
    let (status, body) = srv
        .post(
            &format!("/v1/tasks/{}/started", uuid::Uuid::now_v7()),
            json!({"agent": uuid::Uuid::now_v7(), "lease": 1}),
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    let listed = &doc["paths"]["/v1/tasks/{id}/started"]["post"]["responses"][status.as_str()]
        ["content"]["application/problem+json"]["schema"]["allOf"][1]["properties"]["code"]["enum"];
    assert!(
        listed.as_array().unwrap().contains(&body["code"]),
        "{body} is not among {listed}"
    );

    // One report of a batch: the codes its own request could get, but for the whole
    // request's; what a batch answers for one is among them.
    let item = &doc["components"]["schemas"]["ReportOutcome"]["properties"]["problem"];
    let codes = item["allOf"][1]["properties"]["code"]["enum"]
        .as_array()
        .unwrap();
    for code in [
        "stale_lease",
        "task_not_found",
        "agent_not_found",
        "invalid_field",
    ] {
        assert!(
            codes.contains(&json!(code)),
            "{code} is not among {codes:?}"
        );
        let described = item["description"].as_str().unwrap();
        assert!(described.contains(&format!("`{code}`")), "{described}");
    }
    for code in [
        "malformed_json",
        "unauthorized",
        "rate_limited",
        "invalid_id",
    ] {
        assert!(!codes.contains(&json!(code)), "{code} is a whole request's");
    }
    let (status, body) = srv
        .post(
            "/v1/reports",
            json!({"reports": [{"report": "started", "task": uuid::Uuid::now_v7(),
                                "agent": uuid::Uuid::now_v7(), "token": 1}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code = &body["answers"][0]["problem"]["code"];
    assert!(codes.contains(code), "{body} is not among {codes:?}");
}

/// Every operation says what it does: a summary, and a description beyond who may call it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_has_a_summary_and_a_description() {
    let srv = TestServer::start().await;
    let (_, doc) = srv.get("/v1/openapi.json").await;
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let summary = op["summary"].as_str().unwrap_or_default();
            let description = op["description"].as_str().unwrap_or_default();
            if summary.is_empty() {
                missing.push(format!("{method} {path}: no summary"));
            }
            if description.starts_with("Authorization:") || description.len() < 40 {
                missing.push(format!("{method} {path}: no description"));
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// The bounds the document declares are the server's own: each literal in an attribute (utoipa
/// takes no constant there) is held to the constant the server checks against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_bounds_are_the_servers_constants() {
    use baton_core::openapi as pat;
    let srv = TestServer::start().await;
    let (_, doc) = srv.get("/v1/openapi.json").await;
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    let prop = |name: &str, field: &str| schema(name)["properties"][field].clone();
    let param = |path: &str, method: &str, name: &str| -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .map(|p| p["schema"].clone())
            .unwrap_or_else(|| panic!("{method} {path}: no parameter {name}"))
    };
    let n = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    let name_pattern = format!("^[A-Za-z0-9_.:/-]{{1,{}}}$", baton_core::spec::KEY_LEN_MAX);
    assert_eq!(pat::NAME_PATTERN, name_pattern);
    assert!(pat::KEY_PATTERN.starts_with(&name_pattern[..name_pattern.len() - 1]));
    // Names in paths are names but for the dot-segments `.` and `..`.
    assert_eq!(
        pat::PATH_NAME_PATTERN,
        format!(r"^(?!\.\.?$){}", &name_pattern[1..])
    );
    assert_eq!(
        pat::LIMIT_KEY_PATTERN,
        r"^(?!\.\.?$)[^{}\x00-\x1f\x7f-\x9f]*$"
    );
    assert_eq!(
        pat::LABEL_KEY_PATTERN,
        format!(
            "^[a-z0-9_.-]{{1,{}}}$",
            baton_core::labels::LABEL_KEY_LEN_MAX
        )
    );
    assert_eq!(
        pat::UNIT_PATTERN,
        format!("^[a-z0-9_.-]{{1,{}}}$", baton_core::usage::UNIT_LEN_MAX)
    );
    let dur = baton_core::spec::DURATION_MAX_MS as f64;
    let checks: Vec<(String, f64, f64)> = vec![
        // (where, declared, constant)
        (
            "TaskSpec.depends_on".into(),
            n(&prop("TaskSpec", "depends_on")["maxItems"]),
            baton_core::spec::DEPENDENCIES_PER_TASK_MAX as f64,
        ),
        (
            "TaskSpec.capabilities".into(),
            n(&prop("TaskSpec", "capabilities")["maxItems"]),
            baton_core::spec::CAPABILITIES_PER_TASK_MAX as f64,
        ),
        (
            "TaskSpec.rate".into(),
            n(&prop("TaskSpec", "rate")["maxItems"]),
            baton_core::flow::FLOW_KEYS_MAX as f64,
        ),
        (
            "TaskSpec.concurrency".into(),
            n(&prop("TaskSpec", "concurrency")["maxItems"]),
            baton_core::flow::FLOW_KEYS_MAX as f64,
        ),
        (
            "TaskSpec.fairness_key".into(),
            n(&prop("TaskSpec", "fairness_key")["maxLength"]),
            baton_core::flow::FLOW_KEY_LEN_MAX as f64,
        ),
        (
            "TaskSpec.delay_ms".into(),
            n(&prop("TaskSpec", "delay_ms")["maximum"]),
            dur,
        ),
        (
            "TaskSpec.sleep_ms".into(),
            n(&prop("TaskSpec", "sleep_ms")["maximum"]),
            dur,
        ),
        (
            "WaitFor.timeout_ms".into(),
            n(&prop("WaitFor", "timeout_ms")["maximum"]),
            dur,
        ),
        (
            "RetryPolicy.max_attempts".into(),
            n(&prop("RetryPolicy", "max_attempts")["maximum"]),
            baton_core::spec::ATTEMPTS_MAX as f64,
        ),
        (
            "RetryPolicy.initial_backoff_ms".into(),
            n(&prop("RetryPolicy", "initial_backoff_ms")["maximum"]),
            dur,
        ),
        (
            "RetryPolicy.max_backoff_ms".into(),
            n(&prop("RetryPolicy", "max_backoff_ms")["maximum"]),
            dur,
        ),
        (
            "RetryPolicy.non_retryable".into(),
            n(&prop("RetryPolicy", "non_retryable")["maxItems"]),
            baton_core::spec::NON_RETRYABLE_KINDS_MAX as f64,
        ),
        (
            "Timeouts.heartbeat_ms".into(),
            n(&prop("Timeouts", "heartbeat_ms")["maximum"]),
            dur,
        ),
        (
            "Timeouts.start_ms".into(),
            n(&prop("Timeouts", "start_ms")["maximum"]),
            dur,
        ),
        (
            "Timeouts.start_to_close_ms".into(),
            n(&prop("Timeouts", "start_to_close_ms")["maximum"]),
            dur,
        ),
        (
            "Timeouts.schedule_to_start_ms".into(),
            n(&prop("Timeouts", "schedule_to_start_ms")["maximum"]),
            dur,
        ),
        (
            "Limit.units".into(),
            n(&prop("Limit", "units")["maximum"]),
            baton_core::flow::LIMIT_UNITS_MAX as f64,
        ),
        (
            "Limit.per_ms".into(),
            n(&prop("Limit", "per_ms")["maximum"]),
            baton_core::flow::LIMIT_PER_MS_MAX as f64,
        ),
        (
            "RateUse.units".into(),
            n(&prop("RateUse", "units")["maximum"]),
            baton_core::flow::LIMIT_UNITS_MAX as f64,
        ),
        (
            "RateUse.key".into(),
            n(&prop("RateUse", "key")["maxLength"]),
            baton_core::flow::FLOW_KEY_LEN_MAX as f64,
        ),
        (
            "ConcurrencyKey.key".into(),
            n(&prop("ConcurrencyKey", "key")["maxLength"]),
            baton_core::flow::FLOW_KEY_LEN_MAX as f64,
        ),
        (
            "Budget.limit".into(),
            n(&prop("Budget", "limit")["maximum"]),
            baton_core::usage::AMOUNT_MAX,
        ),
        (
            "Budgets".into(),
            n(&schema("Budgets")["maxProperties"]),
            baton_core::usage::UNITS_MAX as f64,
        ),
        (
            "Usage".into(),
            n(&schema("Usage")["maxProperties"]),
            baton_core::usage::UNITS_MAX as f64,
        ),
        (
            "Usage amounts".into(),
            n(&schema("Usage")["additionalProperties"]["maximum"]),
            baton_core::usage::AMOUNT_MAX,
        ),
        (
            "Labels".into(),
            n(&schema("Labels")["maxProperties"]),
            baton_core::labels::LABELS_MAX as f64,
        ),
        (
            "Labels values".into(),
            n(&schema("Labels")["additionalProperties"]["maxLength"]),
            baton_core::labels::LABEL_VALUE_LEN_MAX as f64,
        ),
        (
            "SubmitWorkflow.tasks".into(),
            n(&prop("SubmitWorkflow", "tasks")["maxItems"]),
            baton_core::dag::TASKS_PER_WORKFLOW_MAX as f64,
        ),
        (
            "WorkflowTemplate.tasks".into(),
            n(&prop("WorkflowTemplate", "tasks")["maxItems"]),
            baton_core::dag::TASKS_PER_WORKFLOW_MAX as f64,
        ),
        (
            "SubmitWorkflow.name".into(),
            n(&prop("SubmitWorkflow", "name")["maxLength"]),
            baton_engine::NAME_LEN_MAX as f64,
        ),
        (
            "WorkflowTemplate.name".into(),
            n(&prop("WorkflowTemplate", "name")["maxLength"]),
            baton_engine::NAME_LEN_MAX as f64,
        ),
        (
            "SubmitWorkflow.idempotency_key".into(),
            n(&prop("SubmitWorkflow", "idempotency_key")["maxLength"]),
            baton_engine::NAME_LEN_MAX as f64,
        ),
        (
            "SubmitTask.idempotency_key".into(),
            n(&prop("SubmitTask", "idempotency_key")["maxLength"]),
            baton_engine::NAME_LEN_MAX as f64,
        ),
        (
            "RegisterAgent.name".into(),
            n(&prop("RegisterAgent", "name")["maxLength"]),
            baton_engine::NAME_LEN_MAX as f64,
        ),
        (
            "RegisterAgent.capabilities".into(),
            n(&prop("RegisterAgent", "capabilities")["maxItems"]),
            baton_engine::AGENT_CAPABILITIES_MAX as f64,
        ),
        (
            "RegisterAgent.concurrency".into(),
            n(&prop("RegisterAgent", "concurrency")["maximum"]),
            baton_engine::AGENT_CONCURRENCY_MAX as f64,
        ),
        (
            "ClaimBody.max".into(),
            n(&prop("ClaimBody", "max")["maximum"]),
            baton_engine::CLAIM_TASKS_MAX as f64,
        ),
        (
            "ClaimBody.wait_ms".into(),
            n(&prop("ClaimBody", "wait_ms")["maximum"]),
            baton_engine::CLAIM_WAIT_MAX_MS as f64,
        ),
        (
            "PauseBody.reason".into(),
            n(&prop("PauseBody", "reason")["maxLength"]),
            baton_engine::REASON_LEN_MAX as f64,
        ),
        (
            "CancelBody.reason".into(),
            n(&prop("CancelBody", "reason")["maxLength"]),
            baton_engine::REASON_LEN_MAX as f64,
        ),
        (
            "ReportedError.kind".into(),
            n(&prop("ReportedError", "kind")["maxLength"]),
            baton_engine::ERROR_KIND_LEN_MAX as f64,
        ),
        (
            "BudgetsBody.reason".into(),
            n(&prop("BudgetsBody", "reason")["maxLength"]),
            baton_engine::REASON_LEN_MAX as f64,
        ),
        (
            "GET /v1/tasks limit".into(),
            n(&param("/v1/tasks", "get", "limit")["maximum"]),
            baton_engine::read::PAGE_ROWS_MAX as f64,
        ),
        (
            "GET /v1/tasks/{id}/history limit".into(),
            n(&param("/v1/tasks/{id}/history", "get", "limit")["maximum"]),
            baton_engine::read::PAGE_ROWS_MAX as f64,
        ),
        (
            "GET /v1/agents limit".into(),
            n(&param("/v1/agents", "get", "limit")["maximum"]),
            baton_engine::read::PAGE_ROWS_MAX as f64,
        ),
        (
            "GET /v1/schedules limit".into(),
            n(&param("/v1/schedules", "get", "limit")["maximum"]),
            baton_engine::read::PAGE_ROWS_MAX as f64,
        ),
        (
            "GET /v1/triggers limit".into(),
            n(&param("/v1/triggers", "get", "limit")["maximum"]),
            baton_engine::read::PAGE_ROWS_MAX as f64,
        ),
        (
            "GET /v1/waiting limit".into(),
            n(&param("/v1/waiting", "get", "limit")["maximum"]),
            baton_engine::read::PAGE_ROWS_MAX as f64,
        ),
        (
            "GET /v1/workflows/{id}/signals limit".into(),
            n(&param("/v1/workflows/{id}/signals", "get", "limit")["maximum"]),
            baton_engine::read::PAGE_ROWS_MAX as f64,
        ),
        (
            "GET /v1/workflows/{id}/history limit".into(),
            n(&param("/v1/workflows/{id}/history", "get", "limit")["maximum"]),
            baton_engine::read::HISTORY_TASKS_PER_PAGE_MAX as f64,
        ),
        (
            "GET /v1/audit until".into(),
            n(&param("/v1/audit", "get", "until")["maximum"]),
            baton_core::Timestamp::NEVER.0 as f64,
        ),
    ];
    for (what, declared, constant) in checks {
        assert_eq!(
            declared, constant,
            "{what}: the document says {declared}, the server {constant}"
        );
    }
    assert_eq!(prop("WaitFor", "signal")["pattern"], pat::PATH_NAME_PATTERN);
    for (schema_name, field) in [("TaskSpec", "key"), ("CompensationSpec", "key")] {
        assert_eq!(
            prop(schema_name, field)["pattern"],
            pat::NAME_PATTERN,
            "{schema_name}.{field}"
        );
    }
    assert_eq!(schema("TaskKey")["pattern"], pat::KEY_PATTERN);
    assert_eq!(schema("Capability")["pattern"], pat::NAME_PATTERN);
    assert_eq!(
        schema("Labels")["propertyNames"]["pattern"],
        pat::LABEL_KEY_PATTERN
    );
    assert_eq!(
        schema("Usage")["propertyNames"]["pattern"],
        pat::UNIT_PATTERN
    );
    assert_eq!(
        prop("ScheduleSpec", "name")["pattern"],
        pat::PATH_NAME_PATTERN
    );
    assert_eq!(
        param("/v1/workflows/{id}/signals/{name}", "post", "name")["pattern"],
        pat::PATH_NAME_PATTERN
    );
    for (path, method) in [
        ("/v1/schedules/{name}", "get"),
        ("/v1/schedules/{name}", "delete"),
        ("/v1/schedules/{name}/pause", "post"),
        ("/v1/schedules/{name}/resume", "post"),
        ("/v1/triggers/{name}", "put"),
        ("/v1/triggers/{name}", "post"),
        ("/v1/triggers/{name}", "get"),
        ("/v1/triggers/{name}", "delete"),
    ] {
        assert_eq!(
            param(path, method, "name")["pattern"],
            pat::PATH_NAME_PATTERN,
            "{method} {path}"
        );
    }
    for method in ["put", "get", "delete"] {
        let key = param("/v1/limits/{key}", method, "key");
        assert_eq!(key["pattern"], pat::LIMIT_KEY_PATTERN, "{method}");
        assert_eq!(
            n(&key["maxLength"]),
            baton_core::flow::FLOW_KEY_LEN_MAX as f64,
            "{method}"
        );
    }
    // Ids in paths are UUIDs.
    for (path, method) in [
        ("/v1/workflows/{id}", "get"),
        ("/v1/tasks/{id}", "get"),
        ("/v1/agents/{id}/claim", "post"),
    ] {
        assert_eq!(
            param(path, method, "id")["format"],
            "uuid",
            "{method} {path}"
        );
    }
    // The Idempotency-Key header: 1 to 256 visible ASCII characters, where it is read.
    for (path, method) in [
        ("/v1/workflows/{id}/signals/{name}", "post"),
        ("/v1/triggers/{name}", "post"),
    ] {
        let p = param(path, method, "Idempotency-Key");
        let pattern = p["pattern"].as_str().unwrap();
        assert!(
            pattern.contains(&format!(
                "{{0,{}}}",
                baton_server::api::IDEMPOTENCY_KEY_LEN_MAX - 2
            )),
            "{method} {path}: {pattern}"
        );
    }
}

/// Every JSON request body and success answer in the document carries an example (from one
/// real session, `src/examples.json`) that fits its schema, and every example there lands on
/// an operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_has_an_example_that_fits_its_schema() {
    let srv = TestServer::start().await;
    let (_, doc) = srv.get("/v1/openapi.json").await;
    let mut problems = Vec::new();
    let mut shown = std::collections::BTreeSet::new();
    let mut example = |id: &str, what: String, content: &Value, problems: &mut Vec<String>| {
        let Some(content) = content.get("application/json") else {
            return;
        };
        match content.get("example") {
            Some(ex) => {
                check(
                    &doc,
                    &content["schema"],
                    ex,
                    &format!("{id} {what}"),
                    problems,
                );
                shown.insert((id.to_owned(), what));
            }
            None => problems.push(format!("{id} {what}: no example")),
        }
    };
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap();
            example(
                id,
                "request".to_owned(),
                &op["requestBody"]["content"],
                &mut problems,
            );
            for (status, res) in op["responses"].as_object().unwrap() {
                if status.starts_with('2') {
                    example(id, status.clone(), &res["content"], &mut problems);
                }
            }
        }
    }
    for (id, ours) in baton_server::examples::examples() {
        let whats = ours.request.iter().map(|_| "request".to_owned());
        for what in whats.chain(ours.responses.into_keys()) {
            if !shown.contains(&(id.clone(), what.clone())) {
                problems.push(format!("{id} {what}: in examples.json but not shown"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
