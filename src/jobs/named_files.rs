//! Files a row names (attachment blobs, temp uploads, the application's export files): the
//! one place that decides which of them a job may delete.
//!
//! A row's path is the application's input. It may name only a regular file inside the data
//! dir, reached without following a symlink at any step, and never one of edgecron's own: the
//! store and its `-wal`/`-shm`/`-journal`, `cron-secret`, or anything under the trees edgecron
//! writes (`exports/`, `archive/`, `reports/`, the export staging directory). The walk goes
//! down from the data dir one directory descriptor at a time (`openat` with `O_NOFOLLOW`) and
//! unlinks relative to the last one, so no symlink swapped in between check and removal can
//! redirect it. A refused path leaves both the file and, in the callers, the row.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use super::JobCtx;
use crate::config::Config;
use crate::export::storage::Storage;

/// Trees under the data dir that only edgecron writes.
const OWNED_TREES: [&str; 4] = ["exports", "archive", "reports", ".export-staging"];

/// What removing a file a row names found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRemoval {
    Removed,
    AlreadyGone,
}

/// Why a file a row names was not removed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0:?} is not a relative path inside the data dir")]
    OutsideDataDir(String),
    #[error("{0:?} is edgecron's own file")]
    EdgecronsOwn(String),
    #[error("{0:?} is reached through a symlink")]
    Symlink(String),
    #[error("{0:?} is not a regular file")]
    NotAFile(String),
    #[error("{path:?}: {detail}")]
    Storage { path: String, detail: String },
    #[error("removing {path:?}: {source}")]
    Io { path: String, source: io::Error },
}

/// Removes the file `relative` names under the data dir, if a row may name it.
pub fn remove_data_file(config: &Config, relative: &str) -> Result<FileRemoval, Refused> {
    let components = checked_components(config, relative)?;
    let Some((name, dirs)) = components.split_last() else {
        return Err(Refused::OutsideDataDir(relative.to_string()));
    };
    let io_error = |source| Refused::Io {
        path: relative.to_string(),
        source,
    };
    let mut dir = open_dir(None, &config.data_dir).map_err(io_error)?;
    for component in dirs {
        match open_dir(Some(&dir), Path::new(component)) {
            Ok(next) => dir = next,
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(FileRemoval::AlreadyGone);
            }
            // Not a directory: a symlink (refused), or a file (so the path names nothing).
            Err(error) if matches!(error.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                let name = c_name(component).map_err(io_error)?;
                let is_link = stat_at(&dir, &name)
                    .is_ok_and(|status| status.st_mode & libc::S_IFMT == libc::S_IFLNK);
                if is_link {
                    return Err(Refused::Symlink(relative.to_string()));
                }
                return Ok(FileRemoval::AlreadyGone);
            }
            Err(error) => return Err(io_error(error)),
        }
    }
    let name = c_name(name).map_err(io_error)?;
    let status = match stat_at(&dir, &name) {
        Ok(status) => status,
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {
            return Ok(FileRemoval::AlreadyGone);
        }
        Err(error) => return Err(io_error(error)),
    };
    match status.st_mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFLNK => return Err(Refused::Symlink(relative.to_string())),
        _ => return Err(Refused::NotAFile(relative.to_string())),
    }
    // The same file under another name (a hard link to the store, say) is still the store.
    if protected_files(config).contains(&(status.st_dev as u64, status.st_ino as u64)) {
        return Err(Refused::EdgecronsOwn(relative.to_string()));
    }
    // SAFETY: the descriptor and the NUL-terminated name outlive the call.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENOENT) {
            return Ok(FileRemoval::AlreadyGone);
        }
        return Err(io_error(error));
    }
    Ok(FileRemoval::Removed)
}

/// The path's components, each a plain name, refusing paths that leave the data dir or name
/// edgecron's own files by their names.
fn checked_components<'a>(config: &Config, relative: &'a str) -> Result<Vec<&'a str>, Refused> {
    let path = Path::new(relative);
    let mut components = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => match name.to_str() {
                Some(name) => components.push(name),
                None => return Err(Refused::OutsideDataDir(relative.to_string())),
            },
            _ => return Err(Refused::OutsideDataDir(relative.to_string())),
        }
    }
    if components.is_empty() {
        return Err(Refused::OutsideDataDir(relative.to_string()));
    }
    if OWNED_TREES.contains(&components[0])
        || protected_names(config).contains(&components.join("/"))
    {
        return Err(Refused::EdgecronsOwn(relative.to_string()));
    }
    Ok(components)
}

/// edgecron's own files, by their paths relative to the data dir.
fn protected_names(config: &Config) -> Vec<String> {
    let mut names = vec!["cron-secret".to_string()];
    if let Ok(store) = config.db_path.strip_prefix(&config.data_dir) {
        let store = store.to_string_lossy().into_owned();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            names.push(format!("{store}{suffix}"));
        }
    }
    names
}

/// edgecron's own files, by device and inode.
fn protected_files(config: &Config) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut files = vec![config.data_dir.join("cron-secret"), config.db_path.clone()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut path = config.db_path.as_os_str().to_owned();
        path.push(suffix);
        files.push(path.into());
    }
    files
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|meta| (meta.dev(), meta.ino()))
        .collect()
}

fn c_name(name: impl AsRef<std::ffi::OsStr>) -> io::Result<CString> {
    CString::new(name.as_ref().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Opens a directory (relative to `parent` when given) without following a symlink to it.
fn open_dir(parent: Option<&OwnedFd>, path: &Path) -> io::Result<OwnedFd> {
    let name = c_name(path.as_os_str())?;
    let (base, flags) = match parent {
        Some(parent) => (parent.as_raw_fd(), libc::O_NOFOLLOW),
        // The data dir itself may be a symlink the operator made.
        None => (libc::AT_FDCWD, 0),
    };
    // SAFETY: `name` is NUL-terminated and outlives the call; the descriptor returned is ours.
    let fd = unsafe {
        libc::openat(
            base,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | flags,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn stat_at(dir: &OwnedFd, name: &CString) -> io::Result<libc::stat> {
    // SAFETY: an all-zero `stat` is a valid value for fstatat to fill.
    let mut status: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor, the name and the struct outlive the call.
    let result = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut status,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(status)
}

/// Removes a file that a row names: an `s3://bucket/key` object, or a path under the data dir
/// together with its copy in the configured bucket (`storage`), when there is one. The local
/// path is checked first, so a refused one reaches no bucket either; objects edgecron put in
/// its own bucket (its exports and archives) are refused as their local files are.
pub fn remove_stored_file(
    ctx: &JobCtx<'_>,
    storage: Option<&Storage>,
    location: &str,
) -> Result<FileRemoval, Refused> {
    let storage_error = |detail: String| Refused::Storage {
        path: location.to_string(),
        detail,
    };
    if let Some(object) = location.strip_prefix("s3://") {
        let (bucket, key) = object
            .split_once('/')
            .ok_or_else(|| storage_error("an s3:// URI needs a bucket and a key".into()))?;
        let settings = ctx
            .config
            .s3
            .as_ref()
            .ok_or_else(|| storage_error("S3 is not configured (S3_BUCKET)".into()))?;
        if bucket == settings.bucket
            && let Some(relative) = key.strip_prefix(settings.prefix.as_str())
        {
            checked_components(ctx.config, relative)?;
        }
        let storage = Storage::for_bucket(settings, bucket)
            .map_err(|error| storage_error(error.to_string()))?;
        storage
            .delete(key)
            .map_err(|error| storage_error(error.to_string()))?;
        return Ok(FileRemoval::Removed);
    }
    let local = remove_data_file(ctx.config, location)?;
    if let Some(storage) = storage {
        storage
            .delete(&storage.key(location))
            .map_err(|error| storage_error(error.to_string()))?;
    }
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let vars = [("EDGECRON_DATA_DIR".to_string(), dir.display().to_string())];
        Config::from_vars(vars, &[]).expect("config")
    }

    #[test]
    fn only_the_application_s_regular_files_inside_the_data_dir_go() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let write = |relative: &str| {
            let path = dir.path().join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        };
        for file in [
            "edgecron.db",
            "edgecron.db-wal",
            "cron-secret",
            "exports/acme/interaction_history/year=2026/month=01/day=01/batch.json",
            "archive/export_logs/a.ndjson",
            "blobs/acme/keep.bin",
            "blobs/acme/old.bin",
        ] {
            write(file);
        }
        std::fs::write(outside.path().join("victim"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), dir.path().join("blobs/link"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("blobs/linked-dir")).unwrap();
        std::fs::hard_link(
            dir.path().join("edgecron.db"),
            dir.path().join("blobs/db-alias"),
        )
        .unwrap();
        let refusal = |relative: &str| match remove_data_file(&config, relative) {
            Err(refused) => refused.to_string(),
            Ok(removal) => panic!("{relative}: {removal:?}"),
        };
        for (relative, why) in [
            ("edgecron.db", "edgecron's own"),
            ("edgecron.db-wal", "edgecron's own"),
            ("cron-secret", "edgecron's own"),
            (
                "exports/acme/interaction_history/year=2026/month=01/day=01/batch.json",
                "edgecron's own",
            ),
            ("archive/export_logs/a.ndjson", "edgecron's own"),
            ("blobs/db-alias", "edgecron's own"),
            ("blobs/link", "symlink"),
            ("blobs/linked-dir/victim", "symlink"),
            ("../outside", "not a relative path"),
            ("/etc/passwd", "not a relative path"),
            ("blobs/./acme/../acme/keep.bin", "not a relative path"),
            ("blobs", "not a regular file"),
            ("", "not a relative path"),
        ] {
            assert!(
                refusal(relative).contains(why),
                "{relative}: {}",
                refusal(relative)
            );
        }
        assert_eq!(
            remove_data_file(&config, "blobs/acme/old.bin").unwrap(),
            FileRemoval::Removed
        );
        assert_eq!(
            remove_data_file(&config, "blobs/acme/old.bin").unwrap(),
            FileRemoval::AlreadyGone
        );
        assert_eq!(
            remove_data_file(&config, "nowhere/at/all.bin").unwrap(),
            FileRemoval::AlreadyGone
        );
        assert!(outside.path().join("victim").exists());
        assert!(dir.path().join("edgecron.db").exists());
        assert!(dir.path().join("blobs/acme/keep.bin").exists());
    }
}
