//! `dsar-purge`: per tenant, delete decision traces, interaction history and AI attachments
//! older than the strictest positive retention among its policies not on legal hold. Attachment
//! blobs go first (local file or S3 object, best-effort), then their rows; one audit row per
//! tenant records the counts. Batched and resumable: a purge stopped by its deadline finishes
//! on the next run.

use chrono::{DateTime, Duration, Utc};
use rusqlite::TransactionBehavior;
use rusqlite::types::Value;
use serde_json::{Value as Json, json};

use super::{FileRemoval, Job, JobCtx, JobError, JobOutput, remove_stored_file};
use crate::clock::to_store_text;
use crate::config::Config;
use crate::store::{BatchOutcome, BatchedChange};

pub struct DsarPurge;

const BATCH_SIZE: usize = 2_000;
const ATTACHMENT_BATCH: i64 = 200;

/// What was (or, in a dry run, would be) purged for one tenant.
#[derive(Default)]
struct TenantPurge {
    decision_traces: u64,
    interaction_history: u64,
    ai_attachments: u64,
    blobs_attempted: u64,
    blobs_deleted: u64,
    blobs_missing: u64,
    errors: Vec<String>,
    finished: bool,
}

impl Job for DsarPurge {
    fn name(&self) -> &'static str {
        "dsar-purge"
    }

    fn default_schedule(&self) -> &'static str {
        "30 3 * * *"
    }

    fn enabled_by_default(&self, _config: &Config) -> bool {
        false
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let now = ctx.now();
        let tenants = tenants(ctx)?;
        let mut per_tenant = Vec::with_capacity(tenants.len());
        let (mut blobs_attempted, mut rows, mut tenants_with_errors) = (0, 0, 0);
        let mut finished = true;
        for tenant_id in &tenants {
            if ctx.should_stop() {
                finished = false;
                break;
            }
            let Some(retention_days) = strictest_retention(ctx, tenant_id)? else {
                per_tenant.push(json!({"tenantId": tenant_id, "retentionDays": null, "skipped": "no retention policy without a legal hold and with positive retention_days"}));
                continue;
            };
            let cutoff = to_store_text(now - Duration::days(retention_days));
            let purge = purge_tenant(ctx, tenant_id, &cutoff)?;
            blobs_attempted += purge.blobs_attempted;
            rows += purge.decision_traces + purge.interaction_history + purge.ai_attachments;
            finished &= purge.finished;
            if !purge.errors.is_empty() {
                tenants_with_errors += 1;
            }
            let counts = json!({
                "tenantId": tenant_id,
                "retentionDays": retention_days,
                "cutoff": cutoff,
                "decisionTraces": purge.decision_traces,
                "interactionHistory": purge.interaction_history,
                "aiAttachments": purge.ai_attachments,
                "blobsDeleted": purge.blobs_deleted,
                "blobsMissing": purge.blobs_missing,
                "errors": purge.errors,
                "finished": purge.finished,
            });
            if !ctx.params.dry_run {
                audit(ctx, tenant_id, &counts, now)?;
            }
            per_tenant.push(counts);
        }
        Ok(JobOutput {
            body: json!({
                "ok": tenants_with_errors == 0,
                "tenantsScanned": per_tenant.len(),
                "totalBlobsAttempted": blobs_attempted,
                "perTenant": per_tenant,
                "finished": finished,
                "dryRun": ctx.params.dry_run,
            }),
            item_errors: tenants_with_errors,
            rows_processed: if ctx.params.dry_run { 0 } else { rows },
        })
    }
}

fn tenants(ctx: &JobCtx<'_>) -> Result<Vec<String>, JobError> {
    let conn = ctx.store.conn()?;
    let mut statement = conn.prepare(
        "SELECT id FROM tenants UNION SELECT DISTINCT tenant_id FROM retention_policies ORDER BY 1",
    )?;
    let ids = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
}

/// The smallest positive `retention_days` among the tenant's policies not on legal hold: a
/// policy on hold never shortens retention.
fn strictest_retention(ctx: &JobCtx<'_>, tenant_id: &str) -> Result<Option<i64>, JobError> {
    Ok(ctx.store.conn()?.query_row(
        "SELECT MIN(retention_days) FROM retention_policies
         WHERE tenant_id = ?1 AND COALESCE(legal_hold, 0) = 0 AND retention_days > 0",
        [tenant_id],
        |row| row.get(0),
    )?)
}

fn purge_tenant(ctx: &JobCtx<'_>, tenant_id: &str, cutoff: &str) -> Result<TenantPurge, JobError> {
    let mut purge = TenantPurge {
        finished: true,
        ..TenantPurge::default()
    };
    let params = vec![
        Value::Text(tenant_id.to_string()),
        Value::Text(cutoff.to_string()),
    ];
    for (table, count) in [
        ("decision_traces", &mut purge.decision_traces),
        ("interaction_history", &mut purge.interaction_history),
    ] {
        let label = format!("dsar-purge {tenant_id} {table}");
        let change = BatchedChange {
            label: &label,
            table,
            filter: "tenant_id = ?1 AND created_at < ?2",
            set_clause: None,
            params: params.clone(),
            batch_size: BATCH_SIZE,
        };
        if ctx.params.dry_run {
            *count = change.count(ctx.store)?;
            continue;
        }
        let (deleted, outcome) = change.run(ctx.store, || ctx.should_stop())?;
        *count = deleted;
        purge.finished &= outcome == BatchOutcome::Finished;
    }
    purge_attachments(ctx, tenant_id, cutoff, &mut purge)?;
    Ok(purge)
}

/// Attachments go a batch at a time: blobs first, then their rows, so a crash in between
/// leaves rows whose blobs are already gone (counted as missing next time), never orphaned
/// blobs. A row whose blob cannot be deleted (storage down, a path outside the data dir) is
/// kept, and passed over for the rest of the run: its blob is still personal data, and the
/// row is what makes the next run try again.
fn purge_attachments(
    ctx: &JobCtx<'_>,
    tenant_id: &str,
    cutoff: &str,
    purge: &mut TenantPurge,
) -> Result<(), JobError> {
    if ctx.params.dry_run {
        purge.ai_attachments = ctx.store.conn()?.query_row(
            "SELECT COUNT(*) FROM ai_attachments WHERE tenant_id = ?1 AND created_at < ?2",
            (tenant_id, cutoff),
            |row| row.get::<_, i64>(0),
        )? as u64;
        return Ok(());
    }
    let storage = ctx.storage()?;
    let mut kept: Vec<i64> = Vec::new();
    loop {
        if ctx.should_stop() {
            purge.finished = false;
            return Ok(());
        }
        let batch: Vec<(i64, Option<String>)> = {
            let conn = ctx.store.conn()?;
            let mut statement = conn.prepare(
                "SELECT rowid, blob_path FROM ai_attachments
                  WHERE tenant_id = ?1 AND created_at < ?2
                    AND rowid NOT IN (SELECT value FROM json_each(?4)) LIMIT ?3",
            )?;
            let kept = serde_json::to_string(&kept).unwrap_or_else(|_| "[]".into());
            statement
                .query_map((tenant_id, cutoff, ATTACHMENT_BATCH, kept), |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect::<Result<_, _>>()?
        };
        if batch.is_empty() {
            return Ok(());
        }
        let mut done = Vec::with_capacity(batch.len());
        for (rowid, blob_path) in &batch {
            let Some(blob_path) = blob_path.as_deref().filter(|path| !path.is_empty()) else {
                done.push(*rowid);
                continue;
            };
            purge.blobs_attempted += 1;
            match remove_stored_file(ctx, storage.as_ref(), blob_path) {
                Ok(FileRemoval::Removed) => {
                    purge.blobs_deleted += 1;
                    done.push(*rowid);
                }
                Ok(FileRemoval::AlreadyGone) => {
                    log::info!("dsar-purge {tenant_id}: blob {blob_path} was already gone");
                    purge.blobs_missing += 1;
                    done.push(*rowid);
                }
                Err(error) => {
                    log::warn!(
                        "dsar-purge {tenant_id}: blob {blob_path}: {error}; its row is kept for the next run"
                    );
                    kept.push(*rowid);
                    if purge.errors.len() < 20 {
                        purge.errors.push(format!("{blob_path}: {error}"));
                    }
                }
            }
        }
        let ids = serde_json::to_string(&done).unwrap_or_default();
        let mut conn = ctx.store.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let deleted = tx.execute(
            "DELETE FROM ai_attachments WHERE rowid IN (SELECT value FROM json_each(?1))",
            [ids],
        )?;
        tx.commit()?;
        purge.ai_attachments += deleted as u64;
    }
}

fn audit(
    ctx: &JobCtx<'_>,
    tenant_id: &str,
    counts: &Json,
    now: DateTime<Utc>,
) -> Result<(), JobError> {
    ctx.store.conn()?.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, target, details, created_at)
         VALUES (?1, 'edgecron', 'dsar.purge', ?1, ?2, ?3)",
        (tenant_id, counts.to_string(), to_store_text(now)),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::TimeZone;

    fn harness() -> Harness {
        let harness = Harness::new(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        // t1: strictest unheld is 30 days (a held 10-day policy and a 0-day one do not count);
        // t2: only a held policy; t3: no policy at all.
        harness.exec(
            "INSERT INTO tenants (id) VALUES ('t1'), ('t2'), ('t3');
             INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES
                 ('t1', 'all', 90, 0), ('t1', 'interaction_history', 30, 0),
                 ('t1', 'decision_traces', 10, 1), ('t1', 'ai_attachments', 0, 0),
                 ('t2', 'all', 5, 1);",
        );
        for tenant in ["t1", "t2", "t3"] {
            harness.exec(&format!(
                "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES
                     ('{tenant}-old', '{tenant}', '2026-05-01T23:59:59.999Z'),
                     ('{tenant}-edge', '{tenant}', '2026-05-02T00:00:00.000Z'),
                     ('{tenant}-new', '{tenant}', '2026-05-31T00:00:00.000Z');
                 INSERT INTO decision_traces (id, tenant_id, created_at) VALUES
                     ('{tenant}-old', '{tenant}', '2026-04-01T00:00:00.000Z'),
                     ('{tenant}-new', '{tenant}', '2026-05-20T00:00:00.000Z');
                 INSERT INTO ai_attachments (id, tenant_id, blob_path, created_at) VALUES
                     ('{tenant}-old', '{tenant}', 'blobs/{tenant}/old.bin', '2026-04-01T00:00:00.000Z'),
                     ('{tenant}-gone', '{tenant}', 'blobs/{tenant}/gone.bin', '2026-04-01T00:00:00.000Z'),
                     ('{tenant}-new', '{tenant}', 'blobs/{tenant}/new.bin', '2026-05-30T00:00:00.000Z');"
            ));
            for blob in ["old", "new"] {
                harness.write_file(&format!("blobs/{tenant}/{blob}.bin"), b"blob");
            }
        }
        harness
    }

    #[test]
    fn purges_exactly_what_is_past_the_strictest_unheld_retention() {
        let harness = harness();
        let output = DsarPurge.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["tenantsScanned"], 3);
        let t1 = &output.body["perTenant"][0];
        assert_eq!(
            (
                t1["retentionDays"].as_i64(),
                t1["interactionHistory"].as_u64()
            ),
            (Some(30), Some(1))
        );
        assert_eq!(
            (t1["decisionTraces"].as_u64(), t1["aiAttachments"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(
            (t1["blobsDeleted"].as_u64(), t1["blobsMissing"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(output.body["totalBlobsAttempted"], 2);
        assert!(output.body["perTenant"][1]["retentionDays"].is_null());
        assert!(output.body["perTenant"][2]["retentionDays"].is_null());

        assert_eq!(
            harness.strings("SELECT id FROM interaction_history ORDER BY id"),
            [
                "t1-edge", "t1-new", "t2-edge", "t2-new", "t2-old", "t3-edge", "t3-new", "t3-old"
            ]
        );
        assert_eq!(
            harness.strings("SELECT id FROM decision_traces WHERE tenant_id = 't1'"),
            ["t1-new"]
        );
        assert_eq!(
            harness.strings("SELECT id FROM ai_attachments WHERE tenant_id = 't1'"),
            ["t1-new"]
        );
        let blobs = &harness.config.data_dir;
        assert!(!blobs.join("blobs/t1/old.bin").exists());
        assert!(blobs.join("blobs/t1/new.bin").exists() && blobs.join("blobs/t2/old.bin").exists());

        let audit = harness.strings("SELECT tenant_id || ' ' || action || ' ' || json_extract(details, '$.interactionHistory') FROM audit_log");
        assert_eq!(audit, ["t1 dsar.purge 1"]);
        // Run again: nothing left, nothing purged twice.
        let again = DsarPurge.run(&harness.ctx()).unwrap();
        assert_eq!(again.body["perTenant"][0]["interactionHistory"], 0);
        assert_eq!(again.body["perTenant"][0]["aiAttachments"], 0);
    }

    #[test]
    fn dry_run_counts_by_class_and_changes_nothing() {
        let mut harness = harness();
        harness.params.dry_run = true;
        let output = DsarPurge.run(&harness.ctx()).unwrap();
        let t1 = &output.body["perTenant"][0];
        assert_eq!(
            (
                t1["interactionHistory"].as_u64(),
                t1["decisionTraces"].as_u64(),
                t1["aiAttachments"].as_u64()
            ),
            (Some(1), Some(1), Some(2))
        );
        assert_eq!(
            harness.query::<i64>("SELECT COUNT(*) FROM interaction_history"),
            9
        );
        assert_eq!(
            harness.query::<i64>("SELECT COUNT(*) FROM ai_attachments"),
            9
        );
        assert_eq!(harness.query::<i64>("SELECT COUNT(*) FROM audit_log"), 0);
        assert!(harness.config.data_dir.join("blobs/t1/old.bin").exists());
    }

    #[test]
    fn a_row_whose_blob_cannot_be_deleted_is_kept_for_the_next_run() {
        let harness = harness();
        harness.exec(
            "INSERT INTO ai_attachments (id, tenant_id, blob_path, created_at) VALUES
                 ('t1-stuck', 't1', '../outside.bin', '2026-04-01T00:00:00.000Z');",
        );
        let output = DsarPurge.run(&harness.ctx()).unwrap();
        let t1 = &output.body["perTenant"][0];
        assert_eq!(t1["aiAttachments"], 2, "{t1}");
        assert_eq!(t1["errors"].as_array().unwrap().len(), 1, "{t1}");
        assert_eq!(
            harness.strings("SELECT id FROM ai_attachments WHERE tenant_id = 't1' ORDER BY id"),
            ["t1-new", "t1-stuck"]
        );
        // Still there, still reported, until someone fixes its path.
        let again = DsarPurge.run(&harness.ctx()).unwrap();
        assert_eq!(
            again.body["perTenant"][0]["errors"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_purge_stopped_by_shutdown_is_finished_by_the_next_run() {
        let mut harness = harness();
        harness.exec(
            "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 9000)
             INSERT INTO interaction_history (id, tenant_id, created_at)
             SELECT 'bulk-' || value, 't1', '2026-01-01T00:00:00.000Z' FROM n;",
        );
        harness.shutdown.request();
        let stopped = DsarPurge.run(&harness.ctx()).unwrap();
        assert_eq!(stopped.body["finished"], false);
        assert_eq!(
            harness.query::<i64>("SELECT COUNT(*) FROM interaction_history WHERE id LIKE 'bulk-%'"),
            9000
        );

        harness.shutdown = crate::shutdown::Shutdown::default();
        let finished = DsarPurge.run(&harness.ctx()).unwrap();
        assert_eq!(finished.body["finished"], true);
        assert_eq!(finished.body["perTenant"][0]["interactionHistory"], 9001);
        assert_eq!(harness.query::<i64>("SELECT COUNT(*) FROM interaction_history WHERE tenant_id = 't1' AND created_at < '2026-05-02'"), 0);
    }
}
