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

/// Records a rewrite before the file on disk changes.
pub fn journal(store: &Store, rewrite: &Rewrite, now_text: &str) -> Result<(), StoreError> {
    store.conn()?.execute(
        "INSERT OR REPLACE INTO export_rewrites (file_id, path, staged, new_sha256, new_bytes,
             new_rows, old_etags, applied, replace_object, relocal, tenant_id, audit, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, ?8, ?9, ?10, ?11)",
        params![
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
        ],
    )?;
    Ok(())
}

/// Every journaled rewrite, oldest first.
pub fn journaled(store: &Store) -> Result<Vec<Rewrite>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(
        "SELECT file_id, path, staged, new_sha256, new_bytes, new_rows, old_etags, applied,
                replace_object, relocal, tenant_id, audit
           FROM export_rewrites ORDER BY created_at, file_id",
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
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rewrites)
}

/// Once the new file is in place (or the old one gone): the manifest row follows, the audit
/// row is written and the rewrite is marked applied, in one transaction. Answers whether the
/// uploaded object is still the old one (then it is replaced, or removed).
pub fn apply(store: &Store, rewrite: &Rewrite, now_text: &str) -> Result<bool, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
    tx.commit()?;
    Ok(replace_object)
}

/// The rewrite is done (or undone: nothing had changed): its journal row goes.
pub fn forget(store: &Store, file_id: i64) -> Result<(), StoreError> {
    store
        .conn()?
        .execute("DELETE FROM export_rewrites WHERE file_id = ?1", [file_id])?;
    Ok(())
}
