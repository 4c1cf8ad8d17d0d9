//! Capture (`schema/0010_capture.sql`): the queue of rows inserted into `interaction_history`
//! or `audit_log`, in the order the inserts committed, and the walk a consumer's first runs
//! make over the table itself.
//!
//! A consumer reads a reserved walk step (if its walk is not done) and the captured rows, and
//! records what it did with them in one transaction: the walk's progress, and the deletion of
//! the captured rows it took. Until that commits, the same rows are read again next time.
//!
//! The application may drop the triggers without meaning to (a table rebuilt the way SQLite
//! recommends drops them with the old table). [`heal`] finds that with one look-up in
//! `sqlite_master`, recreates them and opens a gap; [`recover_gap`] then captures every row
//! present that the consumer neither took nor has queued, exactly once.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{Store, StoreError};

mod backlog;
mod gap;

pub use backlog::{backlog_state, note_backlog, noted_backlog, record_backlog};
pub use gap::{Gap, GapAlerts, KnownIds, Recovery, heal, note_seen, recover_gap};

/// A captured table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Interactions,
    Audit,
}

impl Source {
    /// The captured table's name (and the source's key in `capture_state`).
    pub fn table(self) -> &'static str {
        match self {
            Source::Interactions => "interaction_history",
            Source::Audit => "audit_log",
        }
    }

    /// The table its captured rows wait in.
    pub fn capture_table(self) -> &'static str {
        match self {
            Source::Interactions => "interaction_capture",
            Source::Audit => "audit_capture",
        }
    }
}

/// Rows reserved by a walk step, in primary-key order: after `from` (from the first row when
/// `None`) up to and including `to` (to the last row when `None`), less the rows captured
/// after the reservation (`seq > mark`), which the capture delivers.
#[derive(Debug, Clone, PartialEq)]
pub struct WalkStep {
    pub from: Option<Value>,
    pub to: Option<Value>,
    pub mark: i64,
}

impl WalkStep {
    /// The SQL condition on `column` (the id of the walked table) selecting the step's rows;
    /// it takes the named parameters of [`WalkStep::params`].
    pub fn condition(&self, source: Source, column: &str) -> String {
        let mut parts = Vec::new();
        if self.from.is_some() {
            parts.push(format!("{column} > :walk_from"));
        }
        if self.to.is_some() {
            parts.push(format!("{column} <= :walk_to"));
        }
        parts.push(format!(
            "{column} NOT IN (SELECT item_id FROM {} WHERE seq > :walk_mark)",
            source.capture_table()
        ));
        parts.join(" AND ")
    }

    /// The SQL condition on a captured entry (its `seq` and item id columns) that the step's
    /// rows exclude: captured after the reservation, inside the step. Such an entry must stay
    /// queued until the walk has passed it, or the walk would read the row again. It takes
    /// the named parameters of [`WalkStep::params`].
    pub fn holds_captured(&self, seq: &str, item_id: &str) -> String {
        let mut parts = vec![format!("{seq} > :walk_mark")];
        if self.from.is_some() {
            parts.push(format!("{item_id} > :walk_from"));
        }
        if self.to.is_some() {
            parts.push(format!("{item_id} <= :walk_to"));
        }
        format!("({})", parts.join(" AND "))
    }

    /// The named parameters [`WalkStep::condition`] refers to.
    pub fn params(&self) -> Vec<(&'static str, Value)> {
        let mut params = vec![(":walk_mark", Value::Integer(self.mark))];
        if let Some(from) = &self.from {
            params.push((":walk_from", from.clone()));
        }
        if let Some(to) = &self.to {
            params.push((":walk_to", to.clone()));
        }
        params
    }
}

/// Named parameters as rusqlite takes them.
pub fn bind<'a>(params: &'a [(&'static str, Value)]) -> Vec<(&'a str, &'a dyn rusqlite::ToSql)> {
    params
        .iter()
        .map(|(name, value)| (*name, value as &dyn rusqlite::ToSql))
        .collect()
}

/// How far a consumer got through a walk step.
#[derive(Debug, Clone, PartialEq)]
pub enum WalkProgress {
    /// Every row of the step was taken.
    Done,
    /// Rows up to and including this id were taken; the rest of the step waits.
    StoppedAfter(Value),
}

/// The most rows one reservation covers: its index scan holds the write lock, so a consumer
/// walking further reserves its way on in pieces of this size, each in its own transaction.
pub const RESERVE_PIECE: usize = 50_000;

/// A reserved walk step for `consumer` of up to `rows` rows (at most [`RESERVE_PIECE`]): the
/// step a crashed or stopped run left, if any, as it was; else a new one. `None` once the
/// walk is done.
pub fn begin_walk(
    store: &Store,
    source: Source,
    consumer: &str,
    rows: usize,
) -> Result<Option<WalkStep>, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let state = read_state(&tx, source)?;
    if let Some(pending) = state.pending {
        return Ok(Some(pending));
    }
    if state.live {
        return Ok(None);
    }
    let mark = highest_seq(&tx, source)?;
    let step = reserve(&tx, source, consumer, state.walked_through, mark, rows)?;
    tx.commit()?;
    Ok(Some(step))
}

/// The highest `seq` in the source's queue (0 when it is empty): what was queued up to now.
fn highest_seq(conn: &Connection, source: Source) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        &format!(
            "SELECT COALESCE(MAX(seq), 0) FROM {}",
            source.capture_table()
        ),
        [],
        |row| row.get(0),
    )?)
}

/// Reserves up to `rows` more rows after `step` (the reserved step grows; the same `mark`
/// holds for all of it) and answers just the new piece; `None` if `step` runs to the end.
pub fn extend_walk(
    store: &Store,
    source: Source,
    consumer: &str,
    step: &WalkStep,
    rows: usize,
) -> Result<Option<WalkStep>, StoreError> {
    let Some(after) = &step.to else {
        return Ok(None);
    };
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let piece = reserve(&tx, source, consumer, Some(after.clone()), step.mark, rows)?;
    tx.execute(
        "UPDATE capture_state SET walk_from = ?2 WHERE source = ?1",
        rusqlite::params![source.table(), step.from],
    )?;
    tx.commit()?;
    Ok(Some(piece))
}

/// Reserves the rows after `after`, up to `rows` of them (past the last row, to the end, and
/// from then on every insert is captured), as the pending step.
fn reserve(
    tx: &Transaction<'_>,
    source: Source,
    consumer: &str,
    after: Option<Value>,
    mark: i64,
    rows: usize,
) -> Result<WalkStep, StoreError> {
    let end = nth_id_after(tx, source, after.as_ref(), rows.clamp(1, RESERVE_PIECE))?;
    let live = end.is_none();
    tx.execute(
        "UPDATE capture_state SET consumer = ?2, live = ?3, walked_through = COALESCE(?4, walked_through),
             walk_pending = 1, walk_from = ?5, walk_to = ?4, walk_mark = ?6,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
         WHERE source = ?1",
        rusqlite::params![source.table(), consumer, live, end, after, mark],
    )?;
    Ok(WalkStep {
        from: after,
        to: end,
        mark,
    })
}

/// The id `count` rows after `after` in primary-key order; `None` if there are not that many.
fn nth_id_after(
    conn: &Connection,
    source: Source,
    after: Option<&Value>,
    count: usize,
) -> Result<Option<Value>, StoreError> {
    let table = source.table();
    let offset = count.saturating_sub(1) as i64;
    let id = match after {
        Some(after) => conn
            .query_row(
                &format!("SELECT id FROM {table} WHERE id > ?1 ORDER BY id LIMIT 1 OFFSET ?2"),
                rusqlite::params![after, offset],
                |row| row.get(0),
            )
            .optional()?,
        None => conn
            .query_row(
                &format!("SELECT id FROM {table} ORDER BY id LIMIT 1 OFFSET ?1"),
                [offset],
                |row| row.get(0),
            )
            .optional()?,
    };
    Ok(id)
}

/// Records, in the consumer's own transaction, how far it got through `step`.
pub fn finish_walk(
    tx: &Transaction<'_>,
    source: Source,
    progress: &WalkProgress,
) -> Result<(), StoreError> {
    match progress {
        WalkProgress::Done => tx.execute(
            "UPDATE capture_state SET walk_pending = 0, walk_from = NULL, walk_to = NULL, walk_mark = NULL
             WHERE source = ?1",
            [source.table()],
        )?,
        WalkProgress::StoppedAfter(id) => tx.execute(
            "UPDATE capture_state SET walk_from = ?2 WHERE source = ?1",
            rusqlite::params![source.table(), id],
        )?,
    };
    Ok(())
}

/// Deletes captured rows a consumer took: each inclusive range of `seq`s, in its transaction.
pub fn delete_taken(
    tx: &Transaction<'_>,
    source: Source,
    ranges: &[(i64, i64)],
) -> Result<(), StoreError> {
    let mut delete = tx.prepare_cached(&format!(
        "DELETE FROM {} WHERE seq BETWEEN ?1 AND ?2",
        source.capture_table()
    ))?;
    for (first, last) in ranges {
        delete.execute((first, last))?;
    }
    Ok(())
}

/// What a source's capture stands at.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureState {
    pub consumer: Option<String>,
    pub live: bool,
    pub walked_through: Option<Value>,
    pub pending: Option<WalkStep>,
    /// When a consumer's run last found the triggers in place.
    pub triggers_seen_at: Option<String>,
    /// A gap in the capture still to be recovered.
    pub gap: Option<Gap>,
    pub first_walk: FirstWalk,
}

/// What a consumer's walk over the rows already in the table does with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstWalk {
    /// Delivers them, as it does every row after.
    Delivers,
    /// Takes them as delivered without sending them (`SIEM_START=now`: the system replaced
    /// shipped them already).
    TakesUnsent,
}

/// Decides what the walk of a consumer that has not begun does (kept until that walk is
/// done, whatever the setting says meanwhile).
pub fn set_first_walk(store: &Store, source: Source, walk: FirstWalk) -> Result<(), StoreError> {
    store.conn()?.execute(
        "UPDATE capture_state SET walk_unsent = ?2 WHERE source = ?1",
        (source.table(), walk == FirstWalk::TakesUnsent),
    )?;
    Ok(())
}

pub fn state(store: &Store, source: Source) -> Result<CaptureState, StoreError> {
    read_state(&*store.conn()?, source)
}

impl CaptureState {
    /// Every row the walk is still to reach, as a step: the pending step's and all after it
    /// (none of those is captured yet), or everything after how far the walk got; `None`
    /// once the walk is done.
    pub fn unwalked(&self) -> Option<WalkStep> {
        match (&self.pending, self.live) {
            (Some(step), _) => Some(WalkStep {
                to: None,
                ..step.clone()
            }),
            (None, false) => Some(WalkStep {
                from: self.walked_through.clone(),
                to: None,
                mark: i64::MAX,
            }),
            (None, true) => None,
        }
    }
}

fn read_state(conn: &Connection, source: Source) -> Result<CaptureState, StoreError> {
    Ok(conn.query_row(
        "SELECT consumer, live, walked_through, walk_pending, walk_from, walk_to, walk_mark,
                triggers_seen_at, gap_pending, gap_since, gap_found_at, gap_mark, gap_through, gap_rows,
                walk_unsent
           FROM capture_state WHERE source = ?1",
        [source.table()],
        |row| {
            let pending: bool = row.get(3)?;
            Ok(CaptureState {
                consumer: row.get(0)?,
                live: row.get(1)?,
                walked_through: non_null(row.get(2)?),
                pending: pending
                    .then(|| -> rusqlite::Result<WalkStep> {
                        Ok(WalkStep {
                            from: non_null(row.get(4)?),
                            to: non_null(row.get(5)?),
                            mark: row.get::<_, Option<i64>>(6)?.unwrap_or(0),
                        })
                    })
                    .transpose()?,
                triggers_seen_at: row.get(7)?,
                gap: gap::gap_from_row(row, 8)?,
                first_walk: if row.get(14)? {
                    FirstWalk::TakesUnsent
                } else {
                    FirstWalk::Delivers
                },
            })
        },
    )?)
}

fn non_null(value: Value) -> Option<Value> {
    (value != Value::Null).then_some(value)
}

/// Starts the source over for a new consumer (siem-ship pointed at another backend): what
/// was captured for the old one is dropped, and the new one walks the whole table.
pub fn restart(
    store: &Store,
    source: Source,
    consumer: &str,
    first_walk: FirstWalk,
) -> Result<(), StoreError> {
    let mut conn = store.conn()?;
    // Most of the old queue goes in short transactions; the rest with the restart itself.
    loop {
        let deleted = conn.execute(
            &format!(
                "DELETE FROM {0} WHERE seq IN (SELECT seq FROM {0} ORDER BY seq LIMIT 5000)",
                source.capture_table()
            ),
            [],
        )?;
        if deleted < 5000 {
            break;
        }
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(&format!("DELETE FROM {}", source.capture_table()), [])?;
    tx.execute(
        "UPDATE capture_state SET consumer = ?2, live = 0, walked_through = NULL, walk_pending = 0,
             walk_from = NULL, walk_to = NULL, walk_mark = NULL, gap_pending = 0, gap_since = NULL,
             gap_found_at = NULL, gap_mark = NULL, gap_through = NULL, gap_rows = 0,
             walk_unsent = ?3, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
         WHERE source = ?1",
        (
            source.table(),
            consumer,
            first_walk == FirstWalk::TakesUnsent,
        ),
    )?;
    tx.commit()?;
    Ok(())
}

/// Adds rows to the capture from inside the consumer's transaction (rows a walk reached but
/// could not deliver yet): `select` yields `(tenant_id, item_id)` for interactions and
/// `(item_id)` for audit rows, and takes the walk step's named parameters.
pub fn capture_from_walk(
    tx: &Transaction<'_>,
    source: Source,
    step: &WalkStep,
    select: &str,
    extra: &[(&str, &dyn rusqlite::ToSql)],
) -> Result<usize, StoreError> {
    let columns = match source {
        Source::Interactions => "tenant_id, item_id",
        Source::Audit => "item_id",
    };
    let sql = format!(
        "INSERT INTO {} ({columns}) {select}",
        source.capture_table()
    );
    let params = step.params();
    let mut named = bind(&params);
    named.extend_from_slice(extra);
    Ok(tx.execute(&sql, named.as_slice())?)
}

#[cfg(test)]
mod tests;
