//! The runner's unit tests: leases, panics, deadlines, shutdown, overlaps and the alerts a
//! run's end and its overrun raise.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::clock::SystemClock;
use crate::jobs::{JobError, JobOutput};
use crate::store::alerts;
use crate::store::occurrences;
use crate::store::runs;

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
    let (config, clock) = (Arc::new(config), Arc::new(SystemClock));
    let alerts = crate::alert::Alerts::new(store.clone(), &config, clock.clone());
    let runner = Runner::new(
        Arc::new(jobs),
        store,
        config,
        clock,
        Arc::clone(&shutdown),
        alerts,
    );
    (dir, Arc::new(runner), shutdown)
}

fn output(body: Value) -> Result<JobOutput, JobError> {
    JobOutput::new(&body, 0, 0)
}

#[test]
fn a_panicking_job_is_a_failed_run_and_releases_its_lease() {
    let (_dir, runner, _) = runner(TestJob(Box::new(|_| panic!("boom"))), &[]);
    let completed = runner
        .run_job("test-job", Trigger::Cli, RunParams::default())
        .unwrap();
    assert_eq!(completed.status, Ended::Failed);
    assert_eq!(completed.body["error"], "job panicked: boom");
    let runs = runs::list_runs(&runner.store, Some("test-job"), 5).unwrap();
    assert_eq!(
        (runs[0].status.as_str(), runs[0].error.as_deref()),
        ("failed", Some("job panicked: boom"))
    );
    assert_eq!(
        runner
            .run_job("test-job", Trigger::Cli, RunParams::default())
            .unwrap()
            .status,
        Ended::Failed
    );
}

#[test]
fn a_job_past_its_deadline_is_told_to_stop_and_its_run_is_partial() {
    let job = TestJob(Box::new(|ctx| {
        let mut batches = 0;
        while !ctx.should_stop() {
            batches += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        output(json!({"batches": batches}))
    }));
    let (_dir, runner, _) = runner(job, &[("EDGECRON_JOB_DEADLINE_SECS", "1")]);
    let started = Instant::now();
    let completed = runner
        .run_job("test-job", Trigger::Cli, RunParams::default())
        .unwrap();
    // It stopped with work left: never `ok`, whatever the job's own body said.
    assert_eq!(completed.status, Ended::Partial);
    assert_eq!(completed.body["ok"], false);
    assert_eq!(completed.body["finished"], false);
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
        output(json!({}))
    }));
    let (_dir, runner, shutdown) = runner(job, &[]);
    let background = Arc::clone(&runner);
    let run = std::thread::spawn(move || {
        background.run_job("test-job", Trigger::Schedule, RunParams::default())
    });
    while runs::list_runs(&runner.store, Some("test-job"), 1)
        .unwrap()
        .is_empty()
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    shutdown.request();
    assert!(matches!(
        runner.run_job("test-job", Trigger::Http, RunParams::default()),
        Err(RunError::ShuttingDown)
    ));
    assert!(!runner.wait_idle(Duration::from_millis(200)));
    runner.abandon_active("interrupted: the shutdown grace period ran out");
    let runs = runs::list_runs(&runner.store, Some("test-job"), 5).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Failed);
    assert_eq!(
        runs[0].error.as_deref(),
        Some("interrupted: the shutdown grace period ran out")
    );
    release.send(()).unwrap();
    run.join().unwrap().unwrap();
    // The job finishing afterwards cannot turn the abandoned run back to ok.
    let runs = runs::list_runs(&runner.store, Some("test-job"), 5).unwrap();
    assert_eq!(runs[0].status, RunStatus::Failed);
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
        output(json!({}))
    }));
    let (_dir, runner, _) = runner(job, &[]);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..5 {
                    let _ = runner.run_job("test-job", Trigger::Http, RunParams::default());
                }
            });
        }
    });
    assert_eq!(most.load(Ordering::SeqCst), 1);
    assert!(
        runs::list_runs(&runner.store, Some("test-job"), 100)
            .unwrap()
            .iter()
            .all(|run| run.status == RunStatus::Ok)
    );
}

/// A job that waits (ignoring its deadline, as one stuck in a long call would) until the
/// returned sender is used or dropped.
fn stuck_job() -> (mpsc::Sender<()>, TestJob) {
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let job = TestJob(Box::new(move |_| {
        let _ = released
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30));
        output(json!({}))
    }));
    (release, job)
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(15), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn outbox(runner: &Runner) -> Vec<String> {
    let conn = runner.store.conn().unwrap();
    let mut statement = conn
        .prepare("SELECT type FROM alert_outbox ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_run_going_past_its_deadline_raises_one_overrun_and_its_end_resolves_it() {
    let (release, job) = stuck_job();
    // A webhook nobody listens on: alerts stay queued, so the outbox shows them.
    let (_dir, runner, _) = runner(
        job,
        &[
            ("EDGECRON_JOB_DEADLINE_SECS", "1"),
            ("ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook"),
        ],
    );
    let background = Arc::clone(&runner);
    let run = std::thread::spawn(move || {
        background.run_job("test-job", Trigger::Http, RunParams::default())
    });
    wait_for("the overrun condition opens", || {
        alerts::conditions(&runner.store)
            .unwrap()
            .iter()
            .any(|condition| condition.kind == "overrun")
    });
    assert_eq!(outbox(&runner), ["job_overrun"]);
    release.send(()).unwrap();
    run.join().unwrap().unwrap();
    assert!(alerts::conditions(&runner.store).unwrap().is_empty());
    assert_eq!(outbox(&runner), ["job_overrun", "job_overrun_resolved"]);
}

#[test]
fn a_fire_time_that_finds_the_job_running_is_recorded_as_refused() {
    use crate::store::occurrences::{OccurrenceBatch, Outcome};
    let (release, job) = stuck_job();
    let (_dir, runner, _) = runner(job, &[]);
    let background = Arc::clone(&runner);
    let run = std::thread::spawn(move || {
        background.run_job("test-job", Trigger::Cli, RunParams::default())
    });
    wait_for("the run starts", || {
        !runs::list_runs(&runner.store, Some("test-job"), 1)
            .unwrap()
            .is_empty()
    });
    let fire = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let batch = OccurrenceBatch {
        occurrences: vec![(fire, Outcome::Ran)],
        uncounted: 0,
        uncounted_outcome: Outcome::Coalesced,
        handled_through: fire,
        offset: chrono::Duration::zero(),
    };
    assert!(matches!(
        runner.run_scheduled("test-job", fire, &batch),
        Err(RunError::AlreadyRunning { .. })
    ));
    let ledger = occurrences::list_occurrences(&runner.store, Some("test-job"), 5).unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].outcome.as_str(), ledger[0].run_id),
        ("refused", None)
    );
    assert_eq!(
        occurrences::last_fire(&runner.store, "test-job").unwrap(),
        Some(fire)
    );
    release.send(()).unwrap();
    run.join().unwrap().unwrap();
}
