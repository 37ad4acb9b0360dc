-- Review desk depth: maker-checker dual control, holds, requests for information, reason codes,
-- risk levels and policy flags, and a record of who viewed which case.

-- Dual control is now maker-checker: the first reviewer proposes, a second person confirms or
-- sends it back. A case waiting for its second review already holds exactly such a proposal.
UPDATE cases SET state = 'pending_dual_control' WHERE state = 'awaiting_second_review';

ALTER TABLE cases ADD COLUMN risk_level TEXT NOT NULL DEFAULT 'low';
-- JSON array of the policy's flags, e.g. ["UNUSUAL_AMOUNT"].
ALTER TABLE cases ADD COLUMN flags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE cases ADD COLUMN require_reason BOOLEAN NOT NULL DEFAULT FALSE;
-- JSON array of the reason codes of the final decision.
ALTER TABLE cases ADD COLUMN reason_codes TEXT NOT NULL DEFAULT '[]';
-- The maker's proposal while the case is pending_dual_control (JSON), with its evidence snapshot.
ALTER TABLE cases ADD COLUMN proposal TEXT;
-- A held case comes back to the queue at hold_until.
ALTER TABLE cases ADD COLUMN hold_until TEXT;
-- The state a parked case returns to (queued or escalated).
ALTER TABLE cases ADD COLUMN resume_state TEXT;
-- When the case was parked (on hold or waiting for information): the SLA clock stops meanwhile.
ALTER TABLE cases ADD COLUMN parked_at TEXT;

DROP INDEX cases_reviewable;
CREATE INDEX cases_reviewable ON cases (tenant_id, priority_rank DESC, sla_due_at, id)
    WHERE state IN ('queued', 'in_review', 'pending_dual_control', 'escalated');
DROP INDEX cases_sla;
CREATE INDEX cases_sla ON cases (sla_due_at)
    WHERE sla_breached_at IS NULL AND state IN ('queued', 'in_review', 'pending_dual_control', 'escalated');
CREATE INDEX cases_hold ON cases (hold_until) WHERE state = 'on_hold';
CREATE INDEX cases_reports ON cases (tenant_id, decided_at) WHERE decided_at IS NOT NULL;

-- JSON array of the reason codes given with this action, or NULL.
ALTER TABLE case_history ADD COLUMN reason_codes TEXT;

-- A tenant's reason codes: which actions they may justify and whether they need notes.
CREATE TABLE reason_codes (
    tenant_id       TEXT NOT NULL,
    code            TEXT NOT NULL,
    label           TEXT NOT NULL,
    -- JSON array of actions (approve, reject, return, hold, escalate, needs_more_info).
    actions         TEXT NOT NULL,
    requires_notes  BOOLEAN NOT NULL,
    active          BOOLEAN NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, code)
);

-- Every time a person (or key) looked at a case or one of its attachments, for compliance.
CREATE TABLE case_views (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    case_id        TEXT NOT NULL REFERENCES cases (id),
    actor          TEXT NOT NULL,
    attachment_id  TEXT,
    viewed_at      TEXT NOT NULL
);
CREATE INDEX case_views_case ON case_views (case_id, viewed_at);
CREATE INDEX case_views_actor ON case_views (tenant_id, actor, viewed_at);
