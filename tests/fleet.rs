//! A fleet in one bucket (SPEC section 9): stores cloned from one image export under their own
//! sites into one bucket and prefix, uploads never overwrite another box's objects, each run
//! pings a monitor, and spread offsets are fixed per site.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use crate::support::webhook::Receiver;
use crate::support::{
    Env, Moto, assert_exported_exactly_once, drain_exports, export_files, free_port, python_json,
    wait_until,
};

/// A box started from a copy of `image`'s store (its data dir's store files only, as an image
/// taken with the service stopped holds them).
fn clone_of(image: &Env, clone: Env) -> Env {
    for suffix in ["", "-wal"] {
        let from = image.data_dir().join(format!("edgecron.db{suffix}"));
        if from.exists() {
            std::fs::copy(&from, clone.data_dir().join(format!("edgecron.db{suffix}"))).unwrap();
        }
    }
    clone
}

/// The image every box of a test is cloned from: a demo store that has run once as `edge-a`.
fn image(moto: &Moto, rows: &str) -> Env {
    let image = moto
        .configure(Env::new())
        .with("EDGECRON_SITE_ID", "edge-a")
        .with("EXPORT_BATCH_SIZE", "400");
    image.run_json(&["demo", "--rows", rows], 0);
    image.run_json(&["run", "cleanup"], 0);
    image
}

fn adopt(env: &Env) -> String {
    let adopted = env.run(&["site", "adopt"]);
    assert!(adopted.status.success(), "{adopted:?}");
    String::from_utf8(adopted.stdout)
        .unwrap()
        .trim()
        .to_string()
}

/// Rows the box's application writes after the clone, each box its own.
fn add_own_rows(env: &Env, tag: &str) {
    let tenant = &env.strings("SELECT id FROM tenants WHERE active = 1 ORDER BY id LIMIT 1")[0];
    let db = env.db();
    for n in 0..30 {
        db.execute(
            "INSERT INTO interaction_history (id, tenant_id, created_at) VALUES (?1, ?2, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?3))",
            (format!("{tag}-{n}"), tenant, format!("-{n} hours")),
        )
        .unwrap();
    }
}

/// The site of a key `…/interaction_history/site={site}/…`.
fn site_of(key: &str) -> &str {
    key.split("/site=")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("{key} is under no site"))
}

#[test]
fn three_clones_of_one_store_share_one_bucket_each_under_its_own_site() {
    let moto = Moto::start();
    let first = image(&moto, "1500");
    let clones: Vec<Env> = ["edge-b", "edge-c"]
        .iter()
        .map(|site| {
            let env = moto
                .configure(Env::new())
                .with("EDGECRON_SITE_ID", site)
                .with("EXPORT_BATCH_SIZE", "400");
            clone_of(&first, env)
        })
        .collect();
    // A clone not yet adopted does no work, and says how to make it its own.
    let refused = clones[0].run(&["run", "export-interactions"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("edge-a") && said.contains("edgecron site adopt"),
        "{said}"
    );
    assert_eq!(adopt(&clones[0]), "edge-b");
    assert_eq!(adopt(&clones[1]), "edge-c");

    let boxes = [
        (&first, "edge-a"),
        (&clones[0], "edge-b"),
        (&clones[1], "edge-c"),
    ];
    for (env, site) in boxes {
        add_own_rows(env, site);
    }
    // All three export and sync, one after another and then again, into one bucket and prefix.
    for _ in 0..2 {
        for (env, _) in boxes {
            drain_exports(env);
            let synced = env.run_json(&["run", "s3-sync"], 0);
            assert_eq!(synced["conflicts"], 0, "{synced}");
        }
    }
    let keys: Vec<String> = moto
        .keys()
        .into_iter()
        .filter(|key| key.starts_with("backup/exports/"))
        .collect();
    let local_files: usize = boxes.iter().map(|(env, _)| export_files(env).len()).sum();
    assert_eq!(keys.len(), local_files, "objects = the sum of local files");
    for (env, site) in boxes {
        assert_exported_exactly_once(env);
        for path in env.strings("SELECT path FROM export_files") {
            assert!(path.contains(&format!("/site={site}/")), "{path}");
            assert!(
                keys.contains(&format!("backup/{path}")),
                "{path} not uploaded"
            );
        }
    }
    // Each site's rows once: (site, id) is unique across the bucket, and every row is there.
    let objects = moto.objects("backup/exports/");
    let mut seen = HashSet::new();
    let mut per_site: BTreeMap<String, i64> = BTreeMap::new();
    for (key, body) in &objects {
        let site = site_of(key);
        for line in body.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            let id = row["id"].as_str().unwrap().to_string();
            assert!(
                seen.insert((site.to_string(), id.clone())),
                "{site} {id} twice"
            );
            *per_site.entry(site.to_string()).or_default() += 1;
        }
    }
    for (env, site) in boxes {
        assert_eq!(
            per_site[site],
            env.query_i64("SELECT SUM(row_count) FROM export_files"),
            "{site}"
        );
    }
    assert_fleet_query_reads(&objects, &per_site);
}

/// The README's fleet query, run by DuckDB on a copy of the bucket: one table, `site` a column.
fn assert_fleet_query_reads(objects: &BTreeMap<String, String>, per_site: &BTreeMap<String, i64>) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let query = readme
        .split("<!-- fleet-query -->\n```sql\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README's fleet query");
    let copy = tempfile::tempdir().unwrap();
    for (key, body) in objects {
        let path = copy.path().join(key.strip_prefix("backup/").unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let query = query.replace(
        "s3://bucket/prefix/",
        &format!("{}/", copy.path().display()),
    );
    let script = r#"
import json, sys
import duckdb
rows = duckdb.connect().execute(sys.argv[1]).fetchall()
print(json.dumps([[site, tenant, count, distinct] for site, tenant, count, distinct in rows]))
"#;
    let rows: Vec<(String, String, i64, i64)> = python_json("duckdb", script, &[&query]);
    let mut read: BTreeMap<String, i64> = BTreeMap::new();
    for (site, _tenant, count, distinct) in rows {
        assert_eq!(count, distinct, "an id twice within {site}");
        *read.entry(site).or_default() += count;
    }
    assert_eq!(&read, per_site);
}

#[test]
fn a_second_box_with_the_same_site_never_overwrites_the_first_s_objects() {
    let moto = Moto::start();
    let receiver = Receiver::start();
    let first = image(&moto, "800");
    // Misconfigured: a clone running as the same site, whose application changed one row.
    let twin = clone_of(
        &first,
        moto.configure(Env::new())
            .with("EDGECRON_SITE_ID", "edge-a")
            .with("EXPORT_BATCH_SIZE", "400")
            .with("EXPORT_DELETE_LOCAL_AFTER_UPLOAD", "true")
            .with("ALERT_WEBHOOK_URL", &receiver.url()),
    );
    twin.db()
        .execute(
            "UPDATE interaction_history SET payload = '{\"changed\":true}'
              WHERE id = (SELECT id FROM interaction_history ORDER BY id LIMIT 1)",
            [],
        )
        .unwrap();
    drain_exports(&first);
    let synced = first.run_json(&["run", "s3-sync"], 0);
    let files = synced["uploaded"].as_u64().unwrap();
    assert!(files > 1, "{synced}");
    let before = moto.objects("backup/");

    drain_exports(&twin);
    let synced = twin.run_json(&["run", "s3-sync"], 3);
    assert_eq!(synced["conflicts"], 1, "{synced}");
    // Identical bytes under the same keys count as uploaded, as a retried upload does.
    assert_eq!(synced["uploaded"], files - 1, "{synced}");
    assert_eq!(synced["alreadyStored"], files - 1, "{synced}");
    assert_eq!(
        moto.objects("backup/"),
        before,
        "the first box's objects are untouched"
    );

    let queued =
        twin.strings("SELECT path FROM export_files WHERE upload_status IN ('local', 'pending')");
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert!(
        twin.data_dir().join(&queued[0]).exists(),
        "a conflicting file is never removed locally"
    );
    let key = format!("backup/{}", queued[0]);
    wait_until(std::time::Duration::from_secs(10), || {
        receiver
            .bodies()
            .iter()
            .any(|alert| alert["type"] == "export_key_conflict")
    });
    let alert = receiver
        .bodies()
        .into_iter()
        .find(|alert| alert["type"] == "export_key_conflict")
        .unwrap();
    assert_eq!(alert["site"], "edge-a", "{alert}");
    assert_eq!(alert["key"], key.as_str(), "{alert}");
    // The other box's object is the one the bucket keeps, whatever the twin's retries do.
    twin.db()
        .execute("UPDATE export_files SET next_attempt_at = NULL", [])
        .unwrap();
    let again = twin.run_json(&["run", "s3-sync"], 3);
    assert_eq!(again["conflicts"], 1, "{again}");
    assert_eq!(moto.objects("backup/"), before);
}

/// Each request's path (`/ping/KEY/{job}…`) and body, once `count` pings arrived.
fn pings(receiver: &Receiver, count: usize) -> Vec<(String, Value)> {
    wait_until(std::time::Duration::from_secs(10), || {
        receiver.requests().len() >= count
    });
    receiver.requests()
}

#[test]
fn each_run_pings_its_start_and_end_with_one_rid_and_a_dead_monitor_costs_nothing() {
    let receiver = Receiver::start();
    let base = format!("http://127.0.0.1:{}/ping/KEY?create=1", receiver.port);
    let unreachable_storage = format!("http://127.0.0.1:{}", free_port());
    let env = Env::new()
        .with("EDGECRON_PING_URL", &base)
        .with("S3_BUCKET", "b")
        .with("S3_ENDPOINT", &unreachable_storage)
        .with("S3_ACCESS_KEY_ID", "k")
        .with("S3_SECRET_ACCESS_KEY", "s")
        .with("S3_PATH_STYLE", "true");
    let cleaned = env.run_json(&["run", "cleanup"], 0);
    env.run_json(&["demo", "--rows", "300"], 0);
    drain_exports(&env);
    // The storage is down: s3-sync ends partial, a failure for the monitor.
    let failed = env.run_json(&["run", "s3-sync"], 3);
    let runs = env.query_i64("SELECT COUNT(*) FROM job_runs") as usize;
    let received = pings(&receiver, runs * 2);
    assert_eq!(received.len(), runs * 2, "{received:?}");
    let rid = |path: &str| path.split("rid=").nth(1).unwrap().to_string();
    let (start, end) = (&received[0], &received[1]);
    assert!(
        start.0.starts_with("/ping/KEY/cleanup/start?create=1&rid="),
        "{start:?}"
    );
    assert!(
        end.0.starts_with("/ping/KEY/cleanup?create=1&rid="),
        "{end:?}"
    );
    assert_eq!(rid(&start.0), rid(&end.0));
    assert_eq!(rid(&start.0).len(), 36, "a UUID");
    assert_eq!(end.1, cleaned, "the run's result is the body");
    let (start, end) = (&received[received.len() - 2], &received[received.len() - 1]);
    assert!(start.0.starts_with("/ping/KEY/s3-sync/start?"), "{start:?}");
    assert!(end.0.starts_with("/ping/KEY/s3-sync/fail?"), "{end:?}");
    assert_eq!(rid(&start.0), rid(&end.0));
    assert_eq!(end.1, failed);
    let rids: HashSet<String> = received.iter().map(|(path, _)| rid(path)).collect();
    assert_eq!(rids.len(), runs, "one rid per run");

    // A monitor that refuses connections: the run is as it would be, its pings wait queued.
    let dead = Env::new().with(
        "EDGECRON_PING_URL",
        &format!("http://127.0.0.1:{}/ping/KEY", free_port()),
    );
    let result = dead.run_json(&["run", "cleanup"], 0);
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(
        dead.query_i64(
            "SELECT COUNT(*) FROM alert_outbox WHERE url IS NOT NULL AND delivered_at IS NULL AND abandoned_at IS NULL"
        ),
        2
    );
}

#[test]
fn spread_offsets_are_fixed_per_site_and_differ_between_sites() {
    let offsets = |site: &str| -> (u64, u64) {
        let env = Env::new()
            .with("EDGECRON_SITE_ID", site)
            .with("EDGECRON_SPREAD_S3_SYNC", "3600")
            .with("EDGECRON_SCHEDULE_S3_SYNC", "0 * * * *")
            .with("EDGECRON_ENABLED_S3_SYNC", "true");
        env.run_json(&["run", "cleanup"], 0);
        let job = |jobs: &Value| {
            jobs.as_array()
                .unwrap()
                .iter()
                .find(|job| job["name"] == "s3-sync")
                .cloned()
                .unwrap()
        };
        let listed = job(&env.run_json(&["jobs", "--json"], 0));
        let again = job(&env.run_json(&["jobs", "--json"], 0));
        let checked = job(&env.run_json(&["check", "--json"], 0));
        assert_eq!(listed["spreadSeconds"], 3600);
        assert_eq!(listed["spreadOffsetMs"], again["spreadOffsetMs"]);
        assert_eq!(listed["spreadOffsetMs"], checked["spreadOffsetMs"]);
        let offset = listed["spreadOffsetMs"].as_u64().unwrap();
        assert!(offset < 3_600_000);
        // The next run is the next hour plus this site's offset (shown to the second).
        let next =
            chrono::DateTime::parse_from_rfc3339(listed["nextRun"].as_str().unwrap()).unwrap();
        let millis_past_hour = (next.timestamp_millis()).rem_euclid(3_600_000) as u64;
        (offset, millis_past_hour)
    };
    let (first, first_next) = offsets("edge-1");
    assert_eq!(first_next / 1000, first / 1000);
    assert_eq!(offsets("edge-1").0, first, "the same across restarts");
    let others: HashSet<u64> = ["edge-2", "edge-3", "edge-4"]
        .iter()
        .map(|site| offsets(site).0)
        .collect();
    assert!(!others.contains(&first), "{first} {others:?}");
    assert_eq!(others.len(), 3);
}
