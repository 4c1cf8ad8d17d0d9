//! Bulk deletes and updates in bounded batches, so a job never holds SQLite's write lock for long.
//!
//! The bundled SQLite has no `DELETE ... LIMIT`, so each batch picks its rows by rowid in a
//! sub-select, inside a short `BEGIN IMMEDIATE` transaction. Between batches the caller's stop
//! condition (deadline, shutdown) is checked, progress is logged on long runs, and the WAL is
//! checkpointed now and then so it cannot grow without bound under a live writer. A change
//! stopped part-way is resumed by running it again: every batch re-selects what is still left.

use std::time::{Duration, Instant};

use rusqlite::{TransactionBehavior, params_from_iter, types::Value};

use super::{Store, StoreError};

/// One bulk change: `DELETE` or `UPDATE ... SET set_clause` over the rows of `table` matching
/// `filter`. Table, clauses and labels are the job's own SQL, never user input; values travel
/// as bound parameters (`?1`, `?2`, ... in `filter` and `set_clause`).
pub struct BatchedChange<'a> {
    pub label: &'a str,
    pub table: &'a str,
    pub filter: &'a str,
    /// `None` deletes the rows; `Some("status = 'expired'")` updates them instead. The update
    /// must take the rows out of `filter`, or the change would never end.
    pub set_clause: Option<&'a str>,
    pub params: Vec<Value>,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    Finished,
    /// The stop condition held before every row was changed; a later run finishes the work.
    Stopped,
}

const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Batches run back to back for at most this long, then the write lock is left free for
/// `IDLE_SLICE`. SQLite's busy handler retries a waiting writer 1, 3, 8, 18, 33 and 53 ms after
/// its first try, then every 25, 50 and at last 100 ms. Until 33 ms the tries are never more
/// than 15 ms apart, so with at most 33 ms of work and over 15 ms free one of them always lands
/// in the first free window: the application's writers wait about 35 ms at most. A writer that
/// misses it falls behind into the 100 ms cadence, which a 48 ms cycle drifts past only 4 ms a
/// try: slices that overran by a few ms cost writers a second (bench/purge). So each batch is
/// sized to end inside the slice.
const BUSY_SLICE: Duration = Duration::from_millis(32);
const IDLE_SLICE: Duration = Duration::from_millis(16);
/// The first batch of a change, before its pace is known.
const FIRST_BATCH_ROWS: usize = 256;

impl BatchedChange<'_> {
    /// Counts the rows the change would touch, for dry runs.
    pub fn count(&self, store: &Store) -> Result<u64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {}", self.table, self.filter);
        let conn = store.conn()?;
        let mut statement = conn.prepare(&sql)?;
        // The filter may use fewer of the parameters than the update's SET clause does.
        let used = statement.parameter_count();
        let count: i64 = statement
            .query_row(params_from_iter(self.params.iter().take(used)), |row| {
                row.get(0)
            })?;
        Ok(count.max(0) as u64)
    }

    /// Applies the change batch by batch until no row matches or `should_stop` says so.
    pub fn run(
        &self,
        store: &Store,
        should_stop: impl Fn() -> bool,
    ) -> Result<(u64, BatchOutcome), StoreError> {
        self.run_recorded(store, should_stop, |_, _| Ok(()))
    }

    /// As [`BatchedChange::run`], with `record` called in each batch's own transaction with
    /// the rows it changed: what the batch records (an audit row) commits with it, or not at all.
    pub fn run_recorded(
        &self,
        store: &Store,
        should_stop: impl Fn() -> bool,
        record: impl Fn(&rusqlite::Transaction<'_>, u64) -> Result<(), StoreError>,
    ) -> Result<(u64, BatchOutcome), StoreError> {
        // One statement per batch, under the write lock: the sub-select finds the batch's rows
        // through the filter's index and the change visits just those. Picking the rows first,
        // outside the lock, and re-checking them under it cost half as much again per row
        // (bench/purge), and the busy slices bound the lock's hold whatever a batch does.
        let limit_param = self.params.len() + 1;
        let picked = format!(
            "rowid IN (SELECT rowid FROM {table} WHERE {filter} LIMIT ?{limit_param})",
            table = self.table,
            filter = self.filter,
        );
        let change = match self.set_clause {
            None => format!("DELETE FROM {} WHERE {picked}", self.table),
            Some(set) => format!("UPDATE {} SET {set} WHERE {picked}", self.table),
        };
        let mut conn = store.conn()?;
        // The change checkpoints the WAL itself, in the windows it leaves the write lock free,
        // rather than on whichever commit passes SQLite's threshold, inside a busy slice.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let outcome = self.apply(&mut conn, &change, should_stop, record);
        let checkpointed = checkpoint(&conn);
        conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)?;
        let outcome = outcome?;
        checkpointed?;
        Ok(outcome)
    }

    fn apply(
        &self,
        conn: &mut rusqlite::Connection,
        change: &str,
        should_stop: impl Fn() -> bool,
        record: impl Fn(&rusqlite::Transaction<'_>, u64) -> Result<(), StoreError>,
    ) -> Result<(u64, BatchOutcome), StoreError> {
        let started = Instant::now();
        let mut last_log = started;
        let mut slice_started = started;
        let mut slice_batches = 0u32;
        let mut pace = Pace::new(self.batch_size);
        let mut changed_total: u64 = 0;
        let mut batches: u64 = 0;
        loop {
            if should_stop() {
                log::info!(
                    "{}: stopped after {changed_total} rows; the next run resumes",
                    self.label
                );
                return Ok((changed_total, BatchOutcome::Stopped));
            }
            // A slice's first batch always runs, however slow the last one was: the change
            // makes progress every slice or fails, it never idles on a pessimistic pace.
            let limit = match slice_batches {
                0 => Some(pace.first_of_slice()),
                _ => pace.rows_within(BUSY_SLICE.saturating_sub(slice_started.elapsed())),
            };
            let Some(limit) = limit else {
                // The window writers get: used to keep the WAL short (a PASSIVE checkpoint
                // needs no write lock and waits on no one; its sync of the WAL also spares a
                // writer with synchronous=FULL syncing the batches' frames in its commit),
                // then slept out.
                let idle_started = Instant::now();
                checkpoint(conn)?;
                std::thread::sleep(IDLE_SLICE.saturating_sub(idle_started.elapsed()));
                slice_started = Instant::now();
                slice_batches = 0;
                continue;
            };
            let mut params = self.params.clone();
            params.push(Value::Integer(limit as i64));
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The pace is the batch's own work: time spent waiting for the write lock (the
            // application's transactions) says nothing of how many rows fit in a slice.
            let batch_started = Instant::now();
            if slice_batches == 0 {
                slice_started = batch_started;
            }
            slice_batches += 1;
            let changed = tx
                .prepare_cached(change)?
                .execute(params_from_iter(params.iter()))?;
            if changed > 0 {
                record(&tx, changed as u64)?;
            }
            tx.commit()?;
            pace.observe(changed, batch_started.elapsed());
            batches += 1;
            changed_total += changed as u64;
            if changed < limit {
                if changed_total > 0 {
                    log::debug!("{}: {changed_total} rows in {batches} batches", self.label);
                }
                return Ok((changed_total, BatchOutcome::Finished));
            }
            if last_log.elapsed() >= PROGRESS_LOG_INTERVAL {
                let seconds = started.elapsed().as_secs_f64().max(0.001);
                log::info!(
                    "{}: {changed_total} rows so far ({:.0} rows/s)",
                    self.label,
                    changed_total as f64 / seconds
                );
                last_log = Instant::now();
            }
        }
    }
}

/// How many rows a batch can change in the time left of a busy slice, from the pace of the
/// batches before it.
struct Pace {
    max_rows: usize,
    rows_per_second: Option<f64>,
}

impl Pace {
    /// Batches are sized to use this share of the time left, so a slower batch still ends
    /// inside the slice (at four fifths, one slice in ten overran by 2 to 6 ms).
    const SHARE: f64 = 0.6;

    fn new(max_rows: usize) -> Self {
        Pace {
            max_rows: max_rows.max(1),
            rows_per_second: None,
        }
    }

    /// The next batch's rows, or `None` when too little of the slice is left for one worth
    /// its commit (a sixty-fourth of a full batch).
    fn rows_within(&self, left: Duration) -> Option<usize> {
        let Some(rate) = self.rows_per_second else {
            return (!left.is_zero()).then(|| self.max_rows.min(FIRST_BATCH_ROWS));
        };
        let rows = (rate * left.as_secs_f64() * Self::SHARE) as usize;
        (rows >= self.smallest_batch()).then(|| rows.min(self.max_rows))
    }

    /// The rows of a slice's first batch: what the pace says fits a whole slice, and never
    /// fewer than a sixty-fourth of a full batch, so every slice moves the change on.
    fn first_of_slice(&self) -> usize {
        self.rows_within(BUSY_SLICE)
            .unwrap_or(0)
            .max(self.smallest_batch())
            .min(self.max_rows)
    }

    /// The fewest rows a batch is worth its commit for.
    fn smallest_batch(&self) -> usize {
        (self.max_rows / 64).max(1)
    }

    /// Learns from a batch that changed `rows` in `took`, weighting the newest batch half.
    fn observe(&mut self, rows: usize, took: Duration) {
        if rows == 0 || took.is_zero() {
            return;
        }
        let rate = rows as f64 / took.as_secs_f64();
        self.rows_per_second = Some(match self.rows_per_second {
            Some(before) => (before + rate) / 2.0,
            None => rate,
        });
    }
}

/// SQLite's own default threshold, restored on the pooled connection afterwards.
const AUTOCHECKPOINT_PAGES: i64 = 1000;

/// Copies what it can of the WAL into the store without waiting: PASSIVE takes no write lock.
fn checkpoint(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use std::cell::Cell;

    fn seed(store: &Store, rows: usize) {
        let conn = store.conn().unwrap();
        for n in 0..rows {
            conn.execute(
                "INSERT INTO suppressions (id, expires_at) VALUES (?1, ?2)",
                (
                    format!("s{n}"),
                    if n % 2 == 0 {
                        "2020-01-01T00:00:00.000Z"
                    } else {
                        "2999-01-01T00:00:00.000Z"
                    },
                ),
            )
            .unwrap();
        }
    }

    fn expired_change() -> BatchedChange<'static> {
        BatchedChange {
            label: "test",
            table: "suppressions",
            filter: "expires_at < ?1",
            set_clause: None,
            params: vec![Value::Text("2026-01-01T00:00:00.000Z".into())],
            batch_size: 7,
        }
    }

    #[test]
    fn deletes_exactly_the_matching_rows_across_batches() {
        let (_dir, store) = temp_store();
        seed(&store, 50);
        let change = expired_change();
        assert_eq!(change.count(&store).unwrap(), 25);
        assert_eq!(
            change.run(&store, || false).unwrap(),
            (25, BatchOutcome::Finished)
        );
        let left: i64 = store
            .conn()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM suppressions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 25);
        assert_eq!(change.count(&store).unwrap(), 0);
    }

    #[test]
    fn a_stopped_change_is_finished_by_the_next_run() {
        let (_dir, store) = temp_store();
        seed(&store, 50);
        let change = expired_change();
        let checks = Cell::new(0);
        let (first, outcome) = change
            .run(&store, || {
                checks.set(checks.get() + 1);
                checks.get() > 2
            })
            .unwrap();
        // Whole batches of 7 (a slow machine may spend a check on a free window instead).
        assert!(first > 0 && first < 25 && first % 7 == 0, "{first}");
        assert_eq!(outcome, BatchOutcome::Stopped);
        let (second, outcome) = change.run(&store, || false).unwrap();
        assert_eq!((first + second, outcome), (25, BatchOutcome::Finished));
    }

    #[test]
    fn the_first_batch_is_small_until_the_pace_is_known() {
        let pace = Pace::new(10_000);
        assert_eq!(pace.rows_within(BUSY_SLICE), Some(FIRST_BATCH_ROWS));
        assert_eq!(Pace::new(7).rows_within(BUSY_SLICE), Some(7));
    }

    #[test]
    fn batches_are_sized_to_end_inside_the_slice() {
        let mut pace = Pace::new(10_000);
        pace.observe(1_000, Duration::from_millis(10));
        // 100 rows a ms, three fifths of the 20 ms left.
        assert_eq!(pace.rows_within(Duration::from_millis(20)), Some(1_200));
        assert_eq!(pace.rows_within(Duration::from_secs(10)), Some(10_000));
        // 60 rows would not be worth a commit: the slice ends.
        assert_eq!(pace.rows_within(Duration::from_millis(1)), None);
        assert_eq!(pace.rows_within(Duration::ZERO), None);
    }

    #[test]
    fn a_slow_batch_still_leaves_every_slice_a_batch() {
        // Regression: a first batch of 256 rows that took 100 ms (the application held the
        // write lock, the host was busy) made the pace find no batch worth a slice, and the
        // change idled forever.
        let mut pace = Pace::new(10_000);
        pace.observe(256, Duration::from_millis(100));
        assert_eq!(pace.rows_within(Duration::from_millis(20)), None);
        assert_eq!(pace.first_of_slice(), 156, "a sixty-fourth of a full batch");
        let mut fast = Pace::new(10_000);
        fast.observe(1_000, Duration::from_millis(10));
        assert_eq!(
            fast.first_of_slice(),
            1_920,
            "three fifths of a 32 ms slice"
        );
    }

    #[test]
    fn the_pace_follows_the_newest_batches() {
        let mut pace = Pace::new(10_000);
        pace.observe(1_000, Duration::from_millis(10));
        pace.observe(1_000, Duration::from_millis(40));
        // (100 + 25) / 2 rows a ms.
        assert_eq!(pace.rows_within(Duration::from_millis(20)), Some(750));
        pace.observe(0, Duration::from_millis(40));
        pace.observe(10, Duration::ZERO);
        assert_eq!(pace.rows_within(Duration::from_millis(20)), Some(750));
    }
}
