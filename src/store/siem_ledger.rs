//! The SQL of SIEM shipping: the next batch of audit rows in the order they were committed (a
//! first run's walk over the table, then the capture queue), and recording how far delivery
//! got: the rows taken from the walk or the queue and any dead letters, in one transaction.

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{OptionalExtension, TransactionBehavior};
use serde_json::Map;

use super::capture::{self, FirstWalk, Source, WalkProgress, WalkStep};
use super::{Store, StoreError, row_object};
use crate::clock::from_store_text;

/// One `audit_log` row, every column kept; `details` is embedded as JSON when it is JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub id: String,
    pub created_at: String,
    pub fields: Map<String, serde_json::Value>,
}

impl AuditRow {
    pub fn time(&self) -> Option<DateTime<Utc>> {
        from_store_text(&self.created_at)
    }
}

/// A row the intake refused for good.
pub struct DeadLetter<'a> {
    pub row: &'a AuditRow,
    pub status: Option<u16>,
    pub reason: &'a str,
    pub event: &'a str,
}

/// Audit rows to ship, in order, and where they came from.
pub struct Batch {
    pub rows: Vec<AuditRow>,
    origin: Origin,
}

enum Origin {
    /// A reserved step of the walk over `audit_log`: each row's id as stored, and what the
    /// walk does with its rows.
    Walk { ids: Vec<Value>, walk: FirstWalk },
    /// The capture queue: every `seq` read, in order, with the index of its row in `rows`
    /// (`None`: the audit row no longer exists).
    Captured(Vec<(i64, Option<usize>)>),
}

impl Batch {
    /// True when nothing is left to ship.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows of a walk that takes them as delivered without sending them (`SIEM_START=now`).
    pub fn taken_unsent(&self) -> bool {
        matches!(
            self.origin,
            Origin::Walk {
                walk: FirstWalk::TakesUnsent,
                ..
            }
        )
    }
}

/// The next batch of at most `limit` rows for `backend`: the rest of its walk over the table
/// while that lasts, then the captured rows. Empty once caught up.
pub fn next_batch(store: &Store, backend: &str, limit: usize) -> Result<Batch, StoreError> {
    loop {
        if let Some(step) = capture::begin_walk(store, Source::Audit, backend, limit)? {
            let (rows, ids) = walk_rows(store, &step)?;
            if rows.is_empty() {
                // Every row of the step was deleted before it was shipped.
                finish(store, |tx| {
                    capture::finish_walk(tx, Source::Audit, &WalkProgress::Done)
                })?;
                continue;
            }
            let walk = capture::state(store, Source::Audit)?.first_walk;
            return Ok(Batch {
                rows,
                origin: Origin::Walk { ids, walk },
            });
        }
        let batch = captured_rows(store, limit)?;
        if let Origin::Captured(seqs) = &batch.origin
            && batch.rows.is_empty()
            && let (Some(first), Some(last)) = (seqs.first(), seqs.last())
        {
            // Only rows deleted before they were shipped: nothing to send for them.
            let ranges = [(first.0, last.0)];
            finish(store, |tx| {
                capture::delete_taken(tx, Source::Audit, &ranges)
            })?;
            continue;
        }
        return Ok(batch);
    }
}

fn finish(
    store: &Store,
    change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    change(&tx)?;
    tx.commit()?;
    Ok(())
}

fn walk_rows(store: &Store, step: &WalkStep) -> Result<(Vec<AuditRow>, Vec<Value>), StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(&format!(
        "SELECT a.id, a.* FROM audit_log a WHERE {} ORDER BY a.id",
        step.condition(Source::Audit, "a.id")
    ))?;
    let names = column_names(&statement, 1);
    let params = step.params();
    let mut rows = statement.query(capture::bind(&params).as_slice())?;
    let (mut batch, mut ids) = (Vec::new(), Vec::new());
    while let Some(row) = rows.next()? {
        ids.push(row.get(0)?);
        batch.push(audit_row(row_object(row, &names, 1)?));
    }
    Ok((batch, ids))
}

fn captured_rows(store: &Store, limit: usize) -> Result<Batch, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare_cached(
        "SELECT c.seq, a.id IS NOT NULL, a.* FROM audit_capture c
           LEFT JOIN audit_log a ON a.id = c.item_id
          ORDER BY c.seq LIMIT ?1",
    )?;
    let names = column_names(&statement, 2);
    let mut rows = statement.query([limit as i64])?;
    let (mut batch, mut seqs) = (Vec::new(), Vec::new());
    while let Some(row) = rows.next()? {
        let (seq, present): (i64, bool) = (row.get(0)?, row.get(1)?);
        if !present {
            seqs.push((seq, None));
            continue;
        }
        seqs.push((seq, Some(batch.len())));
        batch.push(audit_row(row_object(row, &names, 2)?));
    }
    Ok(Batch {
        rows: batch,
        origin: Origin::Captured(seqs),
    })
}

fn column_names(statement: &rusqlite::Statement<'_>, skip: usize) -> Vec<String> {
    statement
        .column_names()
        .iter()
        .skip(skip)
        .map(|name| name.to_string())
        .collect()
}

fn audit_row(mut fields: serde_json::Map<String, serde_json::Value>) -> AuditRow {
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (id, created_at) = (text("id"), text("created_at"));
    // `details` is JSON text: shipped as JSON, so the SIEM can index its fields.
    if let Some(serde_json::Value::String(details)) = fields.get("details")
        && let Ok(parsed) = serde_json::from_str::<serde_json::Value>(details)
    {
        fields.insert("details".into(), parsed);
    }
    AuditRow {
        id,
        created_at,
        fields,
    }
}

/// Makes `backend` the one the audit rows go to; a different backend than before starts over
/// (as a new SIEM would want every row). A backend with no progress yet begins with
/// `first_walk`: the rows already in the store delivered, or taken as delivered unsent.
pub fn select_backend(
    store: &Store,
    backend: &str,
    first_walk: FirstWalk,
) -> Result<(), StoreError> {
    let state = capture::state(store, Source::Audit)?;
    let from = match first_walk {
        FirstWalk::Delivers => "every audit row from the first",
        FirstWalk::TakesUnsent => "the audit rows from now on (SIEM_START=now)",
    };
    match state.consumer.as_deref() {
        Some(previous) if previous == backend => Ok(()),
        Some(previous) => {
            log::warn!(
                "siem-ship: SIEM_BACKEND changed from {previous} to {backend}; shipping {from} to {backend}"
            );
            forget_shipped(store)?;
            capture::restart(store, Source::Audit, backend, first_walk)
        }
        None => capture::set_first_walk(store, Source::Audit, first_walk),
    }
}

/// Empties the ledger of rows taken, in short transactions (a new backend takes every row).
fn forget_shipped(store: &Store) -> Result<(), StoreError> {
    let conn = store.conn()?;
    while conn.execute(
        "DELETE FROM audit_shipped WHERE item_id IN (SELECT item_id FROM audit_shipped LIMIT 5000)",
        [],
    )? > 0
    {}
    Ok(())
}

/// Adds the ids of every audit row the backend has taken to a gap's recovery.
pub fn shipped_ids(known: &mut capture::KnownIds) -> Result<(), StoreError> {
    known.add_selected("SELECT item_id FROM main.audit_shipped")
}

/// Records a run that delivered nothing because the intake failed; answers how many runs in
/// a row have now done so.
pub fn record_stall(store: &Store, backend: &str, why: &str, now: &str) -> Result<i64, StoreError> {
    Ok(store.conn()?.query_row(
        "INSERT INTO siem_cursors (backend, created_at, id, updated_at, stalled_runs, last_error)
         VALUES (?1, '', '', ?3, 1, ?2)
         ON CONFLICT (backend) DO UPDATE SET
             stalled_runs = siem_cursors.stalled_runs + 1, last_error = excluded.last_error,
             updated_at = excluded.updated_at
         RETURNING stalled_runs",
        (backend, why, now),
        |row| row.get(0),
    )?)
}

/// How many runs in a row delivered nothing, per backend.
pub fn stalled_runs(store: &Store, backend: &str) -> Result<i64, StoreError> {
    Ok(store
        .conn()?
        .query_row(
            "SELECT stalled_runs FROM siem_cursors WHERE backend = ?1",
            [backend],
            |row| row.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Takes the batch's first `settled` rows (delivered, dead-lettered or archived) from the walk
/// or the queue and keeps the dead letters, together, and notes the last row shipped.
pub fn record(
    store: &Store,
    backend: &str,
    batch: &Batch,
    settled: usize,
    dead_letters: &[DeadLetter<'_>],
    now: &str,
) -> Result<(), StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for letter in dead_letters {
        tx.execute(
            "INSERT INTO siem_dead_letters
                 (backend, audit_id, audit_created_at, status, reason, event, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (backend, audit_id) DO UPDATE SET
                 status = excluded.status, reason = excluded.reason,
                 event = excluded.event, created_at = excluded.created_at",
            (
                backend,
                &letter.row.id,
                &letter.row.created_at,
                letter.status,
                letter.reason,
                letter.event,
                now,
            ),
        )?;
    }
    match &batch.origin {
        Origin::Walk { ids, .. } => {
            let mut shipped =
                tx.prepare("INSERT OR IGNORE INTO audit_shipped (item_id) VALUES (?1)")?;
            for id in &ids[..settled] {
                shipped.execute([id])?;
            }
            if settled == ids.len() {
                capture::finish_walk(&tx, Source::Audit, &WalkProgress::Done)?;
            } else if settled > 0 {
                let last = WalkProgress::StoppedAfter(ids[settled - 1].clone());
                capture::finish_walk(&tx, Source::Audit, &last)?;
            }
        }
        Origin::Captured(seqs) => {
            // Rows gone from the table count as settled where they stand.
            let taken = seqs
                .iter()
                .take_while(|(_, row)| row.is_none_or(|index| index < settled))
                .last();
            if let Some((last, _)) = taken {
                tx.execute(
                    "INSERT OR IGNORE INTO audit_shipped (item_id)
                     SELECT item_id FROM audit_capture WHERE seq BETWEEN ?1 AND ?2",
                    (seqs[0].0, *last),
                )?;
                capture::delete_taken(&tx, Source::Audit, &[(seqs[0].0, *last)])?;
            }
        }
    }
    capture::note_seen(&tx, Source::Audit, now)?;
    if let Some(last) = batch.rows[..settled].last() {
        tx.execute(
            "INSERT INTO siem_cursors (backend, created_at, id, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (backend) DO UPDATE SET
                 created_at = excluded.created_at, id = excluded.id, updated_at = excluded.updated_at,
                 stalled_runs = 0, last_error = NULL",
            (backend, &last.created_at, &last.id, now),
        )?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    fn insert(store: &Store, rows: &[(&str, &str)]) {
        let conn = store.conn().unwrap();
        for (id, created_at) in rows {
            conn.execute(
                "INSERT INTO audit_log (id, tenant_id, action, details, created_at) VALUES (?1, 't', 'x', '{\"k\":1}', ?2)",
                (id, created_at),
            )
            .unwrap();
        }
    }

    fn ids(batch: &Batch) -> Vec<&str> {
        batch.rows.iter().map(|row| row.id.as_str()).collect()
    }

    #[test]
    fn rows_come_walked_then_in_commit_order_whatever_their_time() {
        let (_dir, store) = temp_store();
        store
            .conn()
            .unwrap()
            .execute("ALTER TABLE audit_log ADD COLUMN ip TEXT", [])
            .unwrap();
        insert(
            &store,
            &[
                ("b", "2026-01-01T00:00:02.000Z"),
                ("a", "2026-01-01T00:00:09.000Z"),
            ],
        );
        let first = next_batch(&store, "splunk", 10).unwrap();
        assert_eq!(ids(&first), ["a", "b"]);
        assert_eq!(first.rows[1].fields["details"]["k"], 1);
        assert!(first.rows[0].fields.contains_key("ip"));
        // Committed after the walk began, stamped hours earlier: still shipped, in commit order.
        insert(
            &store,
            &[
                ("z", "2026-01-01T00:00:05.000Z"),
                ("c", "2025-12-31 22:00:00"),
            ],
        );
        record(&store, "splunk", &first, 2, &[], "now").unwrap();
        let second = next_batch(&store, "splunk", 10).unwrap();
        assert_eq!(ids(&second), ["z", "c"]);
        assert_eq!(capture::note_backlog(&store, Source::Audit).unwrap(), 2);
        // Part of a batch settled: the rest comes again, a deleted row is skipped.
        record(&store, "splunk", &second, 1, &[], "now").unwrap();
        store
            .conn()
            .unwrap()
            .execute("DELETE FROM audit_log WHERE id = 'c'", [])
            .unwrap();
        insert(&store, &[("d", "2026-01-01T00:00:00.000Z")]);
        let third = next_batch(&store, "splunk", 10).unwrap();
        assert_eq!(ids(&third), ["d"]);
        record(&store, "splunk", &third, 1, &[], "now").unwrap();
        assert!(next_batch(&store, "splunk", 10).unwrap().is_empty());
        assert_eq!(capture::note_backlog(&store, Source::Audit).unwrap(), 0);
    }

    #[test]
    fn a_new_backend_gets_every_row_from_the_first() {
        let (_dir, store) = temp_store();
        insert(&store, &[("a", "2026-01-01T00:00:00.000Z")]);
        select_backend(&store, "splunk", FirstWalk::Delivers).unwrap();
        let batch = next_batch(&store, "splunk", 10).unwrap();
        record(&store, "splunk", &batch, 1, &[], "now").unwrap();
        insert(&store, &[("b", "2026-01-01T00:00:01.000Z")]);
        select_backend(&store, "elastic", FirstWalk::Delivers).unwrap();
        assert_eq!(ids(&next_batch(&store, "elastic", 10).unwrap()), ["a", "b"]);
    }
}
