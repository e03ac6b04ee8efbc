-- What agents spent, summed per workflow and unit (millionths of a unit), in the transaction of
-- each report that added to it; and the budgets a workflow sets (JSON, `unit → {limit,
-- policy}`; NULL for none).
CREATE TABLE workflow_usage (
    workflow_id BLOB NOT NULL,
    unit        TEXT NOT NULL,
    micros      INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, unit)
) WITHOUT ROWID;

ALTER TABLE workflows ADD COLUMN budgets TEXT;

-- Failed tasks with a retry scheduled (a timer), per workflow: counts tell them from the tasks
-- that failed for good.
CREATE INDEX tasks_retrying ON tasks (workflow_id) WHERE state = 'failed' AND timer_at IS NOT NULL;
