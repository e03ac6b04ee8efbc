//! Workflow labels and tokens scoped to them, over real HTTP: labels are stored with a
//! workflow and listed by; a token scoped to `tenant=acme` sees only workflows carrying it and
//! their tasks (anything else is the 404 of a missing one, lists leave it out, the event
//! stream skips it), labels what it submits, and cannot act outside its scope.

mod common;

use std::sync::Arc;

use baton_engine::ManualClock;
use baton_server::tokens::{Secret, TokenSpec};
use baton_server::{Role, Tokens};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret";
const ACME_VIEWER: &str = "acme-viewer-secret";
const ACME_OPERATOR: &str = "acme-operator-secret";
const ACME_ADMIN: &str = "acme-admin-secret";

fn spec(name: &str, role: Role, secret: &str, scope: &[(&str, &str)]) -> TokenSpec {
    TokenSpec {
        origin: format!("test token {name}"),
        name: name.into(),
        role,
        secret: Secret::Plain(secret.into()),
        agents: Vec::new(),
        agents_max: None,
        scope: scope
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// A server with an unscoped admin token (the fixture's helpers send it) and viewer,
/// operator and admin tokens scoped to `tenant=acme`.
async fn server() -> TestServer {
    let acme = [("tenant", "acme")];
    let tokens = Tokens::build([
        spec("root", Role::Admin, ADMIN, &[]),
        spec("acme-viewer", Role::Viewer, ACME_VIEWER, &acme),
        spec("acme-ops", Role::Operator, ACME_OPERATOR, &acme),
        spec("acme-admin", Role::Admin, ACME_ADMIN, &acme),
    ])
    .unwrap();
    let (url, dir) = store_url().await;
    let mut srv = TestServer::start_with(url, dir, tokens, Arc::new(ManualClock::new(T0))).await;
    srv.token = Some(ADMIN.to_owned());
    srv
}

/// Submits a workflow labelled `labels` (as the unscoped admin): its id and its task `a`'s.
async fn submit(srv: &TestServer, name: &str, labels: Value) -> (String, String) {
    let (status, body) = srv
        .post(
            "/v1/workflows",
            json!({"name": name, "labels": labels, "tasks": [
                task("a", &[]),
                {"key": "approval", "wait_for": {"signal": "go"}},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["workflow"].as_str().unwrap().to_owned(),
        body["tasks"]["a"].as_str().unwrap().to_owned(),
    )
}

async fn get_as(srv: &TestServer, token: &str, path: &str) -> (StatusCode, Value) {
    let res = srv.raw(Method::GET, path, Some(token), None, None).await;
    (res.status, res.json())
}

async fn post_as(srv: &TestServer, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let res = srv.send_json(Method::POST, path, Some(token), &body).await;
    (res.status, res.json())
}

fn names(list: &Value) -> Vec<&str> {
    list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_keep_their_labels_and_are_listed_by_them() {
    let srv = server().await;
    let (acme, _) = submit(&srv, "acme", json!({"tenant": "acme", "env": "prod"})).await;
    submit(&srv, "globex", json!({"tenant": "globex", "env": "prod"})).await;
    submit(&srv, "plain", json!({})).await;

    let (s, wf) = srv.get(&format!("/v1/workflows/{acme}")).await;
    assert_eq!(s, StatusCode::OK, "{wf}");
    assert_eq!(wf["labels"], json!({"tenant": "acme", "env": "prod"}));
    let (_, all) = srv.get("/v1/workflows").await;
    assert_eq!(names(&all), ["plain", "globex", "acme"]);
    assert!(
        all["workflows"][0].get("labels").is_none(),
        "no labels: absent"
    );
    for (query, expected) in [
        ("tenant:acme", vec!["acme"]),
        ("tenant=globex", vec!["globex"]),
        ("env:prod", vec!["globex", "acme"]),
        ("env:dev", vec![]),
    ] {
        let (s, list) = srv.get(&format!("/v1/workflows?label={query}")).await;
        assert_eq!(s, StatusCode::OK, "{list}");
        assert_eq!(names(&list), expected, "{query}");
    }
    let (s, list) = srv
        .get("/v1/workflows?label=tenant:acme&status=completed")
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert!(names(&list).is_empty());

    // Bad labels are refused, naming the field.
    let (s, p) = srv.get("/v1/workflows?label=Tenant").await;
    assert_eq!(
        (s, p["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("label")),
        "{p}"
    );
    for (labels, field) in [
        (json!({"Tenant": "acme"}), "labels.Tenant"),
        (json!({"tenant": ""}), "labels.tenant"),
        (json!({"tenant": 7}), "labels.tenant"),
        (
            Value::Object((0..17).map(|i| (format!("k{i}"), json!("v"))).collect()),
            "labels",
        ),
    ] {
        let (s, p) = srv
            .post(
                "/v1/workflows",
                json!({"labels": labels, "tasks": [task("a", &[])]}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["field"], field, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_sees_only_its_workflows_and_the_rest_is_not_found() {
    let srv = server().await;
    let (acme, acme_task) = submit(&srv, "acme", json!({"tenant": "acme"})).await;
    let (globex, globex_task) = submit(&srv, "globex", json!({"tenant": "globex"})).await;
    let (plain, _) = submit(&srv, "plain", json!({})).await;

    let (s, list) = get_as(&srv, ACME_VIEWER, "/v1/workflows").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(names(&list), ["acme"]);
    let (_, list) = get_as(&srv, ACME_VIEWER, "/v1/workflows?label=tenant:globex").await;
    assert!(names(&list).is_empty());

    // Out of scope answers exactly as missing.
    let missing_wf = uuid::Uuid::now_v7();
    let (s, gone) = get_as(&srv, ACME_VIEWER, &format!("/v1/workflows/{missing_wf}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for wf in [&globex, &plain] {
        for path in [
            format!("/v1/workflows/{wf}"),
            format!("/v1/workflows/{wf}/graph"),
            format!("/v1/workflows/{wf}/history"),
            format!("/v1/workflows/{wf}/signals"),
            format!("/v1/tasks?workflow={wf}"),
            format!("/v1/waiting?workflow={wf}"),
            format!("/v1/counts?workflow={wf}"),
        ] {
            let (s, p) = get_as(&srv, ACME_VIEWER, &path).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {p}");
            assert_eq!(p["code"], gone["code"], "{path}: {p}");
        }
    }
    for path in [
        format!("/v1/tasks/{globex_task}"),
        format!("/v1/tasks/{globex_task}/history"),
        format!("/v1/tasks/{globex_task}/upstream"),
    ] {
        let (s, p) = get_as(&srv, ACME_VIEWER, &path).await;
        assert_eq!(
            (s, p["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("task_not_found")),
            "{path}: {p}"
        );
    }
    // In scope, all of it reads.
    for path in [
        format!("/v1/workflows/{acme}"),
        format!("/v1/workflows/{acme}/graph"),
        format!("/v1/tasks/{acme_task}"),
        format!("/v1/counts?workflow={acme}"),
    ] {
        let (s, p) = get_as(&srv, ACME_VIEWER, &path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {p}");
    }
    // Lists hold only its tasks.
    let (_, tasks) = get_as(&srv, ACME_VIEWER, "/v1/tasks").await;
    let workflows: Vec<&str> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["workflow"].as_str().unwrap())
        .collect();
    assert_eq!(workflows, [acme.as_str(), acme.as_str()], "{tasks}");
    let (_, waiting) = get_as(&srv, ACME_VIEWER, "/v1/waiting").await;
    let waiting: Vec<&str> = waiting["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["workflow"].as_str().unwrap())
        .collect();
    assert_eq!(waiting, [acme.as_str()]);
    let (_, ids) = get_as(
        &srv,
        ACME_VIEWER,
        &format!("/v1/ids/{}", &globex_task[28..]),
    )
    .await;
    assert_eq!(ids["tasks"], json!([]), "{ids}");
    let (_, ids) = get_as(&srv, ACME_VIEWER, &format!("/v1/ids/{}", &acme_task[28..])).await;
    assert_eq!(ids["tasks"][0]["id"], acme_task.as_str(), "{ids}");
    // Counts add up its workflows only (acme's two tasks, of the six); the metrics over every
    // workflow are refused, saying why.
    let (s, counts) = get_as(&srv, ACME_VIEWER, "/v1/counts").await;
    assert_eq!(s, StatusCode::OK, "{counts}");
    let (_, all) = get_as(&srv, ADMIN, "/v1/counts").await;
    assert_eq!(
        (counts["total"].as_u64(), all["total"].as_u64()),
        (Some(2), Some(6)),
        "{counts} {all}"
    );
    // Usage: its label's; another label's is refused.
    let (s, usage) = get_as(&srv, ACME_VIEWER, "/v1/usage").await;
    assert_eq!(
        (s, &usage["usage"]),
        (StatusCode::OK, &json!({})),
        "{usage}"
    );
    let (s, p) = get_as(&srv, ACME_VIEWER, "/v1/usage?label=tenant:globex").await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("out_of_scope")),
        "{p}"
    );
    let (s, p) = get_as(&srv, ACME_VIEWER, "/metrics").await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("out_of_scope")),
        "{p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_operator_labels_what_it_submits_and_acts_only_in_scope() {
    let srv = server().await;
    let (globex, globex_task) = submit(&srv, "globex", json!({"tenant": "globex"})).await;

    // Its submissions get its label, or keep it; another tenant's is refused.
    let (s, created) = post_as(
        &srv,
        ACME_OPERATOR,
        "/v1/workflows",
        json!({"name": "mine", "labels": {"team": "data"}, "tasks": [task("a", &[])]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let mine = created["workflow"].as_str().unwrap().to_owned();
    let (_, wf) = srv.get(&format!("/v1/workflows/{mine}")).await;
    assert_eq!(wf["labels"], json!({"tenant": "acme", "team": "data"}));
    let (s, created) = post_as(
        &srv,
        ACME_OPERATOR,
        "/v1/tasks",
        json!({"task": task("t", &[])}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let (_, wf) = srv
        .get(&format!(
            "/v1/workflows/{}",
            created["workflow"].as_str().unwrap()
        ))
        .await;
    assert_eq!(wf["labels"], json!({"tenant": "acme"}));
    let (s, p) = post_as(
        &srv,
        ACME_OPERATOR,
        "/v1/workflows",
        json!({"labels": {"tenant": "globex"}, "tasks": [task("a", &[])]}),
    )
    .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("out_of_scope")),
        "{p}"
    );
    assert_eq!(p["field"], "labels.tenant");

    // Acting on another tenant's workflow is acting on nothing.
    let before = srv.task(&globex_task).await;
    for (path, body) in [
        (format!("/v1/workflows/{globex}/cancel"), json!({})),
        (
            format!("/v1/workflows/{globex}/signals/go"),
            json!({"ok": true}),
        ),
        (format!("/v1/tasks/{globex_task}/cancel"), json!({})),
        (format!("/v1/tasks/{globex_task}/retry"), json!({})),
    ] {
        let (s, p) = post_as(&srv, ACME_OPERATOR, &path, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {p}");
    }
    assert_eq!(srv.task(&globex_task).await, before, "nothing changed");
    let (_, signals) = srv.get(&format!("/v1/workflows/{globex}/signals")).await;
    assert_eq!(signals["signals"], json!([]));

    // Its own, it cancels, recorded under its token's name.
    let (s, p) = post_as(
        &srv,
        ACME_OPERATOR,
        &format!("/v1/workflows/{mine}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let (_, tasks) = srv.get(&format!("/v1/tasks?workflow={mine}")).await;
    let task = srv.task(tasks["tasks"][0]["id"].as_str().unwrap()).await;
    let last = task["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"]["name"], "acme-ops", "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_and_triggers_are_in_scope_by_their_template_labels() {
    let srv = server().await;
    for (name, labels) in [
        ("acme-hook", json!({"tenant": "acme"})),
        ("globex-hook", json!({"tenant": "globex"})),
    ] {
        let res = srv
            .send_json(
                Method::PUT,
                &format!("/v1/triggers/{name}"),
                Some(ADMIN),
                &json!({"labels": labels, "tasks": [{"key": "a"}]}),
            )
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.json());
    }
    let (_, list) = get_as(&srv, ACME_VIEWER, "/v1/triggers").await;
    let listed: Vec<&str> = list["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["acme-hook"]);
    let (s, _) = get_as(&srv, ACME_VIEWER, "/v1/triggers/globex-hook").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, p) = post_as(&srv, ACME_OPERATOR, "/v1/triggers/globex-hook", json!({})).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("trigger_not_found")),
        "{p}"
    );
    let (s, fired) = post_as(&srv, ACME_OPERATOR, "/v1/triggers/acme-hook", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{fired}");
    let (_, wf) = srv
        .get(&format!(
            "/v1/workflows/{}",
            fired["workflow"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        wf["labels"],
        json!({"tenant": "acme"}),
        "the template's labels"
    );

    // A scoped admin's schedules carry its label; it cannot touch another tenant's.
    let (s, created) = post_as(
        &srv,
        ACME_ADMIN,
        "/v1/schedules",
        json!({"name": "acme-nightly", "cron": "0 0 0 * * *", "workflow": {"tasks": [{"key": "a"}]}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["spec"]["workflow"]["labels"],
        json!({"tenant": "acme"}),
        "{created}"
    );
    let (s, _) = srv
        .post(
            "/v1/schedules",
            json!({"name": "globex-nightly", "cron": "0 0 0 * * *",
                   "workflow": {"labels": {"tenant": "globex"}, "tasks": [{"key": "a"}]}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, list) = get_as(&srv, ACME_VIEWER, "/v1/schedules").await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1, "{list}");
    for (method, path) in [
        (Method::POST, "/v1/schedules/globex-nightly/pause"),
        (Method::DELETE, "/v1/schedules/globex-nightly"),
        (Method::DELETE, "/v1/triggers/globex-hook"),
    ] {
        let res = srv.raw(method, path, Some(ACME_ADMIN), None, None).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{path}: {}", res.json());
    }
    let res = srv
        .send_json(
            Method::PUT,
            "/v1/triggers/globex-hook",
            Some(ACME_ADMIN),
            &json!({"tasks": [{"key": "b"}]}),
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN, "{}", res.json());
    let (_, still) = srv.get("/v1/triggers/globex-hook").await;
    assert_eq!(
        still["workflow"]["labels"],
        json!({"tenant": "globex"}),
        "unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_admin_does_no_agents_work() {
    let srv = server().await;
    // Claims take any workflow's tasks: a scoped token may not register or act as an agent.
    let (s, p) = post_as(
        &srv,
        ACME_ADMIN,
        "/v1/agents",
        json!({"name": "w", "capabilities": ["work"]}),
    )
    .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("out_of_scope")),
        "{p}"
    );
    let agent = srv.register("w", &["work"], 1).await;
    let (s, p) = post_as(
        &srv,
        ACME_ADMIN,
        &format!("/v1/agents/{agent}/claim"),
        json!({}),
    )
    .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("out_of_scope")),
        "{p}"
    );
    // The unscoped admin may.
    let (s, p) = post_as(&srv, ADMIN, &format!("/v1/agents/{agent}/claim"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_event_stream_carries_only_its_workflows() {
    let srv = server().await;
    let mut stream = srv
        .client
        .get(format!("{}/v1/events", srv.url))
        .bearer_auth(ACME_VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let (globex, _) = submit(&srv, "globex", json!({"tenant": "globex"})).await;
    let (acme, _) = submit(&srv, "acme", json!({"tenant": "acme"})).await;
    let (s, _) = srv
        .post(&format!("/v1/workflows/{globex}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = srv
        .post(&format!("/v1/workflows/{acme}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    // acme's two submissions, two cancellations, and its end: nothing of globex's.
    let mut buf = String::new();
    let events = read_sse(&mut stream, &mut buf, 5).await;
    for e in &events {
        let data: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(data["workflow"], acme.as_str(), "{e:?}");
    }
    assert_eq!(events.last().unwrap().event, "workflow", "{events:?}");
}
