//! Log output: human-readable lines by default; with `EDGECRON_LOG_FORMAT=json`, one JSON
//! object per line (`time`, `level`, `target`, `message`, `job`, `runId`) for journald,
//! Datadog or CloudWatch. The runner marks the thread running a job, so every line the job
//! logs there carries its job and run id.
//!
//! Alerts and structured events (`export_metric`, `export_file_cleanup_complete`) are JSON
//! objects with a top-level `type`: in JSON logs their fields are the line's own, so a query
//! on `type:export_failure_alert` finds them; in text logs they read as `type key=value ...`.

use std::cell::Cell;
use std::io::Write;
use std::sync::OnceLock;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

/// The log target alerts are written to, one JSON object each.
pub const ALERT_TARGET: &str = "edgecron::alert";
/// The log target of structured events, one JSON object each.
pub const EVENT_TARGET: &str = "edgecron::event";

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Logs a structured event or alert (`target` one of [`EVENT_TARGET`], [`ALERT_TARGET`]): the
/// object itself in JSON logs, a readable line in text logs.
pub fn structured(target: &str, level: log::Level, object: &Value) {
    match FORMAT.get() {
        Some(LogFormat::Json) => log::log!(target: target, level, "{object}"),
        _ => log::log!(target: target, level, "{}", readable(object)),
    }
}

/// `export_metric export_id=x status=completed duration_ms=812`: the `type` first, then the
/// other fields, nested objects as JSON.
fn readable(object: &Value) -> String {
    let Value::Object(fields) = object else {
        return object.to_string();
    };
    let mut line = fields
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("event")
        .to_string();
    for (key, value) in fields.iter().filter(|(key, _)| *key != "type") {
        match value {
            Value::String(text) => line.push_str(&format!(" {key}={text}")),
            other => line.push_str(&format!(" {key}={other}")),
        }
    }
    line
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_their_type_then_their_fields() {
        let event = json!({"type": "export_metric", "export_id": "e1", "duration_ms": 812});
        assert_eq!(
            readable(&event),
            "export_metric duration_ms=812 export_id=e1"
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// `EDGECRON_LOG_FORMAT`: `text` (the default) or `json`.
    pub fn from_env() -> Result<LogFormat, String> {
        match std::env::var("EDGECRON_LOG_FORMAT")
            .ok()
            .as_deref()
            .map(str::trim)
        {
            None | Some("") | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(format!(
                "EDGECRON_LOG_FORMAT: expected text or json, got {other:?}"
            )),
        }
    }
}

/// Installs the logger; `RUST_LOG` filters as env_logger reads it (default `info`).
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match format {
        LogFormat::Text => builder.format_timestamp_millis(),
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
            // An alert's or event's message is itself a JSON object: its fields join the
            // line's own (never replacing them), so pipelines match on `type` and the rest.
            if matches!(record.target(), ALERT_TARGET | EVENT_TARGET)
                && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&message)
                && let Value::Object(line) = &mut line
            {
                for (key, value) in fields {
                    line.entry(key).or_insert(value);
                }
            }
            writeln!(out, "{line}")
        }),
    };
    builder.init();
}
