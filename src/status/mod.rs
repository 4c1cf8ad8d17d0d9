//! The read model the edges show: the state of every job (schedule, zone, policies, enabled,
//! last run, next run, alert conditions in force), as `edgecron jobs`, `/api/v1/jobs` and
//! the status page show it; the status page's other facts; and, in [`scrape`], what
//! `/metrics` reports.

pub mod history;
pub mod scrape;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::clock::Clock;
use crate::config::Config;
use crate::jobs::{Consuming, Registry};
use crate::store::alerts::{self, Condition};
use crate::store::capture;
use crate::store::runs;
use crate::store::stats;
use crate::store::{Store, StoreError};

pub use crate::scheduler::PlannedJob;
pub use crate::store::occurrences::Outcome;
pub use crate::store::runs::RunRecord;
pub use crate::store::stats::{OccurrenceCell, RunStart};

/// What the read model reads, named: the store, the jobs, the configuration and the clock.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub store: &'a Store,
    pub jobs: &'a Registry,
    pub config: &'a Config,
    pub clock: &'a dyn Clock,
}

/// A job's effective plan as the edges print it: all `edgecron check` shows, and the first
/// part of each job's status.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobPlan {
    pub name: &'static str,
    pub schedule: String,
    /// The zone the schedule (and the expected schedule) is read in.
    pub zone: String,
    pub catch_up: &'static str,
    /// `EDGECRON_EXPECT_<JOB>`: when an outside scheduler is expected to trigger it.
    pub expected: Option<String>,
    pub grace_seconds: u64,
    /// `EDGECRON_SPREAD_<JOB>`, and this site's offset within it (unknown without a site).
    pub spread_seconds: u64,
    pub spread_offset_ms: Option<u64>,
    pub enabled: bool,
    /// The next time the scheduler will run it; `None` when disabled or `CRON_ENABLED=false`.
    pub next_run: Option<String>,
    /// The next time an outside trigger is expected, with an expected schedule.
    pub next_expected: Option<String>,
}

impl JobPlan {
    pub fn of(job: &PlannedJob, cron_enabled: bool, now: DateTime<Utc>) -> JobPlan {
        JobPlan {
            name: job.name,
            schedule: job.schedule.expression().to_string(),
            zone: job.schedule.zone().name().to_string(),
            catch_up: job.catch_up.as_str(),
            expected: job
                .expected
                .as_ref()
                .map(|expected| expected.expression().to_string()),
            grace_seconds: job.grace.as_secs(),
            spread_seconds: job.spread.as_secs(),
            spread_offset_ms: job.offset.map(|offset| offset.as_millis() as u64),
            enabled: job.enabled,
            next_run: next_run(job, cron_enabled, now),
            next_expected: next_expected(job, now),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    #[serde(flatten)]
    pub plan: JobPlan,
    /// Every path its HTTP trigger answers at.
    pub routes: Vec<String>,
    pub last_run: Option<RunRecord>,
    pub last_failure: Option<RunRecord>,
    /// Since when a scheduled or expected run has not started within its grace.
    pub overdue_since: Option<String>,
    /// Since when its last runs have failed.
    pub failing_since: Option<String>,
    /// The capture queue it takes rows from, for the jobs that do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_backlog: Option<CaptureBacklog>,
}

impl JobStatus {
    /// `edgecron jobs` without `--json`: a line per job.
    pub fn table(statuses: &[JobStatus]) -> String {
        let mut out = format!(
            "{:<30} {:<16} {:<8} {:<48} {}\n",
            "JOB", "SCHEDULE", "ENABLED", "LAST RUN", "NEXT RUN"
        );
        for status in statuses {
            let last = status.last_run.as_ref().map_or_else(
                || "-".to_string(),
                |run| {
                    let seconds = run
                        .duration_ms
                        .map_or(String::new(), |ms| format!(" ({:.2}s)", ms as f64 / 1000.0));
                    format!("{} {}{seconds}", run.status, run.started_at)
                },
            );
            out.push_str(&format!(
                "{:<30} {:<16} {:<8} {:<48} {}\n",
                status.plan.name,
                status.plan.schedule,
                if status.plan.enabled { "yes" } else { "no" },
                last,
                status.plan.next_run.as_deref().unwrap_or("-"),
            ));
        }
        out
    }
}

/// What waits in a consumer's capture queue.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureBacklog {
    pub table: &'static str,
    /// Rows not yet taken.
    pub rows: u64,
    /// What the job's last run left, and the run before it.
    pub after_last_run: Option<u64>,
    pub after_run_before: Option<u64>,
    /// The job's runs no longer work it off, or the triggers queue rows for it while it is not
    /// configured to take them.
    pub growing: bool,
    /// When the capture triggers were found gone, while the rows missed are being recovered.
    pub gap_found_at: Option<String>,
}

fn capture_backlog(from: Sources, job: &str) -> Result<Option<CaptureBacklog>, StoreError> {
    let Some((source, consuming)) = from.jobs.get(job).and_then(|job| job.consumes(from.config))
    else {
        return Ok(None);
    };
    let state = capture::backlog_state(from.store, source)?;
    Ok(Some(CaptureBacklog {
        table: source.table(),
        rows: state.rows,
        after_last_run: state.after_last_run,
        after_run_before: state.after_run_before,
        growing: state.growing()
            || (consuming == Consuming::No && state.capturing && state.rows > 0),
        gap_found_at: state.gap_found_at,
    }))
}

impl JobStatus {
    /// Overdue or failing: listed first on the status page.
    pub fn unhealthy(&self) -> bool {
        self.overdue_since.is_some()
            || self.failing_since.is_some()
            || self
                .capture_backlog
                .as_ref()
                .is_some_and(|backlog| backlog.growing || backlog.gap_found_at.is_some())
    }
}

/// A fire time as listings show it: in the job's zone, with its offset.
pub fn zoned_text(job: &PlannedJob, time: DateTime<Utc>) -> String {
    time.with_timezone(&job.schedule.zone())
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// The next time the scheduler runs `job` after `now`, if it does.
fn next_run(job: &PlannedJob, cron_enabled: bool, now: DateTime<Utc>) -> Option<String> {
    let offset = chrono::Duration::from_std(job.offset.unwrap_or_default()).unwrap_or_default();
    (job.enabled && cron_enabled)
        .then(|| job.schedule.next_after(now - offset))
        .flatten()
        .map(|next| zoned_text(job, next + offset))
}

/// The next time an outside trigger of `job` is expected after `now`.
fn next_expected(job: &PlannedJob, now: DateTime<Utc>) -> Option<String> {
    job.expected
        .as_ref()
        .and_then(|expected| expected.next_after(now))
        .map(|next| zoned_text(job, next))
}

pub fn job_statuses(from: Sources, planned: &[PlannedJob]) -> Result<Vec<JobStatus>, StoreError> {
    let now = from.clock.now();
    let conditions = alerts::conditions(from.store)?;
    let since = |job: &str, kind: &str| {
        conditions
            .iter()
            .find(|condition: &&Condition| condition.job == job && condition.kind == kind)
            .map(|condition| condition.since.clone())
    };
    planned
        .iter()
        .map(|job| {
            let (last_run, last_failure) = runs::latest_runs(from.store, job.name)?;
            let legacy = from
                .jobs
                .get(job.name)
                .map_or(&[][..], |job| job.legacy_routes());
            let routes = std::iter::once(format!("/api/v1/cron/{}", job.name))
                .chain(legacy.iter().map(|route| route.to_string()))
                .collect();
            Ok(JobStatus {
                plan: JobPlan::of(job, from.config.cron_enabled, now),
                routes,
                last_run,
                last_failure,
                overdue_since: since(job.name, "overdue"),
                failing_since: since(job.name, "failing"),
                capture_backlog: capture_backlog(from, job.name)?,
            })
        })
        .collect()
}

/// What the status page shows beyond each job's status, read from the store: recent run
/// durations per job, the last day's occurrences and runs (for the strips), recent failures.
pub struct PageFacts {
    pub jobs: Vec<JobStatus>,
    pub durations: BTreeMap<&'static str, Vec<i64>>,
    pub occurrences: Vec<OccurrenceCell>,
    pub runs: Vec<RunStart>,
    pub failures: Vec<RunRecord>,
}

/// Durations of each job's last this many runs, for the page's sparkline.
const RECENT_DURATIONS: i64 = 30;
/// Failures the page lists.
const RECENT_FAILURES: i64 = 10;

/// The status page's facts, with occurrences and runs since `since`.
pub fn page_facts(
    from: Sources,
    planned: &[PlannedJob],
    since: DateTime<Utc>,
) -> Result<PageFacts, StoreError> {
    let store = from.store;
    let jobs = job_statuses(from, planned)?;
    let durations = jobs
        .iter()
        .map(|job| {
            Ok((
                job.plan.name,
                runs::recent_durations(store, job.plan.name, RECENT_DURATIONS)?,
            ))
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(PageFacts {
        durations,
        occurrences: stats::occurrence_cells(store, since)?,
        runs: stats::runs_since(store, since)?,
        failures: runs::recent_failures(store, RECENT_FAILURES)?,
        jobs,
    })
}
