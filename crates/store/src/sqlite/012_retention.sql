-- Retention: finished workflows are deleted a batch at a time, agents after a silence, and
-- rows that only serve live work are pruned (see `crate::retention`).

-- Who first registered each agent (the token's name; `local` for loopback clients without
-- tokens; empty before this was recorded): a registrar may have only so many agents stored.
ALTER TABLE agents ADD COLUMN registered_by TEXT NOT NULL DEFAULT '';
CREATE INDEX agents_by_registrar ON agents (registered_by, id);
-- Agents silent for longer than the agent retention go, the longest silent first.
CREATE INDEX agents_by_last_seen ON agents (last_seen, id);

-- When retention began to delete the workflow (NULL: it is kept). Its tasks go a batch at a
-- time, then it; meanwhile controls and submissions into it are refused and reads skip it.
ALTER TABLE workflows ADD COLUMN deleting INTEGER;
CREATE INDEX workflows_deleting ON workflows (deleting, id) WHERE deleting IS NOT NULL;
-- Retention looks at workflows oldest first: one created after the cutoff cannot have
-- finished before it, so the scan ends there.
CREATE INDEX workflows_by_created ON workflows (created_at, id);
-- Whether a workflow's tasks still have effects to carry out (a compensation to create, say).
CREATE INDEX outbox_by_task ON outbox (task_id);
-- The artifacts a deleted task referred to, which may then be referred to by no task.
CREATE INDEX artifact_refs_by_task ON artifact_refs (task_id, artifact);
-- `artifacts.referenced` turns back to false when retention deletes the last task referring to
-- an artifact: the sweep then deletes it, once its latest upload is older than the grace.
