-- Export batches being written but not yet committed, one per tenant at most. A row is
-- recorded before the batch creates any file, and removed in the transaction that commits the
-- batch to the manifest. After a crash, every file of the tenant's partitions from the batch's
-- first day on that is not in the manifest belongs to it and is deleted.
CREATE TABLE export_batches_in_progress (
    tenant_id        TEXT PRIMARY KEY NOT NULL,
    from_created_at  TEXT NOT NULL,     -- the checkpoint the batch started after
    from_id          TEXT NOT NULL,
    started_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
