//! Drop-in for the systems edgecron replaces: their routes, their metric fields, the log types
//! their dashboards query, their thresholds and settings.

use chrono::{Days, Utc};
use serde_json::Value;

use crate::support::{Env, Moto};

#[test]
fn the_replaced_system_s_routes_run_the_same_jobs_with_the_same_secret() {
    let env = Env::new();
    let server = env.serve();
    for (path, job) in [
        ("/api/cron/export-file-cleanup", "export-file-cleanup"),
        ("/api/cron/export-log-cleanup", "export-log-cleanup"),
        (
            "/api/cron/export-metrics-aggregate",
            "export-metrics-aggregate",
        ),
    ] {
        for method in ["GET", "POST"] {
            let reply = server.trigger(method, path, None);
            assert_eq!(reply.status, 200, "{method} {path}: {}", reply.body);
        }
        let dry = server.trigger("POST", path, Some(r#"{"dryRun":true}"#));
        assert_eq!(dry.json()["dryRun"], true, "{path}");
        assert_eq!(server.request("GET", path, &[], None).status, 401, "{path}");
        let runs = env.query_i64(&format!(
            "SELECT COUNT(*) FROM job_runs WHERE job = '{job}' AND trigger = 'http'"
        ));
        assert_eq!(runs, 3, "{path}");
    }
    let jobs = server.trigger("GET", "/api/v1/jobs", None).json();
    let routes = |job: &str| -> Vec<String> {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == job)
            .unwrap()["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|route| route.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        routes("export-log-cleanup"),
        [
            "/api/v1/cron/export-log-cleanup",
            "/api/cron/export-log-cleanup"
        ]
    );
    assert_eq!(routes("cleanup"), ["/api/v1/cron/cleanup"]);
}

#[test]
fn both_metric_shapes_are_recorded_once_each_and_aggregated_alike() {
    let env = Env::new().with("EDGECRON_LOG_FORMAT", "json");
    let server = env.serve();
    let yesterday = Utc::now().date_naive() - Days::new(1);
    let own = format!(
        r#"{{"tenantId":"acme","format":"csv","status":"success","durationMs":120,"bytes":2048,"createdAt":"{yesterday}T12:00:00Z"}}"#
    );
    let original = |id: &str, status: &str| {
        format!(
            r#"{{"export_id":"{id}","user_id":"user-7","format":"json","status":"{status}","conversation_count":12,"duration_ms":300,"file_size_bytes":4096,"error_type":null,"error_message":null}}"#
        )
    };
    assert_eq!(
        server
            .trigger("POST", "/api/v1/export-metrics", Some(&own))
            .status,
        201
    );
    let first = server.trigger(
        "POST",
        "/api/v1/export-metrics",
        Some(&original("exp-1", "failed")),
    );
    assert_eq!(first.status, 201, "{}", first.body);
    // The same export reported twice (a retried request): one metric.
    let again = server.trigger(
        "POST",
        "/api/v1/export-metrics",
        Some(&original("exp-1", "failed")),
    );
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(
        server
            .trigger(
                "POST",
                "/api/v1/export-metrics",
                Some(&original("exp-2", "completed"))
            )
            .status,
        201
    );
    for (body, names) in [
        (
            r#"{"export_id":"x","user_id":"u","tenantId":"t","format":"json","status":"completed","duration_ms":1}"#,
            "mixes",
        ),
        (
            r#"{"export_id":"x","user_id":"u","format":"json","status":"completed","duration_ms":1,"rows":3}"#,
            "rows",
        ),
        (
            r#"{"export_id":"x","user_id":"u","format":"json","status":"done","duration_ms":1}"#,
            "status",
        ),
    ] {
        let reply = server.trigger("POST", "/api/v1/export-metrics", Some(body));
        assert_eq!(reply.status, 400, "{body}");
        assert!(reply.body.contains(names), "{body}: {}", reply.body);
    }
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_metrics WHERE export_type = 'application'"),
        3
    );
    // The original's metrics carry no time: they are this hour's. Aggregate both days.
    let today = Utc::now().date_naive();
    let range = format!(r#"{{"startDate":"{yesterday}","endDate":"{today}"}}"#);
    let aggregate = server.trigger(
        "POST",
        "/api/v1/cron/export-metrics-aggregate",
        Some(&range),
    );
    assert_eq!(aggregate.status, 200, "{}", aggregate.body);
    assert_eq!(aggregate.json()["total_exports"], 3, "{}", aggregate.body);
    assert_eq!(
        env.query_i64("SELECT COALESCE(SUM(failures), 0) FROM export_metrics_hourly"),
        1,
        "the original's failed export counts as a failure"
    );
    let logged = logged_types(&server.log());
    assert!(
        logged
            .iter()
            .filter(|line| line["type"] == "export_metric")
            .any(|line| line["export_id"] == "exp-1" && line["status"] == "failed"),
        "{}",
        server.log()
    );
}

#[test]
fn dashboards_find_each_log_type_and_the_original_thresholds_hold() {
    let env = Env::new().with("EDGECRON_LOG_FORMAT", "json");
    assert!(env.run(&["migrate"]).status.success());
    // 1,001 exports in the last full hour, all successful and quick: the volume warning.
    let hour = (Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:30:00.000Z");
    env.db()
        .execute(
            "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 1001)
             INSERT INTO export_metrics (tenant_id, export_type, format, status, row_count, duration_ms, bytes, created_at)
             SELECT 'acme', 'application', 'csv', 'success', 1, 100, 10, ?1 FROM n",
            [hour.to_string()],
        )
        .unwrap();
    env.db()
        .execute(
            "INSERT INTO export_logs (id, tenant_id, status, file_path, expires_at) VALUES ('old', 'acme', 'completed', 'downloads/old.csv', '2020-01-01T00:00:00Z')",
            [],
        )
        .unwrap();
    let server = env.serve();
    let aggregate = server.trigger("POST", "/api/cron/export-metrics-aggregate", None);
    let alert = &aggregate.json()["alert"];
    assert_eq!(alert["severity"], "warning", "{}", aggregate.body);
    assert_eq!(alert["reasons"], serde_json::json!(["volume"]));
    assert_eq!(
        server
            .trigger("POST", "/api/cron/export-file-cleanup", None)
            .status,
        200
    );
    let lines = logged_types(&server.log());
    for kind in [
        "export_metric",
        "export_file_cleanup_complete",
        "export_failure_alert",
    ] {
        assert!(
            lines.iter().any(|line| line["type"] == kind),
            "no {kind} line in {}",
            server.log()
        );
    }
    let complete = lines
        .iter()
        .find(|line| line["type"] == "export_file_cleanup_complete")
        .unwrap();
    assert_eq!(complete["deleted_count"], 1);
    assert!(complete["duration_ms"].is_u64());
}

#[test]
fn an_unwritable_export_directory_fails_only_cleanup_s_partition_step() {
    let env = Env::new();
    env.run_json(&["demo", "--rows", "300"], 0);
    env.db()
        .execute(
            "INSERT INTO suppressions (id, customer_id, expires_at) VALUES ('gone', 'c', '2020-01-01 00:00:00')",
            [],
        )
        .unwrap();
    // A file where the partitions' directory should be: creating it fails, even for root.
    std::fs::write(env.data_dir().join("exports"), b"not a directory").unwrap();
    let result = env.run_json(&["run", "cleanup"], 3);
    assert!(
        result["cleaned"]["expiredSuppressions"].as_u64().unwrap() >= 1,
        "{result}"
    );
    assert_eq!(result["cleaned"]["partitionsEnsured"], 0);
    let errors = result["errors"].as_array().unwrap();
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|error| error["step"] == "partitionsEnsured")
    );
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM suppressions WHERE id = 'gone'"),
        0
    );
    assert!(result["upkeep"]["optimized"] == true, "{result}");
}

#[test]
fn export_log_archives_go_to_the_replaced_system_s_archive_bucket() {
    let moto = Moto::start();
    let archive_bucket = "edgecron-archive";
    moto.create_bucket(archive_bucket);
    let env = moto
        .configure(Env::new())
        .with("EXPORT_ARCHIVE_BUCKET", archive_bucket)
        .with("EXPORT_ARCHIVE_REGION", "eu-test-2");
    assert!(env.run(&["migrate"]).status.success());
    env.db()
        .execute(
            "INSERT INTO export_logs (id, created_at) VALUES ('old-log', '2020-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
    let result = env.run_json(&["run", "export-log-cleanup"], 0);
    assert_eq!(result["archived"], 1, "{result}");
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
    assert!(moto.keys().is_empty(), "nothing in the export bucket");
}

/// The JSON log lines of a server's output.
fn logged_types(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect()
}
