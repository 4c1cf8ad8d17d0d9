//! What `dsar-purge` works on: retention policies (some on legal hold), decision traces and
//! AI attachments with their blobs.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Transaction, params};
use serde_json::json;

use super::{DemoError, HISTORY_DAYS, Tenant, ago, write_file};
use crate::clock::to_store_text;

/// acme: several classes, the strictest positive is 60 days, a legal hold at 30 is ignored;
/// globex: one year; initech: only a held policy (scanned, skipped); umbrella: no policy;
/// the inactive tenant: 14 days.
pub(super) fn insert_policies(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    index: usize,
) -> Result<u64, DemoError> {
    let policies: &[(&str, i64, bool)] = match (index, tenant.active) {
        (_, false) => &[("all", 14, false)],
        (0, _) => &[
            ("all", 90, false),
            ("interaction_history", 60, false),
            ("decision_traces", 30, true),
            ("ai_attachments", 0, false),
        ],
        (1, _) => &[("all", 365, false)],
        (2, _) => &[("all", 30, true)],
        _ => &[],
    };
    for (class, days, hold) in policies {
        tx.execute(
            "INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES (?1, ?2, ?3, ?4)",
            params![tenant.id, class, days, hold],
        )?;
    }
    Ok(policies.len() as u64)
}

pub(super) fn insert_traces(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
    count: usize,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO decision_traces (id, tenant_id, customer_id, decision, trace, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    for n in 0..count {
        let decision = ["send", "hold", "suppress", "escalate"][rng.usize(..4)];
        let trace = json!({"model": "next-best-action", "version": 3, "inputs": rng.u32(3..40), "confidence": (rng.f64() * 100.0).round() / 100.0});
        statement.execute(params![
            format!("dt-{}-{n:06}", tenant.id),
            tenant.id,
            format!("cust-{:05}", rng.u32(1..2000)),
            decision,
            trace.to_string(),
            to_store_text(ago(now, rng, Duration::days(HISTORY_DAYS)))
        ])?;
    }
    Ok(count as u64)
}

/// Two thirds of the attachments have their blob on disk; the rest are already gone.
pub(super) fn insert_attachments(
    tx: &Transaction<'_>,
    tenant: &Tenant,
    rng: &mut fastrand::Rng,
    now: DateTime<Utc>,
    data_dir: &Path,
) -> Result<u64, DemoError> {
    let mut statement = tx.prepare("INSERT INTO ai_attachments (id, tenant_id, blob_path, content_type, bytes, created_at) VALUES (?1, ?2, ?3, 'text/plain', ?4, ?5)")?;
    for n in 0..30 {
        let id = format!("att-{}-{n:03}", tenant.id);
        let blob_path = format!("blobs/{}/{id}.txt", tenant.id);
        let contents = format!("transcript {id}\n").repeat(rng.usize(1..20));
        if n % 3 != 0 {
            write_file(&data_dir.join(&blob_path), contents.as_bytes())?;
        }
        statement.execute(params![
            id,
            tenant.id,
            blob_path,
            contents.len() as i64,
            to_store_text(ago(now, rng, Duration::days(HISTORY_DAYS)))
        ])?;
    }
    Ok(30)
}
