//! `edgecron backup`: a consistent copy of the store taken while `serve` and the application
//! keep writing, checked before it is given its name.
//!
//! SQLite's online backup copies every page in one step, inside one read transaction: in WAL
//! mode that snapshot never blocks a writer, and no write during the copy can make it restart.
//! The copy goes to a hidden file beside the target, passes `PRAGMA integrity_check`, is made
//! durable, and is then linked to the target name, which fails if that name exists: an
//! existing backup is never overwritten, not even by a race.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::{Store, StoreError};

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{}: already exists; a backup never overwrites one", .0.display())]
    Exists(PathBuf),
    #[error("the copy failed its integrity check: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Copies the store to `target`, a file that must not exist yet.
pub fn backup_to(store: &Store, target: &Path) -> Result<BackupReport, BackupError> {
    if target.symlink_metadata().is_ok() {
        return Err(BackupError::Exists(target.to_path_buf()));
    }
    let started = Instant::now();
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let partial = target.with_file_name(format!(".{name}.partial"));
    let io = |context: String| move |source| BackupError::Io { context, source };
    let _ = std::fs::remove_file(&partial);
    let copied = copy_into(store, &partial);
    if let Err(error) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(error);
    }
    std::fs::File::open(&partial)
        .and_then(|file| file.sync_all())
        .map_err(io(format!("syncing {}", partial.display())))?;
    let linked = std::fs::hard_link(&partial, target);
    let _ = std::fs::remove_file(&partial);
    if let Err(error) = linked {
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(BackupError::Exists(target.to_path_buf()));
        }
        return Err(io(format!("naming {}", target.display()))(error));
    }
    if let Some(dir) = target.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|handle| handle.sync_all())
            .map_err(io(format!("syncing {}", dir.display())))?;
    }
    let bytes = std::fs::metadata(target)
        .map_err(io(format!("reading {}", target.display())))?
        .len();
    Ok(BackupReport {
        path: target.to_path_buf(),
        bytes,
        took: started.elapsed(),
    })
}

fn copy_into(store: &Store, partial: &Path) -> Result<(), BackupError> {
    let source = store.conn()?;
    let mut copy = Connection::open_with_flags(
        partial,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )
    .map_err(StoreError::from)?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut copy).map_err(StoreError::from)?;
        // Every page in one step: one snapshot, never restarted by the writers.
        backup.step(-1).map_err(StoreError::from)?;
    }
    // A copy on its own is better as one file: no WAL beside it.
    copy.pragma_update(None, "journal_mode", "DELETE")
        .map_err(StoreError::from)?;
    let verdict: String = copy
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(StoreError::from)?;
    if verdict != "ok" {
        return Err(BackupError::Corrupt(verdict));
    }
    Ok(())
}

/// Why `path` is not a copy `edgecron backup` made: it must open, pass
/// `PRAGMA integrity_check` and hold edgecron's export manifest.
pub fn check_copy(path: &Path) -> Result<(), String> {
    if !path.is_file() {
        return Err("no such file".into());
    }
    let checked = || -> rusqlite::Result<Result<(), String>> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let integrity: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
        if integrity != "ok" {
            return Ok(Err(format!("integrity check: {integrity}")));
        }
        let manifest: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'export_files'",
            [],
            |row| row.get(0),
        )?;
        Ok(if manifest == 0 {
            Err("it has no export manifest".into())
        } else {
            Ok(())
        })
    };
    checked().map_err(|error| error.to_string())?
}

#[cfg(test)]
mod tests {
    use super::backup_to;
    use crate::store::test_support::temp_store;

    #[test]
    fn a_backup_is_a_whole_store_and_never_overwrites_one() {
        let (dir, store) = temp_store();
        store
            .conn()
            .unwrap()
            .execute("INSERT INTO tenants (id) VALUES ('acme')", [])
            .unwrap();
        let target = dir.path().join("copy.db");
        let report = backup_to(&store, &target).unwrap();
        assert!(report.bytes > 0);
        let copy = rusqlite::Connection::open(&target).unwrap();
        let tenants: i64 = copy
            .query_row("SELECT COUNT(*) FROM tenants", [], |row| row.get(0))
            .unwrap();
        assert_eq!(tenants, 1);
        let again = backup_to(&store, &target).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("partial"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
}
