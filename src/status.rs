//! The state of every job (schedule, enabled, last run, next run), as `edgecron jobs`,
//! `/api/v1/jobs` and the status page show it.

use chrono::SecondsFormat;
use serde::Serialize;

use crate::runner::Runner;
use crate::scheduler::PlannedJob;
use crate::store::StoreError;
use crate::store::runs::RunRecord;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub name: &'static str,
    pub schedule: String,
    pub enabled: bool,
    /// Every path its HTTP trigger answers at.
    pub routes: Vec<String>,
    pub last_run: Option<RunRecord>,
    pub last_failure: Option<RunRecord>,
    /// The next time the scheduler will run it; `None` when disabled or `CRON_ENABLED=false`.
    pub next_run: Option<String>,
}

pub fn job_statuses(runner: &Runner, planned: &[PlannedJob]) -> Result<Vec<JobStatus>, StoreError> {
    let now = runner.clock().now();
    planned
        .iter()
        .map(|job| {
            let (last_run, last_failure) = runner.store().latest_runs(job.name)?;
            let next_run = (job.enabled && runner.config().cron_enabled)
                .then(|| job.schedule.next_after(now))
                .flatten()
                .map(|next| {
                    next.with_timezone(&job.schedule.zone())
                        .to_rfc3339_opts(SecondsFormat::Secs, false)
                });
            let legacy = runner
                .jobs()
                .get(job.name)
                .map_or(&[][..], |job| job.legacy_routes());
            let routes = std::iter::once(format!("/api/v1/cron/{}", job.name))
                .chain(legacy.iter().map(|route| route.to_string()))
                .collect();
            Ok(JobStatus {
                name: job.name,
                schedule: job.schedule.expression().to_string(),
                enabled: job.enabled,
                routes,
                last_run,
                last_failure,
                next_run,
            })
        })
        .collect()
}
