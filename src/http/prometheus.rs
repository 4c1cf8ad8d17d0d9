//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4), rendered from the
//! status read model's [`Snapshot`].
//!
//! Run counters come from `job_run_stats`, which a trigger keeps as runs end, so they count
//! runs of every process (scheduler, HTTP, CLI) and never go back when history is pruned.
//! Occurrence counts and schedule lag come from the ledger's lifetime counters, and the
//! overdue and failing gauges from the alert conditions in force.

use std::fmt::Write;

use crate::clock::from_store_text;
use crate::runner::RunStatus;
use crate::status::Outcome;
use crate::status::scrape::Snapshot;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const STATUSES: [RunStatus; 3] = [RunStatus::Ok, RunStatus::Partial, RunStatus::Failed];

/// The exposition of `snapshot`, with the listener's own count of refused authentications.
pub fn render(snapshot: &Snapshot, auth_refusals: u64) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "edgecron_http_auth_refused_total",
        "counter",
        "Requests to protected routes refused for a missing, wrong or repeated secret since start.",
    );
    let _ = writeln!(out, "edgecron_http_auth_refused_total {auth_refusals}");
    render_runs(&mut out, snapshot);
    render_scheduling(&mut out, snapshot);
    render_exports(&mut out, snapshot);
    render_siem_and_site(&mut out, snapshot);
    render_store(&mut out, snapshot);
    out
}

/// Runs by job and status, their durations, last success and failure, rows and those running.
fn render_runs(out: &mut String, snapshot: &Snapshot) {
    let stat = |job: &str, status: RunStatus| {
        snapshot
            .stats
            .iter()
            .find(|stat| stat.job == job && stat.status == status)
    };

    family(
        out,
        "edgecron_job_runs_total",
        "counter",
        "Runs that ended, by job and status.",
    );
    for job in &snapshot.jobs {
        for status in STATUSES {
            let runs = stat(job, status).map_or(0, |stat| stat.runs);
            let _ = writeln!(
                out,
                "edgecron_job_runs_total{{job_name=\"{job}\",status=\"{status}\"}} {runs}"
            );
        }
    }

    family(
        out,
        "edgecron_job_run_duration_seconds",
        "histogram",
        "How long runs took, by job.",
    );
    for histogram in &snapshot.histograms {
        let sum: f64 = STATUSES
            .iter()
            .filter_map(|status| stat(&histogram.job, *status))
            .map(|stat| stat.duration_seconds_sum)
            .sum();
        histogram_samples(
            out,
            "edgecron_job_run_duration_seconds",
            &histogram.job,
            &histogram.buckets,
            sum,
        );
    }

    let last = |statuses: &[RunStatus], job: &str| {
        statuses
            .iter()
            .filter_map(|status| stat(job, *status))
            .filter_map(|stat| stat.last_finished_at.as_deref().and_then(from_store_text))
            .max()
    };
    for (name, help, statuses) in [
        (
            "edgecron_job_last_success_timestamp_seconds",
            "When the job last ended ok or partial (Unix time).",
            &[RunStatus::Ok, RunStatus::Partial][..],
        ),
        (
            "edgecron_job_last_failure_timestamp_seconds",
            "When the job last failed (Unix time).",
            &[RunStatus::Failed][..],
        ),
    ] {
        family(out, name, "gauge", help);
        for job in &snapshot.jobs {
            if let Some(time) = last(statuses, job) {
                let seconds = time.timestamp_millis() as f64 / 1000.0;
                let _ = writeln!(out, "{name}{{job_name=\"{job}\"}} {seconds}");
            }
        }
    }

    family(
        out,
        "edgecron_job_rows_processed_total",
        "counter",
        "Rows (files, items) runs processed, by job.",
    );
    for job in &snapshot.jobs {
        let rows: i64 = STATUSES
            .iter()
            .filter_map(|status| stat(job, *status))
            .map(|stat| stat.rows_processed)
            .sum();
        let _ = writeln!(
            out,
            "edgecron_job_rows_processed_total{{job_name=\"{job}\"}} {rows}"
        );
    }

    family(
        out,
        "edgecron_job_running",
        "gauge",
        "Runs in progress, by job.",
    );
    for job in &snapshot.jobs {
        let running = snapshot
            .running
            .iter()
            .find(|(name, _)| name == job)
            .map_or(0, |(_, count)| *count);
        let _ = writeln!(out, "edgecron_job_running{{job_name=\"{job}\"}} {running}");
    }
}

/// The upload queue, the export and capture backlogs, and rows that could not be exported.
fn render_exports(out: &mut String, snapshot: &Snapshot) {
    let (files, bytes) = snapshot.upload_queue;
    gauge(
        out,
        "edgecron_export_upload_queue_files",
        "Export files waiting for upload to S3.",
        files,
    );
    gauge(
        out,
        "edgecron_export_upload_queue_bytes",
        "Bytes of export files waiting for upload.",
        bytes,
    );
    gauge(
        out,
        "edgecron_export_backlog_rows",
        "Interaction rows not yet exported, inactive tenants' included.",
        snapshot.export_backlog,
    );
    family(
        out,
        "edgecron_export_tenant_backlog_rows",
        "gauge",
        "Interaction rows each tenant (as the row now names it) had waiting when the last export run ended.",
    );
    for (tenant, rows) in &snapshot.export_backlog_by_tenant {
        let _ = writeln!(
            out,
            "edgecron_export_tenant_backlog_rows{{tenant=\"{}\"}} {rows}",
            label_value(tenant)
        );
    }
    family(
        out,
        "edgecron_capture_backlog_rows",
        "gauge",
        "Rows of each captured table its consumer has not yet taken (export-interactions, siem-ship), whether or not that consumer is configured.",
    );
    for (table, rows, _) in &snapshot.capture {
        let _ = writeln!(
            out,
            "edgecron_capture_backlog_rows{{table=\"{table}\"}} {rows}"
        );
    }
    family(
        out,
        "edgecron_capture_gap",
        "gauge",
        "1 while the capture triggers of a table were found gone and the rows missed are being recovered.",
    );
    for (table, _, gap) in &snapshot.capture {
        let _ = writeln!(
            out,
            "edgecron_capture_gap{{table=\"{table}\"}} {}",
            u8::from(*gap)
        );
    }
    gauge(
        out,
        "edgecron_export_invalid_rows",
        "Interaction rows the last export runs could not export as they are (bad created_at or id).",
        snapshot.export_invalid_rows,
    );
}

/// The SIEM backlog and stalled runs, when a SIEM is configured, and this host's site.
fn render_siem_and_site(out: &mut String, snapshot: &Snapshot) {
    if let Some((backend, rows, stalled)) = snapshot.siem {
        family(
            out,
            "edgecron_siem_backlog_rows",
            "gauge",
            "Audit rows not yet shipped to the SIEM.",
        );
        let _ = writeln!(
            out,
            "edgecron_siem_backlog_rows{{backend=\"{backend}\"}} {rows}"
        );
        family(
            out,
            "edgecron_siem_stalled_runs",
            "gauge",
            "siem-ship runs in a row that delivered nothing because the intake failed.",
        );
        let _ = writeln!(
            out,
            "edgecron_siem_stalled_runs{{backend=\"{backend}\"}} {stalled}"
        );
    }
    if let Some(site) = snapshot.site {
        family(
            out,
            "edgecron_site_info",
            "gauge",
            "This host's site in a fleet (section 9 of the contract); always 1.",
        );
        let _ = writeln!(
            out,
            "edgecron_site_info{{site=\"{}\"}} 1",
            label_value(site)
        );
    }
}

/// The store's file and write-ahead log sizes.
fn render_store(out: &mut String, snapshot: &Snapshot) {
    gauge(
        out,
        "edgecron_store_size_bytes",
        "Size of the SQLite store file.",
        snapshot.store_bytes,
    );
    gauge(
        out,
        "edgecron_store_wal_size_bytes",
        "Size of the store's write-ahead log.",
        snapshot.wal_bytes,
    );
}

/// Occurrences by job and outcome, schedule lag, and the overdue and failing gauges.
fn render_scheduling(out: &mut String, snapshot: &Snapshot) {
    family(
        out,
        "edgecron_occurrences_total",
        "counter",
        "Fire times due (built-in or expected schedule), by job and what became of them: ran, coalesced (passed while down or suspended), refused (still running), paused, missed.",
    );
    for job in &snapshot.jobs {
        for outcome in Outcome::ALL {
            let count = snapshot
                .occurrences
                .iter()
                .find(|(name, kind, _)| name == job && kind == outcome.as_str())
                .map_or(0, |(_, _, count)| *count);
            let _ = writeln!(
                out,
                "edgecron_occurrences_total{{job_name=\"{job}\",outcome=\"{}\"}} {count}",
                outcome.as_str()
            );
        }
    }
    family(
        out,
        "edgecron_schedule_lag_seconds",
        "histogram",
        "How late scheduled runs started after their fire time, by job.",
    );
    for histogram in &snapshot.lag {
        histogram_samples(
            out,
            "edgecron_schedule_lag_seconds",
            &histogram.job,
            &histogram.buckets,
            histogram.seconds_sum,
        );
    }
    for (name, kind, help) in [
        (
            "edgecron_job_overdue",
            "overdue",
            "1 while a scheduled or expected run of the job has not started within its grace.",
        ),
        (
            "edgecron_job_failing",
            "failing",
            "1 while the job's last runs have failed (3 in a row).",
        ),
    ] {
        family(out, name, "gauge", help);
        for job in &snapshot.jobs {
            let on = snapshot
                .conditions
                .iter()
                .any(|(name, condition)| name == job && condition == kind);
            let _ = writeln!(out, "{name}{{job_name=\"{job}\"}} {}", u8::from(on));
        }
    }
    gauge(
        out,
        "edgecron_alerts_pending",
        "Alerts the webhook has not taken yet.",
        snapshot.alerts_pending.max(0) as u64,
    );
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as the text format needs it: backslash, double quote and newline escaped
/// (a tenant id is the application's text).
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// One job's histogram samples: its buckets (given per bucket, written cumulative), then
/// `_sum` and `_count`.
fn histogram_samples(out: &mut String, name: &str, job: &str, buckets: &[(String, i64)], sum: f64) {
    let mut cumulative = 0;
    for (le, runs) in buckets {
        cumulative += runs;
        let _ = writeln!(
            out,
            "{name}_bucket{{job_name=\"{job}\",le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(out, "{name}_sum{{job_name=\"{job}\"}} {sum}");
    let _ = writeln!(out, "{name}_count{{job_name=\"{job}\"}} {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::scrape::{DurationHistogram, LagHistogram, RunStats};

    #[test]
    fn counters_histograms_and_gauges_in_exposition_format() {
        let snapshot = Snapshot {
            jobs: vec!["cleanup"],
            stats: vec![RunStats {
                job: "cleanup".into(),
                status: RunStatus::Ok,
                runs: 2,
                duration_seconds_sum: 0.75,
                rows_processed: 40,
                last_finished_at: Some("2026-05-01T00:00:00.500Z".into()),
            }],
            histograms: vec![DurationHistogram {
                job: "cleanup".into(),
                buckets: vec![("0.5".into(), 1), ("1".into(), 1), ("+Inf".into(), 0)],
            }],
            running: vec![("cleanup".into(), 1)],
            upload_queue: (3, 4096),
            export_backlog: 12,
            export_backlog_by_tenant: vec![("t\"1".into(), 5)],
            capture: vec![("interaction_history", 12, false), ("audit_log", 30, true)],
            export_invalid_rows: 1,
            siem: Some(("splunk", 7, 2)),
            store_bytes: 8192,
            wal_bytes: 0,
            occurrences: vec![("cleanup".into(), "coalesced".into(), 3)],
            lag: vec![LagHistogram {
                job: "cleanup".into(),
                buckets: vec![("0.01".into(), 2), ("0.1".into(), 1), ("+Inf".into(), 0)],
                seconds_sum: 0.07,
            }],
            conditions: vec![("cleanup".into(), "overdue".into())],
            alerts_pending: 1,
            site: Some("edge-1"),
        };
        let text = render(&snapshot, 5);
        for line in [
            "# TYPE edgecron_job_runs_total counter",
            "edgecron_job_runs_total{job_name=\"cleanup\",status=\"ok\"} 2",
            "edgecron_job_runs_total{job_name=\"cleanup\",status=\"failed\"} 0",
            "edgecron_job_run_duration_seconds_bucket{job_name=\"cleanup\",le=\"1\"} 2",
            "edgecron_job_run_duration_seconds_bucket{job_name=\"cleanup\",le=\"+Inf\"} 2",
            "edgecron_job_run_duration_seconds_sum{job_name=\"cleanup\"} 0.75",
            "edgecron_job_run_duration_seconds_count{job_name=\"cleanup\"} 2",
            "edgecron_job_last_success_timestamp_seconds{job_name=\"cleanup\"} 1777593600.5",
            "edgecron_job_rows_processed_total{job_name=\"cleanup\"} 40",
            "edgecron_job_running{job_name=\"cleanup\"} 1",
            "edgecron_export_upload_queue_files 3",
            "edgecron_http_auth_refused_total 5",
            "edgecron_export_backlog_rows 12",
            "edgecron_export_tenant_backlog_rows{tenant=\"t\\\"1\"} 5",
            "edgecron_capture_backlog_rows{table=\"audit_log\"} 30",
            "edgecron_capture_gap{table=\"audit_log\"} 1",
            "edgecron_export_invalid_rows 1",
            "edgecron_siem_backlog_rows{backend=\"splunk\"} 7",
            "edgecron_siem_stalled_runs{backend=\"splunk\"} 2",
            "edgecron_site_info{site=\"edge-1\"} 1",
            "edgecron_store_size_bytes 8192",
            "edgecron_occurrences_total{job_name=\"cleanup\",outcome=\"coalesced\"} 3",
            "edgecron_occurrences_total{job_name=\"cleanup\",outcome=\"missed\"} 0",
            "edgecron_schedule_lag_seconds_bucket{job_name=\"cleanup\",le=\"0.1\"} 3",
            "edgecron_schedule_lag_seconds_count{job_name=\"cleanup\"} 3",
            "edgecron_job_overdue{job_name=\"cleanup\"} 1",
            "edgecron_job_failing{job_name=\"cleanup\"} 0",
            "edgecron_alerts_pending 1",
        ] {
            assert!(
                text.lines().any(|candidate| candidate == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("edgecron_job_last_failure_timestamp_seconds{"));
    }
}
