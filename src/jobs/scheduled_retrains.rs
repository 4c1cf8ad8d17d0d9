//! `scheduled-retrains`: enqueue a retrain for each model whose retrain schedule is due,
//! exactly once, and plan its next retrain.

use super::due_enqueue::DueTable;
use super::{Job, JobCtx, JobError, JobOutput};

pub struct ScheduledRetrains;

const MODELS: DueTable = DueTable {
    table: "ml_models",
    schedule_column: "retrain_schedule",
    next_column: "next_retrain_at",
    topic: "model.retrain",
    id_key: "modelId",
};

impl Job for ScheduledRetrains {
    fn name(&self) -> &'static str {
        "scheduled-retrains"
    }

    fn default_schedule(&self) -> &'static str {
        "0 2 * * *"
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        MODELS.run(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::TimeZone;

    #[test]
    fn enqueues_due_retrains_and_leaves_the_rest() {
        let harness = Harness::new(chrono::Utc.with_ymd_and_hms(2026, 6, 1, 2, 0, 5).unwrap());
        harness.exec(
            "INSERT INTO ml_models (id, tenant_id, retrain_schedule, next_retrain_at, enabled) VALUES
                 ('weekly', 't1', '0 2 * * 1', '2026-06-01T02:00:00.000Z', 1),
                 ('not-yet', 't1', '0 3 * * *', '2026-06-01T03:00:00.000Z', 1),
                 ('hand-only', 't1', NULL, NULL, 1),
                 ('off', 't1', '0 2 * * *', '2026-06-01T02:00:00.000Z', 0);",
        );
        let output = ScheduledRetrains.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["enqueued"], 1);
        assert_eq!(
            harness.query::<String>("SELECT next_retrain_at FROM ml_models WHERE id = 'weekly'"),
            "2026-06-08T02:00:00.000Z"
        );
        assert_eq!(
            harness.query::<String>("SELECT last_enqueued_at FROM ml_models WHERE id = 'weekly'"),
            "2026-06-01T02:00:05.000Z"
        );
        assert_eq!(
            harness.query::<String>("SELECT topic FROM outbox"),
            "model.retrain"
        );
        assert_eq!(
            harness.query::<String>("SELECT json_extract(payload, '$.modelId') FROM outbox"),
            "weekly"
        );
        assert_eq!(
            harness.query::<String>("SELECT next_retrain_at FROM ml_models WHERE id = 'off'"),
            "2026-06-01T02:00:00.000Z"
        );
    }
}
