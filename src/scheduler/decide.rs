//! The scheduler's decision, as a pure function of a job's schedule, its catch-up policy, the
//! last fire time handled and the clock: which fire times have passed, which are run now and
//! which are only recorded. Everything the loop does follows from [`decide`].

use chrono::{DateTime, Duration, Utc};

use crate::config::{ALL_CAP, CatchUp};
use crate::cron::Schedule;
use crate::store::occurrences::{OccurrenceBatch, Outcome};

/// Passed fire times recorded one by one; older ones are counted only.
pub const RECORD_CAP: usize = 1_000;
/// Fire times examined before jumping ahead to the last day (a per-second job down for years).
const ENUMERATION_CAP: usize = 100_000;
/// A last handled fire time this far ahead of the clock means the clock was set back.
pub const CLOCK_CORRECTION: Duration = Duration::hours(3);

/// Whether the scheduler watched the clock since it last handled the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// It was running and awake: fire times that passed are late only by its own wake-up.
    Watched,
    /// The process has just started, or the host was suspended or its clock stepped forward
    /// since the last pass: the fire times that passed went by unwatched.
    Interrupted,
}

/// What one pass knows of one job.
#[derive(Debug, Clone, Copy)]
pub struct Pass<'a> {
    pub schedule: &'a Schedule,
    pub catch_up: CatchUp,
    /// `CRON_ENABLED=false`: fire times are recorded as paused, nothing runs.
    pub paused: bool,
    pub last_handled: DateTime<Utc>,
    pub now: DateTime<Utc>,
    pub continuity: Continuity,
    /// The job's spread offset (`EDGECRON_SPREAD_<JOB>`): each fire time is due this long
    /// after it.
    pub offset: Duration,
}

/// What one pass does for one job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Fire times no run serves, recorded first (their progress before any run's).
    pub unserved: Option<OccurrenceBatch>,
    /// Runs to start, oldest first, one after another: each run's fire time and the batch of
    /// occurrences it serves (written with its start).
    pub runs: Vec<(DateTime<Utc>, OccurrenceBatch)>,
    /// The clock was set back past [`CLOCK_CORRECTION`]: start again from now, as cron(8) does.
    pub restart_from: Option<DateTime<Utc>>,
}

impl Decision {
    /// The last fire time handled once this decision is carried out.
    pub fn handled_through(&self) -> Option<DateTime<Utc>> {
        self.runs
            .last()
            .map(|(_, batch)| batch.handled_through)
            .or(self.unserved.as_ref().map(|batch| batch.handled_through))
            .or(self.restart_from)
    }
}

/// Fire times in `(after, now]`: the newest [`RECORD_CAP`], oldest first, and how many
/// passed before them.
pub fn passed(
    schedule: &Schedule,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Vec<DateTime<Utc>>, u64) {
    let mut listed = std::collections::VecDeque::new();
    let mut older = 0u64;
    let mut cursor = after;
    let mut examined = 0;
    while let Some(next) = schedule.next_after(cursor).filter(|next| *next <= now) {
        listed.push_back(next);
        if listed.len() > RECORD_CAP {
            listed.pop_front();
            older += 1;
        }
        cursor = next;
        examined += 1;
        if examined == ENUMERATION_CAP {
            // Counting further would stall the scheduler; what lies between is not counted.
            cursor = cursor.max(now - Duration::days(1));
        }
    }
    (listed.into(), older)
}

/// Decides what the scheduler owes a job at `pass.now` (see the module docs).
pub fn decide(pass: &Pass<'_>) -> Decision {
    if pass.last_handled > pass.now + CLOCK_CORRECTION {
        return Decision {
            restart_from: Some(pass.now),
            ..Decision::default()
        };
    }
    let (listed, older) = passed(pass.schedule, pass.last_handled, pass.now - pass.offset);
    let Some(&latest) = listed.last() else {
        return Decision::default();
    };
    let batch = |times: &[DateTime<Utc>], outcome: Outcome, uncounted: u64| OccurrenceBatch {
        occurrences: times.iter().map(|time| (*time, outcome)).collect(),
        uncounted,
        uncounted_outcome: Outcome::Coalesced,
        handled_through: times.last().copied().unwrap_or(latest),
        offset: pass.offset,
    };
    if pass.paused {
        let mut paused = batch(&listed, Outcome::Paused, older);
        paused.uncounted_outcome = Outcome::Paused;
        return Decision {
            unserved: Some(paused),
            ..Decision::default()
        };
    }
    // Watched, the latest fire time is due now and runs; the earlier ones were passed while
    // the loop was late. Interrupted, every one of them passed unwatched.
    let (late, on_time) = match pass.continuity {
        Continuity::Watched => (&listed[..listed.len() - 1], Some(latest)),
        Continuity::Interrupted => (&listed[..], None),
    };
    let mut decision = Decision::default();
    match pass.catch_up {
        CatchUp::Once => {
            let mut serves = batch(late, Outcome::Coalesced, older);
            if let Some(time) = on_time {
                serves.occurrences.push((time, Outcome::Ran));
            }
            serves.handled_through = latest;
            decision.runs.push((latest, serves));
        }
        CatchUp::Skip => {
            if !late.is_empty() || older > 0 {
                decision.unserved = Some(batch(late, Outcome::Coalesced, older));
            }
            if let Some(time) = on_time {
                decision.runs.push((time, batch(&[time], Outcome::Ran, 0)));
            }
        }
        CatchUp::All => {
            let first_run = late.len().saturating_sub(ALL_CAP);
            let (left, caught_up) = late.split_at(first_run);
            if !left.is_empty() || older > 0 {
                decision.unserved = Some(batch(left, Outcome::Coalesced, older));
            }
            // A run per late fire time; watched, each was only late, not passed while down.
            let outcome = match pass.continuity {
                Continuity::Watched => Outcome::Ran,
                Continuity::Interrupted => Outcome::Coalesced,
            };
            for time in caught_up.iter().copied().chain(on_time) {
                let own = if Some(time) == on_time {
                    Outcome::Ran
                } else {
                    outcome
                };
                decision.runs.push((time, batch(&[time], own, 0)));
            }
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instant(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn schedule(expression: &str, zone: chrono_tz::Tz) -> Schedule {
        Schedule::parse(expression, zone).unwrap()
    }

    fn pass(
        schedule: &Schedule,
        catch_up: CatchUp,
        last: &str,
        now: &str,
        continuity: Continuity,
    ) -> Decision {
        decide(&Pass {
            schedule,
            catch_up,
            paused: false,
            last_handled: instant(last),
            now: instant(now),
            continuity,
            offset: Duration::zero(),
        })
    }

    /// Each run's fire time with its served occurrences, as text.
    fn runs(decision: &Decision) -> Vec<(String, Vec<(String, &'static str)>)> {
        decision
            .runs
            .iter()
            .map(|(time, batch)| (time.to_rfc3339(), occurrences(batch)))
            .collect()
    }

    fn occurrences(batch: &OccurrenceBatch) -> Vec<(String, &'static str)> {
        batch
            .occurrences
            .iter()
            .map(|(time, outcome)| (time.to_rfc3339(), outcome.as_str()))
            .collect()
    }

    #[test]
    fn on_time_a_fire_time_runs_once_and_nothing_before_it_is_due() {
        let every_quarter = schedule("*/15 * * * *", chrono_tz::UTC);
        for catch_up in [CatchUp::Once, CatchUp::Skip, CatchUp::All] {
            let early = pass(
                &every_quarter,
                catch_up,
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:14:59Z",
                Continuity::Watched,
            );
            assert_eq!(early, Decision::default());
            let due = pass(
                &every_quarter,
                catch_up,
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:15:00.020Z",
                Continuity::Watched,
            );
            assert_eq!(
                runs(&due),
                [(
                    "2026-01-01T00:15:00+00:00".to_string(),
                    vec![("2026-01-01T00:15:00+00:00".to_string(), "ran")]
                )],
                "{catch_up:?}"
            );
            assert!(due.unserved.is_none());
        }
    }

    #[test]
    fn after_downtime_each_policy_accounts_for_every_passed_fire_time() {
        let every_quarter = schedule("*/15 * * * *", chrono_tz::UTC);
        let (last, now) = ("2026-01-01T00:00:00Z", "2026-01-01T01:07:00Z");
        // 00:15, 00:30, 00:45 and 01:00 passed while the process was down.
        let once = pass(
            &every_quarter,
            CatchUp::Once,
            last,
            now,
            Continuity::Interrupted,
        );
        assert!(once.unserved.is_none());
        let (fire, serves) = &once.runs[0];
        assert_eq!(once.runs.len(), 1);
        assert_eq!(*fire, instant("2026-01-01T01:00:00Z"));
        assert_eq!(serves.occurrences.len(), 4);
        assert!(
            serves
                .occurrences
                .iter()
                .all(|(_, outcome)| *outcome == Outcome::Coalesced)
        );
        assert_eq!(
            once.handled_through(),
            Some(instant("2026-01-01T01:00:00Z"))
        );

        let skip = pass(
            &every_quarter,
            CatchUp::Skip,
            last,
            now,
            Continuity::Interrupted,
        );
        assert!(skip.runs.is_empty());
        let skipped = skip.unserved.as_ref().unwrap();
        assert_eq!(skipped.occurrences.len(), 4);
        assert_eq!(skipped.handled_through, instant("2026-01-01T01:00:00Z"));

        let all = pass(
            &every_quarter,
            CatchUp::All,
            last,
            now,
            Continuity::Interrupted,
        );
        assert!(all.unserved.is_none());
        let fires: Vec<String> = runs(&all).into_iter().map(|(fire, _)| fire).collect();
        assert_eq!(
            fires,
            [
                "2026-01-01T00:15:00+00:00",
                "2026-01-01T00:30:00+00:00",
                "2026-01-01T00:45:00+00:00",
                "2026-01-01T01:00:00+00:00"
            ]
        );
        assert!(all.runs.iter().all(|(fire, batch)| batch.occurrences
            == [(*fire, Outcome::Coalesced)]
            && batch.handled_through == *fire));
    }

    #[test]
    fn a_late_loop_runs_the_latest_fire_time_and_coalesces_the_rest() {
        let every_second = schedule("* * * * * *", chrono_tz::UTC);
        let once = pass(
            &every_second,
            CatchUp::Once,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:03.400Z",
            Continuity::Watched,
        );
        assert_eq!(
            runs(&once),
            [(
                "2026-01-01T00:00:03+00:00".to_string(),
                vec![
                    ("2026-01-01T00:00:01+00:00".to_string(), "coalesced"),
                    ("2026-01-01T00:00:02+00:00".to_string(), "coalesced"),
                    ("2026-01-01T00:00:03+00:00".to_string(), "ran"),
                ]
            )]
        );
        let skip = pass(
            &every_second,
            CatchUp::Skip,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:03.400Z",
            Continuity::Watched,
        );
        assert_eq!(skip.unserved.as_ref().unwrap().occurrences.len(), 2);
        assert_eq!(
            skip.unserved.as_ref().unwrap().handled_through,
            instant("2026-01-01T00:00:02Z")
        );
        assert_eq!(runs(&skip).len(), 1);
        let all = pass(
            &every_second,
            CatchUp::All,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:03.400Z",
            Continuity::Watched,
        );
        let outcomes: Vec<&str> = all
            .runs
            .iter()
            .map(|(_, batch)| batch.occurrences[0].1.as_str())
            .collect();
        assert_eq!(outcomes, ["ran", "ran", "ran"]);
    }

    #[test]
    fn all_runs_at_most_a_hundred_newest_oldest_first_and_records_the_rest() {
        let every_minute = schedule("* * * * *", chrono_tz::UTC);
        let all = pass(
            &every_minute,
            CatchUp::All,
            "2026-01-01T00:00:00Z",
            "2026-01-01T02:30:30Z",
            Continuity::Interrupted,
        );
        assert_eq!(all.runs.len(), ALL_CAP);
        assert_eq!(all.runs[0].0, instant("2026-01-01T00:51:00Z"));
        assert_eq!(all.runs[99].0, instant("2026-01-01T02:30:00Z"));
        let left = all.unserved.unwrap();
        assert_eq!(left.occurrences.len(), 50);
        assert_eq!(left.handled_through, instant("2026-01-01T00:50:00Z"));
    }

    #[test]
    fn very_long_downtimes_list_the_newest_and_count_the_rest() {
        let every_second = schedule("* * * * * *", chrono_tz::UTC);
        let skip = pass(
            &every_second,
            CatchUp::Skip,
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00Z",
            Continuity::Interrupted,
        );
        let batch = skip.unserved.unwrap();
        assert_eq!(batch.occurrences.len(), RECORD_CAP);
        assert_eq!(batch.uncounted, 3_600 - RECORD_CAP as u64);
        assert_eq!(batch.handled_through, instant("2026-01-01T01:00:00Z"));
        // Years of a yearly job are counted exactly.
        let yearly = schedule("0 0 1 1 *", chrono_tz::UTC);
        let once = pass(
            &yearly,
            CatchUp::Once,
            "2023-01-01T00:00:00Z",
            "2026-06-01T00:00:00Z",
            Continuity::Interrupted,
        );
        assert_eq!(once.runs[0].0, instant("2026-01-01T00:00:00Z"));
        assert_eq!(once.runs[0].1.occurrences.len(), 3);
    }

    #[test]
    fn a_clock_set_back_far_starts_again_from_now_and_a_little_waits() {
        let hourly = schedule("0 * * * *", chrono_tz::UTC);
        let far = pass(
            &hourly,
            CatchUp::Once,
            "2026-01-02T00:00:00Z",
            "2026-01-01T12:30:00Z",
            Continuity::Watched,
        );
        assert_eq!(far.restart_from, Some(instant("2026-01-01T12:30:00Z")));
        assert!(far.runs.is_empty() && far.unserved.is_none());
        // An hour back: the fire times already handled are not run again.
        let near = pass(
            &hourly,
            CatchUp::Once,
            "2026-01-01T13:00:00Z",
            "2026-01-01T12:30:00Z",
            Continuity::Watched,
        );
        assert_eq!(near, Decision::default());
        let caught_up = pass(
            &hourly,
            CatchUp::Once,
            "2026-01-01T13:00:00Z",
            "2026-01-01T13:00:00.050Z",
            Continuity::Watched,
        );
        assert_eq!(caught_up, Decision::default());
    }

    #[test]
    fn daylight_saving_gaps_and_overlaps_follow_debian_cron() {
        let berlin = chrono_tz::Europe::Berlin;
        // 2026-03-29: 02:30 does not exist; the fixed-time job runs at the change, 03:00 CEST.
        let gap = schedule("30 2 * * *", berlin);
        let at_change = pass(
            &gap,
            CatchUp::Once,
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00.010Z",
            Continuity::Watched,
        );
        assert_eq!(at_change.runs[0].0, instant("2026-03-29T01:00:00Z"));
        assert_eq!(at_change.runs[0].1.occurrences.len(), 1);
        // 2026-10-25: 02:30 happens twice; the fixed-time job runs once, in the first pass.
        let overlap = schedule("30 2 * * *", berlin);
        let first = pass(
            &overlap,
            CatchUp::Once,
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00.010Z",
            Continuity::Watched,
        );
        assert_eq!(first.runs[0].0, instant("2026-10-25T00:30:00Z"));
        let second_pass = pass(
            &overlap,
            CatchUp::Once,
            "2026-10-25T00:30:00Z",
            "2026-10-25T01:30:00.010Z",
            Continuity::Watched,
        );
        assert_eq!(second_pass, Decision::default());
        // Down across the whole overlap, a wildcard job finds every half hour of both passes.
        let half_hourly = schedule("*/30 * * * *", berlin);
        let skip = pass(
            &half_hourly,
            CatchUp::Skip,
            "2026-10-24T23:45:00Z",
            "2026-10-25T01:45:00Z",
            Continuity::Interrupted,
        );
        assert_eq!(
            occurrences(skip.unserved.as_ref().unwrap()),
            [
                ("2026-10-25T00:00:00+00:00".to_string(), "coalesced"),
                ("2026-10-25T00:30:00+00:00".to_string(), "coalesced"),
                ("2026-10-25T01:00:00+00:00".to_string(), "coalesced"),
                ("2026-10-25T01:30:00+00:00".to_string(), "coalesced"),
            ]
        );
    }

    #[test]
    fn paused_fire_times_are_recorded_and_nothing_runs() {
        let every_quarter = schedule("*/15 * * * *", chrono_tz::UTC);
        let paused = decide(&Pass {
            schedule: &every_quarter,
            catch_up: CatchUp::All,
            paused: true,
            last_handled: instant("2026-01-01T00:00:00Z"),
            now: instant("2026-01-01T00:31:00Z"),
            continuity: Continuity::Watched,
            offset: Duration::zero(),
        });
        assert!(paused.runs.is_empty());
        assert_eq!(
            occurrences(paused.unserved.as_ref().unwrap()),
            [
                ("2026-01-01T00:15:00+00:00".to_string(), "paused"),
                ("2026-01-01T00:30:00+00:00".to_string(), "paused"),
            ]
        );
    }

    #[test]
    fn a_spread_fire_time_is_due_its_offset_later_and_keeps_its_own_time() {
        let hourly = schedule("0 * * * *", chrono_tz::UTC);
        let at = |now: &str| {
            decide(&Pass {
                schedule: &hourly,
                catch_up: CatchUp::Once,
                paused: false,
                last_handled: instant("2026-01-01T00:00:00Z"),
                now: instant(now),
                continuity: Continuity::Watched,
                offset: Duration::seconds(90),
            })
        };
        assert_eq!(at("2026-01-01T01:01:29Z"), Decision::default());
        let due = at("2026-01-01T01:01:30Z");
        assert_eq!(
            runs(&due),
            [(
                "2026-01-01T01:00:00+00:00".to_string(),
                vec![("2026-01-01T01:00:00+00:00".to_string(), "ran")]
            )]
        );
        assert_eq!(due.runs[0].1.offset, Duration::seconds(90));
    }
}
