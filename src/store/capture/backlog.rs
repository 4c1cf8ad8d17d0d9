//! What waits in a capture queue: the rows its consumer has not yet taken (captured, or
//! still to be walked), and what the consumer's last runs left, so a queue its runs no longer
//! work off shows.

use super::{Source, bind, read_state};
use crate::store::{Store, StoreError};

/// Rows the consumer has not yet taken: captured ones, and those its walk is still to reach.
pub fn backlog(store: &Store, source: Source) -> Result<u64, StoreError> {
    let conn = store.conn()?;
    let state = read_state(&conn, source)?;
    let captured: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM {}", source.capture_table()),
        [],
        |row| row.get(0),
    )?;
    let unwalked_step = state.unwalked();
    let unwalked: i64 = match unwalked_step {
        None => 0,
        Some(step) => {
            let params = step.params();
            conn.query_row(
                &format!(
                    "SELECT COUNT(*) FROM {} WHERE {}",
                    source.table(),
                    step.condition(source, "id")
                ),
                bind(&params).as_slice(),
                |row| row.get(0),
            )?
        }
    };
    Ok((captured + unwalked) as u64)
}

/// A source's backlog as the edges show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogState {
    /// Rows not yet taken now.
    pub rows: u64,
    /// What the consumer's last run left that it could have taken, and the run before it.
    pub after_last_run: Option<u64>,
    pub after_run_before: Option<u64>,
    /// When the open gap (if any) was found.
    pub gap_found_at: Option<String>,
    /// A consumer has begun, so the triggers queue what it has not taken (before that, the
    /// table itself is what waits, and nothing grows).
    pub capturing: bool,
}

impl BacklogState {
    /// The consumer's runs no longer work it off: its last run left more than the one before.
    /// (A run that takes a full batch leaves the rest; runs that leave more each time fall
    /// behind.)
    pub fn growing(&self) -> bool {
        matches!((self.after_last_run, self.after_run_before), (Some(last), Some(before)) if last > before)
    }
}

pub fn backlog_state(store: &Store, source: Source) -> Result<BacklogState, StoreError> {
    let rows = backlog(store, source)?;
    let (after_last_run, after_run_before, gap_found_at, capturing) = store.conn()?.query_row(
        "SELECT backlog_after_run, backlog_after_run_before, CASE WHEN gap_pending THEN gap_found_at END,
                consumer IS NOT NULL
           FROM capture_state WHERE source = ?1",
        [source.table()],
        |row| {
            Ok((
                row.get::<_, Option<i64>>(0)?,
                row.get::<_, Option<i64>>(1)?,
                row.get(2)?,
                row.get(3)?,
            ))
        },
    )?;
    Ok(BacklogState {
        rows,
        after_last_run: after_last_run.map(|rows| rows as u64),
        after_run_before: after_run_before.map(|rows| rows as u64),
        gap_found_at,
        capturing,
    })
}

/// Counts what waits in `source`'s queue and notes it, for `/metrics` to read (as each
/// consumer's run ends, and at serve's start); answers the count.
pub fn note_backlog(store: &Store, source: Source) -> Result<u64, StoreError> {
    let rows = backlog(store, source)?;
    store.conn()?.execute(
        "UPDATE capture_state SET backlog_rows = ?2 WHERE source = ?1",
        (source.table(), rows as i64),
    )?;
    Ok(rows)
}

/// What a queue had waiting when it was last noted, and whether a gap is being recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotedBacklog {
    pub rows: u64,
    pub gap: bool,
}

/// The noted backlog of `source`: one row read, nothing counted (a scrape's cost must not grow
/// with the queue).
pub fn noted_backlog(store: &Store, source: Source) -> Result<NotedBacklog, StoreError> {
    let (rows, gap) = store.conn()?.query_row(
        "SELECT COALESCE(backlog_rows, 0), gap_pending FROM capture_state WHERE source = ?1",
        [source.table()],
        |row| Ok((row.get::<_, i64>(0)?, row.get::<_, bool>(1)?)),
    )?;
    Ok(NotedBacklog {
        rows: rows as u64,
        gap,
    })
}

/// Records what a consumer's run left waiting that it could have taken (the export leaves
/// inactive tenants' rows by design, so it counts the active tenants' only).
pub fn record_backlog(store: &Store, source: Source, rows: u64) -> Result<(), StoreError> {
    store.conn()?.execute(
        "UPDATE capture_state SET backlog_after_run_before = backlog_after_run, backlog_after_run = ?2
         WHERE source = ?1",
        (source.table(), rows as i64),
    )?;
    Ok(())
}
