//! Shipping audit-log rows to a SIEM: the configuration, the HTTP intake with its retry
//! policy, one module per backend's wire format, and the ledger (batches in commit order, and
//! dead letters).
//!
//! Each backend takes a batch of rows and settles them in order: delivered (acknowledged by
//! the intake), dead-lettered (refused for good), or to be archived (Datadog's age limit).
//! The job takes only the settled prefix, so an unacknowledged row is always sent again and
//! none is skipped.

mod datadog;
mod elastic;
pub mod intake;
mod splunk;

use chrono::{DateTime, Utc};

pub use crate::config::siem::{Backend, Siem};
pub use crate::store::siem_ledger::AuditRow;
use intake::{Intake, Retry};

/// What became of one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// The intake acknowledged it (or, for Elastic, already had it).
    Delivered,
    /// The intake refused it for good; kept in `siem_dead_letters` with the reason.
    DeadLetter {
        status: Option<u16>,
        reason: String,
        event: String,
    },
    /// Too old for the intake (Datadog); written to an NDJSON archive instead.
    Archive,
}

impl Fate {
    /// An event the intake refuses as too large (413) even when sent alone.
    fn too_large(answer: &intake::Answer, event: &str) -> Fate {
        Fate::DeadLetter {
            status: Some(answer.status),
            reason: format!("too large for the intake even alone: {}", answer.summary()),
            event: event.to_string(),
        }
    }
}

/// A batch's outcome: a fate for each row settled so far, in row order, and why delivery
/// stopped before the end, if it did.
#[derive(Debug, Default)]
pub struct Shipment {
    fates: Vec<Option<Fate>>,
    pub stopped: Option<String>,
}

impl Shipment {
    fn new(rows: usize) -> Shipment {
        Shipment {
            fates: vec![None; rows],
            stopped: None,
        }
    }

    fn settle(&mut self, index: usize, fate: Fate) {
        self.fates[index] = Some(fate);
    }

    fn is_settled(&self, index: usize) -> bool {
        self.fates[index].is_some()
    }

    fn unsettled(&self) -> Vec<usize> {
        (0..self.fates.len())
            .filter(|&index| !self.is_settled(index))
            .collect()
    }

    fn stop(mut self, why: String) -> Shipment {
        self.stopped = Some(why);
        self
    }

    /// The fates of the rows before the first unsettled one: how far the cursor may move.
    pub fn settled_prefix(&self) -> Vec<&Fate> {
        self.fates.iter().map_while(Option::as_ref).collect()
    }
}

/// The largest request body sent to an intake that states no limit (Splunk, Elastic); halved
/// after a 413 until an event stands alone, which is then too large for that intake.
const REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// How many of the next items, by their `sizes`, fit in `budget` bytes: at least one.
fn fitting(sizes: impl Iterator<Item = usize>, budget: usize) -> usize {
    let (mut count, mut total) = (0, 0);
    for size in sizes {
        if count > 0 && total + size > budget {
            break;
        }
        total += size;
        count += 1;
    }
    count
}

/// Delivers `rows` (in cursor order) to the configured backend.
pub fn deliver(
    intake: &Intake<'_>,
    retry: &mut Retry<'_>,
    rows: &[AuditRow],
    now: DateTime<Utc>,
) -> Shipment {
    match intake.settings.backend {
        Backend::Splunk => splunk::deliver(intake, retry, rows),
        Backend::Datadog => datadog::deliver(intake, retry, rows, now),
        Backend::Elastic => elastic::deliver(intake, retry, rows),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_take_what_fits_and_never_nothing() {
        assert_eq!(fitting([4, 4, 4].into_iter(), 8), 2);
        assert_eq!(fitting([9, 1].into_iter(), 8), 1);
        assert_eq!(fitting(std::iter::empty(), 8), 0);
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::time::Duration;

    use serde_json::{Map, json};

    use super::AuditRow;
    use crate::config::Secret;
    use crate::config::siem::{Backend, SiemSettings, SiemStart};

    pub fn settings(backend: Backend) -> SiemSettings {
        SiemSettings {
            backend,
            endpoint: "http://127.0.0.1:1".into(),
            api_key: Secret::new("key".into()),
            index: None,
            sourcetype: None,
            request_timeout: Duration::from_secs(5),
            splunk_ack: false,
            start: SiemStart::Beginning,
        }
    }

    /// An audit row as the ledger reads it.
    pub fn row(id: &str, created_at: &str) -> AuditRow {
        let mut fields = Map::new();
        fields.insert("id".into(), json!(id));
        fields.insert("tenant_id".into(), json!("acme"));
        fields.insert("actor".into(), json!("alice"));
        fields.insert("action".into(), json!("user.login"));
        fields.insert("target".into(), json!("user:42"));
        fields.insert("details".into(), json!({"ip": "10.0.0.7"}));
        fields.insert("created_at".into(), json!(created_at));
        AuditRow {
            id: id.into(),
            created_at: created_at.into(),
            fields,
        }
    }
}
