-- The application's configuration objects, one JSON object per (kind, name); gitops-drift-check
-- compares them with the desired configuration under GITOPS_DIR.
CREATE TABLE configuration (
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    body        TEXT NOT NULL DEFAULT '{}',
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (kind, name)
);

-- One row per drift check, and one per object found out of line.
CREATE TABLE gitops_drift_reports (
    id          INTEGER PRIMARY KEY,
    run_id      INTEGER,
    checked     INTEGER NOT NULL,
    drifted     INTEGER NOT NULL,
    missing     INTEGER NOT NULL,
    extra       INTEGER NOT NULL,
    invalid     INTEGER NOT NULL,
    checked_at  TEXT NOT NULL
);

CREATE TABLE gitops_drift_items (
    report_id     INTEGER NOT NULL REFERENCES gitops_drift_reports (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('drifted', 'missing', 'extra', 'invalid')),
    desired_hash  TEXT,
    actual_hash   TEXT,
    detail        TEXT,
    PRIMARY KEY (report_id, kind, name)
);
