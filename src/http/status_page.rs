//! The status page at `/` and its login form: self-contained HTML (inline CSS and SVG, no
//! script, no external asset), refreshing itself every 30 seconds. Overdue and failing jobs
//! come first, with since when; each job's last 24 hours is a strip of cells (`strip.rs`).

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::html::escape;
use super::strip::{self, Mark};
use crate::clock::to_store_text;
use crate::runner::RunStatus;
use crate::status::JobStatus;
use crate::status::RunRecord;

const REFRESH_SECONDS: u32 = 30;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{display:flex;align-items:center;gap:1em;padding:.8em 1.5em;background:#1d2430;color:#fff}
header h1{font-size:1.2em;margin:0}header span{opacity:.7;flex:1}
main{padding:1em 1.5em}table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.45em .6em;border-bottom:1px solid #e3e6ea;vertical-align:middle}
th{font-weight:600;background:#eef0f3}code{font-size:.95em}
.status{display:inline-block;padding:0 .5em;border-radius:.6em;font-size:.85em;color:#fff}
.ok{background:#2e7d32}.partial{background:#b26a00}.failed{background:#c62828}.running{background:#1565c0}
.never{background:#8a94a3}.off{color:#8a94a3}.error{font-family:monospace;white-space:pre-wrap;word-break:break-word}
button{font:inherit;padding:.3em .9em;cursor:pointer}
.login{max-width:22em;margin:12vh auto;background:#fff;padding:1.5em 2em;border-radius:8px;box-shadow:0 1px 4px #0002}
.login input{width:100%;box-sizing:border-box;padding:.4em;margin:.4em 0 1em;font:inherit}
.notice{color:#c62828}
";

/// Whether a page reloads itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    Periodic,
    Never,
}

/// What the page shows beside the job statuses.
pub struct PageData<'a> {
    pub durations: &'a BTreeMap<&'a str, Vec<i64>>,
    pub marks: &'a BTreeMap<String, Vec<(DateTime<Utc>, Mark)>>,
    pub failures: &'a [RunRecord],
    pub now: DateTime<Utc>,
}

fn head(title: &str, refresh: Refresh) -> String {
    let refresh = match refresh {
        Refresh::Periodic => {
            format!("<meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">")
        }
        Refresh::Never => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{refresh}\
         <title>{title}</title><style>{STYLE}{}</style></head>",
        strip::STYLE
    )
}

pub fn login(notice: Option<&str>) -> String {
    let notice = notice.map_or(String::new(), |text| {
        format!("<p class=\"notice\">{}</p>", escape(text))
    });
    format!(
        "{}<body><form class=\"login\" method=\"post\" action=\"/login\"><h1>edgecron</h1>{notice}\
         <label for=\"secret\">Secret (CRON_SECRET)</label>\
         <input id=\"secret\" type=\"password\" name=\"secret\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Sign in</button></form></body></html>",
        head("edgecron: sign in", Refresh::Never)
    )
}

/// A line of the last durations, scaled to the largest, as inline SVG.
fn sparkline(durations: &[i64]) -> String {
    let (width, height) = (120.0, 24.0);
    let Some(&longest) = durations.iter().max() else {
        return String::new();
    };
    let longest = longest.max(1) as f64;
    let step = if durations.len() > 1 {
        width / (durations.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = durations
        .iter()
        .enumerate()
        .map(|(index, &ms)| {
            let x = index as f64 * step;
            let y = height - 2.0 - (ms as f64 / longest) * (height - 4.0);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    // The newest run as a dot, so a single run still shows.
    let last = points.last().cloned().unwrap_or_default();
    let (cx, cy) = last.split_once(',').unwrap_or(("0", "0"));
    let title = format!(
        "last {} runs, longest {}",
        durations.len(),
        human_duration(longest as i64)
    );
    format!(
        "<svg width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{title}\">\
         <title>{title}</title><polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"1.5\" points=\"{}\"/>\
         <circle cx=\"{cx}\" cy=\"{cy}\" r=\"2\" fill=\"#1565c0\"/></svg>",
        points.join(" ")
    )
}

fn human_duration(ms: i64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{}m {}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// A run's status as a coloured badge; `None`: the job never ran.
fn badge(status: Option<RunStatus>) -> String {
    let class = status.map_or("never", RunStatus::as_str);
    format!("<span class=\"status {class}\">{class}</span>")
}

/// Whether a job is in trouble, and since when.
fn health(job: &JobStatus) -> String {
    let mut troubles = Vec::new();
    if let Some(since) = &job.overdue_since {
        troubles.push(format!("overdue since {}", escape(since)));
    }
    if let Some(since) = &job.failing_since {
        troubles.push(format!("failing since {}", escape(since)));
    }
    if let Some(backlog) = &job.capture_backlog {
        if let Some(found) = &backlog.gap_found_at {
            troubles.push(format!(
                "capture gap in {} since {}: recovering",
                backlog.table,
                escape(found)
            ));
        }
        if backlog.growing {
            troubles.push(format!(
                "{} rows of {} waiting, and growing",
                backlog.rows, backlog.table
            ));
        }
    }
    if troubles.is_empty() {
        return "<span class=\"health\">ok</span>".to_string();
    }
    format!(
        "<span class=\"health bad\">{}</span>",
        troubles.join("<br>")
    )
}

fn schedule_cell(job: &JobStatus) -> String {
    let mut cell = format!("<code>{}</code>", escape(&job.plan.schedule));
    if job.plan.zone != "UTC" {
        let _ = write!(cell, " <small>{}</small>", escape(&job.plan.zone));
    }
    if let Some(expected) = &job.plan.expected {
        let _ = write!(
            cell,
            "<br><small>expected <code>{}</code></small>",
            escape(expected)
        );
    }
    cell
}

pub fn page(jobs: &[JobStatus], data: &PageData<'_>) -> String {
    let mut out = head("edgecron status", Refresh::Periodic);
    let _ = write!(
        out,
        "<body><header><h1>edgecron</h1><span>{}{} · refreshes every {REFRESH_SECONDS} s</span>\
         <form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out</button></form></header><main>\
         <table class=\"jobs\"><thead><tr><th>Job</th><th>Health</th><th>Schedule</th><th>Enabled</th><th>Last run</th>\
         <th>Took</th><th>Next run</th><th>Last 24 h</th><th>Recent durations</th></tr></thead><tbody>",
        crate::site::current().map_or(String::new(), |site| format!("site {} · ", escape(site))),
        escape(&to_store_text(data.now))
    );
    // Unhealthy jobs first, the longest-standing trouble first; the rest in registry order.
    let mut ordered: Vec<&JobStatus> = jobs.iter().collect();
    ordered.sort_by_key(|job| {
        let since = [&job.overdue_since, &job.failing_since]
            .into_iter()
            .flatten()
            .min()
            .cloned();
        (!job.unhealthy(), since)
    });
    for job in ordered {
        let (last, took) = match &job.last_run {
            Some(run) => (
                format!("{} {}", badge(Some(run.status)), escape(&run.started_at)),
                run.duration_ms.map_or(String::new(), human_duration),
            ),
            None => (badge(None), String::new()),
        };
        let enabled = if job.plan.enabled {
            "yes".to_string()
        } else {
            "<span class=\"off\">no</span>".to_string()
        };
        let next = match (&job.plan.next_run, &job.plan.next_expected) {
            (Some(run), _) => escape(run),
            (None, Some(expected)) => format!("<small>expected</small> {}", escape(expected)),
            (None, None) => "—".to_string(),
        };
        let spark = data
            .durations
            .get(job.plan.name)
            .map_or(String::new(), |d| sparkline(d));
        let marks = data.marks.get(job.plan.name).map_or(&[][..], Vec::as_slice);
        let _ = write!(
            out,
            "<tr id=\"job-{name}\"><td class=\"job\">{name}</td><td>{health}</td><td>{schedule}</td><td>{enabled}</td>\
             <td>{last}</td><td>{took}</td><td>{next}</td><td>{strip}</td><td>{spark}</td></tr>",
            name = escape(job.plan.name),
            health = health(job),
            schedule = schedule_cell(job),
            strip = strip::render(marks, data.now),
        );
    }
    out.push_str("</tbody></table>");
    out.push_str(&strip::legend());
    out.push_str("<h2>Latest failures</h2>");
    if data.failures.is_empty() {
        out.push_str("<p>No failed runs.</p>");
    } else {
        out.push_str("<table class=\"failures\"><thead><tr><th>Job</th><th>Run</th><th>Started</th><th>Error</th></tr></thead><tbody>");
        for run in data.failures {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"error\">{}</td></tr>",
                escape(&run.job),
                run.id,
                escape(&run.started_at),
                escape(run.error.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</main></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::Trigger;

    #[test]
    fn text_from_rows_cannot_inject_markup() {
        let failure = RunRecord {
            id: 7,
            job: "cleanup".into(),
            trigger: Trigger::Cli,
            started_at: "2026-05-01T00:00:00.000Z".into(),
            finished_at: None,
            status: RunStatus::Failed,
            error: Some("<script>alert('x')</script>".into()),
            duration_ms: Some(1200),
            rows_processed: 0,
            scheduled_for: None,
            lag_ms: None,
            site: None,
        };
        let failures = [failure];
        let data = PageData {
            durations: &BTreeMap::new(),
            marks: &BTreeMap::new(),
            failures: &failures,
            now: Utc::now(),
        };
        let html = page(&[], &data);
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(!html.contains("<script"));
        assert!(login(Some("<b>")).contains("&lt;b&gt;"));
    }

    #[test]
    fn sparklines_scale_to_the_longest_run() {
        let svg = sparkline(&[100, 400, 200]);
        assert!(
            svg.contains("points=\"0.0,17.0 60.0,2.0 120.0,12.0\""),
            "{svg}"
        );
        assert!(sparkline(&[]).is_empty());
        assert_eq!(human_duration(61_500), "1m 1s");
    }
}
