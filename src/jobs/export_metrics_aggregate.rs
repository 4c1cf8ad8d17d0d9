//! `export-metrics-aggregate`: summarise export metrics for the last full hour (or for
//! `startDate..=endDate`), store one `export_metrics_hourly` row per hour, and raise an
//! export failure alert when the failure rate, the average duration or the volume passes its
//! threshold, through the one alert path (`crate::alert`): a JSON log line, also POSTed to
//! `ALERT_WEBHOOK_URL` when set (queued, and retried by later deliveries when it fails).
//!
//! Percentiles are nearest-rank: p95 is the smallest duration at or above 95% of the exports.

use std::collections::BTreeMap;

use chrono::{DateTime, Days, Duration, DurationRound, Utc};
use rusqlite::{Connection, TransactionBehavior};
use serde::Serialize;
use serde_json::{Value, json};

use super::{Job, JobCtx, JobError, JobOutput};
use crate::alert::Delivery;
use crate::clock::to_store_text;
use crate::config::AlertSettings;
use crate::store::export_metrics::Outcome;

pub struct ExportMetricsAggregate;

/// Metrics of one window (an hour, or the whole run).
#[derive(Debug, Default, Clone, PartialEq)]
struct Summary {
    total: u64,
    successes: u64,
    durations: Vec<i64>,
    total_bytes: i64,
    max_bytes: i64,
    /// Per format: (exports, bytes).
    by_format: BTreeMap<String, (u64, i64)>,
}

impl Summary {
    fn add(&mut self, outcome: Outcome, duration_ms: i64, bytes: i64, format: &str) {
        self.total += 1;
        self.successes += u64::from(outcome == Outcome::Success);
        self.durations.push(duration_ms);
        // Saturating: rows the application wrote straight into the table are not bounded.
        self.total_bytes = self.total_bytes.saturating_add(bytes);
        self.max_bytes = self.max_bytes.max(bytes);
        let entry = self.by_format.entry(format.to_string()).or_default();
        entry.0 += 1;
        entry.1 = entry.1.saturating_add(bytes);
    }

    fn failures(&self) -> u64 {
        self.total - self.successes
    }

    fn ratio(&self, part: u64) -> Option<f64> {
        (self.total > 0).then(|| part as f64 / self.total as f64)
    }

    fn avg_duration_ms(&self) -> Option<f64> {
        let sum: i128 = self.durations.iter().map(|&ms| i128::from(ms)).sum();
        (self.total > 0).then(|| sum as f64 / self.total as f64)
    }

    fn p95_duration_ms(&self) -> Option<i64> {
        let mut sorted = self.durations.clone();
        sorted.sort_unstable();
        let rank = (sorted.len() * 95).div_ceil(100);
        sorted.get(rank.max(1) - 1).copied()
    }

    fn by_format(&self) -> BTreeMap<&str, FormatTotals> {
        self.by_format
            .iter()
            .map(|(format, &(count, bytes))| (format.as_str(), FormatTotals { count, bytes }))
            .collect()
    }
}

/// The run's result; its keys are snake_case as the replaced handler's were.
#[derive(Serialize)]
struct Report<'a> {
    window: Window,
    total_exports: u64,
    successes: u64,
    failures: u64,
    success_rate: Option<f64>,
    failure_rate: Option<f64>,
    avg_duration_ms: Option<f64>,
    p95_duration_ms: Option<i64>,
    bytes: Bytes,
    by_format: BTreeMap<&'a str, FormatTotals>,
    hours: usize,
    /// The export failure alert the window raised, if any.
    alert: Option<Value>,
    webhook: Option<Webhook>,
    #[serde(rename = "dryRun")]
    dry_run: bool,
}

#[derive(Serialize)]
struct Window {
    start: String,
    end: String,
}

#[derive(Serialize)]
struct Bytes {
    total: i64,
    avg: Option<f64>,
    max: i64,
}

#[derive(Serialize)]
struct FormatTotals {
    count: u64,
    bytes: i64,
}

/// What became of the alert's webhook POST.
#[derive(Serialize)]
#[serde(untagged)]
enum Webhook {
    Delivered {
        delivered: bool,
        status: u16,
    },
    Failed {
        delivered: bool,
        error: String,
        queued: bool,
    },
}

impl Job for ExportMetricsAggregate {
    fn name(&self) -> &'static str {
        "export-metrics-aggregate"
    }

    fn default_schedule(&self) -> &'static str {
        "0 * * * *"
    }

    fn legacy_routes(&self) -> &'static [&'static str] {
        &["/api/cron/export-metrics-aggregate"]
    }

    fn takes_date_range(&self) -> bool {
        true
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let (start, end) = window(ctx);
        let (start_text, end_text) = (to_store_text(start), to_store_text(end));
        let mut conn = ctx.store.conn()?;
        let (whole, hours) = summarise(&conn, &start_text, &end_text)?;
        if !ctx.params.dry_run {
            // The hourly run also recomputes the hours before, for metrics that came late.
            let mut stored = hours.clone();
            if ctx.params.date_range().is_none() {
                let late_start = to_store_text(start - Duration::hours(LATE_HOURS));
                stored.extend(summarise(&conn, &late_start, &start_text)?.1);
            }
            store_hours(&mut conn, &stored, &to_store_text(ctx.now()))?;
        }
        let busiest_hour = hours.values().map(|hour| hour.total).max().unwrap_or(0);
        let alert = alert(
            &whole,
            busiest_hour,
            &ctx.config.alerts,
            &start_text,
            &end_text,
        );
        let mut webhook = None;
        let mut item_errors = 0;
        if let Some(alert) = alert.as_ref().filter(|_| !ctx.params.dry_run) {
            webhook = match crate::alert::raise(ctx.store, ctx.config, ctx.clock, alert) {
                Delivery::NoWebhook => None,
                Delivery::Delivered { status } => Some(Webhook::Delivered {
                    delivered: true,
                    status,
                }),
                Delivery::Failed { error } => {
                    log::warn!("export-metrics-aggregate: the alert webhook failed: {error}");
                    item_errors += 1;
                    Some(Webhook::Failed {
                        delivered: false,
                        error,
                        queued: true,
                    })
                }
            };
        }
        let report = Report {
            window: Window {
                start: start_text,
                end: end_text,
            },
            total_exports: whole.total,
            successes: whole.successes,
            failures: whole.failures(),
            success_rate: whole.ratio(whole.successes),
            failure_rate: whole.ratio(whole.failures()),
            avg_duration_ms: whole.avg_duration_ms(),
            p95_duration_ms: whole.p95_duration_ms(),
            bytes: Bytes {
                total: whole.total_bytes,
                avg: (whole.total > 0).then(|| whole.total_bytes as f64 / whole.total as f64),
                max: whole.max_bytes,
            },
            by_format: whole.by_format(),
            hours: hours.len(),
            alert,
            webhook,
            dry_run: ctx.params.dry_run,
        };
        JobOutput::new(&report, item_errors, whole.total)
    }
}

/// Hours before the last that the hourly run recomputes, for metrics recorded late.
const LATE_HOURS: i64 = 2;

/// The last full hour, or the given dates from midnight to midnight (UTC).
fn window(ctx: &JobCtx<'_>) -> (DateTime<Utc>, DateTime<Utc>) {
    let Some((start_date, end_date)) = ctx.params.date_range() else {
        let hour = ctx
            .now()
            .duration_trunc(Duration::hours(1))
            .unwrap_or(ctx.now());
        return (hour - Duration::hours(1), hour);
    };
    let midnight =
        |date: chrono::NaiveDate| date.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    (midnight(start_date), midnight(end_date + Days::new(1)))
}

/// The whole window's summary and one per hour (keyed by the hour's start).
fn summarise(
    conn: &Connection,
    start: &str,
    end: &str,
) -> Result<(Summary, BTreeMap<String, Summary>), JobError> {
    let mut statement = conn.prepare_cached(
        "SELECT substr(created_at, 1, 13), status = 'success', duration_ms, bytes, format
           FROM export_metrics
          WHERE created_at >= ?1 AND created_at < ?2 AND source = 'application'",
    )?;
    let mut rows = statement.query((start, end))?;
    let mut whole = Summary::default();
    let mut hours: BTreeMap<String, Summary> = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let hour: String = row.get(0)?;
        let outcome = if row.get::<_, bool>(1)? {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let (duration, bytes): (i64, i64) = (row.get(2)?, row.get(3)?);
        let format: String = row.get(4)?;
        whole.add(outcome, duration, bytes, &format);
        hours
            .entry(format!("{hour}:00:00.000Z"))
            .or_default()
            .add(outcome, duration, bytes, &format);
    }
    Ok((whole, hours))
}

/// Upserts one row per hour, in one short transaction.
fn store_hours(
    conn: &mut Connection,
    hours: &BTreeMap<String, Summary>,
    now: &str,
) -> Result<(), JobError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO export_metrics_hourly (hour, total, successes, failures, success_rate,
                 avg_duration_ms, p95_duration_ms, total_bytes, avg_bytes, max_bytes, by_format, computed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (hour) DO UPDATE SET
                 total = excluded.total, successes = excluded.successes, failures = excluded.failures,
                 success_rate = excluded.success_rate, avg_duration_ms = excluded.avg_duration_ms,
                 p95_duration_ms = excluded.p95_duration_ms, total_bytes = excluded.total_bytes,
                 avg_bytes = excluded.avg_bytes, max_bytes = excluded.max_bytes,
                 by_format = excluded.by_format, computed_at = excluded.computed_at",
        )?;
        for (hour, summary) in hours {
            let avg_bytes = summary.total_bytes as f64 / summary.total.max(1) as f64;
            upsert.execute((
                hour,
                summary.total as i64,
                summary.successes as i64,
                summary.failures() as i64,
                summary.ratio(summary.successes),
                summary.avg_duration_ms(),
                summary.p95_duration_ms(),
                summary.total_bytes,
                avg_bytes,
                summary.max_bytes,
                serde_json::to_string(&summary.by_format()).unwrap_or_default(),
                now,
            ))?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The alert for a window, if any threshold is passed; volume is judged by its busiest hour.
fn alert(
    summary: &Summary,
    busiest_hour: u64,
    settings: &AlertSettings,
    start: &str,
    end: &str,
) -> Option<Value> {
    let failure_rate = summary.ratio(summary.failures()).unwrap_or(0.0);
    let avg_duration = summary.avg_duration_ms().unwrap_or(0.0);
    let mut reasons = Vec::new();
    if summary.total >= settings.min_exports && failure_rate > settings.failure_rate {
        reasons.push("failure_rate");
    }
    if avg_duration > settings.avg_duration_ms as f64 {
        reasons.push("avg_duration");
    }
    if busiest_hour > settings.max_volume {
        reasons.push("volume");
    }
    if reasons.is_empty() {
        return None;
    }
    // The replaced system's words: a failure rate past its threshold is `high`; a slow or busy
    // hour alone is a `warning`.
    let high = reasons.contains(&"failure_rate");
    Some(json!({
        "type": "export_failure_alert",
        "severity": if high { "high" } else { "warning" },
        "failure_rate": failure_rate,
        "threshold": settings.failure_rate,
        "reasons": reasons,
        "total_exports": summary.total,
        "failures": summary.failures(),
        "avg_duration_ms": avg_duration,
        "avg_duration_threshold_ms": settings.avg_duration_ms,
        "busiest_hour_exports": busiest_hour,
        "volume_threshold": settings.max_volume,
        "window": {"start": start, "end": end},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::TimeZone;

    fn settings() -> AlertSettings {
        AlertSettings {
            failure_rate: 0.1,
            min_exports: 10,
            avg_duration_ms: 5_000,
            max_volume: 10_000,
            ..AlertSettings::default()
        }
    }

    fn summary(total: u64, failures: u64, duration_ms: i64) -> Summary {
        let mut summary = Summary::default();
        for index in 0..total {
            let outcome = if index >= failures {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            summary.add(outcome, duration_ms, 100, "csv");
        }
        summary
    }

    #[test]
    fn the_alert_fires_above_ten_percent_failures_only() {
        let fired = alert(&summary(100, 11, 10), 100, &settings(), "s", "e").unwrap();
        assert_eq!(fired["type"], "export_failure_alert");
        assert_eq!(fired["severity"], "high");
        assert_eq!(fired["failure_rate"], 0.11);
        assert_eq!(fired["threshold"], 0.1);
        assert!(alert(&summary(100, 9, 10), 100, &settings(), "s", "e").is_none());
        assert!(alert(&summary(100, 10, 10), 100, &settings(), "s", "e").is_none());
        // Too few exports to judge a rate.
        assert!(alert(&summary(5, 5, 10), 5, &settings(), "s", "e").is_none());
        let slow = alert(&summary(3, 0, 5_001), 3, &settings(), "s", "e").unwrap();
        assert_eq!(slow["reasons"], json!(["avg_duration"]));
        assert_eq!(slow["severity"], "warning");
        let busy = alert(&summary(20_000, 0, 10), 10_001, &settings(), "s", "e").unwrap();
        assert_eq!(busy["reasons"], json!(["volume"]));
        assert!(alert(&summary(20_000, 0, 10), 9_000, &settings(), "s", "e").is_none());
    }

    #[test]
    fn the_aggregate_equals_hand_computed_values_and_is_stored_per_hour() {
        let mut harness = Harness::new(Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 30).unwrap());
        // 11:00-12:00: 20 exports, durations 100..=2000 ms, 2 failures, one a different format.
        for index in 1..=20 {
            let status = if index <= 2 { "failure" } else { "success" };
            let format = if index == 20 { "ndjson" } else { "csv" };
            harness.exec(&format!(
                "INSERT INTO export_metrics (tenant_id, format, status, duration_ms, bytes, created_at)
                 VALUES ('t', '{format}', '{status}', {}, {}, '2026-05-01T11:{:02}:00.000Z')",
                index * 100,
                index * 1000,
                index
            ));
        }
        // Outside the window on both sides.
        harness.exec(
            "INSERT INTO export_metrics (status, duration_ms, created_at) VALUES
               ('failure', 1, '2026-05-01T10:59:59.999Z'), ('failure', 1, '2026-05-01T12:00:00.000Z')",
        );
        let output = ExportMetricsAggregate.run(&harness.ctx()).unwrap();
        let body = &output.body;
        assert_eq!(body["total_exports"], 20);
        assert_eq!(body["success_rate"], 0.9);
        assert_eq!(body["avg_duration_ms"], 1050.0);
        assert_eq!(body["p95_duration_ms"], 1900);
        assert_eq!(
            body["bytes"],
            json!({"total": 210_000, "avg": 10_500.0, "max": 20_000})
        );
        assert_eq!(
            body["by_format"],
            json!({"csv": {"count": 19, "bytes": 190_000}, "ndjson": {"count": 1, "bytes": 20_000}})
        );
        assert!(body["alert"].is_null(), "10% is not above 10%");
        assert_eq!(
            harness.strings("SELECT hour || ' ' || total || ' ' || failures || ' ' || p95_duration_ms FROM export_metrics_hourly ORDER BY hour"),
            // The hour before is recomputed too, for metrics that came late.
            ["2026-05-01T10:00:00.000Z 1 1 1", "2026-05-01T11:00:00.000Z 20 2 1900"]
        );

        harness.params =
            crate::jobs::RunParams::from_text(false, Some("2026-05-01"), None).unwrap();
        let day = ExportMetricsAggregate.run(&harness.ctx()).unwrap();
        assert_eq!(
            (
                day.body["total_exports"].as_u64(),
                day.body["hours"].as_u64()
            ),
            (Some(22), Some(3))
        );
        assert!(day.body["alert"].is_object(), "4 of 22 failed");
    }
}
