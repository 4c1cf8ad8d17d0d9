-- Metrics in the shape of the system edgecron replaces carry their export's id and user:
-- a repeated export_id records one metric.
ALTER TABLE export_metrics ADD COLUMN export_id TEXT;
ALTER TABLE export_metrics ADD COLUMN user_id TEXT;
CREATE UNIQUE INDEX export_metrics_export_id ON export_metrics (export_id) WHERE export_id IS NOT NULL;
