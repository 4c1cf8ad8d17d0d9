//! Rows the application writes are input: the files they name, the times they hold and the
//! payloads they carry can never cost edgecron a file, an early deletion or its memory.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use crate::support::{Env, drain_exports, export_files, signal};

/// Renders `minutes` from now in one of the forms an application may write.
fn stamp(minutes: i64, form: usize) -> String {
    let time = Utc::now() + chrono::Duration::minutes(minutes);
    match form {
        0 => time.to_rfc3339_opts(SecondsFormat::Millis, true),
        1 => time.format("%Y-%m-%d %H:%M:%S").to_string(),
        2 => time
            .with_timezone(&chrono::FixedOffset::west_opt(5 * 3600).unwrap())
            .to_rfc3339_opts(SecondsFormat::Secs, false),
        3 => time
            .with_timezone(&chrono::FixedOffset::east_opt(5 * 3600 + 1800).unwrap())
            .to_rfc3339_opts(SecondsFormat::Secs, false),
        _ => time.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }
}
const FORMS: usize = 5;

#[test]
fn rows_naming_edgecron_s_own_files_delete_none_of_them() {
    let env = Env::new().with("EXPORT_BATCH_SIZE", "500");
    env.run_json(&["demo", "--rows", "300"], 0);
    drain_exports(&env);
    let committed = export_files(&env)[0].display().to_string();
    let archive = "archive/export_logs/kept.ndjson";
    std::fs::create_dir_all(env.data_dir().join("archive/export_logs")).unwrap();
    std::fs::write(env.data_dir().join(archive), b"{}\n").unwrap();
    std::fs::write(env.data_dir().join("cron-secret"), b"s3cret\n").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("victim"), b"x").unwrap();
    std::os::unix::fs::symlink(outside.path().join("victim"), env.data_dir().join("escape"))
        .unwrap();
    let named = [
        "edgecron.db",
        "edgecron.db-wal",
        "cron-secret",
        committed.as_str(),
        archive,
        "escape",
    ];
    // An open connection with a write keeps the store's -wal file there throughout.
    let conn = env.db();
    conn.execute("INSERT INTO tenants (id) VALUES ('wal-keeper')", [])
        .unwrap();
    for (n, path) in named.iter().enumerate() {
        conn.execute_batch(&format!(
            "INSERT INTO ai_attachments (id, tenant_id, blob_path, created_at) VALUES ('own-{n}', 'acme', '{path}', '2020-01-01T00:00:00.000Z');
             INSERT INTO temp_uploads (id, path, created_at) VALUES ('own-{n}', '{path}', '2020-01-01T00:00:00.000Z');
             INSERT INTO export_logs (id, tenant_id, status, file_path, expires_at) VALUES ('own-{n}', 'acme', 'completed', '{path}', '2020-01-01T00:00:00.000Z');"
        ))
        .unwrap();
    }
    conn.execute(
        "INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES ('acme', 'ai_attachments', 30, 0)",
        [],
    )
    .unwrap();

    let purge = env.run_json(&["run", "dsar-purge"], 3);
    let acme = purge["perTenant"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tenant| tenant["tenantId"] == "acme")
        .unwrap()
        .clone();
    let maintenance = env.run_json(&["run", "maintenance"], 3);
    let cleanup = env.run_json(&["run", "export-file-cleanup"], 3);
    for (n, path) in named.iter().enumerate() {
        let id = format!("own-{n}");
        assert!(env.data_dir().join(path).exists(), "{path} was deleted");
        let mentions = |errors: &Value| {
            errors
                .as_array()
                .unwrap()
                .iter()
                .any(|error| error.to_string().contains(&id))
        };
        assert!(mentions(&acme["errors"]), "dsar-purge {id}: {acme}");
        assert!(
            mentions(&maintenance["errors"]),
            "maintenance {id}: {maintenance}"
        );
        assert!(
            mentions(&cleanup["errors"]),
            "export-file-cleanup {id}: {cleanup}"
        );
    }
    assert!(outside.path().join("victim").exists());
    // Every refused row is kept, for someone to correct.
    for table in ["ai_attachments", "temp_uploads"] {
        assert_eq!(
            env.query_i64(&format!(
                "SELECT COUNT(*) FROM {table} WHERE id LIKE 'own-%'"
            )),
            named.len() as i64,
            "{table}"
        );
    }
    assert_eq!(
        env.query_i64(
            "SELECT COUNT(*) FROM export_logs WHERE id LIKE 'own-%' AND status = 'completed'"
        ),
        named.len() as i64
    );
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn suppressions_expire_at_the_instant_they_name_whatever_their_form() {
    // Regression: text comparison deleted `2026-12-01 23:59:59` and `...T18:00:00-05:00`
    // suppressions hours before they expired.
    let env = Env::new();
    assert!(env.run(&["migrate"]).status.success());
    let conn = env.db();
    let mut expected_left = Vec::new();
    for form in 0..FORMS {
        for (minutes, label) in [
            (-90, "expired"),
            (-2, "expired"),
            (2, "in-force"),
            (90, "in-force"),
        ] {
            let id = format!("{label}-{form}-{minutes}");
            conn.execute(
                "INSERT INTO suppressions (id, customer_id, expires_at) VALUES (?1, 'c', ?2)",
                (&id, stamp(minutes, form)),
            )
            .unwrap();
            if label == "in-force" {
                expected_left.push(id);
            }
        }
    }
    conn.execute(
        "INSERT INTO suppressions (id, customer_id, expires_at) VALUES ('unreadable', 'c', 'next tuesday')",
        [],
    )
    .unwrap();
    expected_left.push("unreadable".into());
    expected_left.sort();
    let result = env.run_json(&["run", "cleanup"], 0);
    assert_eq!(
        result["cleaned"]["expiredSuppressions"],
        2 * FORMS,
        "{result}"
    );
    assert_eq!(result["unreadableExpiries"], 1, "{result}");
    assert_eq!(
        env.strings("SELECT id FROM suppressions ORDER BY id"),
        expected_left
    );
}

#[test]
fn retention_cuts_at_the_instant_and_legal_holds_protect_their_class() {
    let env = Env::new();
    assert!(env.run(&["migrate"]).status.success());
    let day = 24 * 60;
    env.db()
        .execute_batch(
            "INSERT INTO tenants (id) VALUES ('acme'), ('held'), ('traces-held');
             INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES
                 ('acme', 'all', 30, 0),
                 ('held', 'all', 30, 0), ('held', '*', NULL, 1),
                 ('traces-held', 'interaction_history', 30, 0), ('traces-held', 'decision_traces', 365, 1);",
        )
        .unwrap();
    let mut expected_left = Vec::new();
    for tenant in ["acme", "held", "traces-held"] {
        for form in 0..FORMS {
            for (minutes, past) in [(-30 * day - 60, true), (-30 * day + 60, false)] {
                let id = format!("{tenant}-{form}-{}", if past { "past" } else { "inside" });
                env.db()
                    .execute_batch(&format!(
                        "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES ('{id}', '{tenant}', '{at}');
                         INSERT INTO decision_traces (id, tenant_id, created_at) VALUES ('{id}', '{tenant}', '{at}');",
                        at = stamp(minutes, form)
                    ))
                    .unwrap();
                let interaction_kept = !past || tenant == "held";
                let trace_kept = !past || tenant != "acme";
                if interaction_kept {
                    expected_left.push(format!("interaction {id}"));
                }
                if trace_kept {
                    expected_left.push(format!("trace {id}"));
                }
            }
        }
    }
    expected_left.sort();
    let result = env.run_json(&["run", "dsar-purge"], 0);
    let mut left = env.strings(
        "SELECT 'interaction ' || id FROM interaction_history UNION ALL SELECT 'trace ' || id FROM decision_traces",
    );
    left.sort();
    assert_eq!(left, expected_left, "{result}");
    let held = result["perTenant"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tenant| tenant["tenantId"] == "held")
        .unwrap();
    assert!(
        held["skipped"].as_str().unwrap().contains("legal hold"),
        "{held}"
    );
}

#[test]
fn a_purge_killed_at_random_instants_audits_exactly_what_it_deleted() {
    let env = Env::new().with("RUST_LOG", "warn");
    assert!(env.run(&["migrate"]).status.success());
    env.db()
        .execute_batch(
            "INSERT INTO tenants (id) VALUES ('acme');
             INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES ('acme', 'all', 30, 0);
             WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 200000)
             INSERT INTO interaction_history (id, tenant_id, created_at)
             SELECT printf('old-%06d', value), 'acme', '2020-01-01T00:00:00.000Z' FROM n;
             WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 20000)
             INSERT INTO decision_traces (id, tenant_id, created_at)
             SELECT printf('old-%06d', value), 'acme', '2020-01-01 00:00:00' FROM n;",
        )
        .unwrap();
    let mut random = fastrand::Rng::with_seed(11);
    let (mut kills, mut attempts, mut inserted) = (0, 0, 220_000);
    // Kill instants spread over the length of a run, adapting as the export test's do.
    let mut window_ms = 400.0;
    while kills < 8 && attempts < 60 {
        attempts += 1;
        let mut child = env
            .command(&["run", "dsar-purge"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(
            random.u64(0..(window_ms * 1000.0) as u64),
        ));
        signal(child.id(), "KILL");
        if child.wait().unwrap().code().is_none() {
            kills += 1;
            window_ms *= 1.1;
        } else {
            window_ms *= 0.8;
        }
        assert_eq!(
            audited(&env),
            inserted - remaining(&env),
            "after {kills} kills"
        );
        // More old rows, so every run has a purge to be killed in.
        env.db()
            .execute(
                "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 20000)
                 INSERT INTO interaction_history (id, tenant_id, created_at)
                 SELECT printf('more-%02d-%06d', ?1, value), 'acme', '2020-06-01T00:00:00+02:00' FROM n",
                [attempts],
            )
            .unwrap();
        inserted += 20_000;
    }
    assert_eq!(
        kills, 8,
        "only {kills} of {attempts} runs were killed inside a purge"
    );
    env.run_json(&["run", "dsar-purge"], 0);
    assert_eq!(remaining(&env), 0);
    assert_eq!(audited(&env), inserted);
}

fn remaining(env: &Env) -> i64 {
    env.query_i64("SELECT (SELECT COUNT(*) FROM interaction_history) + (SELECT COUNT(*) FROM decision_traces)")
}

fn audited(env: &Env) -> i64 {
    env.query_i64(
        "SELECT COALESCE(SUM(json_extract(details, '$.interactionHistory') + json_extract(details, '$.decisionTraces')
                           + json_extract(details, '$.aiAttachments')), 0)
         FROM audit_log WHERE action = 'dsar.purge'",
    )
}

#[test]
fn exporting_huge_payloads_stays_within_its_memory_bound() {
    exports_huge_payloads_within_its_memory_bound(Env::new());
}

#[test]
fn exporting_huge_payloads_to_parquet_stays_within_its_memory_bound() {
    exports_huge_payloads_within_its_memory_bound(Env::new().with("EXPORT_FORMAT", "parquet"));
}

/// 1,500 rows of 800 KB payloads exported in one run, under 256 MiB of peak RSS.
fn exports_huge_payloads_within_its_memory_bound(env: Env) {
    let env = env
        .with("EXPORT_BATCH_SIZE", "10000")
        .with("RUST_LOG", "warn");
    assert!(env.run(&["migrate"]).status.success());
    env.db()
        .execute_batch(
            "INSERT INTO tenants (id) VALUES ('acme'), ('globex');
             WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 1500)
             INSERT INTO interaction_history (id, tenant_id, payload, created_at)
             SELECT printf('big-%04d', value), CASE value % 2 WHEN 0 THEN 'acme' ELSE 'globex' END,
                    '{\"blob\":\"' || printf('%.800000c', 'x') || '\"}',
                    strftime('%Y-%m-%dT%H:%M:%fZ', '2026-11-01', printf('+%d minutes', value)) FROM n;",
        )
        .unwrap();
    let (status, peak_kib) = env.run_with_peak_rss(&["run", "export-interactions"]);
    eprintln!(
        "peak RSS exporting 1,500 rows of 800 KB: {} MiB",
        peak_kib / 1024
    );
    assert_eq!(status, 0);
    assert_eq!(
        env.query_i64("SELECT COALESCE(SUM(row_count), 0) FROM export_files"),
        1500
    );
    assert!(
        peak_kib < 256 * 1024,
        "peak RSS {} MiB for 1,500 rows of 800 KB",
        peak_kib / 1024
    );
}

#[test]
fn an_unusable_data_dir_is_bad_configuration_named_at_once() {
    // Regression: every command retried for 30 s, then exited 1 naming no path.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a read-only tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mount = |options: &str| {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success(), "mount {options}");
    };
    mount("size=4m");
    let env = Env::new().with("EDGECRON_DATA_DIR", &data.display().to_string());
    assert!(env.run(&["migrate"]).status.success());
    let remounted = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(remounted.success());
    for args in [&["runs"][..], &["jobs"], &["run", "cleanup"]] {
        let started = Instant::now();
        let output = env.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
        assert!(
            stderr.contains(&data.join("edgecron.db").display().to_string()),
            "{args:?}: {stderr}"
        );
    }
    let _ = std::process::Command::new("umount").arg(&data).status();
}

#[test]
fn rows_delete_files_only_inside_their_own_table_s_directory() {
    // Regression: one row each in ai_attachments, temp_uploads and export_logs deleted the
    // backups the shipped timer writes into the data dir, and a temp_uploads row a file of
    // GITOPS_DIR, with `errors: []`: a deny-list misses whatever is added next.
    let gitops = tempfile::tempdir().unwrap();
    let env = Env::new().with("GITOPS_DIR", &gitops.path().display().to_string());
    env.run_json(&["demo", "--rows", "100"], 0);
    let write = |path: &std::path::Path| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    };
    let data = env.data_dir();
    let gitops_file = gitops.path().join("feature_flags/beta.json");
    write(&gitops_file);
    let foreign = [
        data.join("backups/edgecron-2026-12-01T03-00.db"),
        data.join("notes.txt"),
        gitops_file.clone(),
    ];
    for path in &foreign[..2] {
        write(path);
    }
    // The legitimate files, each in its own table's directory, and each other table's too.
    let own = [
        ("ai_attachments", "blobs/acme/legit.bin"),
        ("temp_uploads", "uploads/legit.csv"),
        ("export_logs", "downloads/acme/legit.csv"),
    ];
    for (_, path) in own {
        write(&data.join(path));
    }
    let old = "2020-01-01T00:00:00.000Z";
    let conn = env.db();
    let named: Vec<String> = foreign
        .iter()
        .map(|path| {
            path.strip_prefix(data).map_or_else(
                |_| path.display().to_string(),
                |relative| relative.display().to_string(),
            )
        })
        .chain(own.iter().map(|(_, path)| path.to_string()))
        .collect();
    for (n, path) in named.iter().enumerate() {
        let (attachment, upload, export) = match own.iter().find(|(_, own)| own == path) {
            Some(("ai_attachments", _)) => (true, false, false),
            Some(("temp_uploads", _)) => (false, true, false),
            Some(_) => (false, false, true),
            None => (true, true, true),
        };
        if attachment {
            conn.execute(
                "INSERT INTO ai_attachments (id, tenant_id, blob_path, created_at) VALUES (?1, 'acme', ?2, ?3)",
                (format!("named-{n}"), path, old),
            )
            .unwrap();
        }
        if upload {
            conn.execute(
                "INSERT INTO temp_uploads (id, path, created_at) VALUES (?1, ?2, ?3)",
                (format!("named-{n}"), path, old),
            )
            .unwrap();
        }
        if export {
            conn.execute(
                "INSERT INTO export_logs (id, tenant_id, status, file_path, expires_at) VALUES (?1, 'acme', 'completed', ?2, ?3)",
                (format!("named-{n}"), path, old),
            )
            .unwrap();
        }
    }
    conn.execute(
        "INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES ('acme', 'ai_attachments', 30, 0)",
        [],
    )
    .unwrap();
    let purge = env.run_json(&["run", "dsar-purge"], 3);
    let maintenance = env.run_json(&["run", "maintenance"], 3);
    let cleanup = env.run_json(&["run", "export-file-cleanup"], 3);
    for path in &foreign {
        assert!(path.exists(), "{} was deleted", path.display());
    }
    for (_, path) in own {
        assert!(!data.join(path).exists(), "{path} was kept");
    }
    // Each refusal is reported with its row's id, and the row kept.
    let results = format!("{purge}{maintenance}{cleanup}");
    for n in 0..foreign.len() {
        assert_eq!(
            results.matches(&format!("named-{n}")).count(),
            3,
            "{results}"
        );
    }
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM temp_uploads WHERE id LIKE 'named-%'"),
        foreign.len() as i64
    );
}

#[test]
fn julian_days_and_the_edges_of_the_calendar_are_read_as_every_job_reads_time() {
    // Regression: retention and expiry pre-filtered on text and never saw Julian day numbers
    // (400-day-old interactions survived a 30-day policy, an expired suppression was kept);
    // a created_at of year 0000 or 9999 with an offset passed the reader, then failed its
    // tenant's every run in the writer.
    let env = Env::new().with("EXPORT_BATCH_SIZE", "500");
    assert!(env.run(&["migrate"]).status.success());
    let conn = env.db();
    conn.execute_batch(
        "INSERT INTO tenants (id, name) VALUES ('acme', 'Acme');
         INSERT INTO retention_policies (tenant_id, data_class, retention_days) VALUES ('acme', 'interaction_history', 30);
         INSERT INTO suppressions (id, tenant_id, expires_at) VALUES
             ('expired-real', 'acme', julianday('now', '-2 days')),
             ('in-force-real', 'acme', julianday('now', '+2 days')),
             ('expired-text', 'acme', CAST(julianday('now', '-1 hour') AS TEXT)),
             ('in-force-text', 'acme', CAST(julianday('now', '+1 hour') AS TEXT));
         INSERT INTO interaction_history (id, tenant_id, created_at) VALUES
             ('julian-old', 'acme', julianday('now', '-400 days')),
             ('julian-recent', 'acme', julianday('now', '-1 day')),
             ('year-0000', 'acme', '0000-01-01T00:00:00+05:00'),
             ('year-9999', 'acme', '9999-12-31T23:00:00-05:00'),
             ('plain', 'acme', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));",
    )
    .unwrap();
    let cleanup = env.run_json(&["run", "cleanup"], 0);
    assert_eq!(cleanup["cleaned"]["expiredSuppressions"], 2, "{cleanup}");
    assert_eq!(
        env.strings("SELECT id FROM suppressions ORDER BY id"),
        ["in-force-real", "in-force-text"]
    );
    let purge = env.run_json(&["run", "dsar-purge"], 0);
    assert_eq!(purge["perTenant"][0]["interactionHistory"], 1, "{purge}");
    assert!(
        env.strings("SELECT id FROM interaction_history WHERE id = 'julian-old'")
            .is_empty()
    );
    let export = env.run_json(&["run", "export-interactions"], 0);
    let acme = &export["tenants"][0];
    assert!(acme["error"].is_null(), "{export}");
    assert_eq!(acme["exported"], 2, "{export}");
    let invalid: Vec<&str> = acme["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_str().unwrap())
        .collect();
    assert_eq!(invalid, ["year-0000", "year-9999"], "{export}");
    let exported: Vec<String> = crate::support::exported_rows(&env)
        .into_iter()
        .map(|row| format!("{} {}", row.id, &row.created_at[..10]))
        .collect();
    let yesterday = (Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert!(
        exported.contains(&format!("julian-recent {yesterday}")),
        "{exported:?}"
    );
}
