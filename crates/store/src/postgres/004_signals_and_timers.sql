-- Baton store, schema version 4 (PostgreSQL): signals, and timers on blocked tasks.

-- A released task that waits blocked for a timer (a delay or a sleep) has its `timer_at` set:
-- it is not released again.
DROP INDEX tasks_released;
CREATE INDEX tasks_released ON tasks (id) WHERE state = 'blocked' AND deps_open = 0 AND timer_at IS NULL;

-- Signals sent to workflows. `delivered_at` is set in the commit of the first `signal_received`
-- transition that takes it; until then it is kept for the next task that waits for `name`.
CREATE TABLE signals (
    id              bigserial PRIMARY KEY,
    workflow_id     uuid NOT NULL,
    name            text NOT NULL,
    data            text NOT NULL,
    reject          text,
    sent_by         text NOT NULL,
    idempotency_key text,
    request_hash    text NOT NULL,
    sent_at         bigint NOT NULL,
    delivered_at    bigint
);
CREATE INDEX signals_by_workflow ON signals (workflow_id, id);
CREATE UNIQUE INDEX signals_by_key ON signals (workflow_id, name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX signals_kept ON signals (workflow_id, name, id) WHERE delivered_at IS NULL;
