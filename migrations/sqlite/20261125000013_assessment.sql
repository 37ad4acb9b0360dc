-- Case assessment pipelines, and the token usage and cost of every model call.

-- The job of the assessment pipeline a case waits for (state 'assessing'), or ran.
ALTER TABLE cases ADD COLUMN assessment_job_id TEXT;
CREATE INDEX cases_assessing ON cases (created_at) WHERE state = 'assessing';

-- Which task's pipeline assesses a tenant's cases of a type when they arrive.
CREATE TABLE case_assessments (
    tenant_id   TEXT NOT NULL,
    case_type   TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, case_type)
);

-- One row per answered model call (chat or embeddings), next to the monthly totals in llm_usage:
-- what reports per task, case, model and day are made of.
CREATE TABLE llm_calls (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    job_id             TEXT,
    task_id            TEXT,
    case_id            TEXT,
    -- chat or embed
    kind               TEXT NOT NULL,
    model              TEXT NOT NULL,
    prompt_tokens      INTEGER NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    total_tokens       INTEGER NOT NULL,
    -- Millionths of a US dollar from LLM_PRICES; NULL when the model has no price.
    cost_micros        INTEGER,
    created_at         TEXT NOT NULL
);
CREATE INDEX llm_calls_tenant_time ON llm_calls (tenant_id, created_at);
CREATE INDEX llm_calls_case ON llm_calls (tenant_id, case_id) WHERE case_id IS NOT NULL;
