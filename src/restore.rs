//! `edgecron restore BACKUP` (SPEC sections 1 and 10): a copy made by `edgecron backup` put in
//! place of the store, the replaced store kept beside it, then the export files written since
//! the backup, which its manifest does not list, taken into it so their rows are not exported
//! again. Refused while `serve` runs (it holds the store's lock).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::durable;
use crate::export::batch::ExportError;
use crate::export::reconcile::{self, Places, Reconciled};
use crate::export::storage::Storage;
use crate::io_error::IoError;
use crate::store::lock::{self, LockMode};
use crate::store::manifest::Upload;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("edgecron serve is running on {0}: stop it (and the application) first")]
    Served(PathBuf),
    #[error("{path} is not a store `edgecron backup` made: {reason}")]
    NotABackup { path: PathBuf, reason: String },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("reconciling the exports: {0}")]
    Export(#[from] ExportError),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    pub store: PathBuf,
    pub backup: PathBuf,
    /// Where the store it replaced is kept (with its WAL), if there was one.
    pub replaced_store_kept_at: Option<PathBuf>,
    pub site: Option<String>,
    pub reconciled: Reconciled,
}

pub fn restore(config: &Config, backup: &Path, now_text: &str) -> Result<Restored, RestoreError> {
    let store_path = &config.db_path;
    let during = |what: String| IoError::during(what);
    let _alone = lock::try_lock(store_path, LockMode::Exclusive)
        .map_err(during(format!("locking {}", store_path.display())))?
        .ok_or_else(|| RestoreError::Served(store_path.clone()))?;
    crate::store::backup::check_copy(backup).map_err(|reason| RestoreError::NotABackup {
        path: backup.to_path_buf(),
        reason,
    })?;

    let copy = sibling(store_path, ".restoring");
    std::fs::copy(backup, &copy).map_err(during(format!(
        "copying {} to {}",
        backup.display(),
        copy.display()
    )))?;
    std::fs::File::open(&copy)
        .and_then(|file| file.sync_all())
        .map_err(during(format!("syncing {}", copy.display())))?;
    let stamp: String = now_text
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let kept = sibling(store_path, &format!(".replaced-{stamp}"));
    let replaced = store_path.exists();
    // The WAL and shared memory go with the store they belong to.
    for suffix in ["", "-wal", "-shm"] {
        let from = sibling(store_path, suffix);
        if from.exists() {
            let to = sibling(&kept, suffix);
            std::fs::rename(&from, &to).map_err(during(format!(
                "moving {} to {}",
                from.display(),
                to.display()
            )))?;
        }
    }
    std::fs::rename(&copy, store_path)
        .map_err(during(format!("renaming {}", store_path.display())))?;
    durable::sync_parents([store_path.as_path()])?;

    let store = Store::open(store_path, config.durability)?;
    store.migrate()?;
    let site = crate::site::recorded(&store)?;
    let upload = match config.s3 {
        Some(_) => Upload::Queued,
        None => Upload::LocalOnly,
    };
    let storage = config
        .s3
        .as_ref()
        .map(Storage::new)
        .transpose()
        .map_err(|error| RestoreError::Export(ExportError::Storage(error.to_string())))?;
    let reconciled = match &site {
        Some(site) => {
            let places = Places {
                data_dir: &config.data_dir,
                site,
                storage: storage.as_ref(),
                upload,
            };
            reconcile::reconcile(&store, &places, now_text)?
        }
        // A store that never exported under a site partition has no such files to find.
        None => Reconciled::default(),
    };
    Ok(Restored {
        store: store_path.clone(),
        backup: backup.to_path_buf(),
        replaced_store_kept_at: replaced.then_some(kept),
        site,
        reconciled,
    })
}

/// `path` with `suffix` added to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}
