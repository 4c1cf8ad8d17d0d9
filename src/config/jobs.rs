//! Each job's scheduling settings: its effective schedule (built in, or
//! `EDGECRON_SCHEDULE_<JOB>`) parsed in its zone, and the other per-job variables
//! `EDGECRON_ENABLED_`, `EDGECRON_TZ_`, `EDGECRON_CATCHUP_`, `EDGECRON_EXPECT_`,
//! `EDGECRON_GRACE_`, `EDGECRON_SPREAD_` (`<JOB>` upper-case with `-` as `_`), each validated at start-up, so
//! nothing about a schedule can fail once edgecron runs.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono_tz::Tz;
use serde::Serialize;

use super::variables::{
    EDGECRON_CATCHUP_JOB, EDGECRON_ENABLED_JOB, EDGECRON_EXPECT_JOB, EDGECRON_GRACE_JOB,
    EDGECRON_SCHEDULE_JOB, EDGECRON_SPREAD_JOB, EDGECRON_TZ_JOB, Variable,
};
use super::{ConfigError, Environment, Problems, parse_zone};
use crate::cron::Schedule;

/// `all` runs at most this many passed fire times.
pub const ALL_CAP: usize = 100;

/// What the configuration needs to know of a job: its name and its built-in schedule.
#[derive(Debug, Clone, Copy)]
pub struct JobDefaults {
    pub name: &'static str,
    pub schedule: &'static str,
}

/// What the scheduler does with fire times that passed while it was down or suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// One catch-up run for all of them (cron's and the default).
    #[default]
    Once,
    /// None: wait for the next fire time.
    Skip,
    /// One run per fire time, the newest [`ALL_CAP`] of them, oldest first.
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Once => "once",
            CatchUp::Skip => "skip",
            CatchUp::All => "all",
        }
    }
}

/// One job's scheduling, after the environment's overrides.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// The effective schedule, in the job's zone (`EDGECRON_TZ_<JOB>`, else `EDGECRON_TZ`).
    pub schedule: Schedule,
    /// `EDGECRON_ENABLED_<JOB>`; unset, the job's own default decides.
    pub enabled: Option<bool>,
    pub catch_up: CatchUp,
    /// `EDGECRON_EXPECT_<JOB>`: the schedule an outside scheduler triggers it on.
    pub expected: Option<Schedule>,
    /// How late a scheduled or expected run may start before it counts as overdue.
    pub grace: Duration,
    /// `EDGECRON_SPREAD_<JOB>`: each fire time starts a fixed offset in `[0, spread)` later,
    /// derived from the site and the job.
    pub spread: Duration,
}

/// Each job's settings, reading its variables out of `vars`; a variable naming no job, or a
/// value that does not parse, is a problem.
pub(super) fn parse_job_vars(
    env: &Environment,
    jobs: &[JobDefaults],
    global_zone: Tz,
    problems: &mut Problems,
) -> BTreeMap<&'static str, JobSettings> {
    let mut values: BTreeMap<(&str, &'static str), (&str, &str)> = BTreeMap::new();
    for (name, value) in env.names() {
        let Some((prefix, suffix)) = PER_JOB.iter().find_map(|variable| {
            let prefix = variable.job_prefix()?;
            Some((prefix, name.strip_prefix(prefix)?))
        }) else {
            continue;
        };
        match job_from_suffix(name, suffix, jobs) {
            Ok(job) => {
                values.insert((job, prefix), (name, value));
            }
            Err(problem) => problems.0.push(problem),
        }
    }
    let mut settings = BTreeMap::new();
    for job in jobs {
        // The variable's name and value for this job; `None` when unset (or empty).
        let value = |variable: &Variable| {
            let prefix = variable.job_prefix()?;
            values
                .get(&(job.name, prefix))
                .copied()
                .filter(|(_, text)| !text.is_empty())
        };
        let zone = value(&EDGECRON_TZ_JOB).map_or(global_zone, |(name, text)| {
            problems.take(parse_zone(name, text), global_zone)
        });
        let mut parse_schedule = |name: &str, text: &str| {
            problems.take(
                Schedule::parse(text, zone)
                    .map(Some)
                    .map_err(|error| ConfigError(format!("{name}: {error}"))),
                None,
            )
        };
        let schedule = match value(&EDGECRON_SCHEDULE_JOB) {
            Some((name, text)) => parse_schedule(name, text),
            None => parse_schedule(job.name, job.schedule),
        };
        let expected =
            value(&EDGECRON_EXPECT_JOB).and_then(|(name, text)| parse_schedule(name, text));
        let enabled = value(&EDGECRON_ENABLED_JOB).and_then(|(name, text)| {
            problems.take(EDGECRON_ENABLED_JOB.flag(name, Some(text)).map(Some), None)
        });
        let (name, text) = value(&EDGECRON_CATCHUP_JOB).unzip();
        let catch_up = problems.take(
            EDGECRON_CATCHUP_JOB.one_of(
                name.unwrap_or(EDGECRON_CATCHUP_JOB.name),
                text,
                [CatchUp::Once, CatchUp::Skip, CatchUp::All],
            ),
            CatchUp::default(),
        );
        let mut seconds = |variable: &Variable| {
            let (name, text) = value(variable).unzip();
            let seconds = variable.number(name.unwrap_or(variable.name), text);
            Duration::from_secs(problems.take(seconds, 0))
        };
        let grace = seconds(&EDGECRON_GRACE_JOB);
        let spread = seconds(&EDGECRON_SPREAD_JOB);
        // A schedule that does not parse is a problem already noted; the job is left out.
        if let Some(schedule) = schedule {
            settings.insert(
                job.name,
                JobSettings {
                    schedule,
                    enabled,
                    catch_up,
                    expected,
                    grace,
                    spread,
                },
            );
        }
    }
    settings
}

/// The job a variable's suffix names (`EXPORT_INTERACTIONS` → `export-interactions`).
fn job_from_suffix(
    variable: &str,
    suffix: &str,
    jobs: &[JobDefaults],
) -> Result<&'static str, ConfigError> {
    let job = suffix.to_ascii_lowercase().replace('_', "-");
    jobs.iter()
        .find(|known| known.name == job)
        .map(|known| known.name)
        .ok_or_else(|| ConfigError(format!("{variable}: there is no job named {job:?}")))
}

/// The per-job variables, `<PREFIX><JOB>` with the job upper-case and `-` as `_`.
const PER_JOB: [&Variable; 7] = [
    &EDGECRON_SCHEDULE_JOB,
    &EDGECRON_ENABLED_JOB,
    &EDGECRON_TZ_JOB,
    &EDGECRON_CATCHUP_JOB,
    &EDGECRON_EXPECT_JOB,
    &EDGECRON_GRACE_JOB,
    &EDGECRON_SPREAD_JOB,
];
