//! What `GET /metrics` reports, read in one place: the runs' lifetime counters and
//! histograms, the ledger's occurrence counts and schedule lag, the alert conditions in force,
//! the export and SIEM backlogs and the store's size. The HTTP layer only renders it.
//!
//! Nothing here counts a table that grows with the application's rows: the run and schedule
//! figures are counters kept as runs end, the backlogs the counts noted as their consumers'
//! runs end (and at serve's start).

use std::path::Path;

use super::Sources;
use crate::siem::Siem;
use crate::store::StoreError;
use crate::store::alerts;
use crate::store::capture::{self, Source};
use crate::store::manifest;
use crate::store::siem_ledger;
use crate::store::stats;
pub use crate::store::stats::{DurationHistogram, LagHistogram, RunStats};

/// Everything one scrape reports.
pub struct Snapshot {
    pub jobs: Vec<&'static str>,
    pub stats: Vec<RunStats>,
    pub histograms: Vec<DurationHistogram>,
    pub running: Vec<(String, i64)>,
    pub upload_queue: (u64, u64),
    /// Interaction rows not yet exported (captured, or still to be walked), inactive
    /// tenants' included, and rows the last runs could not export as they are.
    pub export_backlog: u64,
    /// What each tenant had waiting when the last export run ended.
    pub export_backlog_by_tenant: Vec<(String, u64)>,
    pub export_invalid_rows: u64,
    /// `(table, rows not yet taken, a gap being recovered)` of each capture queue, whether or
    /// not its consumer is configured.
    pub capture: Vec<(&'static str, u64, bool)>,
    /// `(backend, rows not yet shipped, runs in a row that delivered nothing)` when a SIEM
    /// is configured.
    pub siem: Option<(&'static str, u64, i64)>,
    pub store_bytes: u64,
    pub wal_bytes: u64,
    /// `(job, outcome, occurrences)`, lifetime.
    pub occurrences: Vec<(String, String, i64)>,
    pub lag: Vec<LagHistogram>,
    /// `(job, condition kind)` of each alert condition in force.
    pub conditions: Vec<(String, String)>,
    pub alerts_pending: i64,
    /// This process's site, once bound.
    pub site: Option<&'static str>,
}

pub fn snapshot(from: Sources) -> Result<Snapshot, StoreError> {
    let store = from.store;
    let jobs = from.jobs.names();
    let siem = match &from.config.siem {
        Siem::On(settings) => {
            let backend = settings.backend.name();
            let backlog = capture::noted_backlog(store, Source::Audit)?.rows;
            Some((backend, backlog, siem_ledger::stalled_runs(store, backend)?))
        }
        Siem::Off(_) => None,
    };
    let file_size = |path: &Path| std::fs::metadata(path).map_or(0, |meta| meta.len());
    let mut wal = store.path().as_os_str().to_owned();
    wal.push("-wal");
    let runs = stats::run_metrics(store, &jobs)?;
    let occurrences = stats::occurrence_metrics(store, &jobs)?;
    let conditions = alerts::conditions(store)?
        .into_iter()
        .map(|condition| (condition.job, condition.kind))
        .collect();
    Ok(Snapshot {
        occurrences: occurrences.counts,
        lag: occurrences.lag,
        conditions,
        alerts_pending: alerts::pending(store)?,
        stats: runs.stats,
        histograms: runs.histograms,
        running: runs.running,
        upload_queue: manifest::upload_backlog(store)?,
        export_backlog: capture::noted_backlog(store, Source::Interactions)?.rows,
        export_backlog_by_tenant: manifest::backlog_by_tenant(store)?,
        capture: [Source::Interactions, Source::Audit]
            .into_iter()
            .map(|source| {
                let noted = capture::noted_backlog(store, source)?;
                Ok((source.table(), noted.rows, noted.gap))
            })
            .collect::<Result<_, StoreError>>()?,
        export_invalid_rows: manifest::invalid_rows(store)?,
        siem,
        site: crate::site::current(),
        store_bytes: file_size(store.path()),
        wal_bytes: file_size(Path::new(&wal)),
        jobs,
    })
}
