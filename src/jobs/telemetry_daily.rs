//! `telemetry-daily`: roll raw `telemetry_events` up into `telemetry_daily(date, event, count,
//! unique_users, meta)`, for yesterday (UTC) or for `startDate..=endDate`.
//!
//! Each date is recomputed from the raw events and replaced in one transaction, so any number
//! of runs over any overlapping ranges leaves the same table. SQLite does the counting (the
//! same statements the shell would run); Rust only caps the merged metadata.
//!
//! `meta` merges the events' metadata per key: `{"plan": {"free": 12, "pro": 3}}`, the 20 most
//! frequent values of a key kept and the rest summed under `"(other)"`, at most 50 keys per
//! row, so one noisy key cannot blow up a row. An event whose `meta` is not a JSON object
//! still counts; it is left out of the merge and counted in `malformedMeta`.
//!
//! A date with fewer raw events than its stored rollup counted was (at least partly) purged
//! by retention: it is reported in `purgedDates` and left alone, never overwritten with less.

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use rusqlite::{Connection, TransactionBehavior};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{Job, JobCtx, JobError, JobOutput};
use crate::clock::to_store_text;

pub struct TelemetryDaily;

const MAX_VALUES_PER_KEY: usize = 20;
const MAX_KEYS: usize = 50;
/// Keys tracked per event while reading, before the 50 most frequent are chosen.
const MAX_KEYS_TRACKED: usize = 1_000;
const MAX_TEXT_CHARS: usize = 100;
const OTHER: &str = "(other)";
/// Rows shown by a dry run; the counts cover them all.
const PREVIEW_ROWS: usize = 1_000;

/// One `telemetry_daily` row as computed.
#[derive(Debug, Clone, PartialEq)]
struct Rollup {
    event: String,
    count: i64,
    unique_users: i64,
    meta: Map<String, Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    dates: u64,
    rows: u64,
    dry_run: bool,
    start_date: Option<String>,
    end_date: Option<String>,
    purged_dates: Vec<String>,
    malformed_meta: i64,
    meta_keys_dropped: u64,
    finished: bool,
    /// A dry run's rows, at most [`PREVIEW_ROWS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    preview: Option<Vec<Preview>>,
}

/// A row a dry run would write.
#[derive(Serialize)]
struct Preview {
    date: String,
    event: String,
    count: i64,
    unique_users: i64,
    meta: Map<String, Value>,
}

/// One date's recomputation.
struct DateRollup {
    rows: Vec<Rollup>,
    malformed_meta: i64,
    keys_dropped: u64,
}

impl Job for TelemetryDaily {
    fn name(&self) -> &'static str {
        "telemetry-daily"
    }

    fn default_schedule(&self) -> &'static str {
        "0 2 * * *"
    }

    fn legacy_routes(&self) -> &'static [&'static str] {
        &["/api/jobs/telemetry-daily"]
    }

    fn takes_date_range(&self) -> bool {
        true
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let dates = dates(ctx);
        let dry_run = ctx.params.dry_run;
        let (mut rows, mut malformed, mut keys_dropped) = (0u64, 0i64, 0u64);
        let mut purged = Vec::new();
        let mut preview = Vec::new();
        let mut done = 0u64;
        let mut conn = ctx.store.conn()?;
        for date in &dates {
            if ctx.should_stop() {
                break;
            }
            let rollup = compute(&conn, *date)?;
            malformed += rollup.malformed_meta;
            keys_dropped += rollup.keys_dropped;
            let raw_total: i64 = rollup.rows.iter().map(|row| row.count).sum();
            let stored_total = stored_total(&conn, *date)?;
            done += 1;
            if raw_total < stored_total {
                log::warn!(
                    "telemetry-daily: {date} has {raw_total} raw events but its rollup counted {stored_total}; purged by retention, left alone"
                );
                purged.push(date.to_string());
                continue;
            }
            rows += rollup.rows.len() as u64;
            if dry_run {
                for row in rollup
                    .rows
                    .iter()
                    .take(PREVIEW_ROWS.saturating_sub(preview.len()))
                {
                    preview.push(Preview {
                        date: date.to_string(),
                        event: row.event.clone(),
                        count: row.count,
                        unique_users: row.unique_users,
                        meta: row.meta.clone(),
                    });
                }
                continue;
            }
            replace(&mut conn, *date, &rollup.rows, &to_store_text(ctx.now()))?;
        }
        let finished = done == dates.len() as u64;
        let report = Report {
            dates: done,
            rows,
            dry_run,
            start_date: dates.first().map(ToString::to_string),
            end_date: dates.last().map(ToString::to_string),
            purged_dates: purged,
            malformed_meta: malformed,
            meta_keys_dropped: keys_dropped,
            finished,
            preview: dry_run.then_some(preview),
        };
        JobOutput::new(&report, 0, if dry_run { 0 } else { rows })
    }
}

/// The dates a run covers: the given range (one given date alone means that day), else
/// yesterday in UTC.
fn dates(ctx: &JobCtx<'_>) -> Vec<NaiveDate> {
    let yesterday = ctx.now().date_naive() - Days::new(1);
    let (start, end) = ctx.params.date_range().unwrap_or((yesterday, yesterday));
    start.iter_days().take_while(|day| *day <= end).collect()
}

fn day_bounds(date: NaiveDate) -> (String, String) {
    let next = date + Days::new(1);
    (
        format!("{date}T00:00:00.000Z"),
        format!("{next}T00:00:00.000Z"),
    )
}

/// Recomputes one date from the raw events.
fn compute(conn: &Connection, date: NaiveDate) -> Result<DateRollup, JobError> {
    let (from, to) = day_bounds(date);
    let mut counts = conn.prepare_cached(
        "SELECT event, COUNT(*), COUNT(DISTINCT user_id),
                SUM(CASE WHEN json_valid(meta) THEN json_type(meta) <> 'object' ELSE 1 END)
           FROM telemetry_events
          WHERE created_at >= ?1 AND created_at < ?2
          GROUP BY event ORDER BY event",
    )?;
    let mut rows = Vec::new();
    let mut malformed_meta = 0;
    let mut found = counts.query((&from, &to))?;
    while let Some(row) = found.next()? {
        malformed_meta += row.get::<_, i64>(3)?;
        rows.push(Rollup {
            event: row.get(0)?,
            count: row.get(1)?,
            unique_users: row.get(2)?,
            meta: Map::new(),
        });
    }
    // Only objects are merged; anything else is read as an empty object. CASE, not AND:
    // SQLite may evaluate both sides of an AND, and json_type() fails on malformed JSON.
    let mut values = conn.prepare_cached(
        "SELECT e.event, j.key, j.type, j.value, COUNT(*)
           FROM telemetry_events AS e,
                json_each(CASE WHEN NOT json_valid(e.meta) THEN '{}'
                               WHEN json_type(e.meta) = 'object' THEN e.meta ELSE '{}' END) AS j
          WHERE e.created_at >= ?1 AND e.created_at < ?2
          GROUP BY e.event, j.key, j.type, j.value",
    )?;
    let mut merged: BTreeMap<String, EventMeta> = BTreeMap::new();
    let mut found = values.query((&from, &to))?;
    while let Some(row) = found.next()? {
        let value = value_text(&row.get::<_, String>(2)?, row.get_ref(3)?);
        let key: String = row.get(1)?;
        merged
            .entry(row.get(0)?)
            .or_default()
            .add(truncated(&key), value, row.get(4)?);
    }
    let mut keys_dropped = 0;
    for rollup in &mut rows {
        if let Some(event_meta) = merged.remove(&rollup.event) {
            keys_dropped += event_meta.dropped_keys.len() as u64;
            let (meta, dropped) = cap_meta(event_meta.keys);
            rollup.meta = meta;
            keys_dropped += dropped;
        }
    }
    Ok(DateRollup {
        rows,
        malformed_meta,
        keys_dropped,
    })
}

/// Keys and values are bucketed by their first characters, so neither can bloat a row.
fn truncated(text: &str) -> String {
    text.chars().take(MAX_TEXT_CHARS).collect()
}

/// One key's values while they are read: the most frequent kept, the others only counted,
/// so a key with a million distinct values costs no more memory than one with twenty. SQLite
/// has already counted each value exactly, so the values kept are exactly the top ones.
#[derive(Debug, Default)]
struct KeyValues {
    kept: Vec<(String, i64)>,
    other: i64,
    total: i64,
}

impl KeyValues {
    fn add(&mut self, value: String, count: i64) {
        self.total += count;
        // Two values can read the same once truncated; their counts add up.
        if let Some(same) = self.kept.iter_mut().find(|(kept, _)| *kept == value) {
            same.1 += count;
            return;
        }
        if self.kept.len() < MAX_VALUES_PER_KEY {
            self.kept.push((value, count));
            return;
        }
        // The weakest kept value: the least frequent, the last by name among equals.
        let weakest = (0..self.kept.len()).min_by(|&a, &b| {
            let (a, b) = (&self.kept[a], &self.kept[b]);
            a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0))
        });
        match weakest {
            Some(index) if (count, &self.kept[index].0) > (self.kept[index].1, &value) => {
                let evicted = std::mem::replace(&mut self.kept[index], (value, count));
                self.other += evicted.1;
            }
            _ => self.other += count,
        }
    }
}

/// One event's metadata while it is read, with a bound on how many keys are tracked.
#[derive(Debug, Default)]
struct EventMeta {
    keys: BTreeMap<String, KeyValues>,
    /// Keys seen after `MAX_KEYS_TRACKED` others: left out, and counted.
    dropped_keys: std::collections::BTreeSet<String>,
}

impl EventMeta {
    fn add(&mut self, key: String, value: String, count: i64) {
        if !self.keys.contains_key(&key) && self.keys.len() >= MAX_KEYS_TRACKED {
            if self.dropped_keys.len() < MAX_KEYS_TRACKED {
                self.dropped_keys.insert(key);
            }
            return;
        }
        self.keys.entry(key).or_default().add(value, count);
    }
}

/// A metadata value as the key's bucket names it: strings as they are, anything else as JSON.
fn value_text(kind: &str, value: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    let text = match (kind, value) {
        ("true", _) => "true".to_string(),
        ("false", _) => "false".to_string(),
        ("null", _) | (_, ValueRef::Null) => "null".to_string(),
        (_, ValueRef::Integer(number)) => number.to_string(),
        (_, ValueRef::Real(number)) => number.to_string(),
        (_, ValueRef::Text(text) | ValueRef::Blob(text)) => {
            String::from_utf8_lossy(text).into_owned()
        }
    };
    truncated(&text)
}

/// Keeps the most frequent keys, each with its most frequent values and `"(other)"`; answers
/// the merged object and how many keys were left out.
fn cap_meta(keys: BTreeMap<String, KeyValues>) -> (Map<String, Value>, u64) {
    let mut keys: Vec<(String, KeyValues)> = keys.into_iter().collect();
    keys.sort_by(|a, b| b.1.total.cmp(&a.1.total).then_with(|| a.0.cmp(&b.0)));
    let dropped = keys.len().saturating_sub(MAX_KEYS) as u64;
    let mut meta = Map::new();
    for (key, mut values) in keys.into_iter().take(MAX_KEYS) {
        values
            .kept
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut bucket: Map<String, Value> = values
            .kept
            .into_iter()
            .map(|(value, count)| (value, json!(count)))
            .collect();
        if values.other > 0 {
            let kept = bucket.get(OTHER).and_then(Value::as_i64).unwrap_or(0);
            bucket.insert(OTHER.into(), json!(kept + values.other));
        }
        meta.insert(key, Value::Object(bucket));
    }
    (meta, dropped)
}

fn stored_total(conn: &Connection, date: NaiveDate) -> Result<i64, JobError> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(count), 0) FROM telemetry_daily WHERE date = ?1",
        [date.to_string()],
        |row| row.get(0),
    )?)
}

/// Replaces one date's rows in one transaction.
fn replace(
    conn: &mut Connection,
    date: NaiveDate,
    rows: &[Rollup],
    now: &str,
) -> Result<(), JobError> {
    let date = date.to_string();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("DELETE FROM telemetry_daily WHERE date = ?1", [&date])?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO telemetry_daily (date, event, count, unique_users, meta, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for row in rows {
            insert.execute((
                &date,
                &row.event,
                row.count,
                row.unique_users,
                Value::Object(row.meta.clone()).to_string(),
                now,
            ))?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::RunParams;
    use crate::jobs::test_support::Harness;
    use chrono::{TimeZone, Utc};

    fn harness() -> Harness {
        let harness = Harness::new(Utc.with_ymd_and_hms(2026, 3, 10, 8, 0, 0).unwrap());
        harness.exec(
            "INSERT INTO telemetry_events (id, event, user_id, meta, created_at) VALUES
               ('1', 'login', 'u1', '{\"plan\":\"pro\",\"beta\":true}', '2026-03-09T00:00:00.000Z'),
               ('2', 'login', 'u1', '{\"plan\":\"free\"}',              '2026-03-09T10:00:00.000Z'),
               ('3', 'login', 'u2', '{\"plan\":\"pro\",\"n\":3}',       '2026-03-09T23:59:59.999Z'),
               ('4', 'login', NULL, 'not json',                          '2026-03-09T12:00:00.000Z'),
               ('5', 'export', 'u3', '[1,2]',                            '2026-03-09T12:00:00.000Z'),
               ('6', 'login', 'u9', '{\"plan\":\"pro\"}',               '2026-03-10T00:00:00.000Z'),
               ('7', 'login', 'u8', '{\"plan\":\"pro\"}',               '2026-03-08T23:59:59.999Z');",
        );
        harness
    }

    fn table(harness: &Harness) -> Vec<String> {
        harness.strings(
            "SELECT date || ' ' || event || ' ' || count || ' ' || unique_users || ' ' || meta
               FROM telemetry_daily ORDER BY date, event",
        )
    }

    #[test]
    fn yesterday_is_rolled_up_with_merged_meta() {
        let harness = harness();
        let output = TelemetryDaily.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["dates"], 1);
        assert_eq!(output.body["rows"], 2);
        assert_eq!(output.body["malformedMeta"], 2);
        assert_eq!(
            table(&harness),
            [
                "2026-03-09 export 1 1 {}",
                r#"2026-03-09 login 4 2 {"beta":{"true":1},"n":{"3":1},"plan":{"free":1,"pro":2}}"#,
            ]
        );
    }

    #[test]
    fn reruns_and_overlapping_ranges_leave_the_same_table_and_purged_days_alone() {
        let mut harness = harness();
        harness.params =
            RunParams::from_text(false, Some("2026-03-08"), Some("2026-03-09")).unwrap();
        TelemetryDaily.run(&harness.ctx()).unwrap();
        let first = table(&harness);
        harness.params =
            RunParams::from_text(false, Some("2026-03-09"), Some("2026-03-10")).unwrap();
        TelemetryDaily.run(&harness.ctx()).unwrap();
        harness.params =
            RunParams::from_text(false, Some("2026-03-08"), Some("2026-03-10")).unwrap();
        TelemetryDaily.run(&harness.ctx()).unwrap();
        let mut expected = first.clone();
        expected.push(r#"2026-03-10 login 1 1 {"plan":{"pro":1}}"#.into());
        assert_eq!(table(&harness), expected);

        // Retention purges the 8th's raw events: its rollup stays as it was.
        harness.exec("DELETE FROM telemetry_events WHERE created_at < '2026-03-09'");
        harness.params =
            RunParams::from_text(false, Some("2026-03-08"), Some("2026-03-10")).unwrap();
        let output = TelemetryDaily.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["purgedDates"], json!(["2026-03-08"]));
        assert_eq!(table(&harness), expected);
    }

    #[test]
    fn a_dry_run_previews_and_writes_nothing() {
        let mut harness = harness();
        harness.params = RunParams::from_text(true, None, None).unwrap();
        let output = TelemetryDaily.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["preview"].as_array().unwrap().len(), 2);
        assert_eq!(output.body["preview"][1]["count"], 4);
        assert_eq!(
            harness.query::<i64>("SELECT COUNT(*) FROM telemetry_daily"),
            0
        );
    }

    #[test]
    fn noisy_keys_and_values_are_capped_while_read() {
        let mut event = EventMeta::default();
        for key in 0..60 {
            // Values arrive in an order that puts the most frequent last.
            for value in (0..30).rev() {
                event.add(
                    format!("k{key:02}"),
                    format!("v{value:02}"),
                    1 + key + value,
                );
            }
        }
        let (meta, dropped) = cap_meta(event.keys);
        assert_eq!((meta.len(), dropped), (MAX_KEYS, 10));
        assert!(!meta.contains_key("k00"), "the least frequent keys go");
        let bucket = meta["k59"].as_object().unwrap();
        assert_eq!(bucket.len(), MAX_VALUES_PER_KEY + 1);
        assert!(
            bucket.contains_key("v29") && !bucket.contains_key("v09"),
            "{bucket:?}"
        );
        // v00..v09 are 60..69 each.
        assert_eq!(bucket[OTHER], (60..70).sum::<i64>());

        let mut wide = EventMeta::default();
        for key in 0..MAX_KEYS_TRACKED + 5 {
            wide.add(format!("id-{key}"), "x".into(), 1);
        }
        assert_eq!(
            (wide.keys.len(), wide.dropped_keys.len()),
            (MAX_KEYS_TRACKED, 5)
        );
    }
}
