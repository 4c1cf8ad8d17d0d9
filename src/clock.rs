//! Wall-clock time behind a trait, so tests can pin "now", and the store's text form of times.

use std::borrow::Cow;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, SecondsFormat, Utc};

/// Where "now" comes from. Jobs and the scheduler ask this, never `Utc::now()`.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that always answers the same instant, for tests.
#[cfg(test)]
pub struct FixedClock(pub DateTime<Utc>);

#[cfg(test)]
impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// The store's text form of a time: ISO-8601 UTC with milliseconds, so text order is time order.
pub fn to_store_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads a time as SQLite's date functions read it (SPEC §6): `YYYY-MM-DD`, then optionally
/// `T` or a space and `HH:MM`, `:SS` and a fraction, then optionally `Z` or a `±HH:MM` offset
/// (no zone: UTC); or a Julian day number. Answers `None` for text that names no instant,
/// including impossible dates SQLite would roll over (`2026-02-30`): nothing is done on a guess.
/// An instant whose UTC year falls outside 0001-9999 (`0000-01-01T00:00:00+05:00`) names none
/// that a partition, a file name or SQLite's own functions can hold.
pub fn from_store_text(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let bytes = text.as_bytes();
    let time = if bytes.len() >= 10 && bytes[4] == b'-' {
        parse_iso(bytes)
    } else {
        parse_julian_day(text)
    };
    time.filter(|time| (1..=9999).contains(&time.year()))
}

/// Reads a stored value as SQLite's date functions do: text in any form [`from_store_text`]
/// reads, or a number as a Julian day (`2461010.5`); `None` for anything else.
pub fn from_store_value(value: rusqlite::types::ValueRef<'_>) -> Option<DateTime<Utc>> {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes).ok().and_then(from_store_text),
        ValueRef::Real(day) => julian_day(day),
        ValueRef::Integer(day) => julian_day(day as f64),
        ValueRef::Null | ValueRef::Blob(_) => None,
    }
    .filter(|time| (1..=9999).contains(&time.year()))
}

/// The store's canonical text of the instant `text` names: `text` itself when it already is
/// (the common case, checked without allocating), `None` when it names no instant.
pub fn canonical_time(text: &str) -> Option<Cow<'_, str>> {
    let time = from_store_text(text)?;
    if is_canonical_shape(text.as_bytes()) {
        return Some(Cow::Borrowed(text));
    }
    Some(Cow::Owned(to_store_text(time)))
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ` by its punctuation and digits (validity is checked by parsing).
fn is_canonical_shape(bytes: &[u8]) -> bool {
    const SHAPE: &[u8; 24] = b"0000-00-00T00:00:00.000Z";
    bytes.len() == SHAPE.len()
        && bytes.iter().zip(SHAPE).all(|(byte, shape)| match shape {
            b'0' => byte.is_ascii_digit(),
            punctuation => byte == punctuation,
        })
}

fn parse_iso(bytes: &[u8]) -> Option<DateTime<Utc>> {
    if bytes[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        digits(bytes, 0, 4)? as i32,
        digits(bytes, 5, 2)?,
        digits(bytes, 8, 2)?,
    )?;
    let mut rest = &bytes[10..];
    let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0);
    if let [b'T' | b't' | b' ', _, _, b':', _, _, ..] = rest {
        hour = digits(rest, 1, 2)?;
        minute = digits(rest, 4, 2)?;
        rest = &rest[6..];
        if let [b':', _, _, ..] = rest {
            second = digits(rest, 1, 2)?;
            rest = &rest[3..];
            if let [b'.', ..] = rest {
                let fraction = rest[1..].iter().take_while(|byte| byte.is_ascii_digit());
                let count = fraction.clone().count();
                if count == 0 {
                    return None;
                }
                // Nanoseconds from the first nine digits; more precision than that is dropped.
                nanos = fraction
                    .take(9)
                    .chain(std::iter::repeat(&b'0'))
                    .take(9)
                    .fold(0u32, |value, byte| value * 10 + u32::from(byte - b'0'));
                rest = &rest[1 + count..];
            }
        }
    }
    // SQLite allows a space before the zone.
    if let [b' ', zone @ ..] = rest
        && !zone.is_empty()
    {
        rest = zone;
    }
    let offset_seconds = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (digits(rest, 1, 2)?, digits(rest, 4, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'+' { seconds } else { -seconds }
        }
        _ => return None,
    };
    let local = date.and_time(NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?);
    let utc = local.checked_sub_signed(chrono::Duration::seconds(offset_seconds))?;
    Some(utc.and_utc())
}

/// `count` ASCII digits at `start`, as a number.
fn digits(bytes: &[u8], start: usize, count: usize) -> Option<u32> {
    bytes
        .get(start..start + count)?
        .iter()
        .try_fold(0u32, |value, byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + u32::from(byte - b'0'))
        })
}

/// SQLite reads a bare number as a Julian day (2440587.5 is the Unix epoch).
fn parse_julian_day(text: &str) -> Option<DateTime<Utc>> {
    julian_day(text.parse().ok()?)
}

fn julian_day(day: f64) -> Option<DateTime<Utc>> {
    const UNIX_EPOCH_JULIAN_DAY: f64 = 2_440_587.5;
    // SQLite's own range: 0000-01-01 to 9999-12-31.
    if !(1_721_059.5..=5_373_484.5).contains(&day) {
        return None;
    }
    let millis = ((day - UNIX_EPOCH_JULIAN_DAY) * 86_400_000.0).round() as i64;
    DateTime::from_timestamp_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn store_text_has_milliseconds_and_zulu() {
        let time = Utc.with_ymd_and_hms(2026, 3, 30, 2, 0, 0).unwrap();
        assert_eq!(to_store_text(time), "2026-03-30T02:00:00.000Z");
        assert_eq!(from_store_text("2026-03-30T02:00:00.000Z"), Some(time));
        assert_eq!(from_store_text("2026-03-30 02:00:00"), Some(time));
        assert_eq!(from_store_text("2026-03-30T04:00:00+02:00"), Some(time));
        assert_eq!(from_store_text("yesterday"), None);
    }

    #[test]
    fn every_form_sqlite_reads_names_its_instant() {
        let utc = |text: &str| from_store_text(text).map(to_store_text);
        let cases = [
            ("2026-11-30T10:00:00.000Z", "2026-11-30T10:00:00.000Z"),
            ("2026-11-30 10:00:00", "2026-11-30T10:00:00.000Z"),
            ("2026-11-30 10:00", "2026-11-30T10:00:00.000Z"),
            ("2026-11-30", "2026-11-30T00:00:00.000Z"),
            ("2026-11-30T10:00:00Z", "2026-11-30T10:00:00.000Z"),
            ("2026-11-30T10:00:00.5", "2026-11-30T10:00:00.500Z"),
            ("2026-11-30T10:00:00.123456789Z", "2026-11-30T10:00:00.123Z"),
            ("2026-11-30T05:00:00-05:00", "2026-11-30T10:00:00.000Z"),
            ("2026-11-30T15:30:00+05:30", "2026-11-30T10:00:00.000Z"),
            ("2026-12-01T01:00:00+02:00", "2026-11-30T23:00:00.000Z"),
            ("2026-11-30T20:00:00-05:00", "2026-12-01T01:00:00.000Z"),
            (" 2026-11-30 10:00:00 ", "2026-11-30T10:00:00.000Z"),
            ("2461374.9166666665", "2026-11-30T10:00:00.000Z"),
            ("2026-11-30 15:00:00 +05:00", "2026-11-30T10:00:00.000Z"),
        ];
        for (text, expected) in cases {
            assert_eq!(utc(text).as_deref(), Some(expected), "{text}");
        }
        for text in [
            "unknown",
            "",
            "2026-02-30T00:00:00.000Z",
            "2026-1-05T00:00:00.000Z",
            "2026-11-30T25:00:00Z",
            "2026-11-30T10:00:61Z",
            "2026-11-30T10:00:00.Z",
            "2026-11-30T10:00:00+5:00",
            "2026-11-30T10:00:00 EST",
            "2026-11-30X10:00",
            "12",
            "NaN",
        ] {
            assert_eq!(utc(text), None, "{text}");
        }
    }

    #[test]
    fn canonical_text_is_borrowed_when_it_already_is() {
        assert!(matches!(
            canonical_time("2026-11-30T10:00:00.000Z"),
            Some(Cow::Borrowed(_))
        ));
        assert_eq!(
            canonical_time("2026-11-30 10:00:00").as_deref(),
            Some("2026-11-30T10:00:00.000Z")
        );
        assert_eq!(canonical_time("2026-13-30T10:00:00.000Z"), None);
    }
}
