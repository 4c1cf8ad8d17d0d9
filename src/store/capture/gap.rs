//! Capture that heals: the triggers as edgecron creates them, the check that they are still
//! there (one look-up in `sqlite_master`), and the recovery of the rows inserted while they
//! were gone.
//!
//! A table rebuilt the way SQLite recommends (create, copy, drop, rename) loses its triggers
//! with the old table, and so does a `DROP TRIGGER`. Rows inserted until the next check are
//! in no queue. [`heal`] recreates the triggers and opens a gap, with the highest queue `seq`
//! at that instant as its mark: what was queued then is known to the consumer, what is queued
//! after it the triggers caught. [`recover_gap`] then walks the table in primary-key order and
//! queues every row that is neither known to the consumer (the ids it took, which the caller
//! supplies: the export's files, the SIEM's ledger) nor queued; `created_at` plays no part, so
//! a backfilled row is found like any other. Each piece of the walk commits its progress with
//! the rows it queued, so a recovery stopped anywhere goes on where it was.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value as Json;

use super::{Source, bind, non_null};
use crate::store::alerts::{self, Outbox};
use crate::store::{PooledConnection, Store, StoreError};

/// The capture triggers of a source, `(name, SQL)`, as `schema/0010_capture.sql` created them
/// and [`heal`] recreates them (compared with whitespace collapsed).
fn triggers(source: Source) -> [(&'static str, &'static str); 2] {
    match source {
        Source::Interactions => [
            (
                "interaction_history_capture",
                "CREATE TRIGGER interaction_history_capture AFTER INSERT ON interaction_history
WHEN (SELECT live OR NEW.id <= walked_through FROM capture_state WHERE source = 'interaction_history')
BEGIN
    INSERT INTO interaction_capture (tenant_id, item_id) VALUES (NEW.tenant_id, NEW.id);
END",
            ),
            (
                "interaction_history_capture_new_id",
                "CREATE TRIGGER interaction_history_capture_new_id AFTER UPDATE OF id ON interaction_history
WHEN NEW.id IS NOT OLD.id
 AND (SELECT live OR NEW.id <= walked_through FROM capture_state WHERE source = 'interaction_history')
BEGIN
    INSERT INTO interaction_capture (tenant_id, item_id) VALUES (NEW.tenant_id, NEW.id);
END",
            ),
        ],
        Source::Audit => [
            (
                "audit_log_capture",
                "CREATE TRIGGER audit_log_capture AFTER INSERT ON audit_log
WHEN (SELECT live OR NEW.id <= walked_through FROM capture_state WHERE source = 'audit_log')
BEGIN
    INSERT INTO audit_capture (item_id) VALUES (NEW.id);
END",
            ),
            (
                "audit_log_capture_new_id",
                "CREATE TRIGGER audit_log_capture_new_id AFTER UPDATE OF id ON audit_log
WHEN NEW.id IS NOT OLD.id
 AND (SELECT live OR NEW.id <= walked_through FROM capture_state WHERE source = 'audit_log')
BEGIN
    INSERT INTO audit_capture (item_id) VALUES (NEW.id);
END",
            ),
        ],
    }
}

fn collapse_whitespace(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether every capture trigger of `source` is there, on its table, as edgecron created it.
pub(super) fn triggers_intact(conn: &Connection, source: Source) -> Result<bool, StoreError> {
    let expected = triggers(source);
    let mut statement = conn.prepare_cached(
        "SELECT name, sql FROM sqlite_master
          WHERE type = 'trigger' AND tbl_name = ?1 AND name IN (?2, ?3)",
    )?;
    let found = statement
        .query_map((source.table(), expected[0].0, expected[1].0), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(expected.iter().all(|(name, sql)| {
        found.iter().any(|(found_name, found_sql)| {
            found_name == name
                && found_sql.as_deref().map(collapse_whitespace) == Some(collapse_whitespace(sql))
        })
    }))
}

/// A gap in a source's capture: the triggers were found gone, and the rows inserted meanwhile
/// are still to be recovered.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// When a consumer last found the triggers in place (`None`: not since this was recorded).
    pub last_seen: Option<String>,
    pub found_at: String,
    /// The highest queue `seq` when the triggers were recreated.
    mark: i64,
    /// How far the recovery's walk got (exclusive; `None`: from the first row).
    through: Option<Value>,
    /// Rows the recovery has queued so far.
    pub recovered: u64,
}

pub(super) fn gap_from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Option<Gap>> {
    let pending: bool = row.get(first)?;
    if !pending {
        return Ok(None);
    }
    Ok(Some(Gap {
        last_seen: row.get(first + 1)?,
        found_at: row.get::<_, Option<String>>(first + 2)?.unwrap_or_default(),
        mark: row.get::<_, Option<i64>>(first + 3)?.unwrap_or(0),
        through: non_null(row.get(first + 4)?),
        recovered: row.get::<_, i64>(first + 5)? as u64,
    }))
}

/// The alerts a gap raises: built by the caller, committed here with the change itself.
pub struct GapAlerts<'a> {
    pub outbox: Outbox,
    pub now: chrono::DateTime<chrono::Utc>,
    pub opened: &'a dyn Fn(Source, &Gap) -> Json,
    pub resolved: &'a dyn Fn(Source, &Gap) -> Json,
}

/// Checks the source's triggers (one look-up, no write while they are in place); recreates
/// any that are gone or changed. When a consumer had begun, that opens a gap (answered, its
/// alert committed with it); a gap already open starts its recovery over, since rows it had
/// passed may have been inserted again unseen.
pub fn heal(
    store: &Store,
    source: Source,
    alerts: &GapAlerts<'_>,
) -> Result<Option<Json>, StoreError> {
    if triggers_intact(&*store.conn()?, source)? {
        return Ok(None);
    }
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if triggers_intact(&tx, source)? {
        return Ok(None);
    }
    for (name, sql) in triggers(source) {
        tx.execute_batch(&format!("DROP TRIGGER IF EXISTS {name}; {sql};"))?;
    }
    let state = super::read_state(&tx, source)?;
    let now_text = crate::clock::to_store_text(alerts.now);
    if state.consumer.is_none() {
        // Nothing was taken yet: the first walk reads the table whatever the triggers missed.
        tx.commit()?;
        log::info!("capture: the triggers of {} were recreated", source.table());
        return Ok(None);
    }
    let mark = super::highest_seq(&tx, source)?;
    let newly_opened = state.gap.is_none();
    let gap = match state.gap {
        Some(open) => Gap {
            through: None,
            ..open
        },
        None => Gap {
            last_seen: state.triggers_seen_at.clone(),
            found_at: now_text.clone(),
            mark,
            through: None,
            recovered: 0,
        },
    };
    tx.execute(
        "UPDATE capture_state SET gap_pending = 1, gap_since = ?2, gap_found_at = ?3, gap_mark = ?4,
             gap_through = NULL, triggers_seen_at = ?5
         WHERE source = ?1",
        rusqlite::params![source.table(), gap.last_seen, gap.found_at, gap.mark, now_text],
    )?;
    let alert = newly_opened.then(|| (alerts.opened)(source, &gap));
    if let Some(alert) = &alert
        && alerts.outbox == Outbox::Queue
    {
        alerts::enqueue_in(&tx, alert, alerts.now)?;
    }
    tx.commit()?;
    log::warn!(
        "capture: the triggers of {} were gone (last seen {}); recreated, and the rows inserted meanwhile are to be recovered",
        source.table(),
        gap.last_seen
            .as_deref()
            .unwrap_or("before this was recorded")
    );
    Ok(alert)
}

/// Records, in a consumer's transaction, that its run found the triggers in place at `at`.
pub fn note_seen(
    tx: &rusqlite::Transaction<'_>,
    source: Source,
    at: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE capture_state SET triggers_seen_at = ?2 WHERE source = ?1 AND gap_pending = 0",
        (source.table(), at),
    )?;
    Ok(())
}

/// The ids a consumer is known to have taken, gathered for a recovery in a temporary table of
/// one connection: on disk, so memory stays bounded however many there are.
pub struct KnownIds {
    conn: PooledConnection,
    in_transaction: usize,
}

/// Ids added to the temporary table per transaction (it is the connection's own: no lock on
/// the store is taken).
const KNOWN_PER_TRANSACTION: usize = 20_000;

impl KnownIds {
    fn new(store: &Store) -> Result<KnownIds, StoreError> {
        let conn = store.conn()?;
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS gap_known (id PRIMARY KEY) WITHOUT ROWID;
             DELETE FROM temp.gap_known;",
        )?;
        Ok(KnownIds {
            conn,
            in_transaction: 0,
        })
    }

    /// Adds one id the consumer took.
    pub fn add(&mut self, id: &str) -> Result<(), StoreError> {
        if self.in_transaction == 0 {
            self.conn.execute_batch("BEGIN")?;
        }
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO temp.gap_known (id) VALUES (?1)")?
            .execute([id])?;
        self.in_transaction += 1;
        if self.in_transaction >= KNOWN_PER_TRANSACTION {
            self.commit()?;
        }
        Ok(())
    }

    /// Adds the ids a query over the store yields (its one column).
    pub fn add_selected(&mut self, select: &str) -> Result<(), StoreError> {
        self.commit()?;
        self.conn.execute(
            &format!("INSERT OR IGNORE INTO temp.gap_known (id) {select}"),
            [],
        )?;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        if self.in_transaction > 0 {
            self.conn.execute_batch("COMMIT")?;
            self.in_transaction = 0;
        }
        Ok(())
    }
}

impl Drop for KnownIds {
    fn drop(&mut self) {
        // The connection goes back to the pool: leave it as it was.
        let _ = self
            .conn
            .execute_batch("ROLLBACK; DROP TABLE IF EXISTS temp.gap_known;")
            .or_else(|_| {
                self.conn
                    .execute_batch("DROP TABLE IF EXISTS temp.gap_known")
            });
    }
}

/// Rows of the table one piece of the recovery covers, each piece in its own short write
/// transaction.
const RECOVERY_PIECE: usize = 20_000;

/// How a recovery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// Every missed row is queued; the gap is closed (its resolving alert, if any).
    Done { recovered: u64, alert: Json },
    /// Stopped between pieces (the deadline, a shutdown); the next run goes on.
    Stopped { recovered: u64 },
}

/// Recovers the source's open gap: `known` adds the ids the consumer took (the rows queued
/// when the gap was found are added here), then the table is walked piece by piece and every
/// row neither known nor queued is queued. Answers `None` when no gap is open.
pub fn recover_gap<E: From<StoreError>>(
    store: &Store,
    source: Source,
    known: impl FnOnce(&mut KnownIds) -> Result<(), E>,
    should_stop: &dyn Fn() -> bool,
    alerts: &GapAlerts<'_>,
) -> Result<Option<Recovery>, E> {
    let state = super::state(store, source)?;
    let Some(gap) = state.gap else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let mut ids = KnownIds::new(store)?;
    known(&mut ids)?;
    ids.add_selected(&format!(
        "SELECT item_id FROM main.{} WHERE seq <= {}",
        source.capture_table(),
        gap.mark
    ))?;
    log::info!(
        "capture: recovering {}: the ids already taken gathered in {:.2}s",
        source.table(),
        started.elapsed().as_secs_f64()
    );
    // Until the first walk is done, the triggers capture only what it has passed.
    let limit = (!state.live).then_some(state.walked_through).flatten();
    if !state.live && limit.is_none() {
        return Ok(Some(close_gap(store, source, &gap, 0, alerts)?));
    }
    let mut through = gap.through.clone();
    let mut recovered = gap.recovered;
    loop {
        if should_stop() {
            return Ok(Some(Recovery::Stopped { recovered }));
        }
        let (end, queued) = recover_piece(
            &mut ids.conn,
            source,
            &gap,
            through.as_ref(),
            limit.as_ref(),
        )?;
        recovered += queued;
        let Some(end) = end else {
            break;
        };
        through = Some(end);
    }
    log::info!(
        "capture: {} recovered: {recovered} rows queued in {:.2}s",
        source.table(),
        started.elapsed().as_secs_f64()
    );
    Ok(Some(close_gap(store, source, &gap, recovered, alerts)?))
}

/// Queues the missed rows of the next piece after `after` (up to `limit`, when given), and
/// records how far the recovery got, in one transaction; answers the piece's end (`None`: it
/// was the last) and how many rows it queued.
fn recover_piece(
    conn: &mut Connection,
    source: Source,
    gap: &Gap,
    after: Option<&Value>,
    limit: Option<&Value>,
) -> Result<(Option<Value>, u64), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let table = source.table();
    let mut params: Vec<(&'static str, Value)> = Vec::new();
    params.extend(after.map(|after| (":after", after.clone())));
    params.extend(limit.map(|limit| (":limit", limit.clone())));
    let range = |column: &str| {
        let mut bounds = vec!["1".to_string()];
        if after.is_some() {
            bounds.push(format!("{column} > :after"));
        }
        if limit.is_some() {
            bounds.push(format!("{column} <= :limit"));
        }
        bounds.join(" AND ")
    };
    let end: Option<Value> = tx
        .query_row(
            &format!(
                "SELECT id FROM {table} WHERE {} ORDER BY id LIMIT 1 OFFSET {}",
                range("id"),
                RECOVERY_PIECE - 1
            ),
            bind(&params).as_slice(),
            |row| row.get(0),
        )
        .optional()?;
    let mut piece = range("t.id");
    if let Some(end) = &end {
        piece.push_str(" AND t.id <= :end");
        params.push((":end", end.clone()));
    }
    params.push((":mark", Value::Integer(gap.mark)));
    let (columns, values) = match source {
        Source::Interactions => ("tenant_id, item_id", "t.tenant_id, t.id"),
        Source::Audit => ("item_id", "t.id"),
    };
    let queued = tx.execute(
        &format!(
            "INSERT INTO {capture} ({columns})
             SELECT {values} FROM {table} t
              WHERE {piece}
                AND t.id NOT IN (SELECT id FROM temp.gap_known)
                AND t.id NOT IN (SELECT item_id FROM {capture} WHERE seq > :mark)
              ORDER BY t.id",
            capture = source.capture_table(),
        ),
        bind(&params).as_slice(),
    )?;
    tx.execute(
        "UPDATE capture_state SET gap_through = ?2, gap_rows = gap_rows + ?3 WHERE source = ?1",
        rusqlite::params![table, end, queued as i64],
    )?;
    tx.commit()?;
    Ok((end, queued as u64))
}

fn close_gap(
    store: &Store,
    source: Source,
    gap: &Gap,
    recovered: u64,
    alerts: &GapAlerts<'_>,
) -> Result<Recovery, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE capture_state SET gap_pending = 0, gap_since = NULL, gap_found_at = NULL,
             gap_mark = NULL, gap_through = NULL, gap_rows = 0, triggers_seen_at = ?2
         WHERE source = ?1",
        (source.table(), crate::clock::to_store_text(alerts.now)),
    )?;
    let closed = Gap {
        recovered,
        ..gap.clone()
    };
    let alert = (alerts.resolved)(source, &closed);
    if alerts.outbox == Outbox::Queue {
        alerts::enqueue_in(&tx, &alert, alerts.now)?;
    }
    tx.commit()?;
    Ok(Recovery::Done { recovered, alert })
}
