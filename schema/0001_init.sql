-- edgecron store, version 1.
-- Times are ISO-8601 UTC text with milliseconds ('2026-03-30T02:00:00.000Z'), so text order is
-- time order. Tables the application writes give every column beyond the contract a default,
-- so an insert naming only the contract's columns succeeds.

-- ---------------------------------------------------------------- application data (SPEC §6)

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    active      INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE interaction_history (
    id           TEXT PRIMARY KEY NOT NULL,
    tenant_id    TEXT NOT NULL DEFAULT '',
    customer_id  TEXT NOT NULL DEFAULT '',
    channel      TEXT NOT NULL DEFAULT '',
    outcome      TEXT NOT NULL DEFAULT '',
    payload      TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
-- export keyset (tenant, created_at, id), retention cutoffs, engagement scoring
CREATE INDEX interaction_history_tenant_created ON interaction_history (tenant_id, created_at, id);

CREATE TABLE suppressions (
    id           TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id    TEXT NOT NULL DEFAULT '',
    customer_id  TEXT NOT NULL DEFAULT '',
    reason       TEXT NOT NULL DEFAULT '',
    expires_at   TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX suppressions_expires ON suppressions (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE interaction_summaries (
    id            TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id     TEXT NOT NULL DEFAULT '',
    customer_id   TEXT NOT NULL DEFAULT '',
    period_type   TEXT NOT NULL DEFAULT 'daily',
    period_start  TEXT NOT NULL DEFAULT '',
    interactions  INTEGER NOT NULL DEFAULT 0,
    positive      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX interaction_summaries_period ON interaction_summaries (period_type, period_start);

CREATE TABLE retention_policies (
    id              INTEGER PRIMARY KEY,
    tenant_id       TEXT NOT NULL DEFAULT '',
    data_class      TEXT NOT NULL DEFAULT 'all',
    retention_days  INTEGER,
    legal_hold      INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX retention_policies_tenant ON retention_policies (tenant_id);

CREATE TABLE decision_traces (
    id           TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id    TEXT NOT NULL DEFAULT '',
    customer_id  TEXT NOT NULL DEFAULT '',
    decision     TEXT NOT NULL DEFAULT '',
    trace        TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX decision_traces_tenant_created ON decision_traces (tenant_id, created_at);

CREATE TABLE ai_attachments (
    id            TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id     TEXT NOT NULL DEFAULT '',
    blob_path     TEXT,
    content_type  TEXT NOT NULL DEFAULT 'application/octet-stream',
    bytes         INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX ai_attachments_tenant_created ON ai_attachments (tenant_id, created_at);

CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id   TEXT NOT NULL DEFAULT '',
    actor       TEXT NOT NULL DEFAULT 'system',
    action      TEXT NOT NULL DEFAULT '',
    target      TEXT NOT NULL DEFAULT '',
    details     TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
-- SIEM shipping reads in (created_at, id) order from a cursor
CREATE INDEX audit_log_created ON audit_log (created_at, id);
CREATE INDEX audit_log_tenant_created ON audit_log (tenant_id, created_at);

CREATE TABLE telemetry_events (
    id          TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    event       TEXT NOT NULL DEFAULT '',
    user_id     TEXT,
    meta        TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX telemetry_events_created ON telemetry_events (created_at);

CREATE TABLE telemetry_daily (
    date          TEXT NOT NULL,
    event         TEXT NOT NULL,
    count         INTEGER NOT NULL DEFAULT 0,
    unique_users  INTEGER NOT NULL DEFAULT 0,
    meta          TEXT NOT NULL DEFAULT '{}',
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (date, event)
);

-- ---------------------------------------------------------------- application work queues

CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY,
    tenant_id     TEXT NOT NULL DEFAULT '',
    topic         TEXT NOT NULL DEFAULT '',
    payload       TEXT NOT NULL DEFAULT '{}',
    -- pending -> processing (a worker took it, attempts += 1) -> done | pending (retry) | dead
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'processing', 'done', 'dead')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER,
    locked_at     TEXT,
    last_error    TEXT,
    -- set by producers that must enqueue a message at most once (flow and retrain ticks)
    dedupe_key    TEXT UNIQUE,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX outbox_status_locked ON outbox (status, locked_at);

CREATE TABLE approvals (
    id            TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id     TEXT NOT NULL DEFAULT '',
    kind          TEXT NOT NULL DEFAULT '',
    subject       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    requested_by  TEXT NOT NULL DEFAULT '',
    expires_at    TEXT,
    decided_at    TEXT,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX approvals_pending_expiry ON approvals (expires_at) WHERE status = 'pending';

CREATE TABLE flows (
    id                TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id         TEXT NOT NULL DEFAULT '',
    name              TEXT NOT NULL DEFAULT '',
    schedule          TEXT,            -- crontab expression; NULL: not scheduled
    timezone          TEXT NOT NULL DEFAULT 'UTC',
    enabled           INTEGER NOT NULL DEFAULT 1,
    next_run_at       TEXT,            -- NULL: not yet planned; the tick plans it
    last_enqueued_at  TEXT,
    last_error        TEXT,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX flows_due ON flows (next_run_at) WHERE enabled = 1 AND schedule IS NOT NULL;

CREATE TABLE ml_models (
    id                TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id         TEXT NOT NULL DEFAULT '',
    name              TEXT NOT NULL DEFAULT '',
    retrain_schedule  TEXT,            -- crontab expression; NULL: retrained by hand only
    timezone          TEXT NOT NULL DEFAULT 'UTC',
    enabled           INTEGER NOT NULL DEFAULT 1,
    next_retrain_at   TEXT,
    last_enqueued_at  TEXT,
    last_error        TEXT,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX ml_models_due ON ml_models (next_retrain_at) WHERE enabled = 1 AND retrain_schedule IS NOT NULL;

-- ---------------------------------------------------------------- imports

CREATE TABLE import_runs (
    id           TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id    TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    error        TEXT,
    started_at   TEXT,
    finished_at  TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX import_runs_status_started ON import_runs (status, started_at);

CREATE TABLE import_jobs (
    id               TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id        TEXT NOT NULL DEFAULT '',
    run_id           TEXT,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    total_items      INTEGER NOT NULL DEFAULT 0,
    processed_items  INTEGER NOT NULL DEFAULT 0,
    failed_items     INTEGER NOT NULL DEFAULT 0,
    config           TEXT,             -- mapping and options; dropped by compaction
    result           TEXT,             -- per-item outcome detail; dropped by compaction
    compacted_at     TEXT,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at      TEXT
);
CREATE INDEX import_jobs_status_finished ON import_jobs (status, finished_at);

CREATE TABLE import_items (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL DEFAULT '',
    raw         TEXT NOT NULL DEFAULT '{}',
    status      TEXT NOT NULL DEFAULT 'pending',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX import_items_run ON import_items (run_id);

CREATE TABLE temp_uploads (
    id          TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id   TEXT NOT NULL DEFAULT '',
    path        TEXT NOT NULL DEFAULT '',
    bytes       INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX temp_uploads_created ON temp_uploads (created_at);

-- ---------------------------------------------------------------- exports

-- Where each tenant's export stands: the keyset cursor (created_at, id) of the last row exported.
CREATE TABLE export_checkpoints (
    tenant_id        TEXT PRIMARY KEY NOT NULL,
    last_created_at  TEXT,
    last_id          TEXT,
    status           TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'failed')),
    error            TEXT,
    rows_exported    INTEGER NOT NULL DEFAULT 0,
    updated_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- The manifest: one row per export file, committed in the same transaction as the checkpoint.
CREATE TABLE export_files (
    id                INTEGER PRIMARY KEY,
    path              TEXT NOT NULL UNIQUE,     -- relative to the data dir
    tenant_id         TEXT NOT NULL,
    partition_day     TEXT NOT NULL,            -- YYYY-MM-DD, UTC
    row_count         INTEGER NOT NULL,
    first_created_at  TEXT NOT NULL,
    first_id          TEXT NOT NULL,
    last_created_at   TEXT NOT NULL,
    last_id           TEXT NOT NULL,
    bytes             INTEGER NOT NULL,
    sha256            TEXT NOT NULL,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    upload_status     TEXT NOT NULL DEFAULT 'local'
                      CHECK (upload_status IN ('local', 'pending', 'uploaded', 'deleted')),
    upload_attempts   INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TEXT,
    upload_error      TEXT,
    uploaded_at       TEXT,
    local_deleted_at  TEXT
);
CREATE INDEX export_files_upload ON export_files (upload_status, next_attempt_at);
CREATE INDEX export_files_tenant ON export_files (tenant_id, partition_day);

-- The application's log of user-requested exports (files it wrote for download).
CREATE TABLE export_logs (
    id            TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
    tenant_id     TEXT NOT NULL DEFAULT '',
    export_type   TEXT NOT NULL DEFAULT '',
    format        TEXT NOT NULL DEFAULT 'json',
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'expired')),
    file_path     TEXT,                 -- relative to the data dir, or an s3:// URI
    bytes         INTEGER NOT NULL DEFAULT 0,
    row_count     INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    expires_at    TEXT,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    completed_at  TEXT
);
CREATE INDEX export_logs_expiry ON export_logs (expires_at) WHERE status = 'completed';
CREATE INDEX export_logs_created ON export_logs (created_at);

CREATE TABLE export_metrics (
    id             INTEGER PRIMARY KEY,
    tenant_id      TEXT NOT NULL DEFAULT '',
    export_type    TEXT NOT NULL DEFAULT 'interaction_history',
    format         TEXT NOT NULL DEFAULT 'ndjson',
    status         TEXT NOT NULL DEFAULT 'success' CHECK (status IN ('success', 'failure')),
    row_count      INTEGER NOT NULL DEFAULT 0,
    duration_ms    INTEGER NOT NULL DEFAULT 0,
    bytes          INTEGER NOT NULL DEFAULT 0,
    error_type     TEXT,
    error_message  TEXT,
    created_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX export_metrics_created ON export_metrics (created_at);

-- ---------------------------------------------------------------- edgecron's own bookkeeping

CREATE TABLE job_runs (
    id              INTEGER PRIMARY KEY,
    job             TEXT NOT NULL,
    trigger         TEXT NOT NULL CHECK (trigger IN ('schedule', 'http', 'cli')),
    status          TEXT NOT NULL CHECK (status IN ('running', 'ok', 'partial', 'failed')),
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    duration_ms     INTEGER,
    rows_processed  INTEGER NOT NULL DEFAULT 0,
    result          TEXT,
    error           TEXT,
    holder          TEXT NOT NULL       -- host/pid/start-time of the process that ran it
);
CREATE INDEX job_runs_job ON job_runs (job, id);
CREATE INDEX job_runs_running ON job_runs (status) WHERE status = 'running';

-- At most one row per job: the run holding it. Shared by the scheduler, HTTP and the CLI,
-- across processes, so a job never overlaps itself.
CREATE TABLE job_leases (
    job           TEXT PRIMARY KEY NOT NULL,
    run_id        INTEGER NOT NULL,
    holder        TEXT NOT NULL,
    acquired_at   TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL
);

-- The last fire time the scheduler handled per job, so downtime is noticed and made up once.
CREATE TABLE schedule_state (
    job           TEXT PRIMARY KEY NOT NULL,
    last_fire_at  TEXT NOT NULL
);
