//! Run history and per-job leases: the runner's tables.

mod kinds;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::occurrences::{self, OccurrenceBatch};
use super::{Store, StoreError};
use crate::clock::{from_store_text, to_store_text};
pub use kinds::{RunStatus, Trigger};

/// One row of run history, as `edgecron runs --json` and `/api/v1/runs` show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub id: i64,
    pub job: String,
    pub trigger: Trigger,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: RunStatus,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
    pub rows_processed: i64,
    /// A scheduled run: the fire time it serves, and its start minus that time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<i64>,
    /// The site the run worked for (none for runs from before sites were recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// The run currently holding a job's lease.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseHolder {
    pub run_id: i64,
    pub trigger: String,
    pub started_at: String,
    pub holder: String,
    #[serde(skip)]
    pub heartbeat_at: DateTime<Utc>,
}

pub enum LeaseAttempt {
    Acquired {
        run_id: i64,
    },
    Busy(LeaseHolder),
    /// The fire time a scheduled run was to serve is already in the ledger: another
    /// scheduler on this store (a second `serve`) handled it first.
    Served,
}

/// The end of a run, written with the lease's release in one transaction.
pub struct RunEnd<'a> {
    pub status: RunStatus,
    pub result_json: Option<&'a str>,
    pub error: Option<&'a str>,
    pub rows_processed: i64,
    pub duration_ms: i64,
}

fn current_lease(conn: &rusqlite::Connection, job: &str) -> rusqlite::Result<Option<LeaseHolder>> {
    conn.query_row(
        "SELECT l.run_id, COALESCE(r.trigger, ''), l.acquired_at, l.holder, l.heartbeat_at
         FROM job_leases l LEFT JOIN job_runs r ON r.id = l.run_id
         WHERE l.job = ?1",
        [job],
        |row| {
            let heartbeat: String = row.get(4)?;
            Ok(LeaseHolder {
                run_id: row.get(0)?,
                trigger: row.get(1)?,
                started_at: row.get(2)?,
                holder: row.get(3)?,
                heartbeat_at: from_store_text(&heartbeat).unwrap_or_default(),
            })
        },
    )
    .optional()
}

/// When an abandoned run ended: its last heartbeat (not the later moment it was found), or
/// `now` when there is no readable heartbeat.
fn abandoned_at(heartbeat: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let ended = if heartbeat > DateTime::<Utc>::default() {
        heartbeat.min(now)
    } else {
        now
    };
    to_store_text(ended)
}

const RUN_COLUMNS: &str = "id, job, trigger, started_at, finished_at, status, error, duration_ms,
     rows_processed, scheduled_for, lag_ms, site";

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: row.get(0)?,
        job: row.get(1)?,
        trigger: row.get(2)?,
        started_at: row.get(3)?,
        finished_at: row.get(4)?,
        status: row.get(5)?,
        error: row.get(6)?,
        duration_ms: row.get(7)?,
        rows_processed: row.get(8)?,
        scheduled_for: row.get(9)?,
        lag_ms: row.get(10)?,
        site: row.get(11)?,
    })
}

/// Takes `job`'s lease and records a new running run, or names the run that holds it.
/// A lease whose holder `is_alive` says is dead is taken over and its run marked failed.
pub fn begin_run(
    store: &Store,
    job: &str,
    trigger: Trigger,
    holder: &str,
    now: impl Fn() -> DateTime<Utc>,
    is_alive: impl Fn(&LeaseHolder) -> bool,
) -> Result<LeaseAttempt, StoreError> {
    begin(store, job, trigger, holder, now, is_alive, None)
}

/// As [`Store::begin_run`] for a run the scheduler starts for `scheduled_for`: the same
/// transaction records the run's fire time and lag, the occurrences it serves and the
/// scheduler's progress, so a crash neither loses nor repeats a fire time.
pub fn begin_scheduled_run(
    store: &Store,
    job: &str,
    holder: &str,
    now: impl Fn() -> DateTime<Utc>,
    is_alive: impl Fn(&LeaseHolder) -> bool,
    scheduled_for: DateTime<Utc>,
    batch: &OccurrenceBatch,
) -> Result<LeaseAttempt, StoreError> {
    begin(
        store,
        job,
        Trigger::Schedule,
        holder,
        now,
        is_alive,
        Some((scheduled_for, batch)),
    )
}

fn begin(
    store: &Store,
    job: &str,
    trigger: Trigger,
    holder: &str,
    now: impl Fn() -> DateTime<Utc>,
    is_alive: impl Fn(&LeaseHolder) -> bool,
    scheduled: Option<(DateTime<Utc>, &OccurrenceBatch)>,
) -> Result<LeaseAttempt, StoreError> {
    let mut conn = store.conn()?;
    // A live holder is answered from a plain read, so a refusal never waits for the write
    // lock (which the holder may be using); the transaction below checks again.
    if let Some(current) = current_lease(&conn, job)?
        && is_alive(&current)
    {
        return Ok(LeaseAttempt::Busy(current));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // The start is read once the write lock is held: a run that waited for it cannot
    // record a start before the previous run's recorded end.
    let started = now();
    let now_text = to_store_text(started);
    if let Some(current) = current_lease(&tx, job)? {
        if is_alive(&current) {
            return Ok(LeaseAttempt::Busy(current));
        }
        log::warn!(
            "{job}: taking over the lease of run {} whose holder {} is gone",
            current.run_id,
            current.holder
        );
        // It ended when its process last showed life, not now: its duration stays true.
        tx.execute(
            "UPDATE job_runs SET status = 'failed', finished_at = ?2,
                 error = 'abandoned: the process running it died'
             WHERE id = ?1 AND status = 'running'",
            (current.run_id, abandoned_at(current.heartbeat_at, now())),
        )?;
        tx.execute("DELETE FROM job_leases WHERE job = ?1", [job])?;
    }
    if let Some((scheduled_for, _)) = scheduled
        && occurrences::served_in(&tx, job, scheduled_for)?
    {
        return Ok(LeaseAttempt::Served);
    }
    tx.execute(
        "INSERT INTO job_runs (job, trigger, status, started_at, holder)
         VALUES (?1, ?2, 'running', ?3, ?4)",
        (job, trigger.as_str(), &now_text, holder),
    )?;
    let run_id = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO job_leases (job, run_id, holder, acquired_at, heartbeat_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        (job, run_id, holder, &now_text),
    )?;
    if let Some((scheduled_for, batch)) = scheduled {
        occurrences::start_scheduled_in(&tx, job, run_id, scheduled_for, batch, started)?;
    }
    tx.commit()?;
    Ok(LeaseAttempt::Acquired { run_id })
}

/// Refreshes the lease; answers false when the run no longer holds it (taken over).
pub fn heartbeat(
    store: &Store,
    job: &str,
    run_id: i64,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let refreshed = store.conn()?.execute(
        "UPDATE job_leases SET heartbeat_at = ?3 WHERE job = ?1 AND run_id = ?2",
        (job, run_id, to_store_text(now)),
    )?;
    Ok(refreshed == 1)
}

/// Records a still-running run as failed, keeping its lease: the lease goes when this
/// process does, and a job thread that finishes later cannot turn the run back to ok.
pub fn fail_running_run(
    store: &Store,
    run_id: i64,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    store.conn()?.execute(
        "UPDATE job_runs SET status = 'failed', finished_at = ?2, error = ?3 WHERE id = ?1 AND status = 'running'",
        (run_id, to_store_text(now), error),
    )?;
    Ok(())
}

/// Records the end of a run and releases its lease, atomically, with `then` run in the
/// same transaction after the end is written (the alert conditions a run's end opens or closes are committed with it); it
/// is told whether this call recorded the end (false: the run had already ended).
pub fn finish_run<T>(
    store: &Store,
    job: &str,
    run_id: i64,
    end: &RunEnd<'_>,
    now: DateTime<Utc>,
    then: impl FnOnce(&Connection, bool) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ended = tx.execute(
        "UPDATE job_runs SET status = ?2, finished_at = ?3, result = ?4, error = ?5,
             rows_processed = ?6, duration_ms = ?7
         WHERE id = ?1 AND status = 'running'",
        (
            run_id,
            end.status.as_str(),
            to_store_text(now),
            end.result_json,
            end.error,
            end.rows_processed,
            end.duration_ms,
        ),
    )?;
    tx.execute(
        "DELETE FROM job_leases WHERE job = ?1 AND run_id = ?2",
        (job, run_id),
    )?;
    let value = then(&tx, ended == 1)?;
    tx.commit()?;
    Ok(value)
}

/// Marks failed every `running` run whose process `is_alive` says is gone and that holds
/// no live lease, releasing such leases. Returns how many runs were closed.
pub fn close_orphaned_runs(
    store: &Store,
    now: DateTime<Utc>,
    is_alive: impl Fn(&str, DateTime<Utc>) -> bool,
) -> Result<usize, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let candidates: Vec<(i64, String, String, Option<String>)> = {
        let mut statement = tx.prepare(
            "SELECT r.id, r.job, r.holder, l.heartbeat_at
             FROM job_runs r LEFT JOIN job_leases l ON l.run_id = r.id
             WHERE r.status = 'running'",
        )?;
        statement
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect::<Result<_, _>>()?
    };
    let mut closed = 0;
    for (run_id, job, holder, heartbeat) in candidates {
        let heartbeat = heartbeat
            .as_deref()
            .and_then(from_store_text)
            .unwrap_or_default();
        if is_alive(&holder, heartbeat) {
            continue;
        }
        tx.execute(
            "UPDATE job_runs SET status = 'failed', finished_at = ?2,
                 error = 'abandoned: the process running it died'
             WHERE id = ?1",
            (run_id, abandoned_at(heartbeat, now)),
        )?;
        tx.execute("DELETE FROM job_leases WHERE run_id = ?1", [run_id])?;
        log::warn!("{job}: run {run_id} of {holder} was left running; marked failed");
        closed += 1;
    }
    tx.commit()?;
    Ok(closed)
}

/// Keeps the newest `keep_succeeded` finished-ok runs and `keep_failed` failed runs of a job.
pub fn prune_runs(
    store: &Store,
    job: &str,
    keep_succeeded: i64,
    keep_failed: i64,
) -> Result<usize, StoreError> {
    let conn = store.conn()?;
    let mut deleted = 0;
    for (statuses, keep) in [
        ("('ok', 'partial')", keep_succeeded),
        ("('failed')", keep_failed),
    ] {
        deleted += conn.execute(
            &format!(
                "DELETE FROM job_runs WHERE job = ?1 AND status IN {statuses} AND id < COALESCE(
                     (SELECT id FROM job_runs WHERE job = ?1 AND status IN {statuses}
                      ORDER BY id DESC LIMIT 1 OFFSET ?2), -1)"
            ),
            (job, keep - 1),
        )?;
    }
    Ok(deleted)
}

/// Run history, newest first.
/// Who holds `job`'s lease, if anyone.
pub fn lease(store: &Store, job: &str) -> Result<Option<LeaseHolder>, StoreError> {
    Ok(current_lease(&*store.conn()?, job)?)
}

pub fn list_runs(
    store: &Store,
    job: Option<&str>,
    limit: i64,
) -> Result<Vec<RunRecord>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM job_runs WHERE ?1 IS NULL OR job = ?1 ORDER BY id DESC LIMIT ?2"
    ))?;
    let runs = statement
        .query_map((job, limit), run_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(runs)
}

/// The newest run of a job, and its newest failed run.
pub fn latest_runs(
    store: &Store,
    job: &str,
) -> Result<(Option<RunRecord>, Option<RunRecord>), StoreError> {
    let conn = store.conn()?;
    let latest = conn
        .query_row(
            &format!("SELECT {RUN_COLUMNS} FROM job_runs WHERE job = ?1 ORDER BY id DESC LIMIT 1"),
            [job],
            run_from_row,
        )
        .optional()?;
    let latest_failed = conn
        .query_row(
            &format!(
                "SELECT {RUN_COLUMNS} FROM job_runs WHERE job = ?1 AND status = 'failed'
                 ORDER BY id DESC LIMIT 1"
            ),
            [job],
            run_from_row,
        )
        .optional()?;
    Ok((latest, latest_failed))
}

/// The durations (ms) of a job's newest finished runs, oldest first.
pub fn recent_durations(store: &Store, job: &str, limit: i64) -> Result<Vec<i64>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare_cached(
        "SELECT duration_ms FROM (SELECT id, duration_ms FROM job_runs
           WHERE job = ?1 AND duration_ms IS NOT NULL ORDER BY id DESC LIMIT ?2) ORDER BY id",
    )?;
    let durations = statement
        .query_map((job, limit), |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(durations)
}

/// The newest failed runs of every job.
pub fn recent_failures(store: &Store, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(&format!(
        "SELECT {RUN_COLUMNS} FROM job_runs WHERE status = 'failed' ORDER BY id DESC LIMIT ?1"
    ))?;
    let runs = statement
        .query_map([limit], run_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::stats;
    use crate::store::test_support::temp_store;
    use chrono::TimeZone;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap()
    }

    #[test]
    fn a_live_lease_makes_the_second_run_busy_and_a_dead_one_is_taken_over() {
        let (_dir, store) = temp_store();
        let LeaseAttempt::Acquired { run_id: first } =
            begin_run(&store, "cleanup", Trigger::Cli, "h/1/1", || at(0), |_| true).unwrap()
        else {
            panic!("first run must get the lease");
        };
        let LeaseAttempt::Busy(holder) = begin_run(
            &store,
            "cleanup",
            Trigger::Http,
            "h/2/2",
            || at(1),
            |_| true,
        )
        .unwrap() else {
            panic!("second run must be refused while the first is alive");
        };
        assert_eq!(holder.run_id, first);
        assert_eq!(holder.trigger, "cli");

        let LeaseAttempt::Acquired { run_id: third } = begin_run(
            &store,
            "cleanup",
            Trigger::Http,
            "h/3/3",
            || at(2),
            |_| false,
        )
        .unwrap() else {
            panic!("a dead holder's lease must be taken over");
        };
        let runs = list_runs(&store, Some("cleanup"), 10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].id, runs[0].status.as_str()), (third, "running"));
        assert_eq!((runs[1].id, runs[1].status.as_str()), (first, "failed"));
    }

    #[test]
    fn every_way_a_run_ends_is_counted_once_and_abandoned_runs_end_at_their_heartbeat() {
        let (_dir, store) = temp_store();
        let begin = |second| match begin_run(
            &store,
            "cleanup",
            Trigger::Cli,
            "h/1/1",
            || at(second),
            |_| false,
        )
        .unwrap()
        {
            LeaseAttempt::Acquired { run_id } => run_id,
            _ => panic!("the lease must be taken"),
        };
        let first = begin(0);
        assert!(heartbeat(&store, "cleanup", first, at(3)).unwrap());
        // Found dead 57 s later: it ended at its last heartbeat, 3 s in.
        let second = begin(59);
        let end = RunEnd {
            status: RunStatus::Ok,
            result_json: None,
            error: None,
            rows_processed: 7,
            duration_ms: 200,
        };
        finish_run(&store, "cleanup", second, &end, at(59), |_, _| Ok(())).unwrap();
        // Finishing twice (a retried write) counts once.
        finish_run(&store, "cleanup", second, &end, at(59), |_, _| Ok(())).unwrap();
        let metrics = stats::run_metrics(&store, &["cleanup"]).unwrap();
        let stats = &metrics.stats;
        let by_status: Vec<(&str, i64, f64, i64)> = stats
            .iter()
            .map(|stat| {
                (
                    stat.status.as_str(),
                    stat.runs,
                    stat.duration_seconds_sum,
                    stat.rows_processed,
                )
            })
            .collect();
        assert_eq!(by_status, [("failed", 1, 3.0, 0), ("ok", 1, 0.2, 7)]);
        let histogram = &metrics.histograms[0];
        let filled: Vec<(&str, i64)> = histogram
            .buckets
            .iter()
            .filter(|(_, runs)| *runs > 0)
            .map(|(le, runs)| (le.as_str(), *runs))
            .collect();
        assert_eq!(filled, [("0.5", 1), ("5", 1)]);
    }

    #[test]
    fn finishing_releases_the_lease_and_pruning_keeps_more_failures() {
        let (_dir, store) = temp_store();
        for n in 0..10 {
            let LeaseAttempt::Acquired { run_id } =
                begin_run(&store, "cleanup", Trigger::Cli, "h/1/1", || at(n), |_| true).unwrap()
            else {
                panic!("lease must be free after the previous run finished");
            };
            let status = if n % 2 == 0 {
                RunStatus::Ok
            } else {
                RunStatus::Failed
            };
            let end = RunEnd {
                status,
                result_json: None,
                error: None,
                rows_processed: 0,
                duration_ms: 1,
            };
            finish_run(&store, "cleanup", run_id, &end, at(n), |_, _| Ok(())).unwrap();
        }
        assert_eq!(prune_runs(&store, "cleanup", 2, 4).unwrap(), 4);
        let runs = list_runs(&store, Some("cleanup"), 100).unwrap();
        let statuses: Vec<&str> = runs.iter().map(|run| run.status.as_str()).collect();
        assert_eq!(
            statuses,
            ["failed", "ok", "failed", "ok", "failed", "failed"]
        );
    }
}
