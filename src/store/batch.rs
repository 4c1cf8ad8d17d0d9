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
        // Each batch picks its rows before taking the write lock, then changes just those rows
        // (by rowid, the filter checked again) under it: the lock is held only for the change.
        let list_param = self.params.len() + 1;
        let select = format!(
            "SELECT rowid FROM {table} WHERE {filter} LIMIT ?{list_param}",
            table = self.table,
            filter = self.filter,
        );
        // NOT INDEXED: the planner would otherwise walk the filter's index and test each row
        // against the list, instead of looking the listed rowids up.
        let picked = format!(
            "rowid IN (SELECT value FROM json_each(?{list_param})) AND ({})",
            self.filter
        );
        let change = match self.set_clause {
            None => format!("DELETE FROM {} NOT INDEXED WHERE {picked}", self.table),
            Some(set) => format!("UPDATE {} NOT INDEXED SET {set} WHERE {picked}", self.table),
        };
        let batch_size = self.batch_size.max(1);
        let sql = Statements { select, change };
        let mut conn = store.conn()?;
        // The change checkpoints the WAL itself, in the windows it leaves the write lock free,
        // rather than on whichever commit passes SQLite's threshold, inside a busy slice.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let outcome = self.apply(&mut conn, &sql, batch_size, should_stop, record);
        let checkpointed = checkpoint(&conn);
        conn.pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)?;
        let outcome = outcome?;
        checkpointed?;
        Ok(outcome)
    }

    fn apply(
        &self,
        conn: &mut rusqlite::Connection,
        sql: &Statements,
        batch_size: usize,
        should_stop: impl Fn() -> bool,
        record: impl Fn(&rusqlite::Transaction<'_>, u64) -> Result<(), StoreError>,
    ) -> Result<(u64, BatchOutcome), StoreError> {
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
            let rowids: Vec<i64> = {
                let mut params = self.params.clone();
                params.push(Value::Integer(batch_size as i64));
                let mut statement = conn.prepare_cached(&sql.select)?;
                statement
                    .query_map(params_from_iter(params.iter()), |row| row.get(0))?
                    .collect::<Result<_, _>>()?
            };
            let changed = if rowids.is_empty() {
                0
            } else {
                let mut params = self.params.clone();
                params.push(Value::Text(
                    serde_json::Value::from(rowids.clone()).to_string(),
                ));
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let changed = tx.execute(&sql.change, params_from_iter(params.iter()))?;
                if changed > 0 {
                    record(&tx, changed as u64)?;
                }
                tx.commit()?;
                changed as u64
            };
            batches += 1;
            changed_total += changed;
            if rowids.len() < batch_size {
                if changed_total > 0 {
                    log::debug!("{}: {changed_total} rows in {batches} batches", self.label);
                }
                return Ok((changed_total, BatchOutcome::Finished));
            }
            if slice_started.elapsed() >= BUSY_SLICE {
                // The window writers get: used to keep the WAL short (a PASSIVE checkpoint
                // needs no write lock and waits on no one), then slept out.
                let idle_started = Instant::now();
                checkpoint(conn)?;
                std::thread::sleep(IDLE_SLICE.saturating_sub(idle_started.elapsed()));
                slice_started = Instant::now();
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

/// A batch's two statements: picking its rows, and changing them.
struct Statements {
    select: String,
    change: String,
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
        assert_eq!((first, outcome), (14, BatchOutcome::Stopped));
        let (second, outcome) = change.run(&store, || false).unwrap();
        assert_eq!((first + second, outcome), (25, BatchOutcome::Finished));
    }
}
