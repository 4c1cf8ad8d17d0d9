//! Every environment variable edgecron reads, declared once: its name, what unset means, what
//! it accepts and what it does. Parsing takes defaults and ranges from here, `edgecron check`
//! lists the table and warns of a variable in edgecron's namespaces that is none of these, and
//! tidy holds `systemd/edgecron.env` and the README's table to it.

use super::environment::Accepts::{
    Address, Cron, Flag, Fraction, Number, OneOf, Path, SiteId, Text, Url, Zone,
};
use super::environment::Unset::{Derived, Is, Nothing};
pub use super::environment::{Unset, Variable};

/// Variables edgecron does not read but that look like its own: a typo `check` warns of.
pub fn unknown<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    const NAMESPACES: [&str; 5] = ["EDGECRON_", "EXPORT_", "S3_", "SIEM_", "OUTBOX_"];
    names
        .into_iter()
        .filter(|name| NAMESPACES.iter().any(|prefix| name.starts_with(prefix)))
        .filter(|name| !ALL.iter().any(|variable| variable.names(name)))
        .collect()
}

/// Every variable, in the order the env file and the README list them.
pub const ALL: &[Variable] = &[
    EDGECRON_DATA_DIR,
    EDGECRON_DB,
    EDGECRON_LISTEN,
    EDGECRON_SITE_ID,
    EDGECRON_PING_URL,
    CRON_SECRET,
    CRON_ENABLED,
    EDGECRON_SCHEDULER,
    EDGECRON_DURABILITY,
    MAINTENANCE_CRON_SECRET,
    CRON_TOKEN,
    EDGECRON_TZ,
    EDGECRON_SCHEDULE_JOB,
    EDGECRON_ENABLED_JOB,
    EDGECRON_TZ_JOB,
    EDGECRON_CATCHUP_JOB,
    EDGECRON_EXPECT_JOB,
    EDGECRON_GRACE_JOB,
    EDGECRON_SPREAD_JOB,
    EDGECRON_JOB_DEADLINE_SECS,
    EDGECRON_SHUTDOWN_GRACE_SECS,
    EDGECRON_HTTP_WORKERS,
    EDGECRON_HTTP_MAX_CONNECTIONS,
    EXPORT_BATCH_SIZE,
    EXPORT_COMPRESSION,
    EXPORT_FORMAT,
    EXPORT_PARALLELISM,
    EXPORT_DELETE_LOCAL_AFTER_UPLOAD,
    S3_BUCKET,
    S3_ENDPOINT,
    S3_REGION,
    S3_ACCESS_KEY_ID,
    S3_SECRET_ACCESS_KEY,
    AWS_REGION,
    AWS_DEFAULT_REGION,
    AWS_ENDPOINT_URL_S3,
    AWS_ENDPOINT_URL,
    S3_PREFIX,
    S3_PATH_STYLE,
    S3_REQUEST_TIMEOUT_SECS,
    EXPORT_ARCHIVE_BUCKET,
    EXPORT_ARCHIVE_REGION,
    SIEM_BACKEND,
    SIEM_ENDPOINT,
    SIEM_API_KEY,
    SIEM_INDEX,
    SIEM_SOURCETYPE,
    SIEM_TIMEOUT_SECS,
    SIEM_SPLUNK_ACK,
    SIEM_START,
    ALERT_WEBHOOK_URL,
    EXPORT_ALERT_FAILURE_RATE,
    EXPORT_ALERT_MIN_EXPORTS,
    EXPORT_ALERT_AVG_DURATION_MS,
    EXPORT_ALERT_MAX_VOLUME,
    GITOPS_DIR,
    ATTACHMENTS_DIR,
    UPLOADS_DIR,
    APP_EXPORTS_DIR,
    OUTBOX_LEASE_SECS,
    OUTBOX_MAX_ATTEMPTS,
    RUST_LOG,
    EDGECRON_LOG_FORMAT,
];

const ONE_YEAR_SECS: u64 = 366 * 24 * 3600;
const ONE_WEEK_SECS: u64 = 7 * 24 * 3600;

// --- Where things live
pub const EDGECRON_DATA_DIR: Variable = Variable {
    name: "EDGECRON_DATA_DIR",
    unset: Is("./data"),
    accepts: Path,
    about: "root of the store and of local files",
};
pub const EDGECRON_DB: Variable = Variable {
    name: "EDGECRON_DB",
    unset: Derived("$EDGECRON_DATA_DIR/edgecron.db"),
    accepts: Path,
    about: "the SQLite file (WAL mode)",
};
pub const EDGECRON_LISTEN: Variable = Variable {
    name: "EDGECRON_LISTEN",
    unset: Is("127.0.0.1:8787"),
    accepts: Address,
    about: "HTTP listen address",
};
pub const EDGECRON_SITE_ID: Variable = Variable {
    name: "EDGECRON_SITE_ID",
    unset: Derived("the store's"),
    accepts: SiteId,
    about: "this host's site in a fleet",
};
pub const EDGECRON_PING_URL: Variable = Variable {
    name: "EDGECRON_PING_URL",
    unset: Nothing,
    accepts: Url,
    about: "a healthchecks.io-style base URL each run pings as it starts and ends",
};

// --- Triggers
pub const CRON_SECRET: Variable = Variable {
    name: "CRON_SECRET",
    unset: Derived("generated into $EDGECRON_DATA_DIR/cron-secret"),
    accepts: Text,
    about: "the trigger secret; a comma-separated list rotates",
};
pub const CRON_ENABLED: Variable = Variable {
    name: "CRON_ENABLED",
    unset: Is("true"),
    accepts: Flag,
    about: "false: trigger routes answer 503 and the scheduler fires nothing",
};
pub const EDGECRON_SCHEDULER: Variable = Variable {
    name: "EDGECRON_SCHEDULER",
    unset: Is("on"),
    accepts: OneOf {
        values: &["on", "off"],
    },
    about: "off: an outside scheduler triggers the jobs; routes still work",
};
pub const EDGECRON_DURABILITY: Variable = Variable {
    name: "EDGECRON_DURABILITY",
    unset: Is("full"),
    accepts: OneOf {
        values: &["full", "normal"],
    },
    about: "normal: synchronous=NORMAL for slow flash (a power cut may roll back the last commits)",
};
pub const MAINTENANCE_CRON_SECRET: Variable = Variable {
    name: "MAINTENANCE_CRON_SECRET",
    unset: Nothing,
    accepts: Text,
    about: "also accepted on /api/admin/maintenance",
};
pub const CRON_TOKEN: Variable = Variable {
    name: "CRON_TOKEN",
    unset: Nothing,
    accepts: Text,
    about: "also accepted on the legacy /api/cron/tick",
};

// --- Scheduling
pub const EDGECRON_TZ: Variable = Variable {
    name: "EDGECRON_TZ",
    unset: Is("UTC"),
    accepts: Zone,
    about: "the zone schedules are read in",
};
pub const EDGECRON_SCHEDULE_JOB: Variable = Variable {
    name: "EDGECRON_SCHEDULE_<JOB>",
    unset: Derived("the job's own"),
    accepts: Cron,
    about: "a job's schedule (<JOB> upper-case, - as _)",
};
pub const EDGECRON_ENABLED_JOB: Variable = Variable {
    name: "EDGECRON_ENABLED_<JOB>",
    unset: Derived("the job's own: true, false for operator-wired jobs"),
    accepts: Flag,
    about: "false keeps the scheduler from running a job; its route still works",
};
pub const EDGECRON_TZ_JOB: Variable = Variable {
    name: "EDGECRON_TZ_<JOB>",
    unset: Derived("EDGECRON_TZ"),
    accepts: Zone,
    about: "the zone that job's schedule is read in",
};
pub const EDGECRON_CATCHUP_JOB: Variable = Variable {
    name: "EDGECRON_CATCHUP_<JOB>",
    unset: Is("once"),
    accepts: OneOf {
        values: &["once", "skip", "all"],
    },
    about: "fire times passed during downtime: one catch-up run, none, or one each (at most 100)",
};
pub const EDGECRON_EXPECT_JOB: Variable = Variable {
    name: "EDGECRON_EXPECT_<JOB>",
    unset: Nothing,
    accepts: Cron,
    about: "the schedule an outside scheduler triggers that job on",
};
pub const EDGECRON_GRACE_JOB: Variable = Variable {
    name: "EDGECRON_GRACE_<JOB>",
    unset: Is("300"),
    accepts: Number {
        min: 1,
        max: ONE_WEEK_SECS,
    },
    about: "seconds a scheduled or expected run may start late before it is overdue",
};
pub const EDGECRON_SPREAD_JOB: Variable = Variable {
    name: "EDGECRON_SPREAD_<JOB>",
    unset: Is("0"),
    accepts: Number {
        min: 0,
        max: ONE_WEEK_SECS,
    },
    about: "seconds: each fire time starts a fixed per-site offset in [0, spread) later",
};
pub const EDGECRON_JOB_DEADLINE_SECS: Variable = Variable {
    name: "EDGECRON_JOB_DEADLINE_SECS",
    unset: Is("600"),
    accepts: Number {
        min: 1,
        max: ONE_YEAR_SECS,
    },
    about: "long jobs stop between batches past this",
};
pub const EDGECRON_SHUTDOWN_GRACE_SECS: Variable = Variable {
    name: "EDGECRON_SHUTDOWN_GRACE_SECS",
    unset: Is("30"),
    accepts: Number {
        min: 0,
        max: 24 * 3600,
    },
    about: "how long serve waits for running jobs on SIGTERM",
};
pub const EDGECRON_HTTP_WORKERS: Variable = Variable {
    name: "EDGECRON_HTTP_WORKERS",
    unset: Is("16"),
    accepts: Number { min: 1, max: 1_024 },
    about: "threads answering requests, plus one per job for triggers",
};
pub const EDGECRON_HTTP_MAX_CONNECTIONS: Variable = Variable {
    name: "EDGECRON_HTTP_MAX_CONNECTIONS",
    unset: Is("1024"),
    accepts: Number {
        min: 1,
        max: 1_000_000,
    },
    about: "open connections past this are answered 503 and closed",
};

// --- Exports
pub const EXPORT_BATCH_SIZE: Variable = Variable {
    name: "EXPORT_BATCH_SIZE",
    unset: Is("10000"),
    accepts: Number {
        min: 1,
        max: 100_000_000,
    },
    about: "rows per tenant per export run",
};
pub const EXPORT_COMPRESSION: Variable = Variable {
    name: "EXPORT_COMPRESSION",
    unset: Is("none"),
    accepts: OneOf {
        values: &["none", "gzip", "zstd"],
    },
    about: "how NDJSON export files and archives are compressed",
};
pub const EXPORT_FORMAT: Variable = Variable {
    name: "EXPORT_FORMAT",
    unset: Is("ndjson"),
    accepts: OneOf {
        values: &["ndjson", "parquet"],
    },
    about: "parquet: batch-….parquet files (with EXPORT_COMPRESSION=none)",
};
pub const EXPORT_PARALLELISM: Variable = Variable {
    name: "EXPORT_PARALLELISM",
    unset: Derived("the cores, at most 4"),
    accepts: Number { min: 1, max: 64 },
    about: "threads reading and writing export files",
};
pub const EXPORT_DELETE_LOCAL_AFTER_UPLOAD: Variable = Variable {
    name: "EXPORT_DELETE_LOCAL_AFTER_UPLOAD",
    unset: Is("false"),
    accepts: Flag,
    about: "remove local export files once their upload is verified",
};
pub const S3_BUCKET: Variable = Variable {
    name: "S3_BUCKET",
    unset: Nothing,
    accepts: Text,
    about: "set to upload export files",
};
pub const S3_ENDPOINT: Variable = Variable {
    name: "S3_ENDPOINT",
    unset: Derived("AWS"),
    accepts: Url,
    about: "an S3-compatible server's URL",
};
pub const S3_REGION: Variable = Variable {
    name: "S3_REGION",
    unset: Is("us-east-1"),
    accepts: Text,
    about: "the bucket's region",
};
pub const S3_ACCESS_KEY_ID: Variable = Variable {
    name: "S3_ACCESS_KEY_ID",
    unset: Derived("the AWS default chain"),
    accepts: Text,
    about: "with S3_SECRET_ACCESS_KEY, both or neither",
};
pub const S3_SECRET_ACCESS_KEY: Variable = Variable {
    name: "S3_SECRET_ACCESS_KEY",
    unset: Derived("the AWS default chain"),
    accepts: Text,
    about: "with S3_ACCESS_KEY_ID, both or neither",
};
pub const AWS_REGION: Variable = Variable {
    name: "AWS_REGION",
    unset: Nothing,
    accepts: Text,
    about: "stands in for S3_REGION",
};
pub const AWS_DEFAULT_REGION: Variable = Variable {
    name: "AWS_DEFAULT_REGION",
    unset: Nothing,
    accepts: Text,
    about: "stands in for S3_REGION and AWS_REGION",
};
pub const AWS_ENDPOINT_URL_S3: Variable = Variable {
    name: "AWS_ENDPOINT_URL_S3",
    unset: Nothing,
    accepts: Url,
    about: "stands in for S3_ENDPOINT",
};
pub const AWS_ENDPOINT_URL: Variable = Variable {
    name: "AWS_ENDPOINT_URL",
    unset: Nothing,
    accepts: Url,
    about: "stands in for S3_ENDPOINT and AWS_ENDPOINT_URL_S3",
};
pub const S3_PREFIX: Variable = Variable {
    name: "S3_PREFIX",
    unset: Is(""),
    accepts: Text,
    about: "a key prefix such as edgecron/ (no leading /, no . or .. part)",
};
pub const S3_PATH_STYLE: Variable = Variable {
    name: "S3_PATH_STYLE",
    unset: Is("false"),
    accepts: Flag,
    about: "true for MinIO and most self-hosted servers",
};
pub const S3_REQUEST_TIMEOUT_SECS: Variable = Variable {
    name: "S3_REQUEST_TIMEOUT_SECS",
    unset: Is("60"),
    accepts: Number { min: 1, max: 3600 },
    about: "the longest one request to storage may take",
};
pub const EXPORT_ARCHIVE_BUCKET: Variable = Variable {
    name: "EXPORT_ARCHIVE_BUCKET",
    unset: Nothing,
    accepts: Text,
    about: "export-log-cleanup archives here (on the S3_* endpoint, with its credentials)",
};
pub const EXPORT_ARCHIVE_REGION: Variable = Variable {
    name: "EXPORT_ARCHIVE_REGION",
    unset: Derived("S3_REGION"),
    accepts: Text,
    about: "the archive bucket's region",
};

// --- SIEM shipping
pub const SIEM_BACKEND: Variable = Variable {
    name: "SIEM_BACKEND",
    unset: Nothing,
    accepts: Text,
    about: "splunk, datadog or elastic; unset or unknown: siem-ship answers skipped",
};
pub const SIEM_ENDPOINT: Variable = Variable {
    name: "SIEM_ENDPOINT",
    unset: Nothing,
    accepts: Url,
    about: "the intake's base URL, required with a backend",
};
pub const SIEM_API_KEY: Variable = Variable {
    name: "SIEM_API_KEY",
    unset: Nothing,
    accepts: Text,
    about: "the intake's key, required with a backend",
};
pub const SIEM_INDEX: Variable = Variable {
    name: "SIEM_INDEX",
    unset: Derived("the token's (Splunk), edgecron-audit (Elastic)"),
    accepts: Text,
    about: "the index; not for Datadog",
};
pub const SIEM_SOURCETYPE: Variable = Variable {
    name: "SIEM_SOURCETYPE",
    unset: Derived("edgecron:audit (Splunk), edgecron (Datadog)"),
    accepts: Text,
    about: "Splunk's sourcetype, Datadog's ddsource",
};
pub const SIEM_TIMEOUT_SECS: Variable = Variable {
    name: "SIEM_TIMEOUT_SECS",
    unset: Is("30"),
    accepts: Number { min: 1, max: 600 },
    about: "the longest one request to the intake (or a Splunk acknowledgement) may take",
};
pub const SIEM_SPLUNK_ACK: Variable = Variable {
    name: "SIEM_SPLUNK_ACK",
    unset: Is("false"),
    accepts: Flag,
    about: "true: rows count only once HEC's indexers acknowledge them (splunk only)",
};
pub const SIEM_START: Variable = Variable {
    name: "SIEM_START",
    unset: Is("beginning"),
    accepts: OneOf {
        values: &["beginning", "now"],
    },
    about: "now: rows already in the store count as shipped (switch-over)",
};

// --- Alerts and the remaining jobs
pub const ALERT_WEBHOOK_URL: Variable = Variable {
    name: "ALERT_WEBHOOK_URL",
    unset: Nothing,
    accepts: Url,
    about: "every alert is also POSTed here as JSON",
};
pub const EXPORT_ALERT_FAILURE_RATE: Variable = Variable {
    name: "EXPORT_ALERT_FAILURE_RATE",
    unset: Is("0.1"),
    accepts: Fraction { min: 0.0, max: 1.0 },
    about: "export failure alert above this share of failed exports",
};
pub const EXPORT_ALERT_MIN_EXPORTS: Variable = Variable {
    name: "EXPORT_ALERT_MIN_EXPORTS",
    unset: Is("1"),
    accepts: Number {
        min: 1,
        max: 1_000_000_000,
    },
    about: "fewer exports in an hour never alert on the rate",
};
pub const EXPORT_ALERT_AVG_DURATION_MS: Variable = Variable {
    name: "EXPORT_ALERT_AVG_DURATION_MS",
    unset: Is("5000"),
    accepts: Number {
        min: 1,
        max: ONE_YEAR_SECS * 1000,
    },
    about: "export failure alert above this average duration",
};
pub const EXPORT_ALERT_MAX_VOLUME: Variable = Variable {
    name: "EXPORT_ALERT_MAX_VOLUME",
    unset: Is("1000"),
    accepts: Number {
        min: 1,
        max: u64::MAX / 2,
    },
    about: "export failure alert above this many exports in an hour",
};
pub const GITOPS_DIR: Variable = Variable {
    name: "GITOPS_DIR",
    unset: Nothing,
    accepts: Path,
    about: "the desired configuration for gitops-drift-check",
};
pub const ATTACHMENTS_DIR: Variable = Variable {
    name: "ATTACHMENTS_DIR",
    unset: Is("blobs"),
    accepts: Path,
    about: "the only place ai_attachments.blob_path may name a file to delete",
};
pub const UPLOADS_DIR: Variable = Variable {
    name: "UPLOADS_DIR",
    unset: Is("uploads"),
    accepts: Path,
    about: "the only place temp_uploads.path may name a file to delete",
};
pub const APP_EXPORTS_DIR: Variable = Variable {
    name: "APP_EXPORTS_DIR",
    unset: Is("downloads"),
    accepts: Path,
    about: "the only place export_logs.file_path may name a file to delete",
};
pub const OUTBOX_LEASE_SECS: Variable = Variable {
    name: "OUTBOX_LEASE_SECS",
    unset: Is("300"),
    accepts: Number {
        min: 1,
        max: ONE_YEAR_SECS,
    },
    about: "processing outbox rows past this lease go back to pending",
};
pub const OUTBOX_MAX_ATTEMPTS: Variable = Variable {
    name: "OUTBOX_MAX_ATTEMPTS",
    unset: Is("5"),
    accepts: Number {
        min: 1,
        max: 1_000_000,
    },
    about: "attempts before an outbox row is dead",
};

// --- Logs
pub const RUST_LOG: Variable = Variable {
    name: "RUST_LOG",
    unset: Is("info"),
    accepts: Text,
    about: "env_logger filter, e.g. info,edgecron::siem=debug",
};
pub const EDGECRON_LOG_FORMAT: Variable = Variable {
    name: "EDGECRON_LOG_FORMAT",
    unset: Is("text"),
    accepts: OneOf {
        values: &["text", "json"],
    },
    about: "json: one JSON object per line",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_variable_is_listed_once() {
        let declared = include_str!("variables.rs")
            .matches(concat!(": Variable = ", "Variable {"))
            .count();
        assert_eq!(declared, ALL.len());
        let mut names: Vec<&str> = ALL.iter().map(|variable| variable.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }

    #[test]
    fn every_default_is_a_value_the_variable_accepts() {
        for variable in ALL {
            let Is(_) = variable.unset else { continue };
            let name = variable.name;
            let accepted = match variable.accepts {
                Number { .. } => variable.number(name, None).is_ok(),
                Fraction { .. } => variable.fraction(name, None).is_ok(),
                Flag => variable.flag(name, None).is_ok(),
                OneOf { values } => {
                    variable.unset_value() == values.first().copied()
                        && variable.one_of(name, None, [(); 16]).is_ok()
                }
                Text | Path | Address | Url | Zone | Cron | SiteId => true,
            };
            assert!(accepted, "{name}");
        }
    }

    #[test]
    fn variables_in_edgecrons_namespaces_that_it_does_not_read_are_unknown() {
        let set = [
            "EXPORT_BATCHSIZE",
            "EXPORT_BATCH_SIZE",
            "EDGECRON_GRACE_CLEANUP",
            "HOME",
            "AWS_PROFILE",
        ];
        assert_eq!(unknown(set), ["EXPORT_BATCHSIZE"]);
    }
}
