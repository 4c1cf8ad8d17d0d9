//! The built-in scheduler: sleeps until the next job is due, then asks the runner to run it;
//! and its watcher, which raises `job_overdue` when a due run does not start. It knows each
//! job's name and schedule, nothing of what the job does.
//!
//! Steps of the loop in [`run`]:
//! 1. load each enabled job's last handled fire time from the store (a first start begins
//!    from now);
//! 2. on each pass, tell whether the clock was watched since the last pass (the first pass
//!    after start, or one after a suspend or a forward clock step, is not), and let
//!    [`decide`](decide::decide) say, per job, which passed fire times run and which are only
//!    recorded (coalesced, paused), by its catch-up policy;
//! 3. record the fire times no run serves, with the progress they stand for, then start the
//!    runs on a thread per job, one after another (each run's start records the fire times
//!    it serves and the progress, in one transaction; a job still running records them as
//!    refused);
//! 4. sleep until the earliest next fire time (at most a minute, so clock changes are
//!    noticed), or until shutdown is requested.
//!
//! The watcher ([`watch`]) runs on a thread of its own, so a wedged loop is seen.

mod decide;
pub mod watch;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::alert::Alerts;
use crate::clock::Clock;
use crate::config::CatchUp;
use crate::config::{Config, Scheduler};
use crate::cron::Schedule;
use crate::jobs::Registry;
use crate::runner::{RunError, Runner};
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::store::occurrences::{self, NewOccurrence, OccurrenceBatch, Source};
pub use decide::{Continuity, Decision, Pass, decide};

/// What the scheduler loop and the watcher work with, handed in by `serve`: the runner that
/// runs what falls due (the watcher runs nothing), the store they record fire times in, the
/// configuration, the clock and the alerts the watcher raises.
#[derive(Clone)]
pub struct Scheduling {
    pub runner: Arc<Runner>,
    pub store: Store,
    pub config: Arc<Config>,
    pub clock: Arc<dyn Clock>,
    pub alerts: Alerts,
}

/// A job's effective schedule, zone, catch-up policy, expected outside schedule and whether
/// the scheduler runs it.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub name: &'static str,
    pub schedule: Schedule,
    pub enabled: bool,
    pub catch_up: CatchUp,
    /// `EDGECRON_EXPECT_<JOB>`, read in the job's zone.
    pub expected: Option<Schedule>,
    pub grace: Duration,
    /// `EDGECRON_SPREAD_<JOB>`.
    pub spread: Duration,
    /// This site's offset within the spread; unknown without a site (`edgecron check`
    /// without `EDGECRON_SITE_ID`).
    pub offset: Option<Duration>,
}

/// Each job's schedule, zone and policies after environment overrides: parsed with the
/// configuration, so planning cannot fail. A job the configuration was not told of has none.
/// With `EDGECRON_SCHEDULER=off` no job is the scheduler's to run. `site` places each job in
/// its spread.
pub fn plan(jobs: &Registry, config: &Config, site: Option<&str>) -> Vec<PlannedJob> {
    let scheduling = config.scheduler == Scheduler::On;
    jobs.iter()
        .filter_map(|job| {
            let settings = config.job(job.name())?;
            Some(PlannedJob {
                name: job.name(),
                schedule: settings.schedule.clone(),
                enabled: scheduling
                    && settings
                        .enabled
                        .unwrap_or_else(|| job.enabled_by_default(config)),
                catch_up: settings.catch_up,
                expected: settings.expected.clone(),
                grace: settings.grace,
                spread: settings.spread,
                offset: site.map(|site| spread_offset(site, job.name(), settings.spread)),
            })
        })
        .collect()
}

/// A site's fixed offset for a job within `spread` (as systemd's `RandomizedDelaySec` with
/// `FixedRandomDelay`): derived from a hash of the site and the job, so it is the same across
/// restarts and differs between sites, spreading a fleet's runs over the window.
pub fn spread_offset(site: &str, job: &str, spread: Duration) -> Duration {
    let millis = spread.as_millis() as u64;
    if millis == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(format!("edgecron-spread:{site}:{job}"));
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    Duration::from_millis(u64::from_be_bytes(head) % millis)
}

/// The longest single sleep, so a changed wall clock is noticed within a minute.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// The wall clock running this far ahead of the monotonic one across a sleep means the host
/// was suspended (the monotonic clock stops) or the clock was stepped forward.
const SUSPEND_TOLERANCE: chrono::Duration = chrono::Duration::seconds(2);

struct Entry {
    name: &'static str,
    schedule: Schedule,
    catch_up: CatchUp,
    last_handled: DateTime<Utc>,
    /// Each fire time is due this long after it (the job's spread offset).
    offset: chrono::Duration,
}

/// Runs the scheduler loop until shutdown; returns the handles of runs it started.
pub fn run(
    scheduling: Scheduling,
    planned: Vec<PlannedJob>,
    shutdown: Arc<Shutdown>,
) -> Vec<JoinHandle<()>> {
    let mut started_runs = Vec::new();
    let paused = !scheduling.config.cron_enabled;
    if paused {
        log::warn!(
            "CRON_ENABLED=false: the scheduler fires nothing; fire times are recorded as paused"
        );
    }
    if scheduling.config.scheduler == Scheduler::Off {
        log::info!(
            "EDGECRON_SCHEDULER=off: the built-in scheduler fires nothing; routes, the CLI and expected schedules work"
        );
    }
    let now = scheduling.clock.now();
    let mut entries: Vec<Entry> = planned
        .into_iter()
        .filter(|job| job.enabled)
        .map(|job| Entry {
            last_handled: last_fire_or_now(&scheduling.store, job.name, now),
            name: job.name,
            schedule: job.schedule,
            catch_up: job.catch_up,
            offset: chrono::Duration::from_std(job.offset.unwrap_or_default()).unwrap_or_default(),
        })
        .collect();
    log::info!("scheduler: {} jobs scheduled", entries.len());
    if entries.is_empty() {
        while !shutdown.wait(MAX_SLEEP) {}
        return started_runs;
    }

    let mut previous_pass: Option<(DateTime<Utc>, Instant)> = None;
    while !shutdown.is_requested() {
        let now = scheduling.clock.now();
        let continuity = continuity(previous_pass, now);
        previous_pass = Some((now, Instant::now()));
        for entry in &mut entries {
            let decision = decide(&Pass {
                schedule: &entry.schedule,
                catch_up: entry.catch_up,
                paused,
                last_handled: entry.last_handled,
                now,
                continuity,
                offset: entry.offset,
            });
            let Some(handled_through) = decision.handled_through() else {
                continue;
            };
            entry.last_handled = handled_through;
            started_runs.retain(|handle: &JoinHandle<()>| !handle.is_finished());
            if let Some(handle) = carry_out(&scheduling, entry.name, entry.catch_up, decision) {
                started_runs.push(handle);
            }
        }
        let next_fire = entries
            .iter()
            .filter_map(|entry| Some(entry.schedule.next_after(entry.last_handled)? + entry.offset))
            .min();
        let sleep = match next_fire {
            Some(next) => (next - scheduling.clock.now())
                .to_std()
                .unwrap_or(Duration::ZERO),
            None => MAX_SLEEP,
        };
        if !sleep.is_zero() {
            shutdown.wait(sleep.min(MAX_SLEEP));
        }
    }
    started_runs
}

/// Whether the clock was watched since the previous pass: not on the first pass, nor after
/// the wall clock ran ahead of the monotonic clock (a suspended host, a clock stepped forward).
fn continuity(previous_pass: Option<(DateTime<Utc>, Instant)>, now: DateTime<Utc>) -> Continuity {
    let Some((wall, monotonic)) = previous_pass else {
        return Continuity::Interrupted;
    };
    let slept = chrono::Duration::from_std(monotonic.elapsed()).unwrap_or_default();
    let wall_elapsed = now - wall;
    if wall_elapsed < -SUSPEND_TOLERANCE {
        log::warn!(
            "scheduler: the clock moved back {}s; fire times already handled are not run again",
            -wall_elapsed.num_seconds()
        );
    }
    if wall_elapsed - slept > SUSPEND_TOLERANCE {
        log::warn!(
            "scheduler: {}s passed on the clock during a {}s sleep (a suspended host or a clock set forward)",
            wall_elapsed.num_seconds(),
            slept.num_seconds()
        );
        return Continuity::Interrupted;
    }
    Continuity::Watched
}

/// Records what no run serves, then starts the decision's runs, oldest first, on a thread.
fn carry_out(
    scheduling: &Scheduling,
    name: &'static str,
    catch_up: CatchUp,
    decision: Decision,
) -> Option<JoinHandle<()>> {
    let now = scheduling.clock.now();
    if let Some(restart) = decision.restart_from {
        // As cron(8) does for changes over three hours: the clock was corrected backwards;
        // start again from the new time rather than wait for the old one.
        log::warn!(
            "{name}: the clock moved back before its last fire time; starting from {restart}"
        );
        if let Err(error) = occurrences::set_last_fire(&scheduling.store, name, restart) {
            log::error!("{name}: recording its fire time: {error}");
        }
    }
    if let Some(batch) = &decision.unserved {
        log_unserved(name, catch_up, batch);
        let rows: Vec<NewOccurrence> = batch
            .occurrences
            .iter()
            .map(|&(time, outcome)| NewOccurrence::unserved(time, outcome))
            .collect();
        if let Err(error) = occurrences::record_occurrences(
            &scheduling.store,
            name,
            Source::Schedule,
            &rows,
            (batch.uncounted_outcome, batch.uncounted),
            Some(batch.handled_through),
            now,
        ) {
            log::error!("{name}: recording its fire times: {error}");
        }
    }
    if decision.runs.is_empty() {
        return None;
    }
    let served: u64 = decision
        .runs
        .iter()
        .map(|(_, batch)| batch.occurrences.len() as u64 + batch.uncounted)
        .sum();
    if served > 1 {
        log::warn!(
            "{name}: {served} fire times passed since it last ran; catch-up {}: {} run(s) now",
            catch_up.as_str(),
            decision.runs.len()
        );
    }
    dispatch(&scheduling.runner, name, decision.runs)
}

fn log_unserved(name: &str, catch_up: CatchUp, batch: &OccurrenceBatch) {
    let count = batch.occurrences.len() as u64 + batch.uncounted;
    let outcome = batch
        .occurrences
        .first()
        .map_or(batch.uncounted_outcome, |(_, outcome)| *outcome);
    match batch.occurrences.first() {
        Some((first, _)) => log::warn!(
            "{name}: {count} fire times from {first} to {} recorded as {} (catch-up {})",
            batch.handled_through,
            outcome.as_str(),
            catch_up.as_str()
        ),
        None => log::warn!(
            "{name}: {count} fire times recorded as {}",
            outcome.as_str()
        ),
    }
}

fn last_fire_or_now(store: &Store, name: &str, now: DateTime<Utc>) -> DateTime<Utc> {
    match occurrences::last_fire(store, name) {
        Ok(Some(last)) => last,
        Ok(None) => {
            if let Err(error) = occurrences::set_last_fire(store, name, now) {
                log::error!("{name}: recording its first fire time: {error}");
            }
            now
        }
        Err(error) => {
            log::error!("{name}: reading its last fire time: {error}; starting from now");
            now
        }
    }
}

/// Another scheduler served a fire time first: two `serve` processes share this store (a
/// rolling deploy, a shared volume). Each fire time still runs once; said at warn once per
/// process, then at debug.
fn second_scheduler(error: &RunError) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if WARNED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        log::debug!("{error}");
    } else {
        log::warn!(
            "{error}: a second scheduler runs on this store; each fire time runs once, in whichever process reaches it first"
        );
    }
}

/// Runs the job's fire times one after another on a thread of its own, so a long job never
/// delays another's fire time.
fn dispatch(
    runner: &Arc<Runner>,
    name: &'static str,
    runs: Vec<(DateTime<Utc>, OccurrenceBatch)>,
) -> Option<JoinHandle<()>> {
    let runner = Arc::clone(runner);
    let spawned = std::thread::Builder::new()
        .name(format!("run-{name}"))
        .spawn(move || {
            for (scheduled_for, batch) in runs {
                match runner.run_scheduled(name, scheduled_for, &batch) {
                    Ok(_) => {}
                    Err(RunError::ShuttingDown) => return,
                    Err(error @ RunError::AlreadyRunning { .. }) => {
                        log::info!("{name}: fire time {scheduled_for} refused: {error}")
                    }
                    Err(error @ RunError::AlreadyServed { .. }) => second_scheduler(&error),
                    Err(error) => log::error!("{name}: {error}"),
                }
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            log::error!("{name}: could not start a thread for it: {error}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_offsets_are_fixed_per_site_and_job_and_within_the_spread() {
        let spread = Duration::from_secs(600);
        let offset = spread_offset("edge-1", "s3-sync", spread);
        assert!(offset < spread);
        assert_eq!(offset, spread_offset("edge-1", "s3-sync", spread));
        let sites: std::collections::HashSet<Duration> = (0..20)
            .map(|site| spread_offset(&format!("edge-{site}"), "s3-sync", spread))
            .collect();
        assert!(sites.len() > 15, "20 sites share {} offsets", sites.len());
        assert_ne!(offset, spread_offset("edge-1", "cleanup", spread));
        assert_eq!(
            spread_offset("edge-1", "s3-sync", Duration::ZERO),
            Duration::ZERO
        );
    }
}
