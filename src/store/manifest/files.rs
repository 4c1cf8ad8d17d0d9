//! The manifest's files (`export_files`): which are committed, by tenant and partition day.

use rusqlite::OptionalExtension;

use crate::store::{Store, StoreError};

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
