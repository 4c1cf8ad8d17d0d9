//! `edgecron restore BACKUP` (SPEC sections 1 and 10): a backup put back after more rows were
//! exported and uploaded since; the files written since are taken into the restored manifest,
//! so every row is in exactly one file, locally and in the bucket, with no orphan and no `-2`.

use std::collections::{BTreeSet, HashMap};

use crate::support::{BUCKET, Env, Moto, drain_exports, export_files, exported_rows};

/// The application inserts `count` rows named `{prefix}-{n}` into the active tenants.
fn insert_rows(env: &Env, prefix: &str, count: usize) {
    let tenants = env.strings("SELECT id FROM tenants WHERE active = 1 ORDER BY id");
    env.insert_interactions(prefix, count, &tenants, |n| format!("-{} hours", n % 50));
}

#[test]
fn a_restore_takes_the_files_written_since_and_every_row_stays_in_exactly_one_file() {
    restore_drill(LocalCopies::Kept);
}

#[test]
fn a_restore_takes_the_objects_whose_local_copies_were_removed_after_upload() {
    restore_drill(LocalCopies::RemovedAfterUpload);
}

#[derive(Clone, Copy, PartialEq)]
enum LocalCopies {
    Kept,
    RemovedAfterUpload,
}

/// Every row id in the bucket's export objects (NDJSON), with how often it is there.
fn bucket_ids(moto: &Moto) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for content in moto.objects("backup/exports/").values() {
        for line in content.lines() {
            let row: serde_json::Value = serde_json::from_str(line).expect("an NDJSON line");
            *ids.entry(row["id"].as_str().expect("an id").to_string())
                .or_default() += 1;
        }
    }
    ids
}

fn restore_drill(local: LocalCopies) {
    let moto = Moto::start();
    let mut env = moto.configure(Env::new().with("EXPORT_BATCH_SIZE", "100"));
    if local == LocalCopies::RemovedAfterUpload {
        env = env.with("EXPORT_DELETE_LOCAL_AFTER_UPLOAD", "true");
    }
    env.run_json(&["demo", "--tenants", "3", "--rows", "400"], 0);
    drain_exports(&env);
    env.run_json(&["run", "s3-sync"], 0);
    // Rows still waiting in the capture queue when the backup is taken...
    insert_rows(&env, "queued", 120);
    let backup = env.data_dir().join("backups/before.db");
    std::fs::create_dir_all(backup.parent().unwrap()).unwrap();
    let output = env.run(&["backup", &backup.to_string_lossy()]);
    assert!(output.status.success(), "{output:?}");
    // ...exported and uploaded after it, with rows the restore will lose from the store.
    insert_rows(&env, "after-backup", 150);
    drain_exports(&env);
    env.run_json(&["run", "s3-sync"], 0);
    let objects_before_restore = moto.keys().len();

    // Refused while serve runs, and for something that is no backup.
    let mut server = env.serve();
    let refused = env.run(&["restore", &backup.to_string_lossy()]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("serve is running"));
    server.signal("TERM");
    server.wait_exit(std::time::Duration::from_secs(20));
    let not_a_backup = env.data_dir().join("not-a-backup.db");
    std::fs::write(&not_a_backup, b"hello").unwrap();
    let refused = env.run(&["restore", &not_a_backup.to_string_lossy()]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");

    let restored = env.run_json(&["restore", &backup.to_string_lossy()], 0);
    let reconciled = &restored["reconciled"];
    let taken = match local {
        LocalCopies::Kept => &reconciled["filesTaken"],
        LocalCopies::RemovedAfterUpload => &reconciled["objectsTaken"],
    };
    assert!(taken.as_u64().unwrap() > 0, "{restored}");
    assert_eq!(reconciled["rowsTaken"], 270, "{restored}");
    assert_eq!(reconciled["queueEntriesTaken"], 120, "{restored}");
    // The replaced store is kept beside, with the rows the backup does not have.
    let kept = restored["replacedStoreKeptAt"].as_str().expect("kept");
    let kept_rows: i64 = rusqlite::Connection::open(kept)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM interaction_history WHERE id LIKE 'after-backup-%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(kept_rows, 150);
    assert_eq!(
        env.query_i64("SELECT count(*) FROM interaction_history WHERE id LIKE 'after-backup-%'"),
        0
    );

    // The application goes on; exports and uploads go on.
    insert_rows(&env, "after-restore", 90);
    drain_exports(&env);
    env.run_json(&["run", "s3-sync"], 0);

    let per_id = bucket_ids(&moto);
    let twice: Vec<_> = per_id.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "rows uploaded twice: {twice:?}");
    if local == LocalCopies::Kept {
        let mut on_disk: HashMap<String, usize> = HashMap::new();
        for row in exported_rows(&env) {
            *on_disk.entry(row.id).or_default() += 1;
        }
        assert_eq!(
            on_disk, per_id,
            "the rows on disk are the rows in the bucket"
        );
    }
    let in_store: BTreeSet<String> = env
        .strings("SELECT h.id FROM interaction_history h JOIN tenants t ON t.id = h.tenant_id WHERE t.active = 1")
        .into_iter()
        .collect();
    let in_files: BTreeSet<String> = per_id.keys().cloned().collect();
    let missing: Vec<_> = in_store.difference(&in_files).collect();
    assert!(missing.is_empty(), "rows in no file: {missing:?}");
    // The only rows in files but not in the store are those the restore took from it.
    let only_in_files: Vec<_> = in_files.difference(&in_store).collect();
    assert_eq!(only_in_files.len(), 150);
    assert!(
        only_in_files
            .iter()
            .all(|id| id.starts_with("after-backup-"))
    );

    // No orphan, no `-2` twin: the manifest lists exactly the objects in the bucket (and the
    // files on disk, when they are kept).
    let keys: BTreeSet<String> = moto
        .keys()
        .into_iter()
        .filter_map(|key| key.strip_prefix("backup/").map(str::to_string))
        .filter(|key| key.starts_with("exports/"))
        .collect();
    assert!(keys.len() > objects_before_restore);
    let listed: BTreeSet<String> = env
        .strings("SELECT path FROM export_files")
        .into_iter()
        .collect();
    assert_eq!(keys, listed, "the bucket {BUCKET} and the manifest");
    assert!(
        keys.iter().all(|key| !key.contains("-2.")),
        "a -2 twin: {keys:?}"
    );
    let files: BTreeSet<String> = export_files(&env)
        .into_iter()
        .map(|path| path.to_string_lossy().into_owned())
        .collect();
    match local {
        LocalCopies::Kept => assert_eq!(files, listed, "files on disk and the manifest"),
        LocalCopies::RemovedAfterUpload => assert!(files.is_empty(), "{files:?}"),
    }
}

/// A storage endpoint whose every listing page says more follow, and repeats itself.
fn endless_listing() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>b</Name>\
                    <Prefix></Prefix><KeyCount>1</KeyCount><MaxKeys>100</MaxKeys><IsTruncated>true</IsTruncated>\
                    <NextContinuationToken>again</NextContinuationToken><Contents><Key>exports/x/a.json</Key>\
                    <LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>\"e\"</ETag><Size>1</Size>\
                    <StorageClass>STANDARD</StorageClass></Contents></ListBucketResult>";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    format!("http://{address}")
}

#[test]
fn a_bucket_that_lists_the_same_page_forever_fails_the_restore_instead_of_holding_it() {
    let env = Env::new()
        .with("S3_BUCKET", "b")
        .with("S3_ENDPOINT", &endless_listing())
        .with("S3_REGION", "eu-test-1")
        .with("S3_ACCESS_KEY_ID", "test")
        .with("S3_SECRET_ACCESS_KEY", "test")
        .with("S3_PATH_STYLE", "true");
    env.run_json(&["demo", "--tenants", "2", "--rows", "50"], 0);
    // Its site recorded, as its first export records it.
    env.run_json(&["run", "export-interactions"], 0);
    let backup = env.data_dir().join("before.db");
    assert!(
        env.run(&["backup", &backup.to_string_lossy()])
            .status
            .success()
    );
    let restored = env.run(&["restore", &backup.to_string_lossy()]);
    assert_eq!(restored.status.code(), Some(1), "{restored:?}");
    let said = String::from_utf8_lossy(&restored.stderr);
    assert!(said.contains("without going past the last key"), "{said}");
}
