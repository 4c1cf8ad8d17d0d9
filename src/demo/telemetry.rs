//! Raw telemetry events of the last 30 days (a few with unreadable meta), what
//! `telemetry-daily` rolls up.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Transaction, params};
use serde_json::json;

use super::{DemoError, ago};
use crate::clock::to_store_text;

const EVENTS: &[&str] = &[
    "login",
    "page_view",
    "export_started",
    "search",
    "report_viewed",
];

pub(super) fn insert_telemetry(
    tx: &Transaction<'_>,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
    count: usize,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO telemetry_events (id, event, user_id, meta, created_at) VALUES (?1, ?2, ?3, ?4, ?5)")?;
    for n in 0..count {
        let meta = if n % 211 == 0 {
            "{not json".to_string()
        } else {
            let plan = ["free", "team", "enterprise"][rng.usize(..3)];
            let browser = ["firefox", "chrome", "safari"][rng.usize(..3)];
            json!({"plan": plan, "browser": browser}).to_string()
        };
        statement.execute(params![
            format!("demo-{n:08}"),
            EVENTS[rng.usize(..EVENTS.len())],
            format!("u-{}", rng.u32(1..300)),
            meta,
            to_store_text(ago(now, rng, Duration::days(30)))
        ])?;
    }
    Ok(count as u64)
}
