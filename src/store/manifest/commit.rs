//! The commit of an export run: each tenant's files into the manifest, its metric row, its
//! checkpoint, and the capture rows its files hold taken, in one transaction; or a tenant's
//! failure marked.

use rusqlite::types::Value;
use rusqlite::{TransactionBehavior, params};

use crate::store::capture::{self, Source, WalkProgress, WalkStep};
use crate::store::export_metrics::{self, ExportMetric, MetricSource, Outcome};
use crate::store::{Cursor, Store, StoreError};

/// A file written, fsynced and renamed into place, waiting to be committed.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub path: String,
    pub partition_day: String,
    pub row_count: u64,
    pub first: Cursor,
    pub last: Cursor,
    /// As it lies on disk (compressed, with `EXPORT_COMPRESSION=gzip`).
    pub bytes: u64,
    /// The NDJSON it holds.
    pub raw_bytes: u64,
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
    /// The files' format (`ndjson`, `parquet`).
    pub format: &'a str,
}

/// Whether new files are also to be uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    Queued,
    LocalOnly,
}

/// A tenant whose batch commits: its files, and how many rows it could not export.
pub struct TenantCommit<'a> {
    pub tenant_id: &'a str,
    pub files: &'a [WrittenFile],
    pub invalid_rows: u64,
    pub metric: Metric<'a>,
}

/// A tenant whose batch failed.
pub struct TenantFailure<'a> {
    pub metric: Metric<'a>,
    pub message: &'a str,
}

/// Everything a batch commits at once.
pub struct RunCommit<'a> {
    pub tenants: Vec<TenantCommit<'a>>,
    pub upload: Upload,
    /// The walk rows the reader went through, and how far that got.
    pub walk: Option<(WalkStep, WalkProgress)>,
    /// Walk rows no committing tenant took, `(tenant_id, id)`: captured, so they wait.
    pub deferred: Vec<(Value, Value)>,
    /// Tenants whose batch failed: every walk row of theirs is captured.
    pub failed: Vec<&'a str>,
    /// The captured rows taken, as inclusive `seq` ranges.
    pub taken: Vec<(i64, i64)>,
    /// When the run found the capture triggers in place.
    pub triggers_seen_at: &'a str,
}

/// Commits a batch: the committing tenants' files into the manifest, their status and metric,
/// the walk's progress and the captured rows taken, in one transaction. Before it commits no
/// file counts and no row is taken; after, the rows taken are exactly those in the files.
pub fn commit_run(store: &Store, commit: &RunCommit<'_>) -> Result<(), StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let upload_status = match commit.upload {
        Upload::Queued => "pending",
        Upload::LocalOnly => "local",
    };
    {
        let mut insert = tx.prepare(
            "INSERT INTO export_files (path, tenant_id, partition_day, row_count, first_created_at, first_id,
                 last_created_at, last_id, bytes, sha256, created_at, upload_status, raw_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        let mut status = tx.prepare(
            "INSERT INTO export_checkpoints (tenant_id, status, error, rows_exported, invalid_rows, updated_at)
             VALUES (?1, 'ok', NULL, ?2, ?3, ?4)
             ON CONFLICT (tenant_id) DO UPDATE SET status = 'ok', error = NULL,
                 rows_exported = rows_exported + excluded.rows_exported,
                 invalid_rows = excluded.invalid_rows, updated_at = excluded.updated_at",
        )?;
        for tenant in &commit.tenants {
            for file in tenant.files {
                insert.execute(params![
                    file.path,
                    tenant.tenant_id,
                    file.partition_day,
                    file.row_count as i64,
                    file.first.created_at,
                    file.first.id,
                    file.last.created_at,
                    file.last.id,
                    file.bytes as i64,
                    file.sha256,
                    tenant.metric.at,
                    upload_status,
                    file.raw_bytes as i64,
                ])?;
            }
            status.execute(params![
                tenant.tenant_id,
                tenant.metric.rows as i64,
                tenant.invalid_rows as i64,
                tenant.metric.at
            ])?;
            insert_metric(&tx, &tenant.metric)?;
        }
    }
    if let Some((step, progress)) = &commit.walk {
        if !commit.failed.is_empty() {
            let failed = serde_json::Value::from(commit.failed.clone()).to_string();
            capture::capture_from_walk(
                &tx,
                Source::Interactions,
                step,
                &format!(
                    "SELECT h.tenant_id, h.id FROM interaction_history h
                      WHERE {} AND h.tenant_id IN (SELECT value FROM json_each(:failed))
                      ORDER BY h.id",
                    step.condition(Source::Interactions, "h.id")
                ),
                &[(":failed", &failed)],
            )?;
        }
        let mut keep =
            tx.prepare("INSERT INTO interaction_capture (tenant_id, item_id) VALUES (?1, ?2)")?;
        for (tenant_id, id) in &commit.deferred {
            keep.execute(params![tenant_id, id])?;
        }
        capture::finish_walk(&tx, Source::Interactions, progress)?;
    }
    capture::delete_taken(&tx, Source::Interactions, &commit.taken)?;
    capture::note_seen(&tx, Source::Interactions, commit.triggers_seen_at)?;
    tx.commit()?;
    Ok(())
}

/// Marks the tenant's status failed (its rows stay where they were, so the next run retries
/// them) and records the failed batch's metric.
pub fn mark_failed(store: &Store, failure: &TenantFailure<'_>) -> Result<(), StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO export_checkpoints (tenant_id, status, error, updated_at) VALUES (?1, 'failed', ?2, ?3)
         ON CONFLICT (tenant_id) DO UPDATE SET status = 'failed', error = excluded.error, updated_at = excluded.updated_at",
        params![failure.metric.tenant_id, failure.message, failure.metric.at],
    )?;
    insert_metric(&tx, &failure.metric)?;
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
    export_metrics::insert(
        tx,
        &ExportMetric {
            tenant_id: metric.tenant_id.to_string(),
            export_type: "interaction_history".into(),
            format: metric.format.into(),
            outcome,
            row_count: metric.rows as i64,
            duration_ms: metric.duration_ms as i64,
            bytes: metric.bytes as i64,
            error_type: error_type.map(str::to_string),
            error_message: error_message.map(str::to_string),
            created_at: metric.at.to_string(),
            export_id: None,
            user_id: None,
            source: MetricSource::Edgecron,
        },
    )?;
    Ok(())
}
