//! The occurrence ledger (every fire time the scheduler or an expected outside schedule was
//! due, and what became of it), the scheduler's progress (the last fire time it handled per
//! job) and the watcher's: the SQL of all three, each ledger write in the transaction that
//! records the progress it stands for.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::{Store, StoreError, stored_by_name};
use crate::clock::{from_store_text, to_store_text};

/// What became of one fire time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// A run started for it (its run id and lag are recorded).
    Ran,
    /// It passed while the process was down or suspended: served by a catch-up run, or skipped.
    Coalesced,
    /// The job was still running.
    Refused,
    /// `CRON_ENABLED=false`.
    Paused,
    /// An expected outside trigger never came within the grace.
    Missed,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Ran,
        Outcome::Coalesced,
        Outcome::Refused,
        Outcome::Paused,
        Outcome::Missed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ran => "ran",
            Outcome::Coalesced => "coalesced",
            Outcome::Refused => "refused",
            Outcome::Paused => "paused",
            Outcome::Missed => "missed",
        }
    }
}

/// Whose due time an occurrence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The built-in scheduler's fire times.
    Schedule,
    /// `EDGECRON_EXPECT_<JOB>`: when an outside scheduler was expected to trigger the job.
    Expected,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Schedule, Source::Expected];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Schedule => "schedule",
            Source::Expected => "expected",
        }
    }
}

stored_by_name!(Outcome, Source);

/// Occurrences kept per job and source; older ones are pruned as they are written.
const KEEP_OCCURRENCES: i64 = 10_000;

/// One ledger row, as `edgecron occurrences --json` and `/api/v1/occurrences` show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OccurrenceRecord {
    pub job: String,
    pub scheduled_for: String,
    pub outcome: Outcome,
    pub run_id: Option<i64>,
    pub lag_ms: Option<i64>,
    pub source: Source,
}

/// One fire time to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewOccurrence {
    pub scheduled_for: DateTime<Utc>,
    pub outcome: Outcome,
    pub run_id: Option<i64>,
    pub lag_ms: Option<i64>,
}

impl NewOccurrence {
    pub fn unserved(scheduled_for: DateTime<Utc>, outcome: Outcome) -> NewOccurrence {
        NewOccurrence {
            scheduled_for,
            outcome,
            run_id: None,
            lag_ms: None,
        }
    }
}

/// Fire times handled together, and how far that takes the job's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OccurrenceBatch {
    /// Oldest first. For a batch a run serves, each outcome is `ran` or `coalesced`, and the
    /// run's id and lag are filled in as it starts.
    pub occurrences: Vec<(DateTime<Utc>, Outcome)>,
    /// Fire times before these, too many to record one by one (a per-second job down for a
    /// day): counted in the totals, not listed.
    pub uncounted: u64,
    pub uncounted_outcome: Outcome,
    /// The last fire time handled once this batch is written.
    pub handled_through: DateTime<Utc>,
    /// How long after its fire time each became due (the job's spread offset): lags count
    /// from there.
    pub offset: chrono::Duration,
}

/// Milliseconds from `due` to `started`.
pub fn lag_ms(due: DateTime<Utc>, started: DateTime<Utc>) -> i64 {
    (started - due).num_milliseconds()
}

/// Writes `rows` (a row already recorded is left as it is) and bumps the lifetime counts.
pub(super) fn record_in(
    conn: &Connection,
    job: &str,
    source: Source,
    rows: &[NewOccurrence],
    uncounted: (Outcome, u64),
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let now_text = to_store_text(now);
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO schedule_occurrences
             (job, source, scheduled_for, outcome, run_id, lag_ms, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut counts = [0u64; Outcome::ALL.len()];
    for row in rows {
        let inserted = insert.execute((
            job,
            source.as_str(),
            to_store_text(row.scheduled_for),
            row.outcome.as_str(),
            row.run_id,
            row.lag_ms,
            &now_text,
        ))?;
        if inserted == 1 {
            counts[row.outcome as usize] += 1;
        }
    }
    counts[uncounted.0 as usize] += uncounted.1;
    let mut bump = conn.prepare_cached(
        "INSERT INTO schedule_occurrence_stats (job, outcome, occurrences) VALUES (?1, ?2, ?3)
         ON CONFLICT (job, outcome) DO UPDATE SET occurrences = occurrences + excluded.occurrences",
    )?;
    for (outcome, count) in Outcome::ALL.iter().zip(counts) {
        if count > 0 {
            bump.execute((job, outcome.as_str(), count as i64))?;
        }
    }
    conn.prepare_cached(
        "DELETE FROM schedule_occurrences WHERE job = ?1 AND source = ?2 AND id < COALESCE(
             (SELECT id FROM schedule_occurrences WHERE job = ?1 AND source = ?2
              ORDER BY id DESC LIMIT 1 OFFSET ?3), -1)",
    )?
    .execute((job, source.as_str(), KEEP_OCCURRENCES - 1))?;
    Ok(())
}

/// Moves the scheduler's progress forward to `fire` (never back: runs of one pass may
/// start out of order).
pub(super) fn advance_in(
    conn: &Connection,
    job: &str,
    fire: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO schedule_state (job, last_fire_at) VALUES (?1, ?2)
         ON CONFLICT (job) DO UPDATE SET last_fire_at = MAX(last_fire_at, excluded.last_fire_at)",
    )?
    .execute((job, to_store_text(fire)))?;
    Ok(())
}

/// Adds a scheduled run's lag to the job's lag histogram.
pub(super) fn record_lag_in(conn: &Connection, job: &str, lag_ms: i64) -> rusqlite::Result<()> {
    let seconds = lag_ms.max(0) as f64 / 1000.0;
    conn.prepare_cached(
        "INSERT INTO schedule_lag_buckets (job, le, runs)
         SELECT ?1, le, 1 FROM schedule_lag_bounds WHERE seconds >= ?2 ORDER BY seconds LIMIT 1
         ON CONFLICT (job, le) DO UPDATE SET runs = runs + 1",
    )?
    .execute((job, seconds))?;
    conn.prepare_cached(
        "INSERT INTO schedule_lag_stats (job, runs, seconds_sum) VALUES (?1, 1, ?2)
         ON CONFLICT (job) DO UPDATE SET runs = runs + 1, seconds_sum = seconds_sum + excluded.seconds_sum",
    )?
    .execute((job, seconds))?;
    Ok(())
}

/// The rows of a batch served by run `run_id` that started at `started`.
pub fn served_rows(
    batch: &OccurrenceBatch,
    run_id: Option<i64>,
    started: DateTime<Utc>,
) -> Vec<NewOccurrence> {
    batch
        .occurrences
        .iter()
        .map(|&(scheduled_for, outcome)| NewOccurrence {
            scheduled_for,
            outcome,
            run_id,
            lag_ms: run_id.map(|_| lag_ms(scheduled_for + batch.offset, started)),
        })
        .collect()
}

/// Whether the scheduler's fire time `scheduled_for` of `job` is in the ledger already: the
/// claim a scheduled run's start checks in its own transaction, so each fire time runs once
/// per store whichever process reaches it first.
pub(super) fn served_in(
    conn: &Connection,
    job: &str,
    scheduled_for: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM schedule_occurrences
                         WHERE job = ?1 AND source = 'schedule' AND scheduled_for = ?2)",
    )?
    .query_row((job, to_store_text(scheduled_for)), |row| row.get(0))
}

/// Records a scheduled run's start: the run's fire time and lag, the fire times it serves,
/// and the progress they stand for. Called inside the transaction that inserts the run.
pub(super) fn start_scheduled_in(
    conn: &Connection,
    job: &str,
    run_id: i64,
    scheduled_for: DateTime<Utc>,
    batch: &OccurrenceBatch,
    started: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let lag = lag_ms(scheduled_for + batch.offset, started);
    conn.execute(
        "UPDATE job_runs SET scheduled_for = ?2, lag_ms = ?3 WHERE id = ?1",
        (run_id, to_store_text(scheduled_for), lag),
    )?;
    record_lag_in(conn, job, lag)?;
    record_in(
        conn,
        job,
        Source::Schedule,
        &served_rows(batch, Some(run_id), started),
        (batch.uncounted_outcome, batch.uncounted),
        started,
    )?;
    advance_in(conn, job, batch.handled_through)
}

fn occurrence_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<OccurrenceRecord> {
    Ok(OccurrenceRecord {
        job: row.get(0)?,
        scheduled_for: row.get(1)?,
        outcome: row.get(2)?,
        run_id: row.get(3)?,
        lag_ms: row.get(4)?,
        source: row.get(5)?,
    })
}

/// Records fire times no run serves (skipped, paused, refused, missed) and the progress
/// they stand for, in one transaction.
pub fn record_occurrences(
    store: &Store,
    job: &str,
    source: Source,
    rows: &[NewOccurrence],
    uncounted: (Outcome, u64),
    progress: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    record_occurrences_then(store, job, source, rows, uncounted, progress, now, |_| {
        Ok(())
    })
}

/// As [`Store::record_occurrences`], with `then` run in the same transaction (the
/// condition a missed occurrence opens is committed with it). For `Source::Expected` the
/// progress is the watcher's.
#[allow(clippy::too_many_arguments)]
pub fn record_occurrences_then<T>(
    store: &Store,
    job: &str,
    source: Source,
    rows: &[NewOccurrence],
    uncounted: (Outcome, u64),
    progress: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    then: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    record_in(&tx, job, source, rows, uncounted, now)?;
    if let Some(progress) = progress {
        match source {
            Source::Schedule => advance_in(&tx, job, progress)?,
            Source::Expected => set_checked_in(&tx, job, source, progress)?,
        }
    }
    let value = then(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// The ledger, newest fire time first.
pub fn list_occurrences(
    store: &Store,
    job: Option<&str>,
    limit: i64,
) -> Result<Vec<OccurrenceRecord>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(
        "SELECT job, scheduled_for, outcome, run_id, lag_ms, source FROM schedule_occurrences
          WHERE ?1 IS NULL OR job = ?1 ORDER BY scheduled_for DESC, id DESC LIMIT ?2",
    )?;
    let rows = statement
        .query_map((job, limit), occurrence_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The last fire time the scheduler handled for `job`.
pub fn last_fire(store: &Store, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let text: Option<String> = store
        .conn()?
        .query_row(
            "SELECT last_fire_at FROM schedule_state WHERE job = ?1",
            [job],
            |row| row.get(0),
        )
        .optional()?;
    Ok(text.as_deref().and_then(from_store_text))
}

/// Sets the scheduler's progress to `fire`, even backwards (a first start, a clock that
/// was set back).
pub fn set_last_fire(store: &Store, job: &str, fire: DateTime<Utc>) -> Result<(), StoreError> {
    store.conn()?.execute(
        "INSERT INTO schedule_state (job, last_fire_at) VALUES (?1, ?2)
         ON CONFLICT (job) DO UPDATE SET last_fire_at = excluded.last_fire_at",
        (job, to_store_text(fire)),
    )?;
    Ok(())
}

/// Records the fire times a scheduled run would have served when the job was still
/// running: its own as `refused`, those it would have caught up as `coalesced`.
pub fn record_refused(
    store: &Store,
    job: &str,
    batch: &OccurrenceBatch,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let rows: Vec<NewOccurrence> = batch
        .occurrences
        .iter()
        .map(|&(time, outcome)| {
            let outcome = match outcome {
                Outcome::Ran => Outcome::Refused,
                other => other,
            };
            NewOccurrence::unserved(time, outcome)
        })
        .collect();
    record_occurrences(
        store,
        job,
        Source::Schedule,
        &rows,
        (batch.uncounted_outcome, batch.uncounted),
        Some(batch.handled_through),
        now,
    )
}

/// How far the watcher has judged `job`'s due times from `source`.
pub fn checked_through(
    store: &Store,
    job: &str,
    source: Source,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let text: Option<String> = store
        .conn()?
        .query_row(
            "SELECT checked_through FROM schedule_watch WHERE job = ?1 AND source = ?2",
            (job, source.as_str()),
            |row| row.get(0),
        )
        .optional()?;
    Ok(text.as_deref().and_then(from_store_text))
}

pub fn set_checked_through(
    store: &Store,
    job: &str,
    source: Source,
    through: DateTime<Utc>,
) -> Result<(), StoreError> {
    set_checked_in(&*store.conn()?, job, source, through)?;
    Ok(())
}

/// The occurrence recorded for one of `job`'s fire times, if any: `(outcome, lag_ms)`.
pub fn occurrence_at(
    store: &Store,
    job: &str,
    source: Source,
    scheduled_for: DateTime<Utc>,
) -> Result<Option<(String, Option<i64>)>, StoreError> {
    Ok(store
        .conn()?
        .query_row(
            "SELECT outcome, lag_ms FROM schedule_occurrences
              WHERE job = ?1 AND source = ?2 AND scheduled_for = ?3",
            (job, source.as_str(), to_store_text(scheduled_for)),
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?)
}

/// The first run of `job` (any trigger) that started within `[from, to]`:
/// `(run id, start)`.
pub fn first_run_started_between(
    store: &Store,
    job: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Option<(i64, DateTime<Utc>)>, StoreError> {
    let found: Option<(i64, String)> = store
        .conn()?
        .query_row(
            "SELECT id, started_at FROM job_runs
              WHERE job = ?1 AND started_at >= ?2 AND started_at <= ?3
              ORDER BY started_at LIMIT 1",
            (job, to_store_text(from), to_store_text(to)),
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    Ok(found.and_then(|(id, started)| Some((id, from_store_text(&started)?))))
}

/// A run of `job` that was in progress at `at`: started before it, not ended by then.
pub fn run_in_progress_at(
    store: &Store,
    job: &str,
    at: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    Ok(store
        .conn()?
        .query_row(
            "SELECT id FROM job_runs
              WHERE job = ?1 AND started_at < ?2
                AND (status = 'running' OR finished_at > ?2)
              ORDER BY started_at DESC LIMIT 1",
            (job, to_store_text(at)),
            |row| row.get(0),
        )
        .optional()?)
}

fn set_checked_in(
    conn: &Connection,
    job: &str,
    source: Source,
    through: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO schedule_watch (job, source, checked_through) VALUES (?1, ?2, ?3)
         ON CONFLICT (job, source) DO UPDATE SET checked_through = excluded.checked_through",
        (job, source.as_str(), to_store_text(through)),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
