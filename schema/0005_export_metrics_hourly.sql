-- export-metrics-aggregate: one row per hour of export metrics, recomputed on each run.
CREATE TABLE export_metrics_hourly (
    hour             TEXT PRIMARY KEY NOT NULL,  -- 'YYYY-MM-DDTHH:00:00.000Z', the hour's start
    total            INTEGER NOT NULL,
    successes        INTEGER NOT NULL,
    failures         INTEGER NOT NULL,
    success_rate     REAL,                       -- NULL when total = 0
    avg_duration_ms  REAL,
    p95_duration_ms  INTEGER,
    total_bytes      INTEGER NOT NULL,
    avg_bytes        REAL,
    max_bytes        INTEGER,
    by_format        TEXT NOT NULL DEFAULT '{}', -- {"csv": {"count": 3, "bytes": 1024}}
    computed_at      TEXT NOT NULL
);
