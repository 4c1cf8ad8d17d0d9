//! Export files the manifest does not list (SPEC section 10). After `edgecron restore` put an
//! older store in place, the files written since are on disk but not in its manifest, and
//! their rows may still wait in its capture queue: each such file of this site is taken into
//! the manifest as it is (it is whole: a file is renamed into its partition only once
//! durable) and its rows leave the queue, so they are not exported a second time and no `-2`
//! file with the same rows appears beside it.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::batch::ExportError;
use super::batch::publish::{entries, partition_days, subdirectories};
use super::format::FileFormat;
use super::partition::{TenantDir, partition_dir, tenant_root};
use crate::config::layout;
use crate::store::Store;
use crate::store::export::{self as manifest, Upload};
use crate::store::export_unlisted::{self as unlisted, UnlistedFile};

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconciled {
    /// Files taken into the manifest.
    pub files_taken: u64,
    /// The rows they hold.
    pub rows_taken: u64,
    /// Capture-queue entries of those rows that no longer wait.
    pub queue_entries_taken: u64,
}

/// Takes every file under this site's partitions that the manifest does not list.
pub fn reconcile(
    store: &Store,
    data_dir: &Path,
    site: &str,
    upload: Upload,
    now_text: &str,
) -> Result<Reconciled, ExportError> {
    let known: HashSet<String> = manifest::committed_files(store)?
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    let mut done = Reconciled::default();
    for tenant_id in subdirectories(&data_dir.join(layout::EXPORTS), "")? {
        let Ok(tenant) = TenantDir::new(&tenant_id) else {
            continue;
        };
        let site_root = tenant_root(tenant).join(format!("site={site}"));
        for day in partition_days(&data_dir.join(site_root))? {
            let dir = partition_dir(tenant, site, day);
            let names = entries(&data_dir.join(&dir))?.into_iter();
            // Hidden names are temporary files, never export files.
            for (name, _) in names.filter(|(name, is_dir)| !is_dir && !name.starts_with('.')) {
                let path = dir.join(&name).to_string_lossy().into_owned();
                if known.contains(&path) {
                    continue;
                }
                let Some(format) = FileFormat::of_path(&path) else {
                    log::warn!("reconcile: {path} is no export file; left as it is");
                    continue;
                };
                let file = read(data_dir, &path, format)?;
                let found = UnlistedFile {
                    path: &path,
                    tenant_id: &tenant_id,
                    partition_day: &day.format("%Y-%m-%d").to_string(),
                    ids: &file.ids,
                    bytes: file.bytes,
                    sha256: &file.sha256,
                    now_text,
                    upload,
                };
                done.queue_entries_taken += unlisted::take(store, &found)?;
                done.files_taken += 1;
                done.rows_taken += file.ids.len() as u64;
                log::warn!(
                    "reconcile: {path} ({} rows) was not in the manifest; taken as exported",
                    file.ids.len()
                );
            }
        }
    }
    Ok(done)
}

struct Read {
    ids: Vec<String>,
    bytes: u64,
    sha256: String,
}

fn read(data_dir: &Path, path: &str, format: FileFormat) -> Result<Read, ExportError> {
    let full = data_dir.join(path);
    let reading = || ExportError::io(format!("reading {}", full.display()));
    let mut hasher = Sha256::new();
    let bytes =
        std::io::copy(&mut File::open(&full).map_err(reading())?, &mut hasher).map_err(reading())?;
    let ids = format
        .ids(File::open(&full).map_err(reading())?)
        .map_err(reading())?
        .collect::<std::io::Result<Vec<String>>>()
        .map_err(reading())?;
    Ok(Read {
        ids,
        bytes,
        sha256: format!("{:x}", hasher.finalize()),
    })
}
