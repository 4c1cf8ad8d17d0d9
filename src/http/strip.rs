//! The status page's occurrence strip: a job's last 24 hours as 96 quarter-hour cells, each
//! coloured by the worst thing that happened in it (missed, failed, refused, coalesced,
//! paused, running, ok) and labelled with what did, in plain CSS and text (no script).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use chrono::{DateTime, Duration, Utc};

use super::html::escape;
use crate::runner::RunStatus;
use crate::status::{OccurrenceCell, Outcome, RunStart};

/// The span the strip covers, and its cells.
pub const SPAN: Duration = Duration::hours(24);
const CELLS: i64 = 96;

/// What happened at one moment, worst first (a cell shows its worst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mark {
    Missed,
    Failed,
    Refused,
    Coalesced,
    Paused,
    Running,
    Ok,
}

impl Mark {
    const ALL: [Mark; 7] = [
        Mark::Missed,
        Mark::Failed,
        Mark::Refused,
        Mark::Coalesced,
        Mark::Paused,
        Mark::Running,
        Mark::Ok,
    ];

    pub fn class(self) -> &'static str {
        match self {
            Mark::Missed => "missed",
            Mark::Failed => "failed",
            Mark::Refused => "refused",
            Mark::Coalesced => "coalesced",
            Mark::Paused => "paused",
            Mark::Running => "running",
            Mark::Ok => "ok",
        }
    }

    /// How a label names it (`2 ran ok`).
    fn label(self) -> &'static str {
        match self {
            Mark::Ok => "ran ok",
            Mark::Running => "running",
            other => other.class(),
        }
    }

    fn of_run(status: RunStatus) -> Mark {
        match status {
            RunStatus::Failed => Mark::Failed,
            RunStatus::Running => Mark::Running,
            RunStatus::Ok | RunStatus::Partial => Mark::Ok,
        }
    }
}

/// Each job's marks in the strip's span: its occurrences (a `ran` one by its run's status),
/// and runs no occurrence names (HTTP and CLI runs of a job without an expected schedule).
pub fn marks(
    occurrences: &[OccurrenceCell],
    runs: &[RunStart],
) -> BTreeMap<String, Vec<(DateTime<Utc>, Mark)>> {
    let mut marks: BTreeMap<String, Vec<(DateTime<Utc>, Mark)>> = BTreeMap::new();
    let mut named = BTreeSet::new();
    for occurrence in occurrences {
        let mark = match occurrence.outcome {
            Outcome::Missed => Mark::Missed,
            Outcome::Refused => Mark::Refused,
            Outcome::Coalesced => Mark::Coalesced,
            Outcome::Paused => Mark::Paused,
            Outcome::Ran => Mark::of_run(occurrence.run_status.unwrap_or(RunStatus::Ok)),
        };
        // A coalesced fire time whose catch-up run failed is a failure too.
        let mark = match (mark, occurrence.run_status) {
            (Mark::Coalesced, Some(RunStatus::Failed)) => Mark::Failed,
            (mark, _) => mark,
        };
        named.extend(occurrence.run_id);
        marks
            .entry(occurrence.job.clone())
            .or_default()
            .push((occurrence.scheduled_for, mark));
    }
    for run in runs {
        if !named.contains(&run.id) {
            marks
                .entry(run.job.clone())
                .or_default()
                .push((run.started_at, Mark::of_run(run.status)));
        }
    }
    marks
}

/// The strip of one job ending at `now`, as HTML.
pub fn render(marks: &[(DateTime<Utc>, Mark)], now: DateTime<Utc>) -> String {
    let width = SPAN / CELLS as i32;
    let start = now - SPAN;
    let mut counts = vec![[0u32; Mark::ALL.len()]; CELLS as usize];
    for (time, mark) in marks {
        if *time < start || *time > now {
            continue;
        }
        let index = ((*time - start).num_milliseconds() / width.num_milliseconds())
            .clamp(0, CELLS - 1) as usize;
        counts[index][*mark as usize] += 1;
    }
    let mut out = String::from(
        "<div class=\"strip\" role=\"list\" aria-label=\"the last 24 hours, a cell per quarter hour\">",
    );
    for (index, cell) in counts.iter().enumerate() {
        let from = start + width * index as i32;
        let worst = Mark::ALL
            .iter()
            .find(|mark| cell[**mark as usize] > 0)
            .map_or("none", |mark| mark.class());
        let what: Vec<String> = Mark::ALL
            .iter()
            .filter(|mark| cell[**mark as usize] > 0)
            .map(|mark| format!("{} {}", cell[*mark as usize], mark.label()))
            .collect();
        let what = if what.is_empty() {
            "nothing due".to_string()
        } else {
            what.join(", ")
        };
        let label = format!(
            "{}–{} UTC: {what}",
            from.format("%m-%d %H:%M"),
            (from + width).format("%H:%M")
        );
        let _ = write!(
            out,
            "<span class=\"cell {worst}\" role=\"listitem\" title=\"{label}\" aria-label=\"{label}\"></span>",
            label = escape(&label)
        );
    }
    out.push_str("</div>");
    out
}

/// The strip's colours and the legend's, for the page's style sheet.
pub const STYLE: &str = "
.strip{display:flex;gap:1px;width:288px;height:16px}
.strip .cell{flex:1;border-radius:1px;background:#e3e6ea}.cell.none{background:#e3e6ea}
.cell.ok{background:#2e7d32}.cell.running{background:#1565c0}.cell.paused{background:#8a94a3}
.cell.coalesced{background:#f9a825}.cell.refused{background:#ef6c00}.cell.failed{background:#c62828}
.cell.missed{background:#6a1b9a}
.legend{display:flex;gap:1em;font-size:.85em;margin:.3em 0 .8em}
.legend .cell{display:inline-block;width:.8em;height:.8em;margin-right:.3em;border-radius:1px;vertical-align:-.05em}
.health{font-size:.85em}.health.bad{color:#c62828;font-weight:600}
";

/// The legend under the table, naming each colour.
pub fn legend() -> String {
    let mut out = String::from("<div class=\"legend\">");
    for mark in [
        Mark::Ok,
        Mark::Failed,
        Mark::Coalesced,
        Mark::Missed,
        Mark::Refused,
        Mark::Paused,
    ] {
        let _ = write!(
            out,
            "<span><span class=\"cell {}\"></span>{}</span>",
            mark.class(),
            mark.label()
        );
    }
    out.push_str("<span><span class=\"cell none\"></span>nothing due</span></div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_cell_shows_its_worst_mark_and_labels_everything_in_it() {
        let now = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        let marks = [
            (now - Duration::minutes(5), Mark::Ok),
            (now - Duration::minutes(4), Mark::Ok),
            (now - Duration::minutes(3), Mark::Missed),
            (now - Duration::hours(2), Mark::Failed),
            (now - Duration::hours(25), Mark::Failed),
        ];
        let html = render(&marks, now);
        assert_eq!(html.matches("class=\"cell ").count(), 96);
        assert_eq!(html.matches("cell missed").count(), 1);
        assert_eq!(
            html.matches("cell failed").count(),
            1,
            "the day-old one is out"
        );
        assert!(
            html.contains("title=\"05-01 11:45–12:00 UTC: 1 missed, 2 ran ok\""),
            "{html}"
        );
        assert!(html.contains("nothing due"));
    }

    #[test]
    fn ran_occurrences_take_their_runs_status_and_other_runs_are_added_once() {
        let at = Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap();
        let cell = |outcome, run_id: Option<i64>, run_status| OccurrenceCell {
            job: "cleanup".into(),
            scheduled_for: at,
            outcome,
            run_id,
            run_status,
        };
        let occurrences = [
            cell(Outcome::Ran, Some(1), Some(RunStatus::Failed)),
            cell(Outcome::Coalesced, Some(2), Some(RunStatus::Ok)),
            cell(Outcome::Missed, None, None),
        ];
        let run = |id, status| RunStart {
            id,
            job: "cleanup".into(),
            started_at: at,
            status,
        };
        let runs = [run(1, RunStatus::Failed), run(3, RunStatus::Ok)];
        let marks = marks(&occurrences, &runs);
        let kinds: Vec<Mark> = marks["cleanup"].iter().map(|(_, mark)| *mark).collect();
        assert_eq!(
            kinds,
            [Mark::Failed, Mark::Coalesced, Mark::Missed, Mark::Ok]
        );
    }
}
