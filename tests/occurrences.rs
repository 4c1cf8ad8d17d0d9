//! Scheduling you can see: the occurrence ledger across downtime, catch-up policies, expected
//! outside schedules and the alerts of jobs gone quiet or failing, per-job zones, `check`.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use serde_json::Value;

use crate::support::intake::{Intake, Kind};
use crate::support::webhook::Receiver;
use crate::support::{Env, wait_until};

/// A per-second schedule on a quick job with nothing to do.
fn every_second() -> Env {
    Env::new().with("EDGECRON_SCHEDULE_APPROVALS_EXPIRE", "* * * * * *")
}

fn stop(mut server: crate::support::Server) {
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
}

fn count(env: &Env, job: &str, outcome: &str) -> i64 {
    env.query_i64(&format!(
        "SELECT COUNT(*) FROM schedule_occurrences WHERE job = '{job}' AND outcome = '{outcome}'"
    ))
}

fn alerts_of(receiver: &Receiver, kind: &str) -> Vec<Value> {
    receiver
        .bodies()
        .into_iter()
        .filter(|body| body["type"] == kind)
        .collect()
}

#[test]
fn downtime_is_coalesced_and_scheduled_runs_carry_their_fire_time_and_lag() {
    let env = every_second();
    let server = env.serve();
    let job = "approvals-expire";
    wait_until(Duration::from_secs(15), || count(&env, job, "ran") >= 2);
    stop(server);
    // Down while at least 3 fire times pass.
    let last = env.query_i64(&format!(
        "SELECT CAST(strftime('%s', MAX(scheduled_for)) AS INTEGER) FROM schedule_occurrences WHERE job = '{job}'"
    ));
    wait_until(Duration::from_secs(15), || {
        Utc::now().timestamp() >= last + 4
    });
    let server = env.serve();
    // The catch-up run, then a fire time run on time after it.
    wait_until(Duration::from_secs(15), || {
        count(&env, job, "coalesced") >= 3
            && env.query_i64(&format!(
                "SELECT COUNT(*) FROM schedule_occurrences WHERE job = '{job}' AND outcome = 'ran' AND run_id > (SELECT MAX(run_id) FROM schedule_occurrences WHERE job = '{job}' AND outcome = 'coalesced')"
            )) >= 1
    });

    // The ledger, over HTTP as strictly as the run history.
    let reply = server.trigger(
        "GET",
        "/api/v1/occurrences?job=approvals-expire&limit=1000",
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ledger = reply.json();
    for (query, status) in [
        ("?jobs=approvals-expire", 400),
        ("?limit=5&limit=6", 400),
        ("?job=no-such-job", 404),
    ] {
        let path = format!("/api/v1/occurrences{query}");
        assert_eq!(server.trigger("GET", &path, None).status, status, "{query}");
    }
    assert_eq!(server.get("/api/v1/occurrences").status, 401);
    stop(server);

    let ledger = ledger.as_array().unwrap();
    let coalesced: Vec<&Value> = ledger
        .iter()
        .filter(|row| row["outcome"] == "coalesced")
        .collect();
    assert!(coalesced.len() >= 3, "{ledger:#?}");
    // Coalesced fire times are served by the one catch-up run after the restart.
    let catch_up = coalesced[0]["runId"].as_i64().expect("served by a run");
    assert!(coalesced.iter().all(|row| row["runId"] == catch_up));
    for row in ledger {
        for key in ["job", "scheduledFor", "outcome", "runId", "lagMs"] {
            assert!(row.get(key).is_some(), "{key} in {row}");
        }
    }
    let fire_times: Vec<&str> = ledger
        .iter()
        .map(|row| row["scheduledFor"].as_str().unwrap())
        .collect();
    let mut newest_first = fire_times.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(fire_times, newest_first, "newest first");
    // Every fire time between the first and the last is accounted for once.
    let times: Vec<DateTime<Utc>> = fire_times
        .iter()
        .rev()
        .map(|text| text.parse().unwrap())
        .collect();
    assert!(
        times
            .windows(2)
            .all(|pair| pair[1] - pair[0] == chrono::Duration::seconds(1))
    );

    let runs = env.run_json(&["runs", "approvals-expire", "--limit", "100", "--json"], 0);
    let mut lags: Vec<i64> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|run| {
            assert_eq!(run["trigger"], "schedule");
            assert!(run["scheduledFor"].is_string(), "{run}");
            run["lagMs"].as_i64().expect("lagMs")
        })
        .collect();
    lags.sort_unstable();
    let median = lags[lags.len() / 2];
    eprintln!(
        "schedule lag over {} runs: median {median} ms, all {lags:?}",
        lags.len()
    );
    assert!(median < 100, "median lag {median} ms: {lags:?}");
    let text = env.run(&["occurrences", "approvals-expire", "--limit", "3"]);
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("JOB"));
}

/// Starts `serve` as if it had been down for the last 5 seconds (its last handled fire time
/// 5 s ago) and waits until the scheduler has handled that downtime and one fire time after.
fn after_a_five_second_downtime(env: &Env) -> Vec<(String, String, Option<i64>)> {
    assert!(env.run(&["migrate"]).status.success());
    env.db()
        .execute(
            "INSERT INTO schedule_state (job, last_fire_at)
             VALUES ('approvals-expire', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-5 seconds'))",
            [],
        )
        .unwrap();
    let server = env.serve();
    wait_until(Duration::from_secs(15), || {
        count(env, "approvals-expire", "ran") >= 1
    });
    stop(server);
    let conn = env.db();
    let mut statement = conn
        .prepare(
            "SELECT scheduled_for, outcome, run_id FROM schedule_occurrences
              WHERE job = 'approvals-expire' ORDER BY scheduled_for",
        )
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn catch_up_all_runs_every_fire_time_of_a_downtime_and_skip_none() {
    let all = every_second().with("EDGECRON_CATCHUP_APPROVALS_EXPIRE", "all");
    let ledger = after_a_five_second_downtime(&all);
    let missed: Vec<&(String, String, Option<i64>)> = ledger
        .iter()
        .filter(|(_, outcome, _)| outcome == "coalesced")
        .collect();
    assert!(missed.len() >= 5, "{ledger:#?}");
    for (fire, _, run_id) in &missed {
        let run_id = run_id.expect("each served by its own run");
        let served = all.strings(&format!(
            "SELECT scheduled_for FROM job_runs WHERE id = {run_id} AND status = 'ok'"
        ));
        assert_eq!(served, [fire.as_str()]);
    }
    let run_ids: std::collections::BTreeSet<i64> =
        missed.iter().filter_map(|(_, _, run_id)| *run_id).collect();
    assert_eq!(run_ids.len(), missed.len(), "one run per fire time");

    let skip = every_second().with("EDGECRON_CATCHUP_APPROVALS_EXPIRE", "skip");
    let ledger = after_a_five_second_downtime(&skip);
    let skipped: Vec<&(String, String, Option<i64>)> = ledger
        .iter()
        .filter(|(_, outcome, _)| outcome == "coalesced")
        .collect();
    assert!(skipped.len() >= 5, "{ledger:#?}");
    assert!(skipped.iter().all(|(_, _, run_id)| run_id.is_none()));
    let last_skipped = &skipped.last().unwrap().0;
    assert_eq!(
        skip.query_i64(&format!(
            "SELECT COUNT(*) FROM job_runs WHERE scheduled_for <= '{last_skipped}'"
        )),
        0,
        "no run for a skipped fire time"
    );
}

#[test]
fn an_expected_trigger_that_never_comes_raises_one_overdue_and_a_run_recovers() {
    let receiver = Receiver::start();
    let env = Env::new()
        .with("EDGECRON_EXPECT_CLEANUP", "* * * * * *")
        .with("EDGECRON_GRACE_CLEANUP", "2")
        .with("ALERT_WEBHOOK_URL", &receiver.url())
        .with("EDGECRON_LOG_FORMAT", "json");
    let server = env.serve();
    wait_until(Duration::from_secs(15), || {
        !alerts_of(&receiver, "job_overdue").is_empty()
    });
    // The silence goes on (two more fire times missed): still one alert.
    let missed = count(&env, "cleanup", "missed");
    wait_until(Duration::from_secs(15), || {
        count(&env, "cleanup", "missed") >= missed + 2
    });
    let overdue = alerts_of(&receiver, "job_overdue");
    assert_eq!(overdue.len(), 1, "{overdue:#?}");
    assert_eq!(overdue[0]["job"], "cleanup");
    assert_eq!(overdue[0]["source"], "expected");
    assert_eq!(overdue[0]["graceSeconds"], 2);
    assert!(count(&env, "cleanup", "missed") >= 2);
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("edgecron_job_overdue{job_name=\"cleanup\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgecron_occurrences_total{job_name=\"cleanup\",outcome=\"missed\"}")
    );
    let jobs = server.trigger("GET", "/api/v1/jobs", None).json();
    let cleanup = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "cleanup")
        .unwrap();
    assert!(cleanup["overdueSince"].is_string(), "{cleanup}");
    assert_eq!(cleanup["expected"], "* * * * * *");

    // The outside trigger comes back.
    assert_eq!(
        server.trigger("POST", "/api/v1/cron/cleanup", None).status,
        200
    );
    wait_until(Duration::from_secs(10), || {
        !alerts_of(&receiver, "job_recovered").is_empty()
    });
    let recovered = &alerts_of(&receiver, "job_recovered")[0];
    assert_eq!(recovered["since"], overdue[0]["dueAt"]);
    // One reading of the store serves /metrics for two seconds.
    wait_until(Duration::from_secs(10), || {
        server
            .get("/metrics")
            .body
            .contains("edgecron_job_overdue{job_name=\"cleanup\"} 0")
    });
    // The alert is one JSON log line with its type at the top.
    let logged: Vec<Value> = server
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "edgecron::alert")
        .collect();
    assert!(
        logged
            .iter()
            .any(|line| line["type"] == "job_overdue" && line["job"] == "cleanup")
    );
    assert!(logged.iter().any(|line| line["type"] == "job_recovered"));
}

#[test]
fn three_failed_runs_in_a_row_raise_one_job_failing_whatever_triggered_them() {
    let receiver = Receiver::start();
    let closed_port = crate::support::free_port();
    let env = Env::new()
        .with("SIEM_BACKEND", "splunk")
        .with("SIEM_ENDPOINT", &format!("http://127.0.0.1:{closed_port}"))
        .with("SIEM_API_KEY", crate::support::intake::API_KEY)
        .with("EDGECRON_JOB_DEADLINE_SECS", "1")
        .with("ALERT_WEBHOOK_URL", &receiver.url());
    assert!(env.run(&["migrate"]).status.success());
    env.db()
        .execute(
            "INSERT INTO audit_log (id, tenant_id, created_at) VALUES ('a1', 't', '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
    for run in 1..=4 {
        env.run_json(&["run", "siem-ship"], 1);
        let failing = alerts_of(&receiver, "job_failing");
        assert_eq!(failing.len(), usize::from(run >= 3), "after run {run}");
    }
    let failing = &alerts_of(&receiver, "job_failing")[0];
    assert_eq!(failing["job"], "siem-ship");
    assert_eq!(failing["failedRuns"], 3);

    // The intake is back: the next run ends ok and resolves it.
    let intake = Intake::start(Kind::Splunk, &[]);
    let env = intake.configure(env);
    env.run_json(&["run", "siem-ship"], 0);
    assert_eq!(alerts_of(&receiver, "job_failing_resolved").len(), 1);
    assert_eq!(alerts_of(&receiver, "job_failing").len(), 1);
}

#[test]
fn fire_times_while_cron_is_disabled_are_recorded_as_paused() {
    let env = every_second().with("CRON_ENABLED", "false");
    let server = env.serve();
    wait_until(Duration::from_secs(10), || {
        count(&env, "approvals-expire", "paused") >= 2
    });
    stop(server);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM job_runs WHERE job = 'approvals-expire'"),
        0
    );
}

#[test]
fn a_jobs_own_zone_moves_its_next_run_and_check_validates_without_the_store() {
    let env = Env::new().with("EDGECRON_TZ_CLEANUP", "Asia/Kolkata");
    let check = env.run(&["check"]);
    assert_eq!(check.status.code(), Some(0), "{check:?}");
    let table = String::from_utf8_lossy(&check.stdout);
    assert!(
        table
            .lines()
            .any(|line| line.starts_with("cleanup") && line.contains("Asia/Kolkata")),
        "{table}"
    );
    assert!(!env.db_path().exists(), "check must not open the store");

    let jobs = env.run_json(&["jobs", "--json"], 0);
    let cleanup = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "cleanup")
        .unwrap();
    assert_eq!(cleanup["zone"], "Asia/Kolkata");
    let next: DateTime<Utc> = cleanup["nextRun"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        (next.hour(), next.minute()),
        (23, 0),
        "04:30 IST is 23:00 UTC"
    );

    let bad = Env::new()
        .with("EDGECRON_TZ_CLEANUP", "Mars/Base")
        .with("EDGECRON_CATCHUP_SIEM_SHIP", "sometimes");
    let output = bad.run(&["check"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 2, "one line per problem: {stderr}");
    assert!(stderr.contains("EDGECRON_TZ_CLEANUP=Mars/Base"), "{stderr}");
    assert!(stderr.contains("EDGECRON_CATCHUP_SIEM_SHIP"), "{stderr}");
    assert!(!bad.data_dir().join("edgecron.db").exists());
    // Every other command stops at the first problem, with exit 2.
    assert_eq!(bad.run(&["jobs"]).status.code(), Some(2));
}
