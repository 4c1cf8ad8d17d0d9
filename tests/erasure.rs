//! Erasure and retention reach the lake (SPEC section 8, `dsar-purge`): one customer's rows
//! and exported lines gone from the store, the files and the bucket, every other line kept
//! once, whatever instant a run is killed at; partitions past retention removed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Env, Moto, assert_exported_exactly_once, drain_exports, export_files, exported_rows,
    python_json,
};

const TENANT: &str = "acme";
const CUSTOMER: &str = "cust-subject";

/// A demo store with `rows` of the subject's interactions over `days` days (ids
/// `subject-N`), a decision trace, a summary and an engagement row of theirs, exported.
fn store_with_subject(env: &Env, rows: usize, days: i64) {
    env.run_json(&["demo", "--rows", "1500"], 0);
    let db = env.db();
    // Only the policies a test sets apply.
    db.execute("DELETE FROM retention_policies", []).unwrap();
    db.execute(
        "WITH RECURSIVE n(v) AS (SELECT 0 UNION ALL SELECT v + 1 FROM n WHERE v < ?1 - 1)
         INSERT INTO interaction_history (id, tenant_id, customer_id, channel, outcome, payload, created_at)
         SELECT 'subject-' || v, ?2, ?3, 'email', 'opened', json_object('n', v),
                strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || (v % ?4) || ' days', '-' || (v % 7) || ' minutes')
           FROM n",
        rusqlite::params![rows as i64, TENANT, CUSTOMER, days],
    )
    .unwrap();
    db.execute_batch(&format!(
        "INSERT INTO decision_traces (tenant_id, customer_id, decision) VALUES ('{TENANT}', '{CUSTOMER}', 'nudge');
         INSERT INTO interaction_summaries (tenant_id, customer_id, period_start) VALUES ('{TENANT}', '{CUSTOMER}', '2026-11-01');
         INSERT INTO engagement_health (tenant_id, customer_id, score, computed_at) VALUES ('{TENANT}', '{CUSTOMER}', 0.5, '2026-11-01');
         INSERT INTO suppressions (tenant_id, customer_id, reason) VALUES ('{TENANT}', '{CUSTOMER}', 'objection');"
    ))
    .unwrap();
    drain_exports(env);
}

fn subject_lines_on_disk(env: &Env) -> usize {
    exported_rows(env)
        .iter()
        .filter(|row| row.id.starts_with("subject-"))
        .count()
}

/// Every object under the export prefix, each checked to be the local file's bytes; answers
/// how many of the subject's lines the bucket holds.
fn subject_lines_in_bucket(env: &Env, moto: &Moto) -> usize {
    let objects = moto.objects("backup/exports/");
    let mut lines = 0;
    for (key, body) in &objects {
        let local = env.data_dir().join(key.strip_prefix("backup/").unwrap());
        assert_eq!(
            &std::fs::read_to_string(&local).unwrap(),
            body,
            "{key} is not its local file"
        );
        lines += body
            .lines()
            .filter(|line| line.contains("\"id\":\"subject-"))
            .count();
    }
    assert_eq!(objects.len(), export_files(env).len(), "objects and files");
    lines
}

fn erase(env: &Env, code: i32) -> Value {
    env.run_json(&["erase", "--tenant", TENANT, "--customer", CUSTOMER], code)
}

#[test]
fn erasing_a_customer_leaves_no_line_of_theirs_and_every_other_line_once() {
    let moto = Moto::start();
    let env = moto.configure(Env::new()).with("EXPORT_BATCH_SIZE", "500");
    store_with_subject(&env, 120, 12);
    env.run_json(&["run", "s3-sync"], 0);
    assert_eq!(subject_lines_on_disk(&env), 120);

    // Access first: exactly their rows and lines.
    let access = env.run_json(&["access", "--tenant", TENANT, "--customer", CUSTOMER], 0);
    assert_eq!(
        access["tables"]["interaction_history"]
            .as_array()
            .unwrap()
            .len(),
        120
    );
    for table in [
        "decision_traces",
        "interaction_summaries",
        "engagement_health",
    ] {
        assert_eq!(
            access["tables"][table].as_array().unwrap().len(),
            1,
            "{table}"
        );
    }
    let lines: Vec<&Value> = access["exports"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|export| export["lines"].as_array().unwrap())
        .collect();
    assert_eq!(lines.len(), 120);
    assert!(lines.iter().all(|line| line["customer_id"] == CUSTOMER));

    let dry = env.run_json(
        &[
            "erase",
            "--tenant",
            TENANT,
            "--customer",
            CUSTOMER,
            "--dry-run",
        ],
        0,
    );
    assert_eq!(dry["files"]["removedLines"], 120, "{dry}");
    assert_eq!(
        subject_lines_on_disk(&env),
        120,
        "a dry run changes nothing"
    );

    let result = erase(&env, 0);
    assert_eq!(result["tables"]["interaction_history"], 120, "{result}");
    assert_eq!(result["tables"]["decision_traces"], 1, "{result}");
    assert_eq!(result["files"]["removedLines"], 120, "{result}");
    let files = result["files"]["rewritten"].as_u64().unwrap()
        + result["files"]["removed"].as_u64().unwrap();
    assert!(files >= 12, "{result}");
    assert_eq!(result["held"], serde_json::json!([]));
    assert_eq!(subject_lines_on_disk(&env), 0);
    assert_eq!(subject_lines_in_bucket(&env, &moto), 0);
    assert_exported_exactly_once(&env);
    let rows_exported = env.query_i64("SELECT SUM(row_count) FROM export_files");
    assert_eq!(duckdb_counts(&env), (rows_exported, 0));
    assert_eq!(
        env.query_i64(&format!(
            "SELECT COUNT(*) FROM suppressions WHERE customer_id = '{CUSTOMER}'"
        )),
        1,
        "suppressions stay"
    );
    // The proof: the counts, and each file by its path.
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM audit_log WHERE action = 'dsar.erase'"),
        1
    );
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM audit_log WHERE action = 'dsar.erase.file'"),
        files as i64
    );
    let after = env.run_json(&["access", "--tenant", TENANT, "--customer", CUSTOMER], 0);
    assert_eq!(after["exports"], serde_json::json!([]));
    // Erasing again finds nothing; an unknown subject erases nothing.
    let again = erase(&env, 0);
    assert_eq!(again["files"]["removedLines"], 0, "{again}");
    let unknown = env.run_json(&["erase", "--tenant", "nobody", "--customer", "x"], 0);
    assert_eq!(unknown["tables"]["interaction_history"], 0, "{unknown}");
}

#[test]
fn erasure_rewrites_files_of_every_format_through_the_format_seam() {
    for (format, compression) in [("ndjson", "gzip"), ("ndjson", "zstd"), ("parquet", "none")] {
        let env = Env::new()
            .with("EXPORT_BATCH_SIZE", "500")
            .with("EXPORT_FORMAT", format)
            .with("EXPORT_COMPRESSION", compression);
        store_with_subject(&env, 60, 6);
        assert_eq!(subject_lines_on_disk(&env), 60);
        let access = env.run_json(&["access", "--tenant", TENANT, "--customer", CUSTOMER], 0);
        let lines: usize = access["exports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|export| export["lines"].as_array().unwrap().len())
            .sum();
        assert_eq!(lines, 60, "{format} {compression}");
        let result = erase(&env, 0);
        assert_eq!(
            result["files"]["removedLines"], 60,
            "{format} {compression}: {result}"
        );
        assert_eq!(subject_lines_on_disk(&env), 0, "{format} {compression}");
        assert_exported_exactly_once(&env);
    }
}

#[test]
fn lines_whose_rows_retention_already_deleted_are_erased_too() {
    // Regression: retention deletes rows before its cutoff instant but files only of the days
    // before the cutoff's day; the erasure found its days from the rows alone and missed the
    // lines of rows retention had taken from the cutoff's day.
    let env = Env::new().with("EXPORT_BATCH_SIZE", "500");
    env.run_json(&["demo", "--rows", "300"], 0);
    let db = env.db();
    db.execute("DELETE FROM retention_policies", []).unwrap();
    let cutoff = chrono::Utc::now() - chrono::Duration::days(30);
    let early = cutoff.date_naive().and_hms_opt(0, 0, 1).unwrap().and_utc();
    let stamp = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    for (id, at) in [
        ("subject-early", early),
        (
            "subject-late",
            chrono::Utc::now() - chrono::Duration::days(2),
        ),
    ] {
        db.execute(
            "INSERT INTO interaction_history (id, tenant_id, customer_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![id, TENANT, CUSTOMER, stamp(at)],
        )
        .unwrap();
    }
    drain_exports(&env);
    db.execute(
        "INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES (?1, 'interaction_history', 30, 0)",
        [TENANT],
    )
    .unwrap();
    env.run_json(&["run", "dsar-purge"], 0);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM interaction_history WHERE id = 'subject-early'"),
        0,
        "retention took the row"
    );
    assert_eq!(
        subject_lines_on_disk(&env),
        2,
        "the cutoff's day keeps its file"
    );
    let result = erase(&env, 0);
    assert_eq!(result["files"]["removedLines"], 2, "{result}");
    assert_eq!(subject_lines_on_disk(&env), 0);
}

/// DuckDB's reading of the local NDJSON files: `(rows, the subject's rows)`.
fn duckdb_counts(env: &Env) -> (i64, i64) {
    let pattern = env
        .data_dir()
        .join("exports/*/interaction_history/*/*/*/*/*.json");
    let script = format!(
        "import duckdb, json, sys
print(json.dumps(duckdb.connect().execute(\"SELECT count(*), count(*) FILTER (WHERE customer_id = '{CUSTOMER}') FROM read_json_auto(?, format = 'newline_delimited', hive_partitioning = true)\", [sys.argv[1]]).fetchone()))"
    );
    python_json("duckdb", &script, &[&pattern.to_string_lossy()])
}

#[test]
fn the_erase_route_takes_the_secret_and_a_hold_keeps_its_class_and_names_it() {
    let env = Env::new().with("EXPORT_BATCH_SIZE", "500");
    store_with_subject(&env, 40, 5);
    env.db()
        .execute(
            "INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES (?1, 'interaction_history', NULL, 1)",
            [TENANT],
        )
        .unwrap();
    let server = env.serve();
    let body = format!(r#"{{"tenantId":"{TENANT}","customerId":"{CUSTOMER}"}}"#);
    let refused = server.request("POST", "/api/v1/dsar/erase", &[], Some(body.as_bytes()));
    assert_eq!(refused.status, 401);
    let access = server.trigger(
        "GET",
        &format!("/api/v1/dsar/access?tenantId={TENANT}&customerId={CUSTOMER}"),
        None,
    );
    assert_eq!(access.status, 200, "{}", access.body);
    assert_eq!(
        access.json()["tables"]["interaction_history"]
            .as_array()
            .unwrap()
            .len(),
        40
    );
    let erased = server.trigger("POST", "/api/v1/dsar/erase", Some(&body));
    assert_eq!(erased.status, 200, "{}", erased.body);
    let result = erased.json();
    assert_eq!(
        result["held"],
        serde_json::json!([
            "interaction_history",
            "interaction_summaries",
            "engagement_health"
        ])
    );
    assert_eq!(result["tables"]["decision_traces"], 1, "{result}");
    assert_eq!(result["files"]["removedLines"], 0, "{result}");
    assert_eq!(
        subject_lines_on_disk(&env),
        40,
        "the held class keeps its lines"
    );
    assert_eq!(
        env.query_i64(&format!(
            "SELECT COUNT(*) FROM interaction_history WHERE customer_id = '{CUSTOMER}'"
        )),
        40
    );
    let bad = server.trigger("POST", "/api/v1/dsar/erase", Some(r#"{"tenantId":"acme"}"#));
    assert_eq!(bad.status, 400);
}

#[test]
fn an_erasure_killed_at_random_instants_ends_as_one_uninterrupted_run() {
    let moto = Moto::start();
    let env = moto
        .configure(Env::new())
        .with("EXPORT_BATCH_SIZE", "2000")
        .with("EXPORT_DELETE_LOCAL_AFTER_UPLOAD", "true");
    store_with_subject(&env, 5_000, 20);
    env.run_json(&["run", "s3-sync"], 0);
    let others_before: BTreeMap<String, String> = others_in_bucket(&moto);
    let mut random = fastrand::Rng::with_seed(28);
    for _ in 0..12 {
        let mut child = env.spawn(&["erase", "--tenant", TENANT, "--customer", CUSTOMER]);
        std::thread::sleep(Duration::from_millis(random.u64(5..80)));
        let _ = child.kill();
        let _ = child.wait();
    }
    let last = erase(&env, 0);
    assert_eq!(last["ok"], true, "{last}");
    // The kills fell inside the work: the run that erased the rows was killed before its
    // files were done, and later runs finished them.
    let killed_mid_way = env.query_i64(
        "SELECT COUNT(*) FROM audit_log a JOIN job_runs r ON r.id = json_extract(a.details, '$.runId')
          WHERE a.action = 'dsar.erase' AND json_extract(a.details, '$.tables.interaction_history') > 0
            AND r.status <> 'ok'",
    );
    assert_eq!(killed_mid_way, 1);
    // No line of theirs anywhere; every other line once; nothing left half done.
    assert_eq!(
        moto.objects("backup/exports/")
            .values()
            .map(|body| body
                .lines()
                .filter(|line| line.contains("\"id\":\"subject-"))
                .count())
            .sum::<usize>(),
        0
    );
    assert_eq!(others_in_bucket(&moto), others_before);
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM export_rewrites"), 0);
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM erasure_requests"), 0);
    let leftovers = staged_leftovers(&env.data_dir().join(".export-rewrites"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        env.query_i64(&format!(
            "SELECT COUNT(*) FROM interaction_history WHERE customer_id = '{CUSTOMER}'"
        )),
        0
    );
}

/// Files left under the rewrites directory (its per-run directories may stay, empty).
fn staged_leftovers(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map_while(Result::ok)
        .flat_map(|entry| match entry.path().is_dir() {
            true => staged_leftovers(&entry.path()),
            false => vec![entry.path()],
        })
        .collect()
}

/// Every line in the bucket that is not the subject's, by id, with its text.
fn others_in_bucket(moto: &Moto) -> BTreeMap<String, String> {
    let mut lines = BTreeMap::new();
    for body in moto.objects("backup/exports/").values() {
        for line in body
            .lines()
            .filter(|line| !line.contains("\"id\":\"subject-"))
        {
            let row: Value = serde_json::from_str(line).unwrap();
            let id = row["id"].as_str().unwrap().to_string();
            assert!(
                lines.insert(id.clone(), line.to_string()).is_none(),
                "{id} twice"
            );
        }
    }
    lines
}

#[test]
fn a_30_day_retention_removes_each_partition_past_it_in_every_format() {
    let moto = Moto::start();
    for (format, compression) in [
        ("ndjson", "none"),
        ("ndjson", "gzip"),
        ("ndjson", "zstd"),
        ("parquet", "none"),
    ] {
        let env = moto
            .configure(Env::new())
            .with("EXPORT_FORMAT", format)
            .with("EXPORT_COMPRESSION", compression)
            .with("S3_PREFIX", &format!("{format}-{compression}/"));
        store_with_subject(&env, 300, 60);
        env.run_json(&["run", "s3-sync"], 0);
        env.db()
            .execute(
                "INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES (?1, 'interaction_history', 30, 0)",
                [TENANT],
            )
            .unwrap();
        let cutoff_day = (chrono::Utc::now() - chrono::Duration::days(30))
            .format("%Y-%m-%d")
            .to_string();
        let past = format!(
            "SELECT COUNT(*) FROM export_files WHERE tenant_id = '{TENANT}' AND partition_day < '{cutoff_day}'"
        );
        let doomed = env.query_i64(&past);
        let kept = env.query_i64("SELECT COUNT(*) FROM export_files") - doomed;
        assert!(doomed > 0, "{format} {compression}");
        let purged = env.run_json(&["run", "dsar-purge"], 0);
        let tenant = purged["perTenant"]
            .as_array()
            .unwrap()
            .iter()
            .find(|tenant| tenant["tenantId"] == TENANT)
            .unwrap()
            .clone();
        assert_eq!(tenant["exportFilesRemoved"], doomed, "{tenant}");
        assert_eq!(env.query_i64(&past), 0);
        assert_eq!(env.query_i64("SELECT COUNT(*) FROM export_files"), kept);
        assert_eq!(
            export_files(&env).len() as i64,
            kept,
            "{format} {compression}"
        );
        let prefix = format!("{format}-{compression}/exports/");
        let objects = moto
            .keys()
            .iter()
            .filter(|key| key.starts_with(&prefix))
            .count();
        assert_eq!(objects as i64, kept, "{format} {compression}");
        assert_eq!(
            env.query_i64("SELECT COUNT(*) FROM audit_log WHERE action = 'dsar.purge.file'"),
            doomed
        );
    }
}

#[test]
fn an_erasure_waits_for_an_earlier_export_run_and_gives_up_at_its_deadline() {
    // A live export run that began before the erasure holds the lease (a process on another
    // host, heartbeating): the erasure takes the rows, waits for it, and at its deadline ends
    // partial with the files left for the next run, never waiting for good.
    let env = Env::new()
        .with("EXPORT_BATCH_SIZE", "500")
        .with("EDGECRON_JOB_DEADLINE_SECS", "2");
    store_with_subject(&env, 30, 3);
    let db = env.db();
    let now = chrono::Utc::now();
    let stamp = |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    db.execute(
        "INSERT OR REPLACE INTO job_leases (job, run_id, holder, acquired_at, heartbeat_at)
         VALUES ('export-interactions', 999999, 'another-host/space/1/1', ?1, ?2)",
        rusqlite::params![
            stamp(now - chrono::Duration::minutes(1)),
            stamp(now + chrono::Duration::minutes(5))
        ],
    )
    .unwrap();
    let waited = erase(&env, 3);
    assert_eq!(waited["tables"]["interaction_history"], 30, "{waited}");
    assert!(
        waited["errors"].to_string().contains("export run"),
        "{waited}"
    );
    assert_eq!(
        subject_lines_on_disk(&env),
        30,
        "no file read while the export ran"
    );
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM erasure_requests"), 1);
    // The export run ends: the next erasure finishes from the recorded days.
    db.execute(
        "DELETE FROM job_leases WHERE job = 'export-interactions'",
        [],
    )
    .unwrap();
    let finished = erase(&env, 0);
    assert_eq!(finished["files"]["removedLines"], 30, "{finished}");
    assert_eq!(subject_lines_on_disk(&env), 0);
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM erasure_requests"), 0);
}
