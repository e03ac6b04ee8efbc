-- A workflow's declared outputs: templates over its tasks' results, as JSON (NULL: none).
ALTER TABLE workflows ADD COLUMN outputs TEXT;
