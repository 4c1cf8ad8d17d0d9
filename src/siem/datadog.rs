//! Datadog logs intake: `POST /api/v2/logs` with `DD-API-KEY`, a gzipped JSON array of log
//! entries, answered 202.
//!
//! Its limits shape the batches: at most 1,000 entries and 5 MB (uncompressed) per request,
//! 1 MB per entry (larger ones are truncated, so they are dead-lettered whole instead), and
//! entries older than 18 hours are dropped on arrival (so they are archived instead). A 400
//! names no entry, so a refused request is split in halves until the bad entry stands alone.

use std::collections::VecDeque;
use std::io::Write;

use chrono::{DateTime, Duration, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

use super::intake::{Encoding, Intake, Reply, Retry, is_retryable};
use super::{AuditRow, Fate, Shipment};
use crate::config::siem::SiemSettings;

const MAX_ENTRIES: usize = 1_000;
const MAX_PAYLOAD_BYTES: usize = 5_000_000;
const MAX_ENTRY_BYTES: usize = 1_000_000;
/// Datadog takes entries up to 18 hours old; an hour's margin covers retries and clock skew.
pub const MAX_AGE: Duration = Duration::hours(17);

const SERVICE: &str = "edgecron";
const DEFAULT_SOURCE: &str = "edgecron";

/// One log entry: every field of the audit row, and Datadog's reserved attributes (set last,
/// so a column of the same name cannot turn into, say, the log's time or service).
pub fn entry(settings: &SiemSettings, host: &str, row: &AuditRow) -> String {
    let mut entry = row.fields.clone();
    entry.insert(
        "ddsource".into(),
        json!(settings.sourcetype.as_deref().unwrap_or(DEFAULT_SOURCE)),
    );
    entry.insert("hostname".into(), json!(host));
    entry.insert("service".into(), json!(SERVICE));
    let action = row.fields.get("action").and_then(Value::as_str);
    entry.insert(
        "message".into(),
        json!(format!("audit {}", action.unwrap_or("event"))),
    );
    if let Some(time) = row.time() {
        entry.insert("timestamp".into(), json!(time.timestamp_millis()));
    }
    Value::Object(entry).to_string()
}

/// A JSON array of already serialised entries, gzipped.
pub fn payload(entries: &[&str]) -> Vec<u8> {
    let mut json =
        Vec::with_capacity(entries.iter().map(|entry| entry.len() + 1).sum::<usize>() + 2);
    json.push(b'[');
    for (index, entry) in entries.iter().enumerate() {
        if index > 0 {
            json.push(b',');
        }
        json.extend_from_slice(entry.as_bytes());
    }
    json.push(b']');
    let mut encoder = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(&json);
    encoder.finish().unwrap_or_default()
}

pub fn deliver(
    intake: &Intake<'_>,
    retry: &mut Retry<'_>,
    rows: &[AuditRow],
    now: DateTime<Utc>,
) -> Shipment {
    let entries: Vec<String> = rows
        .iter()
        .map(|row| entry(intake.settings, &intake.host, row))
        .collect();
    let mut shipment = Shipment::new(rows.len());
    let oldest_accepted = now - MAX_AGE;
    for (index, row) in rows.iter().enumerate() {
        if row.time().is_some_and(|time| time < oldest_accepted) {
            shipment.settle(index, Fate::Archive);
        } else if entries[index].len() > MAX_ENTRY_BYTES {
            shipment.settle(
                index,
                Fate::DeadLetter {
                    status: None,
                    reason: format!(
                        "datadog: entry of {} bytes is over the intake's 1 MB limit",
                        entries[index].len()
                    ),
                    event: entries[index].clone(),
                },
            );
        }
    }
    let mut requests: VecDeque<Vec<usize>> = requests(&shipment.unsettled(), &entries).into();
    // Entries refused alone. Datadog's 400 names no entry and our entries are well-formed
    // JSON, so a refusal only blames an entry when the intake took others from the batch;
    // if it took none, the endpoint itself is wrong and nothing is dead-lettered.
    let mut refused_alone = Vec::new();
    let mut accepted_any = false;
    while let Some(request) = requests.pop_front() {
        if let Some(why) = retry.stopping() {
            return shipment.stop(why);
        }
        let body: Vec<&str> = request
            .iter()
            .map(|&index| entries[index].as_str())
            .collect();
        let answer = match intake.post("application/json", Encoding::Gzip, payload(&body)) {
            Reply::Answer(answer) => answer,
            Reply::NoAnswer(error) => {
                if retry.again(&error, None) {
                    requests.push_front(request);
                    continue;
                }
                return shipment.stop(error);
            }
        };
        // The logs intake answers 202; another 2xx is not the intake and acknowledges nothing.
        if answer.status == 202 {
            request
                .iter()
                .for_each(|&index| shipment.settle(index, Fate::Delivered));
            accepted_any = true;
            retry.progressed();
            continue;
        }
        if answer.is_success() {
            return shipment.stop(format!(
                "datadog answered {} instead of 202; is SIEM_ENDPOINT the logs intake?",
                answer.summary()
            ));
        }
        if matches!(answer.status, 400 | 413) {
            if let [index] = request[..] {
                refused_alone.push((index, answer.status, answer.summary()));
            } else {
                let (first, second) = request.split_at(request.len() / 2);
                requests.push_front(second.to_vec());
                requests.push_front(first.to_vec());
            }
            continue;
        }
        let why = format!("datadog answered {}", answer.summary());
        if is_retryable(answer.status) && retry.again(&why, answer.retry_after) {
            requests.push_front(request);
            continue;
        }
        return shipment.stop(why);
    }
    if !refused_alone.is_empty() && !accepted_any {
        let (_, _, summary) = &refused_alone[0];
        return shipment.stop(format!(
            "datadog refused every entry of the batch ({summary}); check SIEM_ENDPOINT"
        ));
    }
    for (index, status, summary) in refused_alone {
        shipment.settle(
            index,
            Fate::DeadLetter {
                status: Some(status),
                reason: format!("datadog refused the entry: {summary}"),
                event: entries[index].clone(),
            },
        );
    }
    shipment
}

/// Groups entries, in order, into requests within the intake's count and size limits.
fn requests(indexes: &[usize], entries: &[String]) -> Vec<Vec<usize>> {
    let mut requests = Vec::new();
    let mut current = Vec::new();
    // The array's brackets, then each entry and its comma.
    let mut bytes = 2;
    for &index in indexes {
        let size = entries[index].len() + 1;
        if !current.is_empty() && (current.len() == MAX_ENTRIES || bytes + size > MAX_PAYLOAD_BYTES)
        {
            requests.push(std::mem::take(&mut current));
            bytes = 2;
        }
        bytes += size;
        current.push(index);
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;
    use crate::config::siem::Backend;
    use crate::siem::test_support::{row, settings};

    /// A body as Datadog's "Send logs" reference shows it: an array of entries with
    /// `ddsource`, `hostname`, `service`, `message` and custom attributes, gzipped.
    #[test]
    fn entries_form_a_gzipped_json_array() {
        let settings = settings(Backend::Datadog);
        let rows = [row("a1", "2026-11-23T10:15:30.123Z")];
        let entries: Vec<String> = rows
            .iter()
            .map(|row| entry(&settings, "web-1", row))
            .collect();
        let body: Vec<&str> = entries.iter().map(String::as_str).collect();
        let mut json = String::new();
        GzDecoder::new(&payload(&body)[..])
            .read_to_string(&mut json)
            .unwrap();
        assert_eq!(
            json,
            concat!(
                r#"[{"action":"user.login","actor":"alice","created_at":"2026-11-23T10:15:30.123Z","#,
                r#""ddsource":"edgecron","details":{"ip":"10.0.0.7"},"hostname":"web-1","id":"a1","#,
                r#""message":"audit user.login","service":"edgecron","target":"user:42","#,
                r#""tenant_id":"acme","timestamp":1795428930123}]"#
            )
        );
    }

    #[test]
    fn requests_respect_the_entry_count_and_payload_size() {
        let small: Vec<String> = (0..2_500).map(|_| "x".repeat(10)).collect();
        let indexes: Vec<usize> = (0..small.len()).collect();
        let sizes: Vec<usize> = requests(&indexes, &small).iter().map(Vec::len).collect();
        assert_eq!(sizes, [1_000, 1_000, 500]);

        let large: Vec<String> = (0..12).map(|_| "x".repeat(900_000)).collect();
        let indexes: Vec<usize> = (0..large.len()).collect();
        let groups = requests(&indexes, &large);
        assert!(groups.iter().all(|group| group.len() <= 5));
        assert_eq!(groups.concat(), indexes);
    }
}
