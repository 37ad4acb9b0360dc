-- Claims order by (priority DESC, run_at, id); with id in the index the claim reads the first
-- rows in order instead of sorting every due job.
DROP INDEX jobs_due;
CREATE INDEX jobs_due ON jobs (priority DESC, run_at, id) WHERE status IN ('queued', 'failed');
