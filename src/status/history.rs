//! Run history and the occurrence ledger as both edges list them (`edgecron runs`,
//! `/api/v1/runs`, and their occurrence twins): newest first, one job or all.

use crate::jobs::Registry;
use crate::store::occurrences::{self, OccurrenceRecord};
use crate::store::runs::{self, RunRecord};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("no job named {0:?}")]
    UnknownJob(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The last `limit` runs, of `job` or of every job.
pub fn runs(
    store: &Store,
    jobs: &Registry,
    job: Option<&str>,
    limit: i64,
) -> Result<Vec<RunRecord>, HistoryError> {
    known(jobs, job)?;
    Ok(runs::list_runs(store, job, limit)?)
}

/// The last `limit` fire times recorded, of `job` or of every job.
pub fn occurrences(
    store: &Store,
    jobs: &Registry,
    job: Option<&str>,
    limit: i64,
) -> Result<Vec<OccurrenceRecord>, HistoryError> {
    known(jobs, job)?;
    Ok(occurrences::list_occurrences(store, job, limit)?)
}

fn known(jobs: &Registry, job: Option<&str>) -> Result<(), HistoryError> {
    match job {
        Some(name) if jobs.get(name).is_none() => Err(HistoryError::UnknownJob(name.to_string())),
        _ => Ok(()),
    }
}
