//! Switching over from the replaced handlers: their configuration, payloads and alerts, each
//! against the real binary or server.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::support::intake::{Intake, Kind};
use crate::support::{Env, Moto};

fn hours_ago(hours: i64) -> chrono::DateTime<Utc> {
    Utc::now() - chrono::Duration::hours(hours)
}

#[test]
fn a_failed_metric_in_the_replaced_system_s_shape_with_its_nulls_is_stored() {
    // Regression: `"file_size_bytes": null` got 400.
    let env = Env::new();
    let server = env.serve();
    let failed = json!({
        "export_id": "exp-seed-7", "user_id": "user-3", "format": "pdf", "status": "failed",
        "conversation_count": null, "duration_ms": 4210, "file_size_bytes": null,
        "error_type": "TimeoutError", "error_message": "render timed out"
    });
    let reply = server.trigger("POST", "/api/v1/export-metrics", Some(&failed.to_string()));
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(
        env.strings(
            "SELECT status || ' ' || bytes || ' ' || row_count || ' ' || duration_ms || ' ' || source
               FROM export_metrics WHERE export_id = 'exp-seed-7'"
        ),
        ["failure 0 0 4210 application"]
    );
}

#[test]
fn two_failures_in_four_exports_raise_a_high_alert_and_edgecron_s_own_exports_are_not_counted() {
    // Regression: the replaced system's `high` was a `warning`, nothing alerted below 10
    // exports an hour, and edgecron's own export runs counted among the application's.
    let env = Env::new().with("EDGECRON_LOG_FORMAT", "json");
    env.run_json(&["demo", "--rows", "200"], 0);
    env.db()
        .execute_batch(
            "DELETE FROM export_metrics;
             INSERT INTO tenants (id, name, active) VALUES ('../unsafe', 'Unsafe', 1);
             INSERT INTO interaction_history (id, tenant_id) VALUES ('unsafe-1', '../unsafe');",
        )
        .unwrap();
    // edgecron's own runs record their metrics, the unsafe tenant's a failure.
    env.run_json(&["run", "export-interactions"], 3);
    let own = env.query_i64("SELECT COUNT(*) FROM export_metrics WHERE source = 'edgecron'");
    assert!(own > 0);
    let server = env.serve();
    for (n, status) in ["completed", "failed", "completed", "failed"]
        .into_iter()
        .enumerate()
    {
        let metric = json!({"export_id": format!("app-{n}"), "user_id": "user-1", "format": "csv",
                            "status": status, "duration_ms": 300, "conversation_count": 2,
                            "file_size_bytes": if status == "failed" { Value::Null } else { json!(900) }});
        let reply = server.trigger("POST", "/api/v1/export-metrics", Some(&metric.to_string()));
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let today = Utc::now().date_naive();
    let range = format!(r#"{{"startDate":"{today}","endDate":"{today}"}}"#);
    let aggregate = server.trigger("POST", "/api/cron/export-metrics-aggregate", Some(&range));
    let body = aggregate.json();
    assert_eq!(body["total_exports"], 4, "{body}");
    assert_eq!(body["failures"], 2, "{body}");
    assert_eq!(body["alert"]["type"], "export_failure_alert", "{body}");
    assert_eq!(body["alert"]["severity"], "high", "{body}");
    // The alert's log line reaches the server's output as the run ends.
    crate::support::wait_until(Duration::from_secs(10), || {
        server.log().lines().any(|line| {
            serde_json::from_str::<Value>(line).is_ok_and(|line| {
                line["type"] == "export_failure_alert" && line["severity"] == "high"
            })
        })
    });
}

#[test]
fn the_tick_accepts_an_eventbridge_event_as_its_body() {
    // Regression: an EventBridge rule's event body got 400 (`unknown field 'version'`).
    let env = Env::new().with("CRON_TOKEN", "tick-token");
    let server = env.serve();
    let event = json!({
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event", "source": "aws.events", "account": "123456789012",
        "time": "2026-12-05T06:00:00Z", "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:123456789012:rule/edgecron-tick"], "detail": {}
    });
    let reply = server.request(
        "POST",
        "/api/cron/tick",
        &[("X-Cron-Token", "tick-token")],
        Some(event.to_string().as_bytes()),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        env.strings("SELECT status FROM job_runs WHERE job = 'cron-tick'"),
        ["ok"]
    );
    // A run parameter in an event is still honoured, strictly.
    let dry = server.request(
        "POST",
        "/api/cron/tick",
        &[("X-Cron-Token", "tick-token")],
        Some(br#"{"source":"aws.events","dryRun":"yes"}"#),
    );
    assert_eq!(dry.status, 400, "{}", dry.body);
    let not_json = server.request(
        "POST",
        "/api/cron/tick",
        &[("X-Cron-Token", "tick-token")],
        Some(b"tick!"),
    );
    assert_eq!(not_json.status, 400, "{}", not_json.body);
}

#[test]
fn storage_with_only_the_aws_sdk_s_variables_takes_exports_and_archives() {
    // Regression: edgecron read none of AWS_*, and refused to start with the archive settings
    // alone.
    let moto = Moto::start();
    let archive_bucket = "replaced-archive";
    moto.create_bucket(archive_bucket);
    let env = Env::new()
        .with("S3_BUCKET", crate::support::BUCKET)
        .with("S3_PATH_STYLE", "true")
        .with("AWS_ENDPOINT_URL_S3", &format!("http://{}", moto.address))
        .with("AWS_REGION", "eu-test-1")
        .with("AWS_ACCESS_KEY_ID", "aws-test")
        .with("AWS_SECRET_ACCESS_KEY", "aws-test")
        .with("EXPORT_ARCHIVE_BUCKET", archive_bucket)
        .with("EXPORT_ARCHIVE_REGION", "eu-test-2");
    env.run_json(&["demo", "--rows", "300"], 0);
    crate::support::drain_exports(&env);
    let files = env.query_i64("SELECT COUNT(*) FROM export_files");
    let synced = env.run_json(&["run", "s3-sync"], 0);
    assert_eq!(synced["pending"], 0, "{synced}");
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_files WHERE upload_status = 'uploaded'"),
        files
    );
    assert_eq!(moto.keys().len() as i64, files);
    env.db()
        .execute(
            "INSERT INTO export_logs (id, created_at) VALUES ('old-log', '2020-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
    let archived = env.run_json(&["run", "export-log-cleanup"], 0);
    assert!(archived["archived"].as_u64() >= Some(1), "{archived}");
    assert_eq!(archived["archived"], archived["deleted"], "{archived}");
    let listing = crate::support::http(
        moto.address,
        "GET",
        &format!("/{archive_bucket}?list-type=2"),
        &[],
        None,
    );
    assert!(
        listing.body.contains("archive/export_logs/"),
        "{}",
        listing.body
    );
}

#[test]
fn siem_start_now_ships_none_of_the_rows_already_there_and_every_new_one() {
    // Regression: the first siem-ship re-sent the whole audit history the replaced system had
    // shipped already.
    let intake = Intake::start(Kind::Splunk, &[]);
    let env = intake
        .configure(Env::new())
        .with("SIEM_START", "now")
        .with("EXPORT_BATCH_SIZE", "7");
    assert!(env.run(&["migrate"]).status.success());
    let insert = |prefix: &str, count: usize| {
        let db = env.db();
        for n in 0..count {
            db.execute(
                "INSERT INTO audit_log (id, tenant_id, action, created_at) VALUES (?1, 'acme', 'user.login', ?2)",
                (format!("{prefix}-{n:04}"), hours_ago(n as i64).to_rfc3339_opts(SecondsFormat::Millis, true)),
            )
            .unwrap();
        }
    };
    insert("shipped-before", 1_200);
    let first = env.run_json(&["run", "siem-ship"], 0);
    assert_eq!(first["shipped"], 0, "{first}");
    assert_eq!(first["skipped"], 1_200, "{first}");
    assert!(intake.received().is_empty());
    insert("new", 40);
    let second = env.run_json(&["run", "siem-ship"], 0);
    assert_eq!(second["shipped"], 40, "{second}");
    let mut received = intake.received();
    received.sort();
    let expected: Vec<String> = (0..40).map(|n| format!("new-{n:04}")).collect();
    assert_eq!(received, expected);
}

#[test]
fn with_the_scheduler_off_nothing_is_scheduled_and_the_routes_still_run_jobs() {
    // Regression: with the built-in scheduler on, every job an outside scheduler still
    // triggered ran twice per due time.
    let env = Env::new()
        .with("EDGECRON_SCHEDULER", "off")
        .with("EDGECRON_SCHEDULE_CLEANUP", "* * * * * *")
        .with("EDGECRON_ENABLED_CLEANUP", "true");
    let server = env.serve();
    let reply = server.trigger("POST", "/api/v1/cron/cleanup", None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Several per-second fire times pass; none is run or recorded by the scheduler.
    let until = std::time::Instant::now() + Duration::from_millis(2_500);
    while std::time::Instant::now() < until {
        assert_eq!(
            env.query_i64("SELECT COUNT(*) FROM job_runs WHERE trigger = 'schedule'"),
            0
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM job_runs WHERE job = 'cleanup' AND trigger = 'http'"),
        1
    );
    assert!(
        server.log().contains("EDGECRON_SCHEDULER=off"),
        "{}",
        server.log()
    );
}

#[test]
fn a_summary_older_than_365_days_by_an_hour_is_deleted() {
    // Regression: "older than 365 days" was counted from UTC midnight, a day later than the
    // replaced handler's now minus 365 days.
    let env = Env::new();
    assert!(env.run(&["migrate"]).status.success());
    let old = (Utc::now() - chrono::Duration::days(365) - chrono::Duration::hours(1))
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let young = (Utc::now() - chrono::Duration::days(365) + chrono::Duration::hours(1))
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    env.db()
        .execute(
            "INSERT INTO interaction_summaries (id, period_type, period_start) VALUES
                 ('old', 'daily', ?1), ('young', 'daily', ?2)",
            (&old, &young),
        )
        .unwrap();
    let result = env.run_json(&["run", "cleanup"], 0);
    assert_eq!(result["cleaned"]["oldDailySummaries"], 1, "{result}");
    assert_eq!(
        env.strings("SELECT id FROM interaction_summaries"),
        ["young"]
    );
}

#[test]
fn the_maintenance_view_and_the_job_agree_on_every_time_form() {
    // Regression: the view compared times as text, so rows in SQLite's own form disagreed
    // with the job, which reads every form as an instant.
    let env = Env::new();
    assert!(env.run(&["migrate"]).status.success());
    let db = env.db();
    let forms = [
        // SQLite's own form, 25 hours old: text-wise it sorts before the ISO cutoff anyway.
        hours_ago(25).format("%Y-%m-%d %H:%M:%S").to_string(),
        // 23 hours old in SQLite's form: text-wise "before" an ISO cutoff of the same day.
        hours_ago(23).format("%Y-%m-%d %H:%M:%S").to_string(),
        // 26 hours old with an offset, written ahead of UTC.
        (hours_ago(26).with_timezone(&chrono::FixedOffset::east_opt(5 * 3600).unwrap()))
            .to_rfc3339_opts(SecondsFormat::Secs, false),
        // 20 hours old, with an offset that makes its text sort before the cutoff.
        (hours_ago(20).with_timezone(&chrono::FixedOffset::west_opt(9 * 3600).unwrap()))
            .to_rfc3339_opts(SecondsFormat::Secs, false),
    ];
    for (n, created_at) in forms.iter().enumerate() {
        db.execute(
            "INSERT INTO temp_uploads (id, tenant_id, path, created_at) VALUES (?1, 'acme', ?2, ?3)",
            (format!("upload-{n}"), format!("uploads/upload-{n}.csv"), created_at),
        )
        .unwrap();
    }
    let viewed = env.query_i64("SELECT stale_temp_uploads FROM maintenance_status");
    let result = env.run_json(&["run", "maintenance"], 0);
    assert_eq!(result["tempUploadsPurged"], viewed, "{result}");
    assert_eq!(viewed, 2, "{forms:?}");
}

#[test]
fn the_replay_script_passes_every_documented_call_against_a_live_server() {
    let env = Env::new()
        .with("EDGECRON_SCHEDULER", "off")
        .with("CRON_TOKEN", "replay-token")
        .with("MAINTENANCE_CRON_SECRET", "replay-maintenance");
    env.run_json(&["demo", "--rows", "300"], 0);
    let server = env.serve();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/switchover/replay.sh");
    let output = std::process::Command::new("bash")
        .arg(script)
        .arg(format!("http://{}", server.address))
        .arg(crate::support::SECRET)
        .env("CRON_TOKEN", "replay-token")
        .env("MAINTENANCE_SECRET", "replay-maintenance")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", server.log());
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(!stdout.contains("SKIP"), "{stdout}");
    let passed = stdout
        .lines()
        .filter(|line| line.starts_with("PASS"))
        .count();
    assert!(passed >= 90, "{passed} calls: {stdout}");
    // Dry runs only: the replay changed nothing but the metrics it reported.
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM job_runs WHERE result LIKE '%\"dryRun\":false%'"),
        0
    );
}
