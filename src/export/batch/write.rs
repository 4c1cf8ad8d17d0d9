//! The export's writers: rows encoded in the configured format (`export::format`) into one
//! file per tenant and UTC day, hashed as written into the staging directory, where no reader
//! looks.
//!
//! Rows come in commit order, so a tenant's late or backfilled rows land in their own older
//! day: each writer keeps a few files open at once, and one idle longest is finished (a later
//! row of its day starts a new file) when it would pass [`MAX_OPEN_FILES`]. What the open
//! files hold in memory stays within [`WRITER_MEMORY_BUDGET`]: past it, the file holding most
//! writes it out (a block of lines, a Parquet row group).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use sha2::{Digest, Sha256};

use super::read::{self, Chunk, Origin};
use super::staging::{FinishedFile, staging_dir};
use super::{ExportError, ExportTenant};
use crate::export::format::{Encoder, FileFormat, Hashed};
use crate::export::partition::partition_dir;
use crate::export::row::{Row, partition_day};
use crate::store::manifest::{self, WrittenFile};
use crate::store::{Cursor, Store};

/// Files one writer keeps open at once (each holds a descriptor and its buffer).
const MAX_OPEN_FILES: usize = 32;
/// What one writer's open files may hold in memory together, rows not yet written.
const WRITER_MEMORY_BUDGET: usize = 8 * 1024 * 1024;
/// The budget is checked each time this many more bytes of rows came in (a check walks the
/// open files), so it is passed by at most this much and one row.
const BUDGET_CHECK_BYTES: u64 = 256 * 1024;
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What a writer did for one tenant: its files and counts, or its failure.
#[derive(Default)]
pub struct TenantOutput {
    pub files: Vec<FinishedFile>,
    pub rows: u64,
    /// Bytes of its finished files, as they lie on disk.
    pub bytes: u64,
    /// Rows whose payload was not JSON a reader takes, kept as a string.
    pub payloads_kept_as_strings: u64,
    pub error: Option<ExportError>,
    open: Vec<OpenFile>,
}

/// A file being written.
struct OpenFile {
    encoder: Box<dyn Encoder>,
    staged: PathBuf,
    path: PathBuf,
    meta: WrittenFile,
    day: NaiveDate,
    last_used: u64,
}

/// Where the files go and what they are: the same for every tenant of a batch.
#[derive(Clone, Copy)]
pub struct Destination<'a> {
    pub store: &'a Store,
    pub data_dir: &'a Path,
    pub site: &'a str,
    pub format: FileFormat,
}

/// Writes the rows of the tenants this writer owns (`slot % writer_count == writer`).
pub fn write_files(
    destination: Destination<'_>,
    tenants: &[ExportTenant<'_>],
    writer: usize,
    writer_count: usize,
    chunks: Receiver<Chunk>,
) -> Vec<(usize, TenantOutput)> {
    let mut outputs: Vec<(usize, TenantOutput)> = (0..tenants.len())
        .filter(|slot| slot % writer_count == writer)
        .map(|slot| (slot, TenantOutput::default()))
        .collect();
    let position = |slot: usize| slot / writer_count;
    let started = Instant::now();
    let mut last_log = started;
    let mut clock = 0u64;
    let mut since_budget_check = 0u64;
    for chunk in chunks {
        for chunk_row in chunk
            .write_order()
            .into_iter()
            .map(|index| &chunk.rows[index])
        {
            let tenant = &tenants[chunk_row.slot];
            let output = &mut outputs[position(chunk_row.slot)].1;
            if output.error.is_some() {
                continue;
            }
            clock += 1;
            let columns = chunk.columns(chunk_row);
            let row = read::row(&columns, tenant.id);
            let target = Target {
                destination,
                tenant,
            };
            match write_row(&target, output, &row, chunk_row.origin, clock) {
                Ok(raw_bytes) => since_budget_check += raw_bytes,
                Err(error) => {
                    output.open.clear();
                    output.error = Some(error);
                }
            }
            if since_budget_check >= BUDGET_CHECK_BYTES {
                since_budget_check = 0;
                if let Err((position, error)) = keep_within_budget(&mut outputs) {
                    let output = &mut outputs[position].1;
                    output.open.clear();
                    output.error = Some(error);
                }
            }
            // Checked row by row, not chunk by chunk: a chunk of rows of many days would
            // otherwise open a file for each (hundreds of descriptors). One tenant's files
            // stay open while others' go on: the limit is the writer's.
            while outputs
                .iter()
                .map(|(_, output)| output.open.len())
                .sum::<usize>()
                > MAX_OPEN_FILES
            {
                finish_idlest(&mut outputs);
            }
        }
        if last_log.elapsed() >= PROGRESS_LOG_INTERVAL {
            let seconds = started.elapsed().as_secs_f64().max(0.001);
            for (slot, output) in &outputs {
                log::info!(
                    "export {}: {} rows so far ({:.0} rows/s)",
                    tenants[*slot].id,
                    output.rows,
                    output.rows as f64 / seconds
                );
            }
            last_log = Instant::now();
        }
    }
    for (_, output) in &mut outputs {
        while let Some(open) = output.open.pop() {
            output.finish(open);
        }
    }
    outputs
}

impl TenantOutput {
    pub fn failed(error: ExportError) -> TenantOutput {
        TenantOutput {
            error: Some(error),
            ..TenantOutput::default()
        }
    }

    fn finish(&mut self, open: OpenFile) {
        if self.error.is_some() {
            return;
        }
        match finish(open) {
            Ok(file) => {
                self.bytes += file.meta.bytes;
                self.files.push(file);
            }
            Err(error) => {
                self.open.clear();
                self.error = Some(error);
            }
        }
    }
}

/// `(measure(file), position, index)` of every open file across this writer's tenants.
fn open_files<K>(
    outputs: &[(usize, TenantOutput)],
    measure: fn(&OpenFile) -> K,
) -> impl Iterator<Item = (K, usize, usize)> {
    outputs
        .iter()
        .enumerate()
        .flat_map(move |(position, (_, output))| {
            output
                .open
                .iter()
                .enumerate()
                .map(move |(index, open)| (measure(open), position, index))
        })
}

/// Finishes the open file used least recently, across this writer's tenants.
fn finish_idlest(outputs: &mut [(usize, TenantOutput)]) {
    let idlest = open_files(outputs, |open| open.last_used).min();
    if let Some((_, position, index)) = idlest {
        let output = &mut outputs[position].1;
        let open = output.open.swap_remove(index);
        output.finish(open);
    }
}

/// Writes out what the open file holding most has in memory until the writer's open files
/// hold no more than [`WRITER_MEMORY_BUDGET`]; answers which tenant's file failed.
fn keep_within_budget(outputs: &mut [(usize, TenantOutput)]) -> Result<(), (usize, ExportError)> {
    let held = |outputs: &[(usize, TenantOutput)]| -> usize {
        open_files(outputs, |open| open.encoder.buffered())
            .map(|(held, _, _)| held)
            .sum()
    };
    while held(outputs) > WRITER_MEMORY_BUDGET {
        let fullest = open_files(outputs, |open| open.encoder.buffered()).max();
        let Some((_, position, index)) = fullest else {
            return Ok(());
        };
        outputs[position].1.open[index]
            .flush()
            .map_err(|error| (position, error))?;
    }
    Ok(())
}

/// Where a tenant's files go, and how.
struct Target<'a> {
    destination: Destination<'a>,
    tenant: &'a ExportTenant<'a>,
}

fn write_row(
    target: &Target<'_>,
    output: &mut TenantOutput,
    row: &Row<'_>,
    origin: Origin,
    clock: u64,
) -> Result<u64, ExportError> {
    let day = partition_day(row.created_at).ok_or_else(|| ExportError::BadCreatedAt {
        id: row.id.to_string(),
        created_at: row.created_at.to_string(),
    })?;
    let index = match output.open.iter().position(|open| open.day == day) {
        Some(index) => index,
        None => {
            output.open.push(open_file(target, day, row, origin)?);
            output.open.len() - 1
        }
    };
    let file = &mut output.open[index];
    file.last_used = clock;
    let pushed = file.encoder.push(row).map_err(ExportError::io(format!(
        "writing {}",
        file.staged.display()
    )))?;
    if pushed.payload_kept_as_string {
        output.payloads_kept_as_strings += 1;
    }
    file.meta.raw_bytes += pushed.raw_bytes;
    file.meta.row_count += 1;
    output.rows += 1;
    set_cursor(&mut file.meta.last, row.created_at, row.id);
    Ok(pushed.raw_bytes)
}

fn set_cursor(cursor: &mut Cursor, created_at: &str, id: &str) {
    cursor.created_at.clear();
    cursor.created_at.push_str(created_at);
    cursor.id.clear();
    cursor.id.push_str(id);
}

fn open_file(
    target: &Target<'_>,
    day: NaiveDate,
    first: &Row<'_>,
    origin: Origin,
) -> Result<OpenFile, ExportError> {
    let Destination {
        store,
        data_dir,
        site,
        format,
    } = target.destination;
    let relative_dir = partition_dir(target.tenant.dir, site, day);
    // A file there that the manifest does not list holds rows still queued (its batch's
    // commit was lost, or an older store was put back by hand): the same batch's file, taken
    // over by the rename, never a `-2` twin beside it.
    let listed = |name: &str| {
        let path = relative_dir.join(name).to_string_lossy().into_owned();
        manifest::is_listed(store, &path).unwrap_or(true)
    };
    let name = free_name(
        &data_dir.join(&relative_dir),
        first,
        origin,
        format.extension(),
        listed,
    );
    let relative = relative_dir.join(&name);
    let staging = staging_dir(data_dir).join(target.tenant.dir.as_str());
    ensure_dir(&staging)?;
    let staged = staging.join(format!("{}-{name}", day.format("%Y-%m-%d")));
    let creating = || ExportError::io(format!("creating {}", staged.display()));
    let file = File::create(&staged).map_err(creating())?;
    let encoder = format.encoder(Hashed::new(file)).map_err(creating())?;
    let cursor = Cursor {
        created_at: first.created_at.to_string(),
        id: first.id.to_string(),
    };
    Ok(OpenFile {
        encoder,
        staged,
        path: data_dir.join(&relative),
        meta: WrittenFile {
            path: relative.to_string_lossy().into_owned(),
            partition_day: format!("{:04}-{:02}-{:02}", day.year(), day.month(), day.day()),
            row_count: 0,
            first: cursor.clone(),
            last: cursor,
            bytes: 0,
            raw_bytes: 0,
            sha256: String::new(),
        },
        day,
        last_used: 0,
    })
}

impl OpenFile {
    fn flush(&mut self) -> Result<(), ExportError> {
        self.encoder.flush().map_err(ExportError::io(format!(
            "writing {}",
            self.staged.display()
        )))
    }
}

fn finish(open: OpenFile) -> Result<FinishedFile, ExportError> {
    let OpenFile {
        encoder,
        staged,
        path,
        mut meta,
        ..
    } = open;
    let file = encoder
        .finish()
        .map_err(ExportError::io(format!("writing {}", staged.display())))?;
    meta.bytes = file.written();
    meta.sha256 = file.sha256();
    Ok(FinishedFile { staged, path, meta })
}

fn ensure_dir(dir: &Path) -> Result<(), ExportError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(ExportError::io(format!("creating {}", dir.display())))
}

/// `batch-{created_at}-{hash}.json` from the file's first row and where it came from, so a
/// batch re-run after a crash writes the same names; a name a committed (`listed`) file
/// already has (the same row inserted again after its export) gets a `-2`, `-3`, … suffix.
fn free_name(
    dir: &Path,
    first: &Row<'_>,
    origin: Origin,
    extension: &str,
    listed: impl Fn(&str) -> bool,
) -> String {
    let base = file_stem(first, origin);
    let mut name = format!("{base}.{extension}");
    let mut suffix = 1;
    while dir.join(&name).exists() && listed(&name) {
        suffix += 1;
        name = format!("{base}-{suffix}.{extension}");
    }
    name
}

fn file_stem(first: &Row<'_>, origin: Origin) -> String {
    let mut hasher = Sha256::new();
    hasher.update(first.id.as_bytes());
    hasher.update([0]);
    match origin {
        Origin::Walk => hasher.update(b"walk"),
        Origin::Captured(seq) => hasher.update(seq.to_le_bytes()),
    }
    hasher.update([0]);
    hasher.update(first.created_at.as_bytes());
    let digest = hasher.finalize();
    let time: String = first
        .created_at
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | '.'))
        .collect();
    format!(
        "batch-{time}-{:02x}{:02x}{:02x}{:02x}",
        digest[0], digest[1], digest[2], digest[3]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> Row<'_> {
        Row {
            id,
            tenant_id: "acme",
            customer_id: "",
            channel: "",
            outcome: "",
            payload: "{}",
            created_at: "2026-03-30T02:00:00.123Z",
        }
    }

    #[test]
    fn file_names_are_deterministic_and_tell_rows_and_origins_apart() {
        let first = file_stem(&row("a"), Origin::Captured(7));
        assert!(first.starts_with("batch-20260330T020000123Z-"), "{first}");
        assert_eq!(first, file_stem(&row("a"), Origin::Captured(7)));
        assert_ne!(first, file_stem(&row("b"), Origin::Captured(7)));
        assert_ne!(first, file_stem(&row("a"), Origin::Captured(8)));
        assert_ne!(first, file_stem(&row("a"), Origin::Walk));
    }

    #[test]
    fn a_name_a_committed_file_has_gets_a_suffix_and_an_unlisted_one_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let name = free_name(dir.path(), &row("a"), Origin::Walk, "json", |_| true);
        std::fs::write(dir.path().join(&name), b"").unwrap();
        let second = free_name(dir.path(), &row("a"), Origin::Walk, "json", |_| true);
        assert_eq!(second, name.replace(".json", "-2.json"));
        let again = free_name(dir.path(), &row("a"), Origin::Walk, "json", |_| false);
        assert_eq!(again, name);
    }
}
