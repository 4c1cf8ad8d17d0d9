//! HTTP routes against a real `edgecron serve` on loopback: status codes, auth, overlap,
//! shutdown and hostile clients.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use std::process::Stdio;

use crate::support::{Env, SECRET, read_reply, signal, wait_until};

#[test]
fn every_status_code_on_its_trigger() {
    let env = Env::new();
    env.demo();
    let server = env.serve();

    let ok = server.trigger(
        "POST",
        "/api/v1/cron/approvals-expire",
        Some(r#"{"dryRun":true}"#),
    );
    assert_eq!(ok.status, 200, "{}\n{}", ok.body, server.log());
    assert_eq!(ok.json()["dryRun"], true);
    assert!(ok.json()["expired"].as_u64().unwrap() > 0);
    assert_eq!(
        server
            .trigger("GET", "/api/v1/cron/outbox-reaper?dryRun=true", None)
            .status,
        200
    );

    let secret_header = server.request(
        "GET",
        "/api/v1/cron/cleanup?dryRun=true",
        &[("X-Cron-Secret", SECRET)],
        None,
    );
    assert_eq!(secret_header.status, 200, "{}", secret_header.body);

    for (body, mentions) in [
        ("{not json", "malformed JSON"),
        (r#"{"dryrun":true}"#, "unknown field"),
        (r#"{"startDate":"2024-02-30"}"#, "startDate"),
        (r#"{"dryRun":"yes"}"#, "malformed JSON"),
        // Regression: a `null` dryRun started a real run.
        (r#"{"dryRun":null}"#, "expected a boolean"),
        (r#"{"dryRun":0}"#, "expected a boolean"),
        (r#"{"startDate":"2024-01-01"}"#, "takes no startDate"),
    ] {
        let reply = server.trigger("POST", "/api/v1/cron/cleanup", Some(body));
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.json()["ok"], false);
        assert!(
            reply.json()["error"].as_str().unwrap().contains(mentions),
            "{body}: {}",
            reply.body
        );
    }
    for query in ["dryRun=perhaps", "dryRun=1", "dryRun="] {
        assert_eq!(
            server
                .trigger("GET", &format!("/api/v1/cron/cleanup?{query}"), None)
                .status,
            400,
            "{query}"
        );
    }

    assert_eq!(
        server
            .request("POST", "/api/v1/cron/cleanup", &[], None)
            .status,
        401
    );
    let wrong = server.request(
        "POST",
        "/api/v1/cron/cleanup",
        &[("Authorization", "Bearer nope")],
        None,
    );
    assert_eq!(wrong.status, 401);
    assert!(wrong.head.contains("WWW-Authenticate: Bearer"));
    assert_eq!(server.get("/api/v1/jobs").status, 401);

    assert_eq!(
        server
            .trigger("GET", "/api/v1/cron/no-such-job", None)
            .status,
        404
    );
    assert_eq!(server.get("/nowhere").status, 404);

    let not_allowed = server.trigger("DELETE", "/api/v1/cron/cleanup", None);
    assert_eq!(not_allowed.status, 405);
    assert!(
        not_allowed.head.contains("Allow: GET, POST"),
        "{}",
        not_allowed.head
    );
    assert_eq!(server.trigger("POST", "/healthz", None).status, 405);

    let big = vec![b' '; 1024 * 1024 + 1];
    let auth = format!("Bearer {SECRET}");
    let too_large = server.request(
        "POST",
        "/api/v1/cron/cleanup",
        &[("Authorization", &auth)],
        Some(&big),
    );
    assert_eq!(too_large.status, 413);

    // 500: the job fails as a whole when a table it needs is gone.
    env.db().execute_batch("DROP TABLE approvals").unwrap();
    let failed = server.trigger("POST", "/api/v1/cron/approvals-expire", None);
    assert_eq!(failed.status, 500, "{}", failed.body);
    assert_eq!(failed.json()["ok"], false);
    assert!(
        failed.json()["error"]
            .as_str()
            .unwrap()
            .contains("approvals")
    );

    let health = server.get("/healthz");
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );

    let jobs = server.trigger("GET", "/api/v1/jobs", None).json();
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"cleanup") && names.contains(&"flow-scheduler-tick"),
        "{names:?}"
    );
    let runs = server
        .trigger("GET", "/api/v1/runs?job=approvals-expire&limit=10", None)
        .json();
    let statuses: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "ok"]);
    assert_eq!(runs[0]["trigger"], "http");
    assert_eq!(
        server.trigger("GET", "/api/v1/runs?limit=0", None).status,
        400
    );
    assert_eq!(
        server.trigger("GET", "/api/v1/runs?job=nope", None).status,
        404
    );
    assert!(
        !server.log().contains(SECRET),
        "the secret must never be logged"
    );
}

#[test]
fn disabled_cron_answers_503_and_fires_nothing() {
    let env = Env::new()
        .with("CRON_ENABLED", "false")
        .with("EDGECRON_SCHEDULE_APPROVALS_EXPIRE", "* * * * * *");
    let server = env.serve();
    let reply = server.trigger("POST", "/api/v1/cron/cleanup", None);
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(server.get("/healthz").status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM job_runs"), 0);
}

#[test]
fn concurrent_triggers_of_one_job_never_overlap_across_http_and_cli() {
    let env = Env::new();
    env.demo();
    env.add_expired_suppressions(1_000_000);
    let server = env.serve();

    // A CLI run takes the lease; frozen mid-run, it holds it (and maybe SQLite's write lock).
    let mut holder = env
        .command(&["run", "cleanup"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    env.wait_for_running("cleanup");
    signal(holder.id(), "STOP");

    let conflict = server.trigger("POST", "/api/v1/cron/cleanup", None);
    assert_eq!(conflict.status, 409, "{}\n{}", conflict.body, server.log());
    assert_eq!(conflict.json()["running"]["trigger"], "cli");
    let second_cli = env.run_json(&["run", "cleanup"], 4);
    assert_eq!(second_cli["ok"], false);
    assert!(
        second_cli["error"]
            .as_str()
            .unwrap()
            .contains("already running")
    );
    assert_eq!(
        second_cli["running"]["runId"],
        conflict.json()["running"]["runId"]
    );

    signal(holder.id(), "CONT");
    assert_eq!(holder.wait().unwrap().code(), Some(0));
    let mut stdout = String::new();
    std::io::Read::read_to_string(holder.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains("expiredSuppressions"), "{stdout}");

    // Triggers racing each other: exactly one runs at a time.
    std::thread::scope(|scope| {
        let racers: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| server.trigger("POST", "/api/v1/cron/cleanup", None).status))
            .collect();
        for racer in racers {
            let status = racer.join().unwrap();
            assert!(status == 200 || status == 409, "{status}");
        }
    });

    let conn = env.db();
    let mut statement = conn
        .prepare("SELECT started_at, finished_at, status FROM job_runs WHERE job = 'cleanup' ORDER BY started_at, id")
        .unwrap();
    let spans: Vec<(String, String, String)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(spans.len() >= 2, "{spans:?}");
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "runs overlap: {spans:?}");
    }
    assert!(spans.iter().all(|span| span.2 == "ok"), "{spans:?}");
}

#[test]
fn sigterm_during_a_run_stops_it_at_a_safe_point_and_leaves_nothing_running() {
    let env = Env::new();
    env.demo();
    env.add_expired_suppressions(1_000_000);
    let mut server = env.serve();
    std::thread::scope(|scope| {
        let run = scope.spawn(|| server.trigger("POST", "/api/v1/cron/cleanup", None));
        env.wait_for_running("cleanup");
        server.signal("TERM");
        let reply = run.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        // Stopped between batches, its progress kept and reported.
        assert_eq!(reply.json()["finished"], false, "{}", reply.body);
    });
    assert_eq!(
        server.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        server.log()
    );
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM job_runs WHERE status = 'running'"),
        0
    );
    assert_eq!(env.query_i64("SELECT COUNT(*) FROM job_leases"), 0);
    let left = env.query_i64("SELECT COUNT(*) FROM suppressions WHERE id LIKE 'bulk-%'");
    assert!(left > 0 && left < 1_000_000, "{left}");

    // The next run finishes the work.
    let result = env.run_json(&["run", "cleanup"], 0);
    assert_eq!(result["finished"], true);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM suppressions WHERE id LIKE 'bulk-%'"),
        0
    );
}

#[test]
fn idle_half_sent_connections_and_a_huge_header_do_not_take_the_listener_down() {
    let env = Env::new();
    let server = env.serve();
    let mut idle = Vec::new();
    for n in 0..500 {
        let mut stream = TcpStream::connect(server.address).unwrap();
        // A request head that never ends.
        stream
            .write_all(format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow-{n}: ").as_bytes())
            .unwrap();
        idle.push(stream);
    }
    let address = server.address;
    let huge = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Huge: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 8 * 1024 * 1024));
        head.extend(b"\r\nConnection: close\r\n\r\n");
        // The server may refuse before reading it all.
        let _ = stream.write_all(&head);
        read_reply(&mut stream).status
    });

    let started = Instant::now();
    let reply = server.trigger("POST", "/api/v1/cron/approvals-expire", None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(huge.join().unwrap(), 431);

    let peak_kib = server.memory_kib("VmHWM");
    assert!(peak_kib < 256 * 1024, "peak RSS {peak_kib} KiB");
    drop(idle);
    for _ in 0..20 {
        assert_eq!(server.get("/healthz").status, 200);
    }
    assert_eq!(
        server
            .trigger("GET", "/api/v1/cron/approvals-expire", None)
            .status,
        200
    );
}

#[test]
fn without_cron_secret_serve_generates_a_private_secret_file_and_never_logs_it() {
    let env = Env::new().without("CRON_SECRET");
    let server = env.serve();
    let path = env.data_dir().join("cron-secret");
    let secret = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert_eq!(secret.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        server
            .request("POST", "/api/v1/cron/cleanup", &[], None)
            .status,
        401
    );
    let auth = format!("Bearer {secret}");
    assert_eq!(
        server
            .request(
                "POST",
                "/api/v1/cron/cleanup",
                &[("Authorization", &auth)],
                None
            )
            .status,
        200
    );
    assert!(server.log().contains("cron-secret"));
    assert!(!server.log().contains(&secret));
}

#[test]
fn rotated_secrets_are_all_accepted() {
    let env = Env::new().with("CRON_SECRET", "new-one,old-one");
    let server = env.serve();
    for secret in ["new-one", "old-one"] {
        let reply = server.request(
            "GET",
            "/api/v1/cron/cleanup?dryRun=true",
            &[("X-Cron-Secret", secret)],
            None,
        );
        assert_eq!(reply.status, 200, "{secret}");
    }
    let reply = server.request(
        "GET",
        "/api/v1/cron/cleanup",
        &[("X-Cron-Secret", "new-one,old-one")],
        None,
    );
    assert_eq!(reply.status, 401);
}

#[test]
fn the_maintenance_route_also_accepts_its_own_secret() {
    let env = Env::new().with("MAINTENANCE_CRON_SECRET", "maintenance-only");
    env.demo();
    let server = env.serve();
    let reply = server.request(
        "GET",
        "/api/admin/maintenance",
        &[("Authorization", "Bearer maintenance-only")],
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    for key in [
        "timestamp",
        "stuckRunsMarked",
        "tempUploadsPurged",
        "importJobsCompacted",
        "rawItemsPurged",
        "errors",
    ] {
        assert!(
            body.get(key).is_some(),
            "maintenance result lacks {key}: {body}"
        );
    }
    assert!(body["stuckRunsMarked"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(
        server.trigger("GET", "/api/admin/maintenance", None).status,
        200
    );
    assert_eq!(
        server
            .request(
                "POST",
                "/api/admin/maintenance",
                &[("Authorization", "Bearer maintenance-only")],
                None
            )
            .status,
        405
    );
    // The maintenance secret opens that route only.
    let elsewhere = server.request(
        "GET",
        "/api/v1/cron/cleanup",
        &[("Authorization", "Bearer maintenance-only")],
        None,
    );
    assert_eq!(elsewhere.status, 401);
}

#[test]
fn one_secret_per_request_and_every_refusal_counted_without_its_value() {
    // Regression: one request could carry many candidate secrets (any match passed), and a
    // failed authentication left no log line and no metric.
    let env = Env::new();
    env.demo();
    let server = env.serve();
    let before = env.query_i64("SELECT COUNT(*) FROM job_runs");
    let both = server.request(
        "POST",
        "/api/v1/cron/cleanup",
        &[
            ("Authorization", "Bearer guess-1"),
            ("Authorization", &format!("Bearer {SECRET}")),
        ],
        None,
    );
    assert_eq!(both.status, 400, "{}", both.body);
    let mixed = server.request(
        "POST",
        "/api/v1/cron/cleanup",
        &[
            ("Authorization", &format!("Bearer {SECRET}")),
            ("X-Cron-Secret", "guess-2"),
        ],
        None,
    );
    assert_eq!(mixed.status, 400, "{}", mixed.body);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM job_runs"),
        before,
        "no job ran"
    );
    for guess in 0..5 {
        let reply = server.request(
            "GET",
            "/api/v1/jobs",
            &[("X-Cron-Secret", &format!("wrong-guess-{guess}"))],
            None,
        );
        assert_eq!(reply.status, 401);
    }
    let metrics = server.get("/metrics").body;
    assert!(
        metrics.contains("edgecron_http_auth_refused_total 7"),
        "{metrics}"
    );
    wait_until(Duration::from_secs(5), || {
        server.log().contains("refused: a wrong secret")
    });
    let log = server.log();
    assert!(log.contains("from 127.0.0.1:"), "{log}");
    assert!(
        !log.contains("wrong-guess") && !log.contains("guess-1"),
        "{log}"
    );
}

#[test]
fn head_is_get_without_the_body_and_a_bare_cr_is_refused_at_once() {
    let env = Env::new();
    let server = env.serve();
    let head = server.request("HEAD", "/healthz", &[], None);
    assert_eq!(head.status, 200, "{}", head.head);
    assert!(head.body.is_empty());
    let length = head
        .head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .unwrap();
    assert_eq!(length, server.get("/healthz").body.len().to_string());
    // HEAD never runs a job: a trigger's GET does.
    let trigger = server.request(
        "HEAD",
        "/api/v1/cron/cleanup",
        &[("X-Cron-Secret", SECRET)],
        None,
    );
    assert_eq!(trigger.status, 405);
    let started = std::time::Instant::now();
    let mut raw = crate::support::raw::Raw::send_to(
        server.address,
        b"GET /healthz HTTP/1.1\rHost: x\r\n\r\n",
    );
    assert_eq!(raw.statuses_until_closed(Duration::from_secs(5)), [400]);
    assert!(started.elapsed() < Duration::from_secs(2));
}
