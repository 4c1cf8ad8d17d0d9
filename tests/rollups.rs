//! Rollups and metrics over HTTP and the CLI: `telemetry-daily`, export metrics and their
//! aggregate with its alert webhook, and the legacy tick's own secrets.

use chrono::{Days, Utc};
use serde_json::Value;

use crate::support::Env;
use crate::support::webhook::Receiver;

/// `date event count unique_users` for every rollup row, in order.
fn rollup_table(env: &Env) -> Vec<String> {
    env.strings(
        "SELECT date || ' ' || event || ' ' || count || ' ' || unique_users || ' ' || meta
           FROM telemetry_daily ORDER BY date, event",
    )
}

/// The same counts straight from the raw events.
fn direct_counts(env: &Env, from: &str, to: &str) -> Vec<String> {
    let db = env.db();
    let mut statement = db
        .prepare(
            "SELECT substr(created_at, 1, 10) || ' ' || event || ' ' || COUNT(*) || ' ' || COUNT(DISTINCT user_id)
               FROM telemetry_events WHERE created_at >= ?1 AND created_at < ?2
              GROUP BY substr(created_at, 1, 10), event ORDER BY 1",
        )
        .unwrap();
    statement
        .query_map([from, to], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn without_meta(rows: &[String]) -> Vec<String> {
    rows.iter()
        .map(|row| row.splitn(5, ' ').take(4).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn telemetry_daily_over_http_matches_a_direct_count_and_is_idempotent() {
    let env = Env::new();
    env.demo();
    let server = env.serve();
    let today = Utc::now().date_naive();
    let yesterday = today - Days::new(1);

    let reply = server.trigger("GET", "/api/jobs/telemetry-daily", None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["dates"], 1);
    assert_eq!(body["startDate"], yesterday.to_string());
    assert!(
        body["rows"].as_u64().unwrap() > 0,
        "the demo has events yesterday: {body}"
    );
    assert_eq!(
        without_meta(&rollup_table(&env)),
        direct_counts(&env, &format!("{yesterday}"), &format!("{today}"))
    );

    let start = today - Days::new(20);
    let range = format!(r#"{{"startDate":"{start}","endDate":"{yesterday}"}}"#);
    let reply = server.trigger("POST", "/api/v1/cron/telemetry-daily", Some(&range));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["dates"], 20);
    let first = rollup_table(&env);
    assert!(first.len() > 20, "{first:?}");
    assert_eq!(
        without_meta(&first),
        direct_counts(&env, &start.to_string(), &today.to_string())
    );
    let overlapping = format!(
        r#"{{"startDate":"{}","endDate":"{yesterday}"}}"#,
        today - Days::new(5)
    );
    for body in [&range, &overlapping] {
        let reply = server.trigger("POST", "/api/jobs/telemetry-daily", Some(body));
        assert_eq!(reply.status, 200);
    }
    assert_eq!(rollup_table(&env), first);

    let dry = server.trigger("GET", "/api/jobs/telemetry-daily?dryRun=true", None);
    assert_eq!(dry.json()["dryRun"], true);
    assert_eq!(rollup_table(&env), first);

    for bad in [
        r#"{"startDate":"2024-03-10","endDate":"2024-03-01"}"#,
        r#"{"startDate":"2024-02-30"}"#,
        r#"{"startDate":"2023-01-01","endDate":"2024-01-02"}"#,
        r#"{"startDate":"yesterday"}"#,
    ] {
        let reply = server.trigger("POST", "/api/jobs/telemetry-daily", Some(bad));
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
    }
    let output = env.run(&["run", "telemetry-daily", "--start-date", "2024-02-30"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn the_application_records_export_metrics_and_the_aggregate_alerts_a_webhook() {
    let receiver = Receiver::start();
    let env = Env::new()
        .with("ALERT_WEBHOOK_URL", &receiver.url())
        .with("EDGECRON_LOG_FORMAT", "json");
    let server = env.serve();
    let yesterday = Utc::now().date_naive() - Days::new(1);

    let metric = |status: &str| {
        format!(
            r#"{{"tenantId":"acme","format":"csv","status":"{status}","durationMs":120,"bytes":2048,"rowCount":10,"createdAt":"{yesterday}T12:00:00Z"}}"#
        )
    };
    for index in 0..100 {
        let status = if index < 9 { "failure" } else { "success" };
        let reply = server.trigger("POST", "/api/v1/export-metrics", Some(&metric(status)));
        assert_eq!(reply.status, 201, "{}", reply.body);
    }
    let bad = server.trigger(
        "POST",
        "/api/v1/export-metrics",
        Some(r#"{"tenantId":"acme"}"#),
    );
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("format") || bad.body.contains("missing field"),
        "{}",
        bad.body
    );
    let unauthorized = server.request(
        "POST",
        "/api/v1/export-metrics",
        &[],
        Some(metric("success").as_bytes()),
    );
    assert_eq!(unauthorized.status, 401);
    assert_eq!(
        server.trigger("GET", "/api/v1/export-metrics", None).status,
        405
    );

    let day = format!(r#"{{"startDate":"{yesterday}"}}"#);
    let quiet = server.trigger("POST", "/api/v1/cron/export-metrics-aggregate", Some(&day));
    assert_eq!(quiet.status, 200, "{}", quiet.body);
    assert_eq!(quiet.json()["total_exports"], 100);
    assert!(quiet.json()["alert"].is_null(), "9% is under the threshold");
    assert!(receiver.bodies().is_empty());

    for _ in 0..2 {
        let reply = server.trigger("POST", "/api/v1/export-metrics", Some(&metric("failure")));
        assert_eq!(reply.status, 201);
    }
    // 11 of 102: 10.8%.
    let alerted = server.trigger("POST", "/api/v1/cron/export-metrics-aggregate", Some(&day));
    let body = alerted.json();
    assert_eq!(body["alert"]["type"], "export_failure_alert");
    assert_eq!(body["webhook"]["delivered"], true, "{body}");
    let received = receiver.bodies();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["type"], "export_failure_alert");
    assert_eq!(received[0]["threshold"], 0.1);
    assert!((received[0]["failure_rate"].as_f64().unwrap() - 11.0 / 102.0).abs() < 1e-9);
    // In JSON logs the alert's fields are the line's own: `type:export_failure_alert` finds it.
    let logged = server
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["type"] == "export_failure_alert" && line["severity"] == "high");
    assert!(logged.is_some(), "{}", server.log());
}

#[test]
fn the_legacy_tick_takes_its_own_token() {
    let env = Env::new().with("CRON_TOKEN", "legacy-token-1");
    let server = env.serve();
    let with = |headers: &[(&str, &str)]| server.request("POST", "/api/cron/tick", headers, None);
    let reply = with(&[("X-Cron-Token", "legacy-token-1")]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body: Value = reply.json();
    assert_eq!(body["rulesEvaluated"], 0);
    assert_eq!(
        with(&[("Authorization", "Bearer legacy-token-1")]).status,
        200
    );
    assert_eq!(with(&[("X-Cron-Token", "wrong")]).status, 401);
    // The token opens only the legacy route.
    let other = server.request(
        "POST",
        "/api/v1/cron/cron-tick",
        &[("X-Cron-Token", "legacy-token-1")],
        None,
    );
    assert_eq!(other.status, 401);
}

/// An alert rule on bounces, and a bounce five minutes ago: the next tick fires it.
fn add_a_breached_rule(db: rusqlite::Connection) {
    db.execute_batch(
        "INSERT INTO alert_rules (id, tenant_id, name, metric, window_minutes, comparator, threshold)
           VALUES ('bounces', 'acme', 'Bounce spike', 'negative_outcomes', 60, '>=', 1);
         INSERT INTO interaction_history (id, tenant_id, outcome, created_at)
           VALUES ('b1', 'acme', 'bounced', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-5 minutes'));",
    )
    .unwrap();
}

#[test]
fn an_alert_rule_event_reaches_the_webhook_once_even_if_it_was_down() {
    let closed_port = crate::support::free_port();
    let env = Env::new().with(
        "ALERT_WEBHOOK_URL",
        &format!("http://127.0.0.1:{closed_port}/hook"),
    );
    assert!(env.run(&["migrate"]).status.success());
    add_a_breached_rule(env.db());
    let down = env.run_json(&["run", "cron-tick"], 3);
    assert_eq!(down["fired"], 1);
    assert!(
        down["errors"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("webhook")
    );

    let receiver = Receiver::start();
    let env = env.with("ALERT_WEBHOOK_URL", &receiver.url());
    let back = env.run_json(&["run", "cron-tick"], 0);
    assert_eq!(back["fired"], 0, "the breach was recorded once");
    let received = receiver.bodies();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["event"], "fired");
    assert_eq!(received[0]["name"], "Bounce spike");
    env.run_json(&["run", "cron-tick"], 0);
    assert_eq!(receiver.bodies().len(), 1, "delivered once");
}

#[test]
fn the_demo_gives_the_remaining_jobs_work() {
    let env = Env::new();
    env.demo();
    let tick = env.run_json(&["run", "cron-tick"], 0);
    assert!(tick["fired"].as_u64().unwrap() > 0, "{tick}");
    assert!(tick["reportsRun"].as_u64().unwrap() > 0, "{tick}");
    let engagement = env.run_json(&["run", "engagement-health-recompute"], 0);
    assert!(engagement["customersScored"].as_u64().unwrap() > 0);
    let gitops_dir = env.data_dir().join("gitops");
    let env = env.with("GITOPS_DIR", gitops_dir.to_str().unwrap());
    let drift = env.run_json(&["run", "gitops-drift-check"], 0);
    assert_eq!(
        (
            drift["checked"].as_u64(),
            drift["drifted"].as_u64(),
            drift["missing"].as_u64()
        ),
        (Some(4), Some(1), Some(1)),
        "{drift}"
    );
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM audit_log WHERE action = 'gitops.drift_check'"),
        1
    );
}

#[test]
fn a_report_schedule_that_cannot_run_is_recorded_and_the_others_still_run() {
    let env = Env::new();
    assert!(env.run(&["migrate"]).status.success());
    env.db()
        .execute_batch(
            "INSERT INTO report_schedules (id, report, schedule, next_run_at) VALUES
               ('bad-cron', 'interactions_by_channel', 'not a cron', '2026-01-01T00:00:00.000Z'),
               ('unknown', 'no_such_report', '0 6 * * *', '2026-01-01T00:00:00.000Z'),
               ('good', 'interactions_by_channel', '0 6 * * *', '2026-01-01T00:00:00.000Z');",
        )
        .unwrap();
    let tick = env.run_json(&["run", "cron-tick"], 3);
    assert_eq!(tick["reportsRun"], 1, "{tick}");
    let mut failed: Vec<(String, String)> = tick["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| {
            (
                error["scheduleId"].as_str().unwrap().to_string(),
                error["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    failed.sort();
    assert_eq!(failed.len(), 2, "{tick}");
    assert_eq!(failed[0].0, "bad-cron");
    assert_eq!(
        failed[1],
        ("unknown".into(), "unknown report \"no_such_report\"".into())
    );
    for (id, error) in &failed {
        let recorded: String = env
            .db()
            .query_row(
                "SELECT last_error FROM report_schedules WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(&recorded, error);
    }
}

#[test]
fn a_webhook_that_never_answers_holds_cron_tick_for_seconds_at_most() {
    // Regression: a dead alert webhook made every cron-tick run take 31.5 s (three attempts
    // of 10 s each, with pauses), though a webhook must never block a job.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let env = Env::new().with("ALERT_WEBHOOK_URL", &format!("http://{address}/hook"));
    assert!(env.run(&["migrate"]).status.success());
    add_a_breached_rule(env.db());
    // The listener's backlog accepts the connection; nothing ever answers.
    let started = std::time::Instant::now();
    let result = env.run_json(&["run", "cron-tick"], 3);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(result["fired"], 1);
    assert!(
        result["errors"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("webhook")
    );
    drop(silent);
}
