//! `edgecron demo`: realistic, deterministic sample data for every job, relative to now.
//!
//! The same arguments always give the same rows (a fixed seed; times are offsets from now).
//! Running it again replaces the data of its own tenants, their checkpoints and export files.
//!
//! `fill` wipes what an earlier run left, then seeds each area's tables in a fixed order: one
//! seeded generator is drawn from throughout, so reordering the calls would change the rows.
//! The areas: `interactions.rs`, `retention.rs`, `audit.rs`, `pending_work.rs`,
//! `schedules.rs`, `imports.rs`, `exports.rs`, `telemetry.rs` and `configuration.rs`.

mod audit;
mod configuration;
mod exports;
mod imports;
mod interactions;
mod pending_work;
mod retention;
mod schedules;
mod telemetry;

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

use audit::insert_audit;
use configuration::insert_configuration;
use exports::{insert_export_logs, insert_export_metrics};
use imports::insert_imports;
use interactions::{insert_interactions, insert_summaries, insert_suppressions};
use pending_work::{insert_approvals, insert_outbox};
use retention::{insert_attachments, insert_policies, insert_traces};
use schedules::{insert_alerting, insert_flows, insert_models};
use telemetry::insert_telemetry;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("--tenants must be between 1 and 1000")]
    TenantCount,
}

/// The seeding SQL fails as the store's does.
impl From<rusqlite::Error> for DemoError {
    fn from(error: rusqlite::Error) -> DemoError {
        DemoError::Store(error.into())
    }
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
const CAMPAIGNS: &[&str] = &[
    "welcome",
    "renewal",
    "winback",
    "newsletter",
    "onboarding",
    "survey",
];
const HISTORY_DAYS: i64 = 120;

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

fn write_file(path: &Path, contents: &[u8]) -> Result<(), DemoError> {
    let context = format!("writing {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(IoError::during(&context))?;
    }
    std::fs::write(path, contents).map_err(|source| IoError::during(context)(source).into())
}
