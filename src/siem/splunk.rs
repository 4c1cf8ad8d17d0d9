//! Splunk HTTP Event Collector: `POST /services/collector/event` with
//! `Authorization: Splunk <token>` and a body of stacked JSON events.
//!
//! HEC reads a batch in order and stops at the first event it cannot take; its answer's
//! `invalid-event-number` counts the events before it, which are indexed. So a refusal
//! still acknowledges a prefix, a malformed event is dead-lettered, and the rest is resent.
//!
//! With indexer acknowledgement (`SIEM_SPLUNK_ACK=true`) a 200 only says HEC took the events:
//! each request goes on the run's channel, and its rows count as shipped once
//! `/services/collector/ack` says the indexers have its `ackId`. A request not acknowledged
//! in time stops the run; its rows are sent again next run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::intake::{Encoding, Intake, Reply, Retry, is_retryable};
use super::{AuditRow, Fate, REQUEST_BYTES, Shipment, fitting};
use crate::config::siem::SiemSettings;

const SOURCE: &str = "edgecron";
const DEFAULT_SOURCETYPE: &str = "edgecron:audit";

#[derive(Serialize)]
struct HecEvent<'a> {
    /// Epoch seconds with milliseconds; omitted (HEC uses arrival time) when unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<f64>,
    host: &'a str,
    source: &'a str,
    sourcetype: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<&'a str>,
    event: &'a Map<String, Value>,
}

/// HEC's answer body, `{"text":"Invalid data format","code":6,"invalid-event-number":2}`.
#[derive(Deserialize, Default)]
struct HecAnswer {
    #[serde(default)]
    text: String,
    code: Option<i64>,
    #[serde(rename = "invalid-event-number")]
    invalid_event_number: Option<usize>,
    /// With indexer acknowledgement: the request's id on its channel.
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
}

/// `/services/collector/ack`'s answer: `{"acks":{"3":true}}`.
#[derive(Deserialize)]
struct AckStatus {
    acks: HashMap<String, bool>,
}

/// The first pause between polls of the acknowledgement endpoint, and the longest.
const FIRST_ACK_POLL: Duration = Duration::from_millis(50);
const MAX_ACK_POLL: Duration = Duration::from_secs(1);

/// HEC codes that blame the event itself (invalid data format, event field missing or
/// blank): resending it can never succeed. Other refusals (token, index) are configuration.
const EVENT_FAULTS: [i64; 3] = [6, 12, 13];

/// One event, as HEC's JSON event format has it.
pub fn event(settings: &SiemSettings, host: &str, row: &AuditRow) -> String {
    let event = HecEvent {
        time: row
            .time()
            .map(|time| time.timestamp_millis() as f64 / 1000.0),
        host,
        source: SOURCE,
        sourcetype: settings.sourcetype.as_deref().unwrap_or(DEFAULT_SOURCETYPE),
        index: settings.index.as_deref(),
        event: &row.fields,
    };
    // Strings, a number and a JSON map: serialising cannot fail.
    serde_json::to_string(&event).expect("a HEC event serialises")
}

pub fn deliver(intake: &Intake<'_>, retry: &mut Retry<'_>, rows: &[AuditRow]) -> Shipment {
    let events: Vec<String> = rows
        .iter()
        .map(|row| event(intake.settings, &intake.host, row))
        .collect();
    let mut shipment = Shipment::new(rows.len());
    let mut next = 0;
    let mut budget = REQUEST_BYTES;
    while next < rows.len() {
        if let Some(why) = retry.stopping() {
            return shipment.stop(why);
        }
        let end = next + fitting(events[next..].iter().map(String::len), budget);
        let body = events[next..end].concat().into_bytes();
        let answer = match intake.post("application/json", Encoding::Identity, body) {
            Reply::Answer(answer) => answer,
            Reply::NoAnswer(error) => {
                if retry.again(&error, None) {
                    continue;
                }
                return shipment.stop(error);
            }
        };
        let reply: HecAnswer = serde_json::from_slice(&answer.body).unwrap_or_default();
        if answer.is_success() {
            // HEC answers `{"text":"Success","code":0}`; any other 200 is not HEC (a proxy's
            // page, a wrong path) and acknowledges nothing.
            if reply.code != Some(0) {
                return shipment.stop(format!(
                    "splunk answered {} without HEC's code 0; is SIEM_ENDPOINT a HEC endpoint?",
                    answer.summary()
                ));
            }
            if intake.channel.is_some() {
                let Some(ack_id) = reply.ack_id else {
                    return shipment.stop(format!(
                        "splunk answered {} without an ackId; is indexer acknowledgement on for this token?",
                        answer.summary()
                    ));
                };
                if let Err(why) = wait_for_ack(intake, retry, ack_id) {
                    return shipment.stop(why.to_string());
                }
            }
            (next..end).for_each(|index| shipment.settle(index, Fate::Delivered));
            next = end;
            retry.progressed();
            continue;
        }
        if answer.status == 413 {
            if end - next > 1 {
                budget /= 2;
            } else {
                shipment.settle(next, Fate::too_large(&answer, &events[next]));
                next += 1;
            }
            continue;
        }
        let accepted = reply.invalid_event_number.unwrap_or(0).min(end - next);
        (next..next + accepted).for_each(|index| shipment.settle(index, Fate::Delivered));
        next += accepted;
        if accepted > 0 {
            retry.progressed();
        }
        let blames_event = reply.invalid_event_number.is_some()
            && reply.code.is_some_and(|code| EVENT_FAULTS.contains(&code));
        if answer.status == 400 && blames_event && next < end {
            let reason = format!("splunk: {} (code {})", reply.text, reply.code.unwrap_or(0));
            shipment.settle(
                next,
                Fate::DeadLetter {
                    status: Some(answer.status),
                    reason,
                    event: events[next].clone(),
                },
            );
            next += 1;
            continue;
        }
        let why = format!("splunk answered {}", answer.summary());
        if is_retryable(answer.status) && retry.again(&why, answer.retry_after) {
            continue;
        }
        return shipment.stop(why);
    }
    shipment
}

/// HEC did not confirm a request in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "splunk did not acknowledge request {ack_id} within {seconds}s; its rows are sent again next run"
)]
struct Unacknowledged {
    ack_id: u64,
    seconds: u64,
}

/// Polls HEC's acknowledgement endpoint until the indexers have request `ack_id`, for at most
/// `SIEM_TIMEOUT_SECS` (and never past the job's deadline).
fn wait_for_ack(intake: &Intake<'_>, retry: &Retry<'_>, ack_id: u64) -> Result<(), Unacknowledged> {
    let url = format!("{}/services/collector/ack", intake.settings.endpoint);
    let give_up = Instant::now() + intake.settings.request_timeout;
    let mut wait = FIRST_ACK_POLL;
    loop {
        let body = json!({ "acks": [ack_id] }).to_string().into_bytes();
        if let Reply::Answer(answer) =
            intake.post_to(&url, "application/json", Encoding::Identity, body)
            && answer.is_success()
            && let Ok(status) = serde_json::from_slice::<AckStatus>(&answer.body)
            && status.acks.get(&ack_id.to_string()) == Some(&true)
        {
            return Ok(());
        }
        if Instant::now() + wait > give_up || !retry.pause(wait) {
            return Err(Unacknowledged {
                ack_id,
                seconds: intake.settings.request_timeout.as_secs(),
            });
        }
        wait = (wait * 2).min(MAX_ACK_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::siem::Backend;
    use crate::siem::test_support::{row, settings};

    /// A body as HEC's documentation shows events: one JSON object per event, stacked.
    #[test]
    fn events_stack_in_hec_json_event_format() {
        let mut settings = settings(Backend::Splunk);
        settings.index = Some("security".into());
        let rows = [
            row("a1", "2026-11-23T10:15:30.123Z"),
            row("a2", "2026-11-23T10:15:31.000Z"),
        ];
        let body: String = rows
            .iter()
            .map(|row| event(&settings, "web-1", row))
            .collect();
        assert_eq!(
            body,
            concat!(
                r#"{"time":1795428930.123,"host":"web-1","source":"edgecron","sourcetype":"edgecron:audit","index":"security","#,
                r#""event":{"action":"user.login","actor":"alice","created_at":"2026-11-23T10:15:30.123Z","details":{"ip":"10.0.0.7"},"id":"a1","target":"user:42","tenant_id":"acme"}}"#,
                r#"{"time":1795428931.0,"host":"web-1","source":"edgecron","sourcetype":"edgecron:audit","index":"security","#,
                r#""event":{"action":"user.login","actor":"alice","created_at":"2026-11-23T10:15:31.000Z","details":{"ip":"10.0.0.7"},"id":"a2","target":"user:42","tenant_id":"acme"}}"#,
            )
        );
    }

    #[test]
    fn an_unreadable_time_is_left_to_the_intake_and_no_index_means_the_token_default() {
        let text = event(&settings(Backend::Splunk), "h", &row("x", "yesterday"));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert!(value.get("time").is_none() && value.get("index").is_none());
        assert_eq!(value["event"]["id"], "x");
    }
}
