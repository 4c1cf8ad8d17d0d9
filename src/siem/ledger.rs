//! The SQL of SIEM shipping: reading audit rows after a backend's cursor, and recording how
//! far delivery got (the cursor and any dead letters, in one transaction).

use rusqlite::{OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::AuditRow;
use crate::store::{Cursor, Store, StoreError, row_object};

/// A row the intake refused for good.
pub struct DeadLetter<'a> {
    pub row: &'a AuditRow,
    pub status: Option<u16>,
    pub reason: &'a str,
    pub event: &'a str,
}

/// Where `backend` stands; the start (before every row) if it never shipped.
pub fn cursor(store: &Store, backend: &str) -> Result<Cursor, StoreError> {
    Ok(store
        .conn()?
        .query_row(
            "SELECT created_at, id FROM siem_cursors WHERE backend = ?1",
            [backend],
            |row| {
                Ok(Cursor {
                    created_at: row.get(0)?,
                    id: row.get(1)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default())
}

/// Up to `limit` rows after `cursor` created no later than `until`, in cursor order.
pub fn rows_after(
    store: &Store,
    cursor: &Cursor,
    until: &str,
    limit: usize,
) -> Result<Vec<AuditRow>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare_cached(
        "SELECT * FROM audit_log
          WHERE (created_at, id) > (?1, ?2) AND created_at <= ?3
          ORDER BY created_at, id LIMIT ?4",
    )?;
    let names: Vec<String> = statement
        .column_names()
        .iter()
        .map(|name| name.to_string())
        .collect();
    let mut rows = statement.query((&cursor.created_at, &cursor.id, until, limit as i64))?;
    let mut batch = Vec::new();
    while let Some(row) = rows.next()? {
        let mut fields = row_object(row, &names, 0)?;
        let text = |name: &str| {
            fields
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (id, created_at) = (text("id"), text("created_at"));
        // `details` is JSON text: shipped as JSON, so the SIEM can index its fields.
        if let Some(Value::String(details)) = fields.get("details")
            && let Ok(parsed) = serde_json::from_str::<Value>(details)
        {
            fields.insert("details".into(), parsed);
        }
        batch.push(AuditRow {
            id,
            created_at,
            fields,
        });
    }
    Ok(batch)
}

/// Rows after `cursor`, settled or not yet old enough to ship.
pub fn backlog(store: &Store, cursor: &Cursor) -> Result<u64, StoreError> {
    let count: i64 = store.conn()?.query_row(
        "SELECT COUNT(*) FROM audit_log WHERE (created_at, id) > (?1, ?2)",
        (&cursor.created_at, &cursor.id),
        |row| row.get(0),
    )?;
    Ok(count as u64)
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

/// Rows whose `created_at` is not the store's canonical text (`2026-03-30T02:00:00.000Z`):
/// text order is time order only for that form, so the cursor may pass such rows by.
pub fn non_canonical_times(store: &Store) -> Result<u64, StoreError> {
    let count: i64 = store.conn()?.query_row(
        "SELECT COUNT(*) FROM audit_log WHERE created_at NOT GLOB
           '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z'",
        [],
        |row| row.get(0),
    )?;
    Ok(count as u64)
}

/// Moves `backend`'s cursor to `cursor` and keeps the dead letters, together. The cursor never
/// moves backwards, so a run that lost its lease cannot rewind it.
pub fn record(
    store: &Store,
    backend: &str,
    cursor: &Cursor,
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
    tx.execute(
        "INSERT INTO siem_cursors (backend, created_at, id, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (backend) DO UPDATE SET
             created_at = excluded.created_at, id = excluded.id, updated_at = excluded.updated_at,
             stalled_runs = 0, last_error = NULL
         WHERE (excluded.created_at, excluded.id) > (siem_cursors.created_at, siem_cursors.id)",
        (backend, &cursor.created_at, &cursor.id, now),
    )?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    #[test]
    fn rows_come_in_cursor_order_with_details_as_json_and_extra_columns_kept() {
        let (_dir, store) = temp_store();
        store
            .conn()
            .unwrap()
            .execute_batch(
                "ALTER TABLE audit_log ADD COLUMN ip TEXT;
                 INSERT INTO audit_log (id, tenant_id, action, details, created_at, ip) VALUES
                   ('b', 't', 'x', '{\"k\":1}', '2026-01-01T00:00:00.000Z', '10.0.0.1'),
                   ('a', 't', 'x', 'not json', '2026-01-01T00:00:00.000Z', NULL),
                   ('c', 't', 'x', '{}', '2026-01-01T00:00:01.000Z', NULL),
                   ('d', 't', 'x', '{}', '2026-01-01T00:00:09.000Z', NULL);",
            )
            .unwrap();
        let start = cursor(&store, "splunk").unwrap();
        let rows = rows_after(&store, &start, "2026-01-01T00:00:05.000Z", 10).unwrap();
        let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(rows[0].fields["details"], "not json");
        assert_eq!(rows[1].fields["details"]["k"], 1);
        assert_eq!(rows[1].fields["ip"], "10.0.0.1");

        let letter = DeadLetter {
            row: &rows[0],
            status: Some(400),
            reason: "bad",
            event: "{}",
        };
        record(&store, "splunk", &rows[1].cursor(), &[letter], "now").unwrap();
        let moved = cursor(&store, "splunk").unwrap();
        assert_eq!(moved, rows[1].cursor());
        assert_eq!(backlog(&store, &moved).unwrap(), 2);
        let after = rows_after(&store, &moved, "9999", 10).unwrap();
        assert_eq!(after.len(), 2);
        assert_eq!(cursor(&store, "elastic").unwrap(), Cursor::default());
    }

    #[test]
    fn reading_after_the_cursor_uses_the_index() {
        let (_dir, store) = temp_store();
        let plan: String = store
            .conn()
            .unwrap()
            .query_row(
                "EXPLAIN QUERY PLAN SELECT * FROM audit_log
                  WHERE (created_at, id) > ('a', 'b') AND created_at <= 'z'
                  ORDER BY created_at, id LIMIT 5",
                [],
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains("audit_log_created"), "{plan}");
    }
}
