//! Audit-log rows of the last day and a half, what `siem-ship` ships.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Transaction, params};
use serde_json::json;

use super::{DemoError, Tenant, ago};
use crate::clock::to_store_text;

pub(super) fn insert_audit(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO audit_log (id, tenant_id, actor, action, target, details, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
    for n in 0..120 {
        let action = [
            "user.login",
            "export.requested",
            "policy.updated",
            "customer.deleted",
            "api_key.rotated",
        ][rng.usize(..5)];
        let details = json!({"ip": format!("10.0.{}.{}", rng.u8(0..255), rng.u8(1..255)), "userAgent": "Mozilla/5.0"});
        statement.execute(params![
            format!("aud-{}-{n:04}", tenant.id),
            tenant.id,
            format!("user-{}", rng.u32(1..40)),
            action,
            format!("obj-{}", rng.u32(1..1000)),
            details.to_string(),
            to_store_text(ago(now, rng, Duration::hours(36)))
        ])?;
    }
    Ok(120)
}
