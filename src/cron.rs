//! Crontab expressions and their next fire times in a time zone, by Debian cron's rules.
//!
//! croner matches a pattern against wall-clock (local, naive) times; this module maps those
//! times to instants. Around daylight-saving changes it follows Debian cron(8):
//! - a fixed-time job (no `*` in its minute or hour field) whose time is skipped when clocks go
//!   forward runs once, at the change; when clocks go back it runs once, in the first pass;
//! - a wildcard job (`*` in the minute or hour field, `@hourly`) runs at each wall-clock time
//!   that exists, so it keeps its interval in both directions.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression {expression:?}: {reason}")]
    Invalid { expression: String, reason: String },
    #[error("cron expression {0:?} never fires")]
    NeverFires(String),
}

/// How a schedule behaves when the clock jumps (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    FixedTime,
    Wildcard,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    kind: ScheduleKind,
    zone: Tz,
}

/// Longest span over which a zone's offset is assumed to change at most once.
const TRANSITION_WINDOW: Duration = Duration::hours(3);
/// Candidate wall-clock times examined for one answer (an every-second pattern across a
/// one-hour overlap needs 3,600).
const MAX_CANDIDATES: usize = 100_000;

impl Schedule {
    /// Reads a 5-field crontab expression, a 6-field one with leading seconds, or a shorthand
    /// (`@hourly`, `@daily`, `@midnight`, `@weekly`, `@monthly`, `@yearly`, `@annually`).
    pub fn parse(expression: &str, zone: Tz) -> Result<Schedule, ScheduleError> {
        let invalid = |reason: &str| ScheduleError::Invalid {
            expression: expression.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = expression.trim();
        let pattern = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            "@reboot" => {
                return Err(invalid(
                    "@reboot is not a schedule; run the job at start-up instead",
                ));
            }
            other if other.starts_with('@') => return Err(invalid("unknown shorthand")),
            _ => trimmed.to_string(),
        };
        let fields: Vec<&str> = pattern.split_whitespace().collect();
        let (minute, hour, seconds) = match fields.as_slice() {
            [minute, hour, _, _, _] => (*minute, *hour, None),
            [second, minute, hour, _, _, _] => (*minute, *hour, Some(*second)),
            _ => {
                return Err(invalid(
                    "expected 5 fields (minute hour day month weekday) or 6 with leading seconds",
                ));
            }
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(&pattern)
            .map_err(|error| invalid(&error.to_string()))?;
        let wildcard = |field: &str| field.starts_with('*');
        let kind = if wildcard(minute) || wildcard(hour) || seconds.is_some_and(wildcard) {
            ScheduleKind::Wildcard
        } else {
            ScheduleKind::FixedTime
        };
        let schedule = Schedule {
            expression: trimmed.to_string(),
            cron,
            kind,
            zone,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::NeverFires(trimmed.to_string()));
        }
        Ok(schedule)
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Every instant after `after` has a wall-clock time past this one, whichever offset
        // is in force between now and the next transition.
        let smallest_offset = [after, after + TRANSITION_WINDOW]
            .iter()
            .map(|instant| self.offset_seconds(*instant))
            .min()
            .unwrap_or(0);
        let mut wall = after.naive_utc() + Duration::seconds(smallest_offset);
        let mut best: Option<DateTime<Utc>> = None;
        let consider = |candidate: DateTime<Utc>, best: &mut Option<DateTime<Utc>>| {
            if candidate > after && best.is_none_or(|current| candidate < current) {
                *best = Some(candidate);
            }
        };
        for _ in 0..MAX_CANDIDATES {
            wall = self
                .cron
                .find_next_occurrence(&wall.and_utc(), false)
                .ok()?
                .naive_utc();
            match self.zone.from_local_datetime(&wall) {
                LocalResult::Single(instant) => {
                    let instant = instant.with_timezone(&Utc);
                    if instant > after {
                        // Later wall-clock times map to later instants from here on.
                        consider(instant, &mut best);
                        return best;
                    }
                }
                LocalResult::Ambiguous(first, second) => {
                    consider(first.with_timezone(&Utc), &mut best);
                    if self.kind == ScheduleKind::Wildcard {
                        consider(second.with_timezone(&Utc), &mut best);
                    }
                }
                LocalResult::None => {
                    if self.kind == ScheduleKind::Wildcard {
                        continue;
                    }
                    let change = self.end_of_gap(wall);
                    if change > after {
                        consider(change, &mut best);
                        return best;
                    }
                }
            }
        }
        best
    }

    /// The next `count` fire times after `after`, in the schedule's zone.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Tz>> {
        let mut times = Vec::with_capacity(count);
        let mut cursor = after;
        while times.len() < count {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            times.push(next.with_timezone(&self.zone));
            cursor = next;
        }
        times
    }

    fn offset_seconds(&self, instant: DateTime<Utc>) -> i64 {
        i64::from(
            self.zone
                .offset_from_utc_datetime(&instant.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    }

    /// The instant clocks jumped over `wall` (which does not exist): the first instant whose
    /// wall-clock time is later than it.
    fn end_of_gap(&self, wall: NaiveDateTime) -> DateTime<Utc> {
        let wall_after = |seconds: i64| {
            let instant = DateTime::from_timestamp(seconds, 0).unwrap_or_default();
            instant.naive_utc() + Duration::seconds(self.offset_seconds(instant)) > wall
        };
        let mut low = (wall - Duration::days(1)).and_utc().timestamp();
        let mut high = (wall + Duration::days(1)).and_utc().timestamp();
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if wall_after(middle) {
                high = middle;
            } else {
                low = middle;
            }
        }
        DateTime::from_timestamp(high, 0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instant(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn fires(expression: &str, zone: Tz, from: &str, count: usize) -> Vec<String> {
        Schedule::parse(expression, zone)
            .unwrap()
            .upcoming(instant(from), count)
            .iter()
            .map(|time| time.to_rfc3339())
            .collect()
    }

    #[test]
    fn weekdays_read_as_crontab_reads_them() {
        // 2026-11-23 is a Monday: crontab's 1, and Quartz's 2.
        let monday = fires("0 3 * * 1", chrono_tz::UTC, "2026-11-20T00:00:00Z", 2);
        assert_eq!(
            monday,
            ["2026-11-23T03:00:00+00:00", "2026-11-30T03:00:00+00:00"]
        );
        let sunday = fires("0 3 * * 7", chrono_tz::UTC, "2026-11-20T00:00:00Z", 1);
        assert_eq!(
            sunday,
            fires("0 3 * * SUN", chrono_tz::UTC, "2026-11-20T00:00:00Z", 1)
        );
        assert_eq!(
            sunday,
            fires("0 3 * * 0", chrono_tz::UTC, "2026-11-20T00:00:00Z", 1)
        );
        assert_eq!(sunday, ["2026-11-22T03:00:00+00:00"]);
    }

    #[test]
    fn day_of_month_and_weekday_match_either_as_in_crontab() {
        // The 1st of the month OR any Friday.
        let times = fires("0 0 1 * FRI", chrono_tz::UTC, "2026-11-25T00:00:00Z", 3);
        assert_eq!(
            times,
            [
                "2026-11-27T00:00:00+00:00",
                "2026-12-01T00:00:00+00:00",
                "2026-12-04T00:00:00+00:00"
            ]
        );
    }

    #[test]
    fn shorthands_and_seconds() {
        let daily = fires("@daily", chrono_tz::UTC, "2026-01-01T12:00:00Z", 1);
        assert_eq!(daily, ["2026-01-02T00:00:00+00:00"]);
        let every_second = fires("* * * * * *", chrono_tz::UTC, "2026-01-01T12:00:00Z", 2);
        assert_eq!(
            every_second,
            ["2026-01-01T12:00:01+00:00", "2026-01-01T12:00:02+00:00"]
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_the_reason() {
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "* * * * * * *",
            "@reboot",
            "@fortnightly",
            "0 0 30 2 *",
        ] {
            assert!(
                Schedule::parse(bad, chrono_tz::UTC).is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn berlin_spring_forward_runs_skipped_fixed_job_at_the_change() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
        let times = fires(
            "30 2 * * *",
            chrono_tz::Europe::Berlin,
            "2026-03-28T12:00:00+01:00",
            3,
        );
        assert_eq!(
            times,
            [
                "2026-03-29T03:00:00+02:00",
                "2026-03-30T02:30:00+02:00",
                "2026-03-31T02:30:00+02:00"
            ]
        );
    }

    #[test]
    fn berlin_fall_back_runs_fixed_job_once() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        let times = fires(
            "30 2 * * *",
            chrono_tz::Europe::Berlin,
            "2026-10-24T12:00:00+02:00",
            2,
        );
        assert_eq!(
            times,
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
        // Asked from inside the repeated hour's second pass, it does not run again that day.
        let times = fires(
            "30 2 * * *",
            chrono_tz::Europe::Berlin,
            "2026-10-25T02:10:00+01:00",
            1,
        );
        assert_eq!(times, ["2026-10-26T02:30:00+01:00"]);
    }

    #[test]
    fn berlin_wildcard_jobs_keep_their_interval() {
        let spring = fires(
            "0 * * * *",
            chrono_tz::Europe::Berlin,
            "2026-03-29T00:30:00+01:00",
            3,
        );
        assert_eq!(
            spring,
            [
                "2026-03-29T01:00:00+01:00",
                "2026-03-29T03:00:00+02:00",
                "2026-03-29T04:00:00+02:00"
            ]
        );
        let fall = fires(
            "*/30 * * * *",
            chrono_tz::Europe::Berlin,
            "2026-10-25T01:50:00+02:00",
            6,
        );
        assert_eq!(
            fall,
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T02:30:00+01:00",
                "2026-10-25T03:00:00+01:00",
                "2026-10-25T03:30:00+01:00",
            ]
        );
    }

    #[test]
    fn new_york_transitions() {
        let zone = chrono_tz::America::New_York;
        // 2026-03-08: 02:00 EST becomes 03:00 EDT.
        let spring = fires("30 2 * * *", zone, "2026-03-07T12:00:00-05:00", 2);
        assert_eq!(
            spring,
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
        );
        // 2026-11-01: 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
        let fall = fires("30 1 * * *", zone, "2026-10-31T12:00:00-04:00", 2);
        assert_eq!(
            fall,
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
        let hourly = fires("@hourly", zone, "2026-11-01T00:30:00-04:00", 3);
        assert_eq!(
            hourly,
            [
                "2026-11-01T01:00:00-04:00",
                "2026-11-01T01:00:00-05:00",
                "2026-11-01T02:00:00-05:00"
            ]
        );
    }

    #[test]
    fn lord_howe_half_hour_shift() {
        let zone = chrono_tz::Australia::Lord_Howe;
        // 2026-10-04: 02:00 (+10:30) becomes 02:30 (+11:00).
        let spring = fires("15 2 * * *", zone, "2026-10-03T12:00:00+10:30", 2);
        assert_eq!(
            spring,
            ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
        );
        let wildcard = fires("*/20 * * * *", zone, "2026-10-04T01:30:00+10:30", 2);
        assert_eq!(
            wildcard,
            ["2026-10-04T01:40:00+10:30", "2026-10-04T02:40:00+11:00"]
        );
        // 2026-04-05: 02:00 (+11:00) becomes 01:30 (+10:30); 01:45 happens twice.
        let fall = fires("45 1 * * *", zone, "2026-04-04T12:00:00+11:00", 2);
        assert_eq!(
            fall,
            ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]
        );
        let quarter = fires("*/15 * * * *", zone, "2026-04-05T01:20:00+11:00", 5);
        assert_eq!(
            quarter,
            [
                "2026-04-05T01:30:00+11:00",
                "2026-04-05T01:45:00+11:00",
                "2026-04-05T01:30:00+10:30",
                "2026-04-05T01:45:00+10:30",
                "2026-04-05T02:00:00+10:30",
            ]
        );
    }
}
