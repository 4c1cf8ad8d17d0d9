//! Comparing the application's times as instants in SQL, whatever form they were written in
//! (SPEC §6), without giving up the index on the column.
//!
//! Every connection has `edgecron_instant(text)`: the Unix milliseconds of the instant the text
//! names, read as `clock::from_store_text` reads it, or NULL when it names none. A condition
//! from [`before`] pairs it with a range on the text itself: no form an application may write
//! names an instant before a cutoff while its text sorts on or after the day two days later
//! (an offset moves a time by less than a day), so the index narrows the rows to those texts
//! and the function decides each exactly. A time that names no instant is never before any
//! cutoff, so nothing is deleted on a guess; [`unreadable`] counts such values.

use chrono::{DateTime, Days, Utc};
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::{Value, ValueRef};

use crate::clock::from_store_text;

/// Adds `edgecron_instant` to a connection.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "edgecron_instant",
        1,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| {
            Ok(match ctx.get_raw(0) {
                ValueRef::Text(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(from_store_text)
                    .map(|time| time.timestamp_millis()),
                _ => None,
            })
        },
    )
}

/// A SQL condition and its parameters, numbered from the `first` given to the function that
/// made it.
pub struct Condition {
    pub sql: String,
    pub params: Vec<Value>,
}

/// True for rows whose `column` (a column or an expression of them) is an instant before
/// `cutoff`.
pub fn before(column: &str, cutoff: DateTime<Utc>, first: usize) -> Condition {
    Condition {
        sql: format!(
            "{column} < ?{first} AND edgecron_instant({column}) < ?{}",
            first + 1
        ),
        params: vec![
            Value::Text(text_bound(cutoff)),
            Value::Integer(cutoff.timestamp_millis()),
        ],
    }
}

/// True for rows whose `column` holds a value that names no instant, so it can never be
/// found past `cutoff`: text that cannot start a date (found by the index), or text before
/// the cutoff's text bound that the function cannot read (`2026-02-30`).
pub fn unreadable(column: &str, cutoff: DateTime<Utc>, first: usize) -> Condition {
    Condition {
        sql: format!(
            "({column} < '0' OR {column} >= ':' OR ({column} < ?{first} AND edgecron_instant({column}) IS NULL))"
        ),
        params: vec![Value::Text(text_bound(cutoff))],
    }
}

/// Texts of any form naming an instant before `cutoff` all sort before this day.
fn text_bound(cutoff: DateTime<Utc>) -> String {
    cutoff
        .date_naive()
        .checked_add_days(Days::new(2))
        .map_or_else(
            || "9999".to_string(),
            |day| day.format("%Y-%m-%d").to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_form_is_compared_as_the_instant_it_names() {
        let conn = Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        conn.execute_batch("CREATE TABLE t (at TEXT); CREATE INDEX t_at ON t (at);")
            .unwrap();
        let cutoff = Utc.with_ymd_and_hms(2026, 12, 1, 23, 59, 59).unwrap();
        let rows = [
            ("2026-12-01 23:59:58", true),
            ("2026-12-01 23:59:59", false),
            ("2026-12-01T18:00:00-05:00", true),
            ("2026-12-01T20:00:00-05:00", false),
            ("2026-12-02T04:00:00+05:00", true),
            ("2026-12-02T05:00:00+05:00", false),
            ("2026-12-01T23:59:58Z", true),
            ("2026-12-01T23:59:59.000Z", false),
            ("2026-11-30T12:00:00.000Z", true),
            ("2020-01-01", true),
            ("unknown", false),
            ("", false),
            ("2026-02-30T00:00:00Z", false),
        ];
        for (at, _) in rows {
            conn.execute("INSERT INTO t (at) VALUES (?1)", [at])
                .unwrap();
        }
        let before = before("at", cutoff, 1);
        let sql = format!("SELECT at FROM t WHERE {} ORDER BY at", before.sql);
        let mut statement = conn.prepare(&sql).unwrap();
        let found: Vec<String> = statement
            .query_map(rusqlite::params_from_iter(&before.params), |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut expected: Vec<&str> = rows
            .iter()
            .filter(|(_, expired)| *expired)
            .map(|(at, _)| *at)
            .collect();
        expected.sort();
        assert_eq!(found, expected);
        let plan: String = conn
            .query_row(
                &format!("EXPLAIN QUERY PLAN {sql}"),
                rusqlite::params_from_iter(&before.params),
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains("t_at"), "{plan}");
        let unreadable = unreadable("at", cutoff, 1);
        let unreadable: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM t WHERE {}", unreadable.sql),
                rusqlite::params_from_iter(&unreadable.params),
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(unreadable, 3, "unknown, the empty text and February 30");
    }
}
