-- What waits in each capture queue, counted as its consumer's runs end (and at serve's start),
-- so /metrics reads a number rather than counting the queue on every scrape.
ALTER TABLE capture_state ADD COLUMN backlog_rows INTEGER;
