-- Fairness: among ready tasks of equal priority, claims take from each fairness group (a
-- task's `fairness_key`, or its workflow) in turn.

-- A ready task's place in line: one after the last its group was given, and never before the
-- latest a claim took, so a group that arrives late joins at the head of the line rather than
-- behind every task waiting. Tasks ready before this migration keep turn 0: they go first.
ALTER TABLE tasks ADD COLUMN turn bigint NOT NULL DEFAULT 0;
-- The last turn each fairness group was given.
CREATE TABLE fair_groups (
    grp  text PRIMARY KEY,
    pass bigint NOT NULL
);
-- The latest turn a claim took (PostgreSQL keeps one row per writer shard; the largest counts).
CREATE TABLE fair_clock (
    shard integer PRIMARY KEY,
    pass  bigint NOT NULL
);

DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (capset, priority DESC, turn, id)
    WHERE state = 'pending' AND ready_at IS NOT NULL;
DROP INDEX tasks_parked;
CREATE INDEX tasks_parked ON tasks (parked, priority DESC, turn, id) WHERE parked IS NOT NULL;
