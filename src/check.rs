//! `edgecron check`: the whole configuration validated without touching the store (as
//! `nginx -t`), every problem found rather than the first, and each job's effective plan.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::config::variables::{self, Variable};
use crate::jobs::Registry;
use crate::scheduler;
use crate::status::JobPlan;

/// Reads `vars` as `serve` would and answers each job's plan, or every problem, one line each.
pub fn check(
    vars: impl IntoIterator<Item = (String, String)>,
    jobs: &Registry,
    now: DateTime<Utc>,
) -> Result<Vec<JobPlan>, Vec<String>> {
    let config = Config::check_vars(vars, &jobs.defaults())
        .map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let planned = scheduler::plan(jobs, &config, config.site_id.as_deref());
    Ok(planned
        .iter()
        .map(|job| JobPlan::of(job, config.cron_enabled, now))
        .collect())
}

/// One declared variable, and whether the environment sets it.
#[derive(Debug, Serialize)]
pub struct Declared {
    #[serde(flatten)]
    pub variable: &'static Variable,
    pub set: bool,
}

/// Every variable edgecron reads; `set` are the names the environment has.
pub fn variables(set: &[String]) -> Vec<Declared> {
    variables::ALL
        .iter()
        .map(|variable| Declared {
            variable,
            set: set.iter().any(|name| variable.names(name)),
        })
        .collect()
}

/// The variables as `--help` lists options: the name (and whether it is set), what it does,
/// what unset means and what it accepts.
pub fn variables_table(rows: &[Declared]) -> String {
    let mut out = String::new();
    for row in rows {
        let variable = row.variable;
        let unset = match variable.unset {
            variables::Unset::Is("") => "empty".to_string(),
            variables::Unset::Is(value) => value.to_string(),
            variables::Unset::Nothing => "unset".to_string(),
            variables::Unset::Derived(description) => description.to_string(),
        };
        out.push_str(&format!(
            "{}{}\n    {}\n    default: {unset}; accepts: {}\n",
            variable.name,
            if row.set { " (set)" } else { "" },
            variable.about,
            variable.accepts.describe(),
        ));
    }
    out
}

/// Set variables in edgecron's namespaces that it does not read: likely typos.
pub fn unknown_variables(names: &[String]) -> Vec<&str> {
    variables::unknown(names.iter().map(String::as_str))
}

/// The plan as a table, one job a line.
pub fn table(rows: &[JobPlan]) -> String {
    let mut out = format!(
        "{:<28} {:<16} {:<20} {:<7} {:<16} {:>6} {:>11} {:<7} {}\n",
        "JOB", "SCHEDULE", "ZONE", "CATCHUP", "EXPECT", "GRACE", "SPREAD", "ENABLED", "NEXT"
    );
    for row in rows {
        let next = match (&row.next_run, &row.next_expected) {
            (Some(run), _) => run.clone(),
            (None, Some(expected)) => format!("{expected} (expected)"),
            (None, None) => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<28} {:<16} {:<20} {:<7} {:<16} {:>5}s {:>11} {:<7} {next}\n",
            row.name,
            row.schedule,
            row.zone,
            row.catch_up,
            row.expected.as_deref().unwrap_or("-"),
            row.grace_seconds,
            spread_text(row),
            if row.enabled { "yes" } else { "no" },
        ));
    }
    out
}

/// `-`, or the spread with this site's offset in it (`+93.2s/600s`; `?` without a site).
fn spread_text(row: &JobPlan) -> String {
    if row.spread_seconds == 0 {
        return "-".to_string();
    }
    match row.spread_offset_ms {
        Some(offset) => format!("+{:.1}s/{}s", offset as f64 / 1000.0, row.spread_seconds),
        None => format!("?/{}s", row.spread_seconds),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn every_problem_is_one_line_naming_its_variable() {
        let problems = check(
            vars(&[
                ("EDGECRON_TZ_CLEANUP", "Mars/Base"),
                ("EDGECRON_CATCHUP_CLEANUP", "twice"),
                ("EDGECRON_EXPECT_SIEM_SHIP", "every tuesday"),
                ("EDGECRON_GRACE_MAINTENANCE", "0"),
                ("EDGECRON_LISTEN", "nowhere"),
                ("EDGECRON_ENABLED_NO_SUCH_JOB", "true"),
            ]),
            &Registry::all(),
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(problems.len(), 6, "{problems:#?}");
        for variable in [
            "EDGECRON_TZ_CLEANUP=Mars/Base",
            "EDGECRON_CATCHUP_CLEANUP",
            "EDGECRON_EXPECT_SIEM_SHIP",
            "EDGECRON_GRACE_MAINTENANCE",
            "EDGECRON_LISTEN",
            "EDGECRON_ENABLED_NO_SUCH_JOB",
        ] {
            assert!(
                problems.iter().any(|line| line.starts_with(variable)),
                "{variable}: {problems:#?}"
            );
        }
        assert!(problems.iter().all(|line| !line.contains('\n')));
    }

    #[test]
    fn the_plan_shows_each_jobs_zone_policy_and_next_fire_time() {
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        let rows = check(
            vars(&[
                ("EDGECRON_TZ_CLEANUP", "Asia/Kolkata"),
                ("EDGECRON_CATCHUP_CLEANUP", "all"),
                ("EDGECRON_EXPECT_SIEM_SHIP", "*/5 * * * *"),
                ("EDGECRON_GRACE_SIEM_SHIP", "120"),
            ]),
            &Registry::all(),
            now,
        )
        .unwrap();
        let cleanup = rows.iter().find(|row| row.name == "cleanup").unwrap();
        assert_eq!(cleanup.zone, "Asia/Kolkata");
        assert_eq!(cleanup.catch_up, "all");
        // 04:30 in Kolkata is 23:00 UTC the day before.
        assert_eq!(
            cleanup.next_run.as_deref(),
            Some("2026-05-02T04:30:00+05:30")
        );
        let siem = rows.iter().find(|row| row.name == "siem-ship").unwrap();
        assert!(!siem.enabled && siem.next_run.is_none());
        assert_eq!(siem.expected.as_deref(), Some("*/5 * * * *"));
        assert_eq!(
            siem.next_expected.as_deref(),
            Some("2026-05-01T12:05:00+00:00")
        );
        assert_eq!(siem.grace_seconds, 120);
        let text = table(&rows);
        assert!(text.lines().any(
            |line| line.starts_with("siem-ship") && line.contains("12:05:00+00:00 (expected)")
        ));
    }
}
