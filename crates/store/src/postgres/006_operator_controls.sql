-- Baton store, schema version 6 (PostgreSQL): operators in control.

-- A paused pending task has no `ready_at`: claims and signal deliveries pass it by without
-- reading it.
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (capset, priority DESC, ready_at, id)
    WHERE state = 'pending' AND ready_at IS NOT NULL;

-- Whether an operator has paused the task (in whatever state): counted through its own small
-- index.
ALTER TABLE tasks ADD COLUMN paused boolean NOT NULL DEFAULT false;
CREATE INDEX tasks_paused ON tasks (workflow_id) WHERE paused;

-- A paused workflow's pause (JSON: by, reason, at); NULL while it runs.
ALTER TABLE workflows ADD COLUMN paused text;

-- One row per operator action (pause, resume, skip, fail, rerun, cancel, retry, signal),
-- written in the commit of the transitions it caused. `detail` is JSON.
CREATE TABLE audit (
    id          bigserial PRIMARY KEY,
    at          int8 NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    workflow_id uuid,
    task_id     uuid,
    reason      text NOT NULL,
    detail      text NOT NULL
);
CREATE INDEX audit_by_actor ON audit (actor, id);
CREATE INDEX audit_by_workflow ON audit (workflow_id, id);
