-- Export files being written but not yet committed. A path is recorded here before its file
-- is created and removed in the transaction that commits the file to the manifest, so after a
-- crash every file on disk is either in the manifest or listed here (and then deleted).
CREATE TABLE export_intents (
    path        TEXT PRIMARY KEY NOT NULL,   -- relative to the data dir
    tenant_id   TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX export_intents_tenant ON export_intents (tenant_id);
