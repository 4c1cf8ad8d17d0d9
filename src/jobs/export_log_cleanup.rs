//! `export-log-cleanup`: delete export log rows older than 30 days, a batch at a time, each
//! batch archived first as one NDJSON file (uploaded to S3 when configured, else kept under
//! `archive/export_logs/site={site}/` in the data dir). An archive is named after its first row
//! and its content, so a batch archived again after a crash is the same file and object.

use chrono::Duration;
use rusqlite::TransactionBehavior;
use serde::Serialize;
use serde_json::Value;

use super::{Job, JobCtx, JobError, JobOutput, archive};
use crate::store::{row_object, times};

pub struct ExportLogCleanup;

const RETENTION_DAYS: i64 = 30;
const BATCH: i64 = 1_000;

impl Job for ExportLogCleanup {
    fn name(&self) -> &'static str {
        "export-log-cleanup"
    }

    fn default_schedule(&self) -> &'static str {
        "0 3 1 * *"
    }

    fn legacy_routes(&self) -> &'static [&'static str] {
        &["/api/cron/export-log-cleanup"]
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let old = times::before("created_at", ctx.now() - Duration::days(RETENTION_DAYS), 1);
        if ctx.params.dry_run {
            let count: i64 = ctx.store.conn()?.query_row(
                &format!("SELECT COUNT(*) FROM export_logs WHERE {}", old.sql),
                rusqlite::params_from_iter(&old.params),
                |row| row.get(0),
            )?;
            let report = Report {
                deleted: count as u64,
                archived: 0,
                archives: None,
                finished: None,
                dry_run: true,
            };
            return JobOutput::new(&report, 0, 0);
        }
        // The replaced system's own archive bucket, when set; else the export files' bucket.
        let storage = match &ctx.config.export_archive {
            Some(settings) => Some(
                crate::export::storage::Storage::new(settings)
                    .map_err(|error| JobError::Failed(error.to_string()))?,
            ),
            None => ctx.storage()?,
        };
        let site = ctx.site()?;
        let (mut deleted, mut archived) = (0u64, 0u64);
        let mut archives = Vec::new();
        let mut finished = true;
        loop {
            if ctx.should_stop() {
                finished = false;
                break;
            }
            let ArchiveBatch {
                rowids,
                lines,
                first,
            } = oldest_rows(ctx, &old)?;
            let Some(first) = first else {
                break;
            };
            let compression = ctx.config.export_compression;
            let relative = archive::relative_path(
                "export_logs",
                &site,
                &format!("export_logs-{first}"),
                &lines,
                compression,
            );
            archive::write(
                ctx.data_dir(),
                &relative,
                &archive::encode(&lines, compression)?,
            )?;
            if let Some(storage) = &storage {
                let local = ctx.data_dir().join(&relative);
                storage
                    .upload(&local, &storage.key(&relative))
                    .map_err(|error| JobError::Failed(format!("archiving {relative}: {error}")))?;
                std::fs::remove_file(&local)
                    .map_err(JobError::io(format!("removing {}", local.display())))?;
            }
            archived += rowids.len() as u64;
            archives.push(relative);
            let ids = serde_json::to_string(&rowids).unwrap_or_default();
            let mut conn = ctx.store.conn()?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            deleted += tx.execute(
                "DELETE FROM export_logs WHERE rowid IN (SELECT value FROM json_each(?1))",
                [ids],
            )? as u64;
            tx.commit()?;
        }
        let report = Report {
            deleted,
            archived,
            archives: Some(archives),
            finished: Some(finished),
            dry_run: false,
        };
        JobOutput::new(&report, 0, deleted)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    deleted: u64,
    archived: u64,
    /// The archive files written (paths under the data dir), when not a dry run.
    #[serde(skip_serializing_if = "Option::is_none")]
    archives: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished: Option<bool>,
    dry_run: bool,
}

/// A batch of rows to archive and delete.
struct ArchiveBatch {
    rowids: Vec<i64>,
    /// The rows as NDJSON, every column kept.
    lines: Vec<u8>,
    /// The archive's name, from the first row; `None` when no row is left.
    first: Option<String>,
}

/// The oldest batch of rows past the cutoff: their rowids, NDJSON lines, and a name for the
/// archive derived from the first row.
fn oldest_rows(ctx: &JobCtx<'_>, old: &times::Condition) -> Result<ArchiveBatch, JobError> {
    let conn = ctx.store.conn()?;
    let mut statement = conn.prepare(&format!(
        "SELECT rowid, * FROM export_logs WHERE {} ORDER BY created_at, id LIMIT ?3",
        old.sql
    ))?;
    let names: Vec<String> = statement
        .column_names()
        .iter()
        .skip(1)
        .map(|name| name.to_string())
        .collect();
    let mut params = old.params.clone();
    params.push(rusqlite::types::Value::Integer(BATCH));
    let mut rows = statement.query(rusqlite::params_from_iter(&params))?;
    let (mut rowids, mut lines, mut first) = (Vec::new(), Vec::new(), None);
    while let Some(row) = rows.next()? {
        rowids.push(row.get::<_, i64>(0)?);
        let object = row_object(row, &names, 1)?;
        if first.is_none() {
            let text = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or_default();
            first = Some(archive::stem(text("created_at"), text("id")));
        }
        serde_json::to_writer(&mut lines, &Value::Object(object))
            .map_err(|error| JobError::Failed(error.to_string()))?;
        lines.push(b'\n');
    }
    Ok(ArchiveBatch {
        rowids,
        lines,
        first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::{TimeZone, Utc};

    #[test]
    fn archives_then_deletes_rows_older_than_thirty_days() {
        let harness = Harness::new(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        harness.exec(
            "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 2500)
             INSERT INTO export_logs (id, tenant_id, status, created_at)
             SELECT printf('old-%05d', value), 't', 'completed', '2026-04-01T00:00:00.000Z' FROM n;
             INSERT INTO export_logs (id, created_at) VALUES
                 ('edge', '2026-05-02T00:00:00.000Z'), ('recent', '2026-05-20T00:00:00.000Z');",
        );
        let output = ExportLogCleanup.run(&harness.ctx()).unwrap();
        assert_eq!(
            (
                output.body["deleted"].as_u64(),
                output.body["archived"].as_u64()
            ),
            (Some(2500), Some(2500))
        );
        assert_eq!(
            harness.strings("SELECT id FROM export_logs ORDER BY id"),
            ["edge", "recent"]
        );
        let mut ids = Vec::new();
        for archive in output.body["archives"].as_array().unwrap() {
            let text =
                std::fs::read_to_string(harness.config.data_dir.join(archive.as_str().unwrap()))
                    .unwrap();
            for line in text.lines() {
                let row: Value = serde_json::from_str(line).unwrap();
                assert_eq!(row["status"], "completed");
                ids.push(row["id"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(output.body["archives"].as_array().unwrap().len(), 3);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 2500);
    }
}
