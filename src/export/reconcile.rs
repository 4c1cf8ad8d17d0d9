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

use super::batch::ExportError;
use super::batch::publish::{entries, partition_days, subdirectories};
use super::batch::staging_dir;
use super::format::{FileFormat, Hashed};
use super::partition::{TenantDir, partition_dir, tenant_root};
use super::storage::Storage;
use crate::config::layout;
use crate::store::Store;
use crate::store::export_unlisted::{self as unlisted, Held, UnlistedFile};
use crate::store::manifest::{self, Upload};

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reconciled {
    /// Files on disk taken into the manifest.
    pub files_taken: u64,
    /// Objects in the bucket whose local copies were removed after upload, taken too.
    pub objects_taken: u64,
    /// The rows they hold.
    pub rows_taken: u64,
    /// Capture-queue entries of those rows that no longer wait.
    pub queue_entries_taken: u64,
}

/// Where the files are found and how new ones go up.
pub struct Places<'a> {
    pub data_dir: &'a Path,
    pub site: &'a str,
    pub storage: Option<&'a Storage>,
    pub upload: Upload,
}

/// Takes every file under this site's partitions, on disk and then in the bucket, that the
/// manifest does not list.
pub fn reconcile(
    store: &Store,
    places: &Places<'_>,
    now_text: &str,
) -> Result<Reconciled, ExportError> {
    let mut known: HashSet<String> = manifest::committed_files(store)?
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    let mut done = Reconciled::default();
    let data_dir = places.data_dir;
    let tenant_dirs = subdirectories(&data_dir.join(layout::EXPORTS), "")?;
    for tenant_id in &tenant_dirs {
        let Ok(tenant) = TenantDir::new(tenant_id) else {
            continue;
        };
        let site_root = tenant_root(tenant).join(format!("site={}", places.site));
        for day in partition_days(&data_dir.join(site_root))? {
            let dir = partition_dir(tenant, places.site, day);
            let names = entries(&data_dir.join(&dir))?.into_iter();
            // Hidden names are temporary files, never export files.
            for (name, _) in names.filter(|(name, is_dir)| !is_dir && !name.starts_with('.')) {
                let path = dir.join(&name).to_string_lossy().into_owned();
                if known.insert(path.clone()) {
                    let held = Held::OnDisk(places.upload);
                    take(
                        store,
                        &data_dir.join(&path),
                        &path,
                        tenant_id,
                        held,
                        now_text,
                        &mut done,
                    )?;
                }
            }
        }
    }
    let Some(storage) = places.storage else {
        return Ok(done);
    };
    let mut tenants = unlisted::tenant_ids(store)?;
    tenants.extend(tenant_dirs);
    tenants.sort();
    tenants.dedup();
    let download = staging_dir(data_dir).join("reconcile-download");
    for tenant_id in &tenants {
        let Ok(tenant) = TenantDir::new(tenant_id) else {
            continue;
        };
        let site_root = tenant_root(tenant).join(format!("site={}", places.site));
        let prefix = storage.key(&format!("{}/", site_root.to_string_lossy()));
        let keys = storage
            .keys(&prefix)
            .map_err(|error| ExportError::Storage(error.to_string()))?;
        for key in keys {
            let Some(path) = key.strip_prefix(&storage.key("")).map(str::to_string) else {
                continue;
            };
            if !known.insert(path.clone()) {
                continue;
            }
            fetch(storage, &key, &download)?;
            let taken = take(
                store,
                &download,
                &path,
                tenant_id,
                Held::InBucketOnly,
                now_text,
                &mut done,
            );
            let _ = std::fs::remove_file(&download);
            taken?;
        }
    }
    Ok(done)
}

/// Downloads `key` to `to` (in the staging directory, which the next export empties).
fn fetch(storage: &Storage, key: &str, to: &Path) -> Result<(), ExportError> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)
            .map_err(ExportError::io(format!("creating {}", dir.display())))?;
    }
    storage
        .download_to(key, to)
        .map_err(|error| ExportError::Storage(error.to_string()))
}

/// Reads the file at `local` (the export file `path`) and takes it into the manifest.
fn take(
    store: &Store,
    local: &Path,
    path: &str,
    tenant_id: &str,
    held: Held,
    now_text: &str,
    done: &mut Reconciled,
) -> Result<(), ExportError> {
    let (Some(format), Some(day)) = (FileFormat::of_path(path), partition_day(path)) else {
        log::warn!("reconcile: {path} is no export file; left as it is");
        return Ok(());
    };
    let file = read(local, format)?;
    let found = UnlistedFile {
        path,
        tenant_id,
        partition_day: &day,
        ids: &file.ids,
        bytes: file.bytes,
        sha256: &file.sha256,
        now_text,
        held,
    };
    done.queue_entries_taken += unlisted::take(store, &found)?;
    match held {
        Held::OnDisk(_) => done.files_taken += 1,
        Held::InBucketOnly => done.objects_taken += 1,
    }
    done.rows_taken += file.ids.len() as u64;
    log::warn!(
        "reconcile: {path} ({} rows) was not in the manifest; taken as exported",
        file.ids.len()
    );
    Ok(())
}

/// `2026-03-30` from a path's `year=2026/month=03/day=30` directories.
fn partition_day(path: &str) -> Option<String> {
    let mut parts = path.split('/').rev().skip(1);
    let number = |part: Option<&str>, prefix: &str| part?.strip_prefix(prefix)?.parse::<u32>().ok();
    let day = number(parts.next(), "day=")?;
    let month = number(parts.next(), "month=")?;
    let year = number(parts.next(), "year=")?;
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    Some(date.format("%Y-%m-%d").to_string())
}

struct Read {
    ids: Vec<String>,
    bytes: u64,
    sha256: String,
}

fn read(full: &Path, format: FileFormat) -> Result<Read, ExportError> {
    let reading = || ExportError::io(format!("reading {}", full.display()));
    let hashed = Hashed::of_file(full).map_err(reading())?;
    let ids = format
        .ids(File::open(full).map_err(reading())?)
        .map_err(reading())?
        .collect::<std::io::Result<Vec<String>>>()
        .map_err(reading())?;
    Ok(Read {
        ids,
        bytes: hashed.written(),
        sha256: hashed.sha256(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_s_day_comes_from_its_hive_directories() {
        let path = "exports/acme/interaction_history/site=s/year=2026/month=03/day=30/batch-x.json";
        assert_eq!(partition_day(path).as_deref(), Some("2026-03-30"));
        assert_eq!(
            partition_day("exports/acme/year=2026/month=02/day=30/b.json"),
            None
        );
        assert_eq!(partition_day("b.json"), None);
    }
}
