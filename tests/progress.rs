//! Long work always finishes: bulk changes make progress while the application holds the
//! write lock, and a run stopped before its work was done is never reported `ok`.

use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use crate::support::Env;

/// The application in a long write transaction after another (60 ms each, 5 ms apart), for
/// `lasting`.
fn hold_the_write_lock(
    env: &Env,
    lasting: Duration,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let started = Arc::new(AtomicBool::new(false));
    let conn = env.db();
    let flag = Arc::clone(&started);
    let holder = std::thread::spawn(move || {
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        let until = Instant::now() + lasting;
        let mut transactions = 0;
        while Instant::now() < until {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            flag.store(true, Ordering::SeqCst);
            conn.execute(
                "INSERT INTO telemetry_events (event, created_at) VALUES ('held', ?1)",
                [Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)],
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(60));
            conn.execute_batch("COMMIT").unwrap();
            transactions += 1;
            // Between requests: other writers get their turn.
            std::thread::sleep(Duration::from_millis(5));
        }
        transactions
    });
    while !started.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    (started, holder)
}

/// Runs `edgecron run JOB`, failing the test if it takes longer than `limit`.
fn run_within(env: &Env, job: &str, limit: Duration) -> Output {
    let mut child = env.spawn(&["run", job]);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < limit,
            "{job} still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn days_ago(days: i64) -> String {
    (Utc::now() - chrono::Duration::days(days)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn seed_old_interactions(env: &Env, rows: usize) {
    assert!(env.run(&["migrate"]).status.success());
    let mut db = env.db();
    let tx = db.transaction().unwrap();
    tx.execute_batch(
        "INSERT INTO tenants (id, name) VALUES ('acme', 'Acme');
         INSERT INTO retention_policies (tenant_id, data_class, retention_days) VALUES ('acme', 'all', 1);",
    )
    .unwrap();
    let old = days_ago(3);
    for n in 0..rows {
        tx.execute(
            "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES (?1, 'acme', ?2)",
            (format!("old-{n:07}"), &old),
        )
        .unwrap();
    }
    tx.execute(
        "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES ('recent', 'acme', ?1)",
        [days_ago(0)],
    )
    .unwrap();
    tx.commit().unwrap();
}

#[test]
fn a_purge_started_while_the_application_holds_the_write_lock_finishes() {
    // Regression: the first batch waited for the application's 60 ms transactions, the pace
    // took the wait for the batch's own work, found no batch worth a slice, and the purge
    // idled at 0% CPU until its deadline, then said `ok`.
    let env = Env::new().with("RUST_LOG", "warn");
    seed_old_interactions(&env, 50_000);
    let (_, holder) = hold_the_write_lock(&env, Duration::from_secs(3));
    let output = run_within(&env, "dsar-purge", Duration::from_secs(30));
    assert!(holder.join().unwrap() > 10);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        result["perTenant"][0]["interactionHistory"], 50_000,
        "{result}"
    );
    assert_eq!(
        env.strings("SELECT id FROM interaction_history"),
        ["recent"],
        "nothing past the cutoff is left"
    );
}

#[test]
fn a_cleanup_started_while_the_application_holds_the_write_lock_finishes() {
    let env = Env::new().with("RUST_LOG", "warn");
    assert!(env.run(&["migrate"]).status.success());
    {
        let mut db = env.db();
        let tx = db.transaction().unwrap();
        let expired = days_ago(1);
        for n in 0..20_000 {
            tx.execute(
                "INSERT INTO suppressions (id, tenant_id, expires_at) VALUES (?1, 'acme', ?2)",
                (format!("s-{n:06}"), &expired),
            )
            .unwrap();
        }
        tx.execute(
            "INSERT INTO suppressions (id, tenant_id, expires_at) VALUES ('in-force', 'acme', ?1)",
            [days_ago(-1)],
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let (_, holder) = hold_the_write_lock(&env, Duration::from_secs(3));
    let output = run_within(&env, "cleanup", Duration::from_secs(30));
    holder.join().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["cleaned"]["expiredSuppressions"], 20_000, "{result}");
    assert_eq!(env.strings("SELECT id FROM suppressions"), ["in-force"]);
}

#[test]
fn a_run_stopped_by_its_deadline_is_partial_never_ok() {
    let env = Env::new()
        .with("RUST_LOG", "warn")
        .with("EDGECRON_JOB_DEADLINE_SECS", "1");
    seed_old_interactions(&env, 600_000);
    // Keep the purge slow enough to meet its deadline.
    let (_, holder) = hold_the_write_lock(&env, Duration::from_secs(5));
    let output = run_within(&env, "dsar-purge", Duration::from_secs(30));
    holder.join().unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (result["ok"].clone(), result["finished"].clone()),
        (false.into(), false.into())
    );
    let runs = env.run_json(&["runs", "dsar-purge", "--json"], 0);
    assert_eq!(runs[0]["status"], "partial", "{runs}");
    // The runs after it finish the work.
    let finished = (0..30).any(|_| {
        run_within(&env, "dsar-purge", Duration::from_secs(30))
            .status
            .success()
    });
    assert!(finished);
    assert_eq!(
        env.strings("SELECT id FROM interaction_history"),
        ["recent"]
    );
}
