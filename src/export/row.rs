//! One row of an exported table as every file format takes it, and the UTC day and instant
//! its canonical time names (read without a format parser: this runs per row).

use chrono::NaiveDate;

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

/// The Unix milliseconds of a canonical time (`2026-03-30T02:00:00.123Z`).
pub fn instant_millis(canonical: &str) -> Option<i64> {
    let day = partition_day(canonical)?;
    let bytes = canonical.as_bytes();
    if bytes.len() < 24 || bytes[10] != b'T' || bytes[19] != b'.' || bytes[23] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        bytes[range].iter().try_fold(0i64, |value, byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + i64::from(byte - b'0'))
        })
    };
    let (hours, minutes, seconds) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let millis = number(20..23)?;
    if hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    let days = day
        .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1)?)
        .num_days();
    Some((((days * 24 + hours) * 60 + minutes) * 60 + seconds) * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn instants_of_canonical_times() {
        assert_eq!(instant_millis("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            instant_millis("2026-03-30T02:00:00.123Z"),
            chrono::DateTime::parse_from_rfc3339("2026-03-30T02:00:00.123Z")
                .ok()
                .map(|time| time.timestamp_millis())
        );
        assert_eq!(instant_millis("2026-03-30T24:00:00.000Z"), None);
        assert_eq!(instant_millis("2026-03-30 02:00:00"), None);
    }
}
