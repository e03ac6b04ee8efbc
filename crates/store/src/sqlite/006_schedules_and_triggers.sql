-- Baton store, schema version 6 (SQLite): schedules and triggers.

-- `spec` is the schedule as submitted (JSON); `version` guards every change (compare-and-set).
CREATE TABLE schedules (
    name          TEXT PRIMARY KEY,
    spec          TEXT NOT NULL,
    paused        INTEGER NOT NULL,
    next_fire_at  INTEGER NOT NULL,
    last_tick_at  INTEGER,
    last_workflow BLOB,
    version       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0;

-- Triggers: named workflow templates that a request submits (`template` is JSON).
CREATE TABLE triggers (
    name       TEXT PRIMARY KEY,
    template   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
