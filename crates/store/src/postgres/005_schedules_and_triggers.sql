-- Baton store, schema version 5 (PostgreSQL): schedules and triggers.

-- `spec` is the schedule as submitted (JSON); `version` guards every change (compare-and-set).
CREATE TABLE schedules (
    name          text PRIMARY KEY,
    spec          text NOT NULL,
    paused        boolean NOT NULL,
    next_fire_at  bigint NOT NULL,
    last_tick_at  bigint,
    last_workflow uuid,
    version       bigint NOT NULL,
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;

-- Triggers: named workflow templates that a request submits (`template` is JSON).
CREATE TABLE triggers (
    name       text PRIMARY KEY,
    template   text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
);
