//! Exports follow the rows (SPEC section 4): a tenant's export files whose whole UTC day is
//! older than its `interaction_history` cutoff (a day D once D+1 00:00 UTC is at or before the
//! cutoff) are removed, local file and uploaded object, each audited, through the same
//! journaled rewrite an erasure uses, so a run killed mid-way is finished by the next.

use serde_json::json;

use super::{TenantPurge, TenantRun};
use crate::clock::to_store_text;
use crate::export::rewrite::{Change, Rewriting};
use crate::jobs::{JobCtx, JobError};
use crate::store::export_rewrite::files_before;

/// Files looked up at a time.
const PAGE: i64 = 200;

pub(super) fn purge_exports(
    ctx: &JobCtx<'_>,
    run: &TenantRun<'_>,
    rewriting: &Rewriting<'_>,
    purge: &mut TenantPurge,
) -> Result<(), JobError> {
    // Days before the cutoff's own: each of them ended at or before the cutoff.
    let before = run.cutoff.format("%Y-%m-%d").to_string();
    if ctx.params.dry_run {
        purge.export_files_removed =
            files_before(ctx.store, run.tenant_id, &before, i64::MAX)?.len() as u64;
        return Ok(());
    }
    let audit = json!({"action": "dsar.purge.file", "details": {
        "runId": run.run_id, "retentionDays": run.retention_days, "cutoff": to_store_text(run.cutoff),
    }});
    let should_stop = || ctx.should_stop();
    loop {
        let page = files_before(ctx.store, run.tenant_id, &before, PAGE)?;
        if page.is_empty() {
            return Ok(());
        }
        let mut errors = Vec::new();
        let (done, all) =
            rewriting.rewrite_all(&page, Change::Remove, &audit, &should_stop, &mut errors)?;
        purge.export_files_removed += done.removed;
        errors.into_iter().for_each(|error| purge.error(error));
        if !all {
            purge.finished = false;
            return Ok(());
        }
        // Files that could not be removed stay listed: the next run tries them again.
        if done.removed == 0 {
            return Ok(());
        }
    }
}
