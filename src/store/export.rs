//! The export tables: per-tenant status, files about to be renamed into place, the file
//! manifest and upload queue, and the per-run metric rows; and the commit that takes a batch's
//! rows from the capture. Only this module writes them.

use std::collections::HashMap;
use std::ops::ControlFlow;

use chrono::NaiveDate;
use rusqlite::OptionalExtension;
use rusqlite::types::Value;
use rusqlite::{Connection, Row, TransactionBehavior, params};

use super::capture::{self, Source, WalkProgress, WalkStep};
use super::export_metrics::{self, ExportMetric, MetricSource, Outcome};
use super::{Cursor, Store, StoreError};

/// Hands each row of one step of the first walk over `interaction_history`, in primary-key
/// order, to `visit`, until it breaks. Columns: tenant_id, id, customer_id, channel, outcome,
/// payload, created_at.
pub fn walk_rows<B, E: From<rusqlite::Error>>(
    conn: &Connection,
    step: &WalkStep,
    mut visit: impl FnMut(&Row<'_>) -> Result<ControlFlow<B>, E>,
) -> Result<ControlFlow<B>, E> {
    let sql = format!(
        "SELECT h.tenant_id, h.id, h.customer_id, h.channel, h.outcome, h.payload, h.created_at
           FROM interaction_history h WHERE {} ORDER BY h.id",
        step.condition(Source::Interactions, "h.id")
    );
    let params = step.params();
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query(capture::bind(&params).as_slice())?;
    while let Some(row) = rows.next()? {
        if let ControlFlow::Break(value) = visit(row)? {
            return Ok(ControlFlow::Break(value));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Hands each entry of the interaction capture queue, in commit order, to `visit`, until it
/// breaks. Columns: seq, the row's current tenant_id, id, customer_id, channel, outcome,
/// payload, created_at (all NULL for a row deleted since it was captured), then `superseded`
/// (the same id was captured again later: that entry exports the row) and `unwalked` (the row
/// is in the rest of the walk step `unwalked`, which reads it unless it stays queued).
pub fn captured_rows<E: From<rusqlite::Error>>(
    conn: &Connection,
    unwalked: Option<&WalkStep>,
    mut visit: impl FnMut(&Row<'_>) -> Result<ControlFlow<()>, E>,
) -> Result<(), E> {
    let params = unwalked.map(WalkStep::params).unwrap_or_default();
    let held = unwalked.map_or_else(
        || "0".to_string(),
        |step| step.holds_captured("c.seq", "c.item_id"),
    );
    // Duplicates are rare (INSERT OR REPLACE, delete and re-insert): the grouping keeps only
    // ids captured more than once, and the queue is scanned in `seq` order beside it.
    let mut statement = conn.prepare(&format!(
        "SELECT c.seq, h.tenant_id, h.id, h.customer_id, h.channel, h.outcome, h.payload, h.created_at,
                d.last IS NOT NULL AND c.seq < d.last, {held}
           FROM interaction_capture c
           LEFT JOIN (SELECT item_id, MAX(seq) AS last FROM interaction_capture
                       GROUP BY item_id HAVING COUNT(*) > 1) d ON d.item_id = c.item_id
           LEFT JOIN interaction_history h ON h.id = c.item_id
          ORDER BY c.seq"
    ))?;
    let mut rows = statement.query(capture::bind(&params).as_slice())?;
    while let Some(row) = rows.next()? {
        if visit(row)?.is_break() {
            break;
        }
    }
    Ok(())
}

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

/// Records the final paths of a batch's files just before they are renamed into place.
pub fn record_staged(
    store: &Store,
    files: &[(&str, &str)],
    now_text: &str,
) -> Result<(), StoreError> {
    let mut conn = store.conn()?;
    // Durable whatever EDGECRON_DURABILITY says: the renames that follow are, and a file in
    // place that no record names would be a second copy of rows the next batch exports again.
    let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
    conn.execute_batch("PRAGMA synchronous = FULL")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO export_staged_files (path, tenant_id, staged_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (path) DO NOTHING",
        )?;
        for (tenant_id, path) in files {
            insert.execute((path, tenant_id, now_text))?;
        }
    }
    let committed = tx.commit();
    conn.execute_batch(&format!("PRAGMA synchronous = {synchronous}"))?;
    committed?;
    Ok(())
}

/// Recorded paths of files that were about to be renamed into place but never committed.
pub fn uncommitted_staged_paths(store: &Store) -> Result<Vec<String>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(
        "SELECT s.path FROM export_staged_files s
          WHERE NOT EXISTS (SELECT 1 FROM export_files f WHERE f.path = s.path)",
    )?;
    let paths = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(paths)
}

pub fn clear_staged(store: &Store) -> Result<(), StoreError> {
    store
        .conn()?
        .execute("DELETE FROM export_staged_files", [])?;
    Ok(())
}

/// Batches an earlier version left in progress: the tenant and the first day they could
/// have written (`None`: any day).
pub fn legacy_batches(store: &Store) -> Result<Vec<(String, Option<NaiveDate>)>, StoreError> {
    let conn = store.conn()?;
    let mut statement =
        conn.prepare("SELECT tenant_id, from_created_at FROM export_batches_in_progress")?;
    let batches = statement
        .query_map([], |row| {
            let from: String = row.get(1)?;
            Ok((
                row.get(0)?,
                crate::clock::from_store_text(&from).map(|time| time.date_naive()),
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(batches)
}

pub fn end_legacy_batch(store: &Store, tenant_id: &str) -> Result<(), StoreError> {
    store.conn()?.execute(
        "DELETE FROM export_batches_in_progress WHERE tenant_id = ?1",
        [tenant_id],
    )?;
    Ok(())
}

/// Every committed file: its path (relative to the data dir) and whether its local copy was
/// removed after upload.
pub fn committed_files(store: &Store) -> Result<Vec<(String, bool)>, StoreError> {
    let conn = store.conn()?;
    let mut statement =
        conn.prepare("SELECT path, local_deleted_at IS NOT NULL FROM export_files ORDER BY id")?;
    let files = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(files)
}

/// Paths of the tenant's committed files.
pub fn committed_paths(store: &Store, tenant_id: &str) -> Result<Vec<String>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare("SELECT path FROM export_files WHERE tenant_id = ?1")?;
    let paths = statement
        .query_map([tenant_id], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(paths)
}

/// Rows the tenants' last runs could not export as they are.
pub fn invalid_rows(store: &Store) -> Result<u64, StoreError> {
    let count: i64 = store.conn()?.query_row(
        "SELECT COALESCE(SUM(invalid_rows), 0) FROM export_checkpoints",
        [],
        |row| row.get(0),
    )?;
    Ok(count as u64)
}

/// Records what each tenant has waiting as a run ends, for `/metrics`; answers it.
pub fn record_backlog_by_tenant(
    store: &Store,
    now_text: &str,
) -> Result<HashMap<String, u64>, StoreError> {
    let waiting = waiting_by_tenant(store)?;
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("DELETE FROM export_backlog", [])?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO export_backlog (tenant_id, rows, updated_at) VALUES (?1, ?2, ?3)",
        )?;
        for (tenant_id, rows) in &waiting {
            insert.execute(params![tenant_id, *rows as i64, now_text])?;
        }
    }
    tx.commit()?;
    Ok(waiting)
}

/// What each tenant had waiting when the last export run ended.
pub fn backlog_by_tenant(store: &Store) -> Result<Vec<(String, u64)>, StoreError> {
    let conn = store.conn()?;
    let mut statement =
        conn.prepare("SELECT tenant_id, rows FROM export_backlog ORDER BY tenant_id")?;
    let rows = statement
        .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Rows each tenant has waiting (its current tenant), captured or still to be walked.
pub fn waiting_by_tenant(store: &Store) -> Result<HashMap<String, u64>, StoreError> {
    let conn = store.conn()?;
    let mut waiting: HashMap<String, u64> = HashMap::new();
    let mut add = |statement: &mut rusqlite::Statement<'_>,
                   params: &[(&str, &dyn rusqlite::ToSql)]|
     -> Result<(), StoreError> {
        let mut rows = statement.query(params)?;
        while let Some(row) = rows.next()? {
            let (tenant, count): (Option<String>, i64) = (row.get(0).ok(), row.get(1)?);
            if let Some(tenant) = tenant {
                *waiting.entry(tenant).or_default() += count as u64;
            }
        }
        Ok(())
    };
    add(
        &mut conn.prepare(
            "SELECT h.tenant_id, COUNT(DISTINCT c.item_id) FROM interaction_capture c
              JOIN interaction_history h ON h.id = c.item_id GROUP BY h.tenant_id",
        )?,
        &[],
    )?;
    if let Some(step) = capture::state(store, Source::Interactions)?.unwalked() {
        let params = step.params();
        add(
            &mut conn.prepare(&format!(
                "SELECT tenant_id, COUNT(*) FROM interaction_history h WHERE {} GROUP BY tenant_id",
                step.condition(Source::Interactions, "h.id")
            ))?,
            &capture::bind(&params),
        )?;
    }
    Ok(waiting)
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

/// A manifest file waiting for upload.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub id: i64,
    pub path: String,
    pub bytes: i64,
    pub attempts: i64,
    /// The file's content as the manifest knows it when the upload begins.
    pub sha256: String,
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
        "SELECT id, path, bytes, upload_attempts, sha256 FROM export_files
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
                sha256: row.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Records a verified upload of the file's content `sha256`; answers false, recording
/// nothing, when the file is no longer that content (rewritten or removed by an erasure or
/// retention while it went up).
pub fn mark_uploaded(
    store: &Store,
    id: i64,
    sha256: &str,
    now_text: &str,
) -> Result<bool, StoreError> {
    let changed = store.conn()?.execute(
        "UPDATE export_files SET upload_status = 'uploaded', uploaded_at = ?3, upload_error = NULL,
             upload_attempts = upload_attempts + 1, next_attempt_at = NULL
         WHERE id = ?1 AND sha256 = ?2",
        params![id, sha256, now_text],
    )?;
    Ok(changed == 1)
}

/// The content (SHA-256) the manifest knows a file by; `None` once it is removed.
pub fn file_content(store: &Store, id: i64) -> Result<Option<String>, StoreError> {
    Ok(store
        .conn()?
        .query_row(
            "SELECT sha256 FROM export_files WHERE id = ?1",
            [id],
            |row| row.get(0),
        )
        .optional()?)
}

/// Records that the local copy of an uploaded file was removed.
pub fn mark_local_removed(store: &Store, id: i64, now_text: &str) -> Result<(), StoreError> {
    store.conn()?.execute(
        "UPDATE export_files SET local_deleted_at = ?2 WHERE id = ?1",
        params![id, now_text],
    )?;
    Ok(())
}

/// Records an attempt that met storage unreachable: the file stays due, with the error, so
/// the next run tries it (and the rest of the queue) as soon as storage answers.
pub fn mark_upload_deferred(store: &Store, id: i64, error: &str) -> Result<(), StoreError> {
    store.conn()?.execute(
        "UPDATE export_files SET upload_status = 'pending', next_attempt_at = NULL, upload_error = ?2
         WHERE id = ?1",
        params![id, error],
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

/// Whether the manifest lists a file at `path`.
pub fn is_listed(store: &Store, path: &str) -> Result<bool, StoreError> {
    Ok(store
        .conn()?
        .query_row("SELECT 1 FROM export_files WHERE path = ?1", [path], |_| {
            Ok(())
        })
        .optional()?
        .is_some())
}

/// Paths of the tenant's committed files of one partition day.
pub fn paths_of_day(store: &Store, tenant_id: &str, day: &str) -> Result<Vec<String>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare_cached(
        "SELECT path FROM export_files WHERE tenant_id = ?1 AND partition_day = ?2",
    )?;
    let paths = statement
        .query_map([tenant_id, day], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(paths)
}
