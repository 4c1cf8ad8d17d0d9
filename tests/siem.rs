//! `siem-ship` against a local intake for each backend, with the failures real intakes have.

use std::collections::BTreeSet;

use chrono::{Duration, SecondsFormat, Utc};
use serde_json::Value;

use crate::support::Env;
use crate::support::intake::{Fault, Intake, Kind};

/// Adds `count` audit rows created over the last hour, several sharing each `created_at`;
/// `actions` sets the action of chosen rows (by position). Answers the ids in cursor order.
fn add_audit_rows(env: &Env, count: usize, actions: &[(usize, &str)]) -> Vec<String> {
    add_rows_at(env, count, actions, Utc::now() - Duration::hours(1), "a")
}

fn add_rows_at(
    env: &Env,
    count: usize,
    actions: &[(usize, &str)],
    start: chrono::DateTime<Utc>,
    prefix: &str,
) -> Vec<String> {
    assert!(env.run(&["migrate"]).status.success());
    let mut db = env.db();
    let tx = db.transaction().unwrap();
    let mut ids = Vec::new();
    for position in 0..count {
        let id = format!("{prefix}{position:06}");
        let created_at = (start + Duration::milliseconds(100 * (position / 7) as i64))
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let action = actions
            .iter()
            .find(|(at, _)| *at == position)
            .map_or("user.login", |(_, action)| action);
        tx.execute(
            "INSERT INTO audit_log (id, tenant_id, actor, action, target, details, created_at)
             VALUES (?1, 'acme', 'alice', ?2, 'user:42', '{\"ip\":\"10.0.0.7\"}', ?3)",
            (&id, action, created_at),
        )
        .unwrap();
        ids.push(id);
    }
    tx.commit().unwrap();
    ids
}

fn ids_except(ids: &[String], positions: &[usize]) -> BTreeSet<String> {
    ids.iter()
        .enumerate()
        .filter(|(position, _)| !positions.contains(position))
        .map(|(_, id)| id.clone())
        .collect()
}

fn dead_letters(env: &Env) -> Vec<String> {
    env.strings("SELECT audit_id FROM siem_dead_letters ORDER BY audit_id")
}

fn cursor_id(env: &Env, backend: &str) -> Option<String> {
    env.db()
        .query_row(
            "SELECT id FROM siem_cursors WHERE backend = ?1",
            [backend],
            |row| row.get(0),
        )
        .ok()
}

/// Runs the job and checks what every backend must guarantee afterwards.
fn assert_delivered(env: &Env, intake: &Intake, ids: &[String], refused: &[usize], archived: u64) {
    let backend = intake.backend();
    let expected_code = if refused.is_empty() { 0 } else { 3 };
    let result = env.run_json(&["run", "siem-ship"], expected_code);
    let delivered = ids_except(ids, refused);
    let received_in_order = intake.received();
    let received: BTreeSet<String> = received_in_order.iter().cloned().collect();
    // Every injected fault strikes before the intake takes anything: no row may come twice.
    assert_eq!(received.len(), received_in_order.len(), "duplicates");
    assert_eq!(
        received.len() as u64 + archived,
        delivered.len() as u64,
        "{result}"
    );
    assert!(received.is_subset(&delivered), "{result}");
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
    assert_eq!(intake.faults_left(), 0);
    assert_eq!(result["backend"], backend);
    assert_eq!(result["errors"], refused.len() as u64, "{result}");
    assert_eq!(result["archived"], archived, "{result}");
    assert_eq!(
        result["shipped"],
        (ids.len() - refused.len()) as u64 - archived,
        "{result}"
    );
    assert_eq!(result["rowsScanned"], ids.len() as u64, "{result}");
    assert_eq!(result["backlog"], 0, "{result}");
    assert_eq!(
        result["cursor"]["id"],
        ids.last().unwrap().as_str(),
        "{result}"
    );
    assert!(result["windowSeconds"].is_u64());
    assert_eq!(
        cursor_id(env, backend).as_deref(),
        Some(ids.last().unwrap().as_str())
    );
    assert_eq!(
        env.query_i64("SELECT COALESCE(SUM(stalled_runs), 0) FROM siem_cursors"),
        0,
        "delivery resets the stall count"
    );
    let mut refused_ids: Vec<String> = refused
        .iter()
        .map(|&position| ids[position].clone())
        .collect();
    refused_ids.sort();
    assert_eq!(dead_letters(env), refused_ids);

    let again = env.run_json(&["run", "siem-ship"], 0);
    assert_eq!(
        (again["shipped"].as_u64(), again["rowsScanned"].as_u64()),
        (Some(0), Some(0))
    );
}

#[test]
fn splunk_receives_every_row_through_errors_throttling_and_dropped_connections() {
    let intake = Intake::start(
        Kind::Splunk,
        &[
            Fault::Status(500),
            Fault::Throttle(1),
            Fault::Drop,
            Fault::Status(503),
        ],
    );
    let env = intake.configure(Env::new());
    let ids = add_audit_rows(&env, 1_234, &[(100, "poison"), (1_100, "poison")]);
    assert_delivered(&env, &intake, &ids, &[100, 1_100], 0);
    // The 429 asked for a second's pause before the next attempt.
    let arrivals = intake.arrivals();
    assert!(arrivals[2] - arrivals[1] >= std::time::Duration::from_secs(1));
}

#[test]
fn datadog_receives_every_row_and_archives_what_it_would_drop() {
    let intake = Intake::start(
        Kind::Datadog,
        &[Fault::Throttle(1), Fault::Status(502), Fault::Drop],
    );
    let env = intake.configure(Env::new());
    // Rows a day old are past the intake's 18 hours: archived, not sent to be dropped.
    let old = add_rows_at(&env, 12, &[], Utc::now() - Duration::hours(24), "0old");
    let recent = add_audit_rows(&env, 1_100, &[(5, "poison"), (640, "poison")]);
    let ids: Vec<String> = old.iter().chain(&recent).cloned().collect();
    let refused = [old.len() + 5, old.len() + 640];
    assert_delivered(&env, &intake, &ids, &refused, old.len() as u64);

    let archived: BTreeSet<String> = archive_ids(&env);
    assert_eq!(archived, old.iter().cloned().collect());
}

#[test]
fn elastic_retries_throttled_items_and_dead_letters_refused_ones() {
    let intake = Intake::start(
        Kind::Elastic,
        &[Fault::Drop, Fault::Status(503), Fault::Throttle(1)],
    );
    let env = intake.configure(Env::new());
    let ids = add_audit_rows(
        &env,
        1_050,
        &[(3, "busy"), (499, "busy"), (700, "poison"), (1_049, "busy")],
    );
    // One row already indexed, as if an acknowledgement had been lost: 409, delivered.
    intake.already_indexed(&[&ids[10]]);
    assert_delivered(&env, &intake, &ids, &[700], 0);
}

#[test]
fn an_intake_down_for_a_whole_run_moves_nothing_and_the_next_run_delivers_everything() {
    let closed_port = crate::support::free_port();
    let env = Env::new()
        .with("SIEM_BACKEND", "splunk")
        .with("SIEM_ENDPOINT", &format!("http://127.0.0.1:{closed_port}"))
        .with("SIEM_API_KEY", crate::support::intake::API_KEY)
        .with("EDGECRON_JOB_DEADLINE_SECS", "3");
    let ids = add_audit_rows(&env, 600, &[]);
    let output = env.run(&["run", "siem-ship"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nothing shipped (1 runs in a row), 600 rows wait"),
        "{stderr}"
    );
    assert_eq!(
        cursor_id(&env, "splunk").as_deref(),
        Some(""),
        "the cursor has not moved"
    );
    let again = env.run(&["run", "siem-ship"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("(2 runs in a row)"));

    let intake = Intake::start(Kind::Splunk, &[]);
    let env = intake.configure(env);
    assert_delivered(&env, &intake, &ids, &[], 0);
}

#[test]
fn rows_committed_late_or_stamped_in_sqlite_form_are_shipped_in_commit_order() {
    // Regression: a (created_at, id) cursor passed rows committed after later-stamped ones,
    // and rows in SQLite's own time form sorted where their text put them.
    let intake = Intake::start(Kind::Elastic, &[]);
    let env = intake.configure(Env::new());
    let first = add_rows_at(&env, 20, &[], Utc::now(), "now");
    env.run_json(&["run", "siem-ship"], 0);
    let two_hours_back = add_rows_at(&env, 30, &[], Utc::now() - Duration::hours(2), "late");
    let sqlite_form = (Utc::now() - Duration::hours(3))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    env.db()
        .execute(
            "INSERT INTO audit_log (id, tenant_id, action, created_at) VALUES ('sqlite-form', 'acme', 'x', ?1)",
            [&sqlite_form],
        )
        .unwrap();
    let result = env.run_json(&["run", "siem-ship"], 0);
    assert_eq!(result["shipped"], 31, "{result}");
    assert_eq!(result["backlog"], 0, "{result}");
    assert_eq!(result["cursor"]["id"], "sqlite-form", "the last committed");
    let received = intake.received();
    let mut expected: Vec<String> = first.into_iter().chain(two_hours_back).collect();
    expected.push("sqlite-form".into());
    assert_eq!(received, expected, "each once, in commit order");
}

#[test]
fn an_item_refused_for_want_of_rights_stops_delivery_instead_of_dead_lettering() {
    let intake = Intake::start(Kind::Elastic, &[]);
    let env = intake.configure(Env::new());
    let ids = add_audit_rows(&env, 50, &[(20, "forbidden")]);
    let result = env.run_json(&["run", "siem-ship"], 3);
    assert_eq!(result["shipped"], 20, "{result}");
    assert_eq!(result["errors"], 0, "{result}");
    assert!(
        result["stopped"]
            .as_str()
            .unwrap()
            .contains("security_exception"),
        "{result}"
    );
    assert_eq!(
        cursor_id(&env, "elastic").as_deref(),
        Some(ids[19].as_str())
    );
    assert!(dead_letters(&env).is_empty());
}

#[test]
fn a_datadog_intake_that_refuses_every_entry_dead_letters_none() {
    let intake = Intake::start(Kind::Datadog, &[]);
    let env = intake.configure(Env::new());
    add_audit_rows(&env, 3, &[(0, "poison"), (1, "poison"), (2, "poison")]);
    let output = env.run(&["run", "siem-ship"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("check SIEM_ENDPOINT"));
    assert!(dead_letters(&env).is_empty());
    assert_eq!(cursor_id(&env, "datadog").as_deref(), Some(""));
}

#[test]
fn requests_shrink_until_a_proxy_body_limit_lets_them_through() {
    for kind in [Kind::Splunk, Kind::Elastic] {
        let intake = Intake::start_limited(kind, 20_000);
        let env = intake.configure(Env::new());
        let ids = add_audit_rows(&env, 300, &[]);
        assert_delivered(&env, &intake, &ids, &[], 0);
        assert!(intake.requests() > 5, "{kind:?}: {}", intake.requests());
    }
}

#[test]
fn a_dry_run_reports_the_backlog_and_sends_nothing() {
    let intake = Intake::start(Kind::Splunk, &[]);
    let env = intake.configure(Env::new());
    add_audit_rows(&env, 20, &[]);
    let result = env.run_json(&["run", "siem-ship", "--dry-run"], 0);
    assert_eq!(
        (result["backlog"].as_u64(), result["dryRun"].as_bool()),
        (Some(20), Some(true))
    );
    assert_eq!(intake.requests(), 0);
}

#[test]
fn an_unset_or_unknown_backend_is_skipped() {
    let env = Env::new();
    let result = env.run_json(&["run", "siem-ship"], 0);
    assert_eq!(result["skipped"], "SIEM_BACKEND is not set");
    let env = env.with("SIEM_BACKEND", "graylog");
    let result = env.run_json(&["run", "siem-ship"], 0);
    assert!(
        result["skipped"].as_str().unwrap().contains("graylog"),
        "{result}"
    );
}

#[test]
fn bad_siem_configuration_stops_run_and_serve_with_one_line() {
    let base = || {
        Env::new()
            .with("SIEM_BACKEND", "elastic")
            .with("SIEM_ENDPOINT", "http://127.0.0.1:9200")
            .with("SIEM_API_KEY", "k3y-that-must-not-leak")
    };
    for (env, variable) in [
        (base().without("SIEM_ENDPOINT"), "SIEM_ENDPOINT"),
        (base().without("SIEM_API_KEY"), "SIEM_API_KEY"),
        (
            base().with("SIEM_ENDPOINT", "127.0.0.1:9200"),
            "SIEM_ENDPOINT",
        ),
        (
            base().with("SIEM_ENDPOINT", "http://127.0.0.1:9200/_bulk"),
            "SIEM_ENDPOINT",
        ),
        (base().with("SIEM_INDEX", "Audit Log"), "SIEM_INDEX"),
        (
            base()
                .with("SIEM_BACKEND", "datadog")
                .with("SIEM_INDEX", "main"),
            "SIEM_INDEX",
        ),
        (
            base().with("SIEM_TIMEOUT_SECS", "forever"),
            "SIEM_TIMEOUT_SECS",
        ),
    ] {
        for command in [&["run", "siem-ship"][..], &["serve"][..]] {
            let output = env.run(command);
            assert_eq!(output.status.code(), Some(2), "{command:?} {variable}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{stderr}");
            assert!(lines[0].contains(variable), "{stderr}");
            assert!(
                !stderr.contains("k3y-that-must-not-leak"),
                "the key leaked: {stderr}"
            );
        }
    }
}

/// The ids in the NDJSON archives under the data dir.
fn archive_ids(env: &Env) -> BTreeSet<String> {
    let dir = env
        .data_dir()
        .join(format!("archive/audit_log/site={}", env.site()));
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            ids.insert(row["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

#[test]
fn with_indexer_acknowledgement_an_unacknowledged_request_is_sent_again() {
    let intake = Intake::start_acknowledging(1);
    let env = intake.configure(Env::new()).with("SIEM_TIMEOUT_SECS", "1");
    let ids = add_audit_rows(&env, 1_234, &[]);
    let first = env.run_json(&["run", "siem-ship"], 3);
    assert_eq!(first["shipped"], 500, "{first}");
    assert!(
        first["stopped"]
            .as_str()
            .unwrap()
            .contains("did not acknowledge request 1"),
        "{first}"
    );
    let second = env.run_json(&["run", "siem-ship"], 0);
    assert_eq!(second["shipped"], 734, "{second}");
    assert_eq!(second["backlog"], 0, "{second}");
    assert_eq!(
        intake.acknowledged(),
        ids,
        "every row acknowledged once, in order"
    );
    assert_eq!(intake.never_acknowledged(), ids[500..1_000]);
    let received = intake.received();
    for (position, id) in ids.iter().enumerate() {
        let times = received.iter().filter(|seen| *seen == id).count();
        let expected = if (500..1_000).contains(&position) {
            2
        } else {
            1
        };
        assert_eq!(times, expected, "{id}");
    }
}

#[test]
fn an_intake_that_never_answers_leaves_the_run_not_ok() {
    // Regression: an intake that accepted connections and never answered, past the job's
    // deadline, gave `ok: true, shipped: 0`, exit 0, status `ok`: `job_failing` never fired.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut connections = Vec::new();
        silent.set_nonblocking(true).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < until {
            if let Ok((stream, _)) = silent.accept() {
                connections.push(stream);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    let env = Env::new()
        .with("SIEM_BACKEND", "elastic")
        .with("SIEM_ENDPOINT", &format!("http://{address}"))
        .with("SIEM_API_KEY", "key")
        .with("SIEM_TIMEOUT_SECS", "1")
        .with("EDGECRON_JOB_DEADLINE_SECS", "3");
    add_audit_rows(&env, 20, &[]);
    let output = env.run(&["run", "siem-ship"]);
    assert_ne!(output.status.code(), Some(0), "{output:?}");
    let runs = env.run_json(&["runs", "siem-ship", "--json"], 0);
    assert_ne!(runs[0]["status"], "ok", "{runs}");
    drop(held);
}
