-- Lifetime run counters per job, for /metrics: run history is pruned, counters never go back.
-- Kept by a trigger on every way a run ends (finished, failed while running, abandoned).

CREATE TABLE job_run_stats (
    job                   TEXT NOT NULL,
    status                TEXT NOT NULL,
    runs                  INTEGER NOT NULL DEFAULT 0,
    duration_seconds_sum  REAL NOT NULL DEFAULT 0,
    rows_processed        INTEGER NOT NULL DEFAULT 0,
    last_finished_at      TEXT,
    PRIMARY KEY (job, status)
);

-- The duration histogram's buckets: upper bounds in seconds, as Prometheus labels them.
CREATE TABLE job_run_duration_bounds (
    le       TEXT PRIMARY KEY NOT NULL,
    seconds  REAL NOT NULL
);
INSERT INTO job_run_duration_bounds (le, seconds) VALUES
    ('0.1', 0.1), ('0.5', 0.5), ('1', 1), ('5', 5), ('10', 10), ('30', 30), ('60', 60),
    ('300', 300), ('600', 600), ('1800', 1800), ('3600', 3600), ('+Inf', 1e308);

-- Runs per duration bucket (not cumulative).
CREATE TABLE job_run_duration_buckets (
    job   TEXT NOT NULL,
    le    TEXT NOT NULL,
    runs  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, le)
);

-- A run's duration: recorded, or from its start and end when it ended without one.
CREATE TRIGGER job_runs_ended AFTER UPDATE OF status ON job_runs
WHEN OLD.status = 'running' AND NEW.status <> 'running'
BEGIN
    INSERT OR IGNORE INTO job_run_stats (job, status) VALUES (NEW.job, NEW.status);
    UPDATE job_run_stats
       SET runs = runs + 1,
           duration_seconds_sum = duration_seconds_sum + COALESCE(NEW.duration_ms / 1000.0,
               unixepoch(NEW.finished_at, 'subsec') - unixepoch(NEW.started_at, 'subsec'), 0),
           rows_processed = rows_processed + NEW.rows_processed,
           last_finished_at = NEW.finished_at
     WHERE job = NEW.job AND status = NEW.status;
    INSERT OR IGNORE INTO job_run_duration_buckets (job, le)
    SELECT NEW.job, le FROM job_run_duration_bounds
     WHERE seconds >= COALESCE(NEW.duration_ms / 1000.0,
               unixepoch(NEW.finished_at, 'subsec') - unixepoch(NEW.started_at, 'subsec'), 0)
     ORDER BY seconds LIMIT 1;
    UPDATE job_run_duration_buckets SET runs = runs + 1
     WHERE job = NEW.job AND le = (SELECT le FROM job_run_duration_bounds
         WHERE seconds >= COALESCE(NEW.duration_ms / 1000.0,
               unixepoch(NEW.finished_at, 'subsec') - unixepoch(NEW.started_at, 'subsec'), 0)
         ORDER BY seconds LIMIT 1);
END;
