//! A typed Rust client for Baton's `/v1` HTTP API: operators submit, inspect, cancel and retry;
//! agents register, claim, and report on their leases. Every refusal comes back as
//! [`ClientError::Api`] carrying the server's problem document. [`Runner`] is the agent loop
//! built on it (claim, start, heartbeat, report, stop) that every Rust agent uses.

use std::collections::BTreeMap;
use std::time::Duration;

use baton_api::*;
use baton_core::Usage;
use baton_core::{Capability, ErrorReport, StateKind, TaskSpec};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

pub use baton_api as wire;
pub use runner::{
    Call, Cancel, Observer, Runner, RunnerConfig, RunnerError, RunnerEvent, StopHandle, TaskContext,
};

mod artifact;
mod batch;
pub mod runner;

pub use artifact::{artifact_ref, ArtifactDownload, ARTIFACT_TRANSFER_TIMEOUT};

/// The default server address, as `baton serve` listens by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7700";
/// Agents read per request by [`Client::agents`] (the most `GET /v1/agents` answers).
pub const AGENTS_PAGE: usize = 1_000;
/// Schedules and triggers read per request by [`Client::schedules`] and [`Client::triggers`]
/// (the most their lists answer).
pub const NAMES_PAGE: usize = 1_000;
/// Extra time a request may take beyond a long poll's own wait.
const REQUEST_SLACK: Duration = Duration::from_secs(30);
/// Longest any other request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections are dropped before the server closes them (its header timeout, 30 s by
/// default), so a request is never sent on a connection the server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The event stream is meant to stay open.
const STREAM_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Cloneable, so that one failed batch of reports can answer each report in it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request: its problem document says why.
    #[error("{} {}: {}", .0.status, .0.code, .0.detail)]
    Api(Box<ProblemDoc>),
    /// The server could not be reached or the connection broke.
    #[error("cannot reach Baton at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: std::sync::Arc<reqwest::Error>,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {url}: {detail}")]
    Decode { url: String, detail: String },
    #[error("invalid server URL {0:?}: expected http://host:port or https://host:port")]
    InvalidUrl(String),
    /// A local file could not be read or written (an artifact's upload or download).
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The problem document of a refusal, if the server refused.
    pub fn problem(&self) -> Option<&ProblemDoc> {
        match self {
            ClientError::Api(p) => Some(p),
            _ => None,
        }
    }

    /// The stable error code of a refusal (`stale_lease`, `task_cancelled`, …).
    pub fn code(&self) -> Option<&str> {
        self.problem().map(|p| p.code.as_str())
    }

    pub fn status(&self) -> Option<u16> {
        self.problem().map(|p| p.status)
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one Baton server.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// Set by [`Client::batching_reports`]: reports go through it.
    batcher: Option<std::sync::Arc<batch::Batcher>>,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:7700`, or `https://…`,
    /// checked against the system's roots).
    pub fn new(base: &str) -> Result<Client> {
        Client::with_roots(base, Vec::new())
    }

    /// A client for the server at `base` that also trusts the PEM certificates in `ca_pem`
    /// (a private CA, or a server's self-signed certificate).
    pub fn with_ca_pem(base: &str, ca_pem: &[u8]) -> Result<Client> {
        let base = base.trim_end_matches('/');
        let roots = reqwest::Certificate::from_pem_bundle(ca_pem)
            .map_err(|e| ClientError::Local(format!("the CA certificates are not PEM: {e}")))?;
        Client::with_roots(base, roots)
    }

    fn with_roots(base: &str, roots: Vec<reqwest::Certificate>) -> Result<Client> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::InvalidUrl(base.to_owned()));
        }
        // The process's TLS provider, unless the program chose one already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tls_certs_merge(roots)
            .build()
            .map_err(|e| ClientError::Transport {
                url: base.to_owned(),
                source: std::sync::Arc::new(e),
            })?;
        Ok(Client {
            base: base.to_owned(),
            token: None,
            http,
            batcher: None,
        })
    }

    /// A client configured from `BATON_URL`, `BATON_TOKEN` and `BATON_CA_CERT` (a PEM file of
    /// certificates to trust besides the system's).
    pub fn from_env() -> Result<Client> {
        let url = std::env::var("BATON_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let client = match std::env::var_os("BATON_CA_CERT") {
            Some(path) if !path.is_empty() => {
                let pem = std::fs::read(&path).map_err(|e| {
                    ClientError::Local(format!(
                        "reading BATON_CA_CERT {}: {e}",
                        path.to_string_lossy()
                    ))
                })?;
                Client::with_ca_pem(&url, &pem)?
            }
            _ => Client::new(&url)?,
        };
        Ok(match std::env::var("BATON_TOKEN") {
            Ok(t) if !t.is_empty() => client.with_token(t),
            _ => client,
        })
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Option<Duration>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let bytes = self.call_bytes(method, &url, body, timeout, None).await?;
        serde_json::from_slice(bytes.as_ref()).map_err(|e| ClientError::Decode {
            url,
            detail: e.to_string(),
        })
    }

    /// The answer's body as sent, after checking its status.
    async fn call_bytes(
        &self,
        method: Method,
        url: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Option<Duration>,
        idempotency_key: Option<&str>,
    ) -> Result<impl AsRef<[u8]>> {
        let (_, bytes) = self
            .exchange(method, url, body, timeout, idempotency_key)
            .await?;
        Ok(bytes)
    }

    /// The answer's success status and body as sent.
    async fn exchange(
        &self,
        method: Method,
        url: &str,
        body: Option<&(impl Serialize + ?Sized)>,
        timeout: Option<Duration>,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, impl AsRef<[u8]>)> {
        let url = url.to_owned();
        let mut rb = self.http.request(method, &url);
        if let Some(key) = idempotency_key {
            rb = rb.header("Idempotency-Key", key);
        }
        if let Some(token) = &self.token {
            rb = rb.bearer_auth(token);
        }
        if let Some(body) = body {
            rb = rb.json(body);
        }
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        let res = rb.send().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            source: std::sync::Arc::new(e),
        })?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            source: std::sync::Arc::new(e),
        })?;
        if !status.is_success() {
            return Err(problem(status, &bytes, &url));
        }
        Ok((status, bytes))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(Method::GET, path, None::<&Value>, None).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        let url = format!("{}{path}", self.base);
        self.call_bytes(Method::DELETE, &url, None::<&Value>, None, None)
            .await?;
        Ok(())
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<T> {
        self.call(Method::POST, path, Some(body), None).await
    }

    // ---- operators ----------------------------------------------------------------------

    pub async fn submit_workflow(
        &self,
        name: &str,
        idempotency_key: Option<&str>,
        tasks: &[TaskSpec],
    ) -> Result<WorkflowCreated> {
        let body = SubmitWorkflow {
            budgets: Default::default(),
            name: name.to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            tasks: tasks.to_vec(),
            outputs: None,
            labels: Default::default(),
        };
        self.post("/v1/workflows", &body).await
    }

    /// Submits a workflow request as built (outputs and labels included).
    pub async fn submit(&self, body: &SubmitWorkflow) -> Result<WorkflowCreated> {
        self.post("/v1/workflows", body).await
    }

    /// Submits a raw workflow document (`{"name", "idempotency_key", "tasks": [...]}`).
    pub async fn submit_workflow_json(&self, body: &Value) -> Result<WorkflowCreated> {
        self.post("/v1/workflows", body).await
    }

    pub async fn submit_task(
        &self,
        task: &TaskSpec,
        idempotency_key: Option<&str>,
    ) -> Result<TaskCreated> {
        let body = SubmitTask {
            budgets: Default::default(),
            idempotency_key: idempotency_key.map(str::to_owned),
            task: task.clone(),
            labels: Default::default(),
        };
        self.post("/v1/tasks", &body).await
    }

    pub async fn workflow(&self, id: Uuid) -> Result<WorkflowView> {
        self.get(&format!("/v1/workflows/{id}")).await
    }

    /// The tasks and workflows whose ids end in `suffix` (4 to 32 hex digits, hyphens
    /// ignored): what a short id stands for.
    pub async fn ids(&self, suffix: &str) -> Result<IdMatches> {
        self.get(&format!("/v1/ids/{}", segment(suffix))).await
    }

    /// Workflows, newest first: at most `limit` (1 to 100) created before `before`.
    pub async fn workflows(&self, before: Option<Uuid>, limit: usize) -> Result<WorkflowList> {
        let mut path = format!("/v1/workflows?limit={limit}");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        self.get(&path).await
    }

    /// Workflows newest first, filtered by status, name and label as `q` says.
    pub async fn list_workflows(&self, q: &WorkflowListQuery) -> Result<WorkflowList> {
        let mut query = Vec::new();
        if let Some(b) = q.before {
            query.push(format!("before={b}"));
        }
        if let Some(l) = q.limit {
            query.push(format!("limit={l}"));
        }
        if let Some(s) = q.status {
            let s = serde_json::to_value(s).expect("a status serializes");
            query.push(format!("status={}", s.as_str().unwrap_or_default()));
        }
        if let Some(n) = &q.name {
            query.push(format!("name={}", segment(n)));
        }
        if let Some(l) = &q.label {
            query.push(format!("label={}", segment(l)));
        }
        self.get(&format!("/v1/workflows?{}", query.join("&")))
            .await
    }

    pub async fn task(&self, id: Uuid) -> Result<TaskView> {
        self.get(&format!("/v1/tasks/{id}")).await
    }

    /// `GET PATH` (e.g. `/v1/tasks/{id}`) undecoded: the answer's JSON as the server sent it
    /// (for measuring what a read carries).
    pub async fn get_json(&self, path: &str) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let bytes = self
            .call_bytes(Method::GET, &url, None::<&Value>, None, None)
            .await?;
        Ok(bytes.as_ref().to_vec())
    }

    /// A page of the task's history, oldest first: the entries whose `seq` is above `after`
    /// (0: from the first), at most `limit` (the server's default 100, at most 1,000).
    pub async fn task_history(
        &self,
        id: Uuid,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<baton_api::HistoryEntry>> {
        self.get(&format!(
            "/v1/tasks/{id}/history?{}",
            page_query(after.map(|a| a.to_string()), limit)
        ))
        .await
    }

    /// The results of the task's completed dependencies, by key, at most 4 MiB of them (the
    /// rest withheld with their size); with `key`, only that one's, whatever its size.
    pub async fn upstream(
        &self,
        id: Uuid,
        key: Option<&str>,
    ) -> Result<BTreeMap<String, UpstreamResult>> {
        match key {
            // Task keys are letters, digits and `-_.:/`: nothing to escape in a query.
            Some(key) => {
                self.get(&format!("/v1/tasks/{id}/upstream?key={key}"))
                    .await
            }
            None => self.get(&format!("/v1/tasks/{id}/upstream")).await,
        }
    }

    /// One page of tasks; pass the returned `next` as `after` for the next page.
    pub async fn tasks(
        &self,
        workflow: Option<Uuid>,
        state: Option<StateKind>,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<TaskList> {
        let mut query = vec![format!("limit={limit}")];
        if let Some(w) = workflow {
            query.push(format!("workflow={w}"));
        }
        if let Some(s) = state {
            query.push(format!("state={}", s.as_str()));
        }
        if let Some(a) = after {
            query.push(format!("after={a}"));
        }
        self.get(&format!("/v1/tasks?{}", query.join("&"))).await
    }

    /// `GET /metrics`: the server's Prometheus metrics in the OpenMetrics text format.
    pub async fn metrics(&self) -> Result<String> {
        let url = format!("{}/metrics", self.base);
        let bytes = self
            .call_bytes(Method::GET, &url, None::<&Value>, None, None)
            .await?;
        Ok(String::from_utf8_lossy(bytes.as_ref()).into_owned())
    }

    pub async fn counts(&self, workflow: Option<Uuid>) -> Result<Counts> {
        match workflow {
            Some(w) => self.get(&format!("/v1/counts?workflow={w}")).await,
            None => self.get("/v1/counts").await,
        }
    }

    pub async fn cancel_task(&self, id: Uuid, reason: &str) -> Result<ReportAnswer> {
        let body = CancelBody {
            reason: reason.to_owned(),
        };
        self.post(&format!("/v1/tasks/{id}/cancel"), &body).await
    }

    pub async fn cancel_workflow(&self, id: Uuid, reason: &str) -> Result<CancelledCount> {
        let body = CancelBody {
            reason: reason.to_owned(),
        };
        self.post(&format!("/v1/workflows/{id}/cancel"), &body)
            .await
    }

    /// Sends signal `name` to a workflow: `body` completes the tasks waiting for it (their
    /// result), or `{"reject": "reason"}` fails them. The same `idempotency_key` applies once.
    pub async fn signal(
        &self,
        workflow: Uuid,
        name: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<SignalSent> {
        let url = format!("{}/v1/workflows/{workflow}/signals/{name}", self.base);
        let bytes = self
            .call_bytes(Method::POST, &url, Some(body), None, idempotency_key)
            .await?;
        serde_json::from_slice(bytes.as_ref()).map_err(|e| ClientError::Decode {
            url,
            detail: e.to_string(),
        })
    }

    /// Tasks waiting for a signal, of every workflow or one, a page at a time.
    pub async fn waiting(
        &self,
        workflow: Option<Uuid>,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<WaitingList> {
        let mut path = format!("/v1/waiting?limit={limit}");
        if let Some(w) = workflow {
            path.push_str(&format!("&workflow={w}"));
        }
        if let Some(a) = after {
            path.push_str(&format!("&after={a}"));
        }
        self.get(&path).await
    }

    /// The signals sent to a workflow, oldest first: those with ids above `after`, at most
    /// `limit` (the server's default 100).
    pub async fn signals(
        &self,
        workflow: Uuid,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<SignalList> {
        self.get(&format!(
            "/v1/workflows/{workflow}/signals?{}",
            page_query(after.map(|a| a.to_string()), limit)
        ))
        .await
    }

    /// The workflow's tasks and dependencies, as nodes and edges.
    pub async fn workflow_graph(&self, workflow: Uuid) -> Result<WorkflowGraph> {
        self.get(&format!("/v1/workflows/{workflow}/graph")).await
    }

    /// A page of the history of the workflow's tasks (their entries without data): the tasks
    /// with ids after `after`, at most `limit` of them (the server's default 200).
    pub async fn workflow_history(
        &self,
        workflow: Uuid,
        after: Option<Uuid>,
        limit: Option<usize>,
    ) -> Result<WorkflowHistory> {
        self.get(&format!(
            "/v1/workflows/{workflow}/history?{}",
            page_query(after.map(|a| a.to_string()), limit)
        ))
        .await
    }

    /// Creates a schedule from its spec (`ScheduleSpec` as JSON).
    pub async fn create_schedule(&self, spec: &Value) -> Result<ScheduleView> {
        self.post("/v1/schedules", spec).await
    }

    /// A page of schedules by name: at most `limit` (1 to 1,000), after `after` (the previous
    /// page's `next`).
    pub async fn schedules_page(&self, after: Option<&str>, limit: usize) -> Result<ScheduleList> {
        self.get(&format!("/v1/schedules?{}", names_query(after, limit)))
            .await
    }

    /// Every schedule, read a page of [`NAMES_PAGE`] at a time.
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.schedules_page(after.as_deref(), NAMES_PAGE).await?;
            all.extend(page.schedules);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    pub async fn schedule(&self, name: &str) -> Result<ScheduleView> {
        self.get(&format!("/v1/schedules/{}", segment(name))).await
    }

    /// Pauses (`true`) or resumes a schedule.
    pub async fn pause_schedule(&self, name: &str, paused: bool) -> Result<ScheduleView> {
        let verb = if paused { "pause" } else { "resume" };
        self.post(
            &format!("/v1/schedules/{}/{verb}", segment(name)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        self.delete(&format!("/v1/schedules/{}", segment(name)))
            .await
    }

    /// Registers (or replaces) trigger `name`: the workflow (`WorkflowTemplate` as JSON) that
    /// [`Client::fire_trigger`] submits. `{"$input": "/json/pointer"}` in a task's input
    /// stands for what the pointer finds in the fired input (`""`: all of it).
    pub async fn put_trigger(&self, name: &str, template: &Value) -> Result<PutTrigger> {
        let url = format!("{}/v1/triggers/{}", self.base, segment(name));
        let (status, bytes) = self
            .exchange(Method::PUT, &url, Some(template), None, None)
            .await?;
        let trigger = serde_json::from_slice(bytes.as_ref()).map_err(|e| ClientError::Decode {
            url,
            detail: e.to_string(),
        })?;
        Ok(PutTrigger {
            trigger,
            created: status == StatusCode::CREATED,
        })
    }

    /// A page of triggers by name: at most `limit` (1 to 1,000), after `after` (the previous
    /// page's `next`).
    pub async fn triggers_page(&self, after: Option<&str>, limit: usize) -> Result<TriggerList> {
        self.get(&format!("/v1/triggers?{}", names_query(after, limit)))
            .await
    }

    /// Every trigger, read a page of [`NAMES_PAGE`] at a time.
    pub async fn triggers(&self) -> Result<Vec<TriggerView>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.triggers_page(after.as_deref(), NAMES_PAGE).await?;
            all.extend(page.triggers);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    pub async fn trigger(&self, name: &str) -> Result<TriggerView> {
        self.get(&format!("/v1/triggers/{}", segment(name))).await
    }

    pub async fn delete_trigger(&self, name: &str) -> Result<()> {
        self.delete(&format!("/v1/triggers/{}", segment(name)))
            .await
    }

    /// Submits trigger `name`'s workflow with `input` in place of its placeholders. The same
    /// `idempotency_key` and input again return the first workflow (`created` false); another
    /// input with that key is refused (`idempotency_mismatch`).
    pub async fn fire_trigger(
        &self,
        name: &str,
        input: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<WorkflowCreated> {
        let url = format!("{}/v1/triggers/{}", self.base, segment(name));
        let bytes = self
            .call_bytes(Method::POST, &url, Some(input), None, idempotency_key)
            .await?;
        serde_json::from_slice(bytes.as_ref()).map_err(|e| ClientError::Decode {
            url,
            detail: e.to_string(),
        })
    }

    pub async fn retry_task(&self, id: Uuid) -> Result<ReportAnswer> {
        self.post(&format!("/v1/tasks/{id}/retry"), &RetryBody {})
            .await
    }

    /// Pauses a task (`now`: take it from its agent at once); `reason` is required.
    pub async fn pause_task(&self, id: Uuid, reason: &str, now: bool) -> Result<ReportAnswer> {
        let body = PauseBody {
            reason: reason.to_owned(),
            now,
        };
        self.post(&format!("/v1/tasks/{id}/pause"), &body).await
    }

    pub async fn resume_task(&self, id: Uuid, reason: &str) -> Result<ReportAnswer> {
        let body = ResumeBody {
            reason: reason.to_owned(),
        };
        self.post(&format!("/v1/tasks/{id}/resume"), &body).await
    }

    /// Completes a task with `result` in place of an agent.
    pub async fn skip_task(&self, id: Uuid, reason: &str, result: Value) -> Result<ReportAnswer> {
        let body = SkipBody {
            reason: reason.to_owned(),
            result,
        };
        self.post(&format!("/v1/tasks/{id}/skip"), &body).await
    }

    /// Fails a task for good, with `error` (kind `forced` when absent).
    pub async fn fail_task(
        &self,
        id: Uuid,
        reason: &str,
        error: Option<baton_core::ErrorReport>,
    ) -> Result<ReportAnswer> {
        let body = FailBody {
            reason: reason.to_owned(),
            error,
        };
        self.post(&format!("/v1/tasks/{id}/fail"), &body).await
    }

    /// Reruns a task and everything downstream of it (`dry_run`: only say what would rerun).
    pub async fn rerun_task(&self, id: Uuid, body: &RerunBody) -> Result<RerunAnswer> {
        self.post(&format!("/v1/tasks/{id}/rerun"), body).await
    }

    pub async fn pause_workflow(
        &self,
        id: Uuid,
        reason: &str,
        now: bool,
    ) -> Result<WorkflowControlAnswer> {
        let body = PauseBody {
            reason: reason.to_owned(),
            now,
        };
        self.post(&format!("/v1/workflows/{id}/pause"), &body).await
    }

    pub async fn resume_workflow(&self, id: Uuid, reason: &str) -> Result<WorkflowControlAnswer> {
        let body = ResumeBody {
            reason: reason.to_owned(),
        };
        self.post(&format!("/v1/workflows/{id}/resume"), &body)
            .await
    }

    /// Replaces the workflow's budgets (an empty map removes them); audited with `reason`.
    pub async fn set_budgets(
        &self,
        id: Uuid,
        reason: &str,
        budgets: BTreeMap<String, baton_core::Budget>,
    ) -> Result<WorkflowView> {
        let body = BudgetsBody {
            reason: reason.to_owned(),
            budgets,
        };
        self.call(
            Method::PUT,
            &format!("/v1/workflows/{id}/budgets"),
            Some(&body),
            None,
        )
        .await
    }

    /// Creates or changes the named rate limit: `units` per `per_ms` milliseconds.
    pub async fn set_limit(&self, key: &str, units: u64, per_ms: u64) -> Result<LimitView> {
        self.call(
            Method::PUT,
            &format!("/v1/limits/{}", segment(key)),
            Some(&baton_core::Limit { units, per_ms }),
            None,
        )
        .await
    }

    /// Every named rate limit, by key, with its bucket now.
    pub async fn limits(&self) -> Result<LimitList> {
        self.get("/v1/limits").await
    }

    pub async fn limit(&self, key: &str) -> Result<LimitView> {
        self.get(&format!("/v1/limits/{}", segment(key))).await
    }

    pub async fn delete_limit(&self, key: &str) -> Result<()> {
        self.delete(&format!("/v1/limits/{}", segment(key))).await
    }

    /// What agents have reported spending, per unit: over every workflow, or those carrying
    /// `label` (`key:value`).
    pub async fn usage(&self, label: Option<&str>) -> Result<UsageView> {
        match label {
            None => self.get("/v1/usage").await,
            Some(l) => self.get(&format!("/v1/usage?label={}", segment(l))).await,
        }
    }

    /// A page of the audit log, newest first.
    pub async fn audit(&self, q: &AuditQuery) -> Result<AuditPage> {
        let mut query = Vec::new();
        if let Some(a) = &q.actor {
            query.push(format!("actor={}", segment(a)));
        }
        if let Some(w) = q.workflow {
            query.push(format!("workflow={w}"));
        }
        if let Some(a) = &q.action {
            query.push(format!("action={}", segment(a)));
        }
        if let Some(t) = q.since {
            query.push(format!("since={t}"));
        }
        if let Some(t) = q.until {
            query.push(format!("until={t}"));
        }
        if let Some(b) = q.before {
            query.push(format!("before={b}"));
        }
        if let Some(l) = q.limit {
            query.push(format!("limit={l}"));
        }
        self.get(&format!("/v1/audit?{}", query.join("&"))).await
    }

    /// A page of agents by id: at most `limit` (1 to 1,000), after `after` (the previous
    /// page's `next`).
    pub async fn agents_page(&self, after: Option<Uuid>, limit: usize) -> Result<AgentList> {
        let mut query = vec![format!("limit={limit}")];
        if let Some(a) = after {
            query.push(format!("after={a}"));
        }
        self.get(&format!("/v1/agents?{}", query.join("&"))).await
    }

    /// Every agent, read a page of [`AGENTS_PAGE`] at a time.
    pub async fn agents(&self) -> Result<Vec<AgentView>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.agents_page(after, AGENTS_PAGE).await?;
            all.extend(page.agents);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// The lifecycle diagram, `mermaid` or `dot`.
    pub async fn lifecycle(&self, format: &str) -> Result<String> {
        let url = format!("{}/v1/lifecycle?format={format}", self.base);
        let res = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| ClientError::Transport {
                url: url.clone(),
                source: std::sync::Arc::new(e),
            })?;
        let status = res.status();
        let text = res.text().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            source: std::sync::Arc::new(e),
        })?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(problem(status, text.as_bytes(), &url))
        }
    }

    /// The live stream of transitions, optionally of one workflow.
    pub async fn events(&self, workflow: Option<Uuid>) -> Result<Events> {
        self.events_after(workflow, None).await
    }

    /// The stream resumed after the event `last_event_id` (see [`Events::last_event_id`]):
    /// the transitions since then that the server still keeps come first, and
    /// [`StreamItem::Lagged`] if some cannot be given.
    pub async fn events_after(
        &self,
        workflow: Option<Uuid>,
        last_event_id: Option<&str>,
    ) -> Result<Events> {
        let url = match workflow {
            Some(w) => format!("{}/v1/events?workflow={w}", self.base),
            None => format!("{}/v1/events", self.base),
        };
        let mut rb = self.http.get(&url).timeout(STREAM_TIMEOUT);
        if let Some(token) = &self.token {
            rb = rb.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            rb = rb.header("Last-Event-ID", id);
        }
        let res = rb.send().await.map_err(|e| ClientError::Transport {
            url: url.clone(),
            source: std::sync::Arc::new(e),
        })?;
        if !res.status().is_success() {
            let status = res.status();
            let bytes = res.bytes().await.unwrap_or_default();
            return Err(problem(status, &bytes, &url));
        }
        Ok(Events {
            res,
            buf: String::new(),
            url,
            last_id: last_event_id.map(str::to_owned),
        })
    }

    // ---- agents -------------------------------------------------------------------------

    pub async fn register_agent(
        &self,
        name: &str,
        capabilities: &[Capability],
        concurrency: u32,
    ) -> Result<AgentView> {
        self.post(
            "/v1/agents",
            &registration(None, name, capabilities, concurrency),
        )
        .await
    }

    /// Registers again under an existing id (a restarted agent keeps its identity).
    pub async fn reregister_agent(
        &self,
        id: Uuid,
        name: &str,
        capabilities: &[Capability],
        concurrency: u32,
    ) -> Result<AgentView> {
        let body = registration(Some(id), name, capabilities, concurrency);
        self.post("/v1/agents", &body).await
    }

    pub async fn agent_heartbeat(&self, agent: Uuid) -> Result<AgentView> {
        // The endpoint reads no body.
        let path = format!("/v1/agents/{agent}/heartbeat");
        self.call(Method::POST, &path, None::<&()>, None).await
    }

    /// Claims up to `max` tasks, waiting up to `wait` for work (long poll).
    pub async fn claim(&self, agent: Uuid, max: usize, wait: Duration) -> Result<Vec<ClaimedTask>> {
        self.claim_with(agent, max, wait, false).await
    }

    /// Claims up to `max` tasks and starts them in the same commit (`started` is `true` on
    /// each): no [`Client::started`] report is needed.
    pub async fn claim_and_start(
        &self,
        agent: Uuid,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ClaimedTask>> {
        self.claim_with(agent, max, wait, true).await
    }

    async fn claim_with(
        &self,
        agent: Uuid,
        max: usize,
        wait: Duration,
        start: bool,
    ) -> Result<Vec<ClaimedTask>> {
        let body = ClaimBody {
            max: Some(max),
            wait_ms: Some(wait.as_millis() as u64),
            start,
        };
        let claimed: Claimed = self
            .call(
                Method::POST,
                &format!("/v1/agents/{agent}/claim"),
                Some(&body),
                Some(wait + REQUEST_SLACK),
            )
            .await?;
        Ok(claimed.tasks)
    }

    pub async fn started(&self, task: &ClaimedTask, agent: Uuid) -> Result<ReportAnswer> {
        self.send_report(Report::Started {
            task: task.task,
            agent,
            token: task.token,
            traceparent: None,
        })
        .await
    }

    /// Renews the lease; the answer says whether the task was cancelled. A refusal with code
    /// `task_cancelled` or `stale_lease` means: stop working on it.
    pub async fn heartbeat(
        &self,
        task: &ClaimedTask,
        agent: Uuid,
        progress: Option<Value>,
    ) -> Result<ReportAnswer> {
        self.heartbeat_with_usage(task, agent, progress, &Usage::new())
            .await
    }

    /// A heartbeat that also says what the agent has spent so far under this lease
    /// (cumulative: the running total).
    pub async fn heartbeat_with_usage(
        &self,
        task: &ClaimedTask,
        agent: Uuid,
        progress: Option<Value>,
        usage: &Usage,
    ) -> Result<ReportAnswer> {
        self.send_report(Report::Heartbeat {
            task: task.task,
            usage: usage.clone(),
            agent,
            token: task.token,
            progress,
            traceparent: None,
        })
        .await
    }

    pub async fn succeeded(
        &self,
        task: &ClaimedTask,
        agent: Uuid,
        result: Value,
    ) -> Result<ReportAnswer> {
        self.succeeded_with_usage(task, agent, result, &Usage::new())
            .await
    }

    /// A success report with what the agent spent under this lease, all told.
    pub async fn succeeded_with_usage(
        &self,
        task: &ClaimedTask,
        agent: Uuid,
        result: Value,
        usage: &Usage,
    ) -> Result<ReportAnswer> {
        self.send_report(Report::Succeeded {
            task: task.task,
            usage: usage.clone(),
            agent,
            token: task.token,
            result,
            traceparent: None,
        })
        .await
    }

    pub async fn failed(
        &self,
        task: &ClaimedTask,
        agent: Uuid,
        error: ErrorReport,
    ) -> Result<ReportAnswer> {
        self.failed_with_usage(task, agent, error, &Usage::new())
            .await
    }

    /// A failure report with what the agent spent under this lease, all told.
    pub async fn failed_with_usage(
        &self,
        task: &ClaimedTask,
        agent: Uuid,
        error: ErrorReport,
        usage: &Usage,
    ) -> Result<ReportAnswer> {
        self.send_report(Report::Failed {
            task: task.task,
            usage: usage.clone(),
            agent,
            token: task.token,
            error,
            traceparent: None,
        })
        .await
    }

    pub async fn released(&self, task: &ClaimedTask, agent: Uuid) -> Result<ReportAnswer> {
        self.send_report(Report::Released {
            task: task.task,
            agent,
            token: task.token,
            traceparent: None,
        })
        .await
    }

    /// Decomposition: adds sub-tasks to the workflow of the task this agent executes.
    pub async fn subtasks(
        &self,
        task: &ClaimedTask,
        agent: Uuid,
        tasks: &[TaskSpec],
    ) -> Result<WorkflowCreated> {
        let body = SubtasksReport {
            agent,
            token: task.token,
            tasks: tasks.to_vec(),
        };
        self.post(&format!("/v1/tasks/{}/subtasks", task.task), &body)
            .await
    }

    /// Sends many reports in one request (`POST /v1/reports`): each is applied as its own
    /// request would be, and answered on its own, in order. `Err` only when the request as a
    /// whole failed (then none was applied, or the answer was lost: resend them).
    pub async fn reports(&self, reports: &[Report]) -> Result<Vec<Result<ReportAnswer>>> {
        let body = ReportBatch {
            reports: reports.to_vec(),
        };
        let answered: ReportBatchAnswer = self.post("/v1/reports", &body).await?;
        if answered.answers.len() != reports.len() {
            return Err(ClientError::Decode {
                url: format!("{}/v1/reports", self.base),
                detail: format!(
                    "{} answers to {} reports",
                    answered.answers.len(),
                    reports.len()
                ),
            });
        }
        Ok(answered
            .answers
            .into_iter()
            .map(|o| match (o.answer, o.problem) {
                (Some(answer), _) => Ok(answer),
                (None, Some(problem)) => Err(ClientError::Api(Box::new(problem))),
                (None, None) => Err(ClientError::Decode {
                    url: format!("{}/v1/reports", self.base),
                    detail: format!("report on {} answered neither answer nor problem", o.task),
                }),
            })
            .collect())
    }

    /// This client, sending its reports (started, heartbeat, succeeded, failed, released) in
    /// batches: see the `batch` module. Starts a task on the current Tokio runtime.
    pub fn batching_reports(&self) -> Client {
        let mut plain = self.clone();
        plain.batcher = None;
        let mut batching = self.clone();
        batching.batcher = Some(std::sync::Arc::new(batch::Batcher::start(plain)));
        batching
    }

    /// One report, batched or as its own request (`POST /v1/tasks/{task}/{report}`).
    pub(crate) async fn send_report(&self, report: Report) -> Result<ReportAnswer> {
        if let Some(batcher) = &self.batcher {
            return batcher.send(report).await;
        }
        let task = report.task();
        let mut body =
            serde_json::to_value(&report).map_err(|e| ClientError::Local(e.to_string()))?;
        let what = body
            .as_object_mut()
            .and_then(|o| {
                o.remove("task");
                o.remove("report")
            })
            .and_then(|w| w.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.post(&format!("/v1/tasks/{task}/{what}"), &body).await
    }
}

/// What [`Client::put_trigger`] stored, and whether it created the trigger (`false`: it
/// replaced one of that name).
#[derive(Clone, Debug, Serialize)]
pub struct PutTrigger {
    #[serde(flatten)]
    pub trigger: TriggerView,
    pub created: bool,
}

/// `name` as one path segment: every byte but letters, digits and `-_.:~` percent-encoded (names
/// may hold `/`).
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.:~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn registration(
    id: Option<Uuid>,
    name: &str,
    capabilities: &[Capability],
    concurrency: u32,
) -> RegisterAgent {
    RegisterAgent {
        id,
        name: name.to_owned(),
        capabilities: capabilities.iter().cloned().collect(),
        concurrency: Some(concurrency),
    }
}

fn problem(status: StatusCode, body: &[u8], url: &str) -> ClientError {
    match serde_json::from_slice::<ProblemDoc>(body) {
        Ok(p) => ClientError::Api(Box::new(p)),
        Err(_) => ClientError::Api(Box::new(ProblemDoc {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            code: "http_error".into(),
            detail: format!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
            field: None,
            expected: None,
            rule: None,
            state: None,
            cycle: None,
        })),
    }
}

/// The live stream of transitions (Server-Sent Events).
pub struct Events {
    res: reqwest::Response,
    buf: String,
    url: String,
    last_id: Option<String>,
}

/// One item of the event stream.
#[derive(Clone, Debug)]
pub enum StreamItem {
    Transition(TransitionEventView),
    /// A workflow ended (every task of it has).
    Workflow(WorkflowEventView),
    /// The client fell behind; this many events were skipped.
    Lagged(u64),
}

impl Events {
    /// The id of the last transition received, to resume from with [`Client::events_after`].
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The next item, or `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<Result<StreamItem>> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = if e.trim() == "lagged" {
                            "lagged"
                        } else if e.trim() == "transition" {
                            "transition"
                        } else if e.trim() == "workflow" {
                            "workflow"
                        } else {
                            "other"
                        };
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    } else if let Some(id) = line.strip_prefix("id:") {
                        self.last_id = Some(id.trim().to_owned());
                    }
                }
                match event {
                    "transition" => {
                        return Some(
                            serde_json::from_str(&data)
                                .map(StreamItem::Transition)
                                .map_err(|e| ClientError::Decode {
                                    url: self.url.clone(),
                                    detail: e.to_string(),
                                }),
                        )
                    }
                    "lagged" => {
                        return Some(Ok(StreamItem::Lagged(data.trim().parse().unwrap_or(0))))
                    }
                    "workflow" => {
                        return Some(
                            serde_json::from_str(&data)
                                .map(StreamItem::Workflow)
                                .map_err(|e| ClientError::Decode {
                                    url: self.url.clone(),
                                    detail: e.to_string(),
                                }),
                        )
                    }
                    _ => continue,
                }
            }
            match self.res.chunk().await {
                Ok(Some(chunk)) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(None) => return None,
                Err(e) => {
                    return Some(Err(ClientError::Transport {
                        url: self.url.clone(),
                        source: std::sync::Arc::new(e),
                    }))
                }
            }
        }
    }
}

/// `limit=…&after=…` of a list by name, the name percent-encoded.
fn names_query(after: Option<&str>, limit: usize) -> String {
    match after {
        Some(a) => format!("limit={limit}&after={}", segment(a)),
        None => format!("limit={limit}"),
    }
}

/// `after=…&limit=…`, each only if given.
fn page_query(after: Option<String>, limit: Option<usize>) -> String {
    let mut query = Vec::new();
    if let Some(a) = after {
        query.push(format!("after={a}"));
    }
    if let Some(l) = limit {
        query.push(format!("limit={l}"));
    }
    query.join("&")
}
