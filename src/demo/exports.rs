//! Export log rows with their files (half expired) and export metrics (some failures), what
//! `export-file-cleanup`, `export-log-cleanup` and `export-metrics-aggregate` act on.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Transaction, params};

use super::{DemoError, Tenant, ago, write_file};
use crate::clock::to_store_text;

pub(super) fn insert_export_logs(
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

pub(super) fn insert_export_metrics(
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
