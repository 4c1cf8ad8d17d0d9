//! The built-in scheduler: sleeps until the next job is due, then asks the runner to run it.
//! It knows each job's name and schedule, nothing of what the job does.
//!
//! Steps of the loop in [`run`]:
//! 1. load each enabled job's last handled fire time (a first start begins from now);
//! 2. for each job due since then, run it once on its own thread, logging any fire times
//!    skipped by downtime, and record the fire time handled;
//! 3. sleep until the earliest next fire time (at most a minute, so clock changes are
//!    noticed), or until shutdown is requested.

pub mod schedule;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::jobs::{Registry, RunParams};
use crate::runner::{RunError, Runner};
use crate::shutdown::Shutdown;
use crate::store::runs::Trigger;
use schedule::{Schedule, ScheduleError, due};

/// A job's effective schedule and whether the scheduler runs it.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub name: &'static str,
    pub schedule: Schedule,
    pub enabled: bool,
}

/// Each job's schedule and enabled state after environment overrides.
pub fn plan(jobs: &Registry, config: &Config) -> Result<Vec<PlannedJob>, ScheduleError> {
    jobs.iter()
        .map(|job| {
            let expression = config
                .schedule_overrides
                .get(job.name())
                .map_or(job.default_schedule(), String::as_str);
            Ok(PlannedJob {
                name: job.name(),
                schedule: Schedule::parse(expression, config.zone)?,
                enabled: config
                    .enabled_overrides
                    .get(job.name())
                    .copied()
                    .unwrap_or_else(|| job.enabled_by_default(config)),
            })
        })
        .collect()
}

/// The longest single sleep, so a changed wall clock is noticed within a minute.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// A last fire time this far ahead of the clock means the clock was set back.
const CLOCK_CORRECTION: chrono::Duration = chrono::Duration::hours(3);

struct Entry {
    name: &'static str,
    schedule: Schedule,
    last_fire: DateTime<Utc>,
}

/// Runs the scheduler loop until shutdown; returns the handles of runs it started.
pub fn run(
    runner: Arc<Runner>,
    planned: Vec<PlannedJob>,
    shutdown: Arc<Shutdown>,
) -> Vec<JoinHandle<()>> {
    let mut started_runs = Vec::new();
    if !runner.config().cron_enabled {
        log::warn!("CRON_ENABLED=false: the scheduler fires nothing");
        return started_runs;
    }
    let now = runner.clock().now();
    let mut entries: Vec<Entry> = planned
        .into_iter()
        .filter(|job| job.enabled)
        .map(|job| Entry {
            last_fire: last_fire_or_now(&runner, job.name, now),
            name: job.name,
            schedule: job.schedule,
        })
        .collect();
    log::info!("scheduler: {} jobs scheduled", entries.len());
    if entries.is_empty() {
        while !shutdown.wait(MAX_SLEEP) {}
        return started_runs;
    }

    while !shutdown.is_requested() {
        let now = runner.clock().now();
        for entry in &mut entries {
            if entry.last_fire > now + CLOCK_CORRECTION {
                // As cron(8) does for changes over three hours: the clock was corrected
                // backwards; start again from the new time rather than wait for the old one.
                log::warn!(
                    "{}: the clock moved back before its last fire time {}; starting from now",
                    entry.name,
                    entry.last_fire
                );
                entry.last_fire = now;
            }
            let Some(due) = due(&entry.schedule, entry.last_fire, now) else {
                continue;
            };
            if due.skipped > 0 {
                log::warn!(
                    "{}: {} scheduled runs between {} and {} were missed; running once now",
                    entry.name,
                    due.skipped,
                    entry.last_fire,
                    due.fire_at
                );
            }
            entry.last_fire = due.fire_at;
            if let Err(error) = runner.store().set_last_fire(entry.name, due.fire_at) {
                log::error!("{}: recording its fire time: {error}", entry.name);
            }
            started_runs.retain(|handle: &JoinHandle<()>| !handle.is_finished());
            if let Some(handle) = dispatch(&runner, entry.name) {
                started_runs.push(handle);
            }
        }
        let next_fire = entries
            .iter()
            .filter_map(|entry| entry.schedule.next_after(entry.last_fire))
            .min();
        let sleep = match next_fire {
            Some(next) => (next - runner.clock().now())
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

fn last_fire_or_now(runner: &Runner, name: &str, now: DateTime<Utc>) -> DateTime<Utc> {
    match runner.store().last_fire(name) {
        Ok(Some(last)) => last,
        Ok(None) => {
            if let Err(error) = runner.store().set_last_fire(name, now) {
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

/// Runs the job on its own thread, so a long job never delays another's fire time.
fn dispatch(runner: &Arc<Runner>, name: &'static str) -> Option<JoinHandle<()>> {
    let runner = Arc::clone(runner);
    let spawned = std::thread::Builder::new()
        .name(format!("run-{name}"))
        .spawn(
            move || match runner.run(name, Trigger::Schedule, RunParams::default()) {
                Ok(_) | Err(RunError::ShuttingDown) => {}
                Err(error @ RunError::AlreadyRunning { .. }) => {
                    log::info!("{name}: skipped: {error}")
                }
                Err(error) => log::error!("{name}: {error}"),
            },
        );
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            log::error!("{name}: could not start a thread for it: {error}");
            None
        }
    }
}
