-- Per-key limits. A job may carry a concurrency key; the key's row in `job_keys` holds its limits
-- (the ones most recently enqueued with it) and is what claimers lock, in key order, so that
-- running counts and recent starts are exact under concurrent claimers.
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE jobs ADD COLUMN dedupe_key TEXT;
-- Running jobs per key, counted by every claim that sees a keyed candidate.
CREATE INDEX jobs_running_key ON jobs (tenant_id, concurrency_key)
    WHERE status = 'running' AND concurrency_key IS NOT NULL;

CREATE TABLE job_keys (
    tenant_id          TEXT NOT NULL,
    key                TEXT NOT NULL,
    -- NULL: no limit of that kind.
    concurrency_limit  INTEGER,
    rate_count         INTEGER,
    rate_per_seconds   INTEGER,
    updated_at         TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- One row per start of a rate-limited key, kept until it leaves the window (a sliding window:
-- at most `rate_count` rows per key are ever live).
CREATE TABLE job_key_starts (
    tenant_id   TEXT NOT NULL,
    key         TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX job_key_starts_key ON job_key_starts (tenant_id, key, expires_at);

-- The first job enqueued with a dedupe key, until its window ends.
CREATE TABLE job_dedupe (
    tenant_id   TEXT NOT NULL,
    key         TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

-- What a task gives the jobs of its occurrences (keys may hold `${params.…}` / `${event.…}`).
ALTER TABLE tasks ADD COLUMN concurrency_key TEXT;
ALTER TABLE tasks ADD COLUMN concurrency_limit INTEGER;
ALTER TABLE tasks ADD COLUMN rate_count INTEGER;
ALTER TABLE tasks ADD COLUMN rate_per_seconds INTEGER;
ALTER TABLE tasks ADD COLUMN dedupe_key TEXT;
ALTER TABLE tasks ADD COLUMN dedupe_window_seconds INTEGER;
