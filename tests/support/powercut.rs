//! A machine whose disks forget what was not made durable (`lazyfs.py`, one FUSE file system
//! per disk), and power cuts at chosen instants: every disk stops at once, every process
//! running on them dies, each disk is put back to what was durable and mounted again.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{available, python_has, wait_until};

const LAZYFS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/lazyfs.py");

/// Whether this machine can run power-cut tests: FUSE and `mfusepy`, unless CI requires them.
pub fn power_cuts_available() -> bool {
    if !available(
        "EDGECRON_REQUIRE_FUSE",
        &["/dev/fuse", "/usr/bin/fusermount3"],
        "power-cut tests",
    ) {
        return false;
    }
    let has = python_has("mfusepy");
    assert!(
        has || std::env::var_os("EDGECRON_REQUIRE_FUSE").is_none(),
        "EDGECRON_REQUIRE_FUSE is set but python3 cannot import mfusepy"
    );
    has
}

/// The disks of one machine, each a directory where its file system is mounted.
pub struct Machine {
    root: tempfile::TempDir,
    names: Vec<String>,
    file_systems: Vec<Child>,
}

impl Machine {
    pub fn new(disks: &[&str]) -> Machine {
        let root = tempfile::tempdir().expect("machine dir");
        let mut machine = Machine {
            root,
            names: disks.iter().map(|name| name.to_string()).collect(),
            file_systems: Vec::new(),
        };
        for name in &machine.names {
            std::fs::create_dir_all(machine.backing(name)).expect("backing dir");
            std::fs::create_dir_all(machine.disk(name)).expect("mount point");
        }
        machine.mount();
        machine
    }

    /// Where the disk `name` is mounted.
    pub fn disk(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn backing(&self, name: &str) -> PathBuf {
        self.root.path().join(format!(".{name}.backing"))
    }

    fn mount(&mut self) {
        let mut group = 0;
        for name in self.names.clone() {
            let mut command = Command::new("python3");
            command
                .arg(LAZYFS)
                .arg(self.backing(&name))
                .arg(self.disk(&name))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit());
            std::os::unix::process::CommandExt::process_group(&mut command, group);
            let child = command.spawn().expect("starting lazyfs.py");
            if group == 0 {
                group = child.id() as i32;
            }
            self.file_systems.push(child);
            let disk = self.disk(&name);
            wait_until(Duration::from_secs(20), || is_mounted(&disk));
        }
    }

    /// The power fails: every disk stops at the same instant, `victims` (every process using
    /// the disks) die, and the disks come back with what was durable.
    pub fn cut<'a>(&mut self, victims: impl IntoIterator<Item = &'a mut Child>) {
        let group = self.file_systems[0].id() as i32;
        // SAFETY: plain signal sends to the disks' process group and to the victims.
        unsafe { libc::kill(-group, libc::SIGUSR1) };
        for victim in victims {
            let _ = victim.kill();
            let _ = victim.wait();
        }
        for status in self.unmount() {
            assert!(
                status.success(),
                "lazyfs.py ended with {status} restoring a disk"
            );
        }
        self.mount();
    }

    /// A clean shutdown and start: everything written so far is durable.
    pub fn restart(&mut self) {
        for status in self.unmount() {
            assert!(status.success(), "lazyfs.py ended with {status}");
        }
        self.mount();
    }

    fn unmount(&mut self) -> Vec<ExitStatus> {
        let mut statuses = Vec::new();
        for mut file_system in std::mem::take(&mut self.file_systems) {
            // SAFETY: a plain signal send to a child this machine started.
            unsafe { libc::kill(file_system.id() as i32, libc::SIGTERM) };
            if let Ok(status) = file_system.wait() {
                statuses.push(status);
            }
        }
        for name in &self.names {
            let disk = self.disk(name);
            if is_mounted(&disk) {
                let _ = Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(&disk)
                    .status();
            }
        }
        statuses
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.unmount();
    }
}

fn is_mounted(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let path = path.to_string_lossy();
    mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(path.as_ref()))
}
