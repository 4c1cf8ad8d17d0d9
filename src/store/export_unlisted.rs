//! Export files the manifest does not list, taken into it (`export::reconcile`).

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::manifest::Upload;
use super::{Store, StoreError};

/// An export file on disk that the manifest does not list (a restore put an older store in
/// place), read back: its rows' ids, size and digest.
pub struct UnlistedFile<'a> {
    pub path: &'a str,
    pub tenant_id: &'a str,
    pub partition_day: &'a str,
    pub ids: &'a [String],
    pub bytes: u64,
    pub sha256: &'a str,
    pub now_text: &'a str,
    pub held: Held,
}

/// Where an unlisted file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// On disk: to be uploaded as new files are (or kept local).
    OnDisk(Upload),
    /// Only in the bucket (its local copy was removed after upload).
    InBucketOnly,
}

/// Every tenant the store knows, and every one the manifest names.
pub fn tenant_ids(store: &Store) -> Result<Vec<String>, StoreError> {
    let conn = store.conn()?;
    let mut statement =
        conn.prepare("SELECT id FROM tenants UNION SELECT tenant_id FROM export_files")?;
    let ids = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
}

/// Takes an unlisted file into the manifest and its rows out of the capture queue, in one
/// transaction; answers how many queue entries it took. Its first and last rows' times are
/// theirs if the store still has them, else the start of its day.
pub fn take(store: &Store, file: &UnlistedFile<'_>) -> Result<u64, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let day_start = format!("{}T00:00:00.000Z", file.partition_day);
    let created_at = |id: &str| -> Result<String, StoreError> {
        let found: Option<String> = tx
            .query_row(
                "SELECT CAST(created_at AS TEXT) FROM interaction_history WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .optional()?;
        Ok(found.unwrap_or_else(|| day_start.clone()))
    };
    let first = file.ids.first().map_or("", String::as_str);
    let last = file.ids.last().map_or("", String::as_str);
    let (first_created_at, last_created_at) = (created_at(first)?, created_at(last)?);
    let (upload_status, uploaded_at) = match file.held {
        Held::OnDisk(Upload::Queued) => ("pending", None),
        Held::OnDisk(Upload::LocalOnly) => ("local", None),
        Held::InBucketOnly => ("uploaded", Some(file.now_text)),
    };
    tx.execute(
        "INSERT INTO export_files (path, tenant_id, partition_day, row_count, first_created_at, first_id,
             last_created_at, last_id, bytes, sha256, created_at, upload_status, raw_bytes,
             uploaded_at, local_deleted_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?9, ?13, ?13)",
        params![
            file.path,
            file.tenant_id,
            file.partition_day,
            file.ids.len() as i64,
            first_created_at,
            first,
            last_created_at,
            last,
            file.bytes as i64,
            file.sha256,
            file.now_text,
            upload_status,
            uploaded_at,
        ],
    )?;
    let ids = serde_json::Value::from(file.ids.to_vec()).to_string();
    let taken = tx.execute(
        "DELETE FROM interaction_capture WHERE item_id IN (SELECT value FROM json_each(?1))",
        [ids],
    )?;
    tx.commit()?;
    Ok(taken as u64)
}
