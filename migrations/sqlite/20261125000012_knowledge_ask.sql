-- Per-tenant settings of grounded answers (POST /collections/{id}/ask).
CREATE TABLE knowledge_settings (
    tenant_id     TEXT PRIMARY KEY,
    -- Added to the system prompt of every answer, e.g. tone, language, what never to say.
    instructions  TEXT NOT NULL,
    updated_by    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
