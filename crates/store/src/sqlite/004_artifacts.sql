-- Baton store, schema version 3 (SQLite): artifacts. Their bytes are files beside the
-- database (`<database>-artifacts/sha256/<2 hex>/<64 hex>`); these rows say which exist and
-- which tasks refer to them.

-- One row per artifact whose file is in place. `uploaded_at` is its latest upload (ms): an
-- unreferenced artifact is swept once that is older than the grace period. `referenced`
-- turns 1 with its first reference and stays so (tasks are never deleted).
CREATE TABLE artifacts (
    sha256       TEXT PRIMARY KEY,
    size         INTEGER NOT NULL,
    content_type TEXT,
    uploaded_at  INTEGER NOT NULL,
    referenced   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
-- The sweep's candidates, oldest first, without reading referenced artifacts.
CREATE INDEX artifacts_unreferenced ON artifacts (uploaded_at) WHERE referenced = 0;

-- Which task refers to which artifact (in its input, its compensation's input or its result),
-- written in the transaction that stores the task or its result.
CREATE TABLE artifact_refs (
    artifact TEXT NOT NULL,
    task_id  BLOB NOT NULL,
    PRIMARY KEY (artifact, task_id)
) WITHOUT ROWID;
