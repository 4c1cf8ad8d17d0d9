//! `cleanup`: delete expired suppressions (their `expires_at` compared as the instant it names,
//! in whatever form the application wrote it) and daily summaries older than 365 days,
//! pre-create the coming days' export partition directories (a failure there is reported, never
//! fatal to the other steps), and keep the store in shape (WAL checkpoint, `PRAGMA optimize`).

use chrono::{Duration, NaiveDate};
use serde::Serialize;

use super::{Job, JobCtx, JobError, JobOutput};
use crate::clock::to_store_text;
use crate::export::partition::{TenantDir, partition_dir};
use crate::store::times;
use crate::store::{BatchOutcome, BatchedChange};

pub struct Cleanup;

const SUMMARY_RETENTION_DAYS: i64 = 365;
const BATCH_SIZE: usize = 2_000;

impl Job for Cleanup {
    fn name(&self) -> &'static str {
        "cleanup"
    }

    fn default_schedule(&self) -> &'static str {
        "30 4 * * *"
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let now = ctx.now();
        let today = now.date_naive();
        // "Older than 365 days" as the replaced handler computed it: now minus 365 x 24 hours.
        let summary_cutoff = now - Duration::days(SUMMARY_RETENTION_DAYS);
        let expired = times::before("expires_at", now, 1);
        let suppressions = BatchedChange {
            label: "cleanup expired suppressions",
            table: "suppressions",
            filter: &format!("expires_at IS NOT NULL AND {}", expired.sql),
            set_clause: None,
            params: expired.params,
            batch_size: BATCH_SIZE,
        };
        // period_start is a date or a timestamp: a date reads as its midnight.
        let old = times::before("period_start", summary_cutoff, 1);
        let summaries = BatchedChange {
            label: "cleanup old daily summaries",
            table: "interaction_summaries",
            filter: &format!("period_type = 'daily' AND {}", old.sql),
            set_clause: None,
            params: old.params,
            batch_size: BATCH_SIZE,
        };

        if ctx.params.dry_run {
            let expired = suppressions.count(ctx.store)?;
            let old = summaries.count(ctx.store)?;
            let report = Report {
                status: "ok",
                cleaned: Cleaned {
                    expired_suppressions: expired,
                    old_daily_summaries: old,
                    partitions_ensured: 0,
                },
                done: None,
                timestamp: to_store_text(now),
                dry_run: true,
            };
            return JobOutput::new(&report, 0, 0);
        }

        let (expired, expired_outcome) = suppressions.run(ctx.store, || ctx.should_stop())?;
        let (old, old_outcome) = summaries.run(ctx.store, || ctx.should_stop())?;
        let unreadable = unreadable_expiries(ctx)?;
        let mut errors = Vec::new();
        let partitions = ensure_partitions(ctx, today, &mut errors)?;
        let upkeep = store_upkeep(ctx)?;
        let finished =
            expired_outcome == BatchOutcome::Finished && old_outcome == BatchOutcome::Finished;
        let item_errors = errors.len() as u64;
        let report = Report {
            status: "ok",
            cleaned: Cleaned {
                expired_suppressions: expired,
                old_daily_summaries: old,
                partitions_ensured: partitions,
            },
            done: Some(Done {
                unreadable_expiries: unreadable,
                errors,
                upkeep,
                finished,
            }),
            timestamp: to_store_text(now),
            dry_run: false,
        };
        JobOutput::new(&report, item_errors, expired + old)
    }
}

/// `{status: "ok", cleaned, timestamp}`, as the replaced handler answered (SPEC section 5), and
/// what a run that changed something adds. `status` is that handler's constant: whether the
/// run went well is in `ok`, which the runner adds.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    status: &'static str,
    cleaned: Cleaned,
    #[serde(flatten)]
    done: Option<Done>,
    timestamp: String,
    dry_run: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Cleaned {
    expired_suppressions: u64,
    old_daily_summaries: u64,
    partitions_ensured: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Done {
    unreadable_expiries: u64,
    errors: Vec<StepError>,
    upkeep: Upkeep,
    finished: bool,
}

/// A step that failed for one tenant while the others went on.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StepError {
    step: &'static str,
    tenant_id: String,
    error: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Upkeep {
    wal_checkpoint: Checkpoint,
    optimized: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checkpoint {
    busy: bool,
    log_frames: i64,
    checkpointed_frames: i64,
}

/// Suppressions whose `expires_at` names no instant: they never expire, and are reported.
fn unreadable_expiries(ctx: &JobCtx<'_>) -> Result<u64, JobError> {
    let unreadable = times::unreadable("expires_at", ctx.now(), 1);
    let count: i64 = ctx.store.conn()?.query_row(
        &format!("SELECT COUNT(*) FROM suppressions WHERE {}", unreadable.sql),
        rusqlite::params_from_iter(&unreadable.params),
        |row| row.get(0),
    )?;
    if count > 0 {
        log::warn!(
            "cleanup: {count} suppressions have an expires_at that names no instant; they are kept, in force"
        );
    }
    Ok(count as u64)
}

/// Creates today's and tomorrow's partition directories for every active tenant, so exports
/// rename into directories that already exist and readers see the day's partition early. A
/// directory that cannot be made is noted in `errors`; the step is a convenience, and the other
/// steps' work stands.
fn ensure_partitions(
    ctx: &JobCtx<'_>,
    today: NaiveDate,
    errors: &mut Vec<StepError>,
) -> Result<u64, JobError> {
    let tenant_ids: Vec<String> = {
        let conn = ctx.store.conn()?;
        let mut statement = conn.prepare("SELECT id FROM tenants WHERE active = 1 ORDER BY id")?;
        statement
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?
    };
    let days = [today, today.succ_opt().unwrap_or(today)];
    let site = ctx.site()?;
    let mut ensured = 0;
    for id in &tenant_ids {
        let tenant = match TenantDir::new(id) {
            Ok(tenant) => tenant,
            Err(error) => {
                log::warn!("cleanup: {error}; no partition directories made for it");
                continue;
            }
        };
        for day in days {
            let dir = ctx.data_dir().join(partition_dir(tenant, &site, day));
            match std::fs::create_dir_all(&dir) {
                Ok(()) => ensured += 1,
                Err(error) => {
                    log::warn!(
                        "cleanup: partition maintenance: creating {}: {error}",
                        dir.display()
                    );
                    errors.push(StepError {
                        step: "partitionsEnsured",
                        tenant_id: id.clone(),
                        error: format!("creating {}: {error}", dir.display()),
                    });
                }
            }
        }
    }
    Ok(ensured)
}

fn store_upkeep(ctx: &JobCtx<'_>) -> Result<Upkeep, JobError> {
    let conn = ctx.store.conn()?;
    // A TRUNCATE checkpoint holds the write lock while it waits for readers, which would stall
    // the application's writers for the whole busy timeout. Without a busy timeout it never
    // waits: it checkpoints what it can and truncates the WAL only when no reader is in it.
    conn.busy_timeout(std::time::Duration::ZERO)?;
    let checkpoint = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    crate::store::wait_for_the_write_lock(&conn)?;
    let (busy, log_frames, checkpointed) = checkpoint?;
    conn.execute_batch("PRAGMA optimize")?;
    Ok(Upkeep {
        wal_checkpoint: Checkpoint {
            busy: busy != 0,
            log_frames,
            checkpointed_frames: checkpointed,
        },
        optimized: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::TimeZone;

    #[test]
    fn deletes_exactly_the_expired_and_the_old() {
        let harness = Harness::new(chrono::Utc.with_ymd_and_hms(2026, 6, 1, 4, 30, 0).unwrap());
        harness.exec(
            "INSERT INTO tenants (id, name, active) VALUES ('acme', 'Acme', 1), ('gone', 'Gone', 0), ('../evil', 'Evil', 1);
             INSERT INTO suppressions (id, expires_at) VALUES
                 ('expired', '2026-06-01T04:29:59.999Z'),
                 ('live', '2026-06-01T04:30:00.001Z'),
                 ('forever', NULL);
             INSERT INTO interaction_summaries (id, period_type, period_start) VALUES
                 ('old-day', 'daily', '2025-05-31'),
                 ('old-stamp', 'daily', '2025-05-31T23:59:59.999Z'),
                 ('cutoff-day', 'daily', '2025-06-01'),
                 ('hour-before', 'daily', '2025-06-01T03:30:00.000Z'),
                 ('at-cutoff', 'daily', '2025-06-01T04:30:00.000Z'),
                 ('recent', 'daily', '2026-05-01'),
                 ('old-month', 'monthly', '2020-01-01');",
        );
        let output = Cleanup.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["status"], "ok");
        assert_eq!(output.body["cleaned"]["expiredSuppressions"], 1);
        // Older than 365 days: before now minus 365 x 24 hours, not before a midnight.
        assert_eq!(output.body["cleaned"]["oldDailySummaries"], 4);
        assert_eq!(output.body["cleaned"]["partitionsEnsured"], 2);
        assert_eq!(
            harness.strings("SELECT id FROM suppressions ORDER BY id"),
            ["forever", "live"]
        );
        assert_eq!(
            harness.strings("SELECT id FROM interaction_summaries ORDER BY id"),
            ["at-cutoff", "old-month", "recent"]
        );
        let site = &harness.strings("SELECT site_id FROM site")[0];
        let partition = harness.config.data_dir.join(format!(
            "exports/acme/interaction_history/site={site}/year=2026/month=06/day=02"
        ));
        assert!(partition.is_dir());
        assert!(!harness.config.data_dir.join("exports/gone").exists());
        assert!(!harness.config.data_dir.join("evil").exists());
    }
}
