//! The watcher: raises `job_overdue` when a due run has not started within its grace, and
//! keeps the ledger of expected outside schedules (`EDGECRON_EXPECT_<JOB>`). It runs on a
//! thread of its own beside the scheduler loop, so a wedged loop is seen too.
//!
//! Steps of each pass of [`watch`]:
//! 1. for each job with an expected schedule, judge each due time whose grace has ended
//!    since the last one judged ([`judge_expected`]) and record it with the watcher's
//!    progress, opening the job's overdue condition on a `missed` one, in one transaction;
//! 2. for each job the scheduler runs, judge each fire time whose grace has ended and that
//!    fell while this process was running ([`judge_scheduled`]): overdue when the scheduler
//!    has not handled it (a wedged loop), or when it was refused and no run started within
//!    the grace (a run stuck holding the lease);
//! 3. every half minute, deliver alerts still queued;
//! 4. sleep until the next due time's grace ends (at most half a minute), or shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::decide::passed;
use super::{PlannedJob, Scheduling};
use crate::alert::{self, JOB_OVERDUE};
use crate::cron::Schedule;
use crate::shutdown::Shutdown;
use crate::store::alerts::{self, ConditionKind, Outbox};
use crate::store::occurrences::{self, NewOccurrence, Outcome, Source, lag_ms};
use crate::store::{Store, StoreError};

/// The longest sleep between passes, and how often queued alerts are delivered.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// A trigger this early still serves a due time (an outside scheduler's clock running
/// ahead), unless the grace is shorter.
const EARLY_TOLERANCE: chrono::Duration = chrono::Duration::seconds(5);

/// What is known of one expected due time once its grace has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    /// The first run of the job (any trigger) started around it: `(run id, start)`.
    pub started: Option<(i64, DateTime<Utc>)>,
    /// A run was in progress at the due time (an outside trigger would have been refused).
    pub in_progress: bool,
    /// `CRON_ENABLED=false` (trigger routes answer 503).
    pub paused: bool,
}

/// The outcome of an expected due time: `ran` by any run started within the grace (or a
/// little early), else `paused`, `refused` or `missed`.
pub fn judge_expected(evidence: Evidence) -> Outcome {
    match evidence {
        Evidence {
            started: Some(_), ..
        } => Outcome::Ran,
        Evidence { paused: true, .. } => Outcome::Paused,
        Evidence {
            in_progress: true, ..
        } => Outcome::Refused,
        _ => Outcome::Missed,
    }
}

/// Why a built-in fire time is overdue, if it is: `recorded` is its ledger outcome (none
/// yet), `handled` whether the scheduler's progress has passed it, `served` whether a run of
/// the job started within its grace.
pub fn judge_scheduled(
    recorded: Option<&str>,
    handled: bool,
    served: bool,
) -> Option<&'static str> {
    match recorded {
        None if !handled => Some("the scheduler has not started it"),
        Some("refused") if !served => Some("refused: the job was still running"),
        _ => None,
    }
}

/// One schedule the watcher keeps an eye on.
struct Watched {
    job: &'static str,
    source: Source,
    schedule: Schedule,
    grace: Duration,
    checked_through: Option<DateTime<Utc>>,
}

/// Watches until shutdown. `started` is when this process started scheduling: fire times
/// before it are the scheduler's catch-up business, never overdue.
pub fn watch(scheduling: Scheduling, planned: Vec<PlannedJob>, shutdown: Arc<Shutdown>) {
    let started = scheduling.clock.now();
    let cron_enabled = scheduling.config.cron_enabled;
    let mut watched: Vec<Watched> = Vec::new();
    for job in planned {
        if let Some(expected) = job.expected.clone() {
            watched.push(Watched {
                job: job.name,
                source: Source::Expected,
                schedule: expected,
                grace: job.grace,
                checked_through: None,
            });
        }
        if job.enabled && cron_enabled {
            watched.push(Watched {
                job: job.name,
                source: Source::Schedule,
                schedule: job.schedule,
                // A spread fire time is due its offset later; the grace runs from there.
                grace: job.grace + job.offset.unwrap_or_default(),
                checked_through: None,
            });
        }
    }
    let mut last_delivery = Instant::now();
    while !shutdown.is_requested() {
        let now = scheduling.clock.now();
        for entry in &mut watched {
            if let Err(error) = judge_due(&scheduling, entry, started, now) {
                log::warn!(
                    "{}: watching its {} schedule: {error}",
                    entry.job,
                    entry.source.as_str()
                );
            }
        }
        if last_delivery.elapsed() >= MAX_SLEEP {
            last_delivery = Instant::now();
            if alerts::pending(&scheduling.store).unwrap_or(0) > 0 {
                scheduling.alerts.deliver_in_background();
            }
        }
        let next = watched
            .iter()
            .filter_map(|entry| {
                let next = entry.schedule.next_after(entry.checked_through?)?;
                Some(next + chrono::Duration::from_std(entry.grace).unwrap_or_default())
            })
            .min();
        let sleep = next
            .and_then(|next| (next - scheduling.clock.now()).to_std().ok())
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        // Just past the due time's grace, so it is judged at once.
        shutdown.wait(sleep + Duration::from_millis(5));
    }
}

fn judge_due(
    scheduling: &Scheduling,
    entry: &mut Watched,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let store = &scheduling.store;
    let checked_through = match entry.checked_through {
        Some(through) => through,
        None => match occurrences::checked_through(store, entry.job, entry.source)? {
            Some(through) => through,
            None => {
                occurrences::set_checked_through(store, entry.job, entry.source, now)?;
                now
            }
        },
    };
    entry.checked_through = Some(checked_through);
    let grace = chrono::Duration::from_std(entry.grace).unwrap_or_default();
    let (due, older) = passed(&entry.schedule, checked_through, now - grace);
    let Some(&last) = due.last() else {
        return Ok(());
    };
    if older > 0 {
        log::warn!(
            "{}: {older} due times of its {} schedule before {} were not judged (too many)",
            entry.job,
            entry.source.as_str(),
            due[0]
        );
    }
    match entry.source {
        Source::Expected => {
            check_expected(scheduling, entry.job, &entry.schedule, grace, &due, now)?
        }
        Source::Schedule => {
            check_scheduled(scheduling, entry.job, grace, &due, started, now)?;
            occurrences::set_checked_through(store, entry.job, entry.source, last)?;
        }
    }
    entry.checked_through = Some(last);
    Ok(())
}

fn check_expected(
    scheduling: &Scheduling,
    job: &'static str,
    schedule: &Schedule,
    grace: chrono::Duration,
    due: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let store = &scheduling.store;
    let paused = !scheduling.config.cron_enabled;
    let early = EARLY_TOLERANCE.min(grace);
    let mut rows = Vec::with_capacity(due.len());
    for &time in due {
        let started =
            occurrences::first_run_started_between(store, job, time - early, time + grace)?;
        let in_progress =
            started.is_none() && occurrences::run_in_progress_at(store, job, time)?.is_some();
        let outcome = judge_expected(Evidence {
            started,
            in_progress,
            paused,
        });
        rows.push(NewOccurrence {
            scheduled_for: time,
            outcome,
            run_id: started.map(|(id, _)| id),
            lag_ms: started.map(|(_, at)| lag_ms(time, at)),
        });
    }
    let first_missed = rows
        .iter()
        .find(|row| row.outcome == Outcome::Missed)
        .map(|row| row.scheduled_for);
    let alert = first_missed.map(|due_at| {
        overdue_alert(
            job,
            Source::Expected,
            due_at,
            grace,
            "no run started",
            json!({"expected": schedule.expression()}),
            now,
        )
    });
    let outbox = scheduling.alerts.outbox();
    let opened = occurrences::record_occurrences_then(
        store,
        job,
        Source::Expected,
        &rows,
        (Outcome::Missed, 0),
        due.last().copied(),
        now,
        |conn| match (&alert, first_missed) {
            (Some(alert), Some(since)) => Ok(alerts::open_in(
                conn,
                job,
                ConditionKind::Overdue,
                since,
                None,
                alert,
                outbox,
                now,
            )?),
            _ => Ok(false),
        },
    )?;
    if opened && let Some(alert) = alert {
        scheduling.alerts.announce(&[alert]);
    }
    Ok(())
}

fn check_scheduled(
    scheduling: &Scheduling,
    job: &'static str,
    grace: chrono::Duration,
    due: &[DateTime<Utc>],
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let store = &scheduling.store;
    let handled_through = occurrences::last_fire(store, job)?;
    for &time in due.iter().filter(|time| **time > started) {
        let recorded = occurrences::occurrence_at(store, job, Source::Schedule, time)?;
        let recorded = recorded.as_ref().map(|(outcome, _)| outcome.as_str());
        let handled = handled_through.is_some_and(|through| through >= time);
        let served = recorded == Some("refused")
            && occurrences::first_run_started_between(store, job, time, time + grace)?.is_some();
        let Some(reason) = judge_scheduled(recorded, handled, served) else {
            continue;
        };
        let alert = overdue_alert(job, Source::Schedule, time, grace, reason, json!({}), now);
        if open_overdue(store, job, time, &alert, scheduling.alerts.outbox(), now)? {
            scheduling.alerts.announce(&[alert]);
        }
        // One condition at a time: the rest of this silence is part of it.
        break;
    }
    Ok(())
}

fn open_overdue(
    store: &Store,
    job: &str,
    since: DateTime<Utc>,
    alert: &Value,
    outbox: Outbox,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    alerts::open_condition(
        store,
        job,
        ConditionKind::Overdue,
        since,
        None,
        alert,
        outbox,
        now,
    )
}

fn overdue_alert(
    job: &str,
    source: Source,
    due_at: DateTime<Utc>,
    grace: chrono::Duration,
    reason: &str,
    extra: Value,
    now: DateTime<Utc>,
) -> Value {
    let due_text = crate::clock::to_store_text(due_at);
    let grace_seconds = grace.num_seconds();
    let mut details = json!({
        "dueAt": due_text,
        "graceSeconds": grace_seconds,
        "source": source.as_str(),
        "reason": reason,
    });
    if let (Value::Object(details), Value::Object(extra)) = (&mut details, extra) {
        details.extend(extra);
    }
    alert::job_alert(
        JOB_OVERDUE,
        job,
        format!(
            "{job}: its {} run due {due_text} has not started within {grace_seconds}s ({reason})",
            source.as_str()
        ),
        details,
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn an_expected_due_time_is_ran_paused_refused_or_missed() {
        let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let nothing = Evidence {
            started: None,
            in_progress: false,
            paused: false,
        };
        assert_eq!(judge_expected(nothing), Outcome::Missed);
        assert_eq!(
            judge_expected(Evidence {
                started: Some((7, at)),
                paused: true,
                ..nothing
            }),
            Outcome::Ran,
            "a CLI run counts even while triggers are paused"
        );
        assert_eq!(
            judge_expected(Evidence {
                in_progress: true,
                ..nothing
            }),
            Outcome::Refused
        );
        assert_eq!(
            judge_expected(Evidence {
                paused: true,
                ..nothing
            }),
            Outcome::Paused
        );
    }

    #[test]
    fn a_built_in_fire_time_is_overdue_when_unhandled_or_refused_without_a_run() {
        assert!(
            judge_scheduled(None, false, false).is_some(),
            "a wedged loop"
        );
        assert!(
            judge_scheduled(None, true, false).is_none(),
            "counted, not listed"
        );
        assert!(
            judge_scheduled(Some("refused"), true, false).is_some(),
            "a stuck run"
        );
        assert!(judge_scheduled(Some("refused"), true, true).is_none());
        for fine in ["ran", "coalesced", "paused"] {
            assert!(judge_scheduled(Some(fine), true, false).is_none(), "{fine}");
        }
    }
}
