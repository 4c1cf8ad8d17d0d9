//! What `/metrics` and the status page read from the store: lifetime run counters, duration
//! and lag histograms, runs in progress and occurrence counts (each family read in one
//! transaction), and the last day's runs and occurrences for the status page's strips.

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::occurrences::Outcome;
use super::runs::RunStatus;
use super::{Store, StoreError};
use crate::clock::{from_store_text, to_store_text};

/// When a run started and how it stands, for the status page's strip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    pub id: i64,
    pub job: String,
    pub started_at: DateTime<Utc>,
    pub status: RunStatus,
}

/// An occurrence with the status of the run that served it, for the status page's strip.
#[derive(Debug, Clone)]
pub struct OccurrenceCell {
    pub job: String,
    pub scheduled_for: DateTime<Utc>,
    pub outcome: Outcome,
    pub run_id: Option<i64>,
    pub run_status: Option<RunStatus>,
}

/// Lifetime counters of a job's runs that ended with one status (kept by a trigger).
#[derive(Debug, Clone, PartialEq)]
pub struct RunStats {
    pub job: String,
    pub status: RunStatus,
    pub runs: i64,
    pub duration_seconds_sum: f64,
    pub rows_processed: i64,
    pub last_finished_at: Option<String>,
}

/// A job's duration histogram: runs per bucket (not cumulative), buckets in ascending order.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationHistogram {
    pub job: String,
    pub buckets: Vec<(String, i64)>,
}

/// What `/metrics` reports of runs, read together.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMetrics {
    pub stats: Vec<RunStats>,
    pub histograms: Vec<DurationHistogram>,
    pub running: Vec<(String, i64)>,
}

/// What `/metrics` reports of the occurrence ledger and schedule lag, read together.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OccurrenceMetrics {
    /// `(job, outcome, occurrences)`, lifetime.
    pub counts: Vec<(String, String, i64)>,
    /// Scheduled runs per lag bucket, with their count and sum of seconds.
    pub lag: Vec<LagHistogram>,
}

/// A job's schedule-lag histogram: runs per bucket (not cumulative), ascending.
#[derive(Debug, Clone, PartialEq)]
pub struct LagHistogram {
    pub job: String,
    pub buckets: Vec<(String, i64)>,
    pub seconds_sum: f64,
}

fn run_stats(conn: &Connection) -> rusqlite::Result<Vec<RunStats>> {
    let mut statement = conn.prepare(
        "SELECT job, status, runs, duration_seconds_sum, rows_processed, last_finished_at
           FROM job_run_stats ORDER BY job, status",
    )?;
    statement
        .query_map([], |row| {
            Ok(RunStats {
                job: row.get(0)?,
                status: row.get(1)?,
                runs: row.get(2)?,
                duration_seconds_sum: row.get(3)?,
                rows_processed: row.get(4)?,
                last_finished_at: row.get(5)?,
            })
        })?
        .collect()
}

/// Every job's histogram, with every bucket (zero where no run fell).
fn duration_histograms(
    conn: &Connection,
    jobs: &[&str],
) -> rusqlite::Result<Vec<DurationHistogram>> {
    let mut statement = conn.prepare_cached(
        "SELECT d.le, COALESCE(b.runs, 0) FROM job_run_duration_bounds d
           LEFT JOIN job_run_duration_buckets b ON b.le = d.le AND b.job = ?1
          ORDER BY d.seconds",
    )?;
    jobs.iter()
        .map(|job| {
            let buckets = statement
                .query_map([job], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(DurationHistogram {
                job: job.to_string(),
                buckets,
            })
        })
        .collect()
}

/// Runs in progress, per job.
fn running_counts(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut statement =
        conn.prepare("SELECT job, COUNT(*) FROM job_runs WHERE status = 'running' GROUP BY job")?;
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

fn occurrence_counts(conn: &Connection) -> rusqlite::Result<Vec<(String, String, i64)>> {
    let mut statement = conn.prepare(
        "SELECT job, outcome, occurrences FROM schedule_occurrence_stats ORDER BY job, outcome",
    )?;
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect()
}

/// Every job's lag histogram, with every bucket (zero where no run fell).
fn lag_histograms(conn: &Connection, jobs: &[&str]) -> rusqlite::Result<Vec<LagHistogram>> {
    let mut buckets = conn.prepare_cached(
        "SELECT d.le, COALESCE(b.runs, 0) FROM schedule_lag_bounds d
           LEFT JOIN schedule_lag_buckets b ON b.le = d.le AND b.job = ?1
          ORDER BY d.seconds",
    )?;
    let mut sum = conn.prepare_cached(
        "SELECT COALESCE((SELECT seconds_sum FROM schedule_lag_stats WHERE job = ?1), 0)",
    )?;
    jobs.iter()
        .map(|job| {
            Ok(LagHistogram {
                job: job.to_string(),
                buckets: buckets
                    .query_map([job], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()?,
                seconds_sum: sum.query_row([job], |row| row.get(0))?,
            })
        })
        .collect()
}

/// Run counters, histograms and runs in progress, read in one transaction so a run that
/// ends meanwhile is in all of them or in none (a histogram's sum and count agree).
pub fn run_metrics(store: &Store, jobs: &[&str]) -> Result<RunMetrics, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction()?;
    let metrics = RunMetrics {
        stats: run_stats(&tx)?,
        histograms: duration_histograms(&tx, jobs)?,
        running: running_counts(&tx)?,
    };
    tx.commit()?;
    Ok(metrics)
}

/// Occurrence counts and lag histograms, read in one transaction.
pub fn occurrence_metrics(store: &Store, jobs: &[&str]) -> Result<OccurrenceMetrics, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction()?;
    let metrics = OccurrenceMetrics {
        counts: occurrence_counts(&tx)?,
        lag: lag_histograms(&tx, jobs)?,
    };
    tx.commit()?;
    Ok(metrics)
}

/// Every occurrence since `since`, oldest first, with the status of the run that served it.
pub fn occurrence_cells(
    store: &Store,
    since: DateTime<Utc>,
) -> Result<Vec<OccurrenceCell>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(
        "SELECT o.job, o.scheduled_for, o.outcome, o.run_id, r.status
           FROM schedule_occurrences o LEFT JOIN job_runs r ON r.id = o.run_id
          WHERE o.scheduled_for >= ?1 ORDER BY o.scheduled_for",
    )?;
    let cells = statement
        .query_map([to_store_text(since)], |row| {
            let time: String = row.get(1)?;
            Ok(OccurrenceCell {
                job: row.get(0)?,
                // The scheduler writes canonical times; an unreadable one sorts first.
                scheduled_for: from_store_text(&time).unwrap_or_default(),
                outcome: row.get(2)?,
                run_id: row.get(3)?,
                run_status: row.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(cells)
}

/// Every run started since `since`, oldest first.
pub fn runs_since(store: &Store, since: DateTime<Utc>) -> Result<Vec<RunStart>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(
        "SELECT id, job, started_at, status FROM job_runs WHERE started_at >= ?1 ORDER BY id",
    )?;
    let runs = statement
        .query_map([to_store_text(since)], |row| {
            let started: String = row.get(2)?;
            Ok(RunStart {
                id: row.get(0)?,
                job: row.get(1)?,
                started_at: from_store_text(&started).unwrap_or_default(),
                status: row.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(runs)
}
