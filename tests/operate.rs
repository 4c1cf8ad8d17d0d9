//! Operating edgecron: `/metrics` read by a real Prometheus parser, the status page in a
//! real browser, the systemd units, the example env file, and JSON logs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Env, SECRET, available, python_has, wait_until};

#[test]
fn metrics_parse_as_prometheus_text_with_per_job_samples_after_a_run() {
    let env = Env::new();
    let server = env.serve();
    for _ in 0..2 {
        assert_eq!(
            server.trigger("POST", "/api/v1/cron/cleanup", None).status,
            200
        );
    }
    let reply = server.get("/metrics");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4")
    );
    // Python's prometheus_client is the reference parser; it fails on malformed exposition.
    let parser = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = [[s.name, s.labels, s.value] for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]
print(json.dumps(samples))
"#;
    let mut child = Command::new("python3")
        .args(["-c", parser])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), reply.body.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "prometheus_client could not parse /metrics (pip install prometheus_client): {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        reply.body
    );
    let samples: Vec<(String, serde_json::Map<String, Value>, f64)> =
        serde_json::from_slice(&output.stdout).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(sample, sample_labels, _)| {
                sample == name
                    && labels.iter().all(|(key, value)| {
                        sample_labels.get(*key).and_then(Value::as_str) == Some(value)
                    })
            })
            .map(|(_, _, value)| *value)
    };
    assert_eq!(
        value(
            "edgecron_job_runs_total",
            &[("job_name", "cleanup"), ("status", "ok")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            "edgecron_job_runs_total",
            &[("job_name", "cleanup"), ("status", "failed")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            "edgecron_job_run_duration_seconds_count",
            &[("job_name", "cleanup")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            "edgecron_job_run_duration_seconds_bucket",
            &[("job_name", "cleanup"), ("le", "+Inf")]
        ),
        Some(2.0)
    );
    assert!(
        value(
            "edgecron_job_last_success_timestamp_seconds",
            &[("job_name", "cleanup")]
        )
        .unwrap()
            > 1.7e9
    );
    assert_eq!(
        value("edgecron_job_running", &[("job_name", "siem-ship")]),
        Some(0.0)
    );
    assert_eq!(value("edgecron_export_upload_queue_files", &[]), Some(0.0));
    assert!(value("edgecron_store_size_bytes", &[]).unwrap() > 0.0);
    assert!(value("edgecron_store_wal_size_bytes", &[]).is_some());
    // A CLI run is counted too: the counters live in the store, not in the server.
    env.run_json(&["run", "cleanup"], 0);
    // One reading of the store serves /metrics for two seconds.
    wait_until(Duration::from_secs(10), || {
        server
            .get("/metrics")
            .body
            .contains("edgecron_job_runs_total{job_name=\"cleanup\",status=\"ok\"} 3")
    });
}

#[test]
fn the_status_page_needs_a_session_and_lists_every_job() {
    let env = Env::new();
    let server = env.serve();
    let redirect = server.get("/");
    assert_eq!(redirect.status, 303);
    assert!(
        redirect.head.contains("Location: /login"),
        "{}",
        redirect.head
    );
    let login = server.get("/login");
    assert_eq!(login.status, 200);
    assert!(login.body.contains("<form") && login.body.contains("name=\"secret\""));

    let wrong = server.request("POST", "/login", &[], Some(b"secret=nope"));
    assert_eq!(wrong.status, 401);
    let body = format!("secret={SECRET}");
    let signed_in = server.request("POST", "/login", &[], Some(body.as_bytes()));
    assert_eq!(signed_in.status, 303);
    let cookie_line = signed_in
        .head
        .lines()
        .find(|line| line.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a session cookie");
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"));
    assert!(
        !cookie_line.contains(SECRET),
        "the cookie must not hold the secret"
    );
    let session = cookie_line
        .split_once(':')
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string();

    let page = server.request("GET", "/", &[("Cookie", &session)], None);
    assert_eq!(page.status, 200);
    assert!(page.head.contains("Content-Security-Policy"));
    let jobs = env.run_json(&["jobs", "--json"], 0);
    for job in jobs.as_array().unwrap() {
        let name = job["name"].as_str().unwrap();
        assert!(
            page.body.contains(&format!("id=\"job-{name}\"")),
            "{name} missing"
        );
    }
    // Another site cannot sign a user in or out.
    let forged = server.request(
        "POST",
        "/logout",
        &[("Origin", "http://evil.example")],
        None,
    );
    assert_eq!(forged.status, 403);
    // The cookie opens the page, not the trigger routes.
    let trigger = server.request(
        "POST",
        "/api/v1/cron/cleanup",
        &[("Cookie", &session)],
        None,
    );
    assert_eq!(trigger.status, 401);
}

#[test]
fn a_browser_signs_in_and_sees_every_job_without_errors() {
    let ready = available(
        "EDGECRON_REQUIRE_BROWSER",
        &["/usr/bin/chromium", "/usr/bin/chromedriver"],
        "the browser test",
    );
    if !ready {
        return;
    }
    assert!(
        python_has("selenium"),
        "python3 selenium is missing (apt-get install python3-selenium)"
    );
    // A job an outside scheduler should trigger every second, which never comes (missed),
    // and one whose runs fail (failed): each unhealthy, so listed first.
    let env = Env::new()
        .with("EDGECRON_EXPECT_EXPORT_INTERACTIONS", "* * * * * *")
        .with("EDGECRON_GRACE_EXPORT_INTERACTIONS", "1");
    env.demo();
    env.run_json(&["run", "cleanup"], 0);
    seed_a_day_of_occurrences(&env);
    env.db().execute_batch("DROP TABLE ml_models").unwrap();
    for _ in 0..3 {
        env.run_json(&["run", "scheduled-retrains"], 1);
    }
    let server = env.serve();
    wait_until(Duration::from_secs(15), || {
        env.query_i64(
            "SELECT COUNT(*) FROM schedule_occurrences WHERE job = 'export-interactions' AND outcome = 'missed'",
        ) > 0
    });
    let jobs: Vec<String> = env
        .run_json(&["jobs", "--json"], 0)
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["name"].as_str().unwrap().to_string())
        .collect();
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/status_page.py"
        ))
        .arg(format!("http://{}", server.address))
        .arg(SECRET)
        .arg(&screenshot)
        .arg(jobs.join(","))
        .arg("export-interactions=missed,scheduled-retrains=failed")
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["shown"].as_array().unwrap().len(), jobs.len());
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "empty screenshot"
    );
    eprintln!("status page screenshot: {}", screenshot.display());
    // The README's picture: `EDGECRON_STATUS_SCREENSHOT=docs/status-page.png` keeps this one.
    if let Some(keep) = std::env::var_os("EDGECRON_STATUS_SCREENSHOT") {
        let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join(keep);
        std::fs::copy(&screenshot, &keep).unwrap();
        eprintln!("kept as {}", keep.display());
    }
}

/// A day of a few jobs' fire times, as a store that has been running a while holds them:
/// mostly ran, a 40-minute restart seven hours ago (coalesced), a few refused.
fn seed_a_day_of_occurrences(env: &Env) {
    for (job, every_minutes) in [
        ("approvals-expire", 15),
        ("outbox-reaper", 2),
        ("flow-scheduler-tick", 1),
        ("cron-tick", 1),
    ] {
        env.db()
            .execute(
                "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 1440 / ?2)
                 INSERT INTO schedule_occurrences (job, source, scheduled_for, outcome, recorded_at)
                 SELECT ?1, 'schedule',
                        strftime('%Y-%m-%dT%H:%M:00.000Z', 'now', printf('-%d minutes', value * ?2)),
                        CASE WHEN value * ?2 BETWEEN 400 AND 440 THEN 'coalesced'
                             WHEN ?2 = 1 AND value % 181 = 0 THEN 'refused'
                             ELSE 'ran' END,
                        strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                   FROM n",
                (job, every_minutes),
            )
            .unwrap();
    }
    // Each fire time that ran has its run, 12 ms late.
    env.db()
        .execute_batch(
            "INSERT INTO job_runs (job, trigger, status, started_at, finished_at, duration_ms, holder,
                                   scheduled_for, lag_ms)
             SELECT job, 'schedule', 'ok', strftime('%Y-%m-%dT%H:%M:%fZ', scheduled_for, '+0.012 seconds'),
                    strftime('%Y-%m-%dT%H:%M:%fZ', scheduled_for, '+0.250 seconds'), 238, 'seed',
                    scheduled_for, 12
               FROM schedule_occurrences WHERE outcome = 'ran' ORDER BY scheduled_for;
             UPDATE schedule_occurrences SET lag_ms = 12, run_id = (SELECT id FROM job_runs r
                 WHERE r.job = schedule_occurrences.job AND r.scheduled_for = schedule_occurrences.scheduled_for)
              WHERE outcome = 'ran';",
        )
        .unwrap();
}

#[test]
fn the_systemd_units_verify_clean() {
    if !available(
        "EDGECRON_REQUIRE_SYSTEMD",
        &["/usr/bin/systemd-analyze"],
        "systemd-analyze verify",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let units = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd");
    for name in [
        "edgecron.service",
        "edgecron-run@.service",
        "edgecron-run@.timer",
        "edgecron-backup.service",
        "edgecron-backup.timer",
    ] {
        // verify checks that ExecStart's binary exists: point it at the one just built.
        let text = std::fs::read_to_string(Path::new(units).join(name)).unwrap();
        let text = text.replace("/usr/bin/edgecron", env!("CARGO_BIN_EXE_edgecron"));
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    for (instance, template) in [
        ("edgecron-run@cleanup.service", "edgecron-run@.service"),
        ("edgecron-run@cleanup.timer", "edgecron-run@.timer"),
    ] {
        std::os::unix::fs::symlink(template, dir.path().join(instance)).unwrap();
    }
    let output = Command::new("systemd-analyze")
        .current_dir(dir.path())
        .args([
            "verify",
            "./edgecron.service",
            "./edgecron-run@cleanup.service",
            "./edgecron-run@cleanup.timer",
            "./edgecron-backup.service",
            "./edgecron-backup.timer",
        ])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

#[test]
fn json_logs_carry_the_job_and_run_id_and_never_the_secret() {
    let env = Env::new().with("EDGECRON_LOG_FORMAT", "json");
    let output = env.run(&["run", "cleanup"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    for line in &lines {
        for key in ["time", "level", "target", "message"] {
            assert!(line[key].is_string(), "{key} in {line}");
        }
    }
    let run_lines: Vec<&Value> = lines
        .iter()
        .filter(|line| line["job"] == "cleanup")
        .collect();
    assert!(run_lines.len() >= 2, "start and end: {stderr}");
    assert!(run_lines.iter().all(|line| line["runId"].is_i64()));
    assert!(
        run_lines
            .iter()
            .any(|line| line["message"].as_str().unwrap().contains("started"))
    );

    // A job's own threads (the export's readers and writers) log for its run too.
    env.demo();
    let export = env.run(&["run", "export-interactions"]);
    let stderr = String::from_utf8_lossy(&export.stderr);
    let from_start: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .skip_while(|line| !line["message"].as_str().unwrap().contains("started"))
        .collect();
    assert!(from_start.len() >= 2, "{stderr}");
    assert!(
        from_start
            .iter()
            .all(|line| line["job"] == "export-interactions"),
        "{stderr}"
    );

    let mut server = env.serve();
    assert_eq!(
        server.trigger("POST", "/api/v1/cron/cleanup", None).status,
        200
    );
    server.signal("TERM");
    server.wait_exit(std::time::Duration::from_secs(20));
    let log = server.log();
    assert!(!log.is_empty() && !log.contains(SECRET));
    for line in log.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|error| panic!("{error}: {line}"));
    }

    let bad = env.with("EDGECRON_LOG_FORMAT", "xml").run(&["jobs"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn promtool_passes_the_live_metrics_and_the_shipped_rules_and_the_dashboard_uses_real_metrics() {
    if !available(
        "EDGECRON_REQUIRE_PROMTOOL",
        &["/usr/bin/promtool"],
        "promtool check",
    ) {
        return;
    }
    // A SIEM backend named, so its families are served too (nothing is shipped here).
    let env = Env::new()
        .with("SIEM_BACKEND", "splunk")
        .with("SIEM_ENDPOINT", "http://127.0.0.1:9")
        .with("SIEM_API_KEY", "unused");
    let server = env.serve();
    assert_eq!(
        server.trigger("POST", "/api/v1/cron/cleanup", None).status,
        200
    );
    let metrics = server.get("/metrics").body;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join("contrib/prometheus/edgecron.rules.yml"))
        .output()
        .unwrap();
    assert!(
        rules.status.success(),
        "promtool check rules: {}",
        String::from_utf8_lossy(&rules.stdout)
    );
    // Every metric the rules and the dashboard query is one /metrics serves.
    let served: Vec<&str> = metrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let dashboard = std::fs::read_to_string(root.join("contrib/grafana/edgecron.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard).unwrap();
    let rules_text =
        std::fs::read_to_string(root.join("contrib/prometheus/edgecron.rules.yml")).unwrap();
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().clone())
        .map(|target| target["expr"].as_str().unwrap().to_string())
        .collect();
    queries.push(rules_text);
    for query in &queries {
        for name in query
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("edgecron_"))
        {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                served.contains(&family) || served.contains(&name),
                "{name} is queried but not served"
            );
        }
    }
}
