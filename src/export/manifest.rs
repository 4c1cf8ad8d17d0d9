//! The export tables: per-tenant checkpoints, batches in progress, the file manifest and the
//! per-run metric rows. Only this module writes them.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::metrics::{self, ExportMetric, Outcome};
use crate::store::{Cursor, Store, StoreError};

/// A file written, fsynced and renamed into place, waiting to be committed.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub path: String,
    pub partition_day: String,
    pub row_count: u64,
    pub first: Cursor,
    pub last: Cursor,
    pub bytes: u64,
    pub sha256: String,
}

/// The per-run export metric (SPEC's export metrics feed `export-metrics-aggregate`).
pub struct Metric<'a> {
    pub tenant_id: &'a str,
    pub rows: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    pub error: Option<(&'a str, &'a str)>,
    pub at: &'a str,
}

/// Whether new files are also to be uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Queued,
    LocalOnly,
}

pub fn checkpoint(store: &Store, tenant_id: &str) -> Result<Option<Cursor>, StoreError> {
    let row: Option<(Option<String>, Option<String>)> = store
        .conn()?
        .query_row(
            "SELECT last_created_at, last_id FROM export_checkpoints WHERE tenant_id = ?1",
            [tenant_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(created_at, id)| {
        Some(Cursor {
            created_at: created_at?,
            id: id?,
        })
    }))
}

/// The start of a batch a crashed run left uncommitted for this tenant, if any.
pub fn batch_in_progress(store: &Store, tenant_id: &str) -> Result<Option<Cursor>, StoreError> {
    Ok(store
        .conn()?
        .query_row(
            "SELECT from_created_at, from_id FROM export_batches_in_progress WHERE tenant_id = ?1",
            [tenant_id],
            |row| {
                Ok(Cursor {
                    created_at: row.get(0)?,
                    id: row.get(1)?,
                })
            },
        )
        .optional()?)
}

/// Paths of the tenant's committed files on or after `first_day` (`YYYY-MM-DD`).
pub fn committed_paths_since(
    store: &Store,
    tenant_id: &str,
    first_day: &str,
) -> Result<Vec<String>, StoreError> {
    let conn = store.conn()?;
    let mut statement =
        conn.prepare("SELECT path FROM export_files WHERE tenant_id = ?1 AND partition_day >= ?2")?;
    let paths = statement
        .query_map((tenant_id, first_day), |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(paths)
}

/// Records that a batch starting after `from` is about to write files: one row, before any
/// file exists, cleared by the batch's commit.
pub fn begin_batch(store: &Store, tenant_id: &str, from: &Cursor) -> Result<(), StoreError> {
    store.conn()?.execute(
        "INSERT INTO export_batches_in_progress (tenant_id, from_created_at, from_id) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant_id) DO UPDATE SET from_created_at = excluded.from_created_at,
             from_id = excluded.from_id, started_at = excluded.started_at",
        (tenant_id, &from.created_at, &from.id),
    )?;
    Ok(())
}

pub fn end_batch(store: &Store, tenant_id: &str) -> Result<(), StoreError> {
    store.conn()?.execute(
        "DELETE FROM export_batches_in_progress WHERE tenant_id = ?1",
        [tenant_id],
    )?;
    Ok(())
}

/// Commits a batch: its files into the manifest, the checkpoint past its last row, its
/// batch-in-progress row cleared and its metric recorded, in one transaction. Before this commits, the files
/// do not count; after, the checkpoint covers exactly them.
pub fn commit(
    store: &Store,
    tenant_id: &str,
    files: &[WrittenFile],
    upload: Upload,
    metric: &Metric<'_>,
) -> Result<(), StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let upload_status = match upload {
        Upload::Queued => "pending",
        Upload::LocalOnly => "local",
    };
    {
        let mut insert = tx.prepare(
            "INSERT INTO export_files (path, tenant_id, partition_day, row_count, first_created_at, first_id,
                 last_created_at, last_id, bytes, sha256, created_at, upload_status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for file in files {
            insert.execute(params![
                file.path,
                tenant_id,
                file.partition_day,
                file.row_count as i64,
                file.first.created_at,
                file.first.id,
                file.last.created_at,
                file.last.id,
                file.bytes as i64,
                file.sha256,
                metric.at,
                upload_status,
            ])?;
        }
    }
    if let Some(last) = files
        .iter()
        .map(|file| &file.last)
        .max_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)))
    {
        let exported: u64 = files.iter().map(|file| file.row_count).sum();
        tx.execute(
            "INSERT INTO export_checkpoints (tenant_id, last_created_at, last_id, status, error, rows_exported, updated_at)
             VALUES (?1, ?2, ?3, 'ok', NULL, ?4, ?5)
             ON CONFLICT (tenant_id) DO UPDATE SET
                 last_created_at = excluded.last_created_at, last_id = excluded.last_id, status = 'ok',
                 error = NULL, rows_exported = rows_exported + excluded.rows_exported, updated_at = excluded.updated_at",
            params![tenant_id, last.created_at, last.id, exported as i64, metric.at],
        )?;
    } else {
        tx.execute(
            "UPDATE export_checkpoints SET status = 'ok', error = NULL, updated_at = ?2 WHERE tenant_id = ?1",
            params![tenant_id, metric.at],
        )?;
    }
    tx.execute(
        "DELETE FROM export_batches_in_progress WHERE tenant_id = ?1",
        [tenant_id],
    )?;
    insert_metric(&tx, metric)?;
    tx.commit()?;
    Ok(())
}

/// Marks the tenant's checkpoint failed (its cursor unchanged, so the next run retries) and
/// records the failed run's metric.
pub fn mark_failed(store: &Store, metric: &Metric<'_>, message: &str) -> Result<(), StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO export_checkpoints (tenant_id, status, error, updated_at) VALUES (?1, 'failed', ?2, ?3)
         ON CONFLICT (tenant_id) DO UPDATE SET status = 'failed', error = excluded.error, updated_at = excluded.updated_at",
        params![metric.tenant_id, message, metric.at],
    )?;
    insert_metric(&tx, metric)?;
    tx.commit()?;
    Ok(())
}

fn insert_metric(tx: &rusqlite::Transaction<'_>, metric: &Metric<'_>) -> Result<(), StoreError> {
    let (error_type, error_message) = metric.error.unzip();
    let outcome = if metric.error.is_some() {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    metrics::insert(
        tx,
        &ExportMetric {
            tenant_id: metric.tenant_id.to_string(),
            export_type: "interaction_history".into(),
            format: "ndjson".into(),
            outcome,
            row_count: metric.rows as i64,
            duration_ms: metric.duration_ms as i64,
            bytes: metric.bytes as i64,
            error_type: error_type.map(str::to_string),
            error_message: error_message.map(str::to_string),
            created_at: metric.at.to_string(),
        },
    )?;
    Ok(())
}

/// A manifest file waiting for upload.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub id: i64,
    pub path: String,
    pub bytes: i64,
    pub attempts: i64,
}

/// Files not yet uploaded whose next attempt is due, oldest first. Files written before S3
/// was configured (`local`) count as not yet uploaded.
pub fn due_uploads(
    store: &Store,
    now_text: &str,
    after_id: i64,
    limit: i64,
) -> Result<Vec<PendingUpload>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare_cached(
        "SELECT id, path, bytes, upload_attempts FROM export_files
         WHERE upload_status IN ('local', 'pending') AND (next_attempt_at IS NULL OR next_attempt_at <= ?1) AND id > ?2
         ORDER BY id LIMIT ?3",
    )?;
    let rows = statement
        .query_map(params![now_text, after_id, limit], |row| {
            Ok(PendingUpload {
                id: row.get(0)?,
                path: row.get(1)?,
                bytes: row.get(2)?,
                attempts: row.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Records a verified upload (and, when the local copy was removed, that too).
pub fn mark_uploaded(
    store: &Store,
    id: i64,
    now_text: &str,
    local_removed: bool,
) -> Result<(), StoreError> {
    store.conn()?.execute(
        "UPDATE export_files SET upload_status = 'uploaded', uploaded_at = ?2, upload_error = NULL,
             upload_attempts = upload_attempts + 1, next_attempt_at = NULL,
             local_deleted_at = CASE WHEN ?3 THEN ?2 ELSE local_deleted_at END
         WHERE id = ?1",
        params![id, now_text, local_removed],
    )?;
    Ok(())
}

/// Records a failed attempt; the file stays queued until `next_attempt_at`.
pub fn mark_upload_failed(
    store: &Store,
    id: i64,
    next_attempt_text: &str,
    error: &str,
) -> Result<(), StoreError> {
    store.conn()?.execute(
        "UPDATE export_files SET upload_status = 'pending', upload_attempts = upload_attempts + 1,
             next_attempt_at = ?2, upload_error = ?3
         WHERE id = ?1",
        params![id, next_attempt_text, error],
    )?;
    Ok(())
}

/// Files (and their bytes) still waiting for upload.
pub fn upload_backlog(store: &Store) -> Result<(u64, u64), StoreError> {
    let (files, bytes): (i64, i64) = store.conn()?.query_row(
        "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM export_files WHERE upload_status IN ('local', 'pending')",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok((files as u64, bytes as u64))
}
