-- The legacy tick (`/api/cron/tick`, job `cron-tick`): alert rules over a metric window, and
-- report schedules rendered into the data dir.

CREATE TABLE alert_rules (
    id                 TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id          TEXT NOT NULL DEFAULT '',    -- '' = every tenant
    name               TEXT NOT NULL DEFAULT '',
    metric             TEXT NOT NULL,               -- see README: the metric catalogue
    window_minutes     INTEGER NOT NULL DEFAULT 60,
    comparator         TEXT NOT NULL DEFAULT '>' CHECK (comparator IN ('>', '>=', '<', '<=')),
    threshold          REAL NOT NULL,
    active             INTEGER NOT NULL DEFAULT 1,
    state              TEXT NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'firing')),
    last_value         REAL,
    last_evaluated_at  TEXT,
    last_error         TEXT,
    created_at         TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE alert_events (
    id          INTEGER PRIMARY KEY,
    rule_id     TEXT NOT NULL,
    tenant_id   TEXT NOT NULL DEFAULT '',
    kind        TEXT NOT NULL CHECK (kind IN ('fired', 'resolved')),
    value       REAL,
    threshold   REAL,
    created_at  TEXT NOT NULL,
    -- When ALERT_WEBHOOK_URL took it; NULL: not yet, and later ticks try again.
    notified_at TEXT
);
CREATE INDEX alert_events_rule ON alert_events (rule_id, id);

CREATE TABLE report_schedules (
    id           TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id    TEXT NOT NULL DEFAULT '',
    name         TEXT NOT NULL DEFAULT '',
    report       TEXT NOT NULL,                      -- see README: the report catalogue
    format       TEXT NOT NULL DEFAULT 'json' CHECK (format IN ('json', 'csv')),
    schedule     TEXT NOT NULL,                      -- crontab expression
    timezone     TEXT NOT NULL DEFAULT 'UTC',
    period_days  INTEGER NOT NULL DEFAULT 7,         -- how far back the report looks
    active       INTEGER NOT NULL DEFAULT 1,
    next_run_at  TEXT,
    last_run_at  TEXT,
    last_error   TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX report_schedules_due ON report_schedules (next_run_at) WHERE active = 1;

CREATE TABLE report_runs (
    id             INTEGER PRIMARY KEY,
    schedule_id    TEXT NOT NULL,
    tenant_id      TEXT NOT NULL DEFAULT '',
    report         TEXT NOT NULL,
    format         TEXT NOT NULL,
    path           TEXT NOT NULL,
    rows           INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    scheduled_for  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    UNIQUE (schedule_id, scheduled_for)
);
