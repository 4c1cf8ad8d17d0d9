//! One tenant's export batch: the rows after its checkpoint, at most `batch_size` of them,
//! written as one NDJSON file per UTC day and committed with the checkpoint.
//!
//! Exactly once, whatever instant the process dies at:
//! 1. leftovers of a crashed batch are removed first: a batch records where it starts in
//!    `export_batches_in_progress` before it creates any file, so every file of the tenant's
//!    partitions from that day on that is not in the manifest is one of its files;
//! 2. the batch records where it starts, as step 1 reads it;
//! 3. every file is written under a hidden temporary name; one `syncfs` makes all their data
//!    durable, then each is renamed into place (so no reader ever sees half a file, not even
//!    after a power loss), and a second `syncfs` makes the renames and new directories
//!    durable: two flushes per batch instead of two fsyncs per file;
//! 4. the manifest rows, the new checkpoint and the clearing of the in-progress row commit in one
//!    transaction. Before it, none of the batch's files count (step 1 removes them); after it,
//!    the checkpoint covers exactly them.
//!
//! File names derive from the first row a file holds (`batch-{created_at}-{hash of the
//! cursor}.json`), so a batch re-run after a crash writes the same names.
//!
//! Two stages overlap: a reader thread steps SQLite and copies rows into chunks while this
//! thread encodes and writes them.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use super::manifest::{self, Metric, Upload, WrittenFile};
use super::ndjson::{Row, append_line, utc_day};
use super::partition::{TenantDir, UnsafeTenantId, partition_dir, tenant_root};
use crate::io_error::IoError;
use crate::store::Cursor;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    UnsafeTenantId(#[from] UnsafeTenantId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Io(#[from] IoError),
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
        move |source| ExportError::Io(IoError { context, source })
    }

    /// A short machine-readable kind, for metric rows and alerts.
    pub fn kind(&self) -> &'static str {
        match self {
            ExportError::UnsafeTenantId(_) => "unsafe_tenant_id",
            ExportError::Store(_) | ExportError::Sqlite(_) => "store",
            ExportError::Io(IoError { source, .. })
                if source.raw_os_error() == Some(libc::ENOSPC) =>
            {
                "disk_full"
            }
            ExportError::Io(_) => "io",
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
    /// Threads encoding and writing files (tenants are spread over them).
    pub writers: usize,
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

/// Exports one batch for each tenant and commits each on its own. A tenant that fails has
/// what it wrote removed, its checkpoint marked failed (unchanged, so the next run retries)
/// and its metric recorded; the others go on. Answers in the order of `tenant_ids`.
pub fn export_tenants(
    settings: &BatchSettings<'_>,
    tenant_ids: &[&str],
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Vec<Result<BatchReport, ExportError>> {
    let started = Instant::now();
    let mut results: Vec<Option<Result<BatchReport, ExportError>>> =
        tenant_ids.iter().map(|_| None).collect();
    let mut jobs = Vec::new();
    for (index, tenant_id) in tenant_ids.iter().enumerate() {
        match prepare(settings, tenant_id) {
            Ok((dir, start)) => jobs.push(TenantJob {
                index,
                id: tenant_id,
                dir,
                start,
            }),
            Err(error) => results[index] = Some(Err(error)),
        }
    }
    if !jobs.is_empty() {
        for (job, outcome) in jobs.iter().zip(write_batches(settings, &jobs, should_stop)) {
            results[job.index] = Some(outcome);
        }
    }
    results
        .into_iter()
        .zip(tenant_ids)
        .map(|(result, tenant_id)| {
            let result = result.unwrap_or(Err(ExportError::Stage("writer")));
            match &result {
                Ok(report) if report.rows > 0 => {
                    let seconds = started.elapsed().as_secs_f64().max(0.001);
                    log::info!(
                        "export {tenant_id}: {} rows in {} files, {:.1} MB ({:.0} rows/s over the run)",
                        report.rows,
                        report.files.len(),
                        report.bytes as f64 / 1e6,
                        report.rows as f64 / seconds
                    );
                }
                Ok(_) => {}
                Err(error) => record_failure(settings, tenant_id, error, started),
            }
            result
        })
        .collect()
}

/// A tenant whose batch is under way.
struct TenantJob<'a> {
    index: usize,
    id: &'a str,
    dir: TenantDir<'a>,
    start: Cursor,
}

/// Checks the tenant id, removes leftovers of a crashed batch, and records the new batch's
/// start before any of its files exist.
fn prepare<'a>(
    settings: &BatchSettings<'_>,
    tenant_id: &'a str,
) -> Result<(TenantDir<'a>, Cursor), ExportError> {
    let dir = TenantDir::new(tenant_id)?;
    remove_uncommitted(settings.store, settings.data_dir, tenant_id)?;
    let start = manifest::checkpoint(settings.store, tenant_id)?.unwrap_or_default();
    manifest::begin_batch(settings.store, tenant_id, &start)?;
    Ok((dir, start))
}

fn record_failure(
    settings: &BatchSettings<'_>,
    tenant_id: &str,
    error: &ExportError,
    started: Instant,
) {
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

/// Reads all tenants' rows in one pass, writes each tenant's files, makes them durable and
/// visible, and commits each tenant. Answers one outcome per job, in order.
fn write_batches(
    settings: &BatchSettings<'_>,
    jobs: &[TenantJob<'_>],
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Vec<Result<BatchReport, ExportError>> {
    let writer_count = settings.writers.clamp(1, jobs.len());
    let started = Instant::now();
    // The reader and writer threads log for the run that started them.
    let run = crate::logging::current_run();
    let outputs = std::thread::scope(|scope| {
        // One group of tenants per writer, each with its own merged reader: both cores read and
        // write, and a table page is read once per group rather than once per tenant.
        let writers: Vec<_> = (0..writer_count)
            .map(|writer| {
                let (sender, chunks) = sync_channel::<Result<Chunk, String>>(CHUNKS_IN_FLIGHT);
                let slots: Vec<usize> = (0..jobs.len())
                    .filter(|slot| slot % writer_count == writer)
                    .collect();
                scope.spawn(move || {
                    let _run = crate::logging::continue_run(run);
                    read_merged(settings, jobs, &slots, sender, should_stop)
                });
                scope.spawn(move || {
                    let _run = crate::logging::continue_run(run);
                    write_files(settings, jobs, writer, writer_count, chunks)
                })
            })
            .collect();
        let mut outputs: Vec<Option<TenantOutput>> = jobs.iter().map(|_| None).collect();
        for handle in writers {
            // A writer that panicked leaves its tenants without an output: they fail below.
            if let Ok(written) = handle.join() {
                for (slot, output) in written {
                    outputs[slot] = Some(output);
                }
            }
        }
        outputs
    });

    let mut outcomes: Vec<Result<WrittenBatch, ExportError>> = outputs
        .into_iter()
        .map(|output| match output {
            Some(TenantOutput {
                error: Some(error), ..
            }) => Err(error),
            Some(TenantOutput { report, files, .. }) => Ok(WrittenBatch { report, files }),
            None => Err(ExportError::Stage("writer")),
        })
        .collect();
    let written_in = started.elapsed();
    let published = publish(settings.data_dir, &mut outcomes);
    log::info!(
        "export: {} tenants read and written in {:.2}s, made durable and visible in {:.2}s",
        jobs.len(),
        written_in.as_secs_f64(),
        (started.elapsed() - written_in).as_secs_f64()
    );
    if let Err(error) = published {
        // The flush failed: nothing of this run can be trusted to be durable.
        let message = error.to_string();
        for outcome in outcomes.iter_mut().filter(|outcome| outcome.is_ok()) {
            *outcome = Err(ExportError::Io(IoError {
                context: "making the export durable".into(),
                source: std::io::Error::other(message.clone()),
            }));
        }
    }
    outcomes
        .into_iter()
        .zip(jobs)
        .map(|(outcome, job)| {
            let written = outcome?;
            let report = BatchReport {
                files: written.files.into_iter().map(|file| file.meta).collect(),
                ..written.report
            };
            let metric = Metric {
                tenant_id: job.id,
                rows: report.rows,
                bytes: report.bytes,
                duration_ms: started.elapsed().as_millis() as u64,
                error: None,
                at: settings.now_text,
            };
            manifest::commit(
                settings.store,
                job.id,
                &report.files,
                settings.upload,
                &metric,
            )?;
            Ok(report)
        })
        .collect()
}

/// Removes what a batch wrote but did not commit (after a crash, or a failure just now): every
/// file in the tenant's partitions from the batch's first day on that the manifest does not
/// list. Every row of a batch comes after its start, so its files are all in those days.
pub fn remove_uncommitted(
    store: &Store,
    data_dir: &Path,
    tenant_id: &str,
) -> Result<(), ExportError> {
    let Some(from) = manifest::batch_in_progress(store, tenant_id)? else {
        return Ok(());
    };
    let tenant = TenantDir::new(tenant_id)?;
    // A first batch (empty cursor) may have written any day.
    let first_day = utc_day(&from.created_at);
    let first_day_text = first_day
        .map(|day| day.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    let committed: HashSet<String> =
        manifest::committed_paths_since(store, tenant_id, &first_day_text)?
            .into_iter()
            .collect();
    let mut removed = 0;
    for day in partition_days(&data_dir.join(tenant_root(tenant)))? {
        if first_day.is_some_and(|first| day < first) {
            continue;
        }
        let relative_dir = partition_dir(tenant, day);
        for name in file_names(&data_dir.join(&relative_dir))? {
            let relative = relative_dir.join(&name);
            if committed.contains(relative.to_string_lossy().as_ref()) {
                continue;
            }
            let path = data_dir.join(&relative);
            match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(ExportError::io(format!("removing {}", path.display()))(
                        error,
                    ));
                }
            }
        }
    }
    manifest::end_batch(store, tenant_id)?;
    if removed > 0 {
        log::warn!(
            "export {tenant_id}: removed {removed} files of an uncommitted batch; it is exported again"
        );
    }
    Ok(())
}

/// The days that have a partition directory under a tenant's root.
fn partition_days(root: &Path) -> Result<Vec<NaiveDate>, ExportError> {
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

/// Names after `prefix` of the directories in `dir` named `{prefix}...`; none if `dir` is not
/// a directory.
fn subdirectories(dir: &Path, prefix: &str) -> Result<Vec<String>, ExportError> {
    Ok(entries(dir)?
        .into_iter()
        .filter_map(|(name, is_dir)| {
            is_dir
                .then(|| name.strip_prefix(prefix).map(str::to_string))
                .flatten()
        })
        .collect())
}

fn file_names(dir: &Path) -> Result<Vec<String>, ExportError> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|(_, is_dir)| !is_dir)
        .map(|(name, _)| name)
        .collect())
}

fn entries(dir: &Path) -> Result<Vec<(String, bool)>, ExportError> {
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

const CHUNK_ROWS: usize = 1024;
const CHUNKS_IN_FLIGHT: usize = 4;
const WRITE_BUFFER_BYTES: usize = 1 << 20;
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Rows as the reader copied them: one text buffer, and each row's tenant slot and column
/// ranges in it.
struct Chunk {
    text: String,
    rows: Vec<(usize, [Range<usize>; 6])>,
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

    fn push(&mut self, slot: usize, row: &HeldRow) {
        let base = self.text.len();
        self.text.push_str(&row.text);
        self.rows.push((
            slot,
            row.ranges
                .clone()
                .map(|range| range.start + base..range.end + base),
        ));
    }
}

/// The next row of one tenant, read but not yet taken.
#[derive(Default)]
struct HeldRow {
    text: String,
    ranges: [Range<usize>; 6],
}

impl HeldRow {
    fn created_at(&self) -> &str {
        &self.text[self.ranges[5].clone()]
    }
}

/// Steps the keyset queries of the tenants in `slots` on one connection, always taking the
/// tenant whose next row is oldest. Tenants' rows share table pages; read in time order
/// together, each page is read into SQLite's cache once for them all rather than once each.
fn read_merged(
    settings: &BatchSettings<'_>,
    jobs: &[TenantJob<'_>],
    slots: &[usize],
    sender: SyncSender<Result<Chunk, String>>,
    should_stop: &(dyn Fn() -> bool + Sync),
) {
    let result = (|| -> Result<(), ExportError> {
        let conn = settings.store.conn()?;
        let mut statements = slots
            .iter()
            .map(|_| {
                conn.prepare(
                    "SELECT id, customer_id, channel, outcome, payload, created_at FROM interaction_history
                     WHERE tenant_id = ?1 AND (created_at, id) > (?2, ?3)
                     ORDER BY created_at, id LIMIT ?4",
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut cursors = statements
            .iter_mut()
            .zip(slots)
            .map(|(statement, &slot)| {
                let job = &jobs[slot];
                statement.query((
                    job.id,
                    &job.start.created_at,
                    &job.start.id,
                    settings.batch_size as i64,
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut held: Vec<Option<HeldRow>> = Vec::with_capacity(slots.len());
        for cursor in &mut cursors {
            let mut row = HeldRow::default();
            held.push(fetch(cursor, &mut row)?.then_some(row));
        }
        let mut pending = Chunk::new();
        let mut taken: usize = 0;
        loop {
            let next = held
                .iter()
                .enumerate()
                .filter_map(|(position, row)| row.as_ref().map(|row| (position, row.created_at())))
                .min_by(|a, b| a.1.cmp(b.1))
                .map(|(position, _)| position);
            let Some(position) = next else {
                break;
            };
            if let Some(row) = &held[position] {
                pending.push(slots[position], row);
            }
            if pending.rows.len() == CHUNK_ROWS
                && sender
                    .send(Ok(std::mem::replace(&mut pending, Chunk::new())))
                    .is_err()
            {
                return Ok(());
            }
            let more = match held[position].as_mut() {
                Some(row) => fetch(&mut cursors[position], row)?,
                None => false,
            };
            if !more {
                held[position] = None;
            }
            taken += 1;
            // Stopping early is safe: each tenant's batch is then a prefix of its rows.
            if taken.is_multiple_of(CHUNK_ROWS) && should_stop() {
                log::info!("export: stopping early after {taken} rows; the next run goes on");
                break;
            }
        }
        if !pending.rows.is_empty() {
            let _ = sender.send(Ok(pending));
        }
        Ok(())
    })();
    if let Err(error) = result {
        let _ = sender.send(Err(error.to_string()));
    }
}

/// Reads the cursor's next row into `row`; answers whether there was one.
fn fetch(cursor: &mut rusqlite::Rows<'_>, row: &mut HeldRow) -> Result<bool, ExportError> {
    let Some(next) = cursor.next()? else {
        return Ok(false);
    };
    row.text.clear();
    for index in 0..6 {
        let begin = row.text.len();
        push_value(&mut row.text, next.get_ref(index)?, index == 4);
        row.ranges[index] = begin..row.text.len();
    }
    Ok(true)
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

/// A file written under its temporary name, to be made durable and renamed into place.
struct FinishedFile {
    temporary: PathBuf,
    path: PathBuf,
    meta: WrittenFile,
}

/// One tenant's side of a writer: its open file, finished files and counts, or its failure.
#[derive(Default)]
struct TenantOutput {
    current: Option<OpenFile>,
    files: Vec<FinishedFile>,
    report: BatchReport,
    error: Option<ExportError>,
}

/// Writes the rows of the tenants this writer owns (`slot % writer_count == writer`).
fn write_files(
    settings: &BatchSettings<'_>,
    jobs: &[TenantJob<'_>],
    writer: usize,
    writer_count: usize,
    chunks: Receiver<Result<Chunk, String>>,
) -> Vec<(usize, TenantOutput)> {
    let mut outputs: Vec<(usize, TenantOutput)> = (0..jobs.len())
        .filter(|slot| slot % writer_count == writer)
        .map(|slot| (slot, TenantOutput::default()))
        .collect();
    let position = |slot: usize| slot / writer_count;
    let started = Instant::now();
    let mut last_log = started;
    for chunk in chunks {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(message) => {
                for (_, output) in &mut outputs {
                    output.error.get_or_insert(ExportError::Io(IoError {
                        context: "reading interaction rows".into(),
                        source: std::io::Error::other(message.clone()),
                    }));
                }
                break;
            }
        };
        for (slot, ranges) in &chunk.rows {
            let job = &jobs[*slot];
            let output = &mut outputs[position(*slot)].1;
            if output.error.is_some() {
                continue;
            }
            let row = chunk.row(ranges, job.id);
            if let Err(error) = write_row(settings, job.dir, output, &row) {
                output.current = None;
                output.error = Some(error);
            }
        }
        if last_log.elapsed() >= PROGRESS_LOG_INTERVAL {
            let seconds = started.elapsed().as_secs_f64().max(0.001);
            for (slot, output) in &outputs {
                log::info!(
                    "export {}: {} rows so far ({:.0} rows/s)",
                    jobs[*slot].id,
                    output.report.rows,
                    output.report.rows as f64 / seconds
                );
            }
            last_log = Instant::now();
        }
    }
    for (_, output) in &mut outputs {
        if let Some(done) = output.current.take()
            && output.error.is_none()
        {
            match finish(done) {
                Ok(file) => output.files.push(file),
                Err(error) => output.error = Some(error),
            }
        }
    }
    outputs
}

fn write_row(
    settings: &BatchSettings<'_>,
    tenant: TenantDir<'_>,
    output: &mut TenantOutput,
    row: &Row<'_>,
) -> Result<(), ExportError> {
    let day = utc_day(row.created_at).ok_or_else(|| ExportError::BadCreatedAt {
        id: row.id.to_string(),
        created_at: row.created_at.to_string(),
    })?;
    if output.current.as_ref().is_none_or(|file| file.day != day) {
        if let Some(done) = output.current.take() {
            output.files.push(finish(done)?);
        }
        output.current = Some(open_file(settings, tenant, day, row)?);
    }
    let Some(file) = output.current.as_mut() else {
        return Ok(());
    };
    let before = file.buffer.len();
    if append_line(&mut file.buffer, row) {
        output.report.payloads_kept_as_strings += 1;
    }
    let written = (file.buffer.len() - before) as u64;
    file.meta.bytes += written;
    file.meta.row_count += 1;
    output.report.bytes += written;
    output.report.rows += 1;
    set_cursor(&mut file.meta.last, row.created_at, row.id);
    if file.buffer.len() >= WRITE_BUFFER_BYTES {
        file.flush_buffer()?;
    }
    Ok(())
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
    let dir = settings.data_dir.join(&relative_dir);
    ensure_dir(&dir)?;
    let path = dir.join(&name);
    // Uncommitted files were removed before the batch began: one still there is committed.
    if path.exists() {
        return Err(ExportError::AlreadyCommitted(relative_text));
    }
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

fn finish(mut open: OpenFile) -> Result<FinishedFile, ExportError> {
    open.flush_buffer()?;
    start_writeback(&open.file);
    let OpenFile {
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
    Ok(FinishedFile {
        temporary,
        path,
        meta,
    })
}

/// Starts writing the file's data to disk without waiting for it, so the batch's final flush
/// finds little left to do. Only a hint: the flush is what guarantees durability.
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open for the call.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// A batch's files, written but not yet visible.
struct WrittenBatch {
    report: BatchReport,
    files: Vec<FinishedFile>,
}

/// Makes every tenant's files durable, then visible: one flush for all their data, a rename of
/// each into place, one flush for all the renames. A tenant whose rename fails fails alone.
fn publish(
    data_dir: &Path,
    batches: &mut [Result<WrittenBatch, ExportError>],
) -> Result<(), ExportError> {
    if !batches
        .iter()
        .any(|batch| batch.as_ref().is_ok_and(|batch| !batch.files.is_empty()))
    {
        return Ok(());
    }
    sync_file_system(data_dir)?;
    for batch in batches.iter_mut() {
        let renamed = match batch {
            Ok(written) => written.files.iter().try_for_each(|file| {
                std::fs::rename(&file.temporary, &file.path)
                    .map_err(ExportError::io(format!("renaming {}", file.path.display())))
            }),
            Err(_) => Ok(()),
        };
        if let Err(error) = renamed {
            *batch = Err(error);
        }
    }
    sync_file_system(data_dir)
}

/// Flushes the file system holding `dir`: all of the batch's files, or renames and new
/// directories, at once (a batch spans hundreds of day directories).
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
