//! Files a row names (attachment blobs, temp uploads, the application's export files): the
//! one place that decides which of them a job may delete.
//!
//! A row's path is the application's input. It may name only a regular file inside its own
//! table's directory (`ATTACHMENTS_DIR`, `UPLOADS_DIR`, `APP_EXPORTS_DIR`, kept apart from
//! everything edgecron keeps by `config::layout`), reached without following a symlink at any
//! step below it, and never a second name (hard link) of edgecron's store or secret. The walk
//! goes down from the table's directory one directory descriptor at a time (`openat` with
//! `O_NOFOLLOW`) and unlinks relative to the last one, so no symlink swapped in between check
//! and removal can redirect it. A refused path leaves both the file and, in the callers, the
//! row.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::JobCtx;
use crate::config::Config;
use crate::config::layout::{self, NamedBy, OWN_FILES, STORE_SUFFIXES};
use crate::export::storage::Storage;

/// What removing a file a row names found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRemoval {
    Removed,
    AlreadyGone,
}

/// Why a file a row names was not removed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{path:?} is not inside {} ({variable})", dir.display())]
    OutsideItsDirectory {
        path: String,
        variable: &'static str,
        dir: PathBuf,
    },
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

/// Removes the file a row of `owner`'s table names (relative to the data dir, or absolute),
/// if it lies inside that table's directory.
pub fn remove_data_file(
    config: &Config,
    owner: NamedBy,
    named: &str,
) -> Result<FileRemoval, Refused> {
    let (root, components) = within_its_directory(config, owner, named)?;
    let Some((name, dirs)) = components.split_last() else {
        return Err(Refused::NotAFile(named.to_string()));
    };
    let io_error = |source| Refused::Io {
        path: named.to_string(),
        source,
    };
    let mut dir = match open_dir(None, &root) {
        Ok(dir) => dir,
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {
            return Ok(FileRemoval::AlreadyGone);
        }
        Err(error) => return Err(io_error(error)),
    };
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
                    return Err(Refused::Symlink(named.to_string()));
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
        libc::S_IFLNK => return Err(Refused::Symlink(named.to_string())),
        _ => return Err(Refused::NotAFile(named.to_string())),
    }
    // The same file under another name (a hard link to the store, say) is still the store.
    if protected_files(config).contains(&(status.st_dev as u64, status.st_ino as u64)) {
        return Err(Refused::EdgecronsOwn(named.to_string()));
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

/// The table's directory and the plain names leading from it to the file `named` names;
/// refused when the path has `.` or `..` parts or lies outside that directory.
fn within_its_directory(
    config: &Config,
    owner: NamedBy,
    named: &str,
) -> Result<(PathBuf, Vec<String>), Refused> {
    let root = config.named_files.dir(owner).to_path_buf();
    let outside = || Refused::OutsideItsDirectory {
        path: named.to_string(),
        variable: owner.variable(),
        dir: root.clone(),
    };
    let path = Path::new(named);
    let plain = path
        .components()
        .all(|part| matches!(part, Component::Normal(_) | Component::RootDir));
    if named.is_empty() || !plain {
        return Err(outside());
    }
    let full = layout::lexical(&config.data_dir.join(path));
    let below = full.strip_prefix(&root).map_err(|_| outside())?;
    let components = below
        .components()
        .map(|part| {
            part.as_os_str()
                .to_str()
                .map(str::to_string)
                .ok_or_else(outside)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((root, components))
}

/// edgecron's own files (the store and what SQLite keeps beside it, the secret), by device
/// and inode.
fn protected_files(config: &Config) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut files: Vec<PathBuf> = OWN_FILES
        .iter()
        .map(|name| config.data_dir.join(name))
        .collect();
    for suffix in STORE_SUFFIXES {
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

/// Removes a file that a row of `owner`'s table names: an `s3://bucket/key` object, or a
/// path inside the table's directory together with its copy in the configured bucket
/// (`storage`), when there is one. The local path is checked first, so a refused one reaches
/// no bucket either; a key under edgecron's own prefix in its own bucket must map to a path
/// inside the table's directory, as its local file would.
pub fn remove_stored_file(
    ctx: &JobCtx<'_>,
    storage: Option<&Storage>,
    owner: NamedBy,
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
            within_its_directory(ctx.config, owner, relative)?;
        }
        let storage = Storage::for_bucket(settings, bucket)
            .map_err(|error| storage_error(error.to_string()))?;
        storage
            .delete(key)
            .map_err(|error| storage_error(error.to_string()))?;
        return Ok(FileRemoval::Removed);
    }
    let local = remove_data_file(ctx.config, owner, location)?;
    // A path under the data dir may have been uploaded under its relative path; an absolute
    // one (a directory outside it) never was.
    if let Some(storage) = storage.filter(|_| Path::new(location).is_relative()) {
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
    fn only_regular_files_inside_the_table_s_own_directory_go() {
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
            "notes.txt",
            "exports/acme/interaction_history/year=2026/month=01/day=01/batch.json",
            "archive/export_logs/a.ndjson",
            "backups/edgecron-2026-12-01.db",
            "uploads/acme/upload.csv",
            "blobs/acme/keep.bin",
            "blobs/acme/old.bin",
            "blobs/acme/absolute.bin",
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
        let refusal = |named: &str| match remove_data_file(&config, NamedBy::Attachments, named) {
            Err(refused) => refused.to_string(),
            Ok(removal) => panic!("{named}: {removal:?}"),
        };
        let victim = outside.path().join("victim").display().to_string();
        for (named, why) in [
            ("edgecron.db", "not inside"),
            ("edgecron.db-wal", "not inside"),
            ("cron-secret", "not inside"),
            ("notes.txt", "not inside"),
            (
                "exports/acme/interaction_history/year=2026/month=01/day=01/batch.json",
                "not inside",
            ),
            ("archive/export_logs/a.ndjson", "not inside"),
            ("backups/edgecron-2026-12-01.db", "not inside"),
            ("uploads/acme/upload.csv", "not inside"),
            ("blobs/db-alias", "edgecron's own"),
            ("blobs/link", "symlink"),
            ("blobs/linked-dir/victim", "symlink"),
            ("../outside", "not inside"),
            ("/etc/passwd", "not inside"),
            (victim.as_str(), "not inside"),
            ("blobs/./acme/../acme/keep.bin", "not inside"),
            ("blobs/acme", "not a regular file"),
            ("blobs", "not a regular file"),
            ("", "not inside"),
        ] {
            assert!(refusal(named).contains(why), "{named}: {}", refusal(named));
        }
        assert_eq!(
            remove_data_file(&config, NamedBy::Attachments, "blobs/acme/old.bin").unwrap(),
            FileRemoval::Removed
        );
        assert_eq!(
            remove_data_file(&config, NamedBy::Attachments, "blobs/acme/old.bin").unwrap(),
            FileRemoval::AlreadyGone
        );
        let absolute = dir.path().join("blobs/acme/absolute.bin");
        assert_eq!(
            remove_data_file(
                &config,
                NamedBy::Attachments,
                &absolute.display().to_string()
            )
            .unwrap(),
            FileRemoval::Removed
        );
        assert_eq!(
            remove_data_file(&config, NamedBy::Attachments, "blobs/nowhere/at/all.bin").unwrap(),
            FileRemoval::AlreadyGone
        );
        assert!(outside.path().join("victim").exists());
        assert!(dir.path().join("edgecron.db").exists());
        assert!(dir.path().join("notes.txt").exists());
        assert!(dir.path().join("blobs/acme/keep.bin").exists());
        assert!(dir.path().join("uploads/acme/upload.csv").exists());
    }
}
