//! Power cuts (SPEC section 10): the store and the exports on disks that forget what was not
//! made durable (`support::powercut`), the power cut at random instants (seeded, so a failure
//! is reproduced by its seed), then the disks remounted and the jobs run again until done.
//! `POWERCUT_CUTS` and `POWERCUT_SEED` choose how many and where; `bench/powercut` runs many.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::intake::{Intake, Kind};
use crate::support::powercut::{Machine, power_cuts_available};
use crate::support::{Env, Moto, assert_exported_exactly_once, drain_exports, export_files};

/// The application: inserts rows into active tenants every 2 ms until it dies, committed out of
/// timestamp order (backfills up to three days back) and in both time forms SQLite reads:
/// interaction rows, or audit rows (`audit` as its fourth argument).
const WRITER: &str = r#"
import random, sqlite3, sys, time
db, prefix, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
audit = sys.argv[4:] == ["audit"]
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
    if audit:
        conn.execute(
            "INSERT INTO audit_log (id, tenant_id, actor, action, target, details, created_at) "
            "VALUES (?, ?, 'app', 'login', 'user', '{}', ?)",
            (f"{prefix}-{n}", rng.choice(tenants), text),
        )
        time.sleep(0.002)
        continue
    conn.execute(
        "INSERT INTO interaction_history (id, tenant_id, customer_id, channel, outcome, payload, created_at) "
        "VALUES (?, ?, 'c', 'email', 'opened', '{}', ?)",
        (f"{prefix}-{n}", rng.choice(tenants), text),
    )
    time.sleep(0.002)
"#;

/// How long the application writes before each cycle's jobs start (about 100 rows).
const HEAD_START: Duration = Duration::from_millis(300);

/// An environment whose store is on `machine`'s disk `store`.
fn store_on(machine: &Machine) -> Env {
    Env::new().with(
        "EDGECRON_DB",
        &machine.disk("store").join("edgecron.db").to_string_lossy(),
    )
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn writer_of(env: &Env, prefix: &str, seed: u64, table: &[&str]) -> Child {
    let mut command = std::process::Command::new("python3");
    command
        .args(["-c", WRITER])
        .arg(env.db_path())
        .arg(prefix)
        .arg(seed.to_string())
        .args(table)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command.spawn().expect("python3")
}

/// The jobs of an export cycle, run one after the other.
const EXPORT_JOBS: &[&str] = &["export-interactions", "s3-sync"];

/// Runs `jobs` in turn until `until` (answers the job still running then, to die in the cut)
/// or until they are done (answers `None`). Each is this test's own child, so it is reaped.
fn run_jobs(env: &Env, jobs: &[&str], until: Option<Instant>) -> Option<Child> {
    for &job in jobs {
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
    if power_cuts_available() {
        export_cuts(Durability::Full);
    }
}

/// With `normal`, the store's last commits may be lost; the export files they named are then
/// taken over by the same batch run again, so each row is still in exactly one file on disk
/// (the bucket may then hold an object of the lost commit; README: what `normal` risks).
#[test]
fn with_normal_durability_exports_keep_every_row_in_one_file_across_power_cuts() {
    if power_cuts_available() {
        export_cuts(Durability::Normal);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Durability {
    Full,
    Normal,
}

fn export_cuts(durability: Durability) {
    let cuts = setting("POWERCUT_CUTS", 12);
    let seed = setting("POWERCUT_SEED", 29);
    let mut machine = Machine::new(&["store", "exports"]);
    let moto = Moto::start();
    let env = moto.configure(
        store_on(&machine)
            .with(
                "EDGECRON_DATA_DIR",
                &machine.disk("exports").to_string_lossy(),
            )
            .with("EXPORT_BATCH_SIZE", "150")
            .with("RUST_LOG", "warn"),
    );
    let (env, jobs): (Env, &[&str]) = match durability {
        Durability::Full => (env, EXPORT_JOBS),
        Durability::Normal => (
            env.with("EDGECRON_DURABILITY", "normal")
                .without("S3_BUCKET"),
            &["export-interactions"],
        ),
    };
    env.run_json(&["demo", "--tenants", "3", "--rows", "300"], 0);
    machine.restart();

    let mid_run = cut_cycles(&mut machine, &env, jobs, &[], cuts, seed);

    drain_exports(&env);
    if durability == Durability::Full {
        env.run_json(&["run", "s3-sync"], 0);
    }
    assert_exported_exactly_once(&env);
    if durability == Durability::Full {
        assert_bucket_holds_the_local_files(&env, &moto);
    }
    eprintln!(
        "power cuts: {cuts} during {} ({mid_run} while a job ran, seed {seed}), \
         {} rows, 0 lost, 0 duplicated",
        jobs.join(" and "),
        env.query_i64("SELECT count(*) FROM interaction_history")
    );
    assert_not_vacuous(mid_run, cuts);
}

/// `cuts` power cuts, each at a random instant of a cycle: the application writing (with
/// `writer_args`) for a head start, then `jobs` in turn. Answers how many fell while a job ran.
fn cut_cycles(
    machine: &mut Machine,
    env: &Env,
    jobs: &[&str],
    writer_args: &[&str],
    cuts: u64,
    seed: u64,
) -> u64 {
    // The demo's rows taken first, then how long a cycle takes.
    let mut span = Span(Duration::ZERO);
    for name in ["settle", "calibration"] {
        let mut application = writer_of(env, name, seed, writer_args);
        std::thread::sleep(HEAD_START);
        let started = Instant::now();
        run_jobs(env, jobs, None);
        span = Span(started.elapsed().mul_f64(1.2));
        machine.cut([&mut application]);
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut mid_run = 0;
    for cut in 0..cuts {
        let application = writer_of(env, &format!("cut{cut}"), seed + cut, writer_args);
        std::thread::sleep(HEAD_START);
        let started = Instant::now();
        let mut victims = vec![application];
        match run_jobs(env, jobs, Some(started + span.pick(&mut rng))) {
            Some(running) => {
                mid_run += 1;
                victims.push(running);
                span.cut_mid_run();
            }
            None => span.ran(started.elapsed()),
        }
        machine.cut(&mut victims);
    }
    mid_run
}

/// Where cuts fall: uniformly over about 1.2 times what a cycle's jobs take, learnt as the
/// cycles go (the store, the backlog and the files grow).
struct Span(Duration);

impl Span {
    fn pick(&self, rng: &mut fastrand::Rng) -> Duration {
        Duration::from_millis(rng.u64(0..=self.0.as_millis() as u64))
    }

    /// A cycle whose jobs ended before the cut took `took`.
    fn ran(&mut self, took: Duration) {
        self.0 = (self.0 * 3 + took.mul_f64(1.2)) / 4;
    }

    /// A cycle cut while a job ran: its jobs may take longer than thought.
    fn cut_mid_run(&mut self) {
        self.0 = self.0.mul_f64(1.05);
    }
}

/// A power-cut test whose cuts mostly fell between runs would prove little.
fn assert_not_vacuous(mid_run: u64, cuts: u64) {
    assert!(
        cuts < 8 || mid_run * 4 >= cuts,
        "only {mid_run} of {cuts} cuts fell in a run"
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

/// Per tenant: rows of the purged tables left, plus the rows the purge's audit rows say it
/// deleted. A purge only moves rows from the first to the second.
fn rows_and_audited(env: &Env) -> BTreeMap<String, i64> {
    env.strings(
        "SELECT t.id || ' ' || (
             (SELECT count(*) FROM interaction_history WHERE tenant_id = t.id)
           + (SELECT count(*) FROM decision_traces WHERE tenant_id = t.id)
           + (SELECT count(*) FROM ai_attachments WHERE tenant_id = t.id)
           + (SELECT coalesce(sum(json_extract(details, '$.interactionHistory'))
                  + sum(json_extract(details, '$.decisionTraces'))
                  + sum(json_extract(details, '$.aiAttachments')), 0)
                FROM audit_log WHERE action = 'dsar.purge' AND tenant_id = t.id))
         FROM tenants t ORDER BY t.id",
    )
    .into_iter()
    .map(|line| {
        let (tenant, total) = line.split_once(' ').expect("tenant and total");
        (tenant.to_string(), total.parse().expect("a count"))
    })
    .collect()
}

/// The application backfills `count` rows already past the tenants' 30-day retention.
fn backfill_expired(env: &Env, prefix: &str, count: usize) {
    let tenants = env.strings("SELECT id FROM tenants ORDER BY id");
    env.insert_interactions(prefix, count, &tenants, |n| {
        format!("-{} days", 31 + n % 60)
    });
}

#[test]
fn a_purge_cut_anywhere_has_audited_exactly_the_rows_gone() {
    if !power_cuts_available() {
        return;
    }
    let cuts = setting("POWERCUT_CUTS", 12);
    let seed = setting("POWERCUT_SEED", 29);
    let mut machine = Machine::new(&["store"]);
    let env = store_on(&machine).with("RUST_LOG", "warn");
    env.run_json(&["demo", "--tenants", "3", "--rows", "600"], 0);
    env.db()
        .execute_batch(
            "DELETE FROM retention_policies;
             INSERT INTO retention_policies (tenant_id, data_class, retention_days)
                 SELECT id, 'all', 30 FROM tenants;",
        )
        .expect("policies");
    machine.restart();

    // The demo's expired rows purged, then how long a purge of one backfill takes, so the cuts
    // fall across all of it.
    run_jobs(&env, &["dsar-purge"], None);
    backfill_expired(&env, "calibration", 400);
    let started = Instant::now();
    run_jobs(&env, &["dsar-purge"], None);
    let mut span = Span(started.elapsed().mul_f64(1.2));
    machine.restart();

    let mut rng = fastrand::Rng::with_seed(seed);
    let mut expected = rows_and_audited(&env);
    let mut mid_run = 0;
    for cut in 0..cuts {
        backfill_expired(&env, &format!("expired{cut}"), 400);
        let inserted = rows_and_audited(&env);
        for (tenant, total) in &inserted {
            assert!(*total > expected[tenant], "the backfill is counted");
        }
        expected = inserted;
        machine.restart();
        let mut purge = env
            .command(&["run", "dsar-purge"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("edgecron");
        let started = Instant::now();
        let cut_at = started + span.pick(&mut rng);
        while Instant::now() < cut_at && purge.try_wait().expect("the purge").is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        match purge.try_wait().expect("the purge") {
            None => {
                mid_run += 1;
                span.cut_mid_run();
            }
            Some(_) => span.ran(started.elapsed()),
        }
        machine.cut([&mut purge]);
        assert_eq!(rows_and_audited(&env), expected, "after cut {cut}");
    }
    let last = env.run_json(&["run", "dsar-purge"], 0);
    assert_eq!(rows_and_audited(&env), expected, "{last}");
    assert_eq!(
        env.query_i64(
            "SELECT count(*) FROM interaction_history
              WHERE julianday(created_at) < julianday('now', '-30 days')"
        ),
        0,
        "everything expired is purged in the end"
    );
    eprintln!(
        "power cuts: {cuts} during dsar-purge ({mid_run} while it ran, seed {seed}), audit equals rows gone"
    );
    assert_not_vacuous(mid_run, cuts);
}

#[test]
fn siem_shipping_cut_anywhere_skips_no_row() {
    if !power_cuts_available() {
        return;
    }
    let cuts = setting("POWERCUT_CUTS", 12);
    let seed = setting("POWERCUT_SEED", 29);
    let mut machine = Machine::new(&["store"]);
    // Elastic: documents are created by `_id`, so a batch sent again after a cut is harmless.
    let intake = Intake::start(Kind::Elastic, &[]);
    let env = intake.configure(store_on(&machine).with("RUST_LOG", "warn"));
    env.run_json(&["demo", "--tenants", "3", "--rows", "300"], 0);
    machine.restart();
    let mid_run = cut_cycles(&mut machine, &env, &["siem-ship"], &["audit"], cuts, seed);
    let last = env.run_json(&["run", "siem-ship"], 0);
    assert_eq!(last["backlog"], 0, "{last}");
    let received: BTreeSet<String> = intake.received().into_iter().collect();
    assert_eq!(
        received.len(),
        intake.received().len(),
        "a document created twice"
    );
    let skipped: Vec<String> = env
        .strings("SELECT id FROM audit_log ORDER BY id")
        .into_iter()
        .filter(|id| !received.contains(id))
        .collect();
    assert!(skipped.is_empty(), "rows never shipped: {skipped:?}");
    assert!(intake.violations().is_empty(), "{:?}", intake.violations());
    eprintln!(
        "power cuts: {cuts} during siem-ship ({mid_run} while it ran, seed {seed}), {} rows, none skipped",
        received.len()
    );
    assert_not_vacuous(mid_run, cuts);
}

#[test]
fn the_scheduler_cut_anywhere_never_runs_a_fire_time_twice() {
    if !power_cuts_available() {
        return;
    }
    let cuts = setting("POWERCUT_CUTS", 12);
    let seed = setting("POWERCUT_SEED", 29);
    let mut machine = Machine::new(&["store"]);
    let env = store_on(&machine)
        .with("EDGECRON_SCHEDULE_APPROVALS_EXPIRE", "* * * * * *")
        .with("EDGECRON_CATCHUP_APPROVALS_EXPIRE", "all");
    assert!(env.run(&["migrate"]).status.success());
    machine.restart();
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..cuts {
        let mut server = env.serve();
        std::thread::sleep(Duration::from_millis(rng.u64(0..=2500)));
        machine.cut([&mut server.child]);
    }
    let ran = |outcome: &str| {
        env.query_i64(&format!(
            "SELECT count(*) FROM schedule_occurrences WHERE job = 'approvals-expire' AND outcome = '{outcome}'"
        ))
    };
    assert!(ran("ran") > 0, "the scheduler ran between the cuts");
    let twice = env.strings(
        "SELECT scheduled_for || ' ' || count(*) FROM job_runs
          WHERE job = 'approvals-expire' AND scheduled_for IS NOT NULL
          GROUP BY scheduled_for HAVING count(*) > 1",
    );
    assert!(twice.is_empty(), "fire times run twice: {twice:?}");
    eprintln!(
        "power cuts: {cuts} of serve (seed {seed}), {} fire times ran, none twice",
        ran("ran")
    );
}

/// The harness itself: after a cut, a disk holds exactly what was made durable.
#[test]
fn the_test_disk_keeps_only_what_was_made_durable() {
    if !power_cuts_available() {
        return;
    }
    use std::io::Write;
    let mut machine = Machine::new(&["disk"]);
    let disk = machine.disk("disk");
    let names = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let sync_dir = |dir: &std::path::Path| std::fs::File::open(dir).unwrap().sync_all().unwrap();
    std::fs::write(disk.join("old"), b"before").unwrap();
    std::fs::write(disk.join("moved"), b"m").unwrap();
    machine.restart();

    // Synced, and its name (and its directory's) too: kept, as it was when synced.
    std::fs::create_dir(disk.join("dir")).unwrap();
    let mut kept = std::fs::File::create(disk.join("dir/kept")).unwrap();
    kept.write_all(b"durable").unwrap();
    kept.sync_all().unwrap();
    kept.write_all(b" and more").unwrap();
    sync_dir(&disk.join("dir"));
    sync_dir(&disk);
    // After the last syncs of the directories nothing else is durable.
    std::fs::write(disk.join("unsynced"), b"x").unwrap();
    std::fs::write(disk.join("old"), b"changed").unwrap();
    std::fs::rename(disk.join("moved"), disk.join("dir/moved")).unwrap();
    let mut unnamed = std::fs::File::create(disk.join("dir/synced-unnamed")).unwrap();
    unnamed.write_all(b"data").unwrap();
    unnamed.sync_all().unwrap();
    drop((kept, unnamed));
    machine.cut([]);

    assert_eq!(names(&disk), ["dir", "moved", "old"]);
    assert_eq!(names(&disk.join("dir")), ["kept"]);
    assert_eq!(std::fs::read(disk.join("dir/kept")).unwrap(), b"durable");
    assert_eq!(std::fs::read(disk.join("old")).unwrap(), b"before");
    assert_eq!(std::fs::read(disk.join("moved")).unwrap(), b"m");
}
