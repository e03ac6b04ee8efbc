-- Each workflow's tasks per state, kept as `state_counts` is for the whole store and written
-- once per batch, so that the index of a workflow's tasks need not hold their state: with it,
-- every transition moved the task's entry in that index (a delete and an insert).
CREATE TABLE workflow_counts (
    workflow_id BLOB NOT NULL,
    state       TEXT NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, state)
) WITHOUT ROWID;
INSERT INTO workflow_counts (workflow_id, state, n)
    SELECT workflow_id, state, count(*) FROM tasks GROUP BY workflow_id, state;
DROP INDEX tasks_by_workflow;
CREATE INDEX tasks_by_workflow ON tasks (workflow_id, id);
