//! The ids of the rows the export's committed files hold, read back from the files: what the
//! recovery of a capture gap takes as exported (`store::capture::recover_gap`). A file whose
//! local copy was removed after upload is read from storage.

use std::fs::File;
use std::path::Path;

use super::batch::{ExportError, staging_dir};
use super::format::FileFormat;
use super::storage::Storage;
use crate::store::Store;
use crate::store::capture::KnownIds;
use crate::store::manifest;

/// Adds the id of every line of every committed file to `known`; answers how many files were
/// read.
pub fn add_exported_ids(
    store: &Store,
    data_dir: &Path,
    storage: Option<&Storage>,
    known: &mut KnownIds,
) -> Result<usize, ExportError> {
    let files = manifest::committed_files(store)?;
    for (path, local_removed) in &files {
        let local = data_dir.join(path);
        match File::open(&local) {
            Ok(file) => add_lines(file, path, known)?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound || *local_removed => {
                let Some(storage) = storage else {
                    return Err(ExportError::io(format!(
                        "reading {path}, gone from the data dir with no storage configured to read it from"
                    ))(error));
                };
                add_from_storage(storage, data_dir, path, known)?;
            }
            Err(error) => return Err(ExportError::io(format!("opening {path}"))(error)),
        }
    }
    Ok(files.len())
}

/// Downloads the object of `path` into the staging directory, reads it and removes it.
fn add_from_storage(
    storage: &Storage,
    data_dir: &Path,
    path: &str,
    known: &mut KnownIds,
) -> Result<(), ExportError> {
    let staging = staging_dir(data_dir);
    std::fs::create_dir_all(&staging)
        .map_err(ExportError::io(format!("creating {}", staging.display())))?;
    let copy = staging.join("downloaded-for-recovery");
    storage
        .download_to(&storage.key(path), &copy)
        .map_err(|error| ExportError::Storage(error.to_string()))?;
    let read = File::open(&copy)
        .map_err(ExportError::io(format!("opening the download of {path}")))
        .and_then(|file| add_lines(file, path, known));
    let _ = std::fs::remove_file(&copy);
    read
}

/// Adds the id of each row of one file, read in the format its name says.
fn add_lines(file: File, path: &str, known: &mut KnownIds) -> Result<(), ExportError> {
    let format = FileFormat::of_path(path).ok_or_else(|| {
        ExportError::io(format!("reading {path}"))(std::io::Error::other(
            "not a file name edgecron writes",
        ))
    })?;
    let failed = || ExportError::io(format!("reading the ids of {path}"));
    for id in format.ids(file).map_err(failed())? {
        known.add(&id.map_err(failed())?)?;
    }
    Ok(())
}
