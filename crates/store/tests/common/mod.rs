//! Fixtures: tasks built through the real lifecycle core, workflows as submit batches, and
//! helpers that apply an event to a stored task the way the engine will.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use baton_core::*;
use baton_store::*;
use serde_json::json;
use uuid::Uuid;

pub mod require;

pub const T0: Timestamp = Timestamp(1_700_000_000_000);

pub fn at(ms: u64) -> Timestamp {
    T0.plus_ms(ms)
}

pub fn caps(names: &[&str]) -> BTreeSet<Capability> {
    names.iter().map(|&n| Capability::from(n)).collect()
}

pub fn agent(n: u128) -> AgentId {
    AgentId(Uuid::from_u128(0xa9e0 + n))
}

/// One task of a test workflow.
pub struct Def<'a> {
    pub key: &'a str,
    pub deps: &'a [&'a str],
    pub caps: &'a [&'a str],
    pub priority: i32,
}

pub fn def<'a>(key: &'a str, deps: &'a [&'a str]) -> Def<'a> {
    Def {
        key,
        deps,
        caps: &["work"],
        priority: 0,
    }
}

/// A workflow ready to submit, with the ids of its tasks by key.
pub struct Flow {
    pub id: WorkflowId,
    pub ids: HashMap<String, TaskId>,
    pub batch: SubmitBatch,
}

impl Flow {
    pub fn id(&self, key: &str) -> TaskId {
        self.ids[key]
    }
}

pub fn spec(d: &Def<'_>) -> TaskSpec {
    TaskSpec {
        depends_on: d.deps.iter().map(|&k| TaskKey::from(k)).collect(),
        capabilities: caps(d.caps),
        input: json!({"key": d.key}),
        priority: d.priority,
        timeouts: Timeouts {
            schedule_to_start_ms: None,
            start_ms: Some(1_000),
            start_to_close_ms: Some(10_000),
            heartbeat_ms: Some(2_000),
        },
        ..TaskSpec::new(d.key)
    }
}

pub fn workflow(defs: &[Def<'_>], idempotency_key: Option<&str>) -> Flow {
    let tasks: Vec<Uuid> = defs.iter().map(|_| Uuid::now_v7()).collect();
    workflow_with_ids(defs, idempotency_key, Uuid::now_v7(), &tasks)
}

/// As [`workflow`], with these ids: the workflow's, and its tasks' in the order of `defs`.
pub fn workflow_with_ids(
    defs: &[Def<'_>],
    idempotency_key: Option<&str>,
    workflow: Uuid,
    tasks: &[Uuid],
) -> Flow {
    let id = WorkflowId(workflow);
    let ids: HashMap<String, TaskId> = defs
        .iter()
        .zip(tasks)
        .map(|(d, t)| (d.key.to_owned(), TaskId(*t)))
        .collect();
    let mut tasks = Vec::new();
    let mut edges = Vec::new();
    for d in defs {
        let sub = Submission {
            task: ids[d.key],
            workflow: id,
            spec: Arc::new(spec(d)),
            completed: Vec::new(),
            seed: 7,
            input: None,
            unresolved: None,
        };
        for dep in d.deps {
            edges.push(Edge {
                dependency: ids[*dep],
                dependent: ids[d.key],
            });
        }
        tasks.push(NewTask::submitted(sub, T0).expect("valid spec").0);
    }
    Flow {
        id,
        ids,
        batch: SubmitBatch {
            workflow: WorkflowRef::New(NewWorkflow {
                budgets: Default::default(),
                id,
                name: "test".into(),
                idempotency_key: idempotency_key.map(str::to_owned),
                request_hash: format!("{} tasks", defs.len()),
                created_at: T0,
                outputs: None,
                labels: Default::default(),
            }),
            tasks,
            edges,
            transitions: Vec::new(),
        },
    }
}

/// The diamond `a -> (b, c) -> d`.
pub fn diamond() -> Flow {
    workflow(
        &[
            def("a", &[]),
            def("b", &["a"]),
            def("c", &["a"]),
            def("d", &["b", "c"]),
        ],
        None,
    )
}

/// The record of applying `event` to `task` at `now` through the core.
pub fn record(task: &Task, event: Event, now: Timestamp) -> TransitionRecord {
    TransitionRecord::apply(task, event, now).unwrap_or_else(|r| panic!("{r}"))
}

/// Loads the task, applies `event` through the core, stores the transition.
pub async fn advance<S: Store>(store: &S, id: TaskId, event: Event, now: Timestamp) -> Task {
    advance_releasing(store, id, event, now).await.0
}

/// [`advance`], also returning the dependents the store released in the same commit, in id
/// order.
pub async fn advance_releasing<S: Store>(
    store: &S,
    id: TaskId,
    event: Event,
    now: Timestamp,
) -> (Task, Vec<TaskId>) {
    let task = store.task(id).await.unwrap().expect("task exists");
    let rec = record(&task, event, now);
    let task = rec.task.clone();
    let released = store.apply(rec).await.unwrap();
    let mut ids: Vec<TaskId> = released.iter().map(|r| r.transition.task.id).collect();
    ids.sort();
    (task, ids)
}

pub async fn claim_one<S: Store>(store: &S, agent: AgentId, now: Timestamp) -> Option<Task> {
    store
        .claim(ClaimRequest {
            start: false,
            agent,
            capabilities: caps(&["work"]),
            leases: vec![LeaseId(Uuid::now_v7())],
            now,
            max_held: None,
        })
        .await
        .unwrap()
        .pop()
}

/// Claims, starts and completes the task with the given id, which must be the one claimed.
pub async fn run_to_completion<S: Store>(store: &S, id: TaskId, now: Timestamp) -> Task {
    complete_releasing(store, id, now).await.0
}

/// [`run_to_completion`], also returning the dependents the completion released in its
/// commit, in id order.
pub async fn complete_releasing<S: Store>(
    store: &S,
    id: TaskId,
    now: Timestamp,
) -> (Task, Vec<TaskId>) {
    let claimed = claim_one(store, agent(1), now)
        .await
        .expect("a task to claim");
    assert_eq!(claimed.id, id, "claimed the expected task");
    let token = claimed.fencing_token;
    advance(
        store,
        id,
        Event::ExecutionStarted {
            by_claim: false,
            agent: agent(1),
            token,
        },
        now,
    )
    .await;
    advance_releasing(
        store,
        id,
        Event::ExecutionSucceeded {
            usage: Default::default(),
            agent: agent(1),
            token,
            result: Some(json!({"done": id.to_string()})),
        },
        now,
    )
    .await
}

/// Sends `dependencies_met` to every released blocked task, as the engine does.
pub async fn release_blocked<S: Store>(store: &S, now: Timestamp) -> Vec<TaskId> {
    let released = store.released_blocked(100).await.unwrap();
    for id in &released {
        let task = store.task(*id).await.unwrap().unwrap();
        let mut results = HashMap::new();
        for dep in store.dependencies(*id).await.unwrap() {
            if let Some(State::Completed { result, .. }) =
                store.task(dep.id).await.unwrap().map(|t| t.state)
            {
                results.insert(dep.key, result);
            }
        }
        let (input, unresolved) = if template::is_template(&task.spec.input) {
            match template::resolve(&task.spec.input, "input", &|k: &TaskKey| results.get(k)) {
                Ok(input) => (Some(input), None),
                Err(unresolved) => (None, Some(unresolved)),
            }
        } else {
            (None, None)
        };
        let event = Event::DependenciesMet {
            completed: task.dependencies.clone(),
            input,
            unresolved,
            results: None,
        };
        store.apply(record(&task, event, now)).await.unwrap();
    }
    released
}

pub fn sorted(mut ids: Vec<TaskId>) -> Vec<TaskId> {
    ids.sort();
    ids
}

/// Raw access to a store's `history` and `tasks` rows: what a row holds, rows written as an
/// older version of Baton wrote them, and rows damaged.
pub trait HistoryRows {
    /// The payload of entry `seq` of `task`, as stored.
    async fn payload(&self, task: TaskId, seq: u64) -> String;
    /// Overwrites the payload of entry `seq` of `task`.
    async fn set_payload(&self, task: TaskId, seq: u64, payload: &str);
    /// Overwrites the stored snapshot of `task` (its row in `tasks`).
    async fn set_snapshot(&self, task: TaskId, snapshot: &str);
}

/// A SQLite store's directory (its file is `baton.db`).
impl HistoryRows for tempfile::TempDir {
    async fn payload(&self, task: TaskId, seq: u64) -> String {
        let db = rusqlite::Connection::open(self.path().join("baton.db")).unwrap();
        db.query_row(
            "SELECT payload FROM history WHERE task_id = ?1 AND seq = ?2",
            rusqlite::params![task.0, seq as i64],
            |r| r.get(0),
        )
        .unwrap()
    }

    async fn set_payload(&self, task: TaskId, seq: u64, payload: &str) {
        let db = rusqlite::Connection::open(self.path().join("baton.db")).unwrap();
        let n = db
            .execute(
                "UPDATE history SET payload = ?3 WHERE task_id = ?1 AND seq = ?2",
                rusqlite::params![task.0, seq as i64, payload],
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    async fn set_snapshot(&self, task: TaskId, snapshot: &str) {
        let db = rusqlite::Connection::open(self.path().join("baton.db")).unwrap();
        let n = db
            .execute(
                "UPDATE tasks SET snapshot = ?2 WHERE id = ?1",
                rusqlite::params![task.0, snapshot],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
}

impl HistoryRows for pg::Schema {
    async fn payload(&self, task: TaskId, seq: u64) -> String {
        let row = self
            .sql()
            .await
            .query_one(
                "SELECT payload FROM history WHERE task_id = $1 AND seq = $2",
                &[&task.0, &(seq as i64)],
            )
            .await
            .unwrap();
        row.get(0)
    }

    async fn set_payload(&self, task: TaskId, seq: u64, payload: &str) {
        let n = self
            .sql()
            .await
            .execute(
                "UPDATE history SET payload = $3 WHERE task_id = $1 AND seq = $2",
                &[&task.0, &(seq as i64), &payload],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    async fn set_snapshot(&self, task: TaskId, snapshot: &str) {
        let n = self
            .sql()
            .await
            .execute(
                "UPDATE tasks SET snapshot = $2 WHERE id = $1",
                &[&task.0, &snapshot],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}

/// PostgreSQL test isolation: a schema per test, dropped with everything in it at the end.
pub mod pg {
    use baton_store::postgres::{PgOptions, PgStore};
    use tokio_postgres::NoTls;
    use uuid::Uuid;

    pub use super::require::postgres_url as url;

    /// A schema of the test's own, dropped (with everything in it) when the guard goes.
    pub struct Schema(pub String);

    impl Schema {
        /// A fresh schema; `None` when no server answers (the test is skipped: return).
        pub fn new() -> Option<Schema> {
            Schema::named(format!("baton_t_{}", Uuid::now_v7().simple()))
        }

        pub fn named(name: String) -> Option<Schema> {
            super::require::postgres().map(|_| Schema(name))
        }

        pub fn options(&self) -> PgOptions {
            PgOptions {
                schema: Some(self.0.clone()),
                pool_size: 4,
            }
        }

        pub async fn open(&self) -> PgStore {
            PgStore::open_with(&url(), self.options())
                .await
                .unwrap_or_else(|e| panic!("open {}: {e}", self.0))
        }

        /// A plain connection whose search_path is the schema.
        pub async fn sql(&self) -> tokio_postgres::Client {
            let (client, conn) = tokio_postgres::connect(&url(), NoTls).await.unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(&format!("SET search_path TO \"{}\"", self.0))
                .await
                .unwrap();
            client
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let name = self.0.clone();
            // A runtime of its own: the test's runtime may be shutting down.
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let (client, conn) = tokio_postgres::connect(&url(), NoTls).await.ok()?;
                    tokio::spawn(conn);
                    client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .await
                        .ok()
                })
            })
            .join();
            if !matches!(dropped, Ok(Some(()))) {
                eprintln!("could not drop test schema {}", self.0);
            }
        }
    }
}

/// `flow` with the input of task `key` replaced (its submission rebuilt).
pub fn with_input(mut flow: Flow, key: &str, input: serde_json::Value) -> Flow {
    let i = flow
        .batch
        .tasks
        .iter()
        .position(|t| t.task.spec.key.as_str() == key)
        .unwrap();
    let task = &flow.batch.tasks[i].task;
    let sub = Submission {
        task: task.id,
        workflow: flow.id,
        spec: Arc::new(TaskSpec {
            input,
            ..(*task.spec).clone()
        }),
        completed: Vec::new(),
        seed: 7,
        input: None,
        unresolved: None,
    };
    flow.batch.tasks[i] = NewTask::submitted(sub, T0).unwrap().0;
    flow
}
