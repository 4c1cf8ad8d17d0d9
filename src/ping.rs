//! Pings (`EDGECRON_PING_URL`): a healthchecks.io-style monitor is told of each run, so an
//! edge box that goes quiet is noticed from outside. `<url>/<job>/start?rid=<uuid>` as the run
//! begins, `<url>/<job>?rid=<uuid>` when it ends ok, `<url>/<job>/fail?rid=<uuid>` when it fails
//! or ends partial, the run's result as the body. Pings go through the alert outbox, so a dead
//! monitor never delays or fails a job: the end's ping is committed with the run's record.

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use crate::config::Config;
use crate::store::alerts::enqueue_ping_in;
use crate::store::runs::RunStatus;
use crate::store::{Store, StoreError};

/// Which ping of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Success,
    Fail,
}

impl Phase {
    fn kind(self) -> &'static str {
        match self {
            Phase::Start => "ping_start",
            Phase::Success => "ping_success",
            Phase::Fail => "ping_fail",
        }
    }
}

/// The pings of one run, paired by their `rid`.
pub struct RunPings {
    base: String,
    rid: String,
}

impl RunPings {
    /// A new run's pings, if `EDGECRON_PING_URL` is set.
    pub fn for_run(config: &Config) -> Option<RunPings> {
        config.alerts.ping.as_ref().map(|base| RunPings {
            base: base.clone(),
            rid: uuid::Uuid::new_v4().to_string(),
        })
    }

    /// Queues the start ping.
    pub fn queue_start(
        &self,
        store: &Store,
        job: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let conn = store.conn()?;
        self.queue(&conn, job, Phase::Start, "", now)?;
        Ok(())
    }

    /// Queues the end's ping on `conn` (inside the transaction that records the run's end).
    pub fn queue_end_in(
        &self,
        conn: &Connection,
        job: &str,
        status: RunStatus,
        result_json: &str,
        now: DateTime<Utc>,
    ) -> rusqlite::Result<()> {
        let phase = match status {
            RunStatus::Ok => Phase::Success,
            RunStatus::Partial | RunStatus::Failed | RunStatus::Running => Phase::Fail,
        };
        self.queue(conn, job, phase, result_json, now)
    }

    fn queue(
        &self,
        conn: &Connection,
        job: &str,
        phase: Phase,
        body: &str,
        now: DateTime<Utc>,
    ) -> rusqlite::Result<()> {
        let Some(url) = ping_url(&self.base, job, phase, &self.rid) else {
            return Ok(());
        };
        enqueue_ping_in(conn, phase.kind(), job, &url, body, now)
    }
}

/// `<base>/<job>[/start|/fail]?rid=<rid>`, keeping the base's own query (`?create=1`).
fn ping_url(base: &str, job: &str, phase: Phase, rid: &str) -> Option<String> {
    let mut url = url::Url::parse(base).ok()?;
    {
        let mut segments = url.path_segments_mut().ok()?;
        segments.pop_if_empty().push(job);
        match phase {
            Phase::Start => {
                segments.push("start");
            }
            Phase::Fail => {
                segments.push("fail");
            }
            Phase::Success => {}
        }
    }
    url.query_pairs_mut().append_pair("rid", rid);
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_urls_are_healthchecks_slug_urls_keeping_the_base_s_query() {
        let rid = "5b3f2a7e-0000-4000-8000-000000000001";
        assert_eq!(
            ping_url("https://hc-ping.com/KEY", "cleanup", Phase::Start, rid).unwrap(),
            format!("https://hc-ping.com/KEY/cleanup/start?rid={rid}")
        );
        assert_eq!(
            ping_url("https://hc-ping.com/KEY/", "cleanup", Phase::Success, rid).unwrap(),
            format!("https://hc-ping.com/KEY/cleanup?rid={rid}")
        );
        assert_eq!(
            ping_url(
                "https://hc-ping.com/KEY?create=1",
                "s3-sync",
                Phase::Fail,
                rid
            )
            .unwrap(),
            format!("https://hc-ping.com/KEY/s3-sync/fail?create=1&rid={rid}")
        );
    }
}
