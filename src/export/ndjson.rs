//! One interaction row as one NDJSON line: typed fields, `payload` embedded as JSON.

use chrono::NaiveDate;
use serde_json::value::RawValue;

/// The columns of one `interaction_history` row, borrowed from a read buffer; `created_at` is
/// the store's canonical UTC text of the row's instant.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub id: &'a str,
    pub tenant_id: &'a str,
    pub customer_id: &'a str,
    pub channel: &'a str,
    pub outcome: &'a str,
    pub payload: &'a str,
    pub created_at: &'a str,
}

/// The deepest nesting of arrays and objects a payload is embedded with. Deeper JSON is kept as
/// a string: readers refuse it (DuckDB past 128), and one such line fails the whole read.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// Appends `row` as one `\n`-terminated JSON object. A `payload` that is valid JSON no deeper
/// than [`MAX_PAYLOAD_DEPTH`] is embedded as it is; any other is kept, as a JSON string, so no
/// row is dropped. Returns whether the payload had to be kept as a string.
pub fn append_line(out: &mut Vec<u8>, row: &Row<'_>) -> bool {
    out.extend_from_slice(b"{\"id\":");
    push_string(out, row.id);
    out.extend_from_slice(b",\"tenant_id\":");
    push_string(out, row.tenant_id);
    out.extend_from_slice(b",\"customer_id\":");
    push_string(out, row.customer_id);
    out.extend_from_slice(b",\"channel\":");
    push_string(out, row.channel);
    out.extend_from_slice(b",\"outcome\":");
    push_string(out, row.outcome);
    out.extend_from_slice(b",\"payload\":");
    let payload_is_json = serde_json::from_str::<&RawValue>(row.payload).is_ok()
        && nesting_depth(row.payload) <= MAX_PAYLOAD_DEPTH;
    if payload_is_json {
        // RawValue accepts surrounding whitespace; a newline inside the line would split it.
        out.extend(
            row.payload
                .trim()
                .bytes()
                .filter(|byte| *byte != b'\n' && *byte != b'\r'),
        );
    } else {
        push_string(out, row.payload);
    }
    out.extend_from_slice(b",\"created_at\":");
    push_string(out, row.created_at);
    out.extend_from_slice(b"}\n");
    !payload_is_json
}

fn push_string(out: &mut Vec<u8>, value: &str) {
    // Writing to a Vec cannot fail, and serde_json escapes every string it is given.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// How deeply arrays and objects nest in valid JSON `text`.
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => {
                // Skip the string, and any escaped quote inside it.
                while let Some(inner) = bytes.next() {
                    match inner {
                        b'\\' => {
                            bytes.next();
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

/// The UTC day of a canonical time (`2026-03-30T02:00:00.000Z`), read without a format parser
/// (this runs per row).
pub fn partition_day(canonical: &str) -> Option<NaiveDate> {
    let bytes = canonical.as_bytes();
    if bytes.len() < 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        bytes[range].iter().try_fold(0u32, |value, byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + u32::from(byte - b'0'))
        })
    };
    NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(payload: &'a str, id: &'a str) -> Row<'a> {
        Row {
            id,
            tenant_id: "acme",
            customer_id: "c\"1",
            channel: "email",
            outcome: "opened",
            payload,
            created_at: "2026-03-30T02:00:00.000Z",
        }
    }

    #[test]
    fn a_line_is_one_typed_json_object_with_the_payload_embedded() {
        let mut out = Vec::new();
        let as_string = append_line(
            &mut out,
            &row("{\"campaign\": \"spring\",\n \"score\": 0.5}", "i-1"),
        );
        assert!(!as_string);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["payload"]["campaign"], "spring");
        assert_eq!(value["payload"]["score"], 0.5);
        assert_eq!(value["customer_id"], "c\"1");
        assert_eq!(value["created_at"], "2026-03-30T02:00:00.000Z");
    }

    #[test]
    fn a_payload_that_is_not_json_is_kept_as_a_string() {
        let mut out = Vec::new();
        assert!(append_line(
            &mut out,
            &row("{broken\nline", "weird\u{0}id\u{2028}")
        ));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["payload"], "{broken\nline");
        assert_eq!(value["id"], "weird\u{0}id\u{2028}");
    }

    #[test]
    fn partition_days() {
        let day = |text| partition_day(text).map(|day| day.to_string());
        assert_eq!(
            day("2026-03-30T23:59:59.999Z").as_deref(),
            Some("2026-03-30")
        );
        assert_eq!(day("yesterday"), None);
        assert_eq!(day("2026-02-30T00:00:00.000Z"), None);
    }

    #[test]
    fn a_payload_nested_deeper_than_readers_take_is_kept_as_a_string() {
        let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let embedded = |payload: &str| {
            let mut out = Vec::new();
            let as_string = append_line(&mut out, &row(payload, "i"));
            let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
            (as_string, value["payload"].is_string())
        };
        assert_eq!(embedded(&deep(MAX_PAYLOAD_DEPTH)), (false, false));
        assert_eq!(embedded(&deep(MAX_PAYLOAD_DEPTH + 1)), (true, true));
        assert_eq!(embedded(&deep(200)), (true, true));
        // Brackets inside strings do not count.
        let quoted = format!("{{\"k\": \"{}\\\"\"}}", "[".repeat(100));
        assert_eq!(embedded(&quoted), (false, false));
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":[]}],"c":"]]]"}"#), 4);
    }
}
