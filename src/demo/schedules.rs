//! Rows that carry their own schedule: flows, model retrains, alert rules and report
//! schedules, some due now (`flow-scheduler-tick`, `scheduled-retrains`, `cron-tick`).

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Transaction, params};

use super::{DemoError, Tenant};
use crate::clock::to_store_text;

pub(super) fn insert_flows(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    index: usize,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let flows: [(&str, &str, &str, Option<DateTime<Utc>>); 4] = [
        (
            "daily-digest",
            "0 9 * * *",
            "Europe/Berlin",
            Some(now - Duration::minutes(5)),
        ),
        (
            "weekly-report",
            "0 8 * * MON",
            "America/New_York",
            Some(now + Duration::days(2)),
        ),
        (
            "reminders",
            "*/30 * * * *",
            "UTC",
            Some(now - Duration::hours(6)),
        ),
        ("new-flow", "15 10 * * *", "UTC", None),
    ];
    for (name, schedule, zone, next) in flows {
        tx.execute(
            "INSERT INTO flows (id, tenant_id, name, schedule, timezone, enabled, next_run_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![format!("flow-{}-{name}", tenant.id), tenant.id, name, schedule, zone, tenant.active || index == 0, next.map(to_store_text)],
        )?;
    }
    Ok(4)
}

pub(super) fn insert_models(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    type Model<'a> = (&'a str, Option<&'a str>, Option<DateTime<Utc>>);
    let models: [Model<'_>; 3] = [
        ("churn", Some("0 2 * * *"), Some(now - Duration::hours(1))),
        (
            "next-best-action",
            Some("0 3 * * SUN"),
            Some(now + Duration::days(3)),
        ),
        ("propensity", None, None),
    ];
    for (name, schedule, next) in models {
        tx.execute(
            "INSERT INTO ml_models (id, tenant_id, name, retrain_schedule, next_retrain_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![format!("model-{}-{name}", tenant.id), tenant.id, name, schedule, next.map(to_store_text)],
        )?;
    }
    Ok(3)
}

/// Two alert rules (one breached by the demo's bounces) and a weekly report that is due.
pub(super) fn insert_alerting(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let id = &tenant.id;
    tx.execute(
        "INSERT INTO alert_rules (id, tenant_id, name, metric, window_minutes, comparator, threshold) VALUES
             (?1, ?3, 'Bounces in the last day', 'negative_outcomes', 1440, '>=', 1),
             (?2, ?3, 'Export failure rate', 'export_failure_rate', 1440, '>', 0.5)",
        params![format!("rule-{id}-bounces"), format!("rule-{id}-exports"), id],
    )?;
    tx.execute(
        "INSERT INTO report_schedules (id, tenant_id, name, report, format, schedule, next_run_at)
         VALUES (?1, ?2, 'Weekly channels', 'interactions_by_channel', 'csv', '0 6 * * MON', ?3)",
        params![
            format!("report-{id}-weekly"),
            id,
            to_store_text(now - Duration::minutes(1))
        ],
    )?;
    Ok(3)
}
