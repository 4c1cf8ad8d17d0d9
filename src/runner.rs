//! The one path every run takes, whoever triggered it: take the job's lease, record the run,
//! keep the lease alive, run the job with its deadline, record how it ended, release.
//!
//! Steps of [`Runner::run`]:
//! 1. find the job and check its parameters;
//! 2. take the lease in the store (a live holder means `AlreadyRunning`, a dead one is
//!    taken over), which also inserts the `running` history row;
//! 3. heartbeat the lease from a side thread while the job runs;
//! 4. run the job, turning a panic into a failed run;
//! 5. write the end of the run and release the lease in one transaction; prune history.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::clock::Clock;
use crate::config::Config;
use crate::holder;
use crate::jobs::{Job, JobCtx, JobOutput, Registry, RunParams};
use crate::shutdown::Shutdown;
use crate::store::runs::{LeaseAttempt, LeaseHolder, RunEnd, RunStatus, Trigger};
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
    pub run_id: i64,
    pub status: RunStatus,
    pub body: Value,
}

pub struct Runner {
    store: Store,
    config: Arc<Config>,
    clock: Arc<dyn Clock>,
    jobs: Registry,
    holder: String,
    shutdown: Arc<Shutdown>,
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
        jobs: Registry,
        store: Store,
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        shutdown: Arc<Shutdown>,
    ) -> Runner {
        Runner {
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

    pub fn jobs(&self) -> &Registry {
        &self.jobs
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Checks a job's parameters without running it.
    pub fn check(&self, name: &str, params: &RunParams) -> Result<&dyn Job, RunError> {
        self.jobs
            .check(name, params)
            .map_err(|message| match self.jobs.get(name) {
                None => RunError::UnknownJob(name.to_string()),
                Some(_) => RunError::InvalidParams(message),
            })
    }

    pub fn run(
        &self,
        name: &str,
        trigger: Trigger,
        params: RunParams,
    ) -> Result<Completed, RunError> {
        let job = self.check(name, &params)?;
        let job_name = job.name();
        // Taking the lease and registering the run happen under one lock: the shutdown check
        // and `wait_idle` see either the run or nothing, and a lease this process holds is
        // judged against a set of runs no other start can be changing meanwhile.
        let run_id = {
            let mut active = self.lock_active();
            if self.shutdown.is_requested() {
                return Err(RunError::ShuttingDown);
            }
            let attempt = self.store.begin_run(
                job_name,
                trigger,
                &self.holder,
                || self.clock.now(),
                |current| {
                    if current.holder == self.holder {
                        // Ours: alive exactly while the run is active here (a run whose end could
                        // not be recorded must not lock the job out).
                        return active.running.contains_key(&current.run_id);
                    }
                    holder::is_alive(&current.holder, current.heartbeat_at, self.clock.now())
                },
            )?;
            match attempt {
                LeaseAttempt::Acquired { run_id } => {
                    active.running.insert(run_id, job_name);
                    run_id
                }
                LeaseAttempt::Busy(holder) => {
                    return Err(RunError::AlreadyRunning {
                        job: job_name.to_string(),
                        holder,
                    });
                }
            }
        };
        let _scope = crate::logging::enter_run(job_name, run_id);
        log::info!("{job_name}: run {run_id} started ({})", trigger.as_str());

        let started = Instant::now();
        let lease_lost = Arc::new(AtomicBool::new(false));
        let heartbeat = self.start_heartbeat(job_name, run_id, Arc::clone(&lease_lost));
        let ctx = JobCtx {
            store: &self.store,
            config: &self.config,
            clock: self.clock.as_ref(),
            params: &params,
            run_id,
            deadline: started + self.config.job_deadline,
            shutdown: &self.shutdown,
            lease_lost: &lease_lost,
        };
        let result = catch_unwind(AssertUnwindSafe(|| job.run(&ctx)));
        drop(heartbeat);
        let duration = started.elapsed();

        let (status, body, error, rows) = match result {
            Ok(Ok(JobOutput {
                body,
                item_errors,
                rows_processed,
            })) => {
                let status = if item_errors > 0 {
                    RunStatus::Partial
                } else {
                    RunStatus::Ok
                };
                (status, body, None, rows_processed)
            }
            Ok(Err(error)) => (RunStatus::Failed, Value::Null, Some(error.to_string()), 0),
            Err(panic) => (
                RunStatus::Failed,
                Value::Null,
                Some(panic_message(panic.as_ref())),
                0,
            ),
        };
        let body = match &error {
            Some(message) => json!({"ok": false, "error": message}),
            None => body,
        };
        self.finish(
            job_name,
            run_id,
            status,
            &body,
            error.as_deref(),
            rows,
            duration,
        );
        Ok(Completed {
            run_id,
            status,
            body,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        job_name: &'static str,
        run_id: i64,
        status: RunStatus,
        body: &Value,
        error: Option<&str>,
        rows: u64,
        duration: Duration,
    ) {
        let result_json = body.to_string();
        let end = RunEnd {
            status,
            result_json: Some(&result_json),
            error,
            rows_processed: rows as i64,
            duration_ms: duration.as_millis() as i64,
        };
        let mut attempt = 0;
        while let Err(store_error) = self
            .store
            .finish_run(job_name, run_id, &end, self.clock.now())
        {
            attempt += 1;
            if attempt == FINISH_ATTEMPTS {
                // Once this run leaves `active` below, the next run takes the lease over.
                log::error!(
                    "{job_name}: run {run_id} could not be recorded as finished: {store_error}"
                );
                break;
            }
            log::warn!(
                "{job_name}: recording the end of run {run_id} (attempt {attempt}): {store_error}"
            );
            std::thread::sleep(Duration::from_millis(200 << attempt));
        }
        if let Err(store_error) =
            self.store
                .prune_runs(job_name, KEEP_SUCCEEDED_RUNS, KEEP_FAILED_RUNS)
        {
            log::warn!("{job_name}: pruning run history: {store_error}");
        }
        self.lock_active().running.remove(&run_id);
        self.idle.notify_all();
        match error {
            None => log::info!(
                "{job_name}: run {run_id} {} in {:.3}s, {rows} rows",
                status.as_str(),
                duration.as_secs_f64()
            ),
            Some(message) => log::error!(
                "{job_name}: run {run_id} failed after {:.3}s: {message}",
                duration.as_secs_f64()
            ),
        }
    }

    /// Refreshes the lease until the returned guard is dropped.
    fn start_heartbeat(
        &self,
        job_name: &'static str,
        run_id: i64,
        lease_lost: Arc<AtomicBool>,
    ) -> HeartbeatGuard {
        let (stop, stopped) = mpsc::channel::<()>();
        let store = self.store.clone();
        let clock = Arc::clone(&self.clock);
        let spawned = std::thread::Builder::new()
            .name(format!("heartbeat-{job_name}"))
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(holder::HEARTBEAT_INTERVAL)
                {
                    match store.heartbeat(job_name, run_id, clock.now()) {
                        Ok(true) => {}
                        Ok(false) => {
                            log::error!("{job_name}: run {run_id} lost its lease; stopping it");
                            lease_lost.store(true, Ordering::SeqCst);
                        }
                        Err(error) => {
                            log::warn!("{job_name}: heartbeat of run {run_id} failed: {error}")
                        }
                    }
                }
            });
        if let Err(error) = spawned {
            log::warn!("{job_name}: no heartbeat thread ({error}); the lease may look stale");
        }
        HeartbeatGuard { _stop: stop }
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
            match self
                .store
                .fail_running_run(run_id, reason, self.clock.now())
            {
                Ok(()) => log::warn!("{job_name}: run {run_id} {reason}"),
                Err(error) => log::error!("{job_name}: run {run_id} could not be closed: {error}"),
            }
        }
    }

    /// Closes runs left `running` by processes that died.
    pub fn close_orphaned_runs(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        self.store.close_orphaned_runs(now, |holder, heartbeat| {
            holder::is_alive(holder, heartbeat, now)
        })
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, ActiveRuns> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Stops the heartbeat thread when dropped (the channel closes).
struct HeartbeatGuard {
    _stop: mpsc::Sender<()>,
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
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::clock::SystemClock;
    use crate::jobs::{JobError, JobOutput};

    /// Does what its closure says, so each test can give the runner a job of its own.
    type JobBody = Box<dyn Fn(&JobCtx<'_>) -> Result<JobOutput, JobError> + Send + Sync>;
    struct TestJob(JobBody);

    impl Job for TestJob {
        fn name(&self) -> &'static str {
            "test-job"
        }

        fn default_schedule(&self) -> &'static str {
            "* * * * *"
        }

        fn run(&self, ctx: &JobCtx<'_>) -> Result<JobOutput, JobError> {
            (self.0)(ctx)
        }
    }

    fn runner(
        job: TestJob,
        config_vars: &[(&str, &str)],
    ) -> (tempfile::TempDir, Arc<Runner>, Arc<Shutdown>) {
        let (dir, store) = crate::store::test_support::temp_store();
        let vars = config_vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()));
        let config = Config::from_vars(vars, &[]).unwrap();
        let shutdown = Arc::new(Shutdown::default());
        let jobs = Registry::from_jobs(vec![Box::new(job)]);
        let runner = Runner::new(
            jobs,
            store,
            Arc::new(config),
            Arc::new(SystemClock),
            Arc::clone(&shutdown),
        );
        (dir, Arc::new(runner), shutdown)
    }

    fn output(body: Value) -> Result<JobOutput, JobError> {
        Ok(JobOutput {
            body,
            item_errors: 0,
            rows_processed: 0,
        })
    }

    #[test]
    fn a_panicking_job_is_a_failed_run_and_releases_its_lease() {
        let (_dir, runner, _) = runner(TestJob(Box::new(|_| panic!("boom"))), &[]);
        let completed = runner
            .run("test-job", Trigger::Cli, RunParams::default())
            .unwrap();
        assert_eq!(completed.status, RunStatus::Failed);
        assert_eq!(completed.body["error"], "job panicked: boom");
        let runs = runner.store().list_runs(Some("test-job"), 5).unwrap();
        assert_eq!(
            (runs[0].status.as_str(), runs[0].error.as_deref()),
            ("failed", Some("job panicked: boom"))
        );
        assert_eq!(
            runner
                .run("test-job", Trigger::Cli, RunParams::default())
                .unwrap()
                .status,
            RunStatus::Failed
        );
    }

    #[test]
    fn a_job_past_its_deadline_is_told_to_stop() {
        let job = TestJob(Box::new(|ctx| {
            let mut batches = 0;
            while !ctx.should_stop() {
                batches += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            output(json!({"ok": true, "batches": batches}))
        }));
        let (_dir, runner, _) = runner(job, &[("EDGECRON_JOB_DEADLINE_SECS", "1")]);
        let started = Instant::now();
        let completed = runner
            .run("test-job", Trigger::Cli, RunParams::default())
            .unwrap();
        assert_eq!(completed.status, RunStatus::Ok);
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(completed.body["batches"].as_u64().unwrap() > 10);
    }

    #[test]
    fn a_run_still_going_after_the_grace_period_is_recorded_as_failed() {
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let job = TestJob(Box::new(move |_| {
            // Ignores shutdown, as a job stuck in one long call would.
            let _ = released
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
            output(json!({"ok": true}))
        }));
        let (_dir, runner, shutdown) = runner(job, &[]);
        let background = Arc::clone(&runner);
        let run = std::thread::spawn(move || {
            background.run("test-job", Trigger::Schedule, RunParams::default())
        });
        while runner
            .store()
            .list_runs(Some("test-job"), 1)
            .unwrap()
            .is_empty()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        shutdown.request();
        assert!(matches!(
            runner.run("test-job", Trigger::Http, RunParams::default()),
            Err(RunError::ShuttingDown)
        ));
        assert!(!runner.wait_idle(Duration::from_millis(200)));
        runner.abandon_active("interrupted: the shutdown grace period ran out");
        let runs = runner.store().list_runs(Some("test-job"), 5).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, "failed");
        assert_eq!(
            runs[0].error.as_deref(),
            Some("interrupted: the shutdown grace period ran out")
        );
        release.send(()).unwrap();
        run.join().unwrap().unwrap();
        // The job finishing afterwards cannot turn the abandoned run back to ok.
        let runs = runner.store().list_runs(Some("test-job"), 5).unwrap();
        assert_eq!(runs[0].status, "failed");
    }

    #[test]
    fn racing_runs_in_one_process_never_overlap() {
        // Regression: a lease of this process counted as dead while its run was still being
        // registered, so a second trigger took it over and both ran.
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (inside_job, most_job) = (Arc::clone(&inside), Arc::clone(&most));
        let job = TestJob(Box::new(move |_| {
            let now = inside_job.fetch_add(1, Ordering::SeqCst) + 1;
            most_job.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            inside_job.fetch_sub(1, Ordering::SeqCst);
            output(json!({"ok": true}))
        }));
        let (_dir, runner, _) = runner(job, &[]);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..5 {
                        let _ = runner.run("test-job", Trigger::Http, RunParams::default());
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert!(
            runner
                .store()
                .list_runs(Some("test-job"), 100)
                .unwrap()
                .iter()
                .all(|run| run.status == "ok")
        );
    }
}
