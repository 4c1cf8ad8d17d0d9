//! Export files the manifest does not list, taken into it (`export::reconcile`).

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::export::Upload;
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
    pub upload: Upload,
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
    let upload_status = match file.upload {
        Upload::Queued => "pending",
        Upload::LocalOnly => "local",
    };
    tx.execute(
        "INSERT INTO export_files (path, tenant_id, partition_day, row_count, first_created_at, first_id,
             last_created_at, last_id, bytes, sha256, created_at, upload_status, raw_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?9)",
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
