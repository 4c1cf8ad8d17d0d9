//! `dsar-purge`: per tenant, delete decision traces, interaction history and AI attachments
//! older than the strictest positive retention among its policies not on legal hold. A policy
//! on hold protects its data class from every deletion (`all` or `*`: the whole tenant); the
//! original handler only left held policies out of the minimum, which let another class's
//! cutoff delete held data. Attachment blobs go first (local file or S3 object, best-effort,
//! never a file edgecron owns), then their rows. Every batch deleted commits together with an
//! audit row of its counts, so a purge killed at any point has audited exactly what is gone.
//! Batched and resumable: a purge stopped by its deadline finishes on the next run.
//!
//! `policy.rs` reads a tenant's policies into the retention that applies and the classes a
//! hold protects; `purge.rs` purges one tenant class by class, each batch committed with its
//! audit row; `attachments.rs` deletes attachments, their blobs before their rows.

mod attachments;
mod exports;
pub(super) mod policy;
mod purge;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Value as Json, json};

use super::{Job, JobCtx, JobError, JobOutput};
use crate::clock::to_store_text;
use crate::config::Config;
use crate::store::StoreError;
use policy::{Class, retention};
use purge::purge_tenant;

pub struct DsarPurge;

/// Errors listed per tenant; the rest are counted in the log.
const ERRORS_LISTED: usize = 20;

/// What was (or, in a dry run, would be) purged for one tenant.
#[derive(Default)]
struct TenantPurge {
    counts: [u64; 3],
    blobs_attempted: u64,
    blobs_deleted: u64,
    blobs_missing: u64,
    unreadable_times: u64,
    export_files_removed: u64,
    errors: Vec<String>,
    finished: bool,
}

impl TenantPurge {
    fn count(&mut self, class: Class) -> &mut u64 {
        &mut self.counts[class.index()]
    }

    fn error(&mut self, message: String) {
        if self.errors.len() < ERRORS_LISTED {
            self.errors.push(message);
        }
    }
}

/// What one run purges for one tenant, as its audit rows say it.
struct TenantRun<'a> {
    tenant_id: &'a str,
    retention_days: i64,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
    run_id: i64,
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
        let rewriting = ctx.rewriting()?;
        let mut recovery_errors = Vec::new();
        if !ctx.params.dry_run {
            rewriting.recover(&mut recovery_errors)?;
        }
        for error in &recovery_errors {
            log::warn!("dsar-purge: {error}");
        }
        let tenants = tenants(ctx)?;
        let mut per_tenant = Vec::with_capacity(tenants.len());
        let (mut blobs_attempted, mut rows, mut tenants_with_errors) = (0, 0, 0);
        let mut finished = true;
        for tenant_id in &tenants {
            if ctx.should_stop() {
                finished = false;
                break;
            }
            let retention = retention(ctx, tenant_id)?;
            let held: Vec<&str> = retention.held.iter().map(|class| class.table()).collect();
            let skipped = match (&retention.whole_tenant_held, retention.days) {
                (Some(why), _) => Some(why.clone()),
                (None, None) => Some(
                    "no retention policy without a legal hold and with positive retention_days"
                        .to_string(),
                ),
                (None, Some(_)) => None,
            };
            let (Some(days), None) = (retention.days, &skipped) else {
                per_tenant.push(TenantReport {
                    skipped,
                    ..TenantReport::new(tenant_id, retention.days, held, TenantPurge::default())
                });
                continue;
            };
            let run = TenantRun {
                tenant_id,
                retention_days: days,
                cutoff: now - Duration::days(days),
                now,
                run_id: ctx.run_id,
            };
            let classes = retention.purged_classes();
            let mut purge = purge_tenant(ctx, &run, &classes)?;
            if classes.contains(&Class::InteractionHistory) {
                exports::purge_exports(ctx, &run, &rewriting, &mut purge)?;
            }
            blobs_attempted += purge.blobs_attempted;
            rows += purge.counts.iter().sum::<u64>();
            finished &= purge.finished;
            if !purge.errors.is_empty() {
                tenants_with_errors += 1;
            }
            if purge.unreadable_times > 0 {
                log::warn!(
                    "dsar-purge {tenant_id}: {} rows have a created_at that names no instant; they are kept",
                    purge.unreadable_times
                );
            }
            per_tenant.push(TenantReport {
                cutoff: Some(to_store_text(run.cutoff)),
                unreadable_times: Some(purge.unreadable_times),
                export_files_removed: Some(purge.export_files_removed),
                finished: Some(purge.finished),
                ..TenantReport::new(tenant_id, Some(days), held, purge)
            });
        }
        let item_errors = tenants_with_errors + recovery_errors.len() as u64;
        let report = Report {
            recovery_errors,
            tenants_scanned: per_tenant.len(),
            total_blobs_attempted: blobs_attempted,
            per_tenant,
            finished,
            dry_run: ctx.params.dry_run,
        };
        JobOutput::new(
            &report,
            item_errors,
            if ctx.params.dry_run { 0 } else { rows },
        )
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    /// What the recovery of an earlier run's unfinished file rewrites could not do.
    recovery_errors: Vec<String>,
    tenants_scanned: usize,
    total_blobs_attempted: u64,
    per_tenant: Vec<TenantReport<'a>>,
    finished: bool,
    dry_run: bool,
}

/// One tenant's part: what was purged, or why nothing was (`skipped`: held as a whole, or no
/// retention policy to apply), which has no cutoff and no file or progress fields.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TenantReport<'a> {
    tenant_id: &'a str,
    retention_days: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cutoff: Option<String>,
    held_classes: Vec<&'static str>,
    decision_traces: u64,
    interaction_history: u64,
    ai_attachments: u64,
    blobs_deleted: u64,
    blobs_missing: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    unreadable_times: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    export_files_removed: Option<u64>,
    errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<String>,
}

impl<'a> TenantReport<'a> {
    fn new(
        tenant_id: &'a str,
        retention_days: Option<i64>,
        held_classes: Vec<&'static str>,
        purge: TenantPurge,
    ) -> TenantReport<'a> {
        TenantReport {
            tenant_id,
            retention_days,
            cutoff: None,
            held_classes,
            decision_traces: purge.counts[Class::DecisionTraces.index()],
            interaction_history: purge.counts[Class::InteractionHistory.index()],
            ai_attachments: purge.counts[Class::AiAttachments.index()],
            blobs_deleted: purge.blobs_deleted,
            blobs_missing: purge.blobs_missing,
            unreadable_times: None,
            export_files_removed: None,
            errors: purge.errors,
            finished: None,
            skipped: None,
        }
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

/// The audit row of one batch, in the batch's own transaction: what it deleted.
fn audit(
    tx: &rusqlite::Transaction<'_>,
    run: &TenantRun<'_>,
    deleted: &[(Class, u64)],
    blobs_deleted: u64,
) -> Result<(), StoreError> {
    let mut details = json!({
        "runId": run.run_id,
        "retentionDays": run.retention_days,
        "cutoff": to_store_text(run.cutoff),
        "decisionTraces": 0,
        "interactionHistory": 0,
        "aiAttachments": 0,
        "blobsDeleted": blobs_deleted,
    });
    for (class, count) in deleted {
        details[class.key()] = Json::from(*count);
    }
    tx.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, target, details, created_at)
         VALUES (?1, 'edgecron', 'dsar.purge', ?1, ?2, ?3)",
        (run.tenant_id, details.to_string(), to_store_text(run.now)),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::TimeZone;

    pub(super) fn harness() -> Harness {
        let harness = Harness::new(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        // t1: strictest unheld is 30 days (a held 10-day policy and a 0-day one do not count),
        // and its decision traces are on hold; t2: a hold on everything; t3: no policy at all.
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
            (Some(0), Some(2)),
            "the held class is kept whatever the other classes' cutoff"
        );
        assert_eq!(t1["heldClasses"], json!(["decision_traces"]));
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
            harness.strings("SELECT id FROM decision_traces WHERE tenant_id = 't1' ORDER BY id"),
            ["t1-new", "t1-old"]
        );
        assert_eq!(
            harness.strings("SELECT id FROM ai_attachments WHERE tenant_id = 't1'"),
            ["t1-new"]
        );
        let blobs = &harness.config.data_dir;
        assert!(!blobs.join("blobs/t1/old.bin").exists());
        assert!(blobs.join("blobs/t1/new.bin").exists() && blobs.join("blobs/t2/old.bin").exists());

        let audit = harness.strings(
            "SELECT tenant_id || ' ' || action || ' ' || SUM(json_extract(details, '$.interactionHistory'))
                 || ' ' || SUM(json_extract(details, '$.aiAttachments')) || ' ' || SUM(json_extract(details, '$.decisionTraces'))
             FROM audit_log GROUP BY tenant_id, action",
        );
        assert_eq!(audit, ["t1 dsar.purge 1 2 0"]);
        for skipped in [1, 2] {
            let entry = &output.body["perTenant"][skipped];
            assert_eq!(entry["interactionHistory"], 0, "{entry}");
            assert_eq!(entry["errors"], json!([]), "{entry}");
        }
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
            (Some(1), Some(0), Some(2))
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
}
