//! `edgecron demo`: realistic, deterministic sample data for every job, relative to now.
//!
//! The same arguments always give the same rows (a fixed seed; times are offsets from now).
//! Running it again replaces the data of its own tenants, their checkpoints and export files.

use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Transaction, params};
use serde_json::{Value, json};

use crate::clock::to_store_text;
use crate::config::Config;
use crate::export::partition::{TenantDir, tenant_root};
use crate::io_error::IoError;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("--tenants must be between 1 and 1000")]
    TenantCount,
}

const TENANT_NAMES: &[(&str, &str)] = &[
    ("acme", "Acme Corp"),
    ("globex", "Globex"),
    ("initech", "Initech"),
    ("umbrella", "Umbrella Health"),
    ("hooli", "Hooli"),
    ("stark", "Stark Industries"),
    ("wayne", "Wayne Enterprises"),
    ("tyrell", "Tyrell"),
];
const CHANNELS: &[&str] = &["email", "sms", "push", "web", "call", "chat"];
const OUTCOMES: &[&str] = &[
    "delivered",
    "opened",
    "clicked",
    "replied",
    "converted",
    "bounced",
    "unsubscribed",
];
const CAMPAIGNS: &[&str] = &[
    "welcome",
    "renewal",
    "winback",
    "newsletter",
    "onboarding",
    "survey",
];
const EVENTS: &[&str] = &[
    "login",
    "page_view",
    "export_started",
    "search",
    "report_viewed",
];
const HISTORY_DAYS: i64 = 120;
/// Rows in one cluster that share a single `created_at`, as bulk imports produce.
const SHARED_TIMESTAMP_ROWS: usize = 60;

struct Tenant {
    id: String,
    name: String,
    active: bool,
}

fn tenants(count: usize) -> Vec<Tenant> {
    (0..count)
        .map(|index| {
            let (id, name) = TENANT_NAMES
                .get(index)
                .map(|(id, name)| (id.to_string(), name.to_string()))
                .unwrap_or_else(|| {
                    (
                        format!("tenant-{:03}", index + 1),
                        format!("Tenant {}", index + 1),
                    )
                });
            // The last tenant is the inactive one (when there is more than one).
            Tenant {
                id,
                name,
                active: count == 1 || index + 1 < count,
            }
        })
        .collect()
}

/// Fills the store; returns a summary of what was written.
pub fn fill(
    store: &Store,
    config: &Config,
    now: DateTime<Utc>,
    tenant_count: usize,
    rows: usize,
) -> Result<Value, DemoError> {
    if !(1..=1000).contains(&tenant_count) {
        return Err(DemoError::TenantCount);
    }
    let started = Instant::now();
    let tenants = tenants(tenant_count);
    let mut rng = fastrand::Rng::with_seed(0x00ED_6EC2_0000_0001);
    let mut conn = store.conn()?;
    // One large transaction: a cache big enough to hold it keeps SQLite from spilling dirty
    // pages to the WAL part-way (this connection belongs to a short-lived command).
    conn.pragma_update(None, "cache_size", -256 * 1024)?;
    let tx = conn.transaction()?;
    let tenant_ids: Vec<&str> = tenants.iter().map(|tenant| tenant.id.as_str()).collect();
    wipe(&tx, &tenant_ids)?;
    for tenant in &tenants {
        remove_dir(
            &config
                .data_dir
                .join(tenant_root(TenantDir::new(&tenant.id).map_err(
                    |error| {
                        IoError::during("demo tenant id")(std::io::Error::other(error.to_string()))
                    },
                )?)),
        )?;
        remove_dir(&config.data_dir.join("blobs").join(&tenant.id))?;
        remove_dir(&config.data_dir.join("downloads").join(&tenant.id))?;
        remove_dir(&config.data_dir.join("uploads").join(&tenant.id))?;
    }

    let interactions = insert_interactions(&tx, &tenants, &mut rng, now, rows)?;
    let mut counts = json!({"tenants": tenants.len(), "interactionHistory": interactions});
    for (index, tenant) in tenants.iter().enumerate() {
        tx.execute(
            "INSERT INTO tenants (id, name, active, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                tenant.id,
                tenant.name,
                tenant.active,
                to_store_text(now - Duration::days(400))
            ],
        )?;
        add(
            &mut counts,
            "suppressions",
            insert_suppressions(&tx, tenant, &mut rng, now)?,
        );
        add(
            &mut counts,
            "interactionSummaries",
            insert_summaries(&tx, tenant, &mut rng, now)?,
        );
        add(
            &mut counts,
            "retentionPolicies",
            insert_policies(&tx, tenant, index)?,
        );
        let traces = (rows / tenants.len() / 20).max(10);
        add(
            &mut counts,
            "decisionTraces",
            insert_traces(&tx, tenant, &mut rng, now, traces)?,
        );
        add(
            &mut counts,
            "aiAttachments",
            insert_attachments(&tx, tenant, &mut rng, now, &config.data_dir)?,
        );
        add(
            &mut counts,
            "auditLog",
            insert_audit(&tx, tenant, &mut rng, now)?,
        );
        add(
            &mut counts,
            "outbox",
            insert_outbox(&tx, tenant, &mut rng, now)?,
        );
        add(
            &mut counts,
            "approvals",
            insert_approvals(&tx, tenant, &mut rng, now)?,
        );
        add(&mut counts, "flows", insert_flows(&tx, tenant, index, now)?);
        add(&mut counts, "mlModels", insert_models(&tx, tenant, now)?);
        add(
            &mut counts,
            "alertRulesAndReports",
            insert_alerting(&tx, tenant, now)?,
        );
        add(
            &mut counts,
            "imports",
            insert_imports(&tx, tenant, &mut rng, now, &config.data_dir)?,
        );
        add(
            &mut counts,
            "exportLogs",
            insert_export_logs(&tx, tenant, &mut rng, now, &config.data_dir)?,
        );
        add(
            &mut counts,
            "exportMetrics",
            insert_export_metrics(&tx, tenant, &mut rng, now)?,
        );
    }
    add(
        &mut counts,
        "telemetryEvents",
        insert_telemetry(&tx, &mut rng, now, (rows / 4).max(500))?,
    );
    add(
        &mut counts,
        "configuration",
        insert_configuration(&tx, &config.data_dir)?,
    );
    tx.commit()?;
    let seconds = started.elapsed().as_secs_f64();
    log::info!("demo: {interactions} interaction rows and the rest in {seconds:.1}s");
    Ok(
        json!({"ok": true, "store": store.path().display().to_string(), "rows": counts, "seconds": (seconds * 1000.0).round() / 1000.0}),
    )
}

fn add(counts: &mut Value, key: &str, value: u64) {
    let current = counts[key].as_u64().unwrap_or(0);
    counts[key] = json!(current + value);
}

fn remove_dir(path: &Path) -> Result<(), DemoError> {
    match std::fs::remove_dir_all(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(IoError::during(format!("removing {}", path.display()))(error).into())
        }
        _ => Ok(()),
    }
}

fn wipe(tx: &Transaction<'_>, tenant_ids: &[&str]) -> Result<(), DemoError> {
    let ids = serde_json::to_string(tenant_ids).unwrap_or_else(|_| "[]".into());
    for table in [
        "interaction_history",
        "suppressions",
        "interaction_summaries",
        "retention_policies",
        "decision_traces",
        "ai_attachments",
        "audit_log",
        "outbox",
        "approvals",
        "flows",
        "ml_models",
        "import_runs",
        "import_jobs",
        "temp_uploads",
        "export_logs",
        "export_metrics",
        "export_checkpoints",
        "export_files",
        "engagement_health",
        "alert_rules",
        "alert_events",
        "report_schedules",
        "report_runs",
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE tenant_id IN (SELECT value FROM json_each(?1))"),
            [&ids],
        )?;
    }
    tx.execute("DELETE FROM import_items WHERE run_id LIKE 'demo-%'", [])?;
    tx.execute("DELETE FROM telemetry_events WHERE id LIKE 'demo-%'", [])?;
    tx.execute("DELETE FROM configuration WHERE name LIKE 'demo-%'", [])?;
    tx.execute(
        "DELETE FROM tenants WHERE id IN (SELECT value FROM json_each(?1))",
        [&ids],
    )?;
    Ok(())
}

fn ago(now: DateTime<Utc>, rng: &mut fastrand::Rng, max: Duration) -> DateTime<Utc> {
    now - Duration::milliseconds(rng.i64(0..max.num_milliseconds().max(1)))
}

fn insert_interactions(
    tx: &Transaction<'_>,
    tenants: &[Tenant],
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
    rows: usize,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare(
        "INSERT INTO interaction_history (id, tenant_id, customer_id, channel, outcome, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let shared = to_store_text(now - Duration::days(3) - Duration::milliseconds(123));
    let mut previous = to_store_text(now);
    for n in 0..rows {
        let tenant = &tenants[n % tenants.len()];
        let created_at = if n < SHARED_TIMESTAMP_ROWS * tenants.len() && n % tenants.len() == 0 {
            shared.clone()
        } else if n % 97 == 0 {
            // Now and then two rows land in the same millisecond.
            previous.clone()
        } else {
            to_store_text(ago(now, rng, Duration::days(HISTORY_DAYS)))
        };
        let channel = CHANNELS[rng.usize(..CHANNELS.len())];
        let outcome = OUTCOMES[rng.usize(..OUTCOMES.len())];
        let payload = json!({
            "campaign": CAMPAIGNS[rng.usize(..CAMPAIGNS.len())],
            "subject": format!("Message {}", rng.u32(1..5000)),
            "score": (rng.f64() * 1000.0).round() / 1000.0,
            "tags": [channel, outcome],
        });
        statement.execute(params![
            format!("ih-{}-{n:08}", tenant.id),
            tenant.id,
            format!("cust-{:05}", rng.u32(1..2000)),
            channel,
            outcome,
            payload.to_string(),
            created_at,
        ])?;
        previous = created_at;
    }
    Ok(rows as u64)
}

fn insert_suppressions(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO suppressions (id, tenant_id, customer_id, reason, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    for n in 0..30 {
        let expires_at = match n % 3 {
            0 => Some(to_store_text(ago(now, rng, Duration::days(30)))),
            1 => Some(to_store_text(now + Duration::days(rng.i64(1..60)))),
            _ => None,
        };
        let reason = ["bounce", "complaint", "unsubscribe"][n % 3];
        statement.execute(params![
            format!("sup-{}-{n:03}", tenant.id),
            tenant.id,
            format!("cust-{:05}", rng.u32(1..2000)),
            reason,
            expires_at,
            to_store_text(now - Duration::days(90))
        ])?;
    }
    Ok(30)
}

fn insert_summaries(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare(
        "INSERT INTO interaction_summaries (id, tenant_id, customer_id, period_type, period_start, interactions, positive) VALUES (?1, ?2, 'all', ?3, ?4, ?5, ?6)",
    )?;
    let mut count = 0;
    for day in 0..400 {
        let start = (now - Duration::days(day)).date_naive();
        let interactions = rng.u32(50..500);
        statement.execute(params![
            format!("sum-{}-d{day:03}", tenant.id),
            tenant.id,
            "daily",
            start.to_string(),
            interactions,
            interactions / 3
        ])?;
        count += 1;
        if day % 30 == 0 {
            statement.execute(params![
                format!("sum-{}-m{day:03}", tenant.id),
                tenant.id,
                "monthly",
                start.to_string(),
                interactions * 30,
                interactions * 10
            ])?;
            count += 1;
        }
    }
    Ok(count)
}

/// acme: several classes, the strictest positive is 60 days, a legal hold at 30 is ignored;
/// globex: one year; initech: only a held policy (scanned, skipped); umbrella: no policy;
/// the inactive tenant: 14 days.
fn insert_policies(tx: &Transaction<'_>, tenant: &Tenant, index: usize) -> Result<u64, DemoError> {
    let policies: &[(&str, i64, bool)] = match (index, tenant.active) {
        (_, false) => &[("all", 14, false)],
        (0, _) => &[
            ("all", 90, false),
            ("interaction_history", 60, false),
            ("decision_traces", 30, true),
            ("ai_attachments", 0, false),
        ],
        (1, _) => &[("all", 365, false)],
        (2, _) => &[("all", 30, true)],
        _ => &[],
    };
    for (class, days, hold) in policies {
        tx.execute(
            "INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES (?1, ?2, ?3, ?4)",
            params![tenant.id, class, days, hold],
        )?;
    }
    Ok(policies.len() as u64)
}

fn insert_traces(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
    count: usize,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO decision_traces (id, tenant_id, customer_id, decision, trace, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    for n in 0..count {
        let decision = ["send", "hold", "suppress", "escalate"][rng.usize(..4)];
        let trace = json!({"model": "next-best-action", "version": 3, "inputs": rng.u32(3..40), "confidence": (rng.f64() * 100.0).round() / 100.0});
        statement.execute(params![
            format!("dt-{}-{n:06}", tenant.id),
            tenant.id,
            format!("cust-{:05}", rng.u32(1..2000)),
            decision,
            trace.to_string(),
            to_store_text(ago(now, rng, Duration::days(HISTORY_DAYS)))
        ])?;
    }
    Ok(count as u64)
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), DemoError> {
    let context = format!("writing {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(IoError::during(&context))?;
    }
    std::fs::write(path, contents).map_err(|source| IoError::during(context)(source).into())
}

/// Two thirds of the attachments have their blob on disk; the rest are already gone.
fn insert_attachments(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
    data_dir: &Path,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO ai_attachments (id, tenant_id, blob_path, content_type, bytes, created_at) VALUES (?1, ?2, ?3, 'text/plain', ?4, ?5)")?;
    for n in 0..30 {
        let id = format!("att-{}-{n:03}", tenant.id);
        let blob_path = format!("blobs/{}/{id}.txt", tenant.id);
        let contents = format!("transcript {id}\n").repeat(rng.usize(1..20));
        if n % 3 != 0 {
            write_file(&data_dir.join(&blob_path), contents.as_bytes())?;
        }
        statement.execute(params![
            id,
            tenant.id,
            blob_path,
            contents.len() as i64,
            to_store_text(ago(now, rng, Duration::days(HISTORY_DAYS)))
        ])?;
    }
    Ok(30)
}

fn insert_audit(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO audit_log (id, tenant_id, actor, action, target, details, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
    for n in 0..120 {
        let action = [
            "user.login",
            "export.requested",
            "policy.updated",
            "customer.deleted",
            "api_key.rotated",
        ][rng.usize(..5)];
        let details = json!({"ip": format!("10.0.{}.{}", rng.u8(0..255), rng.u8(1..255)), "userAgent": "Mozilla/5.0"});
        statement.execute(params![
            format!("aud-{}-{n:04}", tenant.id),
            tenant.id,
            format!("user-{}", rng.u32(1..40)),
            action,
            format!("obj-{}", rng.u32(1..1000)),
            details.to_string(),
            to_store_text(ago(now, rng, Duration::hours(36)))
        ])?;
    }
    Ok(120)
}

/// Stuck `processing` rows (some out of attempts), and ordinary pending and done ones.
fn insert_outbox(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO outbox (tenant_id, topic, payload, status, attempts, locked_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)")?;
    for n in 0..20 {
        let (status, attempts, locked_at) = match n % 5 {
            0 => ("processing", 1, Some(now - Duration::hours(2))),
            1 => ("processing", 5, Some(now - Duration::hours(3))),
            2 => ("processing", 2, Some(now - Duration::seconds(20))),
            3 => ("pending", 0, None),
            _ => ("done", 1, None),
        };
        let payload = json!({"to": format!("cust-{:05}", rng.u32(1..2000)), "template": CAMPAIGNS[n % CAMPAIGNS.len()]});
        statement.execute(params![
            tenant.id,
            "message.send",
            payload.to_string(),
            status,
            attempts,
            locked_at.map(to_store_text),
            to_store_text(now - Duration::hours(4))
        ])?;
    }
    Ok(20)
}

fn insert_approvals(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO approvals (id, tenant_id, kind, subject, status, requested_by, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
    for n in 0..12 {
        let (status, expires_at) = match n % 4 {
            0 | 1 => ("pending", now - Duration::hours(rng.i64(1..72))),
            2 => ("pending", now + Duration::hours(rng.i64(1..72))),
            _ => ("approved", now - Duration::days(2)),
        };
        statement.execute(params![
            format!("apr-{}-{n:02}", tenant.id),
            tenant.id,
            "campaign.launch",
            format!("campaign-{n}"),
            status,
            format!("user-{}", n + 1),
            to_store_text(expires_at),
            to_store_text(now - Duration::days(5))
        ])?;
    }
    Ok(12)
}

fn insert_flows(
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

fn insert_models(
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
fn insert_alerting(
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

/// Configuration rows, and a desired configuration under `gitops/` in the data dir that
/// matches one, differs from one and adds one (`GITOPS_DIR=<data dir>/gitops`).
fn insert_configuration(tx: &Transaction<'_>, data_dir: &Path) -> Result<u64, DemoError> {
    tx.execute(
        r#"INSERT INTO configuration (kind, name, body) VALUES
             ('feature_flags', 'demo-beta-exports', '{"enabled": true, "tenants": ["acme", "globex"]}'),
             ('feature_flags', 'demo-dark-mode', '{"enabled": false}'),
             ('limits', 'demo-api', '{"requests_per_minute": 600}')"#,
        [],
    )?;
    let desired = [
        (
            "feature_flags/demo-beta-exports.json",
            r#"{"tenants": ["acme", "globex"], "enabled": true}"#,
        ),
        ("feature_flags/demo-dark-mode.json", r#"{"enabled": true}"#),
        ("limits/demo-api.json", r#"{"requests_per_minute": 600}"#),
        ("limits/demo-exports.json", r#"{"per_day": 20}"#),
    ];
    for (relative, body) in desired {
        write_file(&data_dir.join("gitops").join(relative), body.as_bytes())?;
    }
    Ok(3)
}

/// Import runs stuck for days, old failed runs with raw items, finished jobs to compact,
/// and temp uploads old and new.
fn insert_imports(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
    data_dir: &Path,
) -> Result<u64, DemoError> {
    let runs: [(&str, &str, i64); 5] = [
        ("stuck", "processing", 3),
        ("running", "processing", 0),
        ("old-failed", "failed", 40),
        ("recent-failed", "failed", 5),
        ("done", "completed", 10),
    ];
    let mut count = 0;
    for (name, status, days_ago) in runs {
        let run_id = format!("demo-{}-{name}", tenant.id);
        let started = now - Duration::days(days_ago) - Duration::hours(1);
        let finished =
            (status != "processing").then(|| to_store_text(started + Duration::minutes(20)));
        tx.execute(
            "INSERT INTO import_runs (id, tenant_id, status, started_at, finished_at, created_at, updated_at, error) VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?4, ?6)",
            params![run_id, tenant.id, status, to_store_text(started), finished, (status == "failed").then_some("row 17: invalid email")],
        )?;
        tx.execute(
            "INSERT INTO import_jobs (id, tenant_id, run_id, status, total_items, processed_items, failed_items, config, result, created_at, finished_at)
             VALUES (?1, ?2, ?3, ?4, 500, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                format!("job-{run_id}"), tenant.id, run_id, status, if status == "processing" { 120 } else { 500 }, if status == "failed" { 42 } else { 0 },
                json!({"mapping": {"email": "Email", "name": "Full Name"}, "dedupe": true}).to_string(),
                json!({"errors": (0..40).map(|row| format!("row {row}: invalid email")).collect::<Vec<_>>()}).to_string(),
                to_store_text(started), finished,
            ],
        )?;
        if status == "failed" {
            let mut items = tx.prepare("INSERT INTO import_items (run_id, raw, status, created_at) VALUES (?1, ?2, 'failed', ?3)")?;
            for item in 0..50 {
                items.execute(params![
                    run_id,
                    json!({"email": format!("person{item}@example"), "name": "Sam"}).to_string(),
                    to_store_text(started)
                ])?;
            }
            count += 50;
        }
        count += 2;
    }
    for n in 0..6 {
        let path = format!("uploads/{}/upload-{n}.csv", tenant.id);
        write_file(&data_dir.join(&path), b"email,name\nsam@example.com,Sam\n")?;
        let created = if n % 2 == 0 {
            now - Duration::hours(rng.i64(25..100))
        } else {
            now - Duration::minutes(rng.i64(1..600))
        };
        tx.execute(
            "INSERT INTO temp_uploads (id, tenant_id, path, bytes, created_at) VALUES (?1, ?2, ?3, 32, ?4)",
            params![format!("tmp-{}-{n}", tenant.id), tenant.id, path, to_store_text(created)],
        )?;
        count += 1;
    }
    Ok(count)
}

fn insert_export_logs(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
    data_dir: &Path,
) -> Result<u64, DemoError> {
    for n in 0..10 {
        let id = format!("exl-{}-{n:02}", tenant.id);
        let created = now - Duration::days(rng.i64(1..60));
        let path = format!("downloads/{}/{id}.csv", tenant.id);
        write_file(
            &data_dir.join(&path),
            b"id,channel,outcome\n1,email,opened\n",
        )?;
        let expires = if n % 2 == 0 {
            created + Duration::days(1)
        } else {
            now + Duration::days(7)
        };
        tx.execute(
            "INSERT INTO export_logs (id, tenant_id, export_type, format, status, file_path, bytes, row_count, expires_at, created_at, completed_at)
             VALUES (?1, ?2, 'customers', 'csv', 'completed', ?3, 34, 1, ?4, ?5, ?5)",
            params![id, tenant.id, path, to_store_text(expires), to_store_text(created)],
        )?;
    }
    Ok(10)
}

fn insert_export_metrics(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare(
        "INSERT INTO export_metrics (tenant_id, export_type, format, status, row_count, duration_ms, bytes, error_type, error_message, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for _ in 0..40 {
        let failed = rng.u8(0..100) < 8;
        let rows = rng.i64(100..20_000);
        statement.execute(params![
            tenant.id,
            "interaction_history",
            ["ndjson", "csv", "json"][rng.usize(..3)],
            if failed { "failure" } else { "success" },
            if failed { 0 } else { rows },
            rng.i64(40..8_000),
            if failed { 0 } else { rows * 310 },
            failed.then_some("timeout"),
            failed.then_some("storage did not answer in 30s"),
            to_store_text(ago(now, rng, Duration::hours(48))),
        ])?;
    }
    Ok(40)
}

fn insert_telemetry(
    tx: &Transaction<'_>,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
    count: usize,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO telemetry_events (id, event, user_id, meta, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for n in 0..count {
        let meta = if n % 211 == 0 {
            "{not json".to_string()
        } else {
            let plan = ["free", "team", "enterprise"][rng.usize(..3)];
            let browser = ["firefox", "chrome", "safari"][rng.usize(..3)];
            json!({"plan": plan, "browser": browser}).to_string()
        };
        statement.execute(params![
            format!("demo-{n:08}"),
            EVENTS[rng.usize(..EVENTS.len())],
            format!("u-{}", rng.u32(1..300)),
            meta,
            to_store_text(ago(now, rng, Duration::days(30)))
        ])?;
    }
    Ok(count as u64)
}
