//! `maintenance`: the import system's upkeep. Marks import runs stuck in `processing` for
//! over 24 h as failed, purges temp uploads older than 24 h (file, then row), compacts finished
//! import jobs older than 7 days to the row that keeps the audit trail, and deletes the raw
//! items of failed runs older than 30 days. One step failing does not stop the others; the
//! view `maintenance_status` shows each backlog live.

use chrono::{DateTime, Duration, Utc};
use rusqlite::TransactionBehavior;
use rusqlite::types::Value;
use serde::Serialize;

use super::named_files::{FileRemoval, remove_data_file};
use super::{Job, JobCtx, JobError, JobOutput};
use crate::clock::to_store_text;
use crate::config::layout::NamedBy;
use crate::store::times;
use crate::store::{BatchOutcome, BatchedChange};

pub struct Maintenance;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    timestamp: String,
    stuck_runs_marked: u64,
    temp_uploads_purged: u64,
    import_jobs_compacted: u64,
    raw_items_purged: u64,
    errors: Vec<StepError>,
    finished: bool,
    dry_run: bool,
}

/// A step that failed, or one row of it (`id`), while the others went on.
#[derive(Serialize)]
struct StepError {
    step: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    error: String,
}

const BATCH_SIZE: usize = 1_000;
const UPLOAD_BATCH: i64 = 200;

impl Job for Maintenance {
    fn name(&self) -> &'static str {
        "maintenance"
    }

    fn default_schedule(&self) -> &'static str {
        "0 3 * * *"
    }

    fn legacy_routes(&self) -> &'static [&'static str] {
        &["/api/admin/maintenance"]
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let now = ctx.now();
        let now_text = to_store_text(now);
        let day_ago = now - Duration::hours(24);
        let stuck = times::before("COALESCE(started_at, updated_at)", day_ago, 1);
        let stuck_runs = BatchedChange {
            label: "maintenance stuck import runs",
            table: "import_runs",
            filter: &format!("status = 'processing' AND {}", stuck.sql),
            set_clause: Some(
                "status = 'failed', error = 'timed out: processing for over 24 hours', finished_at = ?3, updated_at = ?3",
            ),
            params: with(stuck.params, &now_text),
            batch_size: BATCH_SIZE,
        };
        let finished_long_ago = times::before(
            "COALESCE(finished_at, created_at)",
            now - Duration::days(7),
            1,
        );
        let compact_jobs = BatchedChange {
            label: "maintenance import job compaction",
            table: "import_jobs",
            filter: &format!(
                "status IN ('completed', 'failed', 'cancelled') AND compacted_at IS NULL AND {}",
                finished_long_ago.sql
            ),
            // Keeps id, tenant, run, status, counts and times: the audit trail.
            set_clause: Some("config = NULL, result = NULL, compacted_at = ?3"),
            params: with(finished_long_ago.params, &now_text),
            batch_size: BATCH_SIZE,
        };
        let failed_long_ago = times::before(
            "COALESCE(finished_at, updated_at)",
            now - Duration::days(30),
            1,
        );
        let raw_items = BatchedChange {
            label: "maintenance raw import items",
            table: "import_items",
            filter: &format!(
                "run_id IN (SELECT id FROM import_runs WHERE status = 'failed' AND {})",
                failed_long_ago.sql
            ),
            set_clause: None,
            params: failed_long_ago.params,
            batch_size: BATCH_SIZE,
        };

        let mut errors = Vec::new();
        let mut finished = true;
        let mut step =
            |name: &'static str, result: Result<(u64, BatchOutcome), JobError>| match result {
                Ok((count, outcome)) => {
                    finished &= outcome == BatchOutcome::Finished;
                    log::info!("maintenance: {name}: {count}");
                    count
                }
                Err(error) => {
                    log::error!("maintenance: {name}: {error}");
                    errors.push(StepError {
                        step: name,
                        id: None,
                        error: error.to_string(),
                    });
                    0
                }
            };
        let apply = |change: &BatchedChange<'_>| -> Result<(u64, BatchOutcome), JobError> {
            if ctx.params.dry_run {
                return Ok((change.count(ctx.store)?, BatchOutcome::Finished));
            }
            Ok(change.run(ctx.store, || ctx.should_stop())?)
        };
        let stuck_runs_marked = step("stuckRunsMarked", apply(&stuck_runs));
        let mut refused = Vec::new();
        let temp_uploads_purged = step(
            "tempUploadsPurged",
            purge_temp_uploads(ctx, day_ago, &mut refused),
        );
        let import_jobs_compacted = step("importJobsCompacted", apply(&compact_jobs));
        let raw_items_purged = step("rawItemsPurged", apply(&raw_items));
        errors.extend(refused);

        let item_errors = errors.len() as u64;
        let report = Report {
            timestamp: now_text,
            stuck_runs_marked,
            temp_uploads_purged,
            import_jobs_compacted,
            raw_items_purged,
            errors,
            finished,
            dry_run: ctx.params.dry_run,
        };
        let rows =
            stuck_runs_marked + temp_uploads_purged + import_jobs_compacted + raw_items_purged;
        JobOutput::new(&report, item_errors, rows)
    }
}

/// A condition's parameters followed by one more (the update's `?3`).
fn with(mut params: Vec<Value>, text: &str) -> Vec<Value> {
    params.push(Value::Text(text.to_string()));
    params
}

/// Temp uploads older than a day: the file first, then the row, a batch at a time. A file
/// already gone is fine; a path a row may not name keeps its file and its row, and is
/// reported in `refused` (passed over for the rest of the run).
fn purge_temp_uploads(
    ctx: &JobCtx<'_>,
    cutoff: DateTime<Utc>,
    refused: &mut Vec<StepError>,
) -> Result<(u64, BatchOutcome), JobError> {
    let old = times::before("created_at", cutoff, 1);
    if ctx.params.dry_run {
        let count: i64 = ctx.store.conn()?.query_row(
            &format!("SELECT COUNT(*) FROM temp_uploads WHERE {}", old.sql),
            rusqlite::params_from_iter(&old.params),
            |row| row.get(0),
        )?;
        return Ok((count as u64, BatchOutcome::Finished));
    }
    let mut purged = 0;
    let mut kept: Vec<i64> = Vec::new();
    loop {
        if ctx.should_stop() {
            return Ok((purged, BatchOutcome::Stopped));
        }
        let batch: Vec<(i64, String, String)> = {
            let conn = ctx.store.conn()?;
            let mut statement = conn.prepare(&format!(
                "SELECT rowid, id, path FROM temp_uploads
                  WHERE {} AND rowid NOT IN (SELECT value FROM json_each(?3)) LIMIT ?4",
                old.sql
            ))?;
            let mut params = old.params.clone();
            params.push(Value::Text(
                serde_json::to_string(&kept).unwrap_or_else(|_| "[]".into()),
            ));
            params.push(Value::Integer(UPLOAD_BATCH));
            statement
                .query_map(rusqlite::params_from_iter(&params), |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?
                .collect::<Result<_, _>>()?
        };
        if batch.is_empty() {
            return Ok((purged, BatchOutcome::Finished));
        }
        let mut done = Vec::with_capacity(batch.len());
        for (rowid, id, path) in &batch {
            match remove_data_file(ctx.config, NamedBy::Uploads, path) {
                Ok(FileRemoval::Removed | FileRemoval::AlreadyGone) => done.push(*rowid),
                Err(error) => {
                    log::warn!("maintenance: temp upload {id}: {error}; its row and file are kept");
                    kept.push(*rowid);
                    refused.push(StepError {
                        step: "tempUploadsPurged",
                        id: Some(id.clone()),
                        error: error.to_string(),
                    });
                }
            }
        }
        let ids = serde_json::to_string(&done).unwrap_or_default();
        let mut conn = ctx.store.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        purged += tx.execute(
            "DELETE FROM temp_uploads WHERE rowid IN (SELECT value FROM json_each(?1))",
            [ids],
        )? as u64;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn harness() -> Harness {
        let harness = Harness::new(Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap());
        harness.exec(
            "INSERT INTO import_runs (id, status, started_at, updated_at, finished_at) VALUES
                 ('stuck', 'processing', '2026-05-31T11:59:59.000Z', '2026-05-31T11:59:59.000Z', NULL),
                 ('busy', 'processing', '2026-05-31T12:00:01.000Z', '2026-05-31T12:00:01.000Z', NULL),
                 ('old-failed', 'failed', '2026-04-01T00:00:00.000Z', '2026-04-01T00:00:00.000Z', '2026-04-01T00:10:00.000Z'),
                 ('new-failed', 'failed', '2026-05-20T00:00:00.000Z', '2026-05-20T00:00:00.000Z', '2026-05-20T00:10:00.000Z'),
                 ('old-done', 'completed', '2026-04-01T00:00:00.000Z', '2026-04-01T00:00:00.000Z', '2026-04-01T00:10:00.000Z');
             INSERT INTO import_items (run_id, raw) VALUES ('old-failed', '{}'), ('old-failed', '{}'), ('new-failed', '{}'), ('old-done', '{}');
             INSERT INTO import_jobs (id, tenant_id, run_id, status, total_items, processed_items, config, result, finished_at) VALUES
                 ('old-completed', 't', 'old-done', 'completed', 10, 10, '{\"m\":1}', '{\"r\":1}', '2026-05-20T00:00:00.000Z'),
                 ('recent-completed', 't', 'x', 'completed', 5, 5, '{\"m\":1}', '{\"r\":1}', '2026-05-30T00:00:00.000Z'),
                 ('old-processing', 't', 'y', 'processing', 5, 2, '{\"m\":1}', NULL, NULL);
             INSERT INTO temp_uploads (id, path, created_at) VALUES
                 ('old', 'uploads/old.csv', '2026-05-31T11:00:00.000Z'),
                 ('old-missing', 'uploads/missing.csv', '2026-05-30T00:00:00.000Z'),
                 ('fresh', 'uploads/fresh.csv', '2026-06-01T11:00:00.000Z');",
        );
        // The compaction cutoff counts from finished_at (or created_at when never finished).
        harness.exec("UPDATE import_jobs SET created_at = '2026-04-01T00:00:00.000Z'");
        for name in ["old", "fresh"] {
            harness.write_file(&format!("uploads/{name}.csv"), b"a,b");
        }
        harness
    }

    #[test]
    fn works_off_each_backlog_and_nothing_else() {
        let harness = harness();
        // The view counts against the real clock; every crafted time here is in the past.
        let backlog = harness.query::<String>(
            "SELECT stuck_runs || ' ' || stale_temp_uploads || ' ' || import_jobs_to_compact || ' ' || raw_items_to_purge FROM maintenance_status",
        );
        assert_eq!(backlog, "2 3 2 3");
        let output = Maintenance.run(&harness.ctx()).unwrap();
        for (key, expected) in [
            ("stuckRunsMarked", 1),
            ("tempUploadsPurged", 2),
            ("importJobsCompacted", 1),
            ("rawItemsPurged", 2),
        ] {
            assert_eq!(output.body[key], expected, "{key}: {:?}", output.body);
        }
        assert_eq!(output.body["errors"], json!([]));
        assert!(output.body["timestamp"].is_string());

        assert_eq!(harness.strings("SELECT id || ' ' || status FROM import_runs WHERE id IN ('stuck', 'busy') ORDER BY id"), ["busy processing", "stuck failed"]);
        assert_eq!(
            harness.query::<String>("SELECT error FROM import_runs WHERE id = 'stuck'"),
            "timed out: processing for over 24 hours"
        );
        assert_eq!(harness.strings("SELECT id FROM temp_uploads"), ["fresh"]);
        assert!(!harness.config.data_dir.join("uploads/old.csv").exists());
        assert!(harness.config.data_dir.join("uploads/fresh.csv").exists());
        let compacted = harness.strings(
            "SELECT id || ' ' || COALESCE(config, '-') || ' ' || COALESCE(result, '-') || ' ' || processed_items || ' ' || (compacted_at IS NOT NULL) FROM import_jobs ORDER BY id",
        );
        assert_eq!(
            compacted,
            [
                "old-completed - - 10 1",
                "old-processing {\"m\":1} - 2 0",
                "recent-completed {\"m\":1} {\"r\":1} 5 0"
            ]
        );
        assert_eq!(
            harness.strings("SELECT run_id FROM import_items ORDER BY run_id"),
            ["new-failed", "old-done"]
        );
    }

    #[test]
    fn one_failing_step_does_not_stop_the_others() {
        let harness = harness();
        harness.exec("DROP TABLE import_jobs");
        let output = Maintenance.run(&harness.ctx()).unwrap();
        assert_eq!(output.item_errors, 1);
        assert_eq!(output.body["errors"][0]["step"], "importJobsCompacted");
        assert_eq!(output.body["stuckRunsMarked"], 1);
        assert_eq!(output.body["rawItemsPurged"], 2);
    }

    #[test]
    fn dry_run_counts_and_changes_nothing() {
        let mut harness = harness();
        harness.params.dry_run = true;
        let output = Maintenance.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["tempUploadsPurged"], 2);
        assert_eq!(output.body["importJobsCompacted"], 1);
        assert_eq!(harness.query::<i64>("SELECT COUNT(*) FROM temp_uploads"), 3);
        assert_eq!(harness.query::<i64>("SELECT COUNT(*) FROM import_items"), 4);
        assert!(harness.config.data_dir.join("uploads/old.csv").exists());
    }
}
