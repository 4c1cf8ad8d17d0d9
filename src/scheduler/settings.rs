//! The per-job scheduling variables, `<PREFIX><JOB>` with the job upper-case and `-` as
//! `_`: `EDGECRON_SCHEDULE_`, `EDGECRON_ENABLED_`, `EDGECRON_TZ_`, `EDGECRON_CATCHUP_`,
//! `EDGECRON_EXPECT_`, `EDGECRON_GRACE_`, each validated (an expression in its own job's
//! zone). `config.rs` reads them through [`parse_job_vars`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono_tz::Tz;

use super::CatchUp;
use crate::config::{ConfigError, Problems, job_from_suffix, parse_bool, parse_number, parse_zone};
use crate::cron::Schedule;

/// `EDGECRON_GRACE_<JOB>` when unset.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);
/// The longest grace: a week.
const MAX_GRACE_SECS: u64 = 7 * 24 * 3600;

/// The per-job variables (`EDGECRON_<WHAT>_<JOB>`), each validated.
#[derive(Default)]
pub struct JobVars {
    pub schedules: BTreeMap<String, String>,
    pub enabled: BTreeMap<String, bool>,
    pub zones: BTreeMap<String, Tz>,
    pub catch_up: BTreeMap<String, CatchUp>,
    pub expected: BTreeMap<String, String>,
    pub grace: BTreeMap<String, Duration>,
}

pub(crate) fn parse_job_vars(
    vars: &BTreeMap<String, String>,
    job_names: &[&str],
    problems: &mut Problems,
) -> JobVars {
    let mut jobs = JobVars::default();
    // Zones first: an expression is checked in its own job's zone.
    for (name, value) in vars {
        if let Some(suffix) = name.strip_prefix("EDGECRON_TZ_") {
            let zone = job_from_suffix(name, suffix, job_names)
                .and_then(|job| Ok((job, parse_zone(name, value.trim())?)));
            if let Some((job, zone)) = problems.take(zone.map(Some), None) {
                jobs.zones.insert(job, zone);
            }
        }
    }
    let global_zone = vars
        .get("EDGECRON_TZ")
        .and_then(|zone| zone.trim().parse::<Tz>().ok())
        .unwrap_or(chrono_tz::UTC);
    for (name, value) in vars {
        let Some((prefix, suffix)) = JOB_PREFIXES
            .iter()
            .find_map(|prefix| Some((*prefix, name.strip_prefix(prefix)?)))
        else {
            continue;
        };
        if prefix == "EDGECRON_TZ_" {
            continue;
        }
        let job = match job_from_suffix(name, suffix, job_names) {
            Ok(job) => job,
            Err(problem) => {
                problems.0.push(problem);
                continue;
            }
        };
        let zone = jobs.zones.get(&job).copied().unwrap_or(global_zone);
        let expression = |value: &str| {
            Schedule::parse(value, zone)
                .map(|_| value.trim().to_string())
                .map_err(|error| ConfigError(format!("{name}: {error}")))
        };
        let parsed = match prefix {
            "EDGECRON_SCHEDULE_" => expression(value).map(|text| {
                jobs.schedules.insert(job, text);
            }),
            "EDGECRON_EXPECT_" => expression(value).map(|text| {
                jobs.expected.insert(job, text);
            }),
            "EDGECRON_ENABLED_" => parse_bool(name, value).map(|enabled| {
                jobs.enabled.insert(job, enabled);
            }),
            "EDGECRON_CATCHUP_" => CatchUp::parse(value.trim())
                .map_err(|reason| ConfigError(format!("{name}: {reason}")))
                .map(|policy| {
                    jobs.catch_up.insert(job, policy);
                }),
            _ => parse_number(name, Some(value.trim()), 0, 1, MAX_GRACE_SECS).map(|seconds| {
                jobs.grace.insert(job, Duration::from_secs(seconds));
            }),
        };
        problems.take(parsed, ());
    }
    jobs
}

/// The per-job variables, `<PREFIX><JOB>` with the job upper-case and `-` as `_`.
const JOB_PREFIXES: [&str; 6] = [
    "EDGECRON_SCHEDULE_",
    "EDGECRON_ENABLED_",
    "EDGECRON_TZ_",
    "EDGECRON_CATCHUP_",
    "EDGECRON_EXPECT_",
    "EDGECRON_GRACE_",
];
