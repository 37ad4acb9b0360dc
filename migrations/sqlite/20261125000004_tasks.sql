-- Scheduled work. `next_run_at` is the next occurrence the scheduler will enqueue (NULL when none).
CREATE TABLE tasks (
    id                      TEXT PRIMARY KEY,
    tenant_id               TEXT NOT NULL,
    title                   TEXT NOT NULL,
    description             TEXT NOT NULL,
    schedule_kind           TEXT NOT NULL,
    schedule_expr           TEXT NOT NULL,
    timezone                TEXT NOT NULL,
    payload                 TEXT NOT NULL,
    priority                INTEGER NOT NULL,
    max_retries             INTEGER NOT NULL,
    timeout_seconds         INTEGER NOT NULL,
    misfire_grace_seconds   INTEGER NOT NULL,
    concurrency             INTEGER NOT NULL,
    status                  TEXT NOT NULL,
    next_run_at             TEXT,
    created_by              TEXT NOT NULL,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);
CREATE INDEX tasks_due ON tasks (next_run_at) WHERE status = 'active';
CREATE INDEX tasks_tenant ON tasks (tenant_id, id);

-- Jobs created for a task occurrence point back at it.
ALTER TABLE jobs ADD COLUMN task_id TEXT;
CREATE INDEX jobs_task ON jobs (task_id, status);
