//! Customer interactions: the history every export reads (a cluster of rows sharing one
//! `created_at`, pairs in the same millisecond), suppressions (a third expired) and daily and
//! monthly summaries going back 400 days.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Transaction, params};
use serde_json::json;

use super::{CAMPAIGNS, DemoError, HISTORY_DAYS, Tenant, ago};
use crate::clock::to_store_text;

const CHANNELS: &[&str] = &["email", "sms", "push", "web", "call", "chat"];
const OUTCOMES: &[&str] = &[
    "delivered",
    "opened",
    "clicked",
    "replied",
    "converted",
    "bounced",
    "unsubscribed",
];
/// Rows in one cluster that share a single `created_at`, as bulk imports produce.
const SHARED_TIMESTAMP_ROWS: usize = 60;

pub(super) fn insert_interactions(
    tx: &Transaction<'_>,
    tenants: &[Tenant],
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
    rows: usize,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare(
        "INSERT INTO interaction_history (id, tenant_id, customer_id, channel, outcome, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let shared = to_store_text(now - Duration::days(3) - Duration::milliseconds(123));
    let mut previous = to_store_text(now);
    for n in 0..rows {
        let tenant = &tenants[n % tenants.len()];
        let created_at = if n < SHARED_TIMESTAMP_ROWS * tenants.len() && n % tenants.len() == 0 {
            shared.clone()
        } else if n % 97 == 0 {
            // Now and then two rows land in the same millisecond.
            previous.clone()
        } else {
            to_store_text(ago(now, rng, Duration::days(HISTORY_DAYS)))
        };
        let channel = CHANNELS[rng.usize(..CHANNELS.len())];
        let outcome = OUTCOMES[rng.usize(..OUTCOMES.len())];
        let payload = json!({
            "campaign": CAMPAIGNS[rng.usize(..CAMPAIGNS.len())],
            "subject": format!("Message {}", rng.u32(1..5000)),
            "score": (rng.f64() * 1000.0).round() / 1000.0,
            "tags": [channel, outcome],
        });
        statement.execute(params![
            format!("ih-{}-{n:08}", tenant.id),
            tenant.id,
            format!("cust-{:05}", rng.u32(1..2000)),
            channel,
            outcome,
            payload.to_string(),
            created_at,
        ])?;
        previous = created_at;
    }
    Ok(rows as u64)
}

pub(super) fn insert_suppressions(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO suppressions (id, tenant_id, customer_id, reason, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    for n in 0..30 {
        let expires_at = match n % 3 {
            0 => Some(to_store_text(ago(now, rng, Duration::days(30)))),
            1 => Some(to_store_text(now + Duration::days(rng.i64(1..60)))),
            _ => None,
        };
        let reason = ["bounce", "complaint", "unsubscribe"][n % 3];
        statement.execute(params![
            format!("sup-{}-{n:03}", tenant.id),
            tenant.id,
            format!("cust-{:05}", rng.u32(1..2000)),
            reason,
            expires_at,
            to_store_text(now - Duration::days(90))
        ])?;
    }
    Ok(30)
}

pub(super) fn insert_summaries(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare(
        "INSERT INTO interaction_summaries (id, tenant_id, customer_id, period_type, period_start, interactions, positive) VALUES (?1, ?2, 'all', ?3, ?4, ?5, ?6)",
    )?;
    let mut count = 0;
    for day in 0..400 {
        let start = (now - Duration::days(day)).date_naive();
        let interactions = rng.u32(50..500);
        statement.execute(params![
            format!("sum-{}-d{day:03}", tenant.id),
            tenant.id,
            "daily",
            start.to_string(),
            interactions,
            interactions / 3
        ])?;
        count += 1;
        if day % 30 == 0 {
            statement.execute(params![
                format!("sum-{}-m{day:03}", tenant.id),
                tenant.id,
                "monthly",
                start.to_string(),
                interactions * 30,
                interactions * 10
            ])?;
            count += 1;
        }
    }
    Ok(count)
}
