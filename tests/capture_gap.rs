//! Capture that survives the application: tables rebuilt the way SQLite recommends, dropped
//! triggers, tenants that change, rows replaced, the first walk stopped part-way while rows
//! arrive, and a SIEM capture left without a backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use crate::support::intake::{Intake, Kind};
use crate::support::{
    Env, ExportedRow, assert_exported_exactly_once, drain_exports, exported_rows,
};

/// Alert lines logged (JSON log format) of `kind` in a run's stderr.
fn alerts(output: &std::process::Output, kind: &str) -> usize {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["type"] == kind)
        .count()
}

/// A demo store exported through its first walk, logging alerts as JSON.
fn exported_demo() -> Env {
    let env = Env::new()
        .with("EXPORT_BATCH_SIZE", "500")
        .with("EDGECRON_LOG_FORMAT", "json")
        .with("RUST_LOG", "warn,edgecron::alert=info");
    env.run_json(&["demo", "--rows", "400"], 0);
    drain_exports(&env);
    env
}

/// The twelve steps SQLite's documentation gives for a schema change (as Django, Prisma and
/// Alembic's batch mode do it): a new table, the rows copied, the old one dropped, the new
/// one renamed, its indexes made again; one transaction.
fn rebuild(env: &Env, table: &str, columns: &str, indexes: &str) {
    let db = env.db();
    db.execute_batch(&format!(
        "PRAGMA foreign_keys = OFF;
         BEGIN;
         CREATE TABLE new_{table} ({columns}, migrated_note TEXT);
         INSERT INTO new_{table} SELECT *, NULL FROM {table};
         DROP TABLE {table};
         ALTER TABLE new_{table} RENAME TO {table};
         {indexes}
         PRAGMA foreign_key_check;
         COMMIT;
         PRAGMA foreign_keys = ON;"
    ))
    .unwrap();
}

const INTERACTION_COLUMNS: &str =
    "id TEXT PRIMARY KEY NOT NULL, tenant_id TEXT NOT NULL DEFAULT '',
    customer_id TEXT NOT NULL DEFAULT '', channel TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT '', payload TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))";

fn capture_triggers(env: &Env, table: &str) -> i64 {
    env.query_i64(&format!(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = '{table}'"
    ))
}

/// Rows stamped now, days back (a backfill) and in SQLite's own form, for `table`.
fn insert_mixed(env: &Env, table: &str, prefix: &str, extra_columns: &str, extra_values: &str) {
    let days_ago = |days: i64| {
        (Utc::now() - chrono::Duration::days(days)).to_rfc3339_opts(SecondsFormat::Millis, true)
    };
    let db = env.db();
    for n in 0..30 {
        let created_at = match n % 3 {
            0 => days_ago(0),
            1 => days_ago(n + 2),
            _ => (Utc::now() - chrono::Duration::hours(n))
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
        };
        db.execute(
            &format!(
                "INSERT INTO {table} (id, tenant_id, created_at{extra_columns}) VALUES (?1, 'acme', ?2{extra_values})"
            ),
            (format!("{prefix}-{n:03}"), created_at),
        )
        .unwrap();
    }
}

#[test]
fn a_rebuilt_interaction_table_loses_no_row_and_raises_one_capture_gap() {
    let env = exported_demo();
    // Captured before the rebuild, not yet exported: still in the queue afterwards.
    insert_mixed(&env, "interaction_history", "before", "", "");
    rebuild(
        &env,
        "interaction_history",
        INTERACTION_COLUMNS,
        "CREATE INDEX interaction_history_tenant_created ON interaction_history (tenant_id, created_at, id);",
    );
    assert_eq!(capture_triggers(&env, "interaction_history"), 0);
    insert_mixed(&env, "interaction_history", "after", "", "");
    let output = env.run(&["run", "export-interactions"]);
    assert!(output.status.success(), "{output:?}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["captureGap"]["recovered"], 30, "{result}");
    assert_eq!(alerts(&output, "capture_gap"), 1, "{output:?}");
    assert_eq!(alerts(&output, "capture_gap_resolved"), 1, "{output:?}");
    assert_eq!(capture_triggers(&env, "interaction_history"), 2);
    // Captured again from here on.
    insert_mixed(&env, "interaction_history", "later", "", "");
    drain_exports(&env);
    assert_exported_exactly_once(&env);
    let output = env.run(&["run", "export-interactions"]);
    assert_eq!(alerts(&output, "capture_gap"), 0);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("captureGap"));
}

#[test]
fn a_dropped_trigger_is_recreated_and_the_rows_it_missed_exported_once() {
    let env = exported_demo();
    env.db()
        .execute_batch("DROP TRIGGER interaction_history_capture")
        .unwrap();
    insert_mixed(&env, "interaction_history", "dropped", "", "");
    // A dry run heals the triggers at once (as a serve start does); the rows come next run.
    let output = env.run(&["run", "export-interactions", "--dry-run"]);
    assert_eq!(alerts(&output, "capture_gap"), 1, "{output:?}");
    assert_eq!(capture_triggers(&env, "interaction_history"), 2);
    let status: Value = env.run_json(&["jobs", "--json"], 0);
    let export = status
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "export-interactions")
        .unwrap();
    assert!(
        export["captureBacklog"]["gapFoundAt"].is_string(),
        "{export}"
    );
    let output = env.run(&["run", "export-interactions"]);
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["captureGap"]["recovered"], 30, "{result}");
    assert_eq!(alerts(&output, "capture_gap"), 0, "raised once: {output:?}");
    assert_eq!(alerts(&output, "capture_gap_resolved"), 1, "{output:?}");
    drain_exports(&env);
    assert_exported_exactly_once(&env);
}

#[test]
fn a_rebuilt_audit_table_ships_every_row_once() {
    let intake = Intake::start(Kind::Elastic, &[]);
    let env = intake
        .configure(Env::new())
        .with("EDGECRON_LOG_FORMAT", "json")
        .with("RUST_LOG", "warn,edgecron::alert=info");
    env.run_json(&["demo", "--rows", "200"], 0);
    env.run_json(&["run", "siem-ship"], 0);
    insert_mixed(&env, "audit_log", "before", ", action", ", 'user.login'");
    rebuild(
        &env,
        "audit_log",
        "id TEXT PRIMARY KEY NOT NULL DEFAULT (lower(hex(randomblob(16)))),
         tenant_id TEXT NOT NULL DEFAULT '', actor TEXT NOT NULL DEFAULT 'system',
         action TEXT NOT NULL DEFAULT '', target TEXT NOT NULL DEFAULT '',
         details TEXT NOT NULL DEFAULT '{}',
         created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
        "CREATE INDEX audit_log_created ON audit_log (created_at, id);
         CREATE INDEX audit_log_tenant_created ON audit_log (tenant_id, created_at);",
    );
    insert_mixed(&env, "audit_log", "after", ", action", ", 'user.login'");
    let output = env.run(&["run", "siem-ship"]);
    assert!(output.status.success(), "{output:?}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["captureGap"]["recovered"], 30, "{result}");
    assert_eq!(alerts(&output, "capture_gap"), 1, "{output:?}");
    assert_eq!(alerts(&output, "capture_gap_resolved"), 1, "{output:?}");
    assert_eq!(capture_triggers(&env, "audit_log"), 2);
    insert_mixed(&env, "audit_log", "later", ", action", ", 'user.login'");
    env.run_json(&["run", "siem-ship"], 0);
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for id in intake.received() {
        *received.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = received.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "shipped more than once: {twice:?}");
    let stored = env.strings("SELECT id FROM audit_log ORDER BY id");
    assert_eq!(received.keys().cloned().collect::<Vec<_>>(), stored);
}

fn lines_of<'a>(rows: &'a [ExportedRow], id: &str) -> Vec<&'a ExportedRow> {
    rows.iter().filter(|row| row.id == id).collect()
}

/// The exported line of `id`, parsed.
fn exported_line(env: &Env, id: &str) -> Value {
    let rows = exported_rows(env);
    let found = lines_of(&rows, id);
    assert_eq!(found.len(), 1, "{id}: {found:?}");
    let text = std::fs::read_to_string(env.data_dir().join(&found[0].file)).unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["id"] == id)
        .unwrap()
}

fn export_backlog(env: &Env) -> Value {
    let jobs = env.run_json(&["jobs", "--json"], 0);
    jobs.as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "export-interactions")
        .unwrap()["captureBacklog"]
        .clone()
}

#[test]
fn rows_are_exported_as_they_are_when_exported() {
    let env = exported_demo();
    // The inactive demo tenant's rows wait too.
    let waiting = export_backlog(&env)["rows"].as_u64().unwrap();
    let db = env.db();
    // Created with one tenant, moved to another before the export.
    db.execute_batch(
        "INSERT INTO interaction_history (id, tenant_id, payload) VALUES ('moved', 'acme', '{\"v\":1}');
         UPDATE interaction_history SET tenant_id = 'globex' WHERE id = 'moved';
         INSERT INTO interaction_history (id, tenant_id, payload) VALUES ('edited', 'acme', '{\"v\":1}');
         UPDATE interaction_history SET payload = '{\"v\":2}', outcome = 'replied' WHERE id = 'edited';
         INSERT INTO interaction_history (id, tenant_id) VALUES ('unowned', '');",
    )
    .unwrap();
    let result = env.run_json(&["run", "export-interactions"], 0);
    let moved = exported_line(&env, "moved");
    assert_eq!(moved["tenant_id"], "globex", "{result}");
    let edited = exported_line(&env, "edited");
    assert_eq!(
        (edited["payload"]["v"].clone(), edited["outcome"].clone()),
        (2.into(), "replied".into())
    );
    assert!(lines_of(&exported_rows(&env), "unowned").is_empty());
    // A row with no tenant yet waits, counted, until the application associates it.
    let backlog = export_backlog(&env);
    assert_eq!(backlog["rows"], waiting + 1, "{backlog}");
    db.execute(
        "UPDATE interaction_history SET tenant_id = 'initech' WHERE id = 'unowned'",
        [],
    )
    .unwrap();
    drain_exports(&env);
    assert_eq!(exported_line(&env, "unowned")["tenant_id"], "initech");
    assert_exported_exactly_once(&env);
}

#[test]
fn rows_replaced_or_reinserted_before_an_export_are_written_once_as_they_are_last() {
    let env = exported_demo();
    let db = env.db();
    for version in 1..=3 {
        db.execute(
            "INSERT OR REPLACE INTO interaction_history (id, tenant_id, payload) VALUES ('replaced', 'acme', ?1)",
            [format!("{{\"v\":{version}}}")],
        )
        .unwrap();
    }
    db.execute_batch(
        "INSERT INTO interaction_history (id, tenant_id, payload) VALUES ('reinserted', 'acme', '{\"v\":1}');
         DELETE FROM interaction_history WHERE id = 'reinserted';
         INSERT INTO interaction_history (id, tenant_id, payload) VALUES ('reinserted', 'globex', '{\"v\":2}');",
    )
    .unwrap();
    drain_exports(&env);
    assert_eq!(exported_line(&env, "replaced")["payload"]["v"], 3);
    let reinserted = exported_line(&env, "reinserted");
    assert_eq!(
        (
            reinserted["payload"]["v"].clone(),
            reinserted["tenant_id"].clone()
        ),
        (2.into(), "globex".into())
    );
    assert_exported_exactly_once(&env);
}

#[test]
fn a_first_walk_stopped_part_way_while_rows_arrive_in_its_range_exports_each_row_once() {
    // Regression: a walk stopped part-way (100,000 rows no tenant took in one run) left the
    // rows inserted into the rest of its reserved range to the queue, which exported them;
    // the next run's walk, no longer seeing them captured, exported them again (6 to 25
    // duplicates of 150,000).
    let env = Env::new().with("RUST_LOG", "warn");
    assert!(env.run(&["migrate"]).status.success());
    {
        let mut db = env.db();
        let tx = db.transaction().unwrap();
        for tenant in 0..20 {
            tx.execute(
                "INSERT INTO tenants (id, name, active) VALUES (?1, ?1, 1)",
                [format!("t{tenant:02}")],
            )
            .unwrap();
        }
        let mut random = fastrand::Rng::with_seed(22);
        let created_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        for _ in 0..150_000 {
            // One tenant holds 90% of the rows.
            let tenant = if random.u8(0..10) < 9 {
                0
            } else {
                random.u8(1..20)
            };
            tx.execute(
                "INSERT OR IGNORE INTO interaction_history (id, tenant_id, created_at) VALUES (?1, ?2, ?3)",
                (format!("h{:016x}", random.u64(..)), format!("t{tenant:02}"), &created_at),
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> =
        (0..2u64)
            .map(|writer| {
                let (stop, conn) = (Arc::clone(&stop), env.db());
                std::thread::spawn(move || {
                    conn.busy_timeout(Duration::from_secs(30)).unwrap();
                    let mut random = fastrand::Rng::with_seed(writer + 100);
                    while !stop.load(Ordering::SeqCst) {
                        conn.execute(
                        "INSERT OR IGNORE INTO interaction_history (id, tenant_id) VALUES (?1, ?2)",
                        (format!("h{:016x}", random.u64(..)), format!("t{:02}", random.u8(0..20))),
                    )
                    .unwrap();
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
            .collect();
    let mut stopped_part_way = 0;
    for _ in 0..8 {
        let result = env.run_json(&["run", "export-interactions"], 0);
        if result["walking"] == true {
            stopped_part_way += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }
    assert!(
        stopped_part_way >= 1,
        "the walk stopped part-way {stopped_part_way} times"
    );
    drain_exports(&env);
    assert_exported_exactly_once(&env);
}

#[test]
fn a_siem_capture_left_without_a_backend_shows_its_backlog() {
    let intake = Intake::start(Kind::Splunk, &[]);
    let env = intake.configure(Env::new());
    env.run_json(&["demo", "--rows", "100"], 0);
    env.run_json(&["run", "siem-ship"], 0);
    // The backend is removed; the application goes on auditing.
    let env = env.without("SIEM_BACKEND");
    insert_mixed(&env, "audit_log", "unshipped", ", action", ", 'user.login'");
    let result = env.run_json(&["run", "siem-ship"], 0);
    assert_eq!(result["backlog"], 30, "{result}");
    let server = env.serve();
    let metrics = server.get("/metrics");
    assert!(
        metrics
            .body
            .contains("edgecron_capture_backlog_rows{table=\"audit_log\"} 30"),
        "{}",
        metrics.body
    );
    let jobs = env.run_json(&["jobs", "--json"], 0);
    let siem = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["name"] == "siem-ship")
        .unwrap();
    assert_eq!(siem["captureBacklog"]["growing"], true, "{siem}");
}

#[test]
fn a_gap_is_recovered_against_the_bucket_when_local_copies_are_gone() {
    let moto = crate::support::Moto::start();
    let env = moto
        .configure(Env::new())
        .with("EXPORT_DELETE_LOCAL_AFTER_UPLOAD", "true")
        .with("RUST_LOG", "warn");
    env.run_json(&["demo", "--rows", "300"], 0);
    drain_exports(&env);
    env.run_json(&["run", "s3-sync"], 0);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_files WHERE local_deleted_at IS NULL"),
        0
    );
    env.db()
        .execute_batch("DROP TRIGGER interaction_history_capture")
        .unwrap();
    insert_mixed(&env, "interaction_history", "missed", "", "");
    let result = env.run_json(&["run", "export-interactions"], 0);
    assert_eq!(result["captureGap"]["recovered"], 30, "{result}");
    drain_exports(&env);
    env.run_json(&["run", "s3-sync"], 0);
    // Every exportable row once, across the objects (local copies are gone).
    let objects = moto.objects("backup/exports/");
    let manifest: Vec<String> =
        env.strings("SELECT 'backup/' || path FROM export_files ORDER BY 1");
    assert_eq!(objects.keys().cloned().collect::<Vec<_>>(), manifest);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for body in objects.values() {
        for line in body.lines() {
            let line: Value = serde_json::from_str(line).unwrap();
            *seen
                .entry(line["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "{twice:?}");
    let expected = env.strings(
        "SELECT h.id FROM interaction_history h JOIN tenants t ON t.id = h.tenant_id
          WHERE t.active = 1 ORDER BY h.id",
    );
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), expected);
}
