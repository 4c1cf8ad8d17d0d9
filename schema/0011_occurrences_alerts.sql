-- Scheduling you can see: the fire time a scheduled run serves, the occurrence ledger (every
-- fire time the scheduler or an expected outside schedule was due, and what became of it),
-- lifetime counters of both for /metrics, what the watcher has checked, per-job alert
-- conditions, and the outbox of alert webhook deliveries.

ALTER TABLE job_runs ADD COLUMN scheduled_for TEXT;   -- the fire time a scheduled run serves
ALTER TABLE job_runs ADD COLUMN lag_ms INTEGER;       -- its start minus that time
-- The watcher looks for a run of a job started around a due time.
CREATE INDEX job_runs_started ON job_runs (job, started_at);

CREATE TABLE schedule_occurrences (
    id             INTEGER PRIMARY KEY,
    job            TEXT NOT NULL,
    -- 'schedule': the built-in scheduler's; 'expected': EDGECRON_EXPECT_<JOB>'s
    source         TEXT NOT NULL CHECK (source IN ('schedule', 'expected')),
    scheduled_for  TEXT NOT NULL,
    outcome        TEXT NOT NULL
                   CHECK (outcome IN ('ran', 'coalesced', 'refused', 'paused', 'missed')),
    run_id         INTEGER,          -- the run that served it, if one did
    lag_ms         INTEGER,          -- that run's start minus scheduled_for
    recorded_at    TEXT NOT NULL,
    UNIQUE (job, source, scheduled_for)
);
CREATE INDEX schedule_occurrences_job ON schedule_occurrences (job, id);
CREATE INDEX schedule_occurrences_time ON schedule_occurrences (scheduled_for);

-- Lifetime counts per job and outcome: the ledger is pruned, counters never go back, and
-- fire times too many to record one by one (a long downtime of a per-second job) still count.
CREATE TABLE schedule_occurrence_stats (
    job          TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    occurrences  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, outcome)
);

-- Schedule lag (a scheduled run's start minus its fire time): buckets as Prometheus labels them.
CREATE TABLE schedule_lag_bounds (
    le       TEXT PRIMARY KEY NOT NULL,
    seconds  REAL NOT NULL
);
INSERT INTO schedule_lag_bounds (le, seconds) VALUES
    ('0.01', 0.01), ('0.025', 0.025), ('0.05', 0.05), ('0.1', 0.1), ('0.25', 0.25),
    ('0.5', 0.5), ('1', 1), ('5', 5), ('30', 30), ('60', 60), ('300', 300), ('3600', 3600),
    ('+Inf', 1e308);

-- Scheduled runs per lag bucket (not cumulative), and their count and sum per job.
CREATE TABLE schedule_lag_buckets (
    job   TEXT NOT NULL,
    le    TEXT NOT NULL,
    runs  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, le)
);
CREATE TABLE schedule_lag_stats (
    job          TEXT PRIMARY KEY NOT NULL,
    runs         INTEGER NOT NULL DEFAULT 0,
    seconds_sum  REAL NOT NULL DEFAULT 0
);

-- How far the watcher has judged each job's due times (built-in schedule or expected).
CREATE TABLE schedule_watch (
    job              TEXT NOT NULL,
    source           TEXT NOT NULL CHECK (source IN ('schedule', 'expected')),
    checked_through  TEXT NOT NULL,
    PRIMARY KEY (job, source)
);

-- An alert condition in force: at most one per job and kind, so each fires once when it
-- starts (the row is inserted) and once when it ends (the row is deleted), whichever process
-- sees it.
CREATE TABLE job_alert_conditions (
    job      TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('overdue', 'failing', 'overrun')),
    since    TEXT NOT NULL,      -- when the condition started (overdue: the first due time missed)
    run_id   INTEGER,            -- failing: the last failed run; overrun: the overrunning run
    detail   TEXT NOT NULL DEFAULT '{}',   -- the alert's JSON object
    PRIMARY KEY (job, kind)
);

-- Every alert to POST to ALERT_WEBHOOK_URL, inserted with the change that raised it;
-- delivered oldest first, a failure waits for a later delivery.
CREATE TABLE alert_outbox (
    id               INTEGER PRIMARY KEY,
    type             TEXT NOT NULL,
    job              TEXT,
    body             TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    claimed_until    TEXT,        -- a deliverer is posting it until then
    next_attempt_at  TEXT,
    last_error       TEXT,
    delivered_at     TEXT,
    abandoned_at     TEXT         -- undelivered for a day: no longer news
);
CREATE INDEX alert_outbox_pending ON alert_outbox (id)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
