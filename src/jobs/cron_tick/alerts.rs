//! `cron-tick`'s alert rules. A rule compares one metric of a fixed catalogue, over its
//! window, with its threshold. It fires once when a breach starts (state `ok` to `firing`, an
//! `alert_events` row `fired`, and a POST to `ALERT_WEBHOOK_URL` when set) and resolves once
//! when it clears. Metrics are SQL of this job, never text from the rule.

use chrono::Duration;
use rusqlite::{Connection, TransactionBehavior};
use serde_json::{Value, json};

use super::{EXPORTS_ONLY, TickError};
use crate::clock::to_store_text;
use crate::jobs::{JobCtx, JobError};

const NEGATIVE_OUTCOMES: &str = "'bounced', 'unsubscribed', 'complained', 'failed', 'negative'";
const MAX_WINDOW_MINUTES: i64 = 366 * 24 * 60;

#[derive(Default)]
pub(super) struct AlertOutcome {
    pub(super) evaluated: u64,
    pub(super) fired: u64,
    pub(super) resolved: u64,
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

pub(super) fn evaluate_rules(
    ctx: &JobCtx<'_>,
    errors: &mut Vec<TickError>,
) -> Result<AlertOutcome, JobError> {
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
            Err(unknown) => {
                let error = unknown.to_string();
                errors.push(TickError::of_rule(&rule.id, error.clone()));
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

/// The longest one alert event's POST may take.
const EVENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Posts alert events the webhook has not taken yet, oldest first. An event whose post fails
/// stays pending for the next tick; events over a day old are no longer news and are left.
fn notify_webhook(ctx: &JobCtx<'_>, errors: &mut Vec<TickError>) -> Result<(), JobError> {
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
        // One attempt each, within the time the run has left: a receiver that accepts and
        // never answers costs this tick a couple of seconds, and the event waits for the next.
        let left = ctx
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match crate::webhook::post_once(url, &event.to_string(), EVENT_TIMEOUT.min(left)) {
            Ok(_) => {
                ctx.store.conn()?.execute(
                    "UPDATE alert_events SET notified_at = ?2 WHERE id = ?1",
                    (id, to_store_text(ctx.now())),
                )?;
            }
            Err(error) => {
                let rule_id = event["ruleId"].as_str().unwrap_or_default();
                errors.push(TickError::of_rule(rule_id, format!("webhook: {error}")));
                // The receiver is down: the rest waits for the next tick too.
                break;
            }
        }
    }
    Ok(())
}

/// A rule names a metric the catalogue does not have.
#[derive(Debug, thiserror::Error)]
#[error("unknown metric {0:?}")]
struct UnknownMetric(String);

/// The metric catalogue. The outer error is the store's; the inner one an unknown metric.
fn metric_value(
    conn: &Connection,
    metric: &str,
    tenant: &str,
    from: &str,
    to: &str,
) -> Result<Result<f64, UnknownMetric>, JobError> {
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
        other => return Ok(Err(UnknownMetric(other.to_string()))),
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

#[cfg(test)]
mod tests {
    use super::super::CronTick;
    use crate::jobs::Job;
    use crate::jobs::test_support::Harness;
    use chrono::{TimeZone, Utc};

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
}
