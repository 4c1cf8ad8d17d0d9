-- Erasure (SPEC section 8) and retention reach the export files.
--
-- `export_rewrites` journals each rewrite of a committed export file (without a data subject's
-- rows) or its removal, and claims the file for one run: written (only if the manifest still
-- has the content the rewrite read) before the file on disk changes, so a run killed at any
-- instant finishes it (the new file is renamed into place, the manifest and the audit log
-- follow, the uploaded object is replaced) or, if nothing had changed yet, drops it and
-- leaves it to be done again.
CREATE TABLE export_rewrites (
    file_id         INTEGER PRIMARY KEY,      -- export_files.id
    run_id          INTEGER NOT NULL,         -- the run rewriting it
    path            TEXT NOT NULL,            -- the file, relative to the data dir
    old_sha256      TEXT NOT NULL,            -- the manifest's content when the rewrite began
    staged          TEXT,                     -- the new file; NULL: the file is removed
    new_sha256      TEXT,
    new_bytes       INTEGER,
    new_rows        INTEGER,
    old_etags       TEXT NOT NULL,            -- the old content's MD5 ETags (single, multipart)
    applied         INTEGER NOT NULL DEFAULT 0,  -- 1: file and manifest are the new ones
    replace_object  INTEGER NOT NULL DEFAULT 0,  -- 1: the manifest had the file uploaded
    relocal         INTEGER NOT NULL DEFAULT 0,  -- 1: the local copy had been removed after upload
    tenant_id       TEXT NOT NULL,
    audit           TEXT NOT NULL,            -- the audit row's action and details, JSON
    created_at      TEXT NOT NULL
);

-- An erasure of one data subject under way: the UTC days their exported rows are on, kept
-- from the moment their rows are deleted until every file of those days has been rewritten,
-- so a run killed in between knows where to look once the rows are gone.
CREATE TABLE erasure_requests (
    tenant_id    TEXT NOT NULL,
    customer_id  TEXT NOT NULL,
    days         TEXT NOT NULL DEFAULT '[]',  -- JSON array of YYYY-MM-DD
    requested_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, customer_id)
);
