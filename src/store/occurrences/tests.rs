//! Tests of the occurrence ledger and the scheduler's progress.

use super::*;
use crate::store::occurrences;
use crate::store::runs::{self, LeaseAttempt, Trigger};
use crate::store::stats;
use crate::store::test_support::temp_store;
use chrono::TimeZone;

fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, second).unwrap()
}

#[test]
fn a_scheduled_start_records_its_run_fire_times_and_progress_together() {
    let (_dir, store) = temp_store();
    let batch = OccurrenceBatch {
        occurrences: vec![(at(1), Outcome::Coalesced), (at(2), Outcome::Coalesced)],
        uncounted: 7,
        uncounted_outcome: Outcome::Coalesced,
        handled_through: at(2),
        offset: chrono::Duration::zero(),
    };
    let LeaseAttempt::Acquired { run_id } = runs::begin_scheduled_run(
        &store,
        "cleanup",
        "h/1/1",
        || at(3),
        |_| true,
        at(2),
        &batch,
    )
    .unwrap() else {
        panic!("the lease is free");
    };
    let runs = runs::list_runs(&store, Some("cleanup"), 1).unwrap();
    assert_eq!(runs[0].trigger, Trigger::Schedule);
    assert_eq!(
        runs[0].scheduled_for.as_deref(),
        Some("2026-01-01T00:00:02.000Z")
    );
    assert_eq!(runs[0].lag_ms, Some(1000));
    let ledger = occurrences::list_occurrences(&store, Some("cleanup"), 10).unwrap();
    let rows: Vec<(&str, &str, Option<i64>, Option<i64>)> = ledger
        .iter()
        .map(|row| {
            (
                row.scheduled_for.as_str(),
                row.outcome.as_str(),
                row.run_id,
                row.lag_ms,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "2026-01-01T00:00:02.000Z",
                "coalesced",
                Some(run_id),
                Some(1000)
            ),
            (
                "2026-01-01T00:00:01.000Z",
                "coalesced",
                Some(run_id),
                Some(2000)
            ),
        ]
    );
    assert_eq!(
        occurrences::last_fire(&store, "cleanup").unwrap(),
        Some(at(2))
    );
    let metrics = stats::occurrence_metrics(&store, &["cleanup"]).unwrap();
    assert_eq!(
        metrics.counts,
        [("cleanup".to_string(), "coalesced".to_string(), 9)]
    );

    // The same fire times again (a pass repeated after a crash) are not listed twice, and
    // progress never goes back.
    occurrences::record_refused(&store, "cleanup", &batch, at(4)).unwrap();
    assert_eq!(
        occurrences::list_occurrences(&store, None, 10)
            .unwrap()
            .len(),
        2
    );
    occurrences::set_last_fire(&store, "cleanup", at(9)).unwrap();
    occurrences::record_occurrences(
        &store,
        "cleanup",
        Source::Schedule,
        &[],
        (Outcome::Ran, 0),
        Some(at(5)),
        at(9),
    )
    .unwrap();
    assert_eq!(
        occurrences::last_fire(&store, "cleanup").unwrap(),
        Some(at(9))
    );
}
