//! Power cuts (SPEC section 10): the store and the exports on disks that forget what was not
//! made durable (`support::powercut`), the power cut at random instants (seeded, so a failure
//! is reproduced by its seed), then the disks remounted and the jobs run again until done.
//! `POWERCUT_CUTS` and `POWERCUT_SEED` choose how many and where; `bench/powercut` runs many.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::powercut::{Machine, power_cuts_available};
use crate::support::{Env, Moto, assert_exported_exactly_once, drain_exports, export_files};

/// The application: inserts rows into active tenants every 2 ms until it dies, committed out of
/// timestamp order (backfills up to three days back) and in both time forms SQLite reads.
const WRITER: &str = r#"
import random, sqlite3, sys, time
db, prefix, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
tenants = [row[0] for row in sqlite3.connect(db).execute("SELECT id FROM tenants WHERE active = 1")]
rng = random.Random(seed)
conn = sqlite3.connect(db, timeout=30, isolation_level=None)
conn.execute("PRAGMA busy_timeout = 30000")
conn.execute("PRAGMA synchronous = NORMAL")
n = 0
while True:
    n += 1
    at = time.time() - rng.choice([0, 0, 0, 90, 30 * 3600, 3 * 86400]) - rng.random()
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + ".%03dZ" % int(at % 1 * 1000)
    if rng.random() < 0.2:
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
    conn.execute(
        "INSERT INTO interaction_history (id, tenant_id, customer_id, channel, outcome, payload, created_at) "
        "VALUES (?, ?, 'c', 'email', 'opened', '{}', ?)",
        (f"{prefix}-{n}", rng.choice(tenants), text),
    )
    time.sleep(0.002)
"#;

/// How long the application writes before each cycle's jobs start (about 100 rows).
const HEAD_START: Duration = Duration::from_millis(300);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn writer(env: &Env, prefix: &str, seed: u64) -> Child {
    let mut command = std::process::Command::new("python3");
    command
        .args(["-c", WRITER])
        .arg(env.db_path())
        .arg(prefix)
        .arg(seed.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command.spawn().expect("python3")
}

/// The jobs of one cycle, run one after the other.
const JOBS: [&str; 2] = ["export-interactions", "s3-sync"];

/// Runs `JOBS` in turn until `until` (answers the job still running then, to die in the cut)
/// or until they are done (answers `None`). Each is this test's own child, so it is reaped.
fn run_jobs(env: &Env, until: Option<Instant>) -> Option<Child> {
    for job in JOBS {
        let mut child = env
            .command(&["run", job])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("edgecron");
        loop {
            if until.is_some_and(|until| Instant::now() >= until) {
                return Some(child);
            }
            if let Some(status) = child.try_wait().expect("the job") {
                assert!(
                    until.is_some() || status.success(),
                    "{job} failed undisturbed: {status}"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    None
}

#[test]
fn exports_and_uploads_keep_every_row_exactly_once_across_power_cuts() {
    if !power_cuts_available() {
        return;
    }
    let cuts = setting("POWERCUT_CUTS", 12);
    let seed = setting("POWERCUT_SEED", 29);
    let mut machine = Machine::new(&["store", "exports"]);
    let moto = Moto::start();
    let env = moto.configure(
        Env::new()
            .with(
                "EDGECRON_DATA_DIR",
                &machine.disk("exports").to_string_lossy(),
            )
            .with(
                "EDGECRON_DB",
                &machine.disk("store").join("edgecron.db").to_string_lossy(),
            )
            .with("EXPORT_BATCH_SIZE", "150")
            .with("RUST_LOG", "warn"),
    );
    env.run_json(&["demo", "--tenants", "3", "--rows", "300"], 0);
    machine.restart();

    // The demo's rows exported, then how long a cycle takes, so the cuts fall across all of it.
    let mut span = 0;
    for name in ["settle", "calibration"] {
        let application = writer(&env, name, seed);
        std::thread::sleep(HEAD_START);
        let started = Instant::now();
        run_jobs(&env, None);
        span = started.elapsed().as_millis() as u64 * 12 / 10;
        machine.cut(&mut [application]);
    }

    let mut rng = fastrand::Rng::with_seed(seed);
    let mut mid_run = 0;
    for cut in 0..cuts {
        let application = writer(&env, &format!("cut{cut}"), seed + cut);
        std::thread::sleep(HEAD_START);
        let cut_at = Instant::now() + Duration::from_millis(rng.u64(0..=span));
        let mut victims = vec![application];
        if let Some(running) = run_jobs(&env, Some(cut_at)) {
            mid_run += 1;
            victims.push(running);
        }
        machine.cut(&mut victims);
    }
    assert!(
        cuts < 4 || mid_run * 2 >= cuts,
        "only {mid_run} of {cuts} cuts fell in a run"
    );

    drain_exports(&env);
    env.run_json(&["run", "s3-sync"], 0);
    assert_exported_exactly_once(&env);
    assert_bucket_holds_the_local_files(&env, &moto);
    eprintln!(
        "power cuts: {cuts} during export and s3-sync ({mid_run} while a job ran, seed {seed}), \
         {} rows, 0 lost, 0 duplicated",
        env.query_i64("SELECT count(*) FROM interaction_history")
    );
}

/// Every export file is in the bucket with the same bytes, and nothing else is.
fn assert_bucket_holds_the_local_files(env: &Env, moto: &Moto) {
    let local: BTreeMap<String, String> = export_files(env)
        .into_iter()
        .map(|relative| {
            let content =
                std::fs::read_to_string(env.data_dir().join(&relative)).expect("an export file");
            (format!("backup/{}", relative.to_string_lossy()), content)
        })
        .collect();
    let stored = moto.objects("backup/exports/");
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>(),
        "the bucket's keys are the local files"
    );
    for (key, content) in &local {
        assert_eq!(&stored[key], content, "{key}");
    }
}
