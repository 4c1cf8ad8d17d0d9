//! Elasticsearch bulk API: `POST /_bulk` with `Authorization: ApiKey <key>` and an NDJSON
//! body of `create` actions, each followed by its document.
//!
//! `_id` is the audit row's id, so a replay is idempotent: an item answered 409 was already
//! indexed. A 200 answer can still carry per-item failures (`"errors": true`); items refused
//! with 429 or 5xx are sent again, other refusals can never succeed and are dead-lettered.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::intake::{Encoding, Intake, Reply, Retry, is_retryable};
use super::{AuditRow, Fate, REQUEST_BYTES, Shipment, fitting};
use crate::clock::to_store_text;
use crate::config::siem::{DEFAULT_ELASTIC_INDEX, SiemSettings};

/// The action line and the document for one row, each `\n`-terminated; `host.name` is the
/// site (ECS), unless the row has a `host` of its own.
pub fn item(settings: &SiemSettings, host: &str, row: &AuditRow) -> String {
    let index = settings.index.as_deref().unwrap_or(DEFAULT_ELASTIC_INDEX);
    let action = json!({"create": {"_index": index, "_id": row.id}});
    let mut document = Map::new();
    if let Some(time) = row.time() {
        document.insert("@timestamp".into(), json!(to_store_text(time)));
    }
    document.insert("host".into(), json!({"name": host}));
    for (name, value) in &row.fields {
        document.insert(name.clone(), value.clone());
    }
    format!("{action}\n{}\n", Value::Object(document))
}

#[derive(Deserialize)]
struct BulkAnswer {
    items: Vec<Map<String, Value>>,
}

/// One item's result, whatever its action key.
#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

pub fn deliver(intake: &Intake<'_>, retry: &mut Retry<'_>, rows: &[AuditRow]) -> Shipment {
    let items: Vec<String> = rows
        .iter()
        .map(|row| item(intake.settings, &intake.host, row))
        .collect();
    let mut shipment = Shipment::new(rows.len());
    let mut budget = REQUEST_BYTES;
    loop {
        let unsettled = shipment.unsettled();
        if unsettled.is_empty() {
            return shipment;
        }
        let fits = fitting(unsettled.iter().map(|&index| items[index].len()), budget);
        let pending = &unsettled[..fits];
        if let Some(why) = retry.stopping() {
            return shipment.stop(why);
        }
        let body = pending
            .iter()
            .map(|&index| items[index].as_str())
            .collect::<String>()
            .into_bytes();
        let answer = match intake.post("application/x-ndjson", Encoding::Identity, body) {
            Reply::Answer(answer) => answer,
            Reply::NoAnswer(error) => {
                if retry.again(&error, None) {
                    continue;
                }
                return shipment.stop(error);
            }
        };
        if answer.status == 413 {
            match pending {
                [index] => shipment.settle(*index, Fate::too_large(&answer, &items[*index])),
                _ => budget /= 2,
            }
            continue;
        }
        if !answer.is_success() {
            let why = format!("elastic answered {}", answer.summary());
            if is_retryable(answer.status) && retry.again(&why, answer.retry_after) {
                continue;
            }
            return shipment.stop(why);
        }
        let results = match results(&answer.body, pending.len()) {
            Ok(results) => results,
            Err(why) => return shipment.stop(why),
        };
        let mut throttled = 0;
        let mut refusal = None;
        for (&index, result) in pending.iter().zip(results) {
            match result.status {
                200 | 201 | 409 => shipment.settle(index, Fate::Delivered),
                status if is_retryable(status) => throttled += 1,
                // Rights, a missing index, a read-only cluster: every row would fail alike,
                // so delivery stops with the row unsettled instead of dead-lettering them all.
                status if !blames_document(&result) => {
                    refusal.get_or_insert(format!(
                        "elastic refused an item: {status} {}",
                        describe(&result)
                    ));
                }
                status => {
                    let reason = describe(&result);
                    shipment.settle(
                        index,
                        Fate::DeadLetter {
                            status: Some(status),
                            reason,
                            event: items[index].clone(),
                        },
                    );
                }
            }
        }
        if let Some(why) = refusal {
            return shipment.stop(why);
        }
        if throttled < pending.len() {
            retry.progressed();
        }
        if throttled > 0 {
            let why = format!("elastic refused {throttled} items with 429/5xx");
            if !retry.again(&why, answer.retry_after) {
                return shipment.stop(why);
            }
        }
    }
}

/// The per-item results of a 200 answer, one per item sent, in order.
fn results(body: &[u8], sent: usize) -> Result<Vec<ItemResult>, String> {
    let answer: BulkAnswer = serde_json::from_slice(body)
        .map_err(|error| format!("elastic's bulk answer is not readable: {error}"))?;
    if answer.items.len() != sent {
        return Err(format!(
            "elastic answered {} items for {sent} sent",
            answer.items.len()
        ));
    }
    answer
        .items
        .into_iter()
        .map(|item| {
            let result = item
                .into_iter()
                .next()
                .map(|(_action, result)| result)
                .ok_or("elastic answered an empty item")?;
            serde_json::from_value(result)
                .map_err(|error| format!("elastic answered an unreadable item: {error}"))
        })
        .collect()
}

/// Error types that are about the document itself: sending it again can never succeed.
const DOCUMENT_FAULTS: [&str; 4] = [
    "mapper_parsing_exception",
    "document_parsing_exception",
    "illegal_argument_exception",
    "strict_dynamic_mapping_exception",
];

fn blames_document(result: &ItemResult) -> bool {
    let kind = result
        .error
        .as_ref()
        .and_then(|error| error["type"].as_str())
        .unwrap_or_default();
    result.status == 400 && DOCUMENT_FAULTS.contains(&kind)
}

/// `type: reason` from an item's error object.
fn describe(result: &ItemResult) -> String {
    let Some(error) = &result.error else {
        return "refused without an error".into();
    };
    let kind = error["type"].as_str().unwrap_or("error");
    let reason = error["reason"].as_str().unwrap_or_default();
    format!("elastic: {kind}: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::siem::Backend;
    use crate::siem::test_support::{row, settings};

    /// A body as the bulk API reference shows it: action and source lines, newline-terminated.
    #[test]
    fn items_are_create_actions_keyed_by_the_row_id() {
        let settings = settings(Backend::Elastic);
        let body = item(&settings, "edge-1", &row("a1", "2026-11-23T10:15:30.123Z"));
        assert_eq!(
            body,
            concat!(
                r#"{"create":{"_id":"a1","_index":"edgecron-audit"}}"#,
                "\n",
                r#"{"@timestamp":"2026-11-23T10:15:30.123Z","action":"user.login","actor":"alice","#,
                r#""created_at":"2026-11-23T10:15:30.123Z","details":{"ip":"10.0.0.7"},"host":{"name":"edge-1"},"id":"a1","#,
                r#""target":"user:42","tenant_id":"acme"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn a_bulk_answer_is_read_item_by_item() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"a","_id":"1","status":201,"result":"created"}},
            {"create":{"_index":"a","_id":"2","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[2]: version conflict"}}},
            {"create":{"_index":"a","_id":"3","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [details]"}}}
        ]}"#;
        let results = results(body, 3).unwrap();
        let statuses: Vec<u16> = results.iter().map(|result| result.status).collect();
        assert_eq!(statuses, [201, 409, 400]);
        assert_eq!(
            describe(&results[2]),
            "elastic: mapper_parsing_exception: failed to parse field [details]"
        );
        assert!(super::results(body, 2).is_err());
    }
}
