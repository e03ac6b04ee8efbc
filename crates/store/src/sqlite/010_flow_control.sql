-- Flow control: named rate limits, concurrency keys, and pending tasks parked on them.

-- Named rate limits as token buckets. `level` counts `units × per_ms` per unit (each
-- millisecond refills `units` of them), so refills are exact; full at `units × per_ms`.
CREATE TABLE limits (
    key         TEXT PRIMARY KEY,
    units       INTEGER NOT NULL,
    per_ms      INTEGER NOT NULL,
    level       INTEGER NOT NULL,
    refilled_at INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Tasks assigned or executing per concurrency key, changed in the transactions that move them;
-- when a slot was last freed (a task taking it is never stamped assigned before that).
CREATE TABLE concurrency_held (
    key      TEXT PRIMARY KEY,
    held     INTEGER NOT NULL,
    freed_at INTEGER NOT NULL DEFAULT 0
);

-- The task's flow control with its keys filled in (JSON), as of its last transition; NULL
-- without any. A task leaving Assigned or Executing gives back the keys written here.
ALTER TABLE tasks ADD COLUMN flow TEXT;
-- A pending task a claim passed by because one of its keys had no room: that key (`rate:NAME`
-- or `concurrency:KEY`), when claims look at it again, and its `ready_at`, which is NULL
-- meanwhile (so it is out of the claim index). Any transition of the task clears them.
ALTER TABLE tasks ADD COLUMN parked TEXT;
ALTER TABLE tasks ADD COLUMN parked_until INTEGER;
ALTER TABLE tasks ADD COLUMN parked_ready INTEGER;
-- A freed slot of a concurrency key unparks the best task parked on it.
CREATE INDEX tasks_parked ON tasks (parked, priority DESC, parked_ready, id) WHERE parked IS NOT NULL;
-- Claims unpark the tasks whose time came.
CREATE INDEX tasks_parked_until ON tasks (parked_until, id) WHERE parked IS NOT NULL;
