-- Baton store, schema version 2 (PostgreSQL): artifacts, stored in the database so that every
-- node serves them: a row per artifact and its bytes in chunks of at most 1 MiB.

-- `uploaded_at` is its latest upload (ms): an unreferenced artifact is swept once that is older
-- than the grace period. `referenced` turns true with its first reference and stays so (tasks
-- are never deleted).
CREATE TABLE artifacts (
    sha256       text COLLATE "C" PRIMARY KEY,
    size         bigint NOT NULL,
    content_type text,
    uploaded_at  bigint NOT NULL,
    referenced   boolean NOT NULL DEFAULT false
);
-- The sweep's candidates, oldest first, without reading referenced artifacts.
CREATE INDEX artifacts_unreferenced ON artifacts (uploaded_at) WHERE NOT referenced;

CREATE TABLE artifact_chunks (
    sha256 text COLLATE "C" NOT NULL REFERENCES artifacts (sha256) ON DELETE CASCADE,
    seq    integer NOT NULL,
    data   bytea NOT NULL,
    PRIMARY KEY (sha256, seq)
);

-- Which task refers to which artifact, written in the transaction that stores the task or its
-- result. The foreign key makes a reference and the sweep's delete of its artifact exclude
-- each other: a reference written first keeps the artifact (the sweep rechecks `referenced`
-- once the row is free); a delete committed first makes the reference fail.
CREATE TABLE artifact_refs (
    artifact text COLLATE "C" NOT NULL REFERENCES artifacts (sha256),
    task_id  uuid NOT NULL,
    PRIMARY KEY (artifact, task_id)
);
