//! `flow-scheduler-tick`: enqueue each scheduled flow that is due, exactly once, and plan its
//! next run from its own cron expression and time zone.

use super::due_enqueue::DueTable;
use super::{Job, JobCtx, JobError, JobOutput};

pub struct FlowSchedulerTick;

const FLOWS: DueTable = DueTable {
    table: "flows",
    schedule_column: "schedule",
    next_column: "next_run_at",
    topic: "flow.run",
    id_key: "flowId",
};

impl Job for FlowSchedulerTick {
    fn name(&self) -> &'static str {
        "flow-scheduler-tick"
    }

    fn default_schedule(&self) -> &'static str {
        "* * * * *"
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        FLOWS.run(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::test_support::Harness;
    use chrono::TimeZone;

    #[test]
    fn enqueues_due_flows_once_and_plans_the_next_run_in_the_flows_zone() {
        let harness = Harness::new(chrono::Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 30).unwrap());
        harness.exec(
            "INSERT INTO flows (id, tenant_id, schedule, timezone, next_run_at, enabled) VALUES
                 ('due', 't1', '0 9 * * *', 'Europe/Berlin', '2026-06-01T07:00:00.000Z', 1),
                 ('long-overdue', 't1', '*/5 * * * *', 'UTC', '2026-05-01T00:00:00.000Z', 1),
                 ('later', 't1', '0 9 * * *', 'UTC', '2026-06-02T09:00:00.000Z', 1),
                 ('disabled', 't1', '* * * * *', 'UTC', '2026-06-01T00:00:00.000Z', 0),
                 ('new', 't2', '30 12 * * MON', 'UTC', NULL, 1),
                 ('broken', 't2', 'every day', 'UTC', '2026-06-01T00:00:00.000Z', 1),
                 ('manual', 't2', NULL, 'UTC', NULL, 1);",
        );
        let output = FlowSchedulerTick.run(&harness.ctx()).unwrap();
        assert_eq!(output.body["enqueued"], 2);
        assert_eq!(output.body["planned"], 1);
        assert_eq!(output.item_errors, 1);
        assert_eq!(output.body["errors"][0]["id"], "broken");

        let next = harness
            .strings("SELECT id || '=' || COALESCE(next_run_at, '-') FROM flows ORDER BY id");
        assert_eq!(
            next,
            [
                "broken=2026-06-01T00:00:00.000Z",
                "disabled=2026-06-01T00:00:00.000Z",
                // 09:00 in Berlin (CEST) is 07:00 UTC, tomorrow.
                "due=2026-06-02T07:00:00.000Z",
                "later=2026-06-02T09:00:00.000Z",
                "long-overdue=2026-06-01T12:05:00.000Z",
                "manual=-",
                // 2026-06-01 is a Monday; 12:30 today is still ahead.
                "new=2026-06-01T12:30:00.000Z",
            ]
        );
        let messages = harness.strings("SELECT topic || ' ' || payload FROM outbox ORDER BY id");
        assert_eq!(
            messages,
            [
                r#"flow.run {"flowId":"long-overdue","scheduledFor":"2026-05-01T00:00:00.000Z","tenantId":"t1"}"#,
                r#"flow.run {"flowId":"due","scheduledFor":"2026-06-01T07:00:00.000Z","tenantId":"t1"}"#,
            ]
        );
        // A second tick at the same instant finds nothing due.
        assert_eq!(
            FlowSchedulerTick.run(&harness.ctx()).unwrap().body["enqueued"],
            0
        );
        assert_eq!(harness.query::<i64>("SELECT COUNT(*) FROM outbox"), 2);
    }

    #[test]
    fn racing_ticks_enqueue_a_due_flow_once() {
        let harness = Harness::new(chrono::Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 30).unwrap());
        harness.exec(
            "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 200)
             INSERT INTO flows (id, schedule, next_run_at)
             SELECT 'f' || value, '* * * * *', '2026-06-01T12:00:00.000Z' FROM n;",
        );
        std::thread::scope(|scope| {
            let ticks: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| FlowSchedulerTick.run(&harness.ctx()).unwrap()))
                .collect();
            let enqueued: u64 = ticks
                .into_iter()
                .map(|tick| tick.join().unwrap().body["enqueued"].as_u64().unwrap())
                .sum();
            assert_eq!(enqueued, 200);
        });
        assert_eq!(harness.query::<i64>("SELECT COUNT(*) FROM outbox"), 200);
        assert_eq!(
            harness.query::<i64>("SELECT COUNT(DISTINCT dedupe_key) FROM outbox"),
            200
        );
    }
}
