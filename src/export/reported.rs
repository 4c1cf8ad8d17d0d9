//! The export metrics the application reports through `POST /api/v1/export-metrics`, read and
//! validated field by field (in edgecron's field names or the replaced system's); the
//! store's `export_metrics` records them.

use chrono::Duration;
use serde::Deserialize;

use crate::clock::{Clock, from_store_text, to_store_text};
use crate::store::export_metrics::{self, ExportMetric, MetricSource, Outcome, Recorded};
use crate::store::{Store, StoreError};

/// Why a reported metric was refused; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidMetric(String);

/// Why a reported metric was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Invalid(#[from] InvalidMetric),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads, validates and records a metric the application reports.
pub fn record_reported(
    store: &Store,
    body: &[u8],
    clock: &dyn Clock,
) -> Result<Recorded, ReportError> {
    let metric = parse_reported(body, clock)?;
    Ok(export_metrics::record_export_metric(store, &metric)?)
}

/// `POST /api/v1/export-metrics`'s body in edgecron's own field names.
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
    export_id: Option<String>,
}

/// The same body in the field names of the system edgecron replaces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginalMetricBody {
    export_id: Option<String>,
    user_id: String,
    format: String,
    /// `completed` or `failed`.
    status: String,
    /// `null` (or absent) where the replaced system sends it: a failed export has no rows, no
    /// file and may have no duration; read as 0.
    #[serde(default)]
    conversation_count: Option<i64>,
    duration_ms: Option<i64>,
    #[serde(default)]
    file_size_bytes: Option<i64>,
    error_type: Option<String>,
    error_message: Option<String>,
}

/// Field names only edgecron's shape has, and only the original's: a body with both is refused.
const OWN_FIELDS: [&str; 8] = [
    "tenantId",
    "exportType",
    "rowCount",
    "durationMs",
    "errorType",
    "errorMessage",
    "createdAt",
    "exportId",
];
const ORIGINAL_FIELDS: [&str; 7] = [
    "export_id",
    "user_id",
    "conversation_count",
    "duration_ms",
    "file_size_bytes",
    "error_type",
    "error_message",
];

const MAX_ERROR_MESSAGE_CHARS: usize = 2_000;
/// Bounds far above any real export, so sums over millions of rows cannot overflow.
const MAX_ROWS: i64 = 1_000_000_000_000;
const MAX_DURATION_MS: i64 = 31 * 24 * 3_600_000;
const MAX_BYTES: i64 = 10_000_000_000_000;
/// How far ahead of this host's clock a reported time may be (clock skew), no more.
const MAX_FUTURE: Duration = Duration::minutes(5);

/// Reads and validates a metric the application reports, in edgecron's field names or the
/// replaced system's (never a mix); the error names the field.
pub fn parse_reported(body: &[u8], clock: &dyn Clock) -> Result<ExportMetric, InvalidMetric> {
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|error| InvalidMetric(format!("malformed metric: {error}")))?;
    let own = fields
        .keys()
        .find(|key| OWN_FIELDS.contains(&key.as_str()))
        .cloned();
    let original = fields
        .keys()
        .find(|key| ORIGINAL_FIELDS.contains(&key.as_str()))
        .cloned();
    if let (Some(own), Some(original)) = (&own, &original) {
        return Err(InvalidMetric(format!(
            "the body mixes edgecron's field names ({own}) with the original's ({original}); use one set"
        )));
    }
    let fields = serde_json::Value::Object(fields);
    let malformed = |error: serde_json::Error| InvalidMetric(format!("malformed metric: {error}"));
    if original.is_some() {
        let body: OriginalMetricBody = serde_json::from_value(fields).map_err(malformed)?;
        let outcome = match body.status.as_str() {
            "completed" => Outcome::Success,
            "failed" => Outcome::Failure,
            other => {
                return Err(InvalidMetric(format!(
                    "status: expected \"completed\" or \"failed\", got {other:?}"
                )));
            }
        };
        check_text("user_id", &body.user_id, 200)?;
        return validated(
            ExportMetric {
                tenant_id: body.user_id.clone(),
                export_type: "application".into(),
                format: body.format,
                outcome,
                row_count: body.conversation_count.unwrap_or(0),
                duration_ms: body.duration_ms.unwrap_or(0),
                bytes: body.file_size_bytes.unwrap_or(0),
                error_type: body.error_type,
                error_message: body.error_message,
                created_at: to_store_text(clock.now()),
                export_id: body.export_id,
                user_id: Some(body.user_id),
                source: MetricSource::Application,
            },
            FieldNames::ORIGINAL,
        );
    }
    let body: MetricBody = serde_json::from_value(fields).map_err(malformed)?;
    let outcome = match body.status.as_str() {
        "success" => Outcome::Success,
        "failure" => Outcome::Failure,
        other => {
            return Err(InvalidMetric(format!(
                "status: expected \"success\" or \"failure\", got {other:?}"
            )));
        }
    };
    check_text("tenantId", &body.tenant_id, 200)?;
    let export_type = body.export_type.unwrap_or_else(|| "application".into());
    check_name("exportType", &export_type)?;
    let now = clock.now();
    let created_at = match &body.created_at {
        None => now,
        Some(text) => {
            let time = from_store_text(text).ok_or_else(|| {
                InvalidMetric(format!("createdAt: {text:?} is not an RFC 3339 time"))
            })?;
            if time > now + MAX_FUTURE {
                return Err(InvalidMetric(format!("createdAt: {text} is in the future")));
            }
            time
        }
    };
    validated(
        ExportMetric {
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
            export_id: body.export_id,
            user_id: None,
            source: MetricSource::Application,
        },
        FieldNames::OWN,
    )
}

/// How a body named the fields checked alike in both shapes, for error messages.
struct FieldNames {
    format: &'static str,
    rows: &'static str,
    duration: &'static str,
    bytes: &'static str,
    error_type: &'static str,
    error_message: &'static str,
    export_id: &'static str,
}

impl FieldNames {
    const OWN: FieldNames = FieldNames {
        format: "format",
        rows: "rowCount",
        duration: "durationMs",
        bytes: "bytes",
        error_type: "errorType",
        error_message: "errorMessage",
        export_id: "exportId",
    };
    const ORIGINAL: FieldNames = FieldNames {
        format: "format",
        rows: "conversation_count",
        duration: "duration_ms",
        bytes: "file_size_bytes",
        error_type: "error_type",
        error_message: "error_message",
        export_id: "export_id",
    };
}

/// The checks both shapes share.
fn validated(metric: ExportMetric, names: FieldNames) -> Result<ExportMetric, InvalidMetric> {
    check_name(names.format, &metric.format)?;
    for (field, value, maximum) in [
        (names.rows, metric.row_count, MAX_ROWS),
        (names.duration, metric.duration_ms, MAX_DURATION_MS),
        (names.bytes, metric.bytes, MAX_BYTES),
    ] {
        if !(0..=maximum).contains(&value) {
            return Err(InvalidMetric(format!(
                "{field}: expected 0 to {maximum}, got {value}"
            )));
        }
    }
    if let Some(error_type) = &metric.error_type {
        check_text(names.error_type, error_type, 100)?;
    }
    if let Some(message) = &metric.error_message
        && message.chars().count() > MAX_ERROR_MESSAGE_CHARS
    {
        return Err(InvalidMetric(format!(
            "{}: at most {MAX_ERROR_MESSAGE_CHARS} characters",
            names.error_message
        )));
    }
    if let Some(export_id) = &metric.export_id {
        check_text(names.export_id, export_id, 200)?;
    }
    Ok(metric)
}

fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), InvalidMetric> {
    if value.is_empty() || value.chars().count() > max_chars || value.chars().any(char::is_control)
    {
        return Err(InvalidMetric(format!(
            "{field}: 1 to {max_chars} characters, no control characters"
        )));
    }
    Ok(())
}

/// A short lowercase identifier (`csv`, `ndjson`, `interaction_history`).
fn check_name(field: &str, value: &str) -> Result<(), InvalidMetric> {
    let valid = (1..=40).contains(&value.len())
        && value.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-.".contains(&byte)
        });
    if !valid {
        return Err(InvalidMetric(format!(
            "{field}: {value:?} should be 1 to 40 of a-z, 0-9, '_', '-', '.'"
        )));
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
            assert!(error.0.contains(field), "{body}: {error}");
        }
    }

    #[test]
    fn the_replaced_system_s_field_names_are_read_as_strictly() {
        let clock = FixedClock(Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap());
        let metric = parse_reported(
            br#"{"export_id":"ex-1","user_id":"u-7","format":"json","status":"failed",
                 "conversation_count":40,"duration_ms":900,"file_size_bytes":4096,
                 "error_type":"timeout","error_message":"took too long"}"#,
            &clock,
        )
        .unwrap();
        assert_eq!(metric.outcome, Outcome::Failure);
        assert_eq!(
            (metric.row_count, metric.bytes, metric.export_id.as_deref()),
            (40, 4096, Some("ex-1"))
        );
        assert_eq!(metric.tenant_id, "u-7");
        for (body, field) in [
            (
                r#"{"user_id":"u","format":"json","status":"success","duration_ms":1}"#,
                "status",
            ),
            (
                r#"{"user_id":"u","format":"json","status":"completed","duration_ms":-5}"#,
                "duration_ms",
            ),
            (
                r#"{"user_id":"u","format":"json","status":"completed","duration_ms":1,"rowz":1}"#,
                "rowz",
            ),
            (
                r#"{"user_id":"u","tenantId":"t","format":"json","status":"completed","duration_ms":1}"#,
                "mixes",
            ),
        ] {
            let error = parse_reported(body.as_bytes(), &clock).unwrap_err();
            assert!(error.0.contains(field), "{body}: {error}");
        }
    }
}
