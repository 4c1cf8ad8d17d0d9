-- SIEM shipping: where each backend's delivery stands, and the rows an intake refused for good.

-- The keyset cursor (created_at, id) of the last audit_log row each backend settled.
CREATE TABLE siem_cursors (
    backend       TEXT PRIMARY KEY NOT NULL,
    created_at    TEXT NOT NULL,
    id            TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    -- Runs in a row that delivered nothing because the intake failed, and why the last did.
    stalled_runs  INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT
);

-- Audit rows an intake refused in a way that resending cannot fix, with the event as sent.
CREATE TABLE siem_dead_letters (
    id                INTEGER PRIMARY KEY,
    backend           TEXT NOT NULL,
    audit_id          TEXT NOT NULL,
    audit_created_at  TEXT NOT NULL,
    status            INTEGER,
    reason            TEXT NOT NULL,
    event             TEXT NOT NULL,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (backend, audit_id)
);
