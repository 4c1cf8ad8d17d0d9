//! The SQL of rewriting committed export files (erasure, retention): the manifest rows a
//! rewrite reads and changes, and the journal (`export_rewrites`) that lets a killed run finish
//! or undo one.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Store, StoreError};

/// A committed export file, as a rewrite needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedFile {
    pub id: i64,
    pub path: String,
    pub tenant_id: String,
    pub partition_day: String,
    pub row_count: i64,
    pub bytes: i64,
    /// Its upload is done: the bucket holds it.
    pub uploaded: bool,
    /// Its local copy was removed after the upload (`EXPORT_DELETE_LOCAL_AFTER_UPLOAD`).
    pub local_removed: bool,
}

const FILE_COLUMNS: &str = "id, path, tenant_id, partition_day, row_count, bytes,
     upload_status = 'uploaded', local_deleted_at IS NOT NULL";

fn committed_file(row: &rusqlite::Row<'_>) -> rusqlite::Result<CommittedFile> {
    Ok(CommittedFile {
        id: row.get(0)?,
        path: row.get(1)?,
        tenant_id: row.get(2)?,
        partition_day: row.get(3)?,
        row_count: row.get(4)?,
        bytes: row.get(5)?,
        uploaded: row.get(6)?,
        local_removed: row.get(7)?,
    })
}

/// A tenant's files of the given UTC days (`YYYY-MM-DD`), oldest first.
pub fn files_of_days(
    store: &Store,
    tenant_id: &str,
    days: &[String],
) -> Result<Vec<CommittedFile>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(&format!(
        "SELECT {FILE_COLUMNS} FROM export_files
          WHERE tenant_id = ?1 AND partition_day IN (SELECT value FROM json_each(?2))
          ORDER BY partition_day, id"
    ))?;
    let days = serde_json::to_string(days).unwrap_or_else(|_| "[]".into());
    let files = statement
        .query_map(params![tenant_id, days], committed_file)?
        .collect::<Result<_, _>>()?;
    Ok(files)
}

/// A tenant's files of the UTC days before `day` (`YYYY-MM-DD`), oldest first, at most `limit`.
pub fn files_before(
    store: &Store,
    tenant_id: &str,
    day: &str,
    limit: i64,
) -> Result<Vec<CommittedFile>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(&format!(
        "SELECT {FILE_COLUMNS} FROM export_files
          WHERE tenant_id = ?1 AND partition_day < ?2
          ORDER BY partition_day, id LIMIT ?3"
    ))?;
    let files = statement
        .query_map(params![tenant_id, day, limit], committed_file)?
        .collect::<Result<_, _>>()?;
    Ok(files)
}

/// One journaled rewrite of a committed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub file_id: i64,
    pub run_id: i64,
    pub path: String,
    /// The new file, relative to the data dir; `None`: the file is removed.
    pub staged: Option<String>,
    pub new_sha256: Option<String>,
    pub new_bytes: Option<i64>,
    pub new_rows: Option<i64>,
    /// The old content's ETags (its MD5, its multipart ETag), space-separated.
    pub old_etags: String,
    pub applied: bool,
    pub replace_object: bool,
    pub relocal: bool,
    pub tenant_id: String,
    /// The audit row's `action` and `details`, as JSON.
    pub audit: String,
}

/// Records rewrites before the files on disk change, in one transaction.
pub fn journal(store: &Store, rewrites: &[Rewrite], now_text: &str) -> Result<(), StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare(
            "INSERT OR REPLACE INTO export_rewrites (file_id, path, staged, new_sha256, new_bytes,
                 new_rows, old_etags, applied, replace_object, relocal, tenant_id, audit, created_at,
                 run_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for rewrite in rewrites {
            insert.execute(params![
                rewrite.file_id,
                rewrite.path,
                rewrite.staged,
                rewrite.new_sha256,
                rewrite.new_bytes,
                rewrite.new_rows,
                rewrite.old_etags,
                rewrite.relocal,
                rewrite.tenant_id,
                rewrite.audit,
                now_text,
                rewrite.run_id,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Every journaled rewrite of a run no longer running, oldest first (a run still running
/// finishes its own).
pub fn journaled(store: &Store) -> Result<Vec<Rewrite>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(
        "SELECT w.file_id, w.path, w.staged, w.new_sha256, w.new_bytes, w.new_rows, w.old_etags,
                w.applied, w.replace_object, w.relocal, w.tenant_id, w.audit, w.run_id
           FROM export_rewrites w LEFT JOIN job_runs r ON r.id = w.run_id
          WHERE r.status IS NOT 'running'
          ORDER BY w.created_at, w.file_id",
    )?;
    let rewrites = statement
        .query_map([], |row| {
            Ok(Rewrite {
                file_id: row.get(0)?,
                path: row.get(1)?,
                staged: row.get(2)?,
                new_sha256: row.get(3)?,
                new_bytes: row.get(4)?,
                new_rows: row.get(5)?,
                old_etags: row.get(6)?,
                applied: row.get(7)?,
                replace_object: row.get(8)?,
                relocal: row.get(9)?,
                tenant_id: row.get(10)?,
                audit: row.get(11)?,
                run_id: row.get(12)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rewrites)
}

/// Once the new files are in place (or the old ones gone): each manifest row follows, each
/// file's audit row is written and each rewrite is marked applied, in one transaction. Answers,
/// for each, whether its uploaded object is still the old one (then it is replaced, or removed).
pub fn apply(store: &Store, rewrites: &[Rewrite], now_text: &str) -> Result<Vec<bool>, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut replace = Vec::with_capacity(rewrites.len());
    for rewrite in rewrites {
        let uploaded: Option<bool> = tx
            .query_row(
                "SELECT upload_status = 'uploaded' FROM export_files WHERE id = ?1",
                [rewrite.file_id],
                |row| row.get(0),
            )
            .optional()?;
        let replace_object = uploaded.unwrap_or(false);
        match (&rewrite.staged, rewrite.new_sha256.as_ref()) {
            (Some(_), Some(sha256)) => {
                tx.execute(
                    "UPDATE export_files SET sha256 = ?2, bytes = ?3, row_count = ?4 WHERE id = ?1",
                    params![rewrite.file_id, sha256, rewrite.new_bytes, rewrite.new_rows],
                )?;
            }
            _ => {
                tx.execute("DELETE FROM export_files WHERE id = ?1", [rewrite.file_id])?;
            }
        }
        let audit: serde_json::Value = serde_json::from_str(&rewrite.audit).unwrap_or_default();
        tx.execute(
            "INSERT INTO audit_log (tenant_id, actor, action, target, details, created_at)
             VALUES (?1, 'edgecron', ?2, ?3, ?4, ?5)",
            params![
                rewrite.tenant_id,
                audit["action"].as_str().unwrap_or("export.rewrite"),
                rewrite.path,
                audit["details"].to_string(),
                now_text,
            ],
        )?;
        tx.execute(
            "UPDATE export_rewrites SET applied = 1, replace_object = ?2 WHERE file_id = ?1",
            params![rewrite.file_id, replace_object],
        )?;
        replace.push(replace_object);
    }
    tx.commit()?;
    Ok(replace)
}

/// Rewrites done (or undone: nothing had changed): their journal rows go.
pub fn forget(store: &Store, file_ids: &[i64]) -> Result<(), StoreError> {
    if file_ids.is_empty() {
        return Ok(());
    }
    let ids = serde_json::to_string(file_ids).unwrap_or_else(|_| "[]".into());
    store.conn()?.execute(
        "DELETE FROM export_rewrites WHERE file_id IN (SELECT value FROM json_each(?1))",
        [ids],
    )?;
    Ok(())
}

/// Whether run `run_id` is still recorded as running (a killed run is, until its job's next
/// run takes its lease over).
pub fn run_is_running(store: &Store, run_id: i64) -> Result<bool, StoreError> {
    Ok(store
        .conn()?
        .query_row(
            "SELECT status = 'running' FROM job_runs WHERE id = ?1",
            [run_id],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(false))
}
