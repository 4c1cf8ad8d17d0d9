//! The one path every run takes, whoever triggered it: take the job's lease, record the run,
//! keep the lease alive, run the job with its deadline, record how it ended, release.
//!
//! Steps of [`Runner::run_job`] (and [`Runner::run_scheduled`]):
//! 1. find the job and check its parameters;
//! 2. take the lease in the store (a live holder means `AlreadyRunning`, a dead one is
//!    taken over), which also inserts the `running` history row; a scheduled run records
//!    the fire times it serves and the scheduler's progress in the same transaction, or,
//!    refused, records them as refused;
//! 3. heartbeat the lease from a side thread while the job runs, which also raises
//!    `job_overrun` once the run is [`OVERRUN_GRACE`] past its deadline;
//! 4. run the job, turning a panic into a failed run;
//! 5. write the end of the run, release the lease and open or close the job's alert
//!    conditions (failing, overdue, overrun) in one transaction; prune history; announce
//!    the alerts raised.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use chrono::{DateTime, Utc};

use crate::alert::{self, Alerts};
use crate::clock::Clock;
use crate::config::Config;
use crate::heartbeat;
use crate::holder;
pub use crate::jobs::RunParams;
use crate::jobs::{
    DataSubject, DsarErase, Job, JobCtx, JobError, JobOutput, Registry, ResolveError,
};
use crate::ping::RunPings;
use crate::shutdown::Shutdown;
use crate::store::occurrences::{self, OccurrenceBatch};
use crate::store::runs::{self, LeaseAttempt, LeaseHolder, RunEnd};
pub use crate::store::runs::{RunStatus, Trigger};
use crate::store::{Store, StoreError};

/// Run history kept per job: this many successful runs, and more of the failed ones.
const KEEP_SUCCEEDED_RUNS: i64 = 200;
const KEEP_FAILED_RUNS: i64 = 1_000;
/// Tries at recording a run's end before giving up (200 ms, 400 ms, ... apart).
const FINISH_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no job named {0:?}")]
    UnknownJob(String),
    #[error("{0}")]
    InvalidParams(String),
    #[error("{job} is already running (run {}, started {} by {})", holder.run_id, holder.started_at, holder.trigger)]
    AlreadyRunning { job: String, holder: LeaseHolder },
    #[error("shutting down; not starting new runs")]
    ShuttingDown,
    /// Another scheduler on this store served the fire time first.
    #[error("{job}: fire time {scheduled_for} was served by another scheduler on this store")]
    AlreadyServed {
        job: String,
        scheduled_for: DateTime<Utc>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RunError {
    /// The JSON body this error answers with, on a route or on stdout.
    pub fn body(&self) -> Value {
        match self {
            RunError::AlreadyRunning { holder, .. } => json!({
                "ok": false,
                "error": self.to_string(),
                "running": holder,
            }),
            _ => json!({"ok": false, "error": self.to_string()}),
        }
    }
}

/// A run that reached its end (successfully or not).
#[derive(Debug)]
pub struct Completed {
    pub status: Ended,
    pub body: Value,
}

pub struct Runner {
    store: Store,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    jobs: Arc<Registry>,
    holder: String,
    shutdown: Arc<Shutdown>,
    alerts: Alerts,
    active: Mutex<ActiveRuns>,
    idle: Condvar,
}

/// Runs in this process holding their job's lease.
#[derive(Default)]
struct ActiveRuns {
    running: HashMap<i64, &'static str>,
}

impl Runner {
    pub fn new(
        jobs: Arc<Registry>,
        store: Store,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        shutdown: Arc<Shutdown>,
        alerts: Alerts,
    ) -> Runner {
        Runner {
            alerts,
            store,
            config,
            clock,
            jobs,
            holder: holder::this_process(),
            shutdown,
            active: Mutex::new(ActiveRuns::default()),
            idle: Condvar::new(),
        }
    }

    /// The job `name` names, with `params` checked against it, without running it.
    pub fn resolve(&self, name: &str, params: &RunParams) -> Result<&dyn Job, RunError> {
        self.jobs
            .resolve(name, params)
            .map_err(|error| match error {
                ResolveError::UnknownJob(name) => RunError::UnknownJob(name),
                ResolveError::InvalidParams(invalid) => {
                    RunError::InvalidParams(invalid.to_string())
                }
            })
    }

    pub fn run_job(
        &self,
        name: &str,
        trigger: Trigger,
        params: RunParams,
    ) -> Result<Completed, RunError> {
        let job = self.resolve(name, &params)?;
        self.run_with(job, trigger, params, None)
    }

    /// Erases one data subject everywhere edgecron holds them (SPEC section 8): a run of
    /// `dsar-erase`, leased and recorded as every run is.
    pub fn erase(
        &self,
        subject: DataSubject,
        trigger: Trigger,
        dry_run: bool,
    ) -> Result<Completed, RunError> {
        let params = RunParams {
            dry_run,
            ..RunParams::default()
        };
        self.run_with(&DsarErase::new(subject), trigger, params, None)
    }

    /// Every record of one data subject edgecron holds, as one document (SPEC section 8).
    pub fn access(&self, subject: &DataSubject) -> Result<Value, JobError> {
        crate::jobs::dsar_access(&self.store, &self.config, subject, self.clock.now())
    }

    /// Runs `name` for the scheduler's fire time `scheduled_for`, recording the occurrences
    /// of `batch` with its start (or as refused, when the job is still running).
    pub fn run_scheduled(
        &self,
        name: &str,
        scheduled_for: DateTime<Utc>,
        batch: &OccurrenceBatch,
    ) -> Result<Completed, RunError> {
        let job = self.resolve(name, &RunParams::default())?;
        self.run_with(
            job,
            Trigger::Schedule,
            RunParams::default(),
            Some((scheduled_for, batch)),
        )
    }

    fn run_with(
        &self,
        job: &dyn Job,
        trigger: Trigger,
        params: RunParams,
        scheduled: Option<(DateTime<Utc>, &OccurrenceBatch)>,
    ) -> Result<Completed, RunError> {
        let job_name = job.name();
        let run_id = self.take_lease(job_name, trigger, scheduled)?;
        let _scope = crate::logging::enter_run(job_name, run_id);
        log::info!("{job_name}: run {run_id} started ({})", trigger.as_str());
        let pings = self.ping_start(job_name);
        let started = Instant::now();
        let (result, progress) = self.execute(job, &params, run_id, started);
        let duration = started.elapsed();
        let Conclusion {
            ended,
            body,
            error,
            rows_processed,
        } = answer::conclude(result, progress);
        let result_json = body.to_string();
        let end = RunEnd {
            status: ended.into(),
            result_json: Some(&result_json),
            error: error.as_deref(),
            rows_processed: rows_processed as i64,
            duration_ms: duration.as_millis() as i64,
        };
        self.finish(job_name, run_id, &end, pings.as_ref());
        Ok(Completed {
            status: ended,
            body,
        })
    }

    /// Step 2: the job's lease and its `running` row, with a scheduled run's fire times (or
    /// those fire times recorded as refused).
    fn take_lease(
        &self,
        job_name: &'static str,
        trigger: Trigger,
        scheduled: Option<(DateTime<Utc>, &OccurrenceBatch)>,
    ) -> Result<i64, RunError> {
        // Taking the lease and registering the run happen under one lock: the shutdown check
        // and `wait_idle` see either the run or nothing, and a lease this process holds is
        // judged against a set of runs no other start can be changing meanwhile.
        let mut active = self.lock_active();
        if self.shutdown.is_requested() {
            return Err(RunError::ShuttingDown);
        }
        let is_alive = |current: &LeaseHolder| {
            if current.holder == self.holder {
                // Ours: alive exactly while the run is active here (a run whose end could
                // not be recorded must not lock the job out).
                return active.running.contains_key(&current.run_id);
            }
            holder::is_alive(&current.holder, current.heartbeat_at, self.clock.now())
        };
        let now = || self.clock.now();
        let attempt = match scheduled {
            Some((scheduled_for, batch)) => runs::begin_scheduled_run(
                &self.store,
                job_name,
                &self.holder,
                now,
                is_alive,
                scheduled_for,
                batch,
            )?,
            None => runs::begin_run(&self.store, job_name, trigger, &self.holder, now, is_alive)?,
        };
        match attempt {
            LeaseAttempt::Acquired { run_id } => {
                active.running.insert(run_id, job_name);
                Ok(run_id)
            }
            LeaseAttempt::Served => Err(RunError::AlreadyServed {
                job: job_name.to_string(),
                scheduled_for: scheduled.map_or_else(|| self.clock.now(), |(at, _)| at),
            }),
            LeaseAttempt::Busy(holder) => {
                if let Some((_, batch)) = scheduled {
                    occurrences::record_refused(&self.store, job_name, batch, self.clock.now())?;
                }
                Err(RunError::AlreadyRunning {
                    job: job_name.to_string(),
                    holder,
                })
            }
        }
    }

    /// The run's start ping, queued and sent in the background, when pings are configured.
    fn ping_start(&self, job_name: &'static str) -> Option<RunPings> {
        let pings = RunPings::for_run(&self.config)?;
        match pings.queue_start(&self.store, job_name, self.clock.now()) {
            Ok(()) => self.alerts.deliver_in_background(),
            Err(error) => log::warn!("{job_name}: queueing the start ping: {error}"),
        }
        Some(pings)
    }

    /// Steps 3 and 4: the job run with its deadline, its lease kept alive meanwhile, a panic
    /// turned into a failure; and whether it finished or stopped at a safe point.
    fn execute(
        &self,
        job: &dyn Job,
        params: &RunParams,
        run_id: i64,
        started: Instant,
    ) -> (Result<JobOutput, String>, Progress) {
        let deadline = started + self.config.job_deadline;
        let lease_lost = Arc::new(AtomicBool::new(false));
        let stopped = AtomicBool::new(false);
        let heartbeat = heartbeat::start(
            heartbeat::Beat {
                store: self.store.clone(),
                clock: Arc::clone(&self.clock),
                alerts: self.alerts.clone(),
                job_name: job.name(),
                run_id,
                deadline,
                job_deadline: self.config.job_deadline,
            },
            Arc::clone(&lease_lost),
        );
        let ctx = JobCtx {
            store: &self.store,
            config: &self.config,
            clock: self.clock.as_ref(),
            params,
            run_id,
            deadline,
            shutdown: &self.shutdown,
            lease_lost: &lease_lost,
            stopped: &stopped,
        };
        let result = catch_unwind(AssertUnwindSafe(|| job.run(&ctx)));
        drop(heartbeat);
        let progress = if stopped.load(Ordering::SeqCst) {
            Progress::Stopped
        } else {
            Progress::Finished
        };
        let result = result
            .map_err(|panic| panic_message(panic.as_ref()))
            .and_then(|ran| ran.map_err(|error| error.to_string()));
        (result, progress)
    }

    /// Records a run's end with the alert conditions it opens or closes, retrying a busy
    /// store; then lets the next run of the job start and announces what was raised.
    fn finish(
        &self,
        job_name: &'static str,
        run_id: i64,
        end: &RunEnd<'_>,
        pings: Option<&RunPings>,
    ) {
        let (status, error) = (end.status, end.error);
        let outbox = self.alerts.outbox();
        let mut raised = Vec::new();
        for attempt in 1..=FINISH_ATTEMPTS {
            let now = self.clock.now();
            let ended =
                runs::finish_run(&self.store, job_name, run_id, end, now, |conn, recorded| {
                    if let Some(pings) = pings {
                        let result = end.result_json.unwrap_or("");
                        pings.queue_end_in(conn, job_name, status, result, now)?;
                    }
                    // A run already recorded as ended (abandoned at shutdown) changes no condition.
                    if recorded {
                        alert::run_ended(conn, job_name, run_id, status, error, outbox, now)
                    } else {
                        Ok(Vec::new())
                    }
                });
            match ended {
                Ok(alerts) => {
                    raised = alerts;
                    break;
                }
                // Once this run leaves `active` below, the next run takes the lease over.
                Err(store_error) if attempt == FINISH_ATTEMPTS => log::error!(
                    "{job_name}: run {run_id} could not be recorded as finished: {store_error}"
                ),
                Err(store_error) => {
                    log::warn!(
                        "{job_name}: recording the end of run {run_id} (attempt {attempt}): {store_error}"
                    );
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                }
            }
        }
        if let Err(store_error) =
            runs::prune_runs(&self.store, job_name, KEEP_SUCCEEDED_RUNS, KEEP_FAILED_RUNS)
        {
            log::warn!("{job_name}: pruning run history: {store_error}");
        }
        self.lock_active().running.remove(&run_id);
        self.idle.notify_all();
        match error {
            None => log::info!(
                "{job_name}: run {run_id} {status} in {:.3}s, {} rows",
                end.duration_ms as f64 / 1000.0,
                end.rows_processed
            ),
            Some(message) => log::error!(
                "{job_name}: run {run_id} failed after {:.3}s: {message}",
                end.duration_ms as f64 / 1000.0
            ),
        }
        self.alerts.announce(&raised);
    }

    /// Waits until no run is active, or `grace` has passed; answers whether all finished.
    pub fn wait_idle(&self, grace: Duration) -> bool {
        let active = self.lock_active();
        let (active, _) = self
            .idle
            .wait_timeout_while(active, grace, |active| !active.running.is_empty())
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        active.running.is_empty()
    }

    /// Records every still-active run as failed: the last step of a shutdown whose grace
    /// period ran out, so no run is left `running`. Leases are kept until the process exits
    /// (then they are seen dead at once), so no other process starts a job still winding down.
    pub fn abandon_active(&self, reason: &str) {
        let active: Vec<(i64, &'static str)> = self.lock_active().running.drain().collect();
        for (run_id, job_name) in active {
            match runs::fail_running_run(&self.store, run_id, reason, self.clock.now()) {
                Ok(()) => log::warn!("{job_name}: run {run_id} {reason}"),
                Err(error) => log::error!("{job_name}: run {run_id} could not be closed: {error}"),
            }
        }
    }

    /// Closes runs left `running` by processes that died.
    pub fn close_orphaned_runs(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        runs::close_orphaned_runs(&self.store, now, |holder, heartbeat| {
            holder::is_alive(holder, heartbeat, now)
        })
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, ActiveRuns> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    format!("job panicked: {detail}")
}

#[cfg(test)]
mod tests;

mod answer;

pub use answer::{Answer, EXIT_USAGE, Ended, answered};
use answer::{Conclusion, Progress};
