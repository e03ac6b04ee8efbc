-- What agents spent, summed per workflow and unit (millionths of a unit), in the transaction of
-- each report that added to it; and the budgets a workflow sets (JSON, `unit → {limit,
-- policy}`; NULL for none).
CREATE TABLE workflow_usage (
    workflow_id uuid   NOT NULL,
    unit        text   NOT NULL,
    micros      bigint NOT NULL,
    PRIMARY KEY (workflow_id, unit)
);

ALTER TABLE workflows ADD COLUMN budgets text;

-- Failed tasks with a retry scheduled (a timer), per workflow: counts tell them from the tasks
-- that failed for good.
CREATE INDEX tasks_retrying ON tasks (workflow_id) WHERE state = 'failed' AND timer_at IS NOT NULL;
