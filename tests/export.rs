//! `export-interactions`: exactly once, partitioned by day, crash safe, per-tenant failures.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{
    Env, assert_exported_exactly_once, drain_exports, export_files, exported_rows, python_json,
    signal,
};

#[test]
fn draining_a_demo_store_exports_every_row_once_in_its_days_partition() {
    // 37 rows a batch puts batch boundaries inside the 60 rows that share one created_at.
    let env = Env::new().with("EXPORT_BATCH_SIZE", "37");
    env.run_json(&["demo", "--rows", "3000"], 0);
    let shared: i64 = env.query_i64(
        "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM interaction_history WHERE tenant_id = 'acme' GROUP BY created_at)",
    );
    assert!(shared >= 50, "{shared}");
    env.db().execute("DELETE FROM export_metrics", []).unwrap();
    let first = env.run_json(&["run", "export-interactions"], 0);
    assert_eq!(first["ok"], true);
    let tenants = first["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 4, "the inactive tenant is skipped");
    for tenant in tenants {
        assert_eq!(tenant["exported"], 37);
        let files = tenant["files"].as_array().unwrap();
        assert_eq!(tenant["filePath"], files[0]);
        for key in ["tenantId", "tenantName"] {
            assert!(tenant[key].is_string());
        }
    }
    assert_eq!(first["totalExported"], 4 * 37);
    drain_exports(&env);
    assert_exported_exactly_once(&env);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_files WHERE tenant_id = 'hooli'"),
        0
    );
    // New rows sharing an exported row's created_at (ids before and after it) are picked up.
    env.db()
        .execute_batch(
            "INSERT INTO interaction_history (id, tenant_id, created_at)
             SELECT n.value, 'acme', (SELECT MAX(created_at) FROM interaction_history WHERE tenant_id = 'acme')
             FROM (SELECT '0-early' AS value UNION SELECT 'zz-late-1' UNION SELECT 'zz-late-2') n",
        )
        .unwrap();
    let late = env.run_json(&["run", "export-interactions"], 0);
    assert_eq!(late["totalExported"], 3);
    assert_exported_exactly_once(&env);
    // One metric row per tenant per run.
    let runs = env.query_i64("SELECT COUNT(*) FROM job_runs WHERE job = 'export-interactions'");
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM export_metrics WHERE export_type = 'interaction_history' AND format = 'ndjson'"), runs * 4);
    // Regression: successful runs once all recorded a duration of 0 ms (a run with nothing to
    // export may really take under a millisecond, so only the total is checked).
    let timed = env.query_i64("SELECT COUNT(*) FROM export_metrics WHERE status = 'success' AND row_count > 0 AND duration_ms > 0");
    assert!(timed > 0, "no export run recorded its duration");
}

#[test]
fn killed_at_random_instants_the_export_loses_and_duplicates_nothing() {
    killed_at_random_instants(&killable(Env::new()));
}

/// Small batches, so a run writes many files and kills land between them.
fn killable(env: Env) -> Env {
    env.with("EXPORT_BATCH_SIZE", "150")
        .with("RUST_LOG", "warn")
}

#[test]
fn killed_at_random_instants_a_parquet_export_loses_and_duplicates_nothing() {
    let env = killable(Env::new()).with("EXPORT_FORMAT", "parquet");
    killed_at_random_instants(&env);
    assert!(
        export_files(&env)
            .iter()
            .all(|file| file.to_string_lossy().ends_with(".parquet"))
    );
}

/// Kills export runs at random instants while the application inserts late and backfilled
/// rows; drained, every row is in exactly one file.
fn killed_at_random_instants(env: &Env) {
    env.run_json(&["demo", "--rows", "6000"], 0);
    // Kill instants spread over the length of one uninterrupted run, measured here; the window
    // then adapts (shorter after a run that finished first, longer after a kill), so kills
    // keep landing inside runs whatever this machine's speed.
    let started = std::time::Instant::now();
    env.run_json(&["run", "export-interactions"], 0);
    let mut window = started.elapsed().as_micros() as f64;
    let mut random = fastrand::Rng::with_seed(7);
    let mut kills = 0;
    let mut attempts = 0;
    while kills < 25 && attempts < 300 {
        attempts += 1;
        // Between runs the application goes on: a row committed minutes after its stamp, a
        // backfill of weeks ago in SQLite's own form or with an offset, a row of now.
        add_late_and_backfilled_rows(env, attempts, &mut random);
        let mut child = env
            .command(&["run", "export-interactions"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(random.u64(0..window.max(1.0) as u64)));
        signal(child.id(), "KILL");
        if child.wait().unwrap().code().is_none() {
            kills += 1;
            window *= 1.1;
        } else {
            window *= 0.8;
        }
    }
    assert_eq!(
        kills, 25,
        "only {kills} of {attempts} runs were killed before they finished"
    );
    assert!(
        attempts <= 2 * kills + 10,
        "most kills land inside a run: {kills} of {attempts}"
    );
    drain_exports(env);
    assert_exported_exactly_once(env);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_batches_in_progress"),
        0
    );
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM job_runs WHERE status = 'running'"),
        0
    );
}

#[test]
fn unsafe_tenant_ids_are_refused_and_the_rest_exported() {
    let env = Env::new();
    env.run_json(&["demo", "--rows", "500"], 0);
    let unsafe_ids = [
        "../escape",
        "a/b",
        "back\\slash",
        "nul\u{0}byte",
        "tab\there",
        "..",
    ];
    let conn = env.db();
    for (index, id) in unsafe_ids.iter().enumerate() {
        conn.execute(
            "INSERT INTO tenants (id, name, active) VALUES (?1, 'Unsafe', 1)",
            [id],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES (?1, ?2, '2026-01-01T00:00:00.000Z')",
            (format!("unsafe-{index}"), id),
        )
        .unwrap();
    }
    let result = env.run_json(&["run", "export-interactions"], 3);
    assert_eq!(result["ok"], false);
    let tenants = result["tenants"].as_array().unwrap();
    let failed: Vec<&str> = tenants
        .iter()
        .filter(|tenant| tenant.get("error").is_some())
        .map(|tenant| tenant["tenantId"].as_str().unwrap())
        .collect();
    assert_eq!(failed.len(), unsafe_ids.len(), "{result}");
    for tenant in tenants
        .iter()
        .filter(|tenant| tenant.get("error").is_some())
    {
        assert_eq!(tenant["errorKind"], "unsafe_tenant_id");
        assert!(
            tenant["error"]
                .as_str()
                .unwrap()
                .contains("not safe as a path component")
        );
    }
    assert!(result["totalExported"].as_u64().unwrap() > 0);
    // Nothing outside the export root, nothing for the unsafe tenants inside it.
    let mut top: Vec<String> = std::fs::read_dir(env.data_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert!(
        top.iter().all(|name| [
            "blobs",
            "downloads",
            "edgecron.db",
            "edgecron.db-shm",
            "edgecron.db-wal",
            "exports",
            // The demo's desired configuration for gitops-drift-check.
            "gitops",
            "uploads"
        ]
        .contains(&name.as_str())),
        "{top:?}"
    );
    let mut tenant_dirs: Vec<String> = std::fs::read_dir(env.data_dir().join("exports"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    tenant_dirs.sort();
    assert_eq!(tenant_dirs, ["acme", "globex", "initech", "umbrella"]);
    assert!(
        exported_rows(&env)
            .iter()
            .all(|row| !row.id.starts_with("unsafe-"))
    );
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_checkpoints WHERE status = 'failed'"),
        unsafe_ids.len() as i64
    );
}

#[test]
fn an_unwritable_directory_fails_only_that_tenant_and_the_next_run_succeeds() {
    let env = Env::new();
    env.run_json(&["demo", "--rows", "400"], 0);
    // A file where the tenant's directory should be: creating it fails, even for root.
    let blocked = env.data_dir().join("exports/globex");
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, b"not a directory").unwrap();
    let result = env.run_json(&["run", "export-interactions"], 3);
    let globex = tenant_result(&result, "globex");
    assert_eq!(globex["exported"], 0);
    assert_eq!(globex["errorKind"], "io", "{globex}");
    let others_ok = result["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|tenant| tenant["tenantId"] != "globex")
        .all(|tenant| tenant.get("error").is_none() && tenant["exported"].as_u64() > Some(0));
    assert!(others_ok, "{result}");
    let status: String = env
        .db()
        .query_row(
            "SELECT status || ': ' || error FROM export_checkpoints WHERE tenant_id = 'globex'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(status.starts_with("failed: "), "{status}");
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM export_metrics WHERE tenant_id = 'globex' AND status = 'failure' AND error_type = 'io'"), 1);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_batches_in_progress"),
        0
    );

    std::fs::remove_file(&blocked).unwrap();
    let retry = env.run_json(&["run", "export-interactions"], 0);
    let globex = tenant_result(&retry, "globex");
    assert!(globex["exported"].as_u64().unwrap() > 0, "{retry}");
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_checkpoints WHERE status = 'failed'"),
        0
    );
    drain_exports(&env);
    assert_exported_exactly_once(&env);
    assert!(
        export_files(&env)
            .iter()
            .all(|file| !file.to_string_lossy().contains(".tmp"))
    );
}

#[test]
fn duckdb_reads_the_export_with_hive_partitioning() {
    // Regression guard for the layout analytics engines rely on: partition discovery from
    // year=/month=/day= directories and one JSON object per line.
    let env = Env::new().with("EXPORT_BATCH_SIZE", "500");
    env.run_json(&["demo", "--rows", "2500"], 0);
    drain_exports(&env);
    assert_duckdb_reads(&env, "json");
}

/// A demo store drained with `EXPORT_COMPRESSION=compression`: every row once, every file
/// named with `extension`.
fn drained_compressed(compression: &str, extension: &str) -> Env {
    let env = Env::new()
        .with("EXPORT_BATCH_SIZE", "500")
        .with("EXPORT_COMPRESSION", compression);
    env.run_json(&["demo", "--rows", "2500"], 0);
    drain_exports(&env);
    assert_exported_exactly_once(&env);
    assert!(
        export_files(&env)
            .iter()
            .all(|file| file.to_string_lossy().ends_with(extension))
    );
    env
}

#[test]
fn duckdb_reads_gzip_exports_as_they_are() {
    let env = drained_compressed("gzip", ".json.gz");
    let (raw, stored) = (
        env.query_i64("SELECT SUM(raw_bytes) FROM export_files"),
        env.query_i64("SELECT SUM(bytes) FROM export_files"),
    );
    assert!(
        stored * 2 < raw,
        "{stored} bytes stored for {raw} of NDJSON"
    );
    assert_duckdb_reads(&env, "json.gz");
}

#[test]
fn duckdb_reads_zstd_exports_as_they_are() {
    let env = drained_compressed("zstd", ".json.zst");
    assert_duckdb_reads(&env, "json.zst");
}

#[test]
fn duckdb_and_pyarrow_read_parquet_exports_typed_and_zstd_compressed() {
    let env = Env::new()
        .with("EXPORT_BATCH_SIZE", "500")
        .with("EXPORT_FORMAT", "parquet");
    env.run_json(&["demo", "--rows", "2500"], 0);
    drain_exports(&env);
    assert_exported_exactly_once(&env);
    assert_duckdb_reads(&env, "parquet");
    let pattern = env
        .data_dir()
        .join("exports/*/interaction_history/*/*/*/*/*.parquet");
    let script = r#"
import glob, json, sys
import pyarrow.parquet as pq
files = glob.glob(sys.argv[1])
schema = pq.ParquetFile(files[0]).schema_arrow
codecs = {pq.ParquetFile(f).metadata.row_group(0).column(c).compression
          for f in files for c in range(7)}
print(json.dumps({"types": {field.name: str(field.type) for field in schema},
                  "codecs": sorted(codecs), "rows": sum(pq.ParquetFile(f).metadata.num_rows for f in files)}))
"#;
    let read: serde_json::Value = python_json("pyarrow", script, &[&pattern.to_string_lossy()]);
    assert_eq!(
        read["types"]["created_at"], "timestamp[ms, tz=UTC]",
        "{read}"
    );
    assert_eq!(read["types"]["payload"], "string", "{read}");
    assert_eq!(read["types"]["id"], "string", "{read}");
    assert_eq!(read["codecs"], serde_json::json!(["ZSTD"]), "{read}");
    assert_eq!(
        read["rows"].as_i64(),
        Some(env.query_i64("SELECT SUM(row_count) FROM export_files"))
    );
}

/// DuckDB reads every exported row, each in the partition of its day, payloads as objects.
fn assert_duckdb_reads(env: &Env, extension: &str) {
    let pattern = env.data_dir().join(format!(
        "exports/*/interaction_history/*/*/*/*/*.{extension}"
    ));
    let script = r#"
import json, sys
import duckdb
connection = duckdb.connect()
connection.execute("SET TimeZone = 'UTC'")
reader = "read_parquet" if sys.argv[1].endswith(".parquet") else "read_json_auto"
options = "" if reader == "read_parquet" else ", format = 'newline_delimited'"
rows = connection.execute(f"""
    SELECT count(*) AS rows,
           count(DISTINCT (tenant_id, year, month, day)) AS partitions,
           count(*) FILTER (WHERE strftime(CAST(created_at AS TIMESTAMP), '%Y-%m-%d')
                            <> printf('%04d-%02d-%02d', CAST(year AS INTEGER), CAST(month AS INTEGER), CAST(day AS INTEGER))) AS misplaced,
           count(*) FILTER (WHERE json_type(CAST(payload AS JSON)) <> 'OBJECT') AS payloads_not_objects,
           count(*) FILTER (WHERE site IS DISTINCT FROM '{sys.argv[2]}') AS outside_the_site
    FROM {reader}('{sys.argv[1]}', hive_partitioning = true{options})
""").fetchone()
print(json.dumps(rows))
"#;
    let figures: Vec<i64> =
        python_json("duckdb", script, &[&pattern.to_string_lossy(), &env.site()]);
    let expected_rows = env.query_i64("SELECT COUNT(*) FROM interaction_history h JOIN tenants t ON t.id = h.tenant_id WHERE t.active = 1");
    let expected_partitions = env.query_i64(
        "SELECT COUNT(DISTINCT h.tenant_id || substr(h.created_at, 1, 10)) FROM interaction_history h JOIN tenants t ON t.id = h.tenant_id WHERE t.active = 1",
    );
    assert_eq!(figures, [expected_rows, expected_partitions, 0, 0, 0]);
}

fn add_late_and_backfilled_rows(env: &Env, round: usize, random: &mut fastrand::Rng) {
    let now = chrono::Utc::now();
    let backfilled = now
        - chrono::Duration::days(random.i64(1..60))
        - chrono::Duration::minutes(random.i64(0..1440));
    let forms = [
        backfilled.format("%Y-%m-%d %H:%M:%S").to_string(),
        backfilled
            .with_timezone(&chrono::FixedOffset::west_opt(5 * 3600).unwrap())
            .to_rfc3339(),
        backfilled.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    ];
    let rows = [
        (
            format!("late-{round}"),
            (now - chrono::Duration::minutes(2)).to_rfc3339(),
        ),
        (
            format!("backfill-{round}"),
            forms[round % forms.len()].clone(),
        ),
        (
            format!("now-{round}"),
            now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
    ];
    let tenants = ["acme", "globex", "initech", "umbrella"];
    for (id, created_at) in rows {
        env.db()
            .execute(
                "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES (?1, ?2, ?3)",
                (id, tenants[random.usize(0..tenants.len())], created_at),
            )
            .unwrap();
    }
}

/// One tenant's entry in an export result.
fn tenant_result(result: &serde_json::Value, tenant_id: &str) -> serde_json::Value {
    let tenants = result["tenants"].as_array().expect("tenants");
    tenants
        .iter()
        .find(|tenant| tenant["tenantId"] == tenant_id)
        .expect("tenant in result")
        .clone()
}
