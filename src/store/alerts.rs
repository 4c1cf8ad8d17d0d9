//! Alert conditions in force per job (overdue, failing, overrun) and the outbox of alert
//! webhook deliveries: the SQL of both. A condition is one row, inserted when it starts and
//! deleted when it ends, each change committed with the outbox row of the alert it raises, so
//! an alert fires once per condition whichever process sees it, across restarts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;

use super::{Store, StoreError};
use crate::clock::to_store_text;

/// Whether a condition's alert is also queued for the webhook, or only logged (none is set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbox {
    Queue,
    Skip,
}

impl Outbox {
    /// Queued when a webhook is configured to take the alerts, skipped otherwise.
    pub fn for_webhook<T>(webhook: Option<T>) -> Outbox {
        match webhook {
            Some(_) => Outbox::Queue,
            None => Outbox::Skip,
        }
    }
}

/// A kind of condition a job can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionKind {
    /// A scheduled or expected run did not start within its grace.
    Overdue,
    /// The job's last runs failed.
    Failing,
    /// A run is going past its deadline.
    Overrun,
}

impl ConditionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionKind::Overdue => "overdue",
            ConditionKind::Failing => "failing",
            ConditionKind::Overrun => "overrun",
        }
    }
}

/// A condition in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub job: String,
    pub kind: String,
    /// When it started (overdue: the first due time that was not served).
    pub since: String,
    pub run_id: Option<i64>,
    /// The alert that opened it.
    pub detail: Value,
}

/// An alert waiting for the webhook, or a ping for the monitor.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingAlert {
    pub id: i64,
    pub body: String,
    pub created_at: String,
    /// Where it goes: a ping's own URL; none for an alert (the webhook).
    pub url: Option<String>,
}

/// Opens `kind` for `job` unless it is in force; when it opens, `alert` is queued for the
/// webhook (with [`Outbox::Queue`]). Answers whether it opened now.
#[allow(clippy::too_many_arguments)]
pub fn open_in(
    conn: &Connection,
    job: &str,
    kind: ConditionKind,
    since: DateTime<Utc>,
    run_id: Option<i64>,
    alert: &Value,
    outbox: Outbox,
    now: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let opened = conn.execute(
        "INSERT OR IGNORE INTO job_alert_conditions (job, kind, since, run_id, detail)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        (
            job,
            kind.as_str(),
            to_store_text(since),
            run_id,
            alert.to_string(),
        ),
    )? == 1;
    if opened && outbox == Outbox::Queue {
        enqueue_in(conn, alert, now)?;
    }
    Ok(opened)
}

/// Closes `kind` for `job` if it is in force (and, when given, was opened for run `run_id`);
/// the alert `alert_for` makes of it is queued for the webhook (with [`Outbox::Queue`]) and returned.
pub fn close_in(
    conn: &Connection,
    job: &str,
    kind: ConditionKind,
    run_id: Option<i64>,
    alert_for: impl FnOnce(&Condition) -> Value,
    outbox: Outbox,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<Value>> {
    let Some(condition) = condition_in(conn, job, kind)? else {
        return Ok(None);
    };
    if run_id.is_some() && condition.run_id != run_id {
        return Ok(None);
    }
    conn.execute(
        "DELETE FROM job_alert_conditions WHERE job = ?1 AND kind = ?2",
        (job, kind.as_str()),
    )?;
    let alert = alert_for(&condition);
    if outbox == Outbox::Queue {
        enqueue_in(conn, &alert, now)?;
    }
    Ok(Some(alert))
}

fn condition_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Condition> {
    let detail: String = row.get(4)?;
    Ok(Condition {
        job: row.get(0)?,
        kind: row.get(1)?,
        since: row.get(2)?,
        run_id: row.get(3)?,
        detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
    })
}

fn condition_in(
    conn: &Connection,
    job: &str,
    kind: ConditionKind,
) -> rusqlite::Result<Option<Condition>> {
    conn.query_row(
        "SELECT job, kind, since, run_id, detail FROM job_alert_conditions
          WHERE job = ?1 AND kind = ?2",
        (job, kind.as_str()),
        condition_from_row,
    )
    .optional()
}

/// Queues `alert` for the webhook.
pub fn enqueue_in(conn: &Connection, alert: &Value, now: DateTime<Utc>) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO alert_outbox (type, job, body, created_at) VALUES (?1, ?2, ?3, ?4)",
        (
            alert["type"].as_str().unwrap_or(""),
            alert["job"].as_str(),
            alert.to_string(),
            to_store_text(now),
        ),
    )?;
    Ok(conn.last_insert_rowid())
}

/// Queues a ping: `body` POSTed to `url` (`kind` names it, as an alert's type does).
pub fn enqueue_ping_in(
    conn: &Connection,
    kind: &str,
    job: &str,
    url: &str,
    body: &str,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO alert_outbox (type, job, body, url, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        (kind, job, body, url, to_store_text(now)),
    )?;
    Ok(())
}

/// The statuses of `job`'s newest finished runs, newest first.
pub fn recent_statuses_in(
    conn: &Connection,
    job: &str,
    limit: i64,
) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare_cached(
        "SELECT status FROM job_runs WHERE job = ?1 AND status <> 'running'
          ORDER BY id DESC LIMIT ?2",
    )?;
    statement
        .query_map((job, limit), |row| row.get(0))?
        .collect()
}

/// Delivered and abandoned alerts are kept this long, for an operator to look at.
const KEEP_SENT_ALERTS_DAYS: i64 = 7;

/// [`open_in`] in a transaction of its own.
#[allow(clippy::too_many_arguments)]
pub fn open_condition(
    store: &Store,
    job: &str,
    kind: ConditionKind,
    since: DateTime<Utc>,
    run_id: Option<i64>,
    alert: &Value,
    outbox: Outbox,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let opened = open_in(&tx, job, kind, since, run_id, alert, outbox, now)?;
    tx.commit()?;
    Ok(opened)
}

/// Every condition in force, oldest first.
pub fn conditions(store: &Store) -> Result<Vec<Condition>, StoreError> {
    let conn = store.conn()?;
    let mut statement = conn.prepare(
        "SELECT job, kind, since, run_id, detail FROM job_alert_conditions ORDER BY since",
    )?;
    let conditions = statement
        .query_map([], condition_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(conditions)
}

/// Queues `alert` for the webhook; answers its outbox id.
pub fn enqueue(store: &Store, alert: &Value, now: DateTime<Utc>) -> Result<i64, StoreError> {
    Ok(enqueue_in(&*store.conn()?, alert, now)?)
}

/// Takes the oldest entry after `after` that no deliverer holds, holding it for `hold` (a
/// deliverer that dies lets it go after that). A delivery walks the outbox forward, so each
/// entry is tried at most once per delivery.
pub fn claim(
    store: &Store,
    now: DateTime<Utc>,
    hold: Duration,
    after: i64,
) -> Result<Option<PendingAlert>, StoreError> {
    let until = now + chrono::Duration::from_std(hold).unwrap_or_default();
    Ok(store
        .conn()?
        .query_row(
            "UPDATE alert_outbox SET claimed_until = ?2, attempts = attempts + 1
              WHERE id = (SELECT id FROM alert_outbox
                           WHERE delivered_at IS NULL AND abandoned_at IS NULL
                             AND (claimed_until IS NULL OR claimed_until < ?1) AND id > ?3
                           ORDER BY id LIMIT 1)
          RETURNING id, body, created_at, url",
            (to_store_text(now), to_store_text(until), after),
            |row| {
                Ok(PendingAlert {
                    id: row.get(0)?,
                    body: row.get(1)?,
                    created_at: row.get(2)?,
                    url: row.get(3)?,
                })
            },
        )
        .optional()?)
}

pub fn delivered(store: &Store, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
    store.conn()?.execute(
        "UPDATE alert_outbox SET delivered_at = ?2, claimed_until = NULL, last_error = NULL
          WHERE id = ?1",
        (id, to_store_text(now)),
    )?;
    Ok(())
}

/// Releases a claimed alert after a failed post; a later delivery tries it again.
pub fn failed(store: &Store, id: i64, error: &str) -> Result<(), StoreError> {
    store.conn()?.execute(
        "UPDATE alert_outbox SET claimed_until = NULL, last_error = ?2 WHERE id = ?1",
        (id, error),
    )?;
    Ok(())
}

/// Gives up on an alert (refused by the webhook, or no longer news).
pub fn abandoned(
    store: &Store,
    id: i64,
    error: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    store.conn()?.execute(
        "UPDATE alert_outbox SET abandoned_at = ?2, claimed_until = NULL, last_error = ?3
          WHERE id = ?1",
        (id, to_store_text(now), error),
    )?;
    Ok(())
}

/// Removes delivered and abandoned alerts older than a week.
pub fn prune(store: &Store, now: DateTime<Utc>) -> Result<usize, StoreError> {
    let before = to_store_text(now - chrono::Duration::days(KEEP_SENT_ALERTS_DAYS));
    Ok(store.conn()?.execute(
        "DELETE FROM alert_outbox
          WHERE (delivered_at IS NOT NULL OR abandoned_at IS NOT NULL) AND created_at < ?1",
        [before],
    )?)
}

/// Alerts not yet delivered (nor given up).
pub fn pending(store: &Store) -> Result<i64, StoreError> {
    Ok(store.conn()?.query_row(
        "SELECT COUNT(*) FROM alert_outbox WHERE delivered_at IS NULL AND abandoned_at IS NULL",
        [],
        |row| row.get(0),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap()
    }

    #[test]
    fn a_condition_alerts_once_when_it_opens_and_once_when_it_closes() {
        let (_dir, store) = temp_store();
        let overdue = json!({"type": "job_overdue", "job": "cleanup"});
        let open = || {
            open_condition(
                &store,
                "cleanup",
                ConditionKind::Overdue,
                at(0),
                None,
                &overdue,
                Outbox::Queue,
                at(1),
            )
            .unwrap()
        };
        assert!(open());
        assert!(!open(), "already in force");
        let close = || {
            let mut conn = store.conn().unwrap();
            let tx = conn.transaction().unwrap();
            let closed = close_in(
                &tx,
                "cleanup",
                ConditionKind::Overdue,
                None,
                |condition| json!({"type": "job_recovered", "since": condition.since}),
                Outbox::Queue,
                at(2),
            )
            .unwrap();
            tx.commit().unwrap();
            closed
        };
        assert_eq!(close().unwrap()["since"], json!("2026-01-01T00:00:00.000Z"));
        assert_eq!(close(), None);
        assert_eq!(pending(&store).unwrap(), 2);

        // Deliverers take alerts oldest first, one each, and a failed one comes back.
        let first = claim(&store, at(3), Duration::from_secs(30), 0)
            .unwrap()
            .unwrap();
        let second = claim(&store, at(3), Duration::from_secs(30), 0)
            .unwrap()
            .unwrap();
        assert!(first.id < second.id);
        assert!(first.body.contains("job_overdue"));
        assert_eq!(
            claim(&store, at(3), Duration::from_secs(30), 0).unwrap(),
            None
        );
        failed(&store, first.id, "HTTP 503").unwrap();
        delivered(&store, second.id, at(4)).unwrap();
        let again = claim(&store, at(5), Duration::from_secs(30), 0)
            .unwrap()
            .unwrap();
        assert_eq!(again.id, first.id);
        delivered(&store, again.id, at(6)).unwrap();
        assert_eq!(pending(&store).unwrap(), 0);
    }
}
