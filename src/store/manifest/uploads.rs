//! The upload queue: manifest files waiting for S3, and their upload, deferral or failure.

use rusqlite::OptionalExtension;
use rusqlite::params;

use crate::store::{Store, StoreError};

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
