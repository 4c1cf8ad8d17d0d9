//! The test's own data dir and environment, and the real `edgecron` binary run from it:
//! `Env` builds the environment, starts or runs the binary with it and reads its JSON output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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

    /// The data dir: the test's own, unless `EDGECRON_DATA_DIR` was set elsewhere.
    pub fn data_dir(&self) -> &Path {
        self.var("EDGECRON_DATA_DIR")
            .map_or(self.dir.path(), Path::new)
    }

    /// The store: in the data dir, unless `EDGECRON_DB` names another path.
    pub fn db_path(&self) -> PathBuf {
        self.var("EDGECRON_DB")
            .map_or_else(|| self.data_dir().join("edgecron.db"), PathBuf::from)
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.as_str())
    }

    /// `edgecron ARGS` with this environment and nothing inherited that could change it.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_under(&[], args)
    }

    /// `WRAPPER... edgecron ARGS` (`prlimit --nofile=256:256 --`, say), with this environment.
    pub fn command_under(&self, wrapper: &[&str], args: &[&str]) -> Command {
        // A benchmark may run the tests against another build (`bench/powercut`'s baseline).
        let binary = std::env::var("EDGECRON_TEST_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_edgecron").to_string());
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(binary);
                command
            }
            None => Command::new(binary),
        };
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
}

/// Sends `signal` (a name such as `TERM`) to the process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Starts the command it is given, waits for it, and writes its peak resident memory (KiB)
/// on stderr's last line: an intermediate process, because a child spawned straight from the
/// test binary (by vfork) counts the test binary's own memory in its `ru_maxrss`.
const PEAK_RSS_WRAPPER: &str = "import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(f'peak_rss_kib={usage.ru_maxrss}', file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))";

impl Env {
    /// Runs `edgecron ARGS` with its output dropped; answers its exit code and peak resident
    /// memory (KiB).
    pub fn run_with_peak_rss(&self, args: &[&str]) -> (i32, i64) {
        let output = self
            .command_under(&["python3", "-c", PEAK_RSS_WRAPPER], args)
            .stdout(std::process::Stdio::null())
            .output()
            .expect("python3");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let peak = stderr
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("peak_rss_kib="))
            .and_then(|kib| kib.trim().parse().ok())
            .unwrap_or_else(|| panic!("no peak RSS reported: {stderr}"));
        (output.status.code().unwrap_or(-1), peak)
    }
}
