//! The commands that show and never change: the jobs' status, run history, occurrences, the
//! configuration's plan and variables, a cron expression's fire times.

use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use super::{CliError, open, process};
use crate::clock::{Clock, SystemClock};
use crate::config::parse_zone;
use crate::cron::Schedule;
use crate::jobs::Registry;
use crate::runner::EXIT_USAGE;
use crate::scheduler;
use crate::status::history;
use crate::status::{JobStatus, job_statuses};

pub(super) fn jobs(json: bool) -> Result<ExitCode, CliError> {
    let process = process()?;
    let site = crate::site::recorded(&process.store)?;
    let planned = scheduler::plan(&process.jobs, &process.config, site.as_deref());
    let statuses = job_statuses(process.sources(), &planned)?;
    if json {
        print_json(&serde_json::json!(statuses));
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", JobStatus::table(&statuses));
    Ok(ExitCode::SUCCESS)
}

pub(super) fn runs(job: Option<&str>, limit: i64, json: bool) -> Result<ExitCode, CliError> {
    if limit < 1 {
        return Err(CliError::Usage(format!(
            "--limit must be at least 1, got {limit}"
        )));
    }
    let (_config, store) = open()?;
    let runs = history::runs(&store, &Registry::all(), job, limit)?;
    if json {
        print_json(&serde_json::json!(runs));
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "{:>7} {:<30} {:<9} {:<25} {:<8} {:>9} {:>8} {}\n",
        "ID", "JOB", "TRIGGER", "STARTED", "STATUS", "SECONDS", "LAG MS", "ERROR"
    );
    for run in runs {
        let seconds = run
            .duration_ms
            .map_or("-".to_string(), |ms| format!("{:.3}", ms as f64 / 1000.0));
        out.push_str(&format!(
            "{:>7} {:<30} {:<9} {:<25} {:<8} {:>9} {:>8} {}\n",
            run.id,
            run.job,
            run.trigger,
            run.started_at,
            run.status,
            seconds,
            run.lag_ms.map_or("-".to_string(), |lag| lag.to_string()),
            run.error.as_deref().unwrap_or(""),
        ));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn occurrences(job: Option<&str>, limit: i64, json: bool) -> Result<ExitCode, CliError> {
    if limit < 1 {
        return Err(CliError::Usage(format!(
            "--limit must be at least 1, got {limit}"
        )));
    }
    let (_config, store) = open()?;
    let occurrences = history::occurrences(&store, &Registry::all(), job, limit)?;
    if json {
        print_json(&serde_json::json!(occurrences));
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "{:<30} {:<9} {:<25} {:<10} {:>7} {:>8}\n",
        "JOB", "SOURCE", "SCHEDULED FOR", "OUTCOME", "RUN", "LAG MS"
    );
    for occurrence in occurrences {
        let dash = |value: Option<i64>| value.map_or("-".to_string(), |value| value.to_string());
        out.push_str(&format!(
            "{:<30} {:<9} {:<25} {:<10} {:>7} {:>8}\n",
            occurrence.job,
            occurrence.source,
            occurrence.scheduled_for,
            occurrence.outcome,
            dash(occurrence.run_id),
            dash(occurrence.lag_ms),
        ));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// `check --variables`: the declared variables, and which are set here.
pub(super) fn print_variables(json: bool) {
    let set: Vec<String> = std::env::vars().map(|(name, _)| name).collect();
    let listing = crate::check::variables(&set);
    if json {
        print_json(&serde_json::json!(listing));
    } else {
        print!("{}", crate::check::variables_table(&listing));
    }
}

/// `check`: the configuration and plan, never the store; every problem on a line of its own.
pub(super) fn check(json: bool) -> Result<ExitCode, CliError> {
    let jobs = Registry::all();
    let names: Vec<String> = std::env::vars().map(|(name, _)| name).collect();
    for unknown in crate::check::unknown_variables(&names) {
        eprintln!(
            "edgecron: warning: {unknown} is not a variable edgecron reads (edgecron check --variables lists them)"
        );
    }
    match crate::check::check(std::env::vars(), &jobs, SystemClock.now()) {
        Ok(rows) => {
            if json {
                print_json(&serde_json::json!(rows));
            } else {
                print!("{}", crate::check::table(&rows));
                println!(
                    "configuration ok: {} jobs (the store was not opened)",
                    rows.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            let mut stderr = std::io::stderr().lock();
            for problem in problems {
                let _ = writeln!(stderr, "edgecron: {problem}");
            }
            Ok(ExitCode::from(EXIT_USAGE))
        }
    }
}

pub(super) fn calendar(
    expression: &str,
    tz: Option<&str>,
    from: Option<&str>,
    count: usize,
    json: bool,
) -> Result<ExitCode, CliError> {
    let zone = match tz {
        Some(name) => parse_zone("--tz", name)?,
        None => match std::env::var("EDGECRON_TZ") {
            Ok(name) if !name.trim().is_empty() => parse_zone("EDGECRON_TZ", name.trim())?,
            _ => chrono_tz::UTC,
        },
    };
    let schedule =
        Schedule::parse(expression, zone).map_err(|error| CliError::Usage(error.to_string()))?;
    let from = match from {
        Some(text) => parse_from(text, zone)?,
        None => SystemClock.now(),
    };
    let times: Vec<String> = schedule
        .upcoming(from, count)
        .iter()
        .map(|time| time.to_rfc3339_opts(SecondsFormat::Secs, false))
        .collect();
    if json {
        print_json(&serde_json::json!(times));
    } else {
        let mut out = String::new();
        for time in times {
            out.push_str(&time);
            out.push('\n');
        }
        print!("{out}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads `--from`: RFC 3339 with an offset, or a local date-time (or date) in `zone`.
fn parse_from(text: &str, zone: Tz) -> Result<DateTime<Utc>, CliError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|day| day.and_hms_opt(0, 0, 0))
    })
    .ok_or_else(|| CliError::Usage(format!("--from: {text:?} is not an ISO-8601 time")))?;
    zone.from_local_datetime(&local)
        .earliest()
        .map(|time| time.with_timezone(&Utc))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--from: {text} does not exist in {zone} (clocks skip it)"
            ))
        })
}

pub(super) fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (a pipe to `head`) is not worth a panic.
    let _ = writeln!(stdout, "{text}");
}
