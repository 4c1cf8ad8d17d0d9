//! The application's pending work: outbox messages (some stuck in `processing`) and
//! approvals (some past their expiry), what `outbox-reaper` and `approvals-expire` act on.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Transaction, params};
use serde_json::json;

use super::{CAMPAIGNS, DemoError, Tenant};
use crate::clock::to_store_text;

/// Stuck `processing` rows (some out of attempts), and ordinary pending and done ones.
pub(super) fn insert_outbox(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO outbox (tenant_id, topic, payload, status, attempts, locked_at, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)")?;
    for n in 0..20 {
        let (status, attempts, locked_at) = match n % 5 {
            0 => ("processing", 1, Some(now - Duration::hours(2))),
            1 => ("processing", 5, Some(now - Duration::hours(3))),
            2 => ("processing", 2, Some(now - Duration::seconds(20))),
            3 => ("pending", 0, None),
            _ => ("done", 1, None),
        };
        let payload = json!({"to": format!("cust-{:05}", rng.u32(1..2000)), "template": CAMPAIGNS[n % CAMPAIGNS.len()]});
        statement.execute(params![
            tenant.id,
            "message.send",
            payload.to_string(),
            status,
            attempts,
            locked_at.map(to_store_text),
            to_store_text(now - Duration::hours(4))
        ])?;
    }
    Ok(20)
}

pub(super) fn insert_approvals(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO approvals (id, tenant_id, kind, subject, status, requested_by, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?;
    for n in 0..12 {
        let (status, expires_at) = match n % 4 {
            0 | 1 => ("pending", now - Duration::hours(rng.i64(1..72))),
            2 => ("pending", now + Duration::hours(rng.i64(1..72))),
            _ => ("approved", now - Duration::days(2)),
        };
        statement.execute(params![
            format!("apr-{}-{n:02}", tenant.id),
            tenant.id,
            "campaign.launch",
            format!("campaign-{n}"),
            status,
            format!("user-{}", n + 1),
            to_store_text(expires_at),
            to_store_text(now - Duration::days(5))
        ])?;
    }
    Ok(12)
}
