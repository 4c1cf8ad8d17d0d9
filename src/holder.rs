//! This process's identity as a lease holder, and whether another holder is still alive.
//!
//! A holder is `host/pid/start-ticks`. On the same host a dead process is recognised at once
//! (its pid is gone, or was reused by a process started at another time), so a run killed with
//! SIGKILL never blocks the next one; a holder on another host is judged by its heartbeat.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How often a running job's lease is refreshed.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A lease not refreshed for this long belongs to a dead (or hung beyond help) process.
pub const HEARTBEAT_STALE_AFTER: Duration = Duration::from_secs(30);

pub fn this_process() -> String {
    let pid = std::process::id();
    let ticks = process_stat(pid).map_or(0, |stat| stat.start_ticks);
    format!("{}/{}/{pid}/{ticks}", host_name(), process_space())
}

/// Whether the process named by `holder`, whose last heartbeat was at `heartbeat`, is alive.
/// Only a process this one can see (same host, boot and pid namespace) is judged by its pid;
/// any other, or any doubt, by its heartbeat.
pub fn is_alive(holder: &str, heartbeat: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let mut parts = holder.rsplitn(4, '/');
    let (Some(ticks), Some(pid), Some(space), Some(host)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return heartbeat_is_fresh(heartbeat, now);
    };
    if host != host_name() || space != process_space() {
        return heartbeat_is_fresh(heartbeat, now);
    }
    let (Ok(pid), Ok(ticks)) = (pid.parse::<u32>(), ticks.parse::<u64>()) else {
        return heartbeat_is_fresh(heartbeat, now);
    };
    match process_stat(pid) {
        // The pid now belongs to a process started at another time, or to one that has died
        // and waits only to be reaped (a killed run whose parent died too, where nothing
        // reaps orphans): the holder is gone.
        Ok(stat) => stat.start_ticks == ticks && !stat.ended,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => heartbeat_is_fresh(heartbeat, now),
    }
}

fn heartbeat_is_fresh(heartbeat: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let age = now.signed_duration_since(heartbeat);
    age.to_std().map_or(true, |age| age < HEARTBEAT_STALE_AFTER)
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// This boot and pid namespace: pids are only comparable within one.
fn process_space() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().chars().take(8).collect::<String>())
        .unwrap_or_default();
    let namespace = std::fs::read_link("/proc/self/ns/pid")
        .map(|link| {
            link.to_string_lossy()
                .chars()
                .filter(char::is_ascii_digit)
                .collect::<String>()
        })
        .unwrap_or_default();
    format!("{boot}-{namespace}")
}

/// What `/proc/PID/stat` says of a process.
struct ProcessStat {
    /// Its start time in clock ticks since boot (field 22), which tells a live process from
    /// a later one that reused its pid.
    start_ticks: u64,
    /// It has ended and only waits for its parent to collect its exit status (state Z or X).
    ended: bool,
}

fn process_stat(pid: u32) -> std::io::Result<ProcessStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let malformed = || std::io::Error::other(format!("unexpected /proc/{pid}/stat"));
    // The command name (field 2) may hold spaces and parentheses; fields after it are plain.
    let mut fields = stat[stat.rfind(')').ok_or_else(malformed)? + 1..].split_whitespace();
    let ended = matches!(fields.next(), Some("Z" | "X"));
    let start_ticks = fields
        .nth(18)
        .and_then(|field| field.parse().ok())
        .ok_or_else(malformed)?;
    Ok(ProcessStat { start_ticks, ended })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_vanished_pid_is_not() {
        let now = Utc::now();
        let long_ago = now - chrono::Duration::hours(1);
        assert!(is_alive(&this_process(), long_ago, now));
        let here = format!("{}/{}", host_name(), process_space());
        assert!(!is_alive(&format!("{here}/999999999/1"), now, now));
        // Our pid, but started at another time: a reused pid, so the old holder is dead.
        let reused = format!("{here}/{}/1", std::process::id());
        assert!(!is_alive(&reused, long_ago, now));
    }

    #[test]
    fn a_killed_holder_nobody_reaped_is_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep");
        let ticks = process_stat(child.id()).expect("its start").start_ticks;
        let holder = format!("{}/{}/{}/{ticks}", host_name(), process_space(), child.id());
        let now = Utc::now();
        assert!(is_alive(&holder, now, now));
        child.kill().expect("killed");
        // Not reaped yet: a zombie, whose pid and start time still match.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !process_stat(child.id()).is_ok_and(|stat| stat.ended)
            && std::time::Instant::now() < deadline
        {
            std::thread::yield_now();
        }
        assert!(!is_alive(&holder, now, now));
        child.wait().expect("reaped");
    }

    #[test]
    fn a_holder_on_another_host_lives_by_its_heartbeat() {
        let now = Utc::now();
        assert!(is_alive("elsewhere/1/1", now, now));
        assert!(!is_alive(
            "elsewhere/1/1",
            now - chrono::Duration::minutes(5),
            now
        ));
    }
}
