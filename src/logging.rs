//! Log output: human-readable lines by default; with `EDGECRON_LOG_FORMAT=json`, one JSON
//! object per line (`time`, `level`, `target`, `message`, `job`, `runId`) for journald,
//! Datadog or CloudWatch. The runner marks the thread running a job, so every line the job
//! logs there carries its job and run id. An alert (target `edgecron::alert`) or a structured
//! event (target `edgecron::event`: `export_metric`, `export_file_cleanup_complete`) is one
//! line too: its object's fields at the top level in JSON, so a query on its `type` finds it;
//! its type, summary and object in text.

use std::cell::Cell;
use std::io::Write;

use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// The log target alerts are written to, one JSON object each.
pub const ALERT_TARGET: &str = "edgecron::alert";
/// The log target of structured events, one JSON object each.
pub const EVENT_TARGET: &str = "edgecron::event";

/// Text a remote party sent (an intake's or a storage's answer), fit for a log line or an
/// error: at most `limit` characters, every control character escaped, so no peer can write a
/// line break, and with it a forged log line, into edgecron's log.
pub fn peer_text(text: &str, limit: usize) -> String {
    let mut out = String::new();
    for (count, character) in text.trim().chars().enumerate() {
        if count == limit {
            out.push('…');
            break;
        }
        if character.is_control() {
            out.extend(character.escape_default());
        } else {
            out.push(character);
        }
    }
    out
}

/// Logs a structured event's JSON object (`target` [`EVENT_TARGET`]); the formatter lays it
/// out for the log format.
pub fn event(level: log::Level, object: &Value) {
    log::log!(target: EVENT_TARGET, level, "{object}");
}

thread_local! {
    static CURRENT_RUN: Cell<Option<(&'static str, i64)>> = const { Cell::new(None) };
}

/// While alive, log lines from this thread name the run.
pub struct RunScope {
    previous: Option<(&'static str, i64)>,
}

impl Drop for RunScope {
    fn drop(&mut self) {
        CURRENT_RUN.with(|current| current.set(self.previous));
    }
}

/// The run this thread works for, to pass to threads it starts.
pub fn current_run() -> Option<(&'static str, i64)> {
    CURRENT_RUN.with(Cell::get)
}

/// Marks this thread as working for `run` (from [`current_run`]) until the scope ends.
pub fn continue_run(run: Option<(&'static str, i64)>) -> RunScope {
    let previous = CURRENT_RUN.with(|current| current.replace(run));
    RunScope { previous }
}

pub fn enter_run(job: &'static str, run_id: i64) -> RunScope {
    continue_run(Some((job, run_id)))
}

/// `EDGECRON_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the logger; `RUST_LOG` filters as env_logger reads it (default `info`).
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        LogFormat::Text => builder.format(|out, record| {
            let message = record.args().to_string();
            let message = match alert_object(record.target(), &message) {
                Some(alert) => text_alert(&alert),
                None => message,
            };
            writeln!(
                out,
                "[{} {:<5} {}] {message}",
                Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                record.level(),
                record.target()
            )
        }),
        LogFormat::Json => builder.format(|out, record| {
            let (job, run_id) = CURRENT_RUN
                .with(Cell::get)
                .map_or((None, None), |(job, run_id)| (Some(job), Some(run_id)));
            let message = record.args().to_string();
            let mut line = json!({
                "time": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": message,
                "job": job,
                "runId": run_id,
            });
            if let Some(alert) = alert_object(record.target(), &message) {
                merge_alert(&mut line, alert);
            }
            writeln!(out, "{line}")
        }),
    };
    builder.init();
}

/// An alert's or event's message is its JSON object (`alert::log`, [`event`]).
fn alert_object(target: &str, message: &str) -> Option<Map<String, Value>> {
    if !matches!(target, ALERT_TARGET | EVENT_TARGET) {
        return None;
    }
    match serde_json::from_str(message) {
        Ok(Value::Object(alert)) => Some(alert),
        _ => None,
    }
}

/// A JSON log line of an alert: its fields at the top level, so pipelines match on `type`;
/// the line's own `time`, `level`, `target` kept, and its summary (or type) as the `message`.
fn merge_alert(line: &mut Value, alert: Map<String, Value>) {
    let Value::Object(fields) = line else {
        return;
    };
    let message = alert
        .get("summary")
        .or_else(|| alert.get("type"))
        .cloned()
        .unwrap_or(Value::Null);
    for (key, value) in alert {
        if !matches!(key.as_str(), "time" | "level" | "target" | "message") {
            fields.insert(key, value);
        }
    }
    fields.insert("message".into(), message);
}

/// A text log line of an alert: `type: summary`, then the object for the details.
fn text_alert(alert: &Map<String, Value>) -> String {
    let kind = alert.get("type").and_then(Value::as_str).unwrap_or("alert");
    let summary = alert.get("summary").and_then(Value::as_str);
    let object = Value::Object(alert.clone());
    match summary {
        Some(summary) => format!("{kind}: {summary} {object}"),
        None => format!("{kind}: {object}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_s_text_cannot_break_a_log_line() {
        let forged = "denied\n[2026-12-05T00:00:00Z ERROR edgecron] forged\r\u{1b}[31m";
        let shown = peer_text(forged, 300);
        assert!(!shown.contains('\n') && !shown.contains('\r') && !shown.contains('\u{1b}'));
        assert!(shown.starts_with("denied\\n[2026"), "{shown}");
        assert_eq!(
            peer_text(&"x".repeat(500), 10),
            format!("{}…", "x".repeat(10))
        );
    }

    #[test]
    fn alerts_are_lines_with_a_top_level_type_in_json_and_readable_in_text() {
        let alert =
            r#"{"type":"job_overdue","job":"cleanup","summary":"cleanup: no run","message":"x"}"#;
        let object = alert_object(ALERT_TARGET, alert).unwrap();
        let mut line = json!({"time": "t", "level": "WARN", "target": ALERT_TARGET,
                              "message": alert, "job": null, "runId": null});
        merge_alert(&mut line, object.clone());
        assert_eq!(line["type"], "job_overdue");
        assert_eq!(line["job"], "cleanup");
        assert_eq!(line["message"], "cleanup: no run");
        assert_eq!(line["time"], "t");
        assert!(text_alert(&object).starts_with("job_overdue: cleanup: no run {"));
        assert!(alert_object("edgecron::runner", alert).is_none());
        assert!(alert_object(ALERT_TARGET, "not json").is_none());
    }
}
