//! The `Job` trait, what a job is given to run (`JobCtx`), and the registry of every job.
//!
//! A job knows how to do its work; it does not know who triggered it, whether it overlaps
//! itself (the runner's lease sees to that) or when it is due (the scheduler's business).

mod approvals_expire;
mod archive;
mod capture_gap;
mod cleanup;
mod cron_tick;
mod dsar_access;
mod dsar_erase;
mod dsar_purge;
mod due_enqueue;
mod engagement_health_recompute;
mod export_file_cleanup;
mod export_interactions;
mod export_log_cleanup;
mod export_metrics_aggregate;
mod flow_scheduler_tick;
mod gitops_drift_check;
mod maintenance;
mod named_files;
mod outbox_reaper;
mod s3_sync;
mod scheduled_retrains;
mod siem_ship;
mod telemetry_daily;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::config::{Config, JobDefaults};
use crate::export::rewrite::Rewriting;
use crate::export::storage::Storage;
use crate::io_error::IoError;
use crate::shutdown::Shutdown;
use crate::store::capture::Source;
use crate::store::{Store, StoreError};

pub use dsar_access::dsar_access;
pub use dsar_erase::{DataSubject, DsarErase};

/// Parameters a job cannot take; the message names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidParams(String);

/// Why a run is refused before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no job named {0:?}")]
    UnknownJob(String),
    #[error(transparent)]
    InvalidParams(#[from] InvalidParams),
}

/// Parameters a trigger may pass: `dryRun`, `startDate`, `endDate`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunParams {
    pub dry_run: bool,
    pub start_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
}

impl RunParams {
    /// Reads the parameters as triggers pass them; dates are `YYYY-MM-DD`.
    pub fn from_text(
        dry_run: bool,
        start_date: Option<&str>,
        end_date: Option<&str>,
    ) -> Result<RunParams, InvalidParams> {
        Ok(RunParams {
            dry_run,
            start_date: start_date
                .map(|text| parse_date("startDate", text))
                .transpose()?,
            end_date: end_date
                .map(|text| parse_date("endDate", text))
                .transpose()?,
        })
    }
}

impl RunParams {
    /// The inclusive dates asked for: both ends, or one date alone meaning that day.
    pub fn date_range(&self) -> Option<(NaiveDate, NaiveDate)> {
        match (self.start_date, self.end_date) {
            (Some(start), Some(end)) => Some((start, end)),
            (Some(day), None) | (None, Some(day)) => Some((day, day)),
            (None, None) => None,
        }
    }
}

fn parse_date(field: &str, text: &str) -> Result<NaiveDate, InvalidParams> {
    let well_formed = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    well_formed
        .then(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| InvalidParams(format!("{field}: {text:?} is not a date (YYYY-MM-DD)")))
}

/// Everything a running job may use.
pub struct JobCtx<'a> {
    pub store: &'a Store,
    pub config: &'a Config,
    pub clock: &'a dyn Clock,
    pub params: &'a RunParams,
    pub run_id: i64,
    pub deadline: Instant,
    pub shutdown: &'a Shutdown,
    /// Set when the run's lease was taken over by another process (it looked dead).
    pub lease_lost: &'a AtomicBool,
    /// Set once [`JobCtx::should_stop`] has answered true: the job stopped with work left,
    /// and the run is not finished whatever the job reports.
    pub stopped: &'a AtomicBool,
}

impl JobCtx<'_> {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// True once the job's deadline has passed or shutdown was requested: long jobs check it
    /// between batches and stop with their progress kept.
    pub fn should_stop(&self) -> bool {
        let stop = Instant::now() >= self.deadline
            || self.shutdown.is_requested()
            || self.lease_lost.load(Ordering::SeqCst);
        if stop {
            self.stopped.store(true, Ordering::SeqCst);
        }
        stop
    }

    pub fn data_dir(&self) -> &PathBuf {
        &self.config.data_dir
    }

    /// The site this run works for (SPEC section 9): the one `run` and `serve` bound as they
    /// began, else the store's own, bound now (a store that belongs elsewhere fails the run).
    pub fn site(&self) -> Result<String, JobError> {
        if let Some(site) = crate::site::current() {
            return Ok(site.to_string());
        }
        let now = crate::clock::to_store_text(self.now());
        crate::site::bind(self.store, self.config.site_id.as_deref(), &now).map_err(|error| {
            match error {
                crate::site::SiteError::Store(error) => JobError::Store(error),
                refused => JobError::Failed(refused.to_string()),
            }
        })
    }

    /// What this run rewrites committed export files with (erasure, retention).
    pub fn rewriting(&self) -> Result<Rewriting<'_>, JobError> {
        Ok(Rewriting {
            store: self.store,
            data_dir: self.data_dir(),
            storage: self.storage()?,
            now_text: crate::clock::to_store_text(self.now()),
            run_id: self.run_id,
        })
    }

    /// The configured S3-compatible storage, if `S3_BUCKET` is set.
    pub fn storage(&self) -> Result<Option<Storage>, JobError> {
        self.config
            .s3
            .as_ref()
            .map(Storage::new)
            .transpose()
            .map_err(|error| JobError::Failed(error.to_string()))
    }
}

/// What a finished job reports: its own result, typed. Whether the run is `ok` is not the
/// job's to say: the runner decides it once, from `item_errors` and whether the job was
/// stopped, and adds it to the body.
pub struct JobOutput {
    /// The fields of the JSON result body that the route returns and `edgecron run` prints.
    pub body: Map<String, Value>,
    /// Items (tenants, flows) that failed while the rest went on; non-zero means `partial`.
    pub item_errors: u64,
    pub rows_processed: u64,
}

impl JobOutput {
    /// A job's result, which serializes as a JSON object (a struct of its fields).
    pub fn new(
        result: &impl Serialize,
        item_errors: u64,
        rows_processed: u64,
    ) -> Result<JobOutput, JobError> {
        match serde_json::to_value(result) {
            Ok(Value::Object(body)) => Ok(JobOutput {
                body,
                item_errors,
                rows_processed,
            }),
            Ok(other) => Err(JobError::Failed(format!(
                "a job's result must be a JSON object, not {other}"
            ))),
            Err(error) => Err(JobError::Failed(format!("a job's result: {error}"))),
        }
    }
}

/// The result of a job that had nothing to do as configured.
#[derive(Serialize)]
pub struct Skipped {
    pub skipped: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0}")]
    Failed(String),
}

/// Checks the capture triggers of both captured tables, recreating any that are gone (and
/// raising `capture_gap`); the next run of their consumer recovers the rows missed. Notes what
/// waits in each queue, for `/metrics`.
pub fn heal_capture(store: &Store, config: &Config, clock: &dyn Clock) -> Result<(), StoreError> {
    for source in [Source::Interactions, Source::Audit] {
        capture_gap::heal(store, config, clock, source)?;
        crate::store::capture::note_backlog(store, source)?;
    }
    Ok(())
}

/// What a job asks of the export fails the run with the export's message.
impl From<crate::export::batch::ExportError> for JobError {
    fn from(error: crate::export::batch::ExportError) -> JobError {
        JobError::Failed(error.to_string())
    }
}

/// A job's own SQL fails as the store's does.
impl From<rusqlite::Error> for JobError {
    fn from(error: rusqlite::Error) -> JobError {
        JobError::Store(error.into())
    }
}

impl JobError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> JobError {
        let during = IoError::during(context);
        move |source| JobError::Io(during(source))
    }
}

pub trait Job: Send + Sync {
    /// The job's name, as routes, the CLI and the environment name it.
    fn name(&self) -> &'static str;
    /// Its crontab schedule unless `EDGECRON_SCHEDULE_<JOB>` says otherwise.
    fn default_schedule(&self) -> &'static str;
    /// Whether the scheduler runs it unless `EDGECRON_ENABLED_<JOB>` says otherwise;
    /// operator-wired jobs answer false.
    fn enabled_by_default(&self, _config: &Config) -> bool {
        true
    }
    /// Paths besides `/api/v1/cron/<name>` where the system it replaces served it; the HTTP
    /// layer serves it there too, and `jobs` lists them.
    fn legacy_routes(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether it reads `startDate`/`endDate`; other jobs refuse them rather than ignore them.
    fn takes_date_range(&self) -> bool {
        false
    }
    /// The capture queue it takes rows from, if any, and whether it does so as configured
    /// (`siem-ship` without a backend does not: what is captured waits for one).
    fn consumes(&self, _config: &Config) -> Option<(Source, Consuming)> {
        None
    }
    fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError>;
}

/// Whether a job configured as it is takes rows from its capture queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consuming {
    Yes,
    /// Not configured to: its queue grows until it is.
    No,
}

/// The longest `startDate..endDate` one run takes: a year, leap day included.
const MAX_RANGE_DAYS: i64 = 366;

/// Every job edgecron has, in the order listings show them.
pub struct Registry {
    jobs: Vec<Box<dyn Job>>,
}

impl Registry {
    pub fn all() -> Registry {
        Registry::from_jobs(vec![
            Box::new(export_interactions::ExportInteractions),
            Box::new(s3_sync::S3Sync),
            Box::new(cleanup::Cleanup),
            Box::new(maintenance::Maintenance),
            Box::new(export_file_cleanup::ExportFileCleanup),
            Box::new(export_log_cleanup::ExportLogCleanup),
            Box::new(export_metrics_aggregate::ExportMetricsAggregate),
            Box::new(dsar_purge::DsarPurge),
            Box::new(siem_ship::SiemShip),
            Box::new(engagement_health_recompute::EngagementHealthRecompute),
            Box::new(gitops_drift_check::GitopsDriftCheck),
            Box::new(approvals_expire::ApprovalsExpire),
            Box::new(flow_scheduler_tick::FlowSchedulerTick),
            Box::new(scheduled_retrains::ScheduledRetrains),
            Box::new(outbox_reaper::OutboxReaper),
            Box::new(telemetry_daily::TelemetryDaily),
            Box::new(cron_tick::CronTick),
        ])
    }

    pub fn from_jobs(jobs: Vec<Box<dyn Job>>) -> Registry {
        Registry { jobs }
    }

    /// Finds a job and checks the parameters it is given, before anything runs.
    pub fn resolve(&self, name: &str, params: &RunParams) -> Result<&dyn Job, ResolveError> {
        let job = self
            .get(name)
            .ok_or_else(|| ResolveError::UnknownJob(name.to_string()))?;
        let invalid = |message| Err(ResolveError::InvalidParams(InvalidParams(message)));
        if params.date_range().is_some() && !job.takes_date_range() {
            return invalid(format!("{name} takes no startDate/endDate"));
        }
        if let (Some(start), Some(end)) = (params.start_date, params.end_date) {
            if start > end {
                return invalid(format!("startDate {start} is after endDate {end}"));
            }
            let days = (end - start).num_days() + 1;
            if days > MAX_RANGE_DAYS {
                return invalid(format!(
                    "startDate..endDate spans {days} days; at most {MAX_RANGE_DAYS} per run"
                ));
            }
        }
        Ok(job)
    }

    pub fn get(&self, name: &str) -> Option<&dyn Job> {
        self.jobs
            .iter()
            .find(|job| job.name() == name)
            .map(|job| job.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn Job> {
        self.jobs.iter().map(|job| job.as_ref())
    }

    /// Each job's name and built-in schedule, for the configuration to parse its overrides.
    pub fn defaults(&self) -> Vec<JobDefaults> {
        self.jobs
            .iter()
            .map(|job| JobDefaults {
                name: job.name(),
                schedule: job.default_schedule(),
            })
            .collect()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.jobs.iter().map(|job| job.name()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_must_be_real_and_zero_padded() {
        let params = RunParams::from_text(true, Some("2024-02-29"), Some("2024-03-01")).unwrap();
        assert_eq!(params.start_date, NaiveDate::from_ymd_opt(2024, 2, 29));
        for bad in [
            "2023-02-29",
            "2024-1-05",
            "2024-13-01",
            "01/02/2024",
            "2024-01-01T00:00:00",
            "",
        ] {
            let error = RunParams::from_text(false, Some(bad), None).unwrap_err();
            assert!(error.0.starts_with("startDate:"), "{error}");
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::time::{Duration, Instant};

    use chrono::{DateTime, Utc};

    use std::sync::atomic::AtomicBool;

    use super::{JobCtx, RunParams};
    use crate::clock::FixedClock;
    use crate::config::Config;
    use crate::shutdown::Shutdown;
    use crate::store::Store;

    /// Owns what a `JobCtx` borrows, for unit tests of a job on a temp store.
    pub struct Harness {
        pub store: Store,
        pub config: Config,
        pub clock: FixedClock,
        pub params: RunParams,
        pub shutdown: Shutdown,
        pub lease_lost: AtomicBool,
        pub stopped: AtomicBool,
        _dir: tempfile::TempDir,
    }

    impl Harness {
        pub fn new(now: DateTime<Utc>) -> Harness {
            let (dir, store) = crate::store::test_support::temp_store();
            let vars = [(
                "EDGECRON_DATA_DIR".to_string(),
                dir.path().display().to_string(),
            )];
            Harness {
                store,
                config: Config::from_vars(vars, &[]).expect("config"),
                clock: FixedClock(now),
                params: RunParams::default(),
                shutdown: Shutdown::default(),
                lease_lost: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                _dir: dir,
            }
        }

        pub fn ctx(&self) -> JobCtx<'_> {
            JobCtx {
                store: &self.store,
                config: &self.config,
                clock: &self.clock,
                params: &self.params,
                run_id: 1,
                deadline: Instant::now() + Duration::from_secs(600),
                shutdown: &self.shutdown,
                lease_lost: &self.lease_lost,
                stopped: &self.stopped,
            }
        }

        /// Writes a file under the data dir, creating its directories.
        pub fn write_file(&self, relative: &str, contents: &[u8]) {
            let path = self.config.data_dir.join(relative);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("create dirs");
            std::fs::write(path, contents).expect("write file");
        }

        pub fn exec(&self, sql: &str) {
            self.store
                .conn()
                .expect("conn")
                .execute_batch(sql)
                .expect("sql");
        }

        pub fn query<T: rusqlite::types::FromSql>(&self, sql: &str) -> T {
            self.store
                .conn()
                .expect("conn")
                .query_row(sql, [], |row| row.get(0))
                .expect("query")
        }

        pub fn strings(&self, sql: &str) -> Vec<String> {
            let conn = self.store.conn().expect("conn");
            let mut statement = conn.prepare(sql).expect("prepare");
            statement
                .query_map([], |row| row.get(0))
                .expect("query")
                .collect::<Result<_, _>>()
                .expect("rows")
        }
    }
}
