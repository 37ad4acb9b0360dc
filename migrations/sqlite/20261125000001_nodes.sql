-- Docket processes (api, worker, scheduler) that are running or ran recently.
-- Each process registers at start, heartbeats while alive and deregisters on graceful shutdown,
-- so operators can see live workers and a crashed process is visible by its stale heartbeat.
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    role          TEXT NOT NULL,
    hostname      TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    version       TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL
);
CREATE INDEX nodes_heartbeat_at ON nodes (heartbeat_at);
