-- Baton store, schema version 1 (SQLite).

CREATE TABLE workflows (
    id              BLOB PRIMARY KEY,
    name            TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    request_hash    TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);

-- One row per task. `snapshot` is the task as JSON without its spec; the other columns are
-- derived from it for the indexes below.
CREATE TABLE tasks (
    id          BLOB PRIMARY KEY,
    workflow_id BLOB NOT NULL,
    key         TEXT NOT NULL,
    state       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    priority    INTEGER NOT NULL,
    capset      TEXT NOT NULL,
    ready_at    INTEGER,
    timer_at    INTEGER,
    lease_agent BLOB,
    deps_open   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    snapshot    TEXT NOT NULL,
    UNIQUE (workflow_id, key)
);

-- Claims: the best pending task per capability set, without touching any other row.
CREATE INDEX tasks_ready ON tasks (capset, priority DESC, ready_at, id) WHERE state = 'pending';
-- The watchdog: the next deadline or retry time.
CREATE INDEX tasks_timers ON tasks (timer_at) WHERE timer_at IS NOT NULL;
-- Blocked tasks by open dependencies: those at zero are released.
CREATE INDEX tasks_released ON tasks (deps_open) WHERE state = 'blocked';
-- Listing and counting by state, globally and per workflow.
CREATE INDEX tasks_by_state ON tasks (state, id);
CREATE INDEX tasks_by_workflow ON tasks (workflow_id, state, id);
-- A dead agent's tasks.
CREATE INDEX tasks_by_agent ON tasks (lease_agent) WHERE lease_agent IS NOT NULL;

-- The immutable spec (with the input), written once.
CREATE TABLE task_specs (
    task_id BLOB PRIMARY KEY,
    spec    TEXT NOT NULL
);

CREATE TABLE edges (
    dependency BLOB NOT NULL,
    dependent  BLOB NOT NULL,
    PRIMARY KEY (dependency, dependent)
) WITHOUT ROWID;
CREATE INDEX edges_by_dependent ON edges (dependent, dependency);

-- Append-only: every accepted event of every task.
CREATE TABLE history (
    task_id       BLOB NOT NULL,
    seq           INTEGER NOT NULL,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    event         TEXT NOT NULL,
    fencing_token INTEGER,
    payload       TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;

-- Effects of committed transitions that the engine has not yet carried out.
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    BLOB NOT NULL,
    effect     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Tasks per state, maintained in the same transactions as the tasks.
CREATE TABLE state_counts (
    state TEXT PRIMARY KEY,
    n     INTEGER NOT NULL
);

-- Every capability set some task requires: claims look up those an agent satisfies.
CREATE TABLE capsets (
    capset TEXT PRIMARY KEY
);

CREATE TABLE agents (
    id            BLOB PRIMARY KEY,
    name          TEXT NOT NULL,
    capabilities  TEXT NOT NULL,
    concurrency   INTEGER NOT NULL,
    registered_at INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL
);
