-- Events published through the API. Event-triggered tasks get a job per event.
CREATE TABLE events (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    topic            TEXT NOT NULL,
    payload          TEXT NOT NULL,
    idempotency_key  TEXT,
    source           TEXT NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE UNIQUE INDEX events_idempotency ON events (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_topic ON events (tenant_id, topic, id);
CREATE INDEX tasks_event_topic ON tasks (tenant_id, schedule_expr) WHERE schedule_kind = 'event' AND status = 'active';
