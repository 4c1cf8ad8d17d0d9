//! One interaction row as one NDJSON line: typed fields, `payload` embedded as JSON.

use chrono::NaiveDate;
use serde_json::value::RawValue;

/// The columns of one `interaction_history` row, borrowed from a read buffer.
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

/// Appends `row` as one `\n`-terminated JSON object. A `payload` that is valid JSON is
/// embedded as it is; one that is not is kept, as a JSON string, so no row is dropped.
/// Returns whether the payload had to be kept as a string.
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
    let payload_is_json = serde_json::from_str::<&RawValue>(row.payload).is_ok();
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

/// The UTC day of a stored time: the date prefix of `...Z` and of SQLite's offset-less form,
/// otherwise the full time read and converted to UTC.
pub fn utc_day(created_at: &str) -> Option<NaiveDate> {
    let has_offset = created_at.len() > 19
        && !created_at.ends_with('Z')
        && created_at[19..].contains(['+', '-']);
    if !has_offset && let Some(day) = date_prefix(created_at) {
        return Some(day);
    }
    crate::clock::from_store_text(created_at).map(|time| time.date_naive())
}

/// `YYYY-MM-DD` at the start of `text`, read without a format parser (this runs per row).
fn date_prefix(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
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
    fn utc_days() {
        let day = |text| utc_day(text).map(|day| day.to_string());
        assert_eq!(
            day("2026-03-30T23:59:59.999Z").as_deref(),
            Some("2026-03-30")
        );
        assert_eq!(day("2026-03-30 23:59:59").as_deref(), Some("2026-03-30"));
        assert_eq!(
            day("2026-03-31T01:00:00.000+02:00").as_deref(),
            Some("2026-03-30")
        );
        assert_eq!(
            day("2026-03-30T20:00:00-05:00").as_deref(),
            Some("2026-03-31")
        );
        assert_eq!(day("yesterday"), None);
        assert_eq!(day("2026-02-30T00:00:00.000Z"), None);
        assert_eq!(day("2026-1-05T00:00:00.000Z"), None);
    }
}
