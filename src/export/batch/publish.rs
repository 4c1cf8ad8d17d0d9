//! Making a batch's files durable and visible, and removing what a crashed or failed batch
//! left behind.
//!
//! Files are written in the staging directory (`.export-staging/` under the data dir), each
//! `fsync`ed by its writer, so until they are renamed into their partitions no reader sees
//! them and a crash leaves them only there. Publishing is: their final paths recorded in
//! `export_staged_files`; each renamed into place (new partition directories durable in their
//! parents); each partition directory `fsync`ed. The commit that follows puts them in the
//! manifest. Recovery (before every batch, and after a
//! failed one) removes every recorded path the manifest does not list and empties staging.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use super::ExportError;
use super::staging::{FinishedFile, staging_dir};
use crate::durable;
use crate::export::partition::{TenantDir, tenant_root, unsited_partition_dir};
use crate::store::Store;
use crate::store::manifest;

/// Removes every export file that is not committed: recorded before renaming but not in the
/// manifest, anything left in staging, and the leftovers of a batch an earlier version of
/// edgecron left in progress.
pub fn recover(store: &Store, data_dir: &Path) -> Result<(), ExportError> {
    remove_legacy_batches(store, data_dir)?;
    let staged = manifest::uncommitted_staged_paths(store)?;
    for relative in &staged {
        remove_if_present(&data_dir.join(relative))?;
    }
    let staging = staging_dir(data_dir);
    match std::fs::remove_dir_all(&staging) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(ExportError::io(format!("emptying {}", staging.display()))(
                error,
            ));
        }
    }
    manifest::clear_staged(store)?;
    if !staged.is_empty() {
        log::warn!(
            "export: removed {} files of an uncommitted batch; their rows are exported again",
            staged.len()
        );
    }
    Ok(())
}

pub(crate) fn remove_if_present(path: &Path) -> Result<(), ExportError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(ExportError::io(format!("removing {}", path.display()))(
            error,
        )),
    }
}

/// Tenants' finished files, by tenant: `Err` for a tenant that failed (its files are left
/// for recovery to remove).
pub type Written = Vec<(usize, Result<Vec<FinishedFile>, ExportError>)>;

/// Makes every tenant's files (durable already) visible, durably. A tenant whose rename fails
/// fails alone (its error replaces its files); a failed record or directory sync fails the
/// whole batch.
pub fn publish(
    store: &Store,
    tenant_ids: &[&str],
    now_text: &str,
    written: &mut Written,
) -> Result<(), ExportError> {
    let finished: Vec<(&str, &FinishedFile)> = written
        .iter()
        .filter_map(|(slot, files)| Some((tenant_ids[*slot], files.as_ref().ok()?)))
        .flat_map(|(tenant, files)| files.iter().map(move |file| (tenant, file)))
        .collect();
    if finished.is_empty() {
        return Ok(());
    }
    let files: Vec<(&str, &str)> = finished
        .iter()
        .map(|(tenant, file)| (*tenant, file.meta.path.as_str()))
        .collect();
    manifest::record_staged(store, &files, now_text)?;
    remove_unlisted(store, &finished)?;
    // Each file durable before its name appears; the writers leave these syncs to here, where
    // they are made several at once.
    let staged: Vec<&Path> = finished
        .iter()
        .map(|(_, file)| file.staged.as_path())
        .collect();
    durable::sync_files(&staged)?;
    let mut created = Vec::new();
    for (_, files) in written.iter_mut() {
        let renamed = match files {
            Ok(files) => files
                .iter()
                .try_for_each(|file| rename_into_place(file, &mut created)),
            Err(_) => Ok(()),
        };
        if let Err(error) = renamed {
            *files = Err(error);
        }
    }
    // The directories created (in their parents) and the new names (in theirs), at once.
    let renamed = written
        .iter()
        .filter_map(|(_, files)| files.as_ref().ok())
        .flatten()
        .map(|file| file.path.as_path());
    Ok(durable::sync_parents(
        renamed.chain(created.iter().map(PathBuf::as_path)),
    )?)
}

/// Removes the files in the batch's partition directories that the manifest does not list,
/// but the batch's own: a batch whose commit a power cut took (`EDGECRON_DURABILITY=normal`)
/// left them, or an older store put back by hand. Their rows are still queued (or were never
/// committed at all), so they are exported once more, by this batch or a later one; each
/// removal is durable with the renames (the same directories are synced).
fn remove_unlisted(store: &Store, files: &[(&str, &FinishedFile)]) -> Result<(), ExportError> {
    let mut dirs: BTreeMap<(&str, &str, &Path), (&Path, HashSet<&str>)> = BTreeMap::new();
    for (tenant, file) in files {
        let (Some(dir), Some(relative_dir)) =
            (file.path.parent(), Path::new(&file.meta.path).parent())
        else {
            continue;
        };
        let key = (*tenant, file.meta.partition_day.as_str(), relative_dir);
        dirs.entry(key)
            .or_insert_with(|| (dir, HashSet::new()))
            .1
            .insert(file.meta.path.as_str());
    }
    let mut removed = 0;
    for ((tenant, day, relative_dir), (dir, own)) in dirs {
        let listed: HashSet<String> = manifest::paths_of_day(store, tenant, day)?
            .into_iter()
            .collect();
        for (name, is_dir) in entries(dir)? {
            let relative = relative_dir.join(&name).to_string_lossy().into_owned();
            if is_dir
                || name.starts_with('.')
                || listed.contains(&relative)
                || own.contains(relative.as_str())
            {
                continue;
            }
            remove_if_present(&dir.join(&name))?;
            removed += 1;
        }
    }
    if removed > 0 {
        log::warn!(
            "export: removed {removed} files the manifest does not list (a batch whose commit was lost); their rows are exported again"
        );
    }
    Ok(())
}

/// Renames a file into its partition, creating the directories it needs (left for the
/// caller to make durable with the rest).
fn rename_into_place(file: &FinishedFile, created: &mut Vec<PathBuf>) -> Result<(), ExportError> {
    if let Some(dir) = file.path.parent() {
        created.extend(durable::create_dir_all_unsynced(dir)?);
    }
    std::fs::rename(&file.staged, &file.path)
        .map_err(ExportError::io(format!("renaming {}", file.path.display())))
}

/// Earlier versions renamed a batch's files straight into the partitions, recording only the
/// day the batch began: every file there from that day on that the manifest does not list is
/// one of its files.
fn remove_legacy_batches(store: &Store, data_dir: &Path) -> Result<(), ExportError> {
    for (tenant_id, first_day) in manifest::legacy_batches(store)? {
        let Ok(tenant) = TenantDir::new(&tenant_id) else {
            manifest::end_legacy_batch(store, &tenant_id)?;
            continue;
        };
        let committed: HashSet<String> = manifest::committed_paths(store, &tenant_id)?
            .into_iter()
            .collect();
        for day in partition_days(&data_dir.join(tenant_root(tenant)))? {
            if first_day.is_some_and(|first| day < first) {
                continue;
            }
            let relative_dir = unsited_partition_dir(tenant, day);
            for name in entries(&data_dir.join(&relative_dir))?
                .into_iter()
                .filter(|(_, is_dir)| !is_dir)
                .map(|(name, _)| name)
            {
                let relative = relative_dir.join(&name);
                if !committed.contains(relative.to_string_lossy().as_ref()) {
                    remove_if_present(&data_dir.join(&relative))?;
                }
            }
        }
        manifest::end_legacy_batch(store, &tenant_id)?;
        log::warn!("export {tenant_id}: removed the files of a batch left uncommitted");
    }
    Ok(())
}

/// The days that have a partition directory under a tenant's root.
pub(crate) fn partition_days(root: &Path) -> Result<Vec<NaiveDate>, ExportError> {
    let mut days = Vec::new();
    for year in subdirectories(root, "year=")? {
        for month in subdirectories(&root.join(format!("year={year}")), "month=")? {
            for day in subdirectories(&root.join(format!("year={year}/month={month}")), "day=")? {
                let parsed = [&year, &month, &day].map(|part| part.parse::<u32>().ok());
                if let [Some(year), Some(month), Some(day)] = parsed
                    && let Some(date) = NaiveDate::from_ymd_opt(year as i32, month, day)
                {
                    days.push(date);
                }
            }
        }
    }
    Ok(days)
}

/// Names after `prefix` of the directories in `dir` named `{prefix}...`.
pub(crate) fn subdirectories(dir: &Path, prefix: &str) -> Result<Vec<String>, ExportError> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|(_, is_dir)| *is_dir)
        .filter_map(|(name, _)| name.strip_prefix(prefix).map(str::to_string))
        .collect())
}

/// `(name, is_dir)` of each entry in `dir`; none if `dir` is not a directory.
pub(crate) fn entries(dir: &Path) -> Result<Vec<(String, bool)>, ExportError> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(error) => return Err(ExportError::io(format!("listing {}", dir.display()))(error)),
    };
    let mut found = Vec::new();
    for entry in listing {
        let entry = entry.map_err(ExportError::io(format!("listing {}", dir.display())))?;
        let is_dir = entry
            .file_type()
            .map_err(ExportError::io(format!("listing {}", dir.display())))?
            .is_dir();
        found.push((entry.file_name().to_string_lossy().into_owned(), is_dir));
    }
    Ok(found)
}
