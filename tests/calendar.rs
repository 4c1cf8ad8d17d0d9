//! `edgecron calendar`: the scheduler's own next-fire computation, across DST changes.
//! Expected times are worked out from Debian cron's rules: a fixed-time job whose time is
//! skipped runs at the change, runs once when its time repeats; wildcard jobs keep their
//! interval.

use crate::support::Env;

fn calendar(args: &[&str]) -> Vec<String> {
    let env = Env::new();
    let mut all = vec!["calendar"];
    all.extend_from_slice(args);
    all.push("--json");
    let value = env.run_json(&all, 0);
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|time| time.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn berlin_both_transitions() {
    let spring = calendar(&[
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-03-28T12:00:00",
        "--count",
        "2",
    ]);
    assert_eq!(
        spring,
        ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    );
    let fall = calendar(&[
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-10-24T12:00:00",
        "--count",
        "2",
    ]);
    assert_eq!(
        fall,
        ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    );
    let hourly = calendar(&[
        "@hourly",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-10-25T01:30:00+02:00",
        "--count",
        "3",
    ]);
    assert_eq!(
        hourly,
        [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T03:00:00+01:00"
        ]
    );
}

#[test]
fn new_york_both_transitions() {
    let spring = calendar(&[
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-03-08T00:00:00",
        "--count",
        "2",
    ]);
    assert_eq!(
        spring,
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]
    );
    let fall = calendar(&[
        "*/30 1 * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-11-01T00:45:00",
        "--count",
        "5",
    ]);
    assert_eq!(
        fall,
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-02T01:00:00-05:00",
        ]
    );
}

#[test]
fn lord_howe_half_hour_shift() {
    let spring = calendar(&[
        "15 2 * * *",
        "--tz",
        "Australia/Lord_Howe",
        "--from",
        "2026-10-03T12:00:00",
        "--count",
        "2",
    ]);
    assert_eq!(
        spring,
        ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
    );
    let fall = calendar(&[
        "45 1 * * *",
        "--tz",
        "Australia/Lord_Howe",
        "--from",
        "2026-04-04T12:00:00",
        "--count",
        "2",
    ]);
    assert_eq!(
        fall,
        ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]
    );
}

#[test]
fn plain_output_and_zone_from_the_environment() {
    let env = Env::new().with("EDGECRON_TZ", "Asia/Kolkata");
    let output = env.run(&[
        "calendar",
        "0 9 * * MON-FRI",
        "--from",
        "2026-11-20T10:00:00",
        "--count",
        "2",
    ]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "2026-11-23T09:00:00+05:30\n2026-11-24T09:00:00+05:30\n"
    );
}

#[test]
fn bad_expressions_and_zones_exit_2_with_one_clear_line() {
    let env = Env::new();
    for (args, mentions) in [
        (vec!["calendar", "61 * * * *"], "invalid cron expression"),
        (vec!["calendar", "0 0 30 2 *"], "never fires"),
        (
            vec!["calendar", "* * * * *", "--tz", "Mars/Base"],
            "unknown time zone",
        ),
        (vec!["calendar", "* * * * *", "--from", "soon"], "--from"),
    ] {
        let output = env.run(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(mentions), "{args:?}: {stderr}");
    }
}

#[test]
fn counts_outside_one_to_ten_thousand_are_usage_errors() {
    // Regression: 18446744073709551615 panicked, 10^12 aborted on allocation, 0 printed nothing.
    let env = Env::new();
    for count in ["0", "10001", "1000000000000", "18446744073709551615"] {
        let output = env.run(&["calendar", "* * * * *", "--count", count]);
        assert_eq!(output.status.code(), Some(2), "--count {count}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--count"), "--count {count}: {stderr}");
    }
    assert_eq!(calendar(&["* * * * *", "--count", "10000"]).len(), 10_000);
}
