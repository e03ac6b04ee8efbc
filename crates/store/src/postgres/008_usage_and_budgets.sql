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
