-- Pings (EDGECRON_PING_URL) go out through the alert outbox, so a dead monitor never delays a
-- job: each row is POSTed to its own `url`, or to ALERT_WEBHOOK_URL when it has none (alerts).
ALTER TABLE alert_outbox ADD COLUMN url TEXT;
