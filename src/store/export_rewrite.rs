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
    pub sha256: String,
    /// Its upload is done: the bucket holds it.
    pub uploaded: bool,
    /// Its local copy was removed after the upload (`EXPORT_DELETE_LOCAL_AFTER_UPLOAD`).
    pub local_removed: bool,
}

const FILE_COLUMNS: &str = "id, path, tenant_id, partition_day, row_count, bytes, sha256,
     upload_status = 'uploaded', local_deleted_at IS NOT NULL";

fn committed_file(row: &rusqlite::Row<'_>) -> rusqlite::Result<CommittedFile> {
    Ok(CommittedFile {
        id: row.get(0)?,
        path: row.get(1)?,
        tenant_id: row.get(2)?,
        partition_day: row.get(3)?,
        row_count: row.get(4)?,
        bytes: row.get(5)?,
        sha256: row.get(6)?,
        uploaded: row.get(7)?,
        local_removed: row.get(8)?,
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
    /// The manifest's content of the file when the rewrite read it.
    pub old_sha256: String,
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

/// Records rewrites before the files on disk change, in one transaction, each claiming its
/// file: a file another run's rewrite holds, or whose manifest content is no longer the one
/// the rewrite read, is not claimed. Answers, for each, whether it was.
pub fn journal(
    store: &Store,
    rewrites: &[Rewrite],
    now_text: &str,
) -> Result<Vec<bool>, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut claimed = Vec::with_capacity(rewrites.len());
    {
        let mut insert = tx.prepare(
            "INSERT INTO export_rewrites (file_id, path, old_sha256, staged, new_sha256, new_bytes,
                 new_rows, old_etags, applied, replace_object, relocal, tenant_id, audit,
                 created_at, run_id)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0, ?9, ?10, ?11, ?12, ?13
              WHERE NOT EXISTS (SELECT 1 FROM export_rewrites WHERE file_id = ?1)
                AND EXISTS (SELECT 1 FROM export_files WHERE id = ?1 AND sha256 = ?3)",
        )?;
        for rewrite in rewrites {
            let inserted = insert.execute(params![
                rewrite.file_id,
                rewrite.path,
                rewrite.old_sha256,
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
            claimed.push(inserted == 1);
        }
    }
    tx.commit()?;
    Ok(claimed)
}

/// Takes over a rewrite left by a run no longer running, for run `run_id`; answers false when
/// another run took it first.
pub fn take_over(store: &Store, rewrite: &Rewrite, run_id: i64) -> Result<bool, StoreError> {
    let changed = store.conn()?.execute(
        "UPDATE export_rewrites SET run_id = ?3 WHERE file_id = ?1 AND run_id = ?2",
        params![rewrite.file_id, rewrite.run_id, run_id],
    )?;
    Ok(changed == 1)
}

/// The staged file of every journaled rewrite, whichever run holds it.
pub fn staged_files(store: &Store) -> Result<Vec<String>, StoreError> {
    let conn = store.conn()?;
    let mut statement =
        conn.prepare("SELECT staged FROM export_rewrites WHERE staged IS NOT NULL")?;
    let staged = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(staged)
}

/// Whether a rewrite of the file is under way.
pub fn is_rewriting(store: &Store, file_id: i64) -> Result<bool, StoreError> {
    Ok(store.conn()?.query_row(
        "SELECT EXISTS (SELECT 1 FROM export_rewrites WHERE file_id = ?1)",
        [file_id],
        |row| row.get(0),
    )?)
}

/// Every journaled rewrite of a run no longer running, oldest first (a run still running
/// finishes its own).
pub fn journaled(store: &Store) -> Result<Vec<Rewrite>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(
        "SELECT w.file_id, w.path, w.staged, w.new_sha256, w.new_bytes, w.new_rows, w.old_etags,
                w.applied, w.replace_object, w.relocal, w.tenant_id, w.audit, w.run_id,
                w.old_sha256
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
                old_sha256: row.get(13)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rewrites)
}

/// Once the new files are in place (or the old ones gone): each manifest row follows, each
/// file's audit row is written and each rewrite is marked applied, in one transaction (a
/// rewrite already applied, or no longer this run's, is left as it is). Answers, for each,
/// whether the manifest had the file uploaded (its object is then replaced, or removed).
pub fn apply(store: &Store, rewrites: &[Rewrite], now_text: &str) -> Result<Vec<bool>, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut uploaded_files = Vec::with_capacity(rewrites.len());
    for rewrite in rewrites {
        let uploaded: bool = tx
            .query_row(
                "SELECT upload_status = 'uploaded' FROM export_files WHERE id = ?1",
                [rewrite.file_id],
                |row| row.get(0),
            )
            .optional()?
            .unwrap_or(false);
        uploaded_files.push(uploaded);
        let marked = tx.execute(
            "UPDATE export_rewrites SET applied = 1, replace_object = ?3
              WHERE file_id = ?1 AND run_id = ?2 AND applied = 0",
            params![rewrite.file_id, rewrite.run_id, uploaded],
        )?;
        if marked == 0 {
            continue;
        }
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
    }
    tx.commit()?;
    Ok(uploaded_files)
}

/// Rewrites of run `run_id` done (or undone: nothing had changed): their journal rows go.
pub fn forget(store: &Store, run_id: i64, file_ids: &[i64]) -> Result<(), StoreError> {
    if file_ids.is_empty() {
        return Ok(());
    }
    let ids = serde_json::to_string(file_ids).unwrap_or_else(|_| "[]".into());
    store.conn()?.execute(
        "DELETE FROM export_rewrites
          WHERE run_id = ?1 AND file_id IN (SELECT value FROM json_each(?2))",
        params![run_id, ids],
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
