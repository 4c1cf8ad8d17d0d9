-- Capture: every insert into interaction_history and audit_log, recorded by a trigger inside
-- the application's own transaction. SQLite lets one writer in at a time and a capture's `seq`
-- is the table's next rowid, so `seq` follows the order the inserts commit, whatever their
-- created_at says. The consumers (export-interactions, siem-ship) take captured rows in `seq`
-- order and delete each in the transaction that records what became of it, so what remains is
-- exactly what they have not yet taken.
--
-- A consumer that has never run costs nothing: the triggers capture only once it has begun.
-- Its first runs walk the table itself in primary-key order, `walked_through` saying how far.
-- An insert is captured when its id is at or before that point (or every insert, once the walk
-- is done: `live`); otherwise the walk is still to reach it. A walk step reserves its range
-- (`walk_from`, `walk_to`) before reading it; a row inside the range that was captured after
-- the reservation (seq > `walk_mark`) was inserted after it, and is left to the capture.

CREATE TABLE capture_state (
    source          TEXT PRIMARY KEY NOT NULL,   -- the captured table
    consumer        TEXT,                        -- 'export', or the SIEM backend shipping it
    live            INTEGER NOT NULL DEFAULT 0,  -- 1: every insert is captured
    walked_through,                              -- no type, so an id keeps its own (text or blob)
    walk_pending    INTEGER NOT NULL DEFAULT 0,  -- 1: a reserved walk step is not yet done
    walk_from,                                   -- exclusive; NULL: from the first row
    walk_to,                                     -- inclusive; NULL: to the last row
    walk_mark       INTEGER,                     -- the highest capture seq at the reservation
    updated_at      TEXT
);
INSERT INTO capture_state (source) VALUES ('interaction_history'), ('audit_log');

-- `seq` is a plain INTEGER PRIMARY KEY: an insert writes one page (AUTOINCREMENT would write
-- a second). A deleted top seq may be given out again, which is harmless: consumers keep no
-- high-water mark, only what remains, and the new row still sorts after every remaining one.
CREATE TABLE interaction_capture (
    seq        INTEGER PRIMARY KEY,
    tenant_id  TEXT,
    item_id    NOT NULL                        -- the row's id, with its own type
);

CREATE TABLE audit_capture (
    seq      INTEGER PRIMARY KEY,
    item_id  NOT NULL
);

CREATE TRIGGER interaction_history_capture AFTER INSERT ON interaction_history
WHEN (SELECT live OR NEW.id <= walked_through FROM capture_state WHERE source = 'interaction_history')
BEGIN
    INSERT INTO interaction_capture (tenant_id, item_id) VALUES (NEW.tenant_id, NEW.id);
END;

-- An id changed in place (a BLOB id corrected to text) is the row under a new key: captured
-- again; the old key then names no row, and its capture is dropped when it is read.
CREATE TRIGGER interaction_history_capture_new_id AFTER UPDATE OF id ON interaction_history
WHEN NEW.id IS NOT OLD.id
 AND (SELECT live OR NEW.id <= walked_through FROM capture_state WHERE source = 'interaction_history')
BEGIN
    INSERT INTO interaction_capture (tenant_id, item_id) VALUES (NEW.tenant_id, NEW.id);
END;

CREATE TRIGGER audit_log_capture AFTER INSERT ON audit_log
WHEN (SELECT live OR NEW.id <= walked_through FROM capture_state WHERE source = 'audit_log')
BEGIN
    INSERT INTO audit_capture (item_id) VALUES (NEW.id);
END;

CREATE TRIGGER audit_log_capture_new_id AFTER UPDATE OF id ON audit_log
WHEN NEW.id IS NOT OLD.id
 AND (SELECT live OR NEW.id <= walked_through FROM capture_state WHERE source = 'audit_log')
BEGIN
    INSERT INTO audit_capture (item_id) VALUES (NEW.id);
END;

-- Export files about to be renamed into their partitions, recorded before the first rename.
-- After a crash, every one the manifest does not list is removed, with whatever is left in
-- the staging directory, so no uncommitted file stays visible.
CREATE TABLE export_staged_files (
    path       TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL,
    staged_at  TEXT NOT NULL
);

-- Rows the tenant's last run could not export as they are (see `invalid` in its result).
ALTER TABLE export_checkpoints ADD COLUMN invalid_rows INTEGER NOT NULL DEFAULT 0;

-- ---------------------------------------------------------------- upgrading a store in use

-- The export ran before: capture exactly the rows its per-tenant checkpoints had not passed
-- (all of a tenant's rows where it has none), so nothing is exported twice or skipped.
UPDATE capture_state SET consumer = 'export', live = 1
 WHERE source = 'interaction_history'
   AND EXISTS (SELECT 1 FROM export_checkpoints WHERE last_created_at IS NOT NULL);
INSERT INTO interaction_capture (tenant_id, item_id)
SELECT h.tenant_id, h.id
  FROM interaction_history h
  LEFT JOIN export_checkpoints c ON c.tenant_id = h.tenant_id
 WHERE (SELECT live FROM capture_state WHERE source = 'interaction_history')
   AND (c.last_created_at IS NULL OR (h.created_at, h.id) > (c.last_created_at, c.last_id))
 ORDER BY h.created_at, h.id;

-- siem-ship ran before: the backend that shipped last goes on from its cursor.
UPDATE capture_state SET live = 1,
       consumer = (SELECT backend FROM siem_cursors WHERE id <> '' ORDER BY updated_at DESC LIMIT 1)
 WHERE source = 'audit_log' AND EXISTS (SELECT 1 FROM siem_cursors WHERE id <> '');
INSERT INTO audit_capture (item_id)
SELECT a.id
  FROM audit_log a, capture_state s, siem_cursors c
 WHERE s.source = 'audit_log' AND s.live = 1 AND c.backend = s.consumer
   AND (a.created_at, a.id) > (c.created_at, c.id)
 ORDER BY a.created_at, a.id;
