-- The call depth of the pipeline step that raised the case (0 when a person or the API did), so
-- the events about it count toward the depth limit and a loop through cases stops.
ALTER TABLE cases ADD COLUMN call_depth INTEGER NOT NULL DEFAULT 0;
