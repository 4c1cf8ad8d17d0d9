//! Comparing the application's times as instants in SQL, whatever form they were written in
//! (SPEC §6), without giving up the index on the column.
//!
//! Every connection has `edgecron_instant(value)`: the Unix milliseconds of the instant the
//! value names, read as `clock::from_store_value` reads it (text in any form SQLite reads, a
//! number as a Julian day), or NULL when it names none. A condition from [`before`] pairs it
//! with ranges on the column itself, so the index narrows the rows and the function decides
//! each exactly: numbers and the ISO forms sort before the day two days past the cutoff (an
//! offset moves a time by less than a day); a Julian day stored as text (`2461010.5`: a TEXT
//! column keeps a number the application wrote as text) sorts among far-future years instead,
//! so a second range, from that day to the cutoff's own Julian day, is the bounded pass that
//! finds it (it holds the rows after the cutoff, read once, in a change's last batch). A time
//! that names no instant is never before any cutoff, so nothing is deleted on a guess;
//! [`unreadable`] counts such values.

use chrono::{DateTime, Days, Utc};
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value;

use crate::clock::from_store_value;

/// Adds `edgecron_instant` to a connection.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "edgecron_instant",
        1,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| Ok(from_store_value(ctx.get_raw(0)).map(|time| time.timestamp_millis())),
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
    // The Julian bound is a number computed here, written into the SQL so that a condition
    // keeps taking two parameters (callers number theirs after it).
    let julian = julian_text_bound(cutoff);
    Condition {
        sql: format!(
            "({column} < ?{first} OR ({column} >= ?{first} AND {column} < '{julian}')) \
             AND edgecron_instant({column}) < ?{}",
            first + 1
        ),
        params: vec![
            Value::Text(text_bound(cutoff)),
            Value::Integer(cutoff.timestamp_millis()),
        ],
    }
}

/// True for rows whose `column` holds a value that names no instant, so it can never be
/// found past `cutoff`: text that cannot start a date (found by the index), or a value before
/// the cutoff's text bound that the function cannot read (`2026-02-30`).
pub fn unreadable(column: &str, cutoff: DateTime<Utc>, first: usize) -> Condition {
    Condition {
        sql: format!(
            "({column} >= ':' OR {column} < ?{first}) AND edgecron_instant({column}) IS NULL"
        ),
        params: vec![Value::Text(text_bound(cutoff))],
    }
}

/// Texts in the ISO forms naming an instant before `cutoff` all sort before this day.
fn text_bound(cutoff: DateTime<Utc>) -> String {
    cutoff
        .date_naive()
        .checked_add_days(Days::new(2))
        .map_or_else(
            || "9999".to_string(),
            |day| day.format("%Y-%m-%d").to_string(),
        )
}

/// Julian days written as text naming an instant before `cutoff` all sort before this text
/// (every day of years 0001-9999 has seven digits before its point).
fn julian_text_bound(cutoff: DateTime<Utc>) -> String {
    const UNIX_EPOCH_JULIAN_DAY: f64 = 2_440_587.5;
    let day = UNIX_EPOCH_JULIAN_DAY + cutoff.timestamp_millis() as f64 / 86_400_000.0;
    format!("{}", day.ceil() as i64 + 1)
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
            ("2461375.5", true),
            ("2461376.5", false),
            ("2451544.5", true),
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
