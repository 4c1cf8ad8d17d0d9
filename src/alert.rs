//! The one alert path (SPEC §7): an alert is a JSON object with a top-level `type`, logged as
//! one line under target `edgecron::alert` and, with `ALERT_WEBHOOK_URL`, queued in the
//! store's outbox and POSTed from there.
//!
//! The job alerts (`job_overdue`/`job_recovered`, `job_failing`, `job_overrun`) follow a
//! condition kept in the store (`store::alerts`): each fires when its condition opens and
//! once more when it closes, committed with the change that caused it. Delivery never holds
//! up a job or the scheduler: it runs on a thread of its own, one request at a time with a
//! short timeout, and an alert the webhook did not take is sent again by a later delivery
//! (the next alert, the watcher's periodic drain, the end of a CLI run), for a day.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use crate::clock::{Clock, from_store_text, to_store_text};
use crate::config::Config;
use crate::logging::ALERT_TARGET;
use crate::store::alerts::{self, ConditionKind, Outbox};
use crate::store::runs::RunStatus;
use crate::store::{Store, StoreError};
use crate::webhook::{self, PostError};

pub const JOB_OVERDUE: &str = "job_overdue";
pub const JOB_RECOVERED: &str = "job_recovered";
pub const JOB_FAILING: &str = "job_failing";
pub const JOB_FAILING_RESOLVED: &str = "job_failing_resolved";
pub const JOB_OVERRUN: &str = "job_overrun";
pub const JOB_OVERRUN_RESOLVED: &str = "job_overrun_resolved";
pub const CAPTURE_GAP: &str = "capture_gap";
pub const CAPTURE_GAP_RESOLVED: &str = "capture_gap_resolved";
pub const EXPORT_KEY_CONFLICT: &str = "export_key_conflict";

/// Failed runs in a row that make a job failing.
pub const FAILING_AFTER: i64 = 3;
/// The longest one webhook request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a deliverer holds an alert it is posting before another may take it.
const CLAIM_HOLD: Duration = Duration::from_secs(30);
/// An alert not delivered within a day is no longer news and is given up.
const GIVE_UP_AFTER: chrono::Duration = chrono::Duration::days(1);

/// A job alert: `type`, `job`, a one-line `summary`, `at`, and the fields of `details`.
pub fn job_alert(
    kind: &str,
    job: &str,
    summary: String,
    details: Value,
    now: DateTime<Utc>,
) -> Value {
    let mut alert = Map::new();
    alert.insert("type".into(), json!(kind));
    alert.insert("job".into(), json!(job));
    alert.insert("summary".into(), json!(summary));
    alert.insert("at".into(), json!(to_store_text(now)));
    if let Value::Object(fields) = details {
        alert.extend(fields);
    }
    Value::Object(alert)
}

/// The alert with this process's `site` (SPEC section 9), as every alert goes out: logged
/// and posted.
fn with_site(alert: &Value) -> Value {
    let mut alert = alert.clone();
    if let (Value::Object(fields), Some(site)) = (&mut alert, crate::site::current()) {
        fields.entry("site").or_insert_with(|| Value::from(site));
    }
    alert
}

/// Writes the alert's log line: the object itself, which the logger keeps as one line
/// (JSON: its fields at the top level; text: its summary, then the object).
pub fn log(alert: &Value) {
    let alert = &with_site(alert);
    let kind = alert["type"].as_str().unwrap_or("");
    let level = if kind.ends_with("_resolved") || kind == JOB_RECOVERED {
        log::Level::Info
    } else {
        log::Level::Warn
    };
    log::log!(target: ALERT_TARGET, level, "{alert}");
}

/// What became of an alert's POST when it was tried at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// `ALERT_WEBHOOK_URL` is not set: the alert was only logged.
    NoWebhook,
    Delivered {
        status: u16,
    },
    /// Not taken now; it stays queued for a later delivery (unless the webhook refused it).
    Failed {
        error: String,
    },
}

/// Raises an alert that follows no condition without waiting on the webhook: logs it and
/// queues it; the delivery that follows the run sends it.
pub fn queue(
    store: &Store,
    config: &Config,
    clock: &dyn Clock,
    alert: &Value,
) -> Result<(), StoreError> {
    log(alert);
    if config.alerts.webhook.is_some() {
        alerts::enqueue(store, alert, clock.now())?;
    }
    Ok(())
}

/// Raises an alert that follows no condition (the export failure alert): logs it, queues it
/// and tries the webhook at once, within a few seconds, answering what happened.
pub fn raise(store: &Store, config: &Config, clock: &dyn Clock, alert: &Value) -> Delivery {
    log(alert);
    let Some(url) = &config.alerts.webhook else {
        return Delivery::NoWebhook;
    };
    let id = match alerts::enqueue(store, alert, clock.now()) {
        Ok(id) => id,
        Err(error) => {
            // The outbox is out of reach; the alert is still worth a direct attempt.
            log::warn!("alert outbox: {error}");
            return match webhook::post_once(url, &with_site(alert).to_string(), REQUEST_TIMEOUT) {
                Ok(status) => Delivery::Delivered { status },
                Err(error) => Delivery::Failed {
                    error: error.to_string(),
                },
            };
        }
    };
    let destinations = Destinations {
        webhook: Some(url),
        ping: config.alerts.ping.as_deref(),
    };
    deliver_pending(store, destinations, clock, REQUEST_TIMEOUT * 2)
        .into_iter()
        .find(|(attempted, _)| *attempted == id)
        .map_or_else(
            || Delivery::Failed {
                error: "an earlier alert is still being delivered; queued".into(),
            },
            |(_, result)| match result {
                Ok(status) => Delivery::Delivered { status },
                Err(error) => Delivery::Failed {
                    error: error.to_string(),
                },
            },
        )
}

/// The server a URL names (scheme, host, port), as deliveries tell destinations apart.
fn server(url: &str) -> String {
    url::Url::parse(url).map_or_else(
        |_| url.to_string(),
        |url| url.origin().ascii_serialization(),
    )
}

/// Where queued entries go: alerts to the webhook, pings to the monitor (each its own URL).
#[derive(Debug, Clone, Copy, Default)]
pub struct Destinations<'a> {
    pub webhook: Option<&'a str>,
    pub ping: Option<&'a str>,
}

/// Posts queued alerts and pings oldest first, each at most once, until the queue is walked,
/// every destination failed or `budget` is spent; answers each attempt. A destination (a
/// server) that failed is not tried again in this delivery: its later entries wait, in order,
/// for the next, and a dead monitor never holds up the alerts behind its pings.
pub fn deliver_pending(
    store: &Store,
    destinations: Destinations<'_>,
    clock: &dyn Clock,
    budget: Duration,
) -> Vec<(i64, Result<u16, PostError>)> {
    let started = Instant::now();
    let mut attempts = Vec::new();
    let configured: HashSet<String> = [destinations.webhook, destinations.ping]
        .into_iter()
        .flatten()
        .map(server)
        .collect();
    let mut unavailable: HashSet<String> = HashSet::new();
    let mut after = 0;
    if let Err(error) = alerts::prune(store, clock.now()) {
        log::warn!("alert outbox: pruning: {error}");
    }
    // Every destination failed: the rest waits for a later delivery.
    let all_failed =
        |unavailable: &HashSet<String>| !configured.is_empty() && configured.is_subset(unavailable);
    while started.elapsed() < budget && !all_failed(&unavailable) {
        let now = clock.now();
        let pending = match alerts::claim(store, now, CLAIM_HOLD, after) {
            Ok(Some(pending)) => pending,
            Ok(None) => break,
            Err(error) => {
                log::warn!("alert outbox: {error}");
                break;
            }
        };
        after = pending.id;
        let stale = from_store_text(&pending.created_at).is_some_and(|at| now - at > GIVE_UP_AFTER);
        let destination = pending.url.as_deref().or(destinations.webhook);
        let given_up = match destination {
            _ if stale => Some("undelivered for a day"),
            None => Some("ALERT_WEBHOOK_URL is no longer set"),
            Some(_) => None,
        };
        if let Some(reason) = given_up {
            log::warn!("alert {}: {reason}; giving up", pending.id);
            let _ = alerts::abandoned(store, pending.id, reason, now);
            continue;
        }
        let Some(destination) = destination else {
            continue;
        };
        if unavailable.contains(&server(destination)) {
            if let Err(error) = alerts::failed(store, pending.id, "its destination failed; later") {
                log::warn!("alert {}: releasing it: {error}", pending.id);
            }
            continue;
        }
        // An alert queued before the site was bound (or by an older version) gets it now; a
        // ping's body is the run's result, as it is.
        let body = match pending.url {
            Some(_) => pending.body.clone(),
            None => serde_json::from_str::<Value>(&pending.body).map_or_else(
                |_| pending.body.clone(),
                |alert| with_site(&alert).to_string(),
            ),
        };
        let result = webhook::post_once(destination, &body, REQUEST_TIMEOUT);
        // A ping URL may carry the monitor's key: the log names the kind of peer only.
        let peer = if pending.url.is_some() {
            "the ping endpoint"
        } else {
            "the webhook"
        };
        let recorded = match &result {
            Ok(_) => alerts::delivered(store, pending.id, clock.now()),
            Err(error @ PostError::Refused(_)) => {
                log::warn!(
                    "alert {}: {peer} refused it ({error}); giving up",
                    pending.id
                );
                alerts::abandoned(store, pending.id, &error.to_string(), clock.now())
            }
            Err(error) => {
                log::warn!(
                    "alert {}: {peer} failed ({error}); a later delivery retries",
                    pending.id
                );
                unavailable.insert(server(destination));
                alerts::failed(store, pending.id, &error.to_string())
            }
        };
        if let Err(error) = recorded {
            log::warn!("alert {}: recording its delivery: {error}", pending.id);
        }
        attempts.push((pending.id, result));
    }
    attempts
}

/// The alert path of one process: logs alerts and delivers the outbox (alerts and pings)
/// off the caller's thread.
#[derive(Clone)]
pub struct Alerts {
    store: Store,
    webhook: Option<String>,
    ping: Option<String>,
    clock: Arc<dyn Clock>,
    delivering: Arc<AtomicBool>,
    /// Set when a delivery was asked for while one was under way: that one walks again.
    asked_again: Arc<AtomicBool>,
}

impl Alerts {
    pub fn new(store: Store, config: &Config, clock: Arc<dyn Clock>) -> Alerts {
        Alerts {
            store,
            webhook: config.alerts.webhook.clone(),
            ping: config.alerts.ping.clone(),
            clock,
            delivering: Arc::new(AtomicBool::new(false)),
            asked_again: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether alerts go to a webhook, and so into the outbox.
    pub fn outbox(&self) -> Outbox {
        Outbox::for_webhook(self.webhook.as_ref())
    }

    /// Logs alerts already committed to the store and starts their delivery, with what else a
    /// run queued (its ping, an alert it raised itself).
    pub fn announce(&self, raised: &[Value]) {
        raised.iter().for_each(log);
        let queued = || alerts::pending(&self.store).unwrap_or(0) > 0;
        if !raised.is_empty() || self.ping.is_some() || (self.webhook.is_some() && queued()) {
            self.deliver_in_background();
        }
    }

    fn destinations(&self) -> Destinations<'_> {
        Destinations {
            webhook: self.webhook.as_deref(),
            ping: self.ping.as_deref(),
        }
    }

    fn has_destination(&self) -> bool {
        self.webhook.is_some() || self.ping.is_some()
    }

    /// Delivers the outbox on a thread of its own; if one is already at it, that one walks the
    /// outbox again once done, so what was queued meanwhile does not wait for a later delivery.
    pub fn deliver_in_background(&self) {
        if !self.has_destination() {
            return;
        }
        self.asked_again.store(true, Ordering::SeqCst);
        if self.delivering.swap(true, Ordering::SeqCst) {
            return;
        }
        let alerts = self.clone();
        let spawned = std::thread::Builder::new()
            .name("alert-delivery".into())
            .spawn(move || {
                loop {
                    alerts.asked_again.store(false, Ordering::SeqCst);
                    alerts.drain(Duration::from_secs(60));
                    alerts.delivering.store(false, Ordering::SeqCst);
                    if !alerts.asked_again.load(Ordering::SeqCst)
                        || alerts.delivering.swap(true, Ordering::SeqCst)
                    {
                        break;
                    }
                }
            });
        if let Err(error) = spawned {
            self.delivering.store(false, Ordering::SeqCst);
            log::warn!("alert delivery: no thread ({error}); a later delivery sends them");
        }
    }

    /// Delivers the outbox on this thread, within `budget`, after any delivery of this
    /// process already under way (a process about to exit would cut that one off).
    pub fn deliver_now(&self, budget: Duration) {
        if !self.has_destination() {
            return;
        }
        let started = Instant::now();
        while self.delivering.swap(true, Ordering::SeqCst) {
            if started.elapsed() >= budget {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.drain(budget.saturating_sub(started.elapsed()));
        self.delivering.store(false, Ordering::SeqCst);
    }

    fn drain(&self, budget: Duration) {
        deliver_pending(
            &self.store,
            self.destinations(),
            self.clock.as_ref(),
            budget,
        );
    }
}

/// The conditions a run's end opens or closes, inside the transaction that records the end:
/// failing after [`FAILING_AFTER`] failed runs in a row; failing, overdue and overrun closed by
/// a run that finishes (ok or partial). Answers the alerts raised (already queued).
pub fn run_ended(
    conn: &Connection,
    job: &str,
    run_id: i64,
    status: RunStatus,
    error: Option<&str>,
    outbox: Outbox,
    now: DateTime<Utc>,
) -> Result<Vec<Value>, StoreError> {
    let mut raised = Vec::new();
    let overrun = alerts::close_in(
        conn,
        job,
        ConditionKind::Overrun,
        None,
        |condition| {
            job_alert(
                JOB_OVERRUN_RESOLVED,
                job,
                format!(
                    "{job}: the overrunning run {} is over",
                    condition.run_id.unwrap_or(run_id)
                ),
                json!({"runId": condition.run_id, "since": condition.since}),
                now,
            )
        },
        outbox,
        now,
    )?;
    raised.extend(overrun);
    match status {
        RunStatus::Failed => {
            let statuses = alerts::recent_statuses_in(conn, job, FAILING_AFTER)?;
            let failing = statuses.len() as i64 == FAILING_AFTER
                && statuses.iter().all(|status| status == "failed");
            if failing {
                let alert = job_alert(
                    JOB_FAILING,
                    job,
                    format!(
                        "{job}: the last {FAILING_AFTER} runs failed (run {run_id}: {})",
                        error.unwrap_or("failed")
                    ),
                    json!({"runId": run_id, "failedRuns": FAILING_AFTER, "error": error}),
                    now,
                );
                if alerts::open_in(
                    conn,
                    job,
                    ConditionKind::Failing,
                    now,
                    Some(run_id),
                    &alert,
                    outbox,
                    now,
                )? {
                    raised.push(alert);
                }
            }
        }
        RunStatus::Ok | RunStatus::Partial => {
            let ended = status.as_str();
            for (kind, alert_type, what) in [
                (ConditionKind::Failing, JOB_FAILING_RESOLVED, "failing"),
                (ConditionKind::Overdue, JOB_RECOVERED, "overdue"),
            ] {
                let closed = alerts::close_in(
                    conn,
                    job,
                    kind,
                    None,
                    |condition| {
                        job_alert(
                            alert_type,
                            job,
                            format!(
                                "{job}: run {run_id} ended {ended}; {what} since {}",
                                condition.since
                            ),
                            json!({"runId": run_id, "status": ended, "since": condition.since}),
                            now,
                        )
                    },
                    outbox,
                    now,
                )?;
                raised.extend(closed);
            }
        }
        RunStatus::Running => {}
    }
    Ok(raised)
}

/// Opens the overrun condition of a run still going past its deadline; answers the alert
/// when it opened now (already queued).
pub fn run_overran(
    store: &Store,
    job: &str,
    run_id: i64,
    deadline: Duration,
    running_for: Duration,
    outbox: Outbox,
    now: DateTime<Utc>,
) -> Result<Option<Value>, StoreError> {
    let alert = job_alert(
        JOB_OVERRUN,
        job,
        format!(
            "{job}: run {run_id} has been going {}s, past its deadline of {}s; it stops at its next safe point",
            running_for.as_secs(),
            deadline.as_secs()
        ),
        json!({"runId": run_id, "deadlineSeconds": deadline.as_secs(), "runningSeconds": running_for.as_secs()}),
        now,
    );
    let opened = alerts::open_condition(
        store,
        job,
        ConditionKind::Overrun,
        now,
        Some(run_id),
        &alert,
        outbox,
        now,
    )?;
    Ok(opened.then_some(alert))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use chrono::TimeZone;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap()
    }

    fn end(store: &Store, status: RunStatus, second: u32) -> Vec<Value> {
        let conn = store.conn().unwrap();
        conn.execute(
            "INSERT INTO job_runs (job, trigger, status, started_at, holder)
             VALUES ('siem-ship', 'cli', ?1, '2026-01-01T00:00:00.000Z', 'h')",
            [status.as_str()],
        )
        .unwrap();
        let run_id = conn.last_insert_rowid();
        run_ended(
            &conn,
            "siem-ship",
            run_id,
            status,
            Some("nothing shipped"),
            Outbox::Queue,
            at(second),
        )
        .unwrap()
    }

    #[test]
    fn failing_fires_once_after_three_failures_and_resolves_on_success() {
        let (_dir, store) = temp_store();
        assert!(end(&store, RunStatus::Failed, 1).is_empty());
        assert!(end(&store, RunStatus::Failed, 2).is_empty());
        let third = end(&store, RunStatus::Failed, 3);
        assert_eq!(third.len(), 1);
        assert_eq!(third[0]["type"], JOB_FAILING);
        assert_eq!(third[0]["job"], "siem-ship");
        assert!(
            third[0]["summary"]
                .as_str()
                .unwrap()
                .contains("nothing shipped")
        );
        assert!(
            end(&store, RunStatus::Failed, 4).is_empty(),
            "once per condition"
        );
        let resolved = end(&store, RunStatus::Ok, 5);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0]["type"], JOB_FAILING_RESOLVED);
        assert_eq!(resolved[0]["since"], "2026-01-01T00:00:03.000Z");
        assert!(end(&store, RunStatus::Ok, 6).is_empty());
        // A partial run is no failure: the count starts again.
        end(&store, RunStatus::Failed, 7);
        end(&store, RunStatus::Partial, 8);
        end(&store, RunStatus::Failed, 9);
        assert!(end(&store, RunStatus::Failed, 10).is_empty());
        assert_eq!(alerts::pending(&store).unwrap(), 2);
    }

    #[test]
    fn an_overrun_fires_once_and_resolves_when_the_job_next_ends() {
        let (_dir, store) = temp_store();
        let overran = |second| {
            run_overran(
                &store,
                "siem-ship",
                41,
                Duration::from_secs(1),
                Duration::from_secs(3),
                Outbox::Skip,
                at(second),
            )
            .unwrap()
        };
        assert_eq!(overran(3).unwrap()["type"], JOB_OVERRUN);
        assert!(overran(4).is_none());
        let ended = end(&store, RunStatus::Failed, 5);
        assert_eq!(ended[0]["type"], JOB_OVERRUN_RESOLVED);
        assert_eq!(ended[0]["runId"], 41);
        assert_eq!(alerts::pending(&store).unwrap(), 1, "only the queued ones");
    }
}
