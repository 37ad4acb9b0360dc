-- Suspended jobs (`waiting`) are due again at `run_at` or when woken through `wait_key`.
ALTER TABLE jobs ADD COLUMN wait_key TEXT;
CREATE INDEX jobs_waiting ON jobs (tenant_id, wait_key) WHERE status = 'waiting';
DROP INDEX jobs_due;
CREATE INDEX jobs_due ON jobs (priority DESC, run_at, id) WHERE status IN ('queued', 'failed', 'waiting');

-- The steps of a pipeline job, persisted as each finishes so a resumed job never repeats one.
CREATE TABLE pipeline_steps (
    job_id       TEXT NOT NULL REFERENCES jobs (id),
    step_id      TEXT NOT NULL,
    tenant_id    TEXT NOT NULL,
    position     INTEGER NOT NULL,
    tool         TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    input        TEXT,
    output       TEXT,
    error        TEXT,
    resume_state TEXT,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    PRIMARY KEY (job_id, step_id)
);

-- Model tokens used per tenant and month (UTC, `YYYY-MM`), for usage reports and budgets.
CREATE TABLE llm_usage (
    tenant_id          TEXT NOT NULL,
    month              TEXT NOT NULL,
    prompt_tokens      BIGINT NOT NULL DEFAULT 0,
    completion_tokens  BIGINT NOT NULL DEFAULT 0,
    total_tokens       BIGINT NOT NULL DEFAULT 0,
    requests           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month)
);
