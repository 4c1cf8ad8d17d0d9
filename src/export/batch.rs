//! One tenant's export batch: the rows after its checkpoint, at most `batch_size` of them,
//! written as one NDJSON file per UTC day and committed with the checkpoint.
//!
//! Exactly once, whatever instant the process dies at:
//! 1. leftovers of a crashed batch are removed first: every path in `export_intents` that is
//!    not in the manifest, and its temporary file;
//! 2. each file's path is recorded as an intent before the file is created;
//! 3. a file is written under a hidden temporary name, fsynced and renamed into place, so no
//!    reader ever sees half a file; one `syncfs` then makes all the batch's renames and new
//!    directories durable (one flush instead of a directory fsync per file);
//! 4. the manifest rows, the new checkpoint and the clearing of the intents commit in one
//!    transaction. Before it, none of the batch's files count (step 1 removes them); after it,
//!    the checkpoint covers exactly them.
//!
//! File names derive from the first row a file holds (`batch-{created_at}-{hash of the
//! cursor}.json`), so a batch re-run after a crash writes the same names.
//!
//! Three stages overlap: a reader thread steps SQLite and copies rows into chunks, this
//! thread encodes and writes them, and a syncer thread fsyncs and renames finished files.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use super::manifest::{self, Cursor, Metric, Upload, WrittenFile};
use super::ndjson::{Row, append_line, utc_day};
use super::partition::{TenantDir, UnsafeTenantId, partition_dir};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    UnsafeTenantId(#[from] UnsafeTenantId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("row {id}: created_at {created_at:?} is not an ISO-8601 time")]
    BadCreatedAt { id: String, created_at: String },
    #[error("{0} is already in the manifest; refusing to overwrite it")]
    AlreadyCommitted(String),
    #[error("the export's {0} thread stopped unexpectedly")]
    Stage(&'static str),
}

impl ExportError {
    fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExportError {
        let context = context.into();
        move |source| ExportError::Io { context, source }
    }

    /// A short machine-readable kind, for metric rows and alerts.
    pub fn kind(&self) -> &'static str {
        match self {
            ExportError::UnsafeTenantId(_) => "unsafe_tenant_id",
            ExportError::Store(_) | ExportError::Sqlite(_) => "store",
            ExportError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                "disk_full"
            }
            ExportError::Io { .. } => "io",
            ExportError::BadCreatedAt { .. } => "bad_row",
            ExportError::AlreadyCommitted(_) | ExportError::Stage(_) => "internal",
        }
    }
}

/// What a batch needs besides the tenant.
pub struct BatchSettings<'a> {
    pub store: &'a Store,
    pub data_dir: &'a Path,
    pub batch_size: usize,
    pub upload: Upload,
    /// The store text of the run's start, stamped on manifest and metric rows.
    pub now_text: &'a str,
}

#[derive(Debug, Default)]
pub struct BatchReport {
    pub files: Vec<WrittenFile>,
    pub rows: u64,
    pub bytes: u64,
    /// Rows whose payload was not valid JSON and was kept as a string.
    pub payloads_kept_as_strings: u64,
}

/// Exports one batch for a tenant and commits it; on failure removes what it wrote, marks the
/// tenant's checkpoint failed (unchanged, so the next run retries) and records the metric.
pub fn export_batch(
    settings: &BatchSettings<'_>,
    tenant_id: &str,
) -> Result<BatchReport, ExportError> {
    let started = Instant::now();
    let result = write_and_commit(settings, tenant_id, started);
    if let Err(error) = &result {
        if let Err(cleanup) = remove_uncommitted(settings.store, settings.data_dir, tenant_id) {
            log::warn!(
                "export {tenant_id}: cleaning up after the failure: {cleanup}; the next run retries it"
            );
        }
        let message = error.to_string();
        let metric = Metric {
            tenant_id,
            rows: 0,
            bytes: 0,
            duration_ms: started.elapsed().as_millis() as u64,
            error: Some((error.kind(), &message)),
            at: settings.now_text,
        };
        if let Err(store_error) = manifest::mark_failed(settings.store, &metric, &message) {
            log::error!("export {tenant_id}: recording the failure: {store_error}");
        }
    }
    result
}

fn write_and_commit(
    settings: &BatchSettings<'_>,
    tenant_id: &str,
    started: Instant,
) -> Result<BatchReport, ExportError> {
    let tenant = TenantDir::new(tenant_id)?;
    remove_uncommitted(settings.store, settings.data_dir, tenant_id)?;
    let start = manifest::checkpoint(settings.store, tenant_id)?.unwrap_or_default();

    let report = std::thread::scope(|scope| -> Result<BatchReport, ExportError> {
        let (chunk_sender, chunks) = sync_channel(CHUNKS_IN_FLIGHT);
        let (file_sender, finished_files) = sync_channel(FILES_IN_FLIGHT);
        let reader = scope.spawn(|| {
            read_rows(
                settings.store,
                tenant_id,
                &start,
                settings.batch_size,
                chunk_sender,
            )
        });
        let syncer = scope.spawn(|| sync_files(finished_files));
        let written = write_files(settings, tenant, chunks, file_sender);
        let synced = syncer.join().map_err(|_| ExportError::Stage("syncer"))?;
        reader.join().map_err(|_| ExportError::Stage("reader"))?;
        let mut report = written?;
        report.files = synced?;
        Ok(report)
    })?;
    if !report.files.is_empty() {
        sync_file_system(settings.data_dir)?;
    }

    let metric = Metric {
        tenant_id,
        rows: report.rows,
        bytes: report.bytes,
        duration_ms: started.elapsed().as_millis() as u64,
        error: None,
        at: settings.now_text,
    };
    manifest::commit(
        settings.store,
        tenant_id,
        &report.files,
        settings.upload,
        &metric,
    )?;
    if report.rows > 0 {
        let seconds = started.elapsed().as_secs_f64().max(0.001);
        log::info!(
            "export {tenant_id}: {} rows in {} files, {:.1} MB, {:.0} rows/s",
            report.rows,
            report.files.len(),
            report.bytes as f64 / 1e6,
            report.rows as f64 / seconds
        );
    }
    Ok(report)
}

/// Removes what a batch wrote but did not commit (after a crash, or a failure just now).
pub fn remove_uncommitted(
    store: &Store,
    data_dir: &Path,
    tenant_id: &str,
) -> Result<(), ExportError> {
    let intents = manifest::leftover_intents(store, tenant_id)?;
    if intents.is_empty() {
        return Ok(());
    }
    let mut removed = 0;
    for (relative, committed) in &intents {
        let path = data_dir.join(relative);
        let mut candidates = vec![temporary_path(&path)];
        if !committed {
            candidates.push(path);
        }
        for candidate in candidates {
            match std::fs::remove_file(&candidate) {
                Ok(()) => removed += 1,
                // Gone, or never there: a path under something that is not a directory.
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                    ) => {}
                Err(error) => {
                    return Err(
                        ExportError::io(format!("removing {}", candidate.display()))(error),
                    );
                }
            }
        }
    }
    manifest::clear_intents(store, tenant_id)?;
    log::warn!(
        "export {tenant_id}: removed {removed} files of an uncommitted batch; it is exported again"
    );
    Ok(())
}

const CHUNK_ROWS: usize = 1024;
const CHUNKS_IN_FLIGHT: usize = 4;
const FILES_IN_FLIGHT: usize = 8;
const WRITE_BUFFER_BYTES: usize = 1 << 20;
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Rows as the reader copied them: one text buffer and each row's column ranges in it.
struct Chunk {
    text: String,
    rows: Vec<[Range<usize>; 6]>,
}

impl Chunk {
    fn new() -> Chunk {
        Chunk {
            text: String::with_capacity(CHUNK_ROWS * 320),
            rows: Vec::with_capacity(CHUNK_ROWS),
        }
    }

    fn row<'a>(&'a self, ranges: &[Range<usize>; 6], tenant_id: &'a str) -> Row<'a> {
        let column = |index: usize| &self.text[ranges[index].clone()];
        Row {
            id: column(0),
            tenant_id,
            customer_id: column(1),
            channel: column(2),
            outcome: column(3),
            payload: column(4),
            created_at: column(5),
        }
    }
}

fn read_rows(
    store: &Store,
    tenant_id: &str,
    start: &Cursor,
    limit: usize,
    chunks: SyncSender<Result<Chunk, ExportError>>,
) {
    let result = (|| -> Result<(), ExportError> {
        let conn = store.conn()?;
        let mut statement = conn.prepare_cached(
            "SELECT id, customer_id, channel, outcome, payload, created_at FROM interaction_history
             WHERE tenant_id = ?1 AND (created_at, id) > (?2, ?3)
             ORDER BY created_at, id LIMIT ?4",
        )?;
        let mut rows = statement.query((tenant_id, &start.created_at, &start.id, limit as i64))?;
        let mut chunk = Chunk::new();
        while let Some(row) = rows.next()? {
            let mut ranges: [Range<usize>; 6] = Default::default();
            for (index, range) in ranges.iter_mut().enumerate() {
                let begin = chunk.text.len();
                push_value(&mut chunk.text, row.get_ref(index)?, index == 4);
                *range = begin..chunk.text.len();
            }
            chunk.rows.push(ranges);
            let full = chunk.rows.len() == CHUNK_ROWS;
            if full
                && chunks
                    .send(Ok(std::mem::replace(&mut chunk, Chunk::new())))
                    .is_err()
            {
                // The writer stopped (it failed); nothing more is wanted.
                return Ok(());
            }
        }
        if !chunk.rows.is_empty() {
            let _ = chunks.send(Ok(chunk));
        }
        Ok(())
    })();
    if let Err(error) = result {
        let _ = chunks.send(Err(error));
    }
}

/// Copies a column as text. The application may have stored numbers, blobs or NULLs; a NULL
/// payload becomes JSON `null`, other NULLs empty strings.
fn push_value(text: &mut String, value: ValueRef<'_>, is_payload: bool) {
    match value {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => match std::str::from_utf8(bytes) {
            Ok(valid) => text.push_str(valid),
            Err(_) => text.push_str(&String::from_utf8_lossy(bytes)),
        },
        ValueRef::Integer(number) => text.push_str(&number.to_string()),
        ValueRef::Real(number) => text.push_str(&number.to_string()),
        ValueRef::Null if is_payload => text.push_str("null"),
        ValueRef::Null => {}
    }
}

/// A file being written: lines are encoded straight into `buffer`, which is hashed and
/// written a block at a time.
struct OpenFile {
    file: File,
    buffer: Vec<u8>,
    temporary: PathBuf,
    path: PathBuf,
    meta: WrittenFile,
    day: NaiveDate,
    hasher: Sha256,
}

/// A file written and flushed, for the syncer to make durable and visible.
struct FinishedFile {
    file: File,
    temporary: PathBuf,
    path: PathBuf,
    meta: WrittenFile,
}

fn write_files(
    settings: &BatchSettings<'_>,
    tenant: TenantDir<'_>,
    chunks: Receiver<Result<Chunk, ExportError>>,
    finished: SyncSender<FinishedFile>,
) -> Result<BatchReport, ExportError> {
    let mut report = BatchReport::default();
    let mut current: Option<OpenFile> = None;
    let started = Instant::now();
    let mut last_log = started;
    for chunk in chunks {
        let chunk = chunk?;
        for ranges in &chunk.rows {
            let row = chunk.row(ranges, tenant.as_str());
            let day = utc_day(row.created_at).ok_or_else(|| ExportError::BadCreatedAt {
                id: row.id.to_string(),
                created_at: row.created_at.to_string(),
            })?;
            if current.as_ref().is_none_or(|file| file.day != day) {
                if let Some(done) = current.take() {
                    finish(done, &finished)?;
                }
                current = Some(open_file(settings, tenant, day, &row)?);
            }
            let Some(file) = current.as_mut() else {
                continue;
            };
            let before = file.buffer.len();
            if append_line(&mut file.buffer, &row) {
                report.payloads_kept_as_strings += 1;
            }
            let written = (file.buffer.len() - before) as u64;
            file.meta.bytes += written;
            file.meta.row_count += 1;
            report.bytes += written;
            set_cursor(&mut file.meta.last, row.created_at, row.id);
            if file.buffer.len() >= WRITE_BUFFER_BYTES {
                file.flush_buffer()?;
            }
            report.rows += 1;
        }
        if last_log.elapsed() >= PROGRESS_LOG_INTERVAL {
            let seconds = started.elapsed().as_secs_f64();
            log::info!(
                "export {}: {} rows so far ({:.0} rows/s)",
                tenant.as_str(),
                report.rows,
                report.rows as f64 / seconds
            );
            last_log = Instant::now();
        }
    }
    if let Some(done) = current.take() {
        finish(done, &finished)?;
    }
    Ok(report)
}

fn set_cursor(cursor: &mut Cursor, created_at: &str, id: &str) {
    cursor.created_at.clear();
    cursor.created_at.push_str(created_at);
    cursor.id.clear();
    cursor.id.push_str(id);
}

fn open_file(
    settings: &BatchSettings<'_>,
    tenant: TenantDir<'_>,
    day: NaiveDate,
    first: &Row<'_>,
) -> Result<OpenFile, ExportError> {
    let name = file_name(first)?;
    let relative_dir = partition_dir(tenant, day);
    let relative = relative_dir.join(&name);
    let relative_text = relative.to_string_lossy().into_owned();
    if !manifest::record_intent(settings.store, tenant.as_str(), &relative_text)? {
        return Err(ExportError::AlreadyCommitted(relative_text));
    }
    let dir = settings.data_dir.join(&relative_dir);
    ensure_dir(&dir)?;
    let path = dir.join(&name);
    let temporary = temporary_path(&path);
    let file = File::create(&temporary)
        .map_err(ExportError::io(format!("creating {}", temporary.display())))?;
    let cursor = Cursor {
        created_at: first.created_at.to_string(),
        id: first.id.to_string(),
    };
    Ok(OpenFile {
        file,
        buffer: Vec::with_capacity(WRITE_BUFFER_BYTES + 64 * 1024),
        temporary,
        path,
        meta: WrittenFile {
            path: relative_text,
            partition_day: day.format("%Y-%m-%d").to_string(),
            row_count: 0,
            first: cursor.clone(),
            last: cursor,
            bytes: 0,
            sha256: String::new(),
        },
        day,
        hasher: Sha256::new(),
    })
}

impl OpenFile {
    fn flush_buffer(&mut self) -> Result<(), ExportError> {
        self.hasher.update(&self.buffer);
        self.file
            .write_all(&self.buffer)
            .map_err(ExportError::io(format!(
                "writing {}",
                self.temporary.display()
            )))?;
        self.buffer.clear();
        Ok(())
    }
}

fn finish(mut open: OpenFile, finished: &SyncSender<FinishedFile>) -> Result<(), ExportError> {
    open.flush_buffer()?;
    let OpenFile {
        file,
        temporary,
        path,
        mut meta,
        hasher,
        ..
    } = open;
    meta.sha256 = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    finished
        .send(FinishedFile {
            file,
            temporary,
            path,
            meta,
        })
        .map_err(|_| ExportError::Stage("syncer"))
}

/// Makes each finished file durable and visible: fsync, then rename into place. The renames
/// (and new directories) are made durable together by one `syncfs` before the commit.
fn sync_files(finished: Receiver<FinishedFile>) -> Result<Vec<WrittenFile>, ExportError> {
    let mut synced = Vec::new();
    let mut failure = None;
    for file in finished {
        // After a failure, keep draining so the writer is never blocked; files are removed.
        if failure.is_some() {
            continue;
        }
        let result = (|| {
            file.file.sync_all().map_err(ExportError::io(format!(
                "fsync {}",
                file.temporary.display()
            )))?;
            std::fs::rename(&file.temporary, &file.path)
                .map_err(ExportError::io(format!("renaming {}", file.path.display())))
        })();
        match result {
            Ok(()) => synced.push(file.meta),
            Err(error) => failure = Some(error),
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(synced),
    }
}

/// Flushes the file system holding `dir`: every rename and new directory of the batch at once,
/// instead of one directory fsync per file (a batch spans hundreds of day directories).
fn sync_file_system(dir: &Path) -> Result<(), ExportError> {
    use std::os::fd::AsRawFd;
    let handle = File::open(dir).map_err(ExportError::io(format!("opening {}", dir.display())))?;
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open for the call.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(ExportError::io(format!("syncfs {}", dir.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn ensure_dir(dir: &Path) -> Result<(), ExportError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(ExportError::io(format!("creating {}", dir.display())))
}

/// `batch-{created_at}-{hash}.json` from the file's first row: the same rows always give the
/// same name, and batches starting within one millisecond differ by the hash of the cursor.
fn file_name(first: &Row<'_>) -> Result<String, ExportError> {
    let time = crate::clock::from_store_text(first.created_at).ok_or_else(|| {
        ExportError::BadCreatedAt {
            id: first.id.to_string(),
            created_at: first.created_at.to_string(),
        }
    })?;
    let mut hasher = Sha256::new();
    hasher.update(first.created_at.as_bytes());
    hasher.update([0]);
    hasher.update(first.id.as_bytes());
    let digest = hasher.finalize();
    Ok(format!(
        "batch-{}-{:02x}{:02x}{:02x}{:02x}.json",
        time.format("%Y%m%dT%H%M%S%3fZ"),
        digest[0],
        digest[1],
        digest[2],
        digest[3]
    ))
}

/// The hidden name a file is written under before it is renamed into place.
fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_deterministic_and_tell_equal_timestamps_apart() {
        let row = |id| Row {
            id,
            tenant_id: "acme",
            customer_id: "",
            channel: "",
            outcome: "",
            payload: "{}",
            created_at: "2026-03-30T02:00:00.123Z",
        };
        let first = file_name(&row("a")).unwrap();
        assert!(
            first.starts_with("batch-20260330T020000123Z-") && first.ends_with(".json"),
            "{first}"
        );
        assert_eq!(first, file_name(&row("a")).unwrap());
        assert_ne!(first, file_name(&row("b")).unwrap());
        assert_eq!(
            temporary_path(Path::new("x/day=01/batch-1.json")),
            Path::new("x/day=01/.batch-1.json.tmp")
        );
    }
}
