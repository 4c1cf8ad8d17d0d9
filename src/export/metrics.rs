//! Export metric rows: one per export run and per export file cleanup, plus the ones the
//! application records through `POST /api/v1/export-metrics` (validated here). Only this
//! module writes `export_metrics`.

use chrono::Duration;
use rusqlite::Connection;
use serde::Deserialize;

use crate::clock::{Clock, from_store_text, to_store_text};
use crate::store::{Store, StoreError};

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
}

pub fn insert(conn: &Connection, metric: &ExportMetric) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO export_metrics (tenant_id, export_type, format, status, row_count, duration_ms,
             bytes, error_type, error_message, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        (
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
        ),
    )?;
    Ok(conn.last_insert_rowid())
}

/// Records a metric the application sent; answers its id.
pub fn record(store: &Store, metric: &ExportMetric) -> Result<i64, StoreError> {
    insert(&*store.conn()?, metric)
}

/// `POST /api/v1/export-metrics`'s body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricBody {
    tenant_id: String,
    export_type: Option<String>,
    format: String,
    status: String,
    #[serde(default)]
    row_count: i64,
    duration_ms: i64,
    #[serde(default)]
    bytes: i64,
    error_type: Option<String>,
    error_message: Option<String>,
    created_at: Option<String>,
}

const MAX_ERROR_MESSAGE_CHARS: usize = 2_000;
/// Bounds far above any real export, so sums over millions of rows cannot overflow.
const MAX_ROWS: i64 = 1_000_000_000_000;
const MAX_DURATION_MS: i64 = 31 * 24 * 3_600_000;
const MAX_BYTES: i64 = 10_000_000_000_000;
/// How far ahead of this host's clock a reported time may be (clock skew), no more.
const MAX_FUTURE: Duration = Duration::minutes(5);

/// Reads and validates a metric the application reports; the error names the field.
pub fn parse_reported(body: &[u8], clock: &dyn Clock) -> Result<ExportMetric, String> {
    let body: MetricBody =
        serde_json::from_slice(body).map_err(|error| format!("malformed metric: {error}"))?;
    let outcome = match body.status.as_str() {
        "success" => Outcome::Success,
        "failure" => Outcome::Failure,
        other => {
            return Err(format!(
                "status: expected \"success\" or \"failure\", got {other:?}"
            ));
        }
    };
    check_text("tenantId", &body.tenant_id, 200)?;
    let export_type = body.export_type.unwrap_or_else(|| "application".into());
    check_name("exportType", &export_type)?;
    check_name("format", &body.format)?;
    for (field, value, maximum) in [
        ("rowCount", body.row_count, MAX_ROWS),
        ("durationMs", body.duration_ms, MAX_DURATION_MS),
        ("bytes", body.bytes, MAX_BYTES),
    ] {
        if !(0..=maximum).contains(&value) {
            return Err(format!("{field}: expected 0 to {maximum}, got {value}"));
        }
    }
    if let Some(error_type) = &body.error_type {
        check_text("errorType", error_type, 100)?;
    }
    if let Some(message) = &body.error_message
        && message.chars().count() > MAX_ERROR_MESSAGE_CHARS
    {
        return Err(format!(
            "errorMessage: at most {MAX_ERROR_MESSAGE_CHARS} characters"
        ));
    }
    let now = clock.now();
    let created_at = match &body.created_at {
        None => now,
        Some(text) => {
            let time = from_store_text(text)
                .ok_or_else(|| format!("createdAt: {text:?} is not an RFC 3339 time"))?;
            if time > now + MAX_FUTURE {
                return Err(format!("createdAt: {text} is in the future"));
            }
            time
        }
    };
    Ok(ExportMetric {
        tenant_id: body.tenant_id,
        export_type,
        format: body.format,
        outcome,
        row_count: body.row_count,
        duration_ms: body.duration_ms,
        bytes: body.bytes,
        error_type: body.error_type,
        error_message: body.error_message,
        created_at: to_store_text(created_at),
    })
}

fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), String> {
    if value.is_empty() || value.chars().count() > max_chars || value.chars().any(char::is_control)
    {
        return Err(format!(
            "{field}: 1 to {max_chars} characters, no control characters"
        ));
    }
    Ok(())
}

/// A short lowercase identifier (`csv`, `ndjson`, `interaction_history`).
fn check_name(field: &str, value: &str) -> Result<(), String> {
    let valid = (1..=40).contains(&value.len())
        && value.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-.".contains(&byte)
        });
    if !valid {
        return Err(format!(
            "{field}: {value:?} should be 1 to 40 of a-z, 0-9, '_', '-', '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_reported_metric_is_validated_field_by_field() {
        let clock = FixedClock(Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap());
        let metric = parse_reported(
            br#"{"tenantId":"acme","format":"csv","status":"failure","durationMs":812,
                 "rowCount":10,"bytes":2048,"errorType":"timeout","createdAt":"2026-05-01T11:59:00Z"}"#,
            &clock,
        )
        .unwrap();
        assert_eq!(metric.outcome, Outcome::Failure);
        assert_eq!(metric.export_type, "application");
        assert_eq!(metric.created_at, "2026-05-01T11:59:00.000Z");

        for (body, field) in [
            (
                r#"{"tenantId":"a","format":"csv","status":"ok","durationMs":1}"#,
                "status",
            ),
            (
                r#"{"tenantId":"","format":"csv","status":"success","durationMs":1}"#,
                "tenantId",
            ),
            (
                r#"{"tenantId":"a","format":"CSV!","status":"success","durationMs":1}"#,
                "format",
            ),
            (
                r#"{"tenantId":"a","format":"csv","status":"success","durationMs":-1}"#,
                "durationMs",
            ),
            (
                r#"{"tenantId":"a","format":"csv","status":"success","durationMs":1,"bytes":9223372036854775807}"#,
                "bytes",
            ),
            (
                r#"{"tenantId":"a","format":"csv","status":"success","durationMs":1,"createdAt":"2027-01-01T00:00:00Z"}"#,
                "createdAt",
            ),
            (
                r#"{"tenantId":"a","format":"csv","status":"success","durationMs":1,"createdAt":"yesterday"}"#,
                "createdAt",
            ),
            (
                r#"{"tenantId":"a","format":"csv","status":"success"}"#,
                "durationMs",
            ),
            (
                r#"{"tenantId":"a","format":"csv","status":"success","durationMs":1,"extra":1}"#,
                "extra",
            ),
        ] {
            let error = parse_reported(body.as_bytes(), &clock).unwrap_err();
            assert!(error.contains(field), "{body}: {error}");
        }
    }
}
