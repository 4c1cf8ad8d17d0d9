//! Import runs, jobs and raw items in every state, and temp uploads, what `maintenance` acts on.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Transaction, params};
use serde_json::json;

use super::{DemoError, Tenant, write_file};
use crate::clock::to_store_text;

/// Import runs stuck for days, old failed runs with raw items, finished jobs to compact,
/// and temp uploads old and new.
pub(super) fn insert_imports(
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
