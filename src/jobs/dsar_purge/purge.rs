//! One tenant's purge: the rows of each class not on hold past the cutoff, in batches, each
//! committed with the audit row of what it deleted; rows whose `created_at` names no instant
//! are counted and kept.

use rusqlite::types::Value;

use super::attachments::purge_attachments;
use super::policy::Class;
use super::{TenantPurge, TenantRun, audit};
use crate::jobs::{JobCtx, JobError};
use crate::store::times;
use crate::store::{BatchOutcome, BatchedChange};

/// The most rows one batch (and its audit row) may take; the busy slice sizes most batches.
const BATCH_SIZE: usize = 10_000;

pub(super) fn purge_tenant(
    ctx: &JobCtx<'_>,
    run: &TenantRun<'_>,
    classes: &[Class],
) -> Result<TenantPurge, JobError> {
    let mut purge = TenantPurge {
        finished: true,
        ..TenantPurge::default()
    };
    for class in classes {
        if *class == Class::AiAttachments {
            purge_attachments(ctx, run, &mut purge)?;
        } else {
            let before = times::before("created_at", run.cutoff, 2);
            let label = format!("dsar-purge {} {}", run.tenant_id, class.table());
            let mut params = vec![Value::Text(run.tenant_id.to_string())];
            params.extend(before.params);
            let change = BatchedChange {
                label: &label,
                table: class.table(),
                filter: &format!("tenant_id = ?1 AND {}", before.sql),
                set_clause: None,
                params,
                batch_size: BATCH_SIZE,
            };
            if ctx.params.dry_run {
                *purge.count(*class) = change.count(ctx.store)?;
            } else {
                let (deleted, outcome) = change.run_recorded(
                    ctx.store,
                    || ctx.should_stop(),
                    |tx, deleted| audit(tx, run, &[(*class, deleted)], 0),
                )?;
                *purge.count(*class) = deleted;
                purge.finished &= outcome == BatchOutcome::Finished;
            }
        }
        purge.unreadable_times += unreadable_times(ctx, run, *class)?;
    }
    Ok(purge)
}

/// The tenant's rows of `class` whose `created_at` names no instant: never purged.
fn unreadable_times(ctx: &JobCtx<'_>, run: &TenantRun<'_>, class: Class) -> Result<u64, JobError> {
    let unreadable = times::unreadable("created_at", run.cutoff, 2);
    let mut params = vec![Value::Text(run.tenant_id.to_string())];
    params.extend(unreadable.params);
    let count: i64 = ctx.store.conn()?.query_row(
        &format!(
            "SELECT COUNT(*) FROM {} WHERE tenant_id = ?1 AND {}",
            class.table(),
            unreadable.sql
        ),
        rusqlite::params_from_iter(&params),
        |row| row.get(0),
    )?;
    Ok(count as u64)
}

#[cfg(test)]
mod tests {
    use super::super::DsarPurge;
    use super::super::tests::harness;
    use crate::jobs::Job;

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
