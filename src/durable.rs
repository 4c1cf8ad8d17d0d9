//! Making what edgecron writes survive a power cut (SPEC section 10): a file is `fsync`ed
//! before it is renamed into place, and the directory holding the new name is `fsync`ed
//! after, as is the parent of every directory created on the way.
//!
//! Per file and per directory, not `syncfs`: `syncfs` also flushes the application's dirty
//! pages on the same file system (a stall for its writers at every batch), does nothing for a
//! store on another file system, and a file system that models power loss (FUSE) never sees
//! it. `bench/durability` measures both.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::io_error::IoError;

/// Makes `dir`'s entries durable: names created, renamed into it or removed from it.
pub fn sync_dir(dir: &Path) -> Result<(), IoError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(IoError::during(format!("syncing {}", dir.display())))
}

/// Makes each distinct directory holding one of `paths` durable, once.
pub fn sync_parents<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<(), IoError> {
    let dirs: BTreeSet<&Path> = paths.into_iter().filter_map(Path::parent).collect();
    dirs.into_iter().try_for_each(sync_dir)
}

/// Creates `dir` and its missing ancestors, each durable in its parent.
pub fn create_dir_all(dir: &Path) -> Result<(), IoError> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut next = Some(dir);
    while let Some(candidate) = next.filter(|candidate| !candidate.is_dir()) {
        missing.push(candidate.to_path_buf());
        next = candidate.parent();
    }
    for created in missing.iter().rev() {
        match std::fs::create_dir(created) {
            Ok(()) => {}
            // Another thread or process made it meanwhile: it makes it durable too.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(IoError::during(format!("creating {}", created.display()))(
                    error,
                ));
            }
        }
        if let Some(parent) = created.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
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
    fn a_directory_under_a_file_is_an_error_naming_it() {
        let root = tempfile::tempdir().expect("temp dir");
        let file = root.path().join("f");
        std::fs::write(&file, b"x").expect("written");
        let error = create_dir_all(&file.join("d")).expect_err("under a file");
        assert!(error.context.contains("creating"), "{error}");
    }
}
