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
/// its first try: with 32 ms of work and 16 ms free, one of those tries always lands in a free
/// window (until 33 ms the tries are never more than 16 ms apart, and the 33 ms try falls in the
/// first free window), so the application's writers wait about 35 ms at most,
/// never for the whole purge, while the purge keeps two thirds of the time (bench/purge).
const BUSY_SLICE: Duration = Duration::from_millis(32);
const IDLE_SLICE: Duration = Duration::from_millis(16);
const CHECKPOINT_EVERY_BATCHES: u64 = 20;

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
        let limit_param = self.params.len() + 1;
        let select = format!(
            "SELECT rowid FROM {table} WHERE {filter} LIMIT ?{limit_param}",
            table = self.table,
            filter = self.filter,
        );
        let sql = match self.set_clause {
            None => format!("DELETE FROM {} WHERE rowid IN ({select})", self.table),
            Some(set) => format!("UPDATE {} SET {set} WHERE rowid IN ({select})", self.table),
        };
        let batch_size = self.batch_size.max(1);
        let mut params = self.params.clone();
        params.push(Value::Integer(batch_size as i64));

        let started = Instant::now();
        let mut last_log = started;
        let mut slice_started = started;
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
            let changed = {
                let mut conn = store.conn()?;
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let changed = tx.execute(&sql, params_from_iter(params.iter()))?;
                tx.commit()?;
                if batches % CHECKPOINT_EVERY_BATCHES == CHECKPOINT_EVERY_BATCHES - 1 {
                    // PASSIVE never waits on readers or writers; it just keeps the WAL short.
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
                }
                changed as u64
            };
            batches += 1;
            changed_total += changed;
            if slice_started.elapsed() >= BUSY_SLICE {
                std::thread::sleep(IDLE_SLICE);
                slice_started = Instant::now();
            }
            if changed < batch_size as u64 {
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
        assert_eq!((first, outcome), (14, BatchOutcome::Stopped));
        let (second, outcome) = change.run(&store, || false).unwrap();
        assert_eq!((first + second, outcome), (25, BatchOutcome::Finished));
    }
}
