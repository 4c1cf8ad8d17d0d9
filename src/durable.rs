//! Making what edgecron writes survive a power cut (SPEC section 10): a file is `fsync`ed
//! before it is renamed into place, and the directory holding the new name is `fsync`ed
//! after, as is the parent of every directory created on the way.
//!
//! Per file and per directory, not `syncfs`: `syncfs` also flushes the application's dirty
//! pages on the same file system (a stall for its writers at every batch), does nothing for a
//! store on another file system, and a file system that models power loss (FUSE) never sees
//! it. `bench/durability` measures both.
//!
//! Many syncs are made several at once ([`SYNCS_IN_FLIGHT`]): a journaling file system
//! commits concurrent syncs together, so a batch's 900 files and 900 partition directories
//! cost a fraction of 1,800 syncs made one after another (`bench/export`).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::io_error::IoError;

/// Syncs in flight at once: enough for the file system to commit them together, few enough
/// not to crowd the application's own I/O.
const SYNCS_IN_FLIGHT: usize = 16;

/// Makes `dir`'s entries durable: names created, renamed into it or removed from it.
pub fn sync_dir(dir: &Path) -> Result<(), IoError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(IoError::during(format!("syncing {}", dir.display())))
}

/// Makes the data of each of `files` durable, several at once.
pub fn sync_files(files: &[&Path]) -> Result<(), IoError> {
    in_parallel(files, |file| {
        File::open(file)
            .and_then(|handle| handle.sync_data())
            .map_err(IoError::during(format!("syncing {}", file.display())))
    })
}

/// Makes each distinct directory holding one of `paths` durable, once, several at once.
pub fn sync_parents<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<(), IoError> {
    let dirs: BTreeSet<&Path> = paths.into_iter().filter_map(Path::parent).collect();
    let dirs: Vec<&Path> = dirs.into_iter().collect();
    in_parallel(&dirs, sync_dir)
}

/// Creates `dir` and its missing ancestors, each durable in its parent.
pub fn create_dir_all(dir: &Path) -> Result<(), IoError> {
    let created = create_dir_all_unsynced(dir)?;
    sync_parents(created.iter().map(PathBuf::as_path))
}

/// Creates `dir` and its missing ancestors, answering those it created: each is durable once
/// its parent is synced ([`sync_parents`]), which the caller does with its other syncs.
pub fn create_dir_all_unsynced(dir: &Path) -> Result<Vec<PathBuf>, IoError> {
    let mut missing: Vec<&Path> = Vec::new();
    let mut next = Some(dir);
    while let Some(candidate) = next.filter(|candidate| !candidate.is_dir()) {
        missing.push(candidate);
        next = candidate.parent();
    }
    let mut created = Vec::new();
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => created.push(dir.to_path_buf()),
            // Another thread or process made it meanwhile: it makes it durable too.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(IoError::during(format!("creating {}", dir.display()))(
                    error,
                ));
            }
        }
    }
    Ok(created)
}

/// Runs `sync` on every path, [`SYNCS_IN_FLIGHT`] at a time; the first error is answered
/// once all have ended.
fn in_parallel(
    paths: &[&Path],
    sync: impl Fn(&Path) -> Result<(), IoError> + Sync,
) -> Result<(), IoError> {
    if paths.len() < 2 {
        return paths.iter().try_for_each(|path| sync(path));
    }
    let next = AtomicUsize::new(0);
    let take_turns = || -> Result<(), IoError> {
        while let Some(path) = paths.get(next.fetch_add(1, Ordering::Relaxed)) {
            sync(path)?;
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..SYNCS_IN_FLIGHT.min(paths.len()))
            .map(|_| scope.spawn(take_turns))
            .collect();
        let mut first_error = Ok(());
        for worker in workers {
            let ended = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            if first_error.is_ok() {
                first_error = ended;
            }
        }
        first_error
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_every_missing_directory_and_accepts_existing_ones() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("a/b/c");
        create_dir_all(&dir).expect("created");
        assert!(dir.is_dir());
        create_dir_all(&dir).expect("already there");
        let file = dir.join("f");
        std::fs::write(&file, b"x").expect("written");
        sync_parents([file.as_path(), file.as_path()]).expect("synced");
    }

    #[test]
    fn many_files_and_directories_are_synced_and_the_first_error_is_answered() {
        let root = tempfile::tempdir().expect("temp dir");
        let dirs: Vec<PathBuf> = (0..40)
            .map(|n| root.path().join(format!("d{n}/e")))
            .collect();
        let mut created = Vec::new();
        for dir in &dirs {
            created.extend(create_dir_all_unsynced(dir).expect("created"));
        }
        assert_eq!(created.len(), 80);
        sync_parents(created.iter().map(PathBuf::as_path)).expect("synced");
        let files: Vec<PathBuf> = dirs.iter().map(|dir| dir.join("f")).collect();
        for file in &files {
            std::fs::write(file, b"x").expect("written");
        }
        let mut paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        sync_files(&paths).expect("synced");
        sync_parents(paths.iter().copied()).expect("synced");
        let gone = root.path().join("gone");
        paths.insert(17, &gone);
        let error = sync_files(&paths).expect_err("a file that is not there");
        assert!(error.context.contains("gone"), "{error}");
    }

    #[test]
    fn a_directory_under_a_file_is_an_error_naming_it() {
        let root = tempfile::tempdir().expect("temp dir");
        let file = root.path().join("f");
        std::fs::write(&file, b"x").expect("written");
        let error = create_dir_all(&file.join("d")).expect_err("under a file");
        assert!(error.context.contains("creating"), "{error}");
    }
}
