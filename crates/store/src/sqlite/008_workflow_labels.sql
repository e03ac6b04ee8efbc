-- Workflow labels (`key → value`, at most 16 per workflow), one row per label, written with
-- the workflow. The index lists a label's workflows newest first as a range, however few they
-- are among all workflows (a tenant's, for a token scoped to it).
-- Numbered 008: 007 is another change's (the migrations run in the order of `MIGRATIONS`).
CREATE TABLE workflow_labels (
    workflow_id BLOB NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (workflow_id, key)
) WITHOUT ROWID;

CREATE INDEX workflow_labels_by_label ON workflow_labels (key, value, workflow_id);
