-- Tasks waiting for a signal (`GET /v1/waiting`, signal delivery) read through indexes of
-- their own, ordered by id as the lists page, rather than a range of the claim index sorted
-- per page or, under a generic plan, a scan of every task. The predicate is the one the
-- queries state, word for word (`WAITING` in `postgres/signals.rs`), so that a cached
-- statement's generic plan can use them too; `!signal:` is `codec::SIGNAL_CAPSET`.
CREATE INDEX tasks_waiting ON tasks (id)
    WHERE state = 'pending' AND ready_at IS NOT NULL AND starts_with(capset, '!signal:');
CREATE INDEX tasks_waiting_by_workflow ON tasks (workflow_id, id)
    WHERE state = 'pending' AND ready_at IS NOT NULL AND starts_with(capset, '!signal:');
