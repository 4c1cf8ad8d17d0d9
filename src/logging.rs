//! Log output: human-readable lines by default; with `EDGECRON_LOG_FORMAT=json`, one JSON
//! object per line (`time`, `level`, `target`, `message`, `job`, `runId`) for journald,
//! Datadog or CloudWatch. The runner marks the thread running a job, so every line the job
//! logs there carries its job and run id.

use std::cell::Cell;
use std::io::Write;

use chrono::{SecondsFormat, Utc};
use serde_json::json;

/// The log target alerts are written to, one JSON object each.
pub const ALERT_TARGET: &str = "edgecron::alert";

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
            // An alert's message is itself a JSON object: kept as one, so pipelines can
            // match on its fields.
            if record.target() == ALERT_TARGET
                && let Ok(alert @ serde_json::Value::Object(_)) = serde_json::from_str(&message)
            {
                line["alert"] = alert;
            }
            writeln!(out, "{line}")
        }),
    };
    builder.init();
}
