//! `cron-tick`'s report schedules. A due schedule renders its report (JSON or CSV) into
//! `reports/{tenant|_all}/{report}-{schedule}-{scheduled time}.{ext}` under the data dir,
//! then, in one transaction, records the run and moves `next_run_at` on with a
//! compare-and-set, so two ticks never run a schedule twice; a tick killed between the two
//! rewrites the same file next time.

use chrono::{DateTime, Duration, Utc};
use rusqlite::TransactionBehavior;
use serde_json::{Map, Value};

use super::{EXPORTS_ONLY, TickError};
use crate::clock::{from_store_text, to_store_text};
use crate::config::layout::REPORTS;
use crate::config::{ConfigError, parse_zone};
use crate::cron::{Schedule, ScheduleError};
use crate::export::partition::{TenantDir, UnsafeTenantId};
use crate::jobs::{JobCtx, JobError, archive};
use crate::store::StoreError;

const BATCH: i64 = 200;

#[derive(Default)]
pub(super) struct ReportOutcome {
    pub(super) run: u64,
    pub(super) planned: u64,
    pub(super) paths: Vec<String>,
}

struct ReportSchedule {
    id: String,
    tenant_id: String,
    report: String,
    format: String,
    schedule: String,
    timezone: String,
    period_days: i64,
    next_run_at: Option<String>,
}

pub(super) fn run_due_reports(
    ctx: &JobCtx<'_>,
    errors: &mut Vec<TickError>,
) -> Result<ReportOutcome, JobError> {
    let now = ctx.now();
    let now_text = to_store_text(now);
    let mut outcome = ReportOutcome::default();
    let mut passed_over: Vec<String> = Vec::new();
    loop {
        if ctx.should_stop() {
            break;
        }
        let due = due_schedules(ctx, &now_text, &passed_over)?;
        let batch_len = due.len() as i64;
        for schedule in due {
            let next = match next_run(&schedule, now) {
                Ok(next) => next,
                Err(fault) => {
                    pass_over(ctx, schedule.id, &fault, errors, &mut passed_over)?;
                    continue;
                }
            };
            if ctx.params.dry_run {
                outcome.run += u64::from(schedule.next_run_at.is_some());
                passed_over.push(schedule.id);
                continue;
            }
            let Some(scheduled_for) = &schedule.next_run_at else {
                ctx.store.conn()?.execute(
                    "UPDATE report_schedules SET next_run_at = ?2 WHERE id = ?1 AND next_run_at IS NULL",
                    (&schedule.id, to_store_text(next)),
                )?;
                outcome.planned += 1;
                continue;
            };
            match render(ctx, &schedule, scheduled_for) {
                Ok((path, rows, bytes)) => {
                    let mut conn = ctx.store.conn()?;
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let claimed = tx.execute(
                        "UPDATE report_schedules SET next_run_at = ?3, last_run_at = ?4, last_error = NULL
                          WHERE id = ?1 AND next_run_at = ?2",
                        (&schedule.id, scheduled_for, to_store_text(next), &now_text),
                    )?;
                    if claimed == 1 {
                        tx.execute(
                            "INSERT INTO report_runs (schedule_id, tenant_id, report, format, path, rows, bytes, scheduled_for, created_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                             ON CONFLICT (schedule_id, scheduled_for) DO NOTHING",
                            (&schedule.id, &schedule.tenant_id, &schedule.report, &schedule.format,
                             &path, rows, bytes, scheduled_for, &now_text),
                        )?;
                        outcome.run += 1;
                        outcome.paths.push(path);
                    }
                    tx.commit()?;
                }
                Err(fault) => pass_over(ctx, schedule.id, &fault, errors, &mut passed_over)?,
            }
        }
        if batch_len < BATCH {
            break;
        }
    }
    Ok(outcome)
}

/// Schedules never planned, or due, other than those this tick passed over (failed, or seen by a dry run).
fn due_schedules(
    ctx: &JobCtx<'_>,
    now_text: &str,
    passed_over: &[String],
) -> Result<Vec<ReportSchedule>, JobError> {
    let conn = ctx.store.conn()?;
    let mut statement = conn.prepare(
        "SELECT id, tenant_id, report, format, schedule, timezone, period_days, next_run_at
           FROM report_schedules
          WHERE active = 1 AND (next_run_at IS NULL OR next_run_at <= ?1)
            AND id NOT IN (SELECT value FROM json_each(?2))
          ORDER BY next_run_at, id LIMIT ?3",
    )?;
    let passed_over = serde_json::to_string(passed_over).unwrap_or_else(|_| "[]".into());
    let rows = statement
        .query_map((now_text, passed_over, BATCH), |row| {
            Ok(ReportSchedule {
                id: row.get(0)?,
                tenant_id: row.get(1)?,
                report: row.get(2)?,
                format: row.get(3)?,
                schedule: row.get(4)?,
                timezone: row.get(5)?,
                period_days: row.get(6)?,
                next_run_at: row.get(7)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Why a schedule's report was not written: recorded on the schedule, and the others go on.
#[derive(Debug, thiserror::Error)]
enum ScheduleFault {
    #[error(transparent)]
    Zone(#[from] ConfigError),
    #[error(transparent)]
    Cron(#[from] ScheduleError),
    #[error("unknown report {0:?}")]
    UnknownReport(String),
    #[error("telemetry_daily covers every tenant; schedule it with tenant_id ''")]
    TenantTelemetry,
    #[error(transparent)]
    Tenant(#[from] UnsafeTenantId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Write(#[from] JobError),
}

fn next_run(schedule: &ReportSchedule, now: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleFault> {
    let zone = parse_zone("timezone", &schedule.timezone)?;
    let cron = Schedule::parse(&schedule.schedule, zone)?;
    cron.next_after(now)
        .ok_or_else(|| ScheduleError::NeverFires(schedule.schedule.clone()).into())
}

/// Records why schedule `id` wrote no report, on the schedule and in the tick's errors, and
/// leaves it for the rest of this tick.
fn pass_over(
    ctx: &JobCtx<'_>,
    id: String,
    fault: &ScheduleFault,
    errors: &mut Vec<TickError>,
    passed_over: &mut Vec<String>,
) -> Result<(), JobError> {
    let error = fault.to_string();
    log::warn!("cron-tick: report schedule {id}: {error}");
    ctx.store.conn()?.execute(
        "UPDATE report_schedules SET last_error = ?2 WHERE id = ?1",
        (&id, &error),
    )?;
    errors.push(TickError::of_schedule(&id, error));
    passed_over.push(id);
    Ok(())
}

/// Renders one report into the data dir; answers its path, rows and bytes.
fn render(
    ctx: &JobCtx<'_>,
    schedule: &ReportSchedule,
    scheduled_for: &str,
) -> Result<(String, i64, i64), ScheduleFault> {
    let owner = if schedule.tenant_id.is_empty() {
        "_all".to_string()
    } else {
        TenantDir::new(&schedule.tenant_id)?.as_str().to_string()
    };
    let end = from_store_text(scheduled_for).unwrap_or(ctx.now());
    let start = end - Duration::days(schedule.period_days.clamp(1, 366));
    let (columns, rows) = query_report(ctx, schedule, &to_store_text(start), &to_store_text(end))?;
    let contents = match schedule.format.as_str() {
        "csv" => csv(&columns, &rows),
        _ => json_rows(&columns, &rows),
    };
    let relative = format!(
        "{REPORTS}/{owner}/{}-{}-{}.{}",
        schedule.report,
        archive::stem("", &schedule.id).trim_start_matches('-'),
        archive::stem(scheduled_for, "").trim_end_matches('-'),
        if schedule.format == "csv" {
            "csv"
        } else {
            "json"
        }
    );
    archive::write(ctx.data_dir(), &relative, contents.as_bytes())?;
    Ok((relative, rows.len() as i64, contents.len() as i64))
}

/// The report catalogue: columns and rows for the schedule's tenant and period.
fn query_report(
    ctx: &JobCtx<'_>,
    schedule: &ReportSchedule,
    start: &str,
    end: &str,
) -> Result<(Vec<String>, Vec<Vec<Value>>), ScheduleFault> {
    let window = "(?1 = '' OR tenant_id = ?1) AND created_at >= ?2 AND created_at < ?3";
    let sql = match schedule.report.as_str() {
        "interactions_by_channel" => format!(
            "SELECT channel, outcome, COUNT(*) AS interactions FROM interaction_history
              WHERE {window} GROUP BY channel, outcome ORDER BY channel, outcome"
        ),
        "export_summary" => format!(
            "SELECT format, COUNT(*) AS exports, SUM(status = 'failure') AS failures,
                    ROUND(AVG(duration_ms)) AS avg_duration_ms, SUM(bytes) AS bytes
               FROM export_metrics WHERE {window} AND {EXPORTS_ONLY} GROUP BY format ORDER BY format"
        ),
        "telemetry_daily" if !schedule.tenant_id.is_empty() => {
            return Err(ScheduleFault::TenantTelemetry);
        }
        "telemetry_daily" => "SELECT date, event, count, unique_users FROM telemetry_daily
              WHERE date >= substr(?2, 1, 10) AND date < substr(?3, 1, 10)
              ORDER BY date, event"
            .to_string(),
        other => return Err(ScheduleFault::UnknownReport(other.to_string())),
    };
    let conn = ctx.store.conn()?;
    let mut statement = conn.prepare(&sql)?;
    let columns: Vec<String> = statement
        .column_names()
        .iter()
        .map(|name| name.to_string())
        .collect();
    let mut rows = Vec::new();
    let mut found = statement.query((&schedule.tenant_id, start, end))?;
    while let Some(row) = found.next()? {
        let object = crate::store::row_object(row, &columns, 0)?;
        rows.push(
            columns
                .iter()
                .map(|column| object[column].clone())
                .collect(),
        );
    }
    Ok((columns, rows))
}

fn json_rows(columns: &[String], rows: &[Vec<Value>]) -> String {
    let objects: Vec<Value> = rows
        .iter()
        .map(|row| {
            let object: Map<String, Value> =
                columns.iter().cloned().zip(row.iter().cloned()).collect();
            Value::Object(object)
        })
        .collect();
    Value::Array(objects).to_string()
}

/// RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled. Text that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a leading `'`; numbers
/// are left as they are.
fn csv(columns: &[String], rows: &[Vec<Value>]) -> String {
    let field = |text: &str| {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_string()
        }
    };
    let text = |text: &str| {
        if text.starts_with(['=', '+', '-', '@']) {
            field(&format!("'{text}"))
        } else {
            field(text)
        }
    };
    let mut out = columns
        .iter()
        .map(|column| text(column))
        .collect::<Vec<_>>()
        .join(",");
    out.push_str("\r\n");
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .map(|value| match value {
                Value::String(string) => text(string),
                Value::Null => String::new(),
                other => field(&other.to_string()),
            })
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::CronTick;
    use super::*;
    use crate::jobs::Job;
    use crate::jobs::test_support::Harness;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn csv_quotes_what_needs_quoting_and_defuses_formulas() {
        let columns = vec!["a".to_string(), "b".to_string()];
        let rows = vec![
            vec![json!("x,y"), json!(3)],
            vec![json!("say \"hi\""), Value::Null],
            vec![json!("=cmd()"), json!(-1)],
        ];
        assert_eq!(
            csv(&columns, &rows),
            "a,b\r\n\"x,y\",3\r\n\"say \"\"hi\"\"\",\r\n'=cmd(),-1\r\n"
        );
    }

    #[test]
    fn due_reports_are_rendered_once_and_rescheduled() {
        let harness = Harness::new(Utc.with_ymd_and_hms(2026, 5, 4, 6, 0, 0).unwrap());
        harness.exec(
            "INSERT INTO report_schedules (id, tenant_id, report, format, schedule, next_run_at) VALUES
               ('weekly', 'acme', 'interactions_by_channel', 'csv', '0 6 * * MON', '2026-05-04T06:00:00.000Z'),
               ('fresh', 'acme', 'export_summary', 'json', '0 * * * *', NULL),
               ('unsafe', '../x', 'export_summary', 'json', '0 * * * *', '2026-05-04T05:00:00.000Z');
             INSERT INTO interaction_history (id, tenant_id, channel, outcome, created_at) VALUES
               ('1', 'acme', 'email', 'opened', '2026-05-01T00:00:00.000Z'),
               ('2', 'acme', 'email', 'opened', '2026-05-02T00:00:00.000Z'),
               ('3', 'acme', 'sms', 'bounced', '2026-05-03T00:00:00.000Z'),
               ('4', 'acme', 'sms', 'bounced', '2026-04-01T00:00:00.000Z');",
        );
        let output = CronTick.run(&harness.ctx()).unwrap();
        assert_eq!(
            (
                output.body["reportsRun"].as_u64(),
                output.body["reportsPlanned"].as_u64()
            ),
            (Some(1), Some(1))
        );
        assert_eq!(output.body["errors"][0]["scheduleId"], "unsafe");
        let path = output.body["reports"][0].as_str().unwrap();
        assert_eq!(
            path,
            "reports/acme/interactions_by_channel-weekly-2026-05-04T06_00_00_000Z.csv"
        );
        let text = std::fs::read_to_string(harness.config.data_dir.join(path)).unwrap();
        assert_eq!(
            text,
            "channel,outcome,interactions\r\nemail,opened,2\r\nsms,bounced,1\r\n"
        );
        assert_eq!(
            harness.strings("SELECT id || ' ' || next_run_at FROM report_schedules WHERE id <> 'unsafe' ORDER BY id"),
            ["fresh 2026-05-04T07:00:00.000Z", "weekly 2026-05-11T06:00:00.000Z"]
        );
        assert_eq!(harness.query::<i64>("SELECT COUNT(*) FROM report_runs"), 1);
        let again = CronTick.run(&harness.ctx()).unwrap();
        assert_eq!(again.body["reportsRun"], 0, "run once");
    }
}
