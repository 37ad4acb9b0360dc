-- The durable job queue. `failed` means "will retry at run_at"; `dead` means attempts are exhausted.
CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    kind              TEXT NOT NULL,
    payload           TEXT NOT NULL,
    status            TEXT NOT NULL,
    priority          INTEGER NOT NULL DEFAULT 0,
    run_at            TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    timeout_seconds   INTEGER NOT NULL,
    unique_key        TEXT,
    lease_owner       TEXT,
    lease_expires_at  TEXT,
    last_error        TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    finished_at       TEXT
);
CREATE UNIQUE INDEX jobs_unique_key ON jobs (tenant_id, unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX jobs_due ON jobs (priority DESC, run_at) WHERE status IN ('queued', 'failed');
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_tenant ON jobs (tenant_id, id);

-- Every execution attempt of a job.
CREATE TABLE runs (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    job_id       TEXT NOT NULL REFERENCES jobs (id),
    attempt      INTEGER NOT NULL,
    status       TEXT NOT NULL,
    worker_id    TEXT NOT NULL,
    queued_at    TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    output       TEXT,
    error        TEXT
);
CREATE INDEX runs_job ON runs (job_id, attempt);
CREATE INDEX runs_tenant ON runs (tenant_id, id);
