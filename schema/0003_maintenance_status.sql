-- The live size of each backlog the `maintenance` job works off, for dashboards and operators.
CREATE VIEW maintenance_status AS
SELECT
    (SELECT COUNT(*) FROM import_runs
      WHERE status = 'processing'
        AND COALESCE(started_at, updated_at) < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-24 hours')) AS stuck_runs,
    (SELECT COUNT(*) FROM temp_uploads
      WHERE created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-24 hours')) AS stale_temp_uploads,
    (SELECT COUNT(*) FROM import_jobs
      WHERE status IN ('completed', 'failed', 'cancelled') AND compacted_at IS NULL
        AND COALESCE(finished_at, created_at) < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-7 days')) AS import_jobs_to_compact,
    (SELECT COUNT(*) FROM import_items
      WHERE run_id IN (SELECT id FROM import_runs WHERE status = 'failed'
                         AND COALESCE(finished_at, updated_at) < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-30 days'))) AS raw_items_to_purge;
