//! Wall-clock time behind a trait, so tests can pin "now", and the store's text form of times.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

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
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// The store's text form of a time: ISO-8601 UTC with milliseconds, so text order is time order.
pub fn to_store_text(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads a time written by [`to_store_text`], or by the application in any RFC 3339 form.
pub fn from_store_text(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    // SQLite's own datetime() writes "YYYY-MM-DD HH:MM:SS" without a zone; it is UTC.
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
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
}
