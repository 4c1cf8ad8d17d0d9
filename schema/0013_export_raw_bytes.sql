-- Export files may be written gzip-compressed: `bytes` is what lies on disk (and in storage),
-- `raw_bytes` the NDJSON it holds.
ALTER TABLE export_files ADD COLUMN raw_bytes INTEGER;
UPDATE export_files SET raw_bytes = bytes;
