//! The built-in scheduler inside `edgecron serve`.

use std::time::Duration;

use crate::support::{Env, wait_until};

#[test]
fn a_six_field_every_second_schedule_fires_and_is_recorded_as_schedule() {
    let env = Env::new().with("EDGECRON_SCHEDULE_APPROVALS_EXPIRE", "* * * * * *");
    let server = env.serve();
    wait_until(Duration::from_secs(15), || {
        env.query_i64("SELECT COUNT(*) FROM job_runs WHERE job = 'approvals-expire' AND trigger = 'schedule' AND status = 'ok'") >= 3
    });
    drop(server);
    let distinct_seconds = env.query_i64(
        "SELECT COUNT(DISTINCT substr(started_at, 1, 19)) FROM job_runs WHERE job = 'approvals-expire'",
    );
    let runs = env.query_i64("SELECT COUNT(*) FROM job_runs WHERE job = 'approvals-expire'");
    assert_eq!(distinct_seconds, runs, "at most one run per second");
}

#[test]
fn a_run_missed_during_downtime_is_made_up_once_at_start() {
    // Yearly, at New Year: no real fire time can fall inside this test.
    let env = Env::new().with("EDGECRON_SCHEDULE_OUTBOX_REAPER", "0 0 1 1 *");
    env.run_json(&["demo"], 0);
    // The scheduler last handled a fire time three years ago: three have passed since.
    env.db()
        .execute(
            "INSERT INTO schedule_state (job, last_fire_at) VALUES ('outbox-reaper', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-3 years'))",
            [],
        )
        .unwrap();
    let server = env.serve();
    wait_until(Duration::from_secs(10), || {
        env.query_i64("SELECT COUNT(*) FROM job_runs WHERE job = 'outbox-reaper' AND status = 'ok'")
            == 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM job_runs WHERE job = 'outbox-reaper'"),
        1
    );
    assert!(
        server
            .log()
            .contains("3 fire times passed since it last ran; catch-up once: 1 run(s) now"),
        "{}",
        server.log()
    );
    // Each passed fire time is in the ledger, served by the one catch-up run.
    let coalesced = env.strings(
        "SELECT outcome || ' ' || (run_id IS NOT NULL) FROM schedule_occurrences WHERE job = 'outbox-reaper'",
    );
    assert_eq!(coalesced, ["coalesced 1", "coalesced 1", "coalesced 1"]);
    // The handled fire time is now the latest one, so a restart does not run it again.
    drop(server);
    let _again = env.serve();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM job_runs WHERE job = 'outbox-reaper'"),
        1
    );
}

#[test]
fn with_every_job_disabled_the_scheduler_idles() {
    let mut env = Env::new();
    let jobs = env.run_json(&["jobs", "--json"], 0);
    for job in jobs.as_array().unwrap() {
        let variable = job["name"]
            .as_str()
            .unwrap()
            .to_uppercase()
            .replace('-', "_");
        env = env.with(&format!("EDGECRON_ENABLED_{variable}"), "false");
    }
    let server = env.serve();
    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = server.cpu_ticks() - before;
    // Clock ticks are 10 ms: a spinning loop would use about 200 of them here.
    assert!(used < 20, "idle server used {used} ticks of CPU in 2 s");
    assert_eq!(
        server
            .trigger("GET", "/api/v1/cron/cleanup?dryRun=true", None)
            .status,
        200
    );
}

#[test]
fn disabled_and_operator_overrides_are_honoured() {
    let env = Env::new()
        .with("EDGECRON_SCHEDULE_APPROVALS_EXPIRE", "* * * * * *")
        .with("EDGECRON_ENABLED_APPROVALS_EXPIRE", "false");
    let jobs = env.run_json(&["jobs", "--json"], 0);
    let approvals = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "approvals-expire")
        .unwrap();
    assert_eq!(approvals["schedule"], "* * * * * *");
    assert_eq!(approvals["enabled"], false);
    assert!(approvals["nextRun"].is_null());
    let _server = env.serve();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM job_runs WHERE job = 'approvals-expire'"),
        0
    );
}

#[test]
fn two_schedulers_on_one_store_run_each_fire_time_once() {
    // Regression: two `serve` processes on one store (a rolling deploy, a shared volume) ran
    // flow-scheduler-tick and cron-tick 4 times for 2 fire times; the ledger showed 2 `ran`.
    let env = Env::new()
        .with("EDGECRON_SCHEDULE_FLOW_SCHEDULER_TICK", "* * * * * *")
        .with("EDGECRON_SCHEDULE_CRON_TICK", "* * * * * *");
    env.run_json(&["demo", "--rows", "100"], 0);
    let first = env.serve();
    let second = env.serve();
    wait_until(Duration::from_secs(30), || {
        env.query_i64(
            "SELECT COUNT(DISTINCT scheduled_for) FROM job_runs WHERE job = 'cron-tick' AND scheduled_for IS NOT NULL",
        ) >= 8
    });
    drop(first);
    drop(second);
    let twice = env.strings(
        "SELECT job || ' ' || scheduled_for FROM job_runs WHERE scheduled_for IS NOT NULL
          GROUP BY job, scheduled_for HAVING COUNT(*) > 1",
    );
    assert!(twice.is_empty(), "fire times run twice: {twice:?}");
    for job in ["flow-scheduler-tick", "cron-tick"] {
        let ran = env.query_i64(&format!(
            "SELECT COUNT(*) FROM schedule_occurrences WHERE job = '{job}' AND outcome = 'ran'"
        ));
        let runs = env.query_i64(&format!(
            "SELECT COUNT(*) FROM job_runs WHERE job = '{job}' AND trigger = 'schedule'"
        ));
        assert_eq!(
            ran, runs,
            "{job}: each scheduled run is one `ran` fire time"
        );
    }
}
