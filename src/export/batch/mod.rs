//! One export batch for every active tenant: the rows not yet exported, in the order they
//! were committed, at most `batch_size` per tenant, written as one NDJSON file per tenant and
//! UTC day and committed together with what they take from the capture.
//!
//! Exactly once, whatever instant the process dies at:
//! 1. `publish::recover` removes what an earlier batch wrote but did not commit;
//! 2. a first run reserves a step of its walk over the table (`store::capture`), so rows the
//!    walk will read are never also captured;
//! 3. the reader (`read`) takes the walk step's rows and then the captured rows, and the
//!    writers (`write`) write each tenant's files in the staging directory;
//! 4. `publish` makes them durable and renames them into their partitions;
//! 5. one transaction commits the manifest rows, the walk's progress, the deletion of the
//!    captured rows taken and each tenant's status and metric. Before it, no file counts and
//!    every row is still where it was (step 1 removes the files); after it, the rows taken are
//!    exactly those in the committed files.
//!
//! A tenant that fails (an unwritable directory, an unsafe id) has its files removed and its
//! rows left for the next run; the others commit. A row that cannot be exported as it is (its
//! `created_at` names no instant, its id is not text) is reported and stays captured until the
//! application corrects it.

pub(crate) mod publish;
mod read;
mod staging;
mod write;

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use rusqlite::types::Value;

pub use read::InvalidRow;
pub use staging::staging_dir;

use super::partition::{TenantDir, UnsafeTenantId};
use crate::export::format::FileFormat;
use crate::io_error::IoError;
use crate::store::capture::{self, Source};
use crate::store::manifest::{
    self as manifest, Metric, RunCommit, TenantCommit, TenantFailure, Upload, WrittenFile,
};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    UnsafeTenantId(#[from] UnsafeTenantId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("row {id}: created_at {created_at:?} is not an ISO-8601 time")]
    BadCreatedAt { id: String, created_at: String },
    #[error("storage: {0}")]
    Storage(String),
    #[error("the export's {0} thread stopped unexpectedly")]
    Stage(&'static str),
    /// The batch as a whole failed; each tenant reports it.
    #[error("{message}")]
    Batch { kind: &'static str, message: String },
}

/// The reader's SQL fails as the store's does.
impl From<rusqlite::Error> for ExportError {
    fn from(error: rusqlite::Error) -> ExportError {
        ExportError::Store(error.into())
    }
}

impl ExportError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExportError {
        let during = IoError::during(context);
        move |source| ExportError::Io(during(source))
    }

    /// A short machine-readable kind, for metric rows and alerts.
    pub fn kind(&self) -> &'static str {
        match self {
            ExportError::UnsafeTenantId(_) => "unsafe_tenant_id",
            ExportError::Store(_) => "store",
            ExportError::Io(IoError { source, .. })
                if source.raw_os_error() == Some(libc::ENOSPC) =>
            {
                "disk_full"
            }
            ExportError::Io(_) => "io",
            ExportError::BadCreatedAt { .. } => "bad_row",
            ExportError::Storage(_) => "storage",
            ExportError::Stage(_) => "internal",
            ExportError::Batch { kind, .. } => kind,
        }
    }

    /// This error as every tenant of a batch that failed as a whole reports it.
    fn for_batch(&self) -> ExportError {
        ExportError::Batch {
            kind: self.kind(),
            message: self.to_string(),
        }
    }
}

/// What a batch needs besides the tenants.
pub struct BatchSettings<'a> {
    pub store: &'a Store,
    pub data_dir: &'a Path,
    /// The site whose partition the files go into (SPEC section 9).
    pub site: &'a str,
    pub batch_size: usize,
    pub upload: Upload,
    pub format: FileFormat,
    /// Threads encoding and writing files (tenants are spread over them).
    pub writers: usize,
    /// The store text of the run's start, stamped on manifest and metric rows.
    pub now_text: &'a str,
}

/// A tenant whose rows are exported, its id checked safe as a path.
pub struct ExportTenant<'a> {
    pub id: &'a str,
    pub dir: TenantDir<'a>,
}

#[derive(Debug, Default)]
pub struct BatchReport {
    pub files: Vec<WrittenFile>,
    pub rows: u64,
    pub bytes: u64,
    /// Rows whose payload was not JSON a reader takes, and was kept as a string.
    pub payloads_kept_as_strings: u64,
    /// Rows that could not be exported as they are (the first ones), and how many in all.
    pub invalid: Vec<InvalidRow>,
    pub invalid_count: u64,
}

/// Channel depth between the reader and each writer, in chunks.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Exports one batch for the given (active) tenants; answers in their order.
pub fn export_tenants(
    settings: &BatchSettings<'_>,
    tenant_ids: &[&str],
    should_stop: &(dyn Fn() -> bool + Sync),
) -> Vec<Result<BatchReport, ExportError>> {
    let started = Instant::now();
    let mut results: Vec<Option<Result<BatchReport, ExportError>>> =
        tenant_ids.iter().map(|_| None).collect();
    let mut tenants = Vec::new();
    let mut indexes = Vec::new();
    for (index, tenant_id) in tenant_ids.iter().enumerate() {
        match TenantDir::new(tenant_id) {
            Ok(dir) => {
                tenants.push(ExportTenant { id: tenant_id, dir });
                indexes.push(index);
            }
            Err(error) => results[index] = Some(Err(error.into())),
        }
    }
    let outcome = publish::recover(settings.store, settings.data_dir)
        .and_then(|()| write_batch(settings, &tenants, should_stop, started));
    match outcome {
        Ok(outcomes) => {
            for (index, outcome) in indexes.iter().zip(outcomes) {
                results[*index] = Some(outcome);
            }
        }
        Err(error) => {
            for index in &indexes {
                results[*index] = Some(Err(error.for_batch()));
            }
        }
    }
    let results: Vec<Result<BatchReport, ExportError>> = results
        .into_iter()
        .map(|result| result.unwrap_or(Err(ExportError::Stage("writer"))))
        .collect();
    record(settings, tenant_ids, &results, started);
    // What a failed tenant (or a failed commit) left in its partitions goes now.
    if let Err(error) = publish::recover(settings.store, settings.data_dir) {
        log::warn!("export: cleaning up after the batch: {error}; the next run does it");
    }
    results
}

/// Reads, writes and publishes the batch, then commits it; answers one outcome per tenant.
fn write_batch(
    settings: &BatchSettings<'_>,
    tenants: &[ExportTenant<'_>],
    should_stop: &(dyn Fn() -> bool + Sync),
    started: Instant,
) -> Result<Vec<Result<BatchReport, ExportError>>, ExportError> {
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    // A first run's walk reads up to every tenant's batch (and some more, so a stretch of
    // inactive tenants' rows does not stall it), reserving its way on piece by piece.
    let walk_budget = settings
        .batch_size
        .saturating_mul(tenants.len())
        .max(capture::RESERVE_PIECE);
    let walk = capture::begin_walk(settings.store, Source::Interactions, "export", walk_budget)?;
    let slots: HashMap<&str, usize> = tenants
        .iter()
        .enumerate()
        .map(|(slot, tenant)| (tenant.id, slot))
        .collect();
    let writer_count = settings.writers.clamp(1, tenants.len());
    let reading = read::Reading {
        store: settings.store,
        slots: &slots,
        batch_size: settings.batch_size,
        walk: walk.as_ref(),
        walk_budget,
    };
    // The reader and writer threads log for the run that started them.
    let run = crate::logging::current_run();
    let (read_outcome, outputs) = std::thread::scope(|scope| {
        let mut senders = Vec::new();
        let mut handles = Vec::new();
        for writer in 0..writer_count {
            let (sender, chunks) = sync_channel(CHUNKS_IN_FLIGHT);
            senders.push(sender);
            handles.push(scope.spawn(move || {
                let _run = crate::logging::continue_run(run);
                let destination = write::Destination {
                    store: settings.store,
                    data_dir: settings.data_dir,
                    site: settings.site,
                    format: settings.format,
                };
                write::write_files(destination, tenants, writer, writer_count, chunks)
            }));
        }
        let read_outcome = read::read(&reading, &senders, should_stop);
        drop(senders);
        let mut outputs: Vec<Option<write::TenantOutput>> = tenants.iter().map(|_| None).collect();
        for handle in handles {
            // A writer that panicked leaves its tenants without an output: they fail below.
            if let Ok(written) = handle.join() {
                for (slot, output) in written {
                    outputs[slot] = Some(output);
                }
            }
        }
        (read_outcome, outputs)
    });
    let mut read_outcome = read_outcome?;
    let written_in = started.elapsed();
    let mut reports = Vec::new();
    let mut written: publish::Written = Vec::new();
    for (slot, output) in outputs.into_iter().enumerate() {
        let output =
            output.unwrap_or_else(|| write::TenantOutput::failed(ExportError::Stage("writer")));
        reports.push(BatchReport {
            files: Vec::new(),
            rows: output.rows,
            bytes: output.bytes,
            payloads_kept_as_strings: output.payloads_kept_as_strings,
            invalid: std::mem::take(&mut read_outcome.invalid[slot]),
            invalid_count: read_outcome.invalid_count[slot],
        });
        written.push((slot, output.error.map_or(Ok(output.files), Err)));
    }
    let tenant_ids: Vec<&str> = tenants.iter().map(|tenant| tenant.id).collect();
    publish::publish(settings.store, &tenant_ids, settings.now_text, &mut written)?;
    log::info!(
        "export: {} tenants read and written in {:.2}s, made durable and visible in {:.2}s",
        tenants.len(),
        written_in.as_secs_f64(),
        (started.elapsed() - written_in).as_secs_f64()
    );
    let outcomes: Vec<Result<BatchReport, ExportError>> = reports
        .into_iter()
        .zip(written)
        .map(|(mut report, (_, files))| {
            report.files = files?.into_iter().map(|file| file.meta).collect();
            Ok(report)
        })
        .collect();
    commit(settings, tenants, &read_outcome, &outcomes, started)?;
    Ok(outcomes)
}

/// Commits the batch: the succeeded tenants' files, the walk's progress (capturing the walk
/// rows no tenant took) and the deletion of the captured rows taken, in one transaction.
fn commit(
    settings: &BatchSettings<'_>,
    tenants: &[ExportTenant<'_>],
    read_outcome: &read::ReadOutcome,
    outcomes: &[Result<BatchReport, ExportError>],
    started: Instant,
) -> Result<(), ExportError> {
    let succeeded: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
    let duration_ms = started.elapsed().as_millis() as u64;
    let mut tenant_commits = Vec::new();
    for (slot, outcome) in outcomes.iter().enumerate() {
        let Ok(report) = outcome else {
            continue;
        };
        tenant_commits.push(TenantCommit {
            tenant_id: tenants[slot].id,
            files: &report.files,
            invalid_rows: report.invalid_count,
            metric: Metric {
                tenant_id: tenants[slot].id,
                rows: report.rows,
                bytes: report.bytes,
                duration_ms,
                error: None,
                at: settings.now_text,
                format: settings.format.name(),
            },
        });
    }
    let walk = read_outcome.walked.clone().zip(read_outcome.walk.clone());
    // A failed tenant's walk rows are all captured by the commit; the others' deferred ones
    // are captured as they are.
    let deferred: Vec<(Value, Value)> = read_outcome
        .deferred
        .iter()
        .filter(|(slot, _, _)| succeeded.get(*slot).copied().unwrap_or(true))
        .map(|(_, tenant_id, id)| (tenant_id.clone(), id.clone()))
        .collect();
    let failed: Vec<&str> = tenants
        .iter()
        .zip(&succeeded)
        .filter(|(_, succeeded)| !**succeeded)
        .map(|(tenant, _)| tenant.id)
        .collect();
    let taken = taken_ranges(&read_outcome.captured, &succeeded);
    manifest::commit_run(
        settings.store,
        &RunCommit {
            tenants: tenant_commits,
            upload: settings.upload,
            walk,
            deferred,
            failed,
            taken,
            triggers_seen_at: settings.now_text,
        },
    )?;
    Ok(())
}

/// The captured rows taken (sent to a tenant that committed, or gone from the table), as
/// inclusive `seq` ranges: every row between a range's ends was read and taken.
fn taken_ranges(captured: &[(i64, read::Fate)], succeeded: &[bool]) -> Vec<(i64, i64)> {
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    let mut extending = false;
    for (seq, fate) in captured {
        let taken = match fate {
            read::Fate::Sent(slot) => succeeded[*slot],
            read::Fate::Gone => true,
            read::Fate::Kept => false,
        };
        match ranges.last_mut() {
            Some(range) if taken && extending => range.1 = *seq,
            _ if taken => ranges.push((*seq, *seq)),
            _ => {}
        }
        extending = taken;
    }
    ranges
}

/// Logs each tenant's outcome, and records the failures' status and metric.
fn record(
    settings: &BatchSettings<'_>,
    tenant_ids: &[&str],
    results: &[Result<BatchReport, ExportError>],
    started: Instant,
) {
    let seconds = started.elapsed().as_secs_f64().max(0.001);
    for (tenant_id, result) in tenant_ids.iter().zip(results) {
        match result {
            Ok(report) if report.rows > 0 => log::info!(
                "export {tenant_id}: {} rows in {} files, {:.1} MB ({:.0} rows/s over the run)",
                report.rows,
                report.files.len(),
                report.bytes as f64 / 1e6,
                report.rows as f64 / seconds
            ),
            Ok(_) => {}
            Err(error) => {
                let message = error.to_string();
                let failure = TenantFailure {
                    metric: Metric {
                        tenant_id,
                        rows: 0,
                        bytes: 0,
                        duration_ms: started.elapsed().as_millis() as u64,
                        error: Some((error.kind(), &message)),
                        at: settings.now_text,
                        format: settings.format.name(),
                    },
                    message: &message,
                };
                if let Err(store_error) = manifest::mark_failed(settings.store, &failure) {
                    log::error!("export {tenant_id}: recording the failure: {store_error}");
                }
            }
        }
        if let Ok(report) = result
            && report.invalid_count > 0
        {
            log::warn!(
                "export {tenant_id}: {} rows cannot be exported as they are (first: {} {}); they wait until corrected",
                report.invalid_count,
                report.invalid[0].id,
                report.invalid[0].reason
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::read::Fate;
    use super::*;

    #[test]
    fn taken_ranges_skip_kept_rows_and_failed_tenants() {
        let captured = [
            (1, Fate::Sent(0)),
            (2, Fate::Gone),
            (4, Fate::Sent(0)),
            (5, Fate::Kept),
            (6, Fate::Sent(1)),
            (7, Fate::Sent(0)),
            (9, Fate::Sent(0)),
        ];
        assert_eq!(taken_ranges(&captured, &[true, false]), [(1, 4), (7, 9)]);
        assert_eq!(taken_ranges(&captured, &[true, true]), [(1, 4), (6, 9)]);
        assert_eq!(taken_ranges(&captured, &[false, false]), [(2, 2)]);
    }
}
