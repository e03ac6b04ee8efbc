-- Baton store, schema version 1 (PostgreSQL). Runs in the migration transaction, with the
-- store's schema first on the search_path.
--
-- Text that is compared or sorted (keys, states, capability sets, names) uses the "C"
-- collation: byte order, the same as SQLite's, whatever the database's default collation.
-- JSON is stored as text: it is written and read whole, never queried inside.

-- The store's own facts: `application` = 'baton' and `schema_version`.
CREATE TABLE baton_meta (
    key   text COLLATE "C" PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE workflows (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    idempotency_key text COLLATE "C" UNIQUE,
    request_hash    text NOT NULL,
    created_at      bigint NOT NULL
);

-- One row per task. `snapshot` is the task as JSON without its spec; the other columns are
-- derived from it for the indexes below.
CREATE TABLE tasks (
    id          uuid PRIMARY KEY,
    workflow_id uuid NOT NULL,
    key         text COLLATE "C" NOT NULL,
    state       text COLLATE "C" NOT NULL,
    version     bigint NOT NULL,
    priority    integer NOT NULL,
    capset      text COLLATE "C" NOT NULL,
    ready_at    bigint,
    timer_at    bigint,
    lease_agent uuid,
    deps_open   integer NOT NULL,
    updated_at  bigint NOT NULL,
    snapshot    text NOT NULL,
    UNIQUE (workflow_id, key)
);

-- Claims: the best pending task per capability set, without touching any other row.
CREATE INDEX tasks_ready ON tasks (capset, priority DESC, ready_at, id) WHERE state = 'pending';
-- The watchdog: the next deadline or retry time.
CREATE INDEX tasks_timers ON tasks (timer_at, id) WHERE timer_at IS NOT NULL;
-- Blocked tasks whose dependencies all completed.
CREATE INDEX tasks_released ON tasks (id) WHERE state = 'blocked' AND deps_open = 0;
-- Listing and counting by state, globally and per workflow.
CREATE INDEX tasks_by_state ON tasks (state, id);
CREATE INDEX tasks_by_workflow ON tasks (workflow_id, state, id);
-- A dead agent's tasks.
CREATE INDEX tasks_by_agent ON tasks (lease_agent, id) WHERE lease_agent IS NOT NULL;

-- The immutable spec (with the input), written once.
CREATE TABLE task_specs (
    task_id uuid PRIMARY KEY,
    spec    text NOT NULL
);

CREATE TABLE edges (
    dependency uuid NOT NULL,
    dependent  uuid NOT NULL,
    PRIMARY KEY (dependency, dependent)
);
CREATE INDEX edges_by_dependent ON edges (dependent, dependency);

-- Append-only: every accepted event of every task.
CREATE TABLE history (
    task_id       uuid NOT NULL,
    seq           bigint NOT NULL,
    at            bigint NOT NULL,
    actor         text NOT NULL,
    event         text NOT NULL,
    fencing_token bigint,
    payload       text NOT NULL,
    PRIMARY KEY (task_id, seq)
);

-- Effects of committed transitions that the engine has not yet carried out.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    task_id    uuid NOT NULL,
    effect     text NOT NULL,
    created_at bigint NOT NULL
);

-- Tasks per state, maintained in the same transactions as the tasks. Each writer connection
-- adds its batch's changes to its own shard, so concurrent commits do not queue on one row;
-- the count of a state is the sum over its shards.
CREATE TABLE state_counts (
    state text COLLATE "C" NOT NULL,
    shard integer NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (state, shard)
);

-- Every capability set some task requires: claims look up those an agent satisfies.
CREATE TABLE capsets (
    capset text COLLATE "C" PRIMARY KEY
);

CREATE TABLE agents (
    id            uuid PRIMARY KEY,
    name          text COLLATE "C" NOT NULL,
    capabilities  text NOT NULL,
    concurrency   bigint NOT NULL,
    registered_at bigint NOT NULL,
    last_seen     bigint NOT NULL
);
