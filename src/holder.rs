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
    format!("{}/{pid}/{}", host_name(), start_ticks(pid).unwrap_or(0))
}

/// Whether the process named by `holder`, whose last heartbeat was at `heartbeat`, is alive.
pub fn is_alive(holder: &str, heartbeat: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let mut parts = holder.rsplitn(3, '/');
    let (Some(ticks), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next()) else {
        return heartbeat_is_fresh(heartbeat, now);
    };
    if host != host_name() {
        return heartbeat_is_fresh(heartbeat, now);
    }
    let (Ok(pid), Ok(ticks)) = (pid.parse::<u32>(), ticks.parse::<u64>()) else {
        return heartbeat_is_fresh(heartbeat, now);
    };
    match start_ticks(pid) {
        Some(current) => current == ticks || heartbeat_is_fresh(heartbeat, now),
        None => false,
    }
}

fn heartbeat_is_fresh(heartbeat: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    let age = now.signed_duration_since(heartbeat);
    age.to_std().map_or(true, |age| age < HEARTBEAT_STALE_AFTER)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// The process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`), which
/// tells a live process from a later one that reused its pid.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_vanished_pid_is_not() {
        let now = Utc::now();
        let long_ago = now - chrono::Duration::hours(1);
        assert!(is_alive(&this_process(), long_ago, now));
        let host = host_name();
        assert!(!is_alive(&format!("{host}/999999999/1"), now, now));
        // Our pid, but started at another time: a reused pid, so the old holder is dead.
        let reused = format!("{host}/{}/1", std::process::id());
        assert!(!is_alive(&reused, long_ago, now));
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
