-- Tasks waiting for a signal (`GET /v1/waiting`, signal delivery) read through indexes of
-- their own, ordered by id as the lists page, rather than every pending task (`tasks_by_state`,
-- SQLite's choice without statistics) or every pending task of the workflow. SQLite uses a partial index only for a
-- query that states its predicate term for term, so the queries write it as it is here
-- (`WAITING` in `sqlite/reads.rs`); `!signal:` is `codec::SIGNAL_CAPSET`, `!signal;` the
-- first `capset` after every one that starts with it.
CREATE INDEX tasks_waiting ON tasks (id)
    WHERE state = 'pending' AND ready_at IS NOT NULL AND capset >= '!signal:' AND capset < '!signal;';
CREATE INDEX tasks_waiting_by_workflow ON tasks (workflow_id, id)
    WHERE state = 'pending' AND ready_at IS NOT NULL AND capset >= '!signal:' AND capset < '!signal;';
