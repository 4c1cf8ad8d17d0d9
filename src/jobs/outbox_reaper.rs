//! `outbox-reaper`: outbox rows stuck in `processing` past the lease go back to `pending`, or
//! to `dead` once they have used up their attempts (workers count an attempt when they claim).

use rusqlite::types::Value;
use serde::Serialize;

use super::{Job, JobCtx, JobError, JobOutput};
use crate::clock::to_store_text;
use crate::store::times;
use crate::store::{BatchOutcome, BatchedChange};

pub struct OutboxReaper;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    reset: u64,
    dead: u64,
    finished: bool,
    dry_run: bool,
}

impl Job for OutboxReaper {
    fn name(&self) -> &'static str {
        "outbox-reaper"
    }

    fn default_schedule(&self) -> &'static str {
        "*/2 * * * *"
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let now = ctx.now();
        let lease =
            chrono::Duration::from_std(ctx.config.outbox_lease).unwrap_or(chrono::Duration::MAX);
        // Rows whose lease ran out (`?1`, `?2`); `?3` is the default max attempts, `?4` now.
        let expired = times::before("COALESCE(locked_at, updated_at)", now - lease, 1);
        let stuck = format!("status = 'processing' AND {}", expired.sql);
        let mut params = expired.params;
        params.push(Value::Integer(ctx.config.outbox_max_attempts));
        params.push(Value::Text(to_store_text(now)));
        let dead_filter = format!("{stuck} AND attempts >= COALESCE(max_attempts, ?3)");
        let retry_filter = format!("{stuck} AND attempts < COALESCE(max_attempts, ?3)");
        let to_dead = BatchedChange {
            label: "outbox-reaper dead-letter",
            table: "outbox",
            filter: &dead_filter,
            set_clause: Some(
                "status = 'dead', locked_at = NULL, updated_at = ?4,
                 last_error = 'lease expired after ' || attempts || ' attempts; dead-lettered'",
            ),
            params: params.clone(),
            batch_size: 1_000,
        };
        let to_pending = BatchedChange {
            label: "outbox-reaper reset",
            table: "outbox",
            filter: &retry_filter,
            set_clause: Some(
                "status = 'pending', locked_at = NULL, updated_at = ?4,
                 last_error = 'lease expired; returned to the queue'",
            ),
            params,
            batch_size: 1_000,
        };
        let (dead, reset, finished) = if ctx.params.dry_run {
            (
                to_dead.count(ctx.store)?,
                to_pending.count(ctx.store)?,
                true,
            )
        } else {
            let (dead, dead_outcome) = to_dead.run(ctx.store, || ctx.should_stop())?;
            let (reset, reset_outcome) = to_pending.run(ctx.store, || ctx.should_stop())?;
            let finished =
                dead_outcome == BatchOutcome::Finished && reset_outcome == BatchOutcome::Finished;
            (dead, reset, finished)
        };
        if dead > 0 {
            log::warn!("outbox-reaper: {dead} messages dead-lettered after their last attempt");
        }
        let report = Report {
            reset,
            dead,
            finished,
            dry_run: ctx.params.dry_run,
        };
        JobOutput::new(&report, 0, reset + dead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::TimeZone;

    #[test]
    fn resets_stuck_rows_and_dead_letters_exhausted_ones() {
        // Lease 300 s, max attempts 5 (the defaults); now is 12:00, so the cutoff is 11:55.
        let harness = Harness::new(chrono::Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap());
        harness.exec(
            "INSERT INTO outbox (id, status, attempts, max_attempts, locked_at) VALUES
                 (1, 'processing', 1, NULL, '2026-06-01T11:50:00.000Z'),
                 (2, 'processing', 5, NULL, '2026-06-01T11:50:00.000Z'),
                 (3, 'processing', 2, 2,    '2026-06-01T11:00:00.000Z'),
                 (4, 'processing', 1, NULL, '2026-06-01T11:58:00.000Z'),
                 (5, 'pending',    9, NULL, '2026-06-01T10:00:00.000Z'),
                 (6, 'done',       1, NULL, '2026-06-01T10:00:00.000Z');",
        );
        let output = OutboxReaper.run(&harness.ctx()).unwrap();
        assert_eq!(
            (output.body["reset"].as_u64(), output.body["dead"].as_u64()),
            (Some(1), Some(2))
        );
        let rows = harness.strings("SELECT id || ':' || status || ':' || attempts || ':' || COALESCE(locked_at, '-') FROM outbox ORDER BY id");
        assert_eq!(
            rows,
            [
                "1:pending:1:-",
                "2:dead:5:-",
                "3:dead:2:-",
                "4:processing:1:2026-06-01T11:58:00.000Z",
                "5:pending:9:2026-06-01T10:00:00.000Z",
                "6:done:1:2026-06-01T10:00:00.000Z",
            ]
        );
        assert_eq!(
            harness.query::<String>("SELECT last_error FROM outbox WHERE id = 2"),
            "lease expired after 5 attempts; dead-lettered"
        );
    }

    #[test]
    fn dry_run_counts_without_changing_anything() {
        // Regression: the dry-run count once bound the SET clause's parameter too and failed.
        let mut harness = Harness::new(chrono::Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap());
        harness.exec("INSERT INTO outbox (id, status, attempts, locked_at) VALUES (1, 'processing', 1, '2026-06-01T10:00:00.000Z');");
        harness.params.dry_run = true;
        let output = OutboxReaper.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["reset"], 1);
        assert_eq!(
            harness.query::<String>("SELECT status FROM outbox"),
            "processing"
        );
    }
}
