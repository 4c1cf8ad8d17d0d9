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
