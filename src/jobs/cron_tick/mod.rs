//! `cron-tick`, the legacy `/api/cron/tick`: evaluate every active alert rule, then run the
//! report schedules that are due.
//!
//! The two share only the route (and how `export_metrics` tells exports from file cleanups):
//! `alerts.rs` evaluates the rules, fires and resolves them and posts their events;
//! `reports.rs` renders the due report schedules and records their runs.

mod alerts;
mod reports;

use serde_json::json;

use super::{Job, JobCtx, JobError, JobOutput};
use alerts::evaluate_rules;
use reports::run_due_reports;

pub struct CronTick;

/// Export metrics that are exports: file cleanups record metric rows too, but are not exports.
const EXPORTS_ONLY: &str = "export_type <> 'file_cleanup'";

impl Job for CronTick {
    fn name(&self) -> &'static str {
        "cron-tick"
    }

    fn default_schedule(&self) -> &'static str {
        "* * * * *"
    }

    fn legacy_routes(&self) -> &'static [&'static str] {
        &["/api/cron/tick"]
    }

    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
        let mut errors = Vec::new();
        let alerts = evaluate_rules(ctx, &mut errors)?;
        let reports = run_due_reports(ctx, &mut errors)?;
        Ok(JobOutput {
            body: json!({
                "ok": errors.is_empty(),
                "rulesEvaluated": alerts.evaluated,
                "fired": alerts.fired,
                "resolved": alerts.resolved,
                "reportsRun": reports.run,
                "reportsPlanned": reports.planned,
                "reports": reports.paths,
                "errors": errors,
                "dryRun": ctx.params.dry_run,
            }),
            item_errors: errors.len() as u64,
            rows_processed: alerts.evaluated + reports.run,
        })
    }
}
