//! Rewriting committed export files: without a data subject's rows (erasure), or removed
//! (retention, or a rewrite that leaves no row). A reader sees the old file or the new one,
//! never both and never neither, and the manifest never disagrees with the file:
//!
//! 1. the new file is written in `.export-rewrites/`, made durable, and the rewrite journaled
//!    (`export_rewrites`), before anything in place changes;
//! 2. it is renamed over the old file (or the old file removed) and the directory made durable;
//! 3. the manifest row follows, with the audit row of the file, in one transaction that marks
//!    the rewrite applied and notes whether the uploaded object is still the old one;
//! 4. that object is replaced by one PUT with `If-Match` on the old content's ETag (or
//!    removed), so only edgecron's own object is ever replaced; then the journal row goes.
//!
//! A run killed anywhere is finished by [`Rewriting::recover`]: a staged file not yet renamed
//! is renamed, an applied rewrite gets its object replaced; a rewrite whose staged file is gone
//! and whose old file is still in place had changed nothing, and is dropped to be done again.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::batch::ExportError;
use super::batch::publish::remove_if_present;
use super::format::{FileFormat, Hashed, Subject};
use super::storage::{LocalDigests, Storage};
use crate::durable;
use crate::store::Store;
use crate::store::export_rewrite::{self as journal, CommittedFile, Rewrite};

/// Where rewritten files wait to be renamed into place (apart from the export's staging,
/// which the export's recovery empties).
const REWRITES_DIR: &str = crate::config::layout::REWRITES;

/// Files rewritten together: one flush of the file system and one transaction per step.
const BATCH: usize = 100;

/// What to do to a file.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Leave out this subject's rows (a file left with none is removed).
    Without(Subject<'a>),
    /// Remove the file and its object.
    Remove,
}

/// What rewrites did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub rewritten: u64,
    pub removed: u64,
    pub rows_left_out: u64,
}

impl Rewritten {
    pub fn add(&mut self, other: Rewritten) {
        self.rewritten += other.rewritten;
        self.removed += other.removed;
        self.rows_left_out += other.rows_left_out;
    }
}

/// What a rewrite works with.
pub struct Rewriting<'a> {
    pub store: &'a Store,
    pub data_dir: &'a Path,
    pub storage: Option<Storage>,
    pub now_text: String,
    /// The run rewriting: its files wait in a directory of its own.
    pub run_id: i64,
}

impl Rewriting<'_> {
    /// Rewrites `files` as `change` says, [`BATCH`] at a time (each batch made durable with
    /// one file-system flush and committed in one transaction per step); `audit`
    /// (`{action, details}`) is each file's audit row, with the rows left out and kept added.
    /// A file that fails is named in `errors` and the others go on. Answers what was done and
    /// whether every file was reached before `should_stop`.
    pub fn rewrite_all(
        &self,
        files: &[CommittedFile],
        change: Change<'_>,
        audit: &Value,
        should_stop: &dyn Fn() -> bool,
        errors: &mut Vec<String>,
    ) -> Result<(Rewritten, bool), ExportError> {
        let dir = self.data_dir.join(self.run_dir());
        durable::create_dir_all(&dir)?;
        let mut done = Rewritten::default();
        for batch in files.chunks(BATCH) {
            if should_stop() {
                return Ok((done, false));
            }
            let mut staged = Vec::new();
            let mut rows_left_out = Vec::new();
            for file in batch {
                match self.prepare(file, change, audit.clone(), &dir) {
                    Ok(Some((rewrite, rows))) => {
                        staged.push(rewrite);
                        rows_left_out.push(rows);
                    }
                    Ok(None) => {}
                    Err(error) => errors.push(format!("{}: {error}", file.path)),
                }
            }
            if staged.is_empty() {
                continue;
            }
            // The staged files (each synced) are durably named before the journal names them.
            durable::sync_dir(&dir)?;
            let claimed = journal::journal(self.store, &staged, &self.now_text)?;
            let mut mine = Vec::with_capacity(staged.len());
            let mut left_out = 0;
            for ((rewrite, claimed), rows) in staged.into_iter().zip(claimed).zip(rows_left_out) {
                if claimed {
                    mine.push(rewrite);
                    left_out += rows;
                    continue;
                }
                // Another run's rewrite holds it, or it changed since it was read.
                if let Some(staged) = &rewrite.staged {
                    let _ = std::fs::remove_file(self.data_dir.join(staged));
                }
                errors.push(format!(
                    "{}: another rewrite of it is under way or unfinished; a later run sees to it",
                    rewrite.path
                ));
            }
            done.add(self.finish(mine, errors)?);
            done.rows_left_out += left_out;
        }
        // Empty once every file is in place; one left holds what a rewrite still waits on.
        let _ = std::fs::remove_dir(&dir);
        Ok((done, true))
    }

    /// Finishes every journaled rewrite (a run killed during one), then removes what runs no
    /// longer running left in their directories (files staged, never journaled); answers what
    /// the rewrites did.
    pub fn recover(&self, errors: &mut Vec<String>) -> Result<Rewritten, ExportError> {
        let mut taken = Vec::new();
        for mut rewrite in journal::journaled(self.store)? {
            if journal::take_over(self.store, &rewrite, self.run_id)? {
                rewrite.run_id = self.run_id;
                taken.push(rewrite);
            }
        }
        let mut done = Rewritten::default();
        if !taken.is_empty() {
            log::warn!(
                "export: finishing {} interrupted rewrites of export files",
                taken.len()
            );
            done = self.finish(taken, errors)?;
        }
        let waiting = journal::staged_files(self.store)?;
        let root = self.data_dir.join(REWRITES_DIR);
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Ok(done);
        };
        for entry in entries.map_while(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(run_id) = name.parse::<i64>() else {
                continue;
            };
            let relative = format!("{REWRITES_DIR}/{name}/");
            let in_use = run_id == self.run_id
                || journal::run_is_running(self.store, run_id)?
                || waiting.iter().any(|staged| staged.starts_with(&relative));
            if !in_use {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(done)
    }

    /// `.export-rewrites/<run id>`, relative to the data dir.
    fn run_dir(&self) -> String {
        format!("{REWRITES_DIR}/{}", self.run_id)
    }

    /// The rewrite of one file to journal, its new file written, with the rows it leaves
    /// out; `None` when it holds no row to leave out.
    fn prepare(
        &self,
        file: &CommittedFile,
        change: Change<'_>,
        audit: Value,
        dir: &Path,
    ) -> Result<Option<(Rewrite, u64)>, ExportError> {
        let format = FileFormat::of_path(&file.path).ok_or_else(|| {
            ExportError::Storage(format!(
                "{}: not a file of a format edgecron writes",
                file.path
            ))
        })?;
        match change {
            Change::Remove => self.removal(file, audit).map(Some),
            Change::Without(subject) => {
                let source = self.source_of(file, dir)?;
                let staged = self.stage(file, format, &source, subject, audit);
                if source.downloaded {
                    let _ = std::fs::remove_file(&source.path);
                }
                staged
            }
        }
    }

    /// The file's current content: its local copy, or (removed after its upload) the object.
    fn source_of(&self, file: &CommittedFile, dir: &Path) -> Result<Source, ExportError> {
        let local = self.data_dir.join(&file.path);
        if local.exists() {
            return Ok(Source {
                path: local,
                downloaded: false,
            });
        }
        let Some(storage) = self.storage.as_ref().filter(|_| file.uploaded) else {
            return Err(ExportError::Storage(format!(
                "{}: neither on disk nor in the bucket",
                file.path
            )));
        };
        let path = dir.join(format!("{}.source", file.id));
        storage
            .download_to(&storage.key(&file.path), &path)
            .map_err(|error| ExportError::Storage(error.to_string()))?;
        Ok(Source {
            path,
            downloaded: true,
        })
    }

    /// The removal of a file to journal: its old content known by the local copy's digests,
    /// else (removed after upload) by the object's own ETag.
    fn removal(&self, file: &CommittedFile, audit: Value) -> Result<(Rewrite, u64), ExportError> {
        let local = self.data_dir.join(&file.path);
        let old_etags = if local.exists() {
            let old = LocalDigests::of(&local)
                .map_err(|error| ExportError::Storage(error.to_string()))?;
            format!("{} {}", old.whole, old.multipart)
        } else {
            match self.storage.as_ref().filter(|_| file.uploaded) {
                Some(storage) => storage
                    .etag(&storage.key(&file.path))
                    .map_err(|error| ExportError::Storage(format!("{}: {error}", file.path)))?
                    .unwrap_or_default(),
                None => String::new(),
            }
        };
        let left_out = file.row_count.max(0) as u64;
        Ok((
            journaled(self.run_id, file, None, None, old_etags, audit, left_out),
            left_out,
        ))
    }

    /// Writes the new file (durably) and answers the rewrite to journal with the rows it
    /// leaves out; `None` when the file holds no row to leave out.
    fn stage(
        &self,
        file: &CommittedFile,
        format: FileFormat,
        source: &Source,
        subject: Subject<'_>,
        audit: Value,
    ) -> Result<Option<(Rewrite, u64)>, ExportError> {
        let reading = || ExportError::io(format!("reading {}", source.path.display()));
        let old = LocalDigests::of(&source.path)
            .map_err(|error| ExportError::Storage(error.to_string()))?;
        let relative = format!("{}/{}.{}", self.run_dir(), file.id, format.extension());
        let staged = self.data_dir.join(&relative);
        let creating = || ExportError::io(format!("creating {}", staged.display()));
        let out = Hashed::new(File::create(&staged).map_err(creating())?);
        let filtered = format
            .without(File::open(&source.path).map_err(reading())?, out, subject)
            .map_err(reading())?;
        filtered
            .file
            .inner()
            .sync_data()
            .map_err(ExportError::io(format!("syncing {}", staged.display())))?;
        let bytes = filtered.file.written();
        let sha256 = filtered.file.sha256();
        if filtered.left_out == 0 || filtered.kept == 0 {
            let _ = std::fs::remove_file(&staged);
        }
        let (staged, new, left_out) = match (filtered.left_out, filtered.kept) {
            (0, _) => return Ok(None),
            (left_out, 0) => (None, None, left_out),
            (left_out, kept) => (Some(relative), Some((sha256, bytes, kept)), left_out),
        };
        let old_etags = format!("{} {}", old.whole, old.multipart);
        Ok(Some((
            journaled(self.run_id, file, staged, new, old_etags, audit, left_out),
            left_out,
        )))
    }

    /// Steps 2 to 4 for journaled rewrites, from wherever a killed run left them. A rewrite
    /// whose object could not follow keeps its journal row (the next run tries again), and
    /// is named in `errors`.
    fn finish(
        &self,
        rewrites: Vec<Rewrite>,
        errors: &mut Vec<String>,
    ) -> Result<Rewritten, ExportError> {
        let (applied, pending): (Vec<Rewrite>, Vec<Rewrite>) =
            rewrites.into_iter().partition(|rewrite| rewrite.applied);
        let mut in_place = Vec::new();
        let mut undone = Vec::new();
        for rewrite in pending {
            if self.put_in_place(&rewrite)? {
                in_place.push(rewrite);
            } else {
                undone.push(rewrite.file_id);
            }
        }
        journal::forget(self.store, self.run_id, &undone)?;
        let mut ready: Vec<(Rewrite, bool)> = applied
            .into_iter()
            .map(|rewrite| {
                let uploaded = rewrite.replace_object;
                (rewrite, uploaded)
            })
            .collect();
        if !in_place.is_empty() {
            // Renames and removals are durable before the manifest follows them.
            let targets: Vec<_> = in_place
                .iter()
                .map(|rewrite| self.data_dir.join(&rewrite.path))
                .collect();
            durable::sync_parents(targets.iter().map(|target| target.as_path()))?;
            let uploaded = journal::apply(self.store, &in_place, &self.now_text)?;
            ready.extend(in_place.into_iter().zip(uploaded));
        }
        let mut done = Rewritten::default();
        let mut finished = Vec::new();
        let mut local_copies_to_remove = Vec::new();
        for (rewrite, uploaded) in ready {
            let target = self.data_dir.join(&rewrite.path);
            // The bucket may hold the old content even when the manifest has no upload
            // recorded (an upload whose record a killed run never wrote).
            if let Some(storage) = &self.storage
                && let Err(error) = self.follow_in_bucket(storage, &rewrite, &target, uploaded)
            {
                errors.push(error.to_string());
                continue;
            }
            if uploaded && self.storage.is_none() {
                errors.push(format!(
                    "{}: its uploaded object still holds the old content, and S3 is not configured",
                    rewrite.path
                ));
                continue;
            }
            if rewrite.relocal && rewrite.staged.is_some() {
                local_copies_to_remove.push(target);
            }
            match rewrite.staged {
                Some(_) => done.rewritten += 1,
                None => done.removed += 1,
            }
            finished.push(rewrite.file_id);
        }
        journal::forget(self.store, self.run_id, &finished)?;
        // Their local copies had been removed after the upload: so they are again (after the
        // journal let them go: a copy left by a killed run is only a copy).
        for target in local_copies_to_remove {
            remove_if_present(&target)?;
        }
        Ok(done)
    }

    /// Step 2: the new file renamed over the old one, or the old one removed. Answers false
    /// when the rewrite had changed nothing and cannot go on (its staged file is gone).
    fn put_in_place(&self, rewrite: &Rewrite) -> Result<bool, ExportError> {
        let target = &self.data_dir.join(&rewrite.path);
        let Some(staged) = &rewrite.staged else {
            remove_if_present(target)?;
            return Ok(true);
        };
        let staged = self.data_dir.join(staged);
        if staged.exists() {
            if let Some(dir) = target.parent() {
                durable::create_dir_all(dir)?;
            }
            std::fs::rename(&staged, target)
                .map_err(ExportError::io(format!("renaming {}", target.display())))?;
            return Ok(true);
        }
        // Renamed already by the run that was killed, or never staged in full.
        Ok(target.exists() && rewrite.new_sha256.as_deref() == Some(sha256_of(target)?.as_str()))
    }

    /// Step 4: the object at the file's key replaced by the new file (or removed) if it is
    /// the old content; a file recorded as uploaded whose object is gone goes up as it is now;
    /// an object holding anything else is left as it is (reported when the manifest had the
    /// file uploaded: it should have been the old content).
    fn follow_in_bucket(
        &self,
        storage: &Storage,
        rewrite: &Rewrite,
        target: &Path,
        uploaded: bool,
    ) -> Result<(), ExportError> {
        let failed = |error: crate::export::storage::StorageError| {
            ExportError::Storage(format!("{}: {error}", rewrite.path))
        };
        let key = storage.key(&rewrite.path);
        let Some(etag) = storage.etag(&key).map_err(failed)? else {
            if uploaded && rewrite.staged.is_some() {
                storage.upload(target, &key).map_err(failed)?;
            }
            return Ok(());
        };
        let old = rewrite.old_etags.split(' ').any(|old| old == etag);
        match (&rewrite.staged, old) {
            (Some(_), true) => {
                storage.replace(target, &key, &etag).map_err(failed)?;
            }
            (None, true) => storage.delete(&key).map_err(failed)?,
            (Some(_), false) if uploaded => {
                // Replaced already by the run that was killed, or someone else's object.
                let new = LocalDigests::of(target).map_err(failed)?;
                if !new.names(&etag) {
                    return Err(failed(crate::export::storage::StorageError::Conflict {
                        key,
                        detail: "it holds neither the old content nor the new".into(),
                    }));
                }
            }
            (None, false) if uploaded => {
                log::warn!("export: {key} holds other content than the removed file; left as it is")
            }
            _ => {}
        }
        Ok(())
    }
}

/// The journal row of a rewrite of `file` (a removal without `staged`), its audit details
/// completed with what it leaves out and keeps.
fn journaled(
    run_id: i64,
    file: &CommittedFile,
    staged: Option<String>,
    new: Option<(String, u64, u64)>,
    old_etags: String,
    mut audit: Value,
    left_out: u64,
) -> Rewrite {
    audit["details"]["file"] = json!(file.path);
    audit["details"]["rowsRemoved"] = json!(left_out);
    audit["details"]["rowsKept"] = json!(new.as_ref().map_or(0, |(_, _, kept)| *kept));
    audit["details"]["fileRemoved"] = json!(staged.is_none());
    Rewrite {
        file_id: file.id,
        run_id,
        path: file.path.clone(),
        old_sha256: file.sha256.clone(),
        staged,
        new_sha256: new.as_ref().map(|(sha256, _, _)| sha256.clone()),
        new_bytes: new.as_ref().map(|(_, bytes, _)| *bytes as i64),
        new_rows: new.as_ref().map(|(_, _, kept)| *kept as i64),
        old_etags,
        applied: false,
        replace_object: false,
        relocal: file.local_removed,
        tenant_id: file.tenant_id.clone(),
        audit: audit.to_string(),
    }
}

/// Where a file's current content is read from.
struct Source {
    path: PathBuf,
    /// Downloaded from the bucket into the rewrites directory (removed once read).
    downloaded: bool,
}

fn sha256_of(path: &Path) -> Result<String, ExportError> {
    let hashed =
        Hashed::of_file(path).map_err(ExportError::io(format!("reading {}", path.display())))?;
    Ok(hashed.sha256())
}
