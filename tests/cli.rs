//! The command line: exit codes, output, configuration errors, demo data.

use crate::support::Env;

#[test]
fn run_prints_the_result_and_exits_by_outcome() {
    let env = Env::new();
    env.demo();
    let result = env.run_json(&["run", "outbox-reaper"], 0);
    assert_eq!(result["ok"], true);
    assert!(result["reset"].as_u64().unwrap() > 0 && result["dead"].as_u64().unwrap() > 0);

    // A flow with a broken schedule: the others are enqueued, the run is partial (exit 3).
    env.db()
        .execute("INSERT INTO flows (id, tenant_id, schedule, next_run_at) VALUES ('broken', 'acme', 'whenever', '2020-01-01T00:00:00.000Z')", [])
        .unwrap();
    let partial = env.run_json(&["run", "flow-scheduler-tick"], 3);
    assert_eq!(partial["errors"][0]["id"], "broken");
    assert!(partial["enqueued"].as_u64().unwrap() > 0);

    env.db().execute_batch("DROP TABLE ml_models").unwrap();
    let failed = env.run_json(&["run", "scheduled-retrains"], 1);
    assert_eq!(failed["ok"], false);

    let runs = env.run_json(&["runs", "--json"], 0);
    let statuses: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "partial", "ok"]);
    for run in runs.as_array().unwrap() {
        assert_eq!(run["trigger"], "cli");
        for key in [
            "id",
            "job",
            "trigger",
            "startedAt",
            "finishedAt",
            "status",
            "error",
        ] {
            assert!(run.get(key).is_some(), "runs --json lacks {key}");
        }
    }
    let only = env.run_json(&["runs", "outbox-reaper", "--limit", "5", "--json"], 0);
    assert_eq!(only.as_array().unwrap().len(), 1);
}

#[test]
fn bad_usage_and_bad_configuration_exit_2_with_one_line() {
    let env = Env::new();
    for (extra_env, args, mentions) in [
        (None, vec!["run", "no-such-job"], "no job named"),
        (
            None,
            vec!["run", "cleanup", "--start-date", "2024-02-30"],
            "startDate",
        ),
        (None, vec!["frobnicate"], "unrecognized subcommand"),
        (
            Some(("EDGECRON_LISTEN", "not-an-address")),
            vec!["serve"],
            "EDGECRON_LISTEN",
        ),
        (
            Some(("EDGECRON_TZ", "Nowhere/Else")),
            vec!["run", "cleanup"],
            "EDGECRON_TZ",
        ),
        (
            Some(("EDGECRON_SCHEDULE_CLEANUP", "0 25 * * *")),
            vec!["serve"],
            "EDGECRON_SCHEDULE_CLEANUP",
        ),
        (
            Some(("EDGECRON_ENABLED_NOT_A_JOB", "true")),
            vec!["jobs"],
            "no job named",
        ),
        (
            Some(("CRON_ENABLED", "sometimes")),
            vec!["serve"],
            "CRON_ENABLED",
        ),
    ] {
        let mut command = env.command(&args);
        if let Some((name, value)) = extra_env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?} {extra_env:?}: {stderr}"
        );
        assert!(stderr.contains(mentions), "{args:?}: {stderr}");
        if args[0] != "frobnicate" {
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }
}

#[test]
fn demo_fills_every_table_a_job_reads_and_is_repeatable() {
    let env = Env::new();
    let first = env.run_json(&["demo", "--tenants", "4", "--rows", "2000"], 0);
    assert_eq!(first["rows"]["interactionHistory"], 2000);
    for (table, at_least) in [
        ("tenants", 4),
        ("interaction_history", 2000),
        ("suppressions", 1),
        ("interaction_summaries", 1),
        ("retention_policies", 1),
        ("decision_traces", 1),
        ("ai_attachments", 1),
        ("audit_log", 300),
        ("outbox", 1),
        ("approvals", 1),
        ("flows", 1),
        ("ml_models", 1),
        ("import_runs", 1),
        ("import_jobs", 1),
        ("import_items", 1),
        ("temp_uploads", 1),
        ("export_logs", 1),
        ("export_metrics", 1),
        ("telemetry_events", 1),
    ] {
        let count = env.query_i64(&format!("SELECT COUNT(*) FROM {table}"));
        assert!(count >= at_least, "{table}: {count}");
    }
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM tenants WHERE active = 0"),
        1
    );
    assert!(env.query_i64("SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM interaction_history GROUP BY tenant_id, created_at)") >= 50);
    let oldest_days = env.query_i64("SELECT CAST(julianday('now') - julianday(MIN(created_at)) AS INTEGER) FROM interaction_history");
    assert!((100..=120).contains(&oldest_days), "{oldest_days}");
    assert!(env.query_i64("SELECT COUNT(*) FROM retention_policies WHERE legal_hold = 1") >= 1);

    let ids_before = env.query_i64("SELECT COUNT(DISTINCT id) FROM interaction_history");
    env.run_json(&["demo", "--tenants", "4", "--rows", "2000"], 0);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM interaction_history"),
        ids_before
    );
}

#[test]
fn migrate_is_idempotent() {
    let env = Env::new();
    for _ in 0..2 {
        let output = env.run(&["migrate"]);
        assert_eq!(output.status.code(), Some(0));
    }
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM schema_migrations"),
        schema_files()
    );
    let mode: String = env
        .db()
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn help_and_version() {
    let env = Env::new();
    let help = env.run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for command in [
        "serve", "run", "jobs", "runs", "calendar", "migrate", "demo",
    ] {
        assert!(text.contains(command), "{command} missing from --help");
    }
    let version = env.run(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("edgecron {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_packaged_man_page_and_completions_are_what_the_cli_generates() {
    // They are generated from the clap definitions and kept in packaging/ for `cargo deb`;
    // regenerate with `edgecron man > packaging/edgecron.1` and `edgecron completions SHELL`.
    let env = Env::new();
    let packaging = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
    for (args, file) in [
        (&["man"][..], "edgecron.1"),
        (&["completions", "bash"], "completions/edgecron.bash"),
        (&["completions", "zsh"], "completions/_edgecron"),
        (&["completions", "fish"], "completions/edgecron.fish"),
    ] {
        let output = env.run(args);
        assert!(output.status.success(), "{args:?}");
        let packaged = std::fs::read(packaging.join(file)).unwrap();
        assert!(
            output.stdout == packaged,
            "packaging/{file} is out of date: regenerate it with `edgecron {}`",
            args.join(" ")
        );
    }
}

#[test]
fn a_backup_taken_under_writes_is_whole_and_never_overwritten() {
    let env = Env::new();
    env.run_json(&["demo", "--rows", "2000"], 0);
    let server = env.serve();
    // The application writes every 5 ms throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        let conn = env.db();
        std::thread::spawn(move || {
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                conn.execute(
                    "INSERT INTO interaction_history (id, tenant_id) VALUES (?1, 'acme')",
                    [format!("during-backup-{n}")],
                )
                .unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = env.query_i64("SELECT COUNT(*) FROM interaction_history");
    let target = env.data_dir().join("backup.db");
    let output = env.run(&["backup", target.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("integrity ok") && stdout.contains("bytes in"),
        "{stdout}"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    let copy = rusqlite::Connection::open(&target).unwrap();
    let integrity: String = copy
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let copied: i64 = copy
        .query_row("SELECT COUNT(*) FROM interaction_history", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert!(
        copied >= before,
        "{copied} rows copied, {before} committed before"
    );
    let again = env.run(&["backup", target.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    drop(server);
}

/// The migrations shipped: one `schema/NNNN_*.sql` file each.
fn schema_files() -> i64 {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schema"))
        .expect("schema/ is readable")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "sql"))
        })
        .count() as i64
}
