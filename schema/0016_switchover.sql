-- Who reported an export metric: the application (POST /api/v1/export-metrics, or its own
-- inserts) or edgecron itself (its export runs, its export file cleanup). The replaced
-- system's failure alert and the hourly aggregate count the application's only; edgecron's own
-- runs have job_failing. Rows from before: edgecron wrote its own with export_type
-- 'file_cleanup', or 'interaction_history' in NDJSON without an export or user id.
ALTER TABLE export_metrics ADD COLUMN source TEXT NOT NULL DEFAULT 'application'
    CHECK (source IN ('application', 'edgecron'));
UPDATE export_metrics SET source = 'edgecron'
 WHERE export_type = 'file_cleanup'
    OR (export_type = 'interaction_history' AND format = 'ndjson'
        AND export_id IS NULL AND user_id IS NULL);

-- SIEM_START=now: the walk over the rows already in the store takes them as shipped without
-- sending them (they are recorded in audit_shipped all the same). Decided when the consumer
-- begins, and kept until that walk is done, whatever the setting says meanwhile.
ALTER TABLE capture_state ADD COLUMN walk_unsent INTEGER NOT NULL DEFAULT 0;

-- maintenance_status read times as text, so a row in SQLite's own form ('2026-01-01
-- 10:00:00', a Julian day) was counted where the job, which reads every form as an instant,
-- disagreed. julianday() reads the same forms the same way (a number as a Julian day), on any
-- connection: the view works for dashboards and the sqlite3 shell too.
DROP VIEW maintenance_status;
CREATE VIEW maintenance_status AS
SELECT
    (SELECT COUNT(*) FROM import_runs
      WHERE status = 'processing'
        AND julianday(COALESCE(started_at, updated_at)) < julianday('now', '-24 hours')) AS stuck_runs,
    (SELECT COUNT(*) FROM temp_uploads
      WHERE julianday(created_at) < julianday('now', '-24 hours')) AS stale_temp_uploads,
    (SELECT COUNT(*) FROM import_jobs
      WHERE status IN ('completed', 'failed', 'cancelled') AND compacted_at IS NULL
        AND julianday(COALESCE(finished_at, created_at)) < julianday('now', '-7 days')) AS import_jobs_to_compact,
    (SELECT COUNT(*) FROM import_items
      WHERE run_id IN (SELECT id FROM import_runs WHERE status = 'failed'
                         AND julianday(COALESCE(finished_at, updated_at)) < julianday('now', '-30 days'))) AS raw_items_to_purge;
