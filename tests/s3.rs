//! `s3-sync` against a real S3-compatible server (moto) on loopback.

use std::time::Duration;

use crate::support::{Env, Moto, drain_exports};

fn manifest_keys(env: &Env) -> Vec<String> {
    env.strings("SELECT 'backup/' || path FROM export_files ORDER BY 1")
}

fn uploaded_keys(env: &Env) -> Vec<String> {
    env.strings(
        "SELECT 'backup/' || path FROM export_files WHERE upload_status = 'uploaded' ORDER BY 1",
    )
}

/// Enough rows on one day for one file over the multipart threshold (8 MiB).
fn add_one_big_day(env: &Env) {
    env.db()
        .execute(
            "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 24000)
             INSERT INTO interaction_history (id, tenant_id, customer_id, channel, outcome, payload, created_at)
             SELECT printf('big-%06d', value), 'globex', 'c', 'email', 'opened',
                    json_object('text', printf('%.400c', 'x'), 'n', value),
                    '2025-01-01T00:00:00.000Z' FROM n",
            [],
        )
        .unwrap();
}

#[test]
fn uploading_again_finds_the_same_bytes_and_never_replaces_other_bytes() {
    let moto = Moto::start();
    let env = moto
        .configure(Env::new())
        .with("EXPORT_BATCH_SIZE", "30000");
    env.run_json(&["demo", "--rows", "300"], 0);
    add_one_big_day(&env);
    drain_exports(&env);
    let files = env.query_i64("SELECT COUNT(*) FROM export_files");
    env.run_json(&["run", "s3-sync"], 0);
    let stored = moto.objects("backup/");
    // As a run killed between its uploads and their record would leave it: all queued again.
    let queue_again = || {
        env.db()
            .execute(
                "UPDATE export_files SET upload_status = 'pending', uploaded_at = NULL, next_attempt_at = NULL",
                [],
            )
            .unwrap()
    };
    queue_again();
    let again = env.run_json(&["run", "s3-sync"], 0);
    assert_eq!(again["uploaded"].as_i64(), Some(files), "{again}");
    assert_eq!(again["alreadyStored"].as_i64(), Some(files), "{again}");
    // The big file (a multipart upload) with one byte changed, its size the same: the stored
    // object is read back, found different and kept.
    let big: String =
        env.strings("SELECT path FROM export_files ORDER BY bytes DESC LIMIT 1")[0].clone();
    let local = env.data_dir().join(&big);
    let mut bytes = std::fs::read(&local).unwrap();
    assert!(bytes.len() > 8 * 1024 * 1024);
    let middle = bytes.len() / 2;
    bytes[middle] = if bytes[middle] == b'x' { b'y' } else { b'x' };
    std::fs::write(&local, &bytes).unwrap();
    queue_again();
    let conflicted = env.run_json(&["run", "s3-sync"], 3);
    assert_eq!(conflicted["conflicts"], 1, "{conflicted}");
    assert_eq!(
        conflicted["alreadyStored"].as_i64(),
        Some(files - 1),
        "{conflicted}"
    );
    assert_eq!(moto.objects("backup/"), stored);
    assert_eq!(
        env.strings("SELECT path FROM export_files WHERE upload_status = 'pending'"),
        [big]
    );
}

#[test]
fn uploads_are_verified_and_the_bucket_matches_the_manifest() {
    let moto = Moto::start();
    let env = moto
        .configure(Env::new())
        .with("EXPORT_BATCH_SIZE", "30000")
        .with("EXPORT_DELETE_LOCAL_AFTER_UPLOAD", "true");
    env.run_json(&["demo", "--rows", "1500"], 0);
    add_one_big_day(&env);
    drain_exports(&env);
    let big: i64 = env.query_i64("SELECT MAX(bytes) FROM export_files");
    assert!(big > 8 * 1024 * 1024, "{big}");
    let queued = env.query_i64("SELECT COUNT(*) FROM export_files WHERE upload_status = 'pending'");
    assert_eq!(
        queued,
        env.query_i64("SELECT COUNT(*) FROM export_files"),
        "S3 configured: every file is queued"
    );

    let result = env.run_json(&["run", "s3-sync"], 0);
    assert_eq!(result["ok"], true);
    assert_eq!(result["uploaded"].as_i64(), Some(queued));
    assert_eq!(result["pending"], 0);
    assert_eq!(result["failed"], 0);
    assert_eq!(
        result["bytes"].as_i64(),
        Some(env.query_i64("SELECT SUM(bytes) FROM export_files"))
    );
    assert_eq!(moto.keys(), manifest_keys(&env));

    // The big file arrived whole, and local copies went only after verified uploads.
    let path: String = env
        .db()
        .query_row(
            "SELECT path FROM export_files ORDER BY bytes DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let object = moto.object(&format!("backup/{path}"));
    assert_eq!(object.status, 200);
    assert_eq!(object.body.lines().count(), 24000);
    assert!(!env.data_dir().join(&path).exists());
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_files WHERE local_deleted_at IS NULL"),
        0
    );

    // Nothing left: a second sync uploads nothing.
    let again = env.run_json(&["run", "s3-sync"], 0);
    assert_eq!(
        (again["uploaded"].as_i64(), again["pending"].as_i64()),
        (Some(0), Some(0))
    );
}

#[test]
fn with_storage_down_nothing_is_marked_uploaded_and_the_next_run_delivers_everything() {
    let port = crate::support::free_port();
    let env = Env::new()
        .with("S3_BUCKET", crate::support::BUCKET)
        .with("S3_ENDPOINT", &format!("http://127.0.0.1:{port}"))
        .with("S3_REGION", "eu-test-1")
        .with("S3_ACCESS_KEY_ID", "test")
        .with("S3_SECRET_ACCESS_KEY", "test")
        .with("S3_PATH_STYLE", "true")
        .with("S3_PREFIX", "backup/");
    env.run_json(&["demo", "--rows", "800"], 0);
    drain_exports(&env);
    let files = env.query_i64("SELECT COUNT(*) FROM export_files");

    let down = env.run_json(&["run", "s3-sync"], 3);
    assert_eq!(down["uploaded"], 0);
    assert_eq!(down["pending"].as_i64(), Some(files));
    assert_eq!(down["unreachable"], true);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_files WHERE upload_status = 'uploaded'"),
        0
    );
    // Regression: a file tried during an outage waited out its own backoff (up to an hour)
    // after storage was back. The outage is the storage's: every file stays due.
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_files WHERE next_attempt_at IS NOT NULL"),
        0
    );

    let moto = Moto::start_on(port);
    let back = env.run_json(&["run", "s3-sync"], 0);
    assert_eq!(back["uploaded"].as_i64(), Some(files));
    assert_eq!(back["pending"], 0);
    assert_eq!(moto.keys(), manifest_keys(&env));
}

#[test]
fn storage_stopped_mid_sync_leaves_only_verified_files_marked_uploaded() {
    let moto = Moto::start();
    let env = moto
        .configure(Env::new())
        .with("EXPORT_BATCH_SIZE", "40")
        .with("S3_REQUEST_TIMEOUT_SECS", "1");
    env.run_json(&["demo", "--rows", "4000"], 0);
    drain_exports(&env);
    let files = env.query_i64("SELECT COUNT(*) FROM export_files");
    assert!(files > 300, "{files}");

    let sync = env.spawn(&["run", "s3-sync"]);
    crate::support::wait_until(Duration::from_secs(20), || {
        env.query_i64("SELECT COUNT(*) FROM export_files WHERE upload_status = 'uploaded'") > 20
    });
    moto.signal("STOP");
    let output = sync.wait_with_output().unwrap();
    moto.signal("CONT");
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(result["pending"].as_i64().unwrap() > 0, "{result}");

    let in_bucket = moto.keys();
    let uploaded = uploaded_keys(&env);
    assert!(!uploaded.is_empty());
    for key in &uploaded {
        assert!(
            in_bucket.binary_search(key).is_ok(),
            "{key} is marked uploaded but not in the bucket"
        );
    }

    let rest = env.run_json(&["run", "s3-sync"], 0);
    assert_eq!(rest["pending"], 0);
    assert_eq!(moto.keys(), manifest_keys(&env));
}

#[test]
fn dsar_purge_deletes_blobs_in_storage_and_log_archives_go_there() {
    let moto = Moto::start();
    let env = moto.configure(Env::new());
    assert!(env.run(&["migrate"]).status.success());
    let put = |key: &str| {
        let reply = crate::support::http(
            moto.address,
            "PUT",
            &format!("/{}/{key}", crate::support::BUCKET),
            &[],
            Some(b"blob"),
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
    };
    put("elsewhere/old.bin");
    put("backup/blobs/acme/old.bin");
    std::fs::create_dir_all(env.data_dir().join("blobs/acme")).unwrap();
    std::fs::write(env.data_dir().join("blobs/acme/old.bin"), b"blob").unwrap();
    env.db()
        .execute_batch(&format!(
            "INSERT INTO tenants (id) VALUES ('acme');
             INSERT INTO retention_policies (tenant_id, data_class, retention_days, legal_hold) VALUES ('acme', 'all', 30, 0);
             INSERT INTO ai_attachments (id, tenant_id, blob_path, created_at) VALUES
                 ('uri', 'acme', 's3://{bucket}/elsewhere/old.bin', '2020-01-01T00:00:00.000Z'),
                 ('relative', 'acme', 'blobs/acme/old.bin', '2020-01-01T00:00:00.000Z');
             INSERT INTO export_logs (id, created_at) VALUES ('old-log', '2020-01-01T00:00:00.000Z');",
            bucket = crate::support::BUCKET
        ))
        .unwrap();

    let purge = env.run_json(&["run", "dsar-purge"], 0);
    assert_eq!(purge["perTenant"][0]["aiAttachments"], 2, "{purge}");
    assert_eq!(purge["perTenant"][0]["blobsDeleted"], 2, "{purge}");
    assert!(!env.data_dir().join("blobs/acme/old.bin").exists());

    let archive = env.run_json(&["run", "export-log-cleanup"], 0);
    assert_eq!(
        (archive["deleted"].as_i64(), archive["archived"].as_i64()),
        (Some(1), Some(1))
    );
    let archived = format!("backup/{}", archive["archives"][0].as_str().unwrap());
    assert_eq!(
        moto.keys(),
        [archived],
        "only the archive is left in the bucket"
    );
    assert!(
        !env.data_dir()
            .join(archive["archives"][0].as_str().unwrap())
            .exists(),
        "archived to S3, not kept locally"
    );
}

#[test]
fn gzip_exports_are_uploaded_as_they_are_and_read_back_whole() {
    let moto = Moto::start();
    let env = moto
        .configure(Env::new())
        .with("EXPORT_COMPRESSION", "gzip")
        .with("EXPORT_BATCH_SIZE", "5000");
    env.run_json(&["demo", "--rows", "600"], 0);
    drain_exports(&env);
    let result = env.run_json(&["run", "s3-sync"], 0);
    assert_eq!(result["pending"], 0, "{result}");
    let keys = moto.keys();
    assert_eq!(keys, manifest_keys(&env));
    assert!(keys.iter().all(|key| key.ends_with(".json.gz")), "{keys:?}");
    let path: String = env
        .db()
        .query_row(
            "SELECT path FROM export_files ORDER BY row_count DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let rows = env.query_i64(&format!(
        "SELECT row_count FROM export_files WHERE path = '{path}'"
    ));
    let local = std::fs::read(env.data_dir().join(&path)).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&local[..]), &mut text)
        .unwrap();
    assert_eq!(text.lines().count() as i64, rows);
}

#[test]
fn a_missing_bucket_or_refused_credentials_are_the_storage_s_backoff_not_each_file_s() {
    // Regression: a 403 or a missing bucket gave every file its own backoff; after a first
    // fix, 16 of 854 files still waited when the storage was right again.
    let moto = Moto::start();
    let env = moto
        .configure(Env::new())
        .with("S3_BUCKET", "not-yet-created")
        .with("EXPORT_BATCH_SIZE", "500");
    env.run_json(&["demo", "--rows", "1500"], 0);
    drain_exports(&env);
    let files = env.query_i64("SELECT COUNT(*) FROM export_files");
    let down = env.run_json(&["run", "s3-sync"], 3);
    assert_eq!(down["unreachable"], true, "{down}");
    assert_eq!(down["failed"], 1, "{down}");
    assert_eq!(
        env.query_i64(
            "SELECT COUNT(*) FROM export_files WHERE next_attempt_at IS NOT NULL OR upload_attempts > 0"
        ),
        0,
        "no file has a backoff of its own"
    );
    let created = crate::support::http(moto.address, "PUT", "/not-yet-created", &[], None);
    assert_eq!(created.status, 200, "{}", created.body);
    let back = env.run_json(&["run", "s3-sync"], 0);
    assert_eq!(back["uploaded"].as_i64(), Some(files), "{back}");
    assert_eq!(back["pending"], 0, "{back}");
}

#[test]
fn a_storage_endpoint_streaming_an_endless_error_body_costs_no_memory_and_the_sync_ends() {
    // Regression: rust-s3 read an error answer's body whole: an endpoint answering 500 with an
    // endless body took s3-sync to 1,602 MiB in 8 s.
    let endless = crate::support::Endless::start(500);
    let env = Env::new();
    env.run_json(&["demo", "--rows", "400"], 0);
    drain_exports(&env);
    let files = env.query_i64("SELECT COUNT(*) FROM export_files");
    let env = env
        .with("S3_BUCKET", crate::support::BUCKET)
        .with("S3_ENDPOINT", &format!("http://{}", endless.address))
        .with("S3_REGION", "eu-test-1")
        .with("S3_ACCESS_KEY_ID", "test")
        .with("S3_SECRET_ACCESS_KEY", "test")
        .with("S3_PATH_STYLE", "true")
        .with("S3_REQUEST_TIMEOUT_SECS", "30");
    let started = std::time::Instant::now();
    let (code, peak_kib) = env.run_with_peak_rss(&["run", "s3-sync"]);
    assert_eq!(code, 3, "the sync is partial");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(peak_kib < 128 * 1024, "peak RSS {peak_kib} KiB");
    assert!(endless.requests() >= 1);
    assert_eq!(
        env.query_i64("SELECT COUNT(*) FROM export_files WHERE upload_status = 'uploaded'"),
        0,
        "of {files} files"
    );
}

#[test]
fn each_format_is_uploaded_with_its_own_content_type() {
    for (settings, extension, content_type) in [
        (
            ("EXPORT_FORMAT", "parquet"),
            ".parquet",
            "application/vnd.apache.parquet",
        ),
        (
            ("EXPORT_COMPRESSION", "zstd"),
            ".json.zst",
            "application/zstd",
        ),
    ] {
        let moto = Moto::start();
        let env = moto
            .configure(Env::new())
            .with(settings.0, settings.1)
            .with("EXPORT_BATCH_SIZE", "5000");
        env.run_json(&["demo", "--rows", "300"], 0);
        drain_exports(&env);
        let result = env.run_json(&["run", "s3-sync"], 0);
        assert_eq!(result["pending"], 0, "{result}");
        let types = moto.content_types("backup/exports/");
        assert_eq!(
            types.len() as i64,
            env.query_i64("SELECT COUNT(*) FROM export_files")
        );
        for (key, served_as) in types {
            assert!(key.ends_with(extension), "{key}");
            assert_eq!(served_as, content_type, "{key}");
        }
    }
}

#[test]
fn a_local_file_gone_is_reported_at_once_and_the_other_files_go_up() {
    let moto = Moto::start();
    let env = moto
        .configure(Env::new())
        .with("RUST_LOG", "edgecron=debug");
    env.run_json(&["demo", "--rows", "300"], 0);
    drain_exports(&env);
    let gone = manifest_keys(&env)[0]
        .trim_start_matches("backup/")
        .to_string();
    std::fs::remove_file(env.data_dir().join(&gone)).unwrap();
    let output = env.run(&["run", "s3-sync"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["failed"], 1, "{result}");
    assert_eq!(result["errors"][0]["path"], gone.as_str(), "{result}");
    assert_eq!(uploaded_keys(&env).len(), manifest_keys(&env).len() - 1);
    // No attempt again within the run: a missing file does not come back in a second.
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!log.contains("attempt 1 failed"), "{log}");
}
