//! `approvals-expire`: pending approvals past `expires_at` become `expired`.

use rusqlite::types::Value;
use serde::Serialize;

use super::{Job, JobCtx, JobError, JobOutput};
use crate::clock::to_store_text;
use crate::store::times;
use crate::store::{BatchOutcome, BatchedChange};

pub struct ApprovalsExpire;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    expired: u64,
    finished: bool,
    dry_run: bool,
}

impl Job for ApprovalsExpire {
    fn name(&self) -> &'static str {
        "approvals-expire"
    }

    fn default_schedule(&self) -> &'static str {
        "*/15 * * * *"
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let past = times::before("expires_at", ctx.now(), 1);
        let mut params = past.params;
        params.push(Value::Text(to_store_text(ctx.now())));
        let change = BatchedChange {
            label: "approvals-expire",
            table: "approvals",
            filter: &format!("status = 'pending' AND {}", past.sql),
            set_clause: Some("status = 'expired', decided_at = ?3"),
            params,
            batch_size: 1_000,
        };
        let (expired, outcome) = if ctx.params.dry_run {
            (change.count(ctx.store)?, BatchOutcome::Finished)
        } else {
            change.run(ctx.store, || ctx.should_stop())?
        };
        let report = Report {
            expired,
            finished: outcome == BatchOutcome::Finished,
            dry_run: ctx.params.dry_run,
        };
        JobOutput::new(&report, 0, expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::TimeZone;

    #[test]
    fn expires_only_pending_approvals_past_their_expiry() {
        let harness = Harness::new(chrono::Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap());
        harness.exec(
            "INSERT INTO approvals (id, status, expires_at) VALUES
                 ('past', 'pending', '2026-06-01T11:59:59.999Z'),
                 ('future', 'pending', '2026-06-01T12:00:00.001Z'),
                 ('never', 'pending', NULL),
                 ('approved-past', 'approved', '2026-05-01T00:00:00.000Z'),
                 ('rejected-past', 'rejected', '2026-05-01T00:00:00.000Z');",
        );
        let output = ApprovalsExpire.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["expired"], 1);
        let statuses = harness.strings("SELECT id || '=' || status || '@' || COALESCE(decided_at, '-') FROM approvals ORDER BY id");
        assert_eq!(
            statuses,
            [
                "approved-past=approved@-",
                "future=pending@-",
                "never=pending@-",
                "past=expired@2026-06-01T12:00:00.000Z",
                "rejected-past=rejected@-",
            ]
        );
        assert_eq!(
            ApprovalsExpire.run(&harness.ctx()).unwrap().body["expired"],
            0
        );
    }

    #[test]
    fn dry_run_counts_and_changes_nothing() {
        let mut harness = Harness::new(chrono::Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap());
        harness.exec("INSERT INTO approvals (id, status, expires_at) VALUES ('past', 'pending', '2026-01-01T00:00:00.000Z');");
        harness.params.dry_run = true;
        assert_eq!(
            ApprovalsExpire.run(&harness.ctx()).unwrap().body["expired"],
            1
        );
        assert_eq!(
            harness.query::<String>("SELECT status FROM approvals"),
            "pending"
        );
    }
}
