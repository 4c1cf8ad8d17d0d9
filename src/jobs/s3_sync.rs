//! `s3-sync`: upload every export file not yet uploaded, verified, with retries and backoff.
//! While storage is unreachable files stay queued, so nothing is lost; uploading a file
//! again is harmless: uploads never overwrite (SPEC section 9), and a key that already holds
//! the file's bytes counts as uploaded. A key holding other bytes is a conflict: the object is
//! left as it is, the file stays queued (on its backoff) and `export_key_conflict` is raised.
//!
//! An outage is the storage's, not each file's: a file that met one is left due, so once
//! storage answers again the next run drains the whole queue. Only a refusal of the file
//! itself (an unverified upload, a 4xx) puts that file on its own backoff.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::{Job, JobCtx, JobError, JobOutput, Skipped};
use crate::alert;
use crate::clock::to_store_text;
use crate::config::Config;
use crate::export::storage::{Storage, StorageError, Stored, Uploaded};
use crate::store::manifest::{self, PendingUpload};

pub struct S3Sync;

/// Attempts at one file within a run, before it waits for a later run.
const ATTEMPTS_PER_RUN: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Between runs: 30 s after the first failed attempt, doubling, at most an hour.
const FIRST_BACKOFF_SECS: i64 = 30;
const MAX_BACKOFF_SECS: i64 = 3600;
const PAGE: i64 = 200;

impl Job for S3Sync {
    fn name(&self) -> &'static str {
        "s3-sync"
    }

    fn default_schedule(&self) -> &'static str {
        "* * * * *"
    }

    fn enabled_by_default(&self, config: &Config) -> bool {
        config.s3.is_some()
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let Some(settings) = &ctx.config.s3 else {
            let skipped = Skipped {
                skipped: "S3_BUCKET is not set; export files stay local",
            };
            return JobOutput::new(&skipped, 0, 0);
        };
        let storage =
            Storage::new(settings).map_err(|error| JobError::Failed(error.to_string()))?;
        let mut random = fastrand::Rng::new();
        let (mut uploaded, mut failed, mut bytes) = (0u64, 0u64, 0u64);
        let (mut already_stored, mut conflicts) = (0u64, 0u64);
        let mut errors = Vec::new();
        let mut unreachable = false;
        let mut after_id = 0;
        'pages: while !ctx.should_stop() {
            let page = manifest::due_uploads(ctx.store, &to_store_text(ctx.now()), after_id, PAGE)?;
            let Some(last) = page.last() else {
                break;
            };
            after_id = last.id;
            for file in page {
                if ctx.should_stop() {
                    break 'pages;
                }
                match upload_with_retries(ctx, &storage, &file, &mut random) {
                    Ok(done) => {
                        if !record_upload(ctx, &storage, &file, &done)? {
                            failed += 1;
                            continue;
                        }
                        uploaded += 1;
                        bytes += file.bytes as u64;
                        if done.stored == Stored::AlreadyThere {
                            already_stored += 1;
                        }
                        remove_local_copy(ctx, &file)?;
                    }
                    Err(error @ StorageError::Conflict { .. }) => {
                        conflicts += 1;
                        retry_later(ctx, &file, &error, &mut random)?;
                        raise_conflict(ctx, &storage, &file, &error)?;
                        if errors.len() < 20 {
                            errors.push(FileError::of(&file, &error));
                        }
                    }
                    Err(error) if error.is_unreachable() => {
                        failed += 1;
                        manifest::mark_upload_deferred(ctx.store, file.id, &error.to_string())?;
                        log::warn!(
                            "s3-sync: storage unreachable at {} ({error}); the queue waits for the next run",
                            file.path
                        );
                        errors.push(FileError::of(&file, &error));
                        unreachable = true;
                        break 'pages;
                    }
                    Err(error) => {
                        failed += 1;
                        let next = retry_later(ctx, &file, &error, &mut random)?;
                        log::warn!(
                            "s3-sync: {} not uploaded ({error}); retrying from {next}",
                            file.path
                        );
                        if errors.len() < 20 {
                            errors.push(FileError::of(&file, &error));
                        }
                    }
                }
            }
        }
        let (pending, pending_bytes) = manifest::upload_backlog(ctx.store)?;
        if unreachable {
            log::warn!("s3-sync: storage is unreachable; {pending} files stay queued");
        }
        let report = Report {
            uploaded,
            already_stored,
            conflicts,
            pending,
            pending_bytes,
            failed,
            bytes,
            unreachable,
            errors,
        };
        JobOutput::new(&report, failed + conflicts, uploaded)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    uploaded: u64,
    /// Of those uploaded, files whose key already held the same bytes.
    already_stored: u64,
    conflicts: u64,
    pending: u64,
    pending_bytes: u64,
    failed: u64,
    bytes: u64,
    unreachable: bool,
    /// The first 20.
    errors: Vec<FileError>,
}

#[derive(Serialize)]
struct FileError {
    path: String,
    error: String,
}

impl FileError {
    fn of(file: &PendingUpload, error: &StorageError) -> FileError {
        FileError {
            path: file.path.clone(),
            error: error.to_string(),
        }
    }
}

/// Uploads one file, retrying with exponential backoff and jitter within the run (a conflict
/// is an answer, not a failure to retry).
fn upload_with_retries(
    ctx: &JobCtx<'_>,
    storage: &Storage,
    file: &PendingUpload,
    random: &mut fastrand::Rng,
) -> Result<Uploaded, StorageError> {
    let local = ctx.data_dir().join(&file.path);
    let key = storage.key(&file.path);
    let mut delay = FIRST_RETRY;
    let mut attempt = 1;
    loop {
        match storage.upload(&local, &key) {
            Ok(uploaded) => return Ok(uploaded),
            // Other content at the key, or the local file unreadable: a retry within the
            // run finds the same.
            Err(error @ (StorageError::Conflict { .. } | StorageError::Io(_))) => {
                return Err(error);
            }
            Err(error) if attempt < ATTEMPTS_PER_RUN && !ctx.should_stop() => {
                log::debug!("s3-sync: {key} attempt {attempt} failed: {error}");
                std::thread::sleep(delay + delay.mul_f64(random.f64() * 0.5));
                delay *= 2;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Records an upload. A file rewritten or removed while it went up (an erasure, retention)
/// left the object holding the old content: it is replaced by the file as it is now (the
/// object edgecron just wrote, by its ETag), or removed. Answers whether the file is uploaded.
fn record_upload(
    ctx: &JobCtx<'_>,
    storage: &Storage,
    file: &PendingUpload,
    done: &Uploaded,
) -> Result<bool, JobError> {
    let now = to_store_text(ctx.now());
    if manifest::mark_uploaded(ctx.store, file.id, &file.sha256, &now)? {
        return Ok(true);
    }
    let key = storage.key(&file.path);
    let followed = match manifest::file_content(ctx.store, file.id)? {
        // Removed: the object this upload wrote goes too.
        None => match storage.etag(&key) {
            Ok(Some(etag)) if etag == done.etag => storage.delete(&key),
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        },
        Some(sha256) => {
            let local = ctx.data_dir().join(&file.path);
            match storage.replace(&local, &key, &done.etag) {
                Ok(_) => return Ok(manifest::mark_uploaded(ctx.store, file.id, &sha256, &now)?),
                Err(error) => Err(error),
            }
        }
    };
    if let Err(error) = followed {
        log::warn!(
            "s3-sync: {} changed while it went up, and its object could not follow: {error}; it stays queued",
            file.path
        );
    }
    Ok(false)
}

/// `export_key_conflict`: another writer's object holds the key of one of this site's files.
fn raise_conflict(
    ctx: &JobCtx<'_>,
    storage: &Storage,
    file: &PendingUpload,
    error: &StorageError,
) -> Result<(), JobError> {
    let key = storage.key(&file.path);
    let raised = alert::job_alert(
        alert::EXPORT_KEY_CONFLICT,
        "s3-sync",
        format!(
            "s3-sync: s3://{}/{key} already holds other content; it is left as it is and {} stays queued",
            storage.bucket(),
            file.path
        ),
        json!({"bucket": storage.bucket(), "key": key, "path": file.path, "error": error.to_string()}),
        ctx.now(),
    );
    alert::queue(ctx.store, ctx.config, ctx.clock, &raised)?;
    Ok(())
}

/// With `EXPORT_DELETE_LOCAL_AFTER_UPLOAD`, removes the local copy of a file already recorded
/// as uploaded (so a failure in between strands nothing: the upload stands, a copy stays).
fn remove_local_copy(ctx: &JobCtx<'_>, file: &PendingUpload) -> Result<(), JobError> {
    if !ctx.config.delete_local_after_upload {
        return Ok(());
    }
    // An erasure or a retention rewriting it decides what stays on disk (the file in place
    // may already be its new content).
    if crate::store::export_rewrite::is_rewriting(ctx.store, file.id)? {
        return Ok(());
    }
    let local = ctx.data_dir().join(&file.path);
    match std::fs::remove_file(&local) {
        Ok(()) => {
            manifest::mark_local_removed(ctx.store, file.id, &to_store_text(ctx.now()))?;
        }
        Err(error) => log::warn!(
            "s3-sync: removing the local copy {}: {error}",
            local.display()
        ),
    }
    Ok(())
}

/// Puts a file that failed on its own backoff; answers when it is tried again.
fn retry_later(
    ctx: &JobCtx<'_>,
    file: &PendingUpload,
    error: &StorageError,
    random: &mut fastrand::Rng,
) -> Result<DateTime<Utc>, JobError> {
    let next = next_attempt(ctx.now(), file.attempts + 1, random);
    manifest::mark_upload_failed(ctx.store, file.id, &to_store_text(next), &error.to_string())?;
    Ok(next)
}

/// When a file that failed `attempts` times is tried again: exponential, capped, jittered.
fn next_attempt(now: DateTime<Utc>, attempts: i64, random: &mut fastrand::Rng) -> DateTime<Utc> {
    let exponent = attempts.clamp(1, 20) - 1;
    let backoff = (FIRST_BACKOFF_SECS << exponent).min(MAX_BACKOFF_SECS);
    let jitter = random.i64(0..=backoff / 5);
    now + chrono::Duration::seconds(backoff + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut random = fastrand::Rng::with_seed(1);
        let wait = |attempts, random: &mut fastrand::Rng| {
            (next_attempt(now, attempts, random) - now).num_seconds()
        };
        let first = wait(1, &mut random);
        assert!((30..=36).contains(&first), "{first}");
        let third = wait(3, &mut random);
        assert!((120..=144).contains(&third), "{third}");
        let late = wait(50, &mut random);
        assert!((3600..=4320).contains(&late), "{late}");
    }
}
