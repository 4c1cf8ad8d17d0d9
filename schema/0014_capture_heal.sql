-- Capture that heals (store/capture/gap.rs). A table rebuilt the way SQLite recommends drops
-- its triggers with the old table; edgecron recreates them when it finds them gone and
-- recovers the rows inserted meanwhile. While a gap is open: `gap_since` when the triggers
-- were last seen, `gap_found_at` when they were found gone, `gap_mark` the highest queue
-- `seq` then (what was queued before it the consumer knows of), `gap_through` how far the
-- recovery's walk over the table got, `gap_rows` what it queued so far.
ALTER TABLE capture_state ADD COLUMN triggers_seen_at TEXT;
ALTER TABLE capture_state ADD COLUMN gap_pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE capture_state ADD COLUMN gap_since TEXT;
ALTER TABLE capture_state ADD COLUMN gap_found_at TEXT;
ALTER TABLE capture_state ADD COLUMN gap_mark INTEGER;
ALTER TABLE capture_state ADD COLUMN gap_through;
ALTER TABLE capture_state ADD COLUMN gap_rows INTEGER NOT NULL DEFAULT 0;

-- The audit rows siem-ship has taken (delivered, dead-lettered or archived), so a gap's
-- recovery knows them: the export knows its rows from its files, a SIEM keeps no file.
-- Written in the transaction that takes them; started over with the backend.
CREATE TABLE audit_shipped (
    item_id  PRIMARY KEY NOT NULL              -- the audit row's id, with its own type
) WITHOUT ROWID;

-- A store in use: every row the walk has passed that is not queued was taken already (rows
-- of a walk step still pending are not; those the triggers caught since are queued).
INSERT OR IGNORE INTO audit_shipped (item_id)
SELECT a.id
  FROM audit_log a, capture_state s
 WHERE s.source = 'audit_log' AND s.consumer IS NOT NULL
   AND (s.live = 1 OR a.id <= s.walked_through)
   AND NOT (s.walk_pending = 1
            AND (s.walk_from IS NULL OR a.id > s.walk_from)
            AND (s.walk_to IS NULL OR a.id <= s.walk_to))
   AND a.id NOT IN (SELECT item_id FROM audit_capture);

-- What each consumer's runs left waiting, so a backlog that its runs no longer work off shows
-- (`edgecron jobs`, the status page): after the last run, and after the run before it.
ALTER TABLE capture_state ADD COLUMN backlog_after_run INTEGER;
ALTER TABLE capture_state ADD COLUMN backlog_after_run_before INTEGER;

-- Interaction rows each tenant had waiting for export when the last export run ended (its
-- current tenant; '' for rows with none yet), read by /metrics without counting the queue.
CREATE TABLE export_backlog (
    tenant_id   TEXT PRIMARY KEY NOT NULL,
    rows        INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);
