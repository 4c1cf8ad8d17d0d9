//! Whether the store is being served: `serve` holds a shared advisory lock (`flock`, which
//! SQLite's own `fcntl` locks never meet) on the store file for as long as it runs, and
//! `restore` takes it exclusively, so it never replaces a store under a running `serve`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// `serve`: any number at once.
    Shared,
    /// `restore`: nobody else.
    Exclusive,
}

/// Held until dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: Option<File>,
}

/// Takes the lock without waiting; `None` when it is held the other way. A store file that
/// does not exist yet needs no lock.
pub fn try_lock(db_path: &Path, mode: LockMode) -> std::io::Result<Option<StoreLock>> {
    let file = match File::open(db_path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Some(StoreLock { _file: None }));
        }
        Err(error) => return Err(error),
    };
    let operation = match mode {
        LockMode::Shared => libc::LOCK_SH,
        LockMode::Exclusive => libc::LOCK_EX,
    };
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    if unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0 {
        return Ok(Some(StoreLock { _file: Some(file) }));
    }
    let error = std::io::Error::last_os_error();
    if error.kind() == std::io::ErrorKind::WouldBlock {
        return Ok(None);
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_stores_refuse_an_exclusive_lock_until_serve_ends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("store.db");
        std::fs::write(&path, b"").expect("store file");
        let serve = try_lock(&path, LockMode::Shared)
            .expect("lock")
            .expect("free");
        let other_serve = try_lock(&path, LockMode::Shared).expect("lock");
        assert!(other_serve.is_some());
        assert!(
            try_lock(&path, LockMode::Exclusive)
                .expect("lock")
                .is_none()
        );
        drop((serve, other_serve));
        assert!(
            try_lock(&path, LockMode::Exclusive)
                .expect("lock")
                .is_some()
        );
        let missing = dir.path().join("missing.db");
        assert!(
            try_lock(&missing, LockMode::Exclusive)
                .expect("lock")
                .is_some()
        );
    }
}
