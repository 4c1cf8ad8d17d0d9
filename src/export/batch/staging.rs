//! The staging directory, where the writers put a batch's files while no reader looks, and
//! the finished file they hand to publishing.

use std::path::{Path, PathBuf};

use crate::config::layout::STAGING as STAGING_DIR;
use crate::store::manifest::WrittenFile;

pub fn staging_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(STAGING_DIR)
}

/// A file written in the staging directory, to be made durable and renamed into place.
pub struct FinishedFile {
    pub staged: PathBuf,
    pub path: PathBuf,
    pub meta: WrittenFile,
}
