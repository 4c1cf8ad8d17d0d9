//! `export_metrics`: one row per export run and per export file cleanup, plus the ones the
//! application reports (`POST /api/v1/export-metrics`, validated by `export::metrics`). Only
//! this module writes the table; each row is also logged as an `export_metric` event.

use rusqlite::Connection;

use super::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// Who reported a metric: the replaced system's alert and the aggregate count the
/// application's only (edgecron's own runs have `job_failing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricSource {
    Application,
    Edgecron,
}

impl MetricSource {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricSource::Application => "application",
            MetricSource::Edgecron => "edgecron",
        }
    }
}

/// One row of `export_metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportMetric {
    pub tenant_id: String,
    pub export_type: String,
    pub format: String,
    pub outcome: Outcome,
    pub row_count: i64,
    pub duration_ms: i64,
    pub bytes: i64,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub created_at: String,
    /// The replaced system's id of the export: a metric with an id already recorded is not
    /// recorded again.
    pub export_id: Option<String>,
    pub user_id: Option<String>,
    pub source: MetricSource,
}

/// What recording a metric did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New(i64),
    /// Its `export_id` was recorded before, as this row.
    Repeated(i64),
}

/// Inserts a metric and logs it as an `export_metric` event.
pub fn insert(conn: &Connection, metric: &ExportMetric) -> Result<Recorded, StoreError> {
    let inserted = conn.execute(
        "INSERT INTO export_metrics (tenant_id, export_type, format, status, row_count, duration_ms,
             bytes, error_type, error_message, created_at, export_id, user_id, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (export_id) WHERE export_id IS NOT NULL DO NOTHING",
        rusqlite::params![
            &metric.tenant_id,
            &metric.export_type,
            &metric.format,
            metric.outcome.as_str(),
            metric.row_count,
            metric.duration_ms,
            metric.bytes,
            &metric.error_type,
            &metric.error_message,
            &metric.created_at,
            &metric.export_id,
            &metric.user_id,
            metric.source.as_str(),
        ],
    )?;
    if inserted == 0 {
        let id = conn.query_row(
            "SELECT id FROM export_metrics WHERE export_id = ?1",
            [&metric.export_id],
            |row| row.get(0),
        )?;
        return Ok(Recorded::Repeated(id));
    }
    log_event(metric);
    Ok(Recorded::New(conn.last_insert_rowid()))
}

/// The `export_metric` log line the replaced system's dashboards query.
fn log_event(metric: &ExportMetric) {
    let event = serde_json::json!({
        "type": "export_metric",
        "export_id": metric.export_id,
        "user_id": metric.user_id,
        "tenant_id": metric.tenant_id,
        "export_type": metric.export_type,
        "format": metric.format,
        "status": match metric.outcome {
            Outcome::Success => "completed",
            Outcome::Failure => "failed",
        },
        "duration_ms": metric.duration_ms,
        "file_size_bytes": metric.bytes,
        "row_count": metric.row_count,
        "error_type": metric.error_type,
        "source": metric.source.as_str(),
    });
    crate::logging::event(log::Level::Info, &event);
}

/// Records a metric the application sent.
pub fn record_export_metric(store: &Store, metric: &ExportMetric) -> Result<Recorded, StoreError> {
    insert(&*store.conn()?, metric)
}
