-- Decision policies: one row per version; the highest version of a tenant is in force.
CREATE TABLE policies (
    tenant_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    document    TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

-- Items that need a decision. `amount` is the exact decimal text; `amount_e4` the same value times
-- 10^4 as an integer, only for range filters.
CREATE TABLE cases (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    type               TEXT NOT NULL,
    reference          TEXT NOT NULL,
    amount             TEXT NOT NULL,
    amount_e4          BIGINT NOT NULL,
    currency           TEXT NOT NULL,
    subject            TEXT NOT NULL,
    ai_assessment      TEXT,
    state              TEXT NOT NULL,
    priority           TEXT NOT NULL,
    priority_rank      INTEGER NOT NULL,
    queue              TEXT NOT NULL,
    required_role      TEXT NOT NULL,
    required_rank      INTEGER NOT NULL,
    dual_control       INTEGER NOT NULL,
    sla_hours          INTEGER NOT NULL,
    sla_due_at         TEXT NOT NULL,
    sla_breached_at    TEXT,
    policy_version     INTEGER NOT NULL,
    policy_trace       TEXT NOT NULL,
    submitted_by       TEXT NOT NULL,
    first_decision     TEXT,
    first_decider      TEXT,
    assignee_id        TEXT,
    lease_expires_at   TEXT,
    decision           TEXT,
    decided_at         TEXT,
    idempotency_key    TEXT,
    request_hash       TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE UNIQUE INDEX cases_reference ON cases (tenant_id, type, reference);
CREATE UNIQUE INDEX cases_idempotency ON cases (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX cases_tenant ON cases (tenant_id, id);
CREATE INDEX cases_reviewable ON cases (tenant_id, priority_rank DESC, sla_due_at, id)
    WHERE state IN ('queued', 'in_review', 'awaiting_second_review', 'escalated');
CREATE INDEX cases_sla ON cases (sla_due_at)
    WHERE sla_breached_at IS NULL AND state IN ('queued', 'in_review', 'awaiting_second_review', 'escalated');

-- Everything that happened to a case, oldest first.
CREATE TABLE case_history (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    case_id      TEXT NOT NULL REFERENCES cases (id),
    action       TEXT NOT NULL,
    from_state   TEXT,
    to_state     TEXT NOT NULL,
    actor        TEXT NOT NULL,
    decision     TEXT,
    reason       TEXT,
    notes        TEXT,
    details      TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX case_history_case ON case_history (case_id, id);
CREATE INDEX case_history_decisions ON case_history (tenant_id, created_at) WHERE decision IS NOT NULL;

-- Files attached to cases; the bytes live in the object store under `object_key`.
CREATE TABLE attachments (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL,
    case_id       TEXT NOT NULL REFERENCES cases (id),
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    object_key    TEXT NOT NULL,
    uploaded_by   TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX attachments_case ON attachments (case_id, id);
