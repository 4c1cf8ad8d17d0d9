//! Files about to be renamed into place (`export_batches_in_progress`), recorded before their
//! renames so a crash between the two is finished or undone at the next start.

use chrono::NaiveDate;
use rusqlite::TransactionBehavior;

use crate::store::{Store, StoreError};

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
