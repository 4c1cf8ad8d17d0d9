//! What started a run and how it stands, as the store keeps them (`job_runs.trigger`,
//! `job_runs.status`) and as the edges print them.

use serde::Serialize;

use crate::store::stored_by_name;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Schedule,
    Http,
    Cli,
}

impl Trigger {
    pub const ALL: [Trigger; 3] = [Trigger::Schedule, Trigger::Http, Trigger::Cli];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Http => "http",
            Trigger::Cli => "cli",
        }
    }
}

/// How a run ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Ok,
    /// Finished, but some items (a tenant, a flow) failed.
    Partial,
    Failed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Running,
        RunStatus::Ok,
        RunStatus::Partial,
        RunStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Ok => "ok",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
        }
    }
}

stored_by_name!(Trigger, RunStatus);
