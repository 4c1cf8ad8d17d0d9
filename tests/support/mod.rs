//! Shared helpers for the integration tests: a temp data dir with its own environment, the
//! real `edgecron` binary, a real server on a loopback port, and a small raw HTTP client
//! (raw, so tests can also send what no well-behaved client would).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

pub mod intake;
pub mod raw;

pub const SECRET: &str = "test-secret-0123456789";

/// A data dir and the environment every `edgecron` started from it gets.
pub struct Env {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let vars = vec![
            (
                "EDGECRON_DATA_DIR".to_string(),
                dir.path().display().to_string(),
            ),
            ("CRON_SECRET".to_string(), SECRET.to_string()),
            ("RUST_LOG".to_string(), "info".to_string()),
        ];
        Env { dir, vars }
    }

    pub fn with(mut self, name: &str, value: &str) -> Env {
        self.vars.retain(|(existing, _)| existing != name);
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    pub fn without(mut self, name: &str) -> Env {
        self.vars.retain(|(existing, _)| existing != name);
        self
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("edgecron.db")
    }

    /// `edgecron ARGS` with this environment and nothing inherited that could change it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgecron"));
        command.args(args).env_clear();
        for name in ["PATH", "HOME", "TMPDIR"] {
            if let Ok(value) = std::env::var(name) {
                command.env(name, value);
            }
        }
        command.envs(self.vars.iter().map(|(name, value)| (name, value)));
        command
    }

    /// Starts `edgecron ARGS` with its output captured, without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgecron")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run edgecron")
    }

    /// Runs and parses stdout as JSON, asserting the exit code.
    pub fn run_json(&self, args: &[&str], expected_code: i32) -> serde_json::Value {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(expected_code),
            "edgecron {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout of {args:?} is not JSON ({error}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    pub fn demo(&self) {
        self.run_json(&["demo"], 0);
    }

    pub fn db(&self) -> Connection {
        let conn = Connection::open(self.db_path()).expect("open store");
        conn.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        conn
    }

    /// The first column of every row `sql` answers, as text.
    pub fn strings(&self, sql: &str) -> Vec<String> {
        let db = self.db();
        let mut statement = db.prepare(sql).expect(sql);
        statement
            .query_map([], |row| row.get(0))
            .expect(sql)
            .collect::<Result<_, _>>()
            .expect(sql)
    }

    pub fn query_i64(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |row| row.get(0)).expect(sql)
    }

    /// Starts `edgecron serve` on a free loopback port and waits until it answers.
    pub fn serve(&self) -> Server {
        let mut child = self
            .command(&["serve"])
            .env("EDGECRON_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start edgecron serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let address = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let _ = address_tx.send(address);
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let address = address_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "serve did not start listening; log:\n{}",
                    log.lock().unwrap().join("\n")
                )
            });
        let server = Server {
            child,
            address: address.parse().expect("listen address"),
            log,
        };
        wait_until(Duration::from_secs(10), || {
            server.get("/healthz").status == 200
        });
        server
    }
}

pub struct Server {
    pub child: Child,
    pub address: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {}", self.body))
    }
}

impl Server {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], None)
    }

    pub fn trigger(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let auth = format!("Bearer {SECRET}");
        self.request(
            method,
            path,
            &[("Authorization", &auth)],
            body.map(str::as_bytes),
        )
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        http(self.address, method, path, headers, body)
    }

    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "edgecron did not exit within {limit:?}; log:\n{}",
            self.log()
        );
    }

    /// User plus system CPU time the server has used, in clock ticks (`/proc/PID/stat`).
    pub fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("proc stat");
        let fields: Vec<&str> = stat[stat.rfind(')').expect("stat") + 1..]
            .split_whitespace()
            .collect();
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }

    /// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
            .expect("memory field")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn http(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\n\r\n",
        body.map_or(0, <[u8]>::len)
    ));
    stream.write_all(head.as_bytes()).expect("write head");
    if let Some(body) = body {
        // The server may answer (413) before reading a large body and close.
        let _ = stream.write_all(body);
    }
    read_reply(&mut stream)
}

pub fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in reply: {text:?}"));
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Polls `condition` until it holds, failing the test after `limit`.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

impl Env {
    /// Adds `count` expired suppressions: enough work to keep `cleanup` busy for a while
    /// (about two seconds per million rows here), a real long run for overlap and shutdown
    /// tests.
    pub fn add_expired_suppressions(&self, count: i64) {
        self.db()
            .execute(
                "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < ?1)
                 INSERT INTO suppressions (id, expires_at) SELECT 'bulk-' || value, '2020-01-01T00:00:00.000Z' FROM n",
                [count],
            )
            .expect("add suppressions");
    }

    /// Waits until `job` has a run in the `running` state.
    pub fn wait_for_running(&self, job: &str) {
        let sql =
            format!("SELECT COUNT(*) FROM job_runs WHERE job = '{job}' AND status = 'running'");
        wait_until(Duration::from_secs(20), || self.query_i64(&sql) == 1);
    }
}

pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// One row as found in an export file on disk.
#[derive(Debug, Clone)]
pub struct ExportedRow {
    pub file: PathBuf,
    pub id: String,
    pub tenant_id: String,
    pub created_at: String,
}

/// Every file under `exports/` (relative paths), temporary ones included.
pub fn export_files(env: &Env) -> Vec<PathBuf> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.map_while(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    let mut files = Vec::new();
    walk(&env.data_dir().join("exports"), env.data_dir(), &mut files);
    files.sort();
    files
}

/// Reads every row of every export file, checking each line is one JSON object.
pub fn exported_rows(env: &Env) -> Vec<ExportedRow> {
    let mut rows = Vec::new();
    for file in export_files(env) {
        let bytes = std::fs::read(env.data_dir().join(&file)).expect("read export file");
        let text = if file.to_string_lossy().ends_with(".gz") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
                .unwrap_or_else(|error| panic!("{file:?} is not gzip: {error}"));
            text
        } else {
            String::from_utf8(bytes).expect("export file is UTF-8")
        };
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{file:?} does not end with a newline"
        );
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("{file:?}: {error}: {line}"));
            rows.push(ExportedRow {
                file: file.clone(),
                id: value["id"].as_str().expect("id").to_string(),
                tenant_id: value["tenant_id"].as_str().expect("tenant_id").to_string(),
                created_at: value["created_at"]
                    .as_str()
                    .expect("created_at")
                    .to_string(),
            });
        }
    }
    rows
}

/// Runs the export until no tenant has rows left (and its first walk over the table is
/// done); returns how many runs it took.
pub fn drain_exports(env: &Env) -> usize {
    for runs in 1..=10_000 {
        let output = env.run(&["run", "export-interactions"]);
        let result: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("export result");
        if result["totalExported"] == 0 && result["walking"] == false {
            return runs;
        }
    }
    panic!("the export never drained");
}

/// The store's canonical UTC text of a time in one of the forms an application may write
/// (ISO-8601 with `Z` or an offset, or SQLite's `YYYY-MM-DD HH:MM:SS`); `None` for text that
/// names no instant.
pub fn canonical_time(text: &str) -> Option<String> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                .map(|naive| naive.and_utc())
        })
        .ok()?;
    Some(time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Asserts every row of the active tenants (with a text id and a `created_at` naming an
/// instant) is in exactly one export file, in the partition of its own UTC day, with its
/// canonical `created_at`, and that no other file lies under `exports/`.
pub fn assert_exported_exactly_once(env: &Env) {
    let conn = env.db();
    let mut statement = conn
        .prepare(
            "SELECT h.id, h.tenant_id, h.created_at FROM interaction_history h
             JOIN tenants t ON t.id = h.tenant_id WHERE t.active = 1 AND typeof(h.id) = 'text'
             ORDER BY h.id",
        )
        .unwrap();
    let expected: Vec<(String, String, String)> = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<Vec<(String, String, String)>, _>>()
        .unwrap()
        .into_iter()
        .filter_map(|(id, tenant, created_at)| Some((id, tenant, canonical_time(&created_at)?)))
        .collect();
    let mut found = exported_rows(env);
    found.sort_by(|a, b| a.id.cmp(&b.id));
    let duplicates: Vec<&String> = found
        .windows(2)
        .filter(|pair| pair[0].id == pair[1].id)
        .map(|pair| &pair[0].id)
        .collect();
    assert!(
        duplicates.is_empty(),
        "rows exported twice: {:?}",
        &duplicates[..duplicates.len().min(10)]
    );
    let found_ids: Vec<&str> = found.iter().map(|row| row.id.as_str()).collect();
    let expected_ids: Vec<&str> = expected.iter().map(|row| row.0.as_str()).collect();
    assert_eq!(
        found_ids.len(),
        expected_ids.len(),
        "exported {} rows, the store has {}",
        found_ids.len(),
        expected_ids.len()
    );
    assert_eq!(found_ids, expected_ids);
    for (row, (_, _, canonical)) in found.iter().zip(&expected) {
        assert_eq!(&row.created_at, canonical, "{}", row.id);
        let day = &row.created_at[..10];
        let partition = format!(
            "exports/{}/interaction_history/year={}/month={}/day={}/",
            row.tenant_id,
            &day[..4],
            &day[5..7],
            &day[8..10]
        );
        assert!(
            row.file.to_string_lossy().starts_with(&partition),
            "{} is in {:?}",
            row.id,
            row.file
        );
    }
    let manifest: i64 = env.query_i64("SELECT COUNT(*) FROM export_files");
    let on_disk = export_files(env);
    assert_eq!(
        on_disk.len() as i64,
        manifest,
        "files on disk and in the manifest differ: {on_disk:?}"
    );
    assert!(
        on_disk.iter().all(|file| {
            let name = file.to_string_lossy();
            name.ends_with(".json") || name.ends_with(".json.gz")
        }),
        "stray files: {on_disk:?}"
    );
}

/// A real S3-compatible server (moto) on a loopback port, stopped when dropped.
pub struct Moto {
    child: Child,
    pub address: SocketAddr,
}

pub const BUCKET: &str = "edgecron-test";

impl Moto {
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        Moto::start_on(port)
    }

    pub fn start_on(port: u16) -> Moto {
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server (pip install 'moto[server]')");
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let moto = Moto { child, address };
        wait_until(Duration::from_secs(30), || {
            TcpStream::connect(address).is_ok()
        });
        let created = http(address, "PUT", &format!("/{BUCKET}"), &[], None);
        assert_eq!(created.status, 200, "creating the bucket: {}", created.body);
        moto
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Points `env` at this server.
    pub fn configure(&self, env: Env) -> Env {
        env.with("S3_BUCKET", BUCKET)
            .with("S3_ENDPOINT", &format!("http://{}", self.address))
            .with("S3_REGION", "eu-test-1")
            .with("S3_ACCESS_KEY_ID", "test")
            .with("S3_SECRET_ACCESS_KEY", "test")
            .with("S3_PATH_STYLE", "true")
            .with("S3_PREFIX", "backup/")
    }

    /// Every key in the bucket.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let path = match &token {
                Some(token) => format!(
                    "/{BUCKET}?list-type=2&continuation-token={}",
                    form_encode(token)
                ),
                None => format!("/{BUCKET}?list-type=2"),
            };
            let reply = http(self.address, "GET", &path, &[], None);
            assert_eq!(reply.status, 200, "{}", reply.body);
            for piece in reply.body.split("<Key>").skip(1) {
                keys.push(
                    piece
                        .split("</Key>")
                        .next()
                        .unwrap_or_default()
                        .replace("&amp;", "&"),
                );
            }
            token = reply
                .body
                .split("<NextContinuationToken>")
                .nth(1)
                .and_then(|rest| rest.split('<').next())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys
    }

    pub fn object(&self, key: &str) -> Reply {
        http(self.address, "GET", &format!("/{BUCKET}/{key}"), &[], None)
    }

    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
