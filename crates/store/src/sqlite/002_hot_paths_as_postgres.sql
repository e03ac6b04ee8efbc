-- Baton store, schema version 2 (SQLite): the hot-path indexes PostgreSQL has, so that both
-- backends answer the same queries in the same order straight from an index.

-- Released tasks in id order, as `released_blocked` lists them.
DROP INDEX tasks_released;
CREATE INDEX tasks_released ON tasks (id) WHERE state = 'blocked' AND deps_open = 0;
-- Due timers in (timer_at, id) order: ties come out in a fixed order.
DROP INDEX tasks_timers;
CREATE INDEX tasks_timers ON tasks (timer_at, id) WHERE timer_at IS NOT NULL;
-- A dead agent's tasks, in id order.
DROP INDEX tasks_by_agent;
CREATE INDEX tasks_by_agent ON tasks (lease_agent, id) WHERE lease_agent IS NOT NULL;
