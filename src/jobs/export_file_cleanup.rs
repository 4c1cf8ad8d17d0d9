//! `export-file-cleanup`: delete the files of the application's exports past `expires_at`
//! (local, their copy in the configured bucket, or an `s3://` object) and mark their log rows
//! `expired`. A file already gone counts as deleted; one that cannot be deleted keeps its row
//! as it is, for the next run.

use std::time::Instant;

use rusqlite::TransactionBehavior;
use rusqlite::types::Value;
use serde::Serialize;
use serde_json::json;

use super::named_files::{FileRemoval, remove_stored_file};
use super::{Job, JobCtx, JobError, JobOutput};
use crate::clock::to_store_text;
use crate::config::layout::NamedBy;
use crate::store::export_metrics::{self, ExportMetric, MetricSource, Outcome};
use crate::store::times;

pub struct ExportFileCleanup;

const PAGE: i64 = 500;

impl Job for ExportFileCleanup {
    fn name(&self) -> &'static str {
        "export-file-cleanup"
    }

    fn default_schedule(&self) -> &'static str {
        "0 2 * * *"
    }

    fn legacy_routes(&self) -> &'static [&'static str] {
        &["/api/cron/export-file-cleanup"]
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let run_started = Instant::now();
        let now_text = to_store_text(ctx.now());
        let storage = ctx.storage()?;
        let (mut deleted, mut failed) = (0u64, 0u64);
        let mut files = Vec::new();
        let mut errors = Vec::new();
        let mut after = String::new();
        loop {
            if ctx.should_stop() {
                break;
            }
            let expired = expired_logs(ctx, &after)?;
            let Some(last) = expired.last() else {
                break;
            };
            after = last.id.clone();
            for log in expired {
                if ctx.params.dry_run {
                    deleted += 1;
                    files.push(Listed {
                        id: log.id,
                        file_path: log.file_path,
                    });
                    continue;
                }
                let started = Instant::now();
                let removal = log
                    .file_path
                    .as_deref()
                    .filter(|path| !path.is_empty())
                    .map_or(Ok(FileRemoval::AlreadyGone), |path| {
                        remove_stored_file(ctx, storage.as_ref(), NamedBy::AppExports, path)
                    });
                let mut metric = ExportMetric {
                    tenant_id: log.tenant_id.clone(),
                    export_type: "file_cleanup".into(),
                    format: log.format.clone(),
                    outcome: Outcome::Success,
                    row_count: log.row_count,
                    duration_ms: started.elapsed().as_millis() as i64,
                    bytes: log.bytes,
                    error_type: None,
                    error_message: None,
                    created_at: now_text.clone(),
                    export_id: None,
                    user_id: None,
                    source: MetricSource::Edgecron,
                };
                let mut conn = ctx.store.conn()?;
                match removal {
                    Ok(_) => {
                        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                        tx.execute(
                            "UPDATE export_logs SET status = 'expired' WHERE id = ?1 AND status = 'completed'",
                            [&log.id],
                        )?;
                        export_metrics::insert(&tx, &metric)?;
                        tx.commit()?;
                        deleted += 1;
                    }
                    Err(refused) => {
                        let error = refused.to_string();
                        log::warn!("export-file-cleanup: {}: {error}", log.id);
                        metric.outcome = Outcome::Failure;
                        metric.error_type = Some("file_cleanup".into());
                        metric.error_message = Some(error.clone());
                        export_metrics::insert(&conn, &metric)?;
                        failed += 1;
                        if errors.len() < 20 {
                            errors.push(FileError { id: log.id, error });
                        }
                    }
                }
            }
        }
        if !ctx.params.dry_run {
            // The replaced system's summary line, which its dashboards query by type.
            let complete = json!({
                "type": "export_file_cleanup_complete",
                "deleted_count": deleted,
                "failed_count": failed,
                "duration_ms": run_started.elapsed().as_millis() as u64,
            });
            crate::logging::event(log::Level::Info, &complete);
        }
        let dry_run = ctx.params.dry_run;
        let report = Report {
            deleted,
            failed,
            errors,
            dry_run,
            files: dry_run.then_some(files),
        };
        JobOutput::new(&report, failed, if dry_run { 0 } else { deleted })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    deleted: u64,
    failed: u64,
    /// The first 20.
    errors: Vec<FileError>,
    dry_run: bool,
    /// What a dry run would delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<Vec<Listed>>,
}

#[derive(Serialize)]
struct FileError {
    id: String,
    error: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    id: String,
    file_path: Option<String>,
}

/// A completed export past its expiry.
struct ExpiredLog {
    id: String,
    tenant_id: String,
    format: String,
    file_path: Option<String>,
    bytes: i64,
    row_count: i64,
}

/// Completed exports past their expiry (compared as instants), by id after `after`, a page
/// at a time.
fn expired_logs(ctx: &JobCtx<'_>, after: &str) -> Result<Vec<ExpiredLog>, JobError> {
    let expired = times::before("expires_at", ctx.now(), 1);
    let conn = ctx.store.conn()?;
    let mut statement = conn.prepare(&format!(
        "SELECT id, tenant_id, format, file_path, bytes, row_count FROM export_logs
         WHERE status = 'completed' AND {} AND id > ?3
         ORDER BY id LIMIT ?4",
        expired.sql
    ))?;
    let mut params = expired.params;
    params.push(Value::Text(after.to_string()));
    params.push(Value::Integer(PAGE));
    let rows = statement
        .query_map(rusqlite::params_from_iter(&params), |row| {
            Ok(ExpiredLog {
                id: row.get(0)?,
                tenant_id: row.get(1)?,
                format: row.get(2)?,
                file_path: row.get(3)?,
                bytes: row.get(4)?,
                row_count: row.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::{TimeZone, Utc};

    fn harness() -> Harness {
        let harness = Harness::new(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        harness.exec(
            "INSERT INTO export_logs (id, status, file_path, expires_at) VALUES
                 ('expired', 'completed', 'downloads/expired.csv', '2026-05-31T23:59:59.999Z'),
                 ('expired-gone', 'completed', 'downloads/gone.csv', '2026-05-01T00:00:00.000Z'),
                 ('live', 'completed', 'downloads/live.csv', '2026-06-01T00:00:00.001Z'),
                 ('never', 'completed', 'downloads/never.csv', NULL),
                 ('failed-export', 'failed', 'downloads/failed.csv', '2026-05-01T00:00:00.000Z'),
                 ('escaping', 'completed', '../outside.csv', '2026-05-01T00:00:00.000Z');",
        );
        for name in ["expired", "live", "never", "failed"] {
            harness.write_file(&format!("downloads/{name}.csv"), b"x");
        }
        harness
    }

    #[test]
    fn deletes_expired_files_and_marks_their_rows() {
        let harness = harness();
        let output = ExportFileCleanup.run(&harness.ctx()).unwrap();
        assert_eq!(
            (
                output.body["deleted"].as_u64(),
                output.body["failed"].as_u64()
            ),
            (Some(2), Some(1))
        );
        assert_eq!(
            harness.strings(
                "SELECT status || ' ' || export_type || ' ' || COALESCE(error_type, '-') FROM export_metrics ORDER BY id"
            ),
            [
                "failure file_cleanup file_cleanup",
                "success file_cleanup -",
                "success file_cleanup -"
            ]
        );
        assert_eq!(output.body["errors"][0]["id"], "escaping");
        assert_eq!(
            harness.strings("SELECT id || ' ' || status FROM export_logs ORDER BY id"),
            [
                "escaping completed",
                "expired expired",
                "expired-gone expired",
                "failed-export failed",
                "live completed",
                "never completed"
            ]
        );
        let downloads = harness.config.data_dir.join("downloads");
        assert!(!downloads.join("expired.csv").exists());
        for kept in ["live.csv", "never.csv", "failed.csv"] {
            assert!(downloads.join(kept).exists(), "{kept}");
        }
    }

    #[test]
    fn dry_run_lists_and_deletes_nothing() {
        let mut harness = harness();
        harness.params.dry_run = true;
        let output = ExportFileCleanup.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["deleted"], 3);
        assert_eq!(output.body["files"].as_array().unwrap().len(), 3);
        assert!(
            harness
                .config
                .data_dir
                .join("downloads/expired.csv")
                .exists()
        );
        assert_eq!(
            harness.query::<i64>("SELECT COUNT(*) FROM export_logs WHERE status = 'expired'"),
            0
        );
    }
}
