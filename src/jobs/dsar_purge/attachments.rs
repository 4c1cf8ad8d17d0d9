//! A tenant's attachments past the cutoff, a batch at a time: their blobs (local file or S3
//! object) deleted first, then their rows with the batch's audit row.

use rusqlite::TransactionBehavior;
use rusqlite::types::Value;

use super::policy::Class;
use super::{TenantPurge, TenantRun, audit};
use crate::config::layout::NamedBy;
use crate::jobs::named_files::{FileRemoval, remove_stored_file};
use crate::jobs::{JobCtx, JobError};
use crate::store::times;

const ATTACHMENT_BATCH: i64 = 200;

/// Attachments go a batch at a time: blobs first, then their rows, so a crash in between
/// leaves rows whose blobs are already gone (counted as missing next time), never orphaned
/// blobs. A row whose blob cannot be deleted (storage down, a path a row may not name) is
/// kept, and passed over for the rest of the run: its blob is still personal data, and the
/// row is what makes the next run try again.
pub(super) fn purge_attachments(
    ctx: &JobCtx<'_>,
    run: &TenantRun<'_>,
    purge: &mut TenantPurge,
) -> Result<(), JobError> {
    let before = times::before("created_at", run.cutoff, 2);
    let mut params = vec![Value::Text(run.tenant_id.to_string())];
    params.extend(before.params);
    if ctx.params.dry_run {
        let count: i64 = ctx.store.conn()?.query_row(
            &format!(
                "SELECT COUNT(*) FROM ai_attachments WHERE tenant_id = ?1 AND {}",
                before.sql
            ),
            rusqlite::params_from_iter(&params),
            |row| row.get(0),
        )?;
        *purge.count(Class::AiAttachments) = count as u64;
        return Ok(());
    }
    let storage = ctx.storage()?;
    let mut kept: Vec<i64> = Vec::new();
    loop {
        if ctx.should_stop() {
            purge.finished = false;
            return Ok(());
        }
        let batch: Vec<(i64, String, Option<String>)> = {
            let conn = ctx.store.conn()?;
            let mut statement = conn.prepare(&format!(
                "SELECT rowid, id, blob_path FROM ai_attachments
                  WHERE tenant_id = ?1 AND {}
                    AND rowid NOT IN (SELECT value FROM json_each(?4)) LIMIT ?5",
                before.sql
            ))?;
            let kept = serde_json::to_string(&kept).unwrap_or_else(|_| "[]".into());
            let mut bound = params.clone();
            bound.push(Value::Text(kept));
            bound.push(Value::Integer(ATTACHMENT_BATCH));
            statement
                .query_map(rusqlite::params_from_iter(&bound), |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?
                .collect::<Result<_, _>>()?
        };
        if batch.is_empty() {
            return Ok(());
        }
        let mut done = Vec::with_capacity(batch.len());
        let mut blobs_deleted = 0;
        for (rowid, id, blob_path) in &batch {
            let Some(blob_path) = blob_path.as_deref().filter(|path| !path.is_empty()) else {
                done.push(*rowid);
                continue;
            };
            purge.blobs_attempted += 1;
            match remove_stored_file(ctx, storage.as_ref(), NamedBy::Attachments, blob_path) {
                Ok(FileRemoval::Removed) => {
                    blobs_deleted += 1;
                    done.push(*rowid);
                }
                Ok(FileRemoval::AlreadyGone) => {
                    log::info!(
                        "dsar-purge {}: blob {blob_path} was already gone",
                        run.tenant_id
                    );
                    purge.blobs_missing += 1;
                    done.push(*rowid);
                }
                Err(refused) => {
                    log::warn!(
                        "dsar-purge {}: attachment {id}: {refused}; its row is kept for the next run",
                        run.tenant_id
                    );
                    kept.push(*rowid);
                    purge.error(format!("attachment {id}: {refused}"));
                }
            }
        }
        let ids = serde_json::to_string(&done).unwrap_or_default();
        let mut conn = ctx.store.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let deleted = tx.execute(
            "DELETE FROM ai_attachments WHERE rowid IN (SELECT value FROM json_each(?1))",
            [ids],
        )? as u64;
        if deleted > 0 || blobs_deleted > 0 {
            audit(&tx, run, &[(Class::AiAttachments, deleted)], blobs_deleted)?;
        }
        tx.commit()?;
        *purge.count(Class::AiAttachments) += deleted;
        purge.blobs_deleted += blobs_deleted;
    }
}

#[cfg(test)]
mod tests {
    use super::super::DsarPurge;
    use super::super::tests::harness;
    use crate::jobs::Job;

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
}
