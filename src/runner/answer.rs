//! What a run answers, decided once: the run's status and the `ok` in its body from what the
//! job reported, and the HTTP status and exit code every edge gives each answer.

use serde_json::{Value, json};

use super::{Completed, RunError};
use crate::jobs::JobOutput;
use crate::store::runs::RunStatus;

/// How a run that started ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Ok,
    /// Finished with per-item errors, or stopped with work left.
    Partial,
    /// The job failed as a whole (an error, a panic).
    Failed,
}

impl From<Ended> for RunStatus {
    fn from(ended: Ended) -> RunStatus {
        match ended {
            Ended::Ok => RunStatus::Ok,
            Ended::Partial => RunStatus::Partial,
            Ended::Failed => RunStatus::Failed,
        }
    }
}

/// Whether the job ran to its end or was stopped (deadline, shutdown, lost lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Finished,
    Stopped,
}

/// What a job's run came to, before it is recorded.
#[derive(Debug)]
pub struct Conclusion {
    pub ended: Ended,
    pub body: Value,
    pub error: Option<String>,
    pub rows_processed: u64,
}

/// Decides a run's status and its body from what the job returned (its failure, a panic's
/// included, as a message): `ok` exactly when the job finished with no item errors; a stopped
/// job left work undone, so it is `partial` with `finished: false` whatever its own fields
/// say; a failed one answers only its error.
pub fn conclude(result: Result<JobOutput, String>, progress: Progress) -> Conclusion {
    let output = match result {
        Ok(output) => output,
        Err(message) => {
            return Conclusion {
                ended: Ended::Failed,
                body: json!({"ok": false, "error": message}),
                error: Some(message),
                rows_processed: 0,
            };
        }
    };
    let ended = if output.item_errors > 0 || progress == Progress::Stopped {
        Ended::Partial
    } else {
        Ended::Ok
    };
    let mut body = output.body;
    body.insert("ok".into(), json!(ended == Ended::Ok));
    if progress == Progress::Stopped {
        body.insert("finished".into(), json!(false));
    }
    Conclusion {
        ended,
        body: Value::Object(body),
        error: None,
        rows_processed: output.rows_processed,
    }
}

/// Every answer a request to run a job gets, each with one HTTP status and one exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Partial,
    Failed,
    UnknownJob,
    InvalidParams,
    AlreadyRunning,
    AlreadyServed,
    ShuttingDown,
    StoreFailed,
}

/// The exit code of bad usage or bad configuration (SPEC section 1).
pub const EXIT_USAGE: u8 = 2;

impl Answer {
    #[cfg(test)]
    const ALL: [Answer; 9] = [
        Answer::Ok,
        Answer::Partial,
        Answer::Failed,
        Answer::UnknownJob,
        Answer::InvalidParams,
        Answer::AlreadyRunning,
        Answer::AlreadyServed,
        Answer::ShuttingDown,
        Answer::StoreFailed,
    ];

    pub fn of(result: &Result<Completed, RunError>) -> Answer {
        match result {
            Ok(completed) => Answer::of_ended(completed.status),
            Err(error) => Answer::of_error(error),
        }
    }

    pub fn of_ended(ended: Ended) -> Answer {
        match ended {
            Ended::Ok => Answer::Ok,
            Ended::Partial => Answer::Partial,
            Ended::Failed => Answer::Failed,
        }
    }

    pub fn of_error(error: &RunError) -> Answer {
        match error {
            RunError::UnknownJob(_) => Answer::UnknownJob,
            RunError::InvalidParams(_) => Answer::InvalidParams,
            RunError::AlreadyRunning { .. } => Answer::AlreadyRunning,
            RunError::AlreadyServed { .. } => Answer::AlreadyServed,
            RunError::ShuttingDown => Answer::ShuttingDown,
            RunError::Store(_) => Answer::StoreFailed,
        }
    }

    /// The status a route answers with (SPEC section 4).
    pub fn http_status(self) -> u16 {
        match self {
            Answer::Ok | Answer::Partial => 200,
            Answer::Failed | Answer::StoreFailed => 500,
            Answer::UnknownJob => 404,
            Answer::InvalidParams => 400,
            Answer::AlreadyRunning | Answer::AlreadyServed => 409,
            Answer::ShuttingDown => 503,
        }
    }

    /// The code `edgecron run` and `edgecron erase` exit with (SPEC section 1).
    pub fn exit_code(self) -> u8 {
        match self {
            Answer::Ok => 0,
            Answer::Failed | Answer::AlreadyServed | Answer::ShuttingDown | Answer::StoreFailed => {
                1
            }
            Answer::UnknownJob | Answer::InvalidParams => EXIT_USAGE,
            Answer::Partial => 3,
            Answer::AlreadyRunning => 4,
        }
    }
}

/// A run request's answer with the body it is given, on a route or on stdout.
pub fn answered(result: Result<Completed, RunError>) -> (Answer, Value) {
    let answer = Answer::of(&result);
    let body = match result {
        Ok(completed) => completed.body,
        Err(error) => error.body(),
    };
    (answer, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(item_errors: u64) -> Result<JobOutput, String> {
        JobOutput::new(&json!({"rows": 7}), item_errors, 7).map_err(|error| error.to_string())
    }

    #[test]
    fn every_answer_has_its_status_and_exit_code() {
        let table: Vec<(Answer, u16, u8)> = Answer::ALL
            .iter()
            .map(|answer| (*answer, answer.http_status(), answer.exit_code()))
            .collect();
        assert_eq!(
            table,
            [
                (Answer::Ok, 200, 0),
                (Answer::Partial, 200, 3),
                (Answer::Failed, 500, 1),
                (Answer::UnknownJob, 404, 2),
                (Answer::InvalidParams, 400, 2),
                (Answer::AlreadyRunning, 409, 4),
                (Answer::AlreadyServed, 409, 1),
                (Answer::ShuttingDown, 503, 1),
                (Answer::StoreFailed, 500, 1),
            ]
        );
    }

    #[test]
    fn ok_is_derived_from_item_errors_and_whether_the_job_finished() {
        let whole = conclude(output(0), Progress::Finished);
        assert_eq!(whole.ended, Ended::Ok);
        assert_eq!(whole.body, json!({"ok": true, "rows": 7}));
        assert_eq!(whole.rows_processed, 7);

        let some_failed = conclude(output(2), Progress::Finished);
        assert_eq!(some_failed.ended, Ended::Partial);
        assert_eq!(some_failed.body["ok"], false);
        assert_eq!(some_failed.body.get("finished"), None);

        let stopped = conclude(output(0), Progress::Stopped);
        assert_eq!(stopped.ended, Ended::Partial);
        assert_eq!(
            stopped.body,
            json!({"ok": false, "finished": false, "rows": 7})
        );

        let failed = conclude(Err("disk full".into()), Progress::Finished);
        assert_eq!(failed.ended, Ended::Failed);
        assert_eq!(failed.body, json!({"ok": false, "error": "disk full"}));
        assert_eq!(failed.error.as_deref(), Some("disk full"));
    }

    #[test]
    fn a_result_that_is_not_an_object_fails_the_run() {
        let error = JobOutput::new(&json!([1, 2]), 0, 0).err().unwrap();
        assert!(error.to_string().contains("JSON object"), "{error}");
    }
}
