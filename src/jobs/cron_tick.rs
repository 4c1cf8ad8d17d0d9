//! `cron-tick`, the legacy `/api/cron/tick`: evaluate every active alert rule, then run the
//! report schedules that are due.
//!
//! A rule compares one metric of a fixed catalogue, over its window, with its threshold. It
//! fires once when a breach starts (state `ok` to `firing`, an `alert_events` row `fired`, and
//! a POST to `ALERT_WEBHOOK_URL` when set) and resolves once when it clears. Metrics are SQL
//! of this job, never text from the rule.
//!
//! A due report schedule renders its report (JSON or CSV) into
//! `reports/{tenant|_all}/{report}-{schedule}-{scheduled time}.{ext}` under the data dir,
//! then, in one transaction, records the run and moves `next_run_at` on with a
//! compare-and-set, so two ticks never run a schedule twice; a tick killed between the two
//! rewrites the same file next time.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Connection, TransactionBehavior};
use serde_json::{Map, Value, json};

use super::{Job, JobCtx, JobError, JobOutput, archive};
use crate::clock::{from_store_text, to_store_text};
use crate::config::parse_zone;
use crate::cron::Schedule;
use crate::export::partition::TenantDir;

pub struct CronTick;

const NEGATIVE_OUTCOMES: &str = "'bounced', 'unsubscribed', 'complained', 'failed', 'negative'";
const BATCH: i64 = 200;
/// Export metrics that are exports: file cleanups record metric rows too, but are not exports.
const EXPORTS_ONLY: &str = "export_type <> 'file_cleanup'";
const MAX_WINDOW_MINUTES: i64 = 366 * 24 * 60;

impl Job for CronTick {
    fn name(&self) -> &'static str {
        "cron-tick"
    }

    fn default_schedule(&self) -> &'static str {
        "* * * * *"
    }

    fn legacy_routes(&self) -> &'static [&'static str] {
        &["/api/cron/tick"]
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let mut errors = Vec::new();
        let alerts = evaluate_rules(ctx, &mut errors)?;
        let reports = run_due_reports(ctx, &mut errors)?;
        Ok(JobOutput {
            body: json!({
                "ok": errors.is_empty(),
                "rulesEvaluated": alerts.evaluated,
                "fired": alerts.fired,
                "resolved": alerts.resolved,
                "reportsRun": reports.run,
                "reportsPlanned": reports.planned,
                "reports": reports.paths,
                "errors": errors,
                "dryRun": ctx.params.dry_run,
            }),
            item_errors: errors.len() as u64,
            rows_processed: alerts.evaluated + reports.run,
        })
    }
}

#[derive(Default)]
struct AlertOutcome {
    evaluated: u64,
    fired: u64,
    resolved: u64,
}

struct Rule {
    id: String,
    tenant_id: String,
    name: String,
    metric: String,
    window_minutes: i64,
    comparator: String,
    threshold: f64,
    state: String,
}

fn evaluate_rules(ctx: &JobCtx<'_>, errors: &mut Vec<Value>) -> Result<AlertOutcome, JobError> {
    let rules: Vec<Rule> = {
        let conn = ctx.store.conn()?;
        let mut statement = conn.prepare(
            "SELECT id, tenant_id, name, metric, window_minutes, comparator, threshold, state
               FROM alert_rules WHERE active = 1 ORDER BY id",
        )?;
        statement
            .query_map([], |row| {
                Ok(Rule {
                    id: row.get(0)?,
                    tenant_id: row.get(1)?,
                    name: row.get(2)?,
                    metric: row.get(3)?,
                    window_minutes: row.get(4)?,
                    comparator: row.get(5)?,
                    threshold: row.get(6)?,
                    state: row.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?
    };
    let now = ctx.now();
    let now_text = to_store_text(now);
    let mut outcome = AlertOutcome::default();
    for rule in rules {
        if ctx.should_stop() {
            break;
        }
        // Clamped: a window beyond a year is a typo, and chrono cannot go back billions of minutes.
        let from = to_store_text(
            now - Duration::minutes(rule.window_minutes.clamp(1, MAX_WINDOW_MINUTES)),
        );
        let value = {
            let conn = ctx.store.conn()?;
            metric_value(&conn, &rule.metric, &rule.tenant_id, &from, &now_text)?
        };
        let value = match value {
            Ok(value) => value,
            Err(error) => {
                errors.push(json!({"ruleId": rule.id, "error": error}));
                ctx.store.conn()?.execute(
                    "UPDATE alert_rules SET last_error = ?2, last_evaluated_at = ?3 WHERE id = ?1",
                    (&rule.id, &error, &now_text),
                )?;
                continue;
            }
        };
        outcome.evaluated += 1;
        let breached = match rule.comparator.as_str() {
            ">" => value > rule.threshold,
            ">=" => value >= rule.threshold,
            "<" => value < rule.threshold,
            _ => value <= rule.threshold,
        };
        let transition = match (breached, rule.state.as_str()) {
            (true, "ok") => Some(("firing", "fired")),
            (false, "firing") => Some(("ok", "resolved")),
            _ => None,
        };
        if ctx.params.dry_run {
            continue;
        }
        let mut conn = ctx.store.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE alert_rules SET last_value = ?2, last_evaluated_at = ?3, last_error = NULL WHERE id = ?1",
            (&rule.id, value, &now_text),
        )?;
        let Some((state, kind)) = transition else {
            tx.commit()?;
            continue;
        };
        // Compare-and-set on the state: a breach is recorded once however many ticks race.
        let changed = tx.execute(
            "UPDATE alert_rules SET state = ?2 WHERE id = ?1 AND state = ?3",
            (&rule.id, state, &rule.state),
        )?;
        if changed == 1 {
            tx.execute(
                "INSERT INTO alert_events (rule_id, tenant_id, kind, value, threshold, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                (
                    &rule.id,
                    &rule.tenant_id,
                    kind,
                    value,
                    rule.threshold,
                    &now_text,
                ),
            )?;
        }
        tx.commit()?;
        if changed == 0 {
            continue;
        }
        if kind == "fired" {
            outcome.fired += 1;
        } else {
            outcome.resolved += 1;
        }
        let event = json!({"type": "alert_rule", "event": kind, "ruleId": rule.id, "name": rule.name,
                           "tenantId": rule.tenant_id, "metric": rule.metric, "value": value,
                           "comparator": rule.comparator, "threshold": rule.threshold, "at": now_text});
        log::warn!(target: crate::logging::ALERT_TARGET, "{event}");
    }
    if !ctx.params.dry_run {
        notify_webhook(ctx, errors)?;
    }
    Ok(outcome)
}

/// Posts alert events the webhook has not taken yet, oldest first. An event whose post fails
/// stays pending for the next tick; events over a day old are no longer news and are left.
fn notify_webhook(ctx: &JobCtx<'_>, errors: &mut Vec<Value>) -> Result<(), JobError> {
    let Some(url) = &ctx.config.alerts.webhook else {
        return Ok(());
    };
    let since = to_store_text(ctx.now() - Duration::days(1));
    let pending: Vec<(i64, Value)> = {
        let conn = ctx.store.conn()?;
        let mut statement = conn.prepare(
            "SELECT e.id, e.kind, e.rule_id, COALESCE(r.name, ''), e.tenant_id, COALESCE(r.metric, ''),
                    e.value, COALESCE(r.comparator, ''), e.threshold, e.created_at
               FROM alert_events e LEFT JOIN alert_rules r ON r.id = e.rule_id
              WHERE e.notified_at IS NULL AND e.created_at >= ?1 ORDER BY e.id LIMIT 100",
        )?;
        statement
            .query_map([since], |row| {
                let event = json!({
                    "type": "alert_rule", "event": row.get::<_, String>(1)?,
                    "ruleId": row.get::<_, String>(2)?, "name": row.get::<_, String>(3)?,
                    "tenantId": row.get::<_, String>(4)?, "metric": row.get::<_, String>(5)?,
                    "value": row.get::<_, Option<f64>>(6)?, "comparator": row.get::<_, String>(7)?,
                    "threshold": row.get::<_, Option<f64>>(8)?, "at": row.get::<_, String>(9)?,
                });
                Ok((row.get(0)?, event))
            })?
            .collect::<Result<_, _>>()?
    };
    for (id, event) in pending {
        match crate::webhook::post_json(url, &event) {
            Ok(_) => {
                ctx.store.conn()?.execute(
                    "UPDATE alert_events SET notified_at = ?2 WHERE id = ?1",
                    (id, to_store_text(ctx.now())),
                )?;
            }
            Err(error) => {
                errors
                    .push(json!({"ruleId": event["ruleId"], "error": format!("webhook: {error}")}));
                // The receiver is down: the rest waits for the next tick too.
                break;
            }
        }
    }
    Ok(())
}

/// The metric catalogue. The outer error is the store's; the inner one an unknown metric.
fn metric_value(
    conn: &Connection,
    metric: &str,
    tenant: &str,
    from: &str,
    to: &str,
) -> Result<Result<f64, String>, JobError> {
    let window = "(?1 = '' OR tenant_id = ?1) AND created_at >= ?2 AND created_at < ?3";
    let (sql, rate) = match metric {
        "interactions" => (
            format!("SELECT COUNT(*), 0 FROM interaction_history WHERE {window}"),
            false,
        ),
        "negative_outcomes" | "negative_outcome_rate" => (
            format!(
                "SELECT SUM(outcome IN ({NEGATIVE_OUTCOMES})), COUNT(*) FROM interaction_history WHERE {window}"
            ),
            metric.ends_with("_rate"),
        ),
        "export_failures" | "export_failure_rate" => (
            format!(
                "SELECT SUM(status = 'failure'), COUNT(*) FROM export_metrics WHERE {window} AND {EXPORTS_ONLY}"
            ),
            metric.ends_with("_rate"),
        ),
        "audit_events" => (
            format!("SELECT COUNT(*), 0 FROM audit_log WHERE {window}"),
            false,
        ),
        other => return Ok(Err(format!("unknown metric {other:?}"))),
    };
    let (count, total): (Option<f64>, f64) = conn.query_row(&sql, (tenant, from, to), |row| {
        Ok((row.get(0)?, row.get(1)?))
    })?;
    let count = count.unwrap_or(0.0);
    Ok(Ok(if rate {
        if total > 0.0 { count / total } else { 0.0 }
    } else {
        count
    }))
}

#[derive(Default)]
struct ReportOutcome {
    run: u64,
    planned: u64,
    paths: Vec<String>,
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

fn run_due_reports(ctx: &JobCtx<'_>, errors: &mut Vec<Value>) -> Result<ReportOutcome, JobError> {
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
                Err(error) => {
                    record_schedule_error(ctx, &schedule.id, &error)?;
                    errors.push(json!({"scheduleId": schedule.id, "error": error}));
                    passed_over.push(schedule.id);
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
                Err(error) => {
                    record_schedule_error(ctx, &schedule.id, &error)?;
                    errors.push(json!({"scheduleId": schedule.id, "error": error}));
                    passed_over.push(schedule.id);
                }
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

fn next_run(schedule: &ReportSchedule, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let zone = parse_zone("timezone", &schedule.timezone).map_err(|error| error.to_string())?;
    Schedule::parse(&schedule.schedule, zone)
        .map_err(|error| error.to_string())?
        .next_after(now)
        .ok_or_else(|| format!("cron expression {:?} never fires", schedule.schedule))
}

fn record_schedule_error(ctx: &JobCtx<'_>, id: &str, error: &str) -> Result<(), JobError> {
    log::warn!("cron-tick: report schedule {id}: {error}");
    ctx.store.conn()?.execute(
        "UPDATE report_schedules SET last_error = ?2 WHERE id = ?1",
        (id, error),
    )?;
    Ok(())
}

/// Renders one report into the data dir; answers its path, rows and bytes.
fn render(
    ctx: &JobCtx<'_>,
    schedule: &ReportSchedule,
    scheduled_for: &str,
) -> Result<(String, i64, i64), String> {
    let owner = if schedule.tenant_id.is_empty() {
        "_all".to_string()
    } else {
        TenantDir::new(&schedule.tenant_id)
            .map_err(|error| error.to_string())?
            .as_str()
            .to_string()
    };
    let end = from_store_text(scheduled_for).unwrap_or(ctx.now());
    let start = end - Duration::days(schedule.period_days.clamp(1, 366));
    let (columns, rows) = query_report(ctx, schedule, &to_store_text(start), &to_store_text(end))?;
    let contents = match schedule.format.as_str() {
        "csv" => csv(&columns, &rows),
        _ => json_rows(&columns, &rows),
    };
    let relative = format!(
        "reports/{owner}/{}-{}-{}.{}",
        schedule.report,
        archive::stem("", &schedule.id).trim_start_matches('-'),
        archive::stem(scheduled_for, "").trim_end_matches('-'),
        if schedule.format == "csv" {
            "csv"
        } else {
            "json"
        }
    );
    archive::write(ctx.data_dir(), &relative, contents.as_bytes())
        .map_err(|error| error.to_string())?;
    Ok((relative, rows.len() as i64, contents.len() as i64))
}

/// The report catalogue: columns and rows for the schedule's tenant and period.
fn query_report(
    ctx: &JobCtx<'_>,
    schedule: &ReportSchedule,
    start: &str,
    end: &str,
) -> Result<(Vec<String>, Vec<Vec<Value>>), String> {
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
            return Err("telemetry_daily covers every tenant; schedule it with tenant_id ''".into());
        }
        "telemetry_daily" => "SELECT date, event, count, unique_users FROM telemetry_daily
              WHERE date >= substr(?2, 1, 10) AND date < substr(?3, 1, 10)
              ORDER BY date, event"
            .to_string(),
        other => return Err(format!("unknown report {other:?}")),
    };
    let conn = ctx.store.conn().map_err(|error| error.to_string())?;
    let mut statement = conn.prepare(&sql).map_err(|error| error.to_string())?;
    let columns: Vec<String> = statement
        .column_names()
        .iter()
        .map(|name| name.to_string())
        .collect();
    let mut rows = Vec::new();
    let mut found = statement
        .query((&schedule.tenant_id, start, end))
        .map_err(|error| error.to_string())?;
    while let Some(row) = found.next().map_err(|error| error.to_string())? {
        let object =
            crate::store::row_object(row, &columns, 0).map_err(|error| error.to_string())?;
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
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::TimeZone;

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
    fn a_rule_fires_once_per_breach_and_resolves_when_it_clears() {
        let mut harness = Harness::new(Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap());
        harness.exec(
            "INSERT INTO alert_rules (id, tenant_id, metric, window_minutes, comparator, threshold) VALUES
               ('bounces', 'acme', 'negative_outcomes', 60, '>=', 2),
               ('bogus', '', 'cpu', 5, '>', 1);
             INSERT INTO interaction_history (id, tenant_id, outcome, created_at) VALUES
               ('1', 'acme', 'bounced', '2026-05-01T11:30:00.000Z'),
               ('2', 'acme', 'bounced', '2026-05-01T11:40:00.000Z'),
               ('3', 'other', 'bounced', '2026-05-01T11:40:00.000Z'),
               ('4', 'acme', 'bounced', '2026-05-01T10:00:00.000Z');",
        );
        let first = CronTick.run(&harness.ctx()).unwrap();
        assert_eq!(
            (
                first.body["fired"].as_u64(),
                first.body["rulesEvaluated"].as_u64()
            ),
            (Some(1), Some(1))
        );
        assert_eq!(first.body["errors"][0]["ruleId"], "bogus");
        let again = CronTick.run(&harness.ctx()).unwrap();
        assert_eq!(again.body["fired"], 0, "still breached: no second event");

        harness.clock =
            crate::clock::FixedClock(Utc.with_ymd_and_hms(2026, 5, 1, 12, 35, 0).unwrap());
        let later = CronTick.run(&harness.ctx()).unwrap();
        assert_eq!(later.body["resolved"], 1);
        assert_eq!(
            harness.strings("SELECT kind || ' ' || value FROM alert_events ORDER BY id"),
            ["fired 2.0", "resolved 1.0"]
        );
        assert_eq!(
            harness.query::<String>("SELECT state FROM alert_rules WHERE id = 'bounces'"),
            "ok"
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
