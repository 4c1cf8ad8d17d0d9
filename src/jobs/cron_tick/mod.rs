//! `cron-tick`, the legacy `/api/cron/tick`: evaluate every active alert rule, then run the
//! report schedules that are due.
//!
//! The two share only the route (and how `export_metrics` tells exports from file cleanups):
//! `alerts.rs` evaluates the rules, fires and resolves them and posts their events;
//! `reports.rs` renders the due report schedules and records their runs.

mod alerts;
mod reports;

use serde::Serialize;

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
        let item_errors = errors.len() as u64;
        let report = Report {
            rules_evaluated: alerts.evaluated,
            fired: alerts.fired,
            resolved: alerts.resolved,
            reports_run: reports.run,
            reports_planned: reports.planned,
            reports: reports.paths,
            errors,
            dry_run: ctx.params.dry_run,
        };
        JobOutput::new(&report, item_errors, alerts.evaluated + reports.run)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    rules_evaluated: u64,
    fired: u64,
    resolved: u64,
    reports_run: u64,
    reports_planned: u64,
    /// The report files written.
    reports: Vec<String>,
    errors: Vec<TickError>,
    dry_run: bool,
}

/// An alert rule or a report schedule that failed while the others went on.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TickError {
    #[serde(skip_serializing_if = "Option::is_none")]
    rule_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule_id: Option<String>,
    error: String,
}

impl TickError {
    fn of_rule(rule_id: &str, error: String) -> TickError {
        TickError {
            rule_id: Some(rule_id.to_string()),
            schedule_id: None,
            error,
        }
    }

    fn of_schedule(schedule_id: &str, error: String) -> TickError {
        TickError {
            rule_id: None,
            schedule_id: Some(schedule_id.to_string()),
            error,
        }
    }
}
