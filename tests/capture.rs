//! Capture in commit order: rows the application commits late, backfills, stamps in any time
//! form, or writes unexportable are each exported once; an upgraded store goes on where its
//! checkpoints were.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use rusqlite::Connection;
use serde_json::Value;

use crate::support::intake::{Intake, Kind};
use crate::support::{Env, assert_exported_exactly_once, drain_exports, exported_rows};

/// A demo store whose first export walk is done, so later rows go through the capture.
fn exported_demo(rows: &str) -> Env {
    let env = Env::new()
        .with("EXPORT_BATCH_SIZE", "500")
        .with("RUST_LOG", "warn");
    env.run_json(&["demo", "--rows", rows], 0);
    drain_exports(&env);
    env
}

fn tenant<'a>(result: &'a Value, tenant_id: &str) -> &'a Value {
    result["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tenant| tenant["tenantId"] == tenant_id)
        .unwrap()
}

#[test]
fn rows_committed_after_later_stamped_ones_are_exported_once() {
    // Regression: with a (created_at, id) checkpoint, about 1 row in 80 stamped before its
    // commit was passed by an export that had already seen later-stamped rows.
    let env = exported_demo("200");
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    // (stamp, commit rank) of every row written.
    let written = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (stop, commits, written) =
                (Arc::clone(&stop), Arc::clone(&commits), Arc::clone(&written));
            let conn = env.db();
            std::thread::spawn(move || {
                conn.busy_timeout(Duration::from_secs(20)).unwrap();
                let mut random = fastrand::Rng::with_seed(writer);
                let tenants = ["acme", "globex", "initech", "umbrella"];
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let stamp = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
                    // The application's work between stamping the row and committing it.
                    std::thread::sleep(Duration::from_millis(random.u64(0..=30)));
                    conn.execute(
                        "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES (?1, ?2, ?3)",
                        (format!("w{writer}-{n:05}"), tenants[random.usize(0..4)], &stamp),
                    )
                    .unwrap();
                    let rank = commits.fetch_add(1, Ordering::SeqCst);
                    written.lock().unwrap().push((stamp, rank));
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut runs = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let output = env.run(&["run", "export-interactions"]);
        assert!(output.status.success(), "{output:?}");
        runs += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }
    drain_exports(&env);
    assert_exported_exactly_once(&env);
    // The case happened: rows were committed after rows stamped later than they were.
    let mut written = written.lock().unwrap().clone();
    written.sort_by_key(|(_, rank)| *rank);
    let mut latest = String::new();
    let mut late = 0;
    for (stamp, _) in &written {
        if *stamp < latest {
            late += 1;
        }
        latest = latest.max(stamp.clone());
    }
    assert!(
        late > 10,
        "{late} of {} rows committed late over {runs} runs",
        written.len()
    );
}

#[test]
fn backfills_and_every_time_form_land_once_in_the_day_of_their_instant() {
    let env = exported_demo("300");
    let days_ago = |days: i64| {
        (Utc::now() - chrono::Duration::days(days)).to_rfc3339_opts(SecondsFormat::Millis, true)
    };
    let rows = [
        ("week-old", days_ago(7)),
        ("month-old", days_ago(40)),
        ("sqlite-form", "2026-11-30 23:30:00".to_string()),
        ("minus-five", "2026-11-30T22:00:00-05:00".to_string()),
        ("plus-five-thirty", "2026-12-01T02:00:00+05:30".to_string()),
        ("no-millis", "2026-11-29T12:00:00Z".to_string()),
    ];
    for (id, created_at) in &rows {
        env.db()
            .execute(
                "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES (?1, 'acme', ?2)",
                (id, created_at),
            )
            .unwrap();
    }
    let result = env.run_json(&["run", "export-interactions"], 0);
    assert_eq!(result["totalExported"], rows.len(), "{result}");
    assert_exported_exactly_once(&env);
    let exported: HashMap<String, (String, String)> = exported_rows(&env)
        .into_iter()
        .map(|row| (row.id, (row.created_at, row.file.display().to_string())))
        .collect();
    for (id, created_at, day) in [
        ("minus-five", "2026-12-01T03:00:00.000Z", "month=12/day=01"),
        (
            "plus-five-thirty",
            "2026-11-30T20:30:00.000Z",
            "month=11/day=30",
        ),
        ("sqlite-form", "2026-11-30T23:30:00.000Z", "month=11/day=30"),
        ("no-millis", "2026-11-29T12:00:00.000Z", "month=11/day=29"),
    ] {
        let (exported_at, file) = &exported[id];
        assert_eq!(exported_at, created_at, "{id}");
        assert!(file.contains(day), "{id} in {file}");
    }
}

#[test]
fn rows_that_cannot_be_exported_are_reported_never_block_and_go_once_corrected() {
    let env = exported_demo("300");
    env.db()
        .execute_batch(
            "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES ('bad-time', 'acme', 'unknown');
             INSERT INTO interaction_history (id, tenant_id, created_at) VALUES (X'deadbeef', 'acme', '2026-11-30T10:00:00.000Z');",
        )
        .unwrap();
    let insert_valid = |batch: usize| {
        for n in 0..10 {
            env.db()
                .execute(
                    "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES (?1, 'acme', ?2)",
                    (
                        format!("valid-{batch}-{n}"),
                        Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                    ),
                )
                .unwrap();
        }
    };
    for batch in 0..3 {
        insert_valid(batch);
        let result = env.run_json(&["run", "export-interactions"], 0);
        let acme = tenant(&result, "acme");
        assert_eq!(acme["exported"], 10, "{result}");
        let invalid: Vec<(&str, &str)> = acme["invalid"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| (row["id"].as_str().unwrap(), row["reason"].as_str().unwrap()))
            .collect();
        assert_eq!(
            invalid,
            [
                ("bad-time", "created_at \"unknown\" names no instant"),
                ("x'deadbeef'", "id is a BLOB, not text"),
            ],
            "{result}"
        );
    }
    assert_eq!(
        env.query_i64("SELECT invalid_rows FROM export_checkpoints WHERE tenant_id = 'acme'"),
        2
    );
    env.db()
        .execute_batch(
            "UPDATE interaction_history SET created_at = '2026-11-30T09:00:00Z' WHERE id = 'bad-time';
             UPDATE interaction_history SET id = 'was-a-blob' WHERE id = X'deadbeef';",
        )
        .unwrap();
    let corrected = env.run_json(&["run", "export-interactions"], 0);
    assert_eq!(tenant(&corrected, "acme")["exported"], 2, "{corrected}");
    assert!(tenant(&corrected, "acme").get("invalid").is_none());
    drain_exports(&env);
    assert_exported_exactly_once(&env);
    assert_eq!(
        env.query_i64("SELECT invalid_rows FROM export_checkpoints WHERE tenant_id = 'acme'"),
        0
    );
}

#[test]
fn a_store_upgraded_mid_export_exports_the_rest_exactly_once() {
    let env = Env::new().with("EXPORT_BATCH_SIZE", "25");
    let conn = previous_schema(&env);
    conn.execute_batch(
        "INSERT INTO tenants (id, name, active) VALUES ('t1', 'One', 1), ('t2', 'Two', 1), ('t3', 'Three', 1);",
    )
    .unwrap();
    let mut rows: Vec<(String, String, String)> = Vec::new();
    for (index, tenant) in ["t1", "t2", "t3"].iter().enumerate() {
        for n in 0..60 {
            let created_at = format!("2026-11-{:02}T{:02}:00:00.000Z", 1 + n / 24, n % 24);
            let id = format!("{tenant}-{n:03}");
            conn.execute(
                "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES (?1, ?2, ?3)",
                (&id, tenant, &created_at),
            )
            .unwrap();
            if n < [40, 10, 0][index] {
                rows.push((tenant.to_string(), id, created_at));
            }
        }
    }
    // What the previous release had exported: t1's first 40 rows, t2's first 10, none of t3.
    for (tenant, exported) in [("t1", 40), ("t2", 10)] {
        let mine: Vec<&(String, String, String)> =
            rows.iter().filter(|row| row.0 == tenant).collect();
        let mut days: Vec<&str> = mine.iter().map(|row| &row.2[..10]).collect();
        days.dedup();
        for day in days {
            let in_day: Vec<&&(String, String, String)> =
                mine.iter().filter(|row| row.2.starts_with(day)).collect();
            let path = format!(
                "exports/{tenant}/interaction_history/year=2026/month=11/day={}/batch-old.json",
                &day[8..10]
            );
            let lines: String = in_day
                .iter()
                .map(|(tenant, id, created_at)| {
                    format!("{{\"id\":\"{id}\",\"tenant_id\":\"{tenant}\",\"created_at\":\"{created_at}\"}}\n")
                })
                .collect();
            let file = env.data_dir().join(&path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &lines).unwrap();
            let (first, last) = (in_day[0], in_day[in_day.len() - 1]);
            conn.execute(
                "INSERT INTO export_files (path, tenant_id, partition_day, row_count, first_created_at, first_id,
                     last_created_at, last_id, bytes, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, '')",
                rusqlite::params![path, tenant, day, in_day.len() as i64, first.2, first.1, last.2, last.1, lines.len() as i64],
            )
            .unwrap();
        }
        let last = mine[exported - 1];
        conn.execute(
            "INSERT INTO export_checkpoints (tenant_id, last_created_at, last_id, rows_exported) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![tenant, last.2, last.1, exported as i64],
        )
        .unwrap();
    }
    // siem-ship had shipped the first 20 of 50 audit rows to Splunk.
    for n in 0..50 {
        conn.execute(
            "INSERT INTO audit_log (id, tenant_id, action, created_at) VALUES (?1, 't1', 'x', ?2)",
            (format!("a{n:03}"), format!("2026-11-01T00:00:{n:02}.000Z")),
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO siem_cursors (backend, created_at, id, updated_at) VALUES ('splunk', '2026-11-01T00:00:19.000Z', 'a019', '2026-11-01T01:00:00.000Z')",
        [],
    )
    .unwrap();
    drop(conn);

    drain_exports(&env);
    assert_exported_exactly_once(&env);
    let intake = Intake::start(Kind::Splunk, &[]);
    let env = intake.configure(env);
    env.run_json(&["run", "siem-ship"], 0);
    let expected: Vec<String> = (20..50).map(|n| format!("a{n:03}")).collect();
    assert_eq!(intake.received(), expected);
}

/// A store as the release before capture left it: migrations 1 to 9, applied as `migrate`
/// applies them.
fn previous_schema(env: &Env) -> Connection {
    let conn = Connection::open(env.db_path()).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(
        "CREATE TABLE schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL,
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))",
    )
    .unwrap();
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let mut files: Vec<_> = std::fs::read_dir(&schema)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let version: i64 = name[..4].parse().unwrap();
        if version > 9 {
            continue;
        }
        conn.execute_batch(&std::fs::read_to_string(&file).unwrap())
            .unwrap();
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
            (version, &name),
        )
        .unwrap();
    }
    conn
}
