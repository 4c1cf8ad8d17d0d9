//! Every environment variable edgecron reads, parsed and validated in one place before
//! anything runs. A bad value stops start-up with one line naming it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

use crate::logging::LogFormat;

mod environment;
mod jobs;
pub mod layout;
pub mod siem;
mod storage;
pub mod variables;

use environment::Environment;
pub use jobs::{ALL_CAP, CatchUp, JobDefaults, JobSettings};
use layout::NamedFileDirs;
use siem::Siem;
pub use storage::S3Settings;
use storage::{parse_export_archive, parse_s3};
use variables::*;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A shared secret. Its `Debug` never shows it, so it cannot leak through a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(..)")
    }
}

/// When `export-metrics-aggregate` raises an export failure alert, and where it sends it.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// `EXPORT_ALERT_FAILURE_RATE`: alert above this share of failed exports.
    pub failure_rate: f64,
    /// `EXPORT_ALERT_MIN_EXPORTS`: fewer exports than this never alert on the rate (by
    /// default 1: the replaced system had no floor).
    pub min_exports: u64,
    /// `EXPORT_ALERT_AVG_DURATION_MS`: alert above this average duration.
    pub avg_duration_ms: u64,
    /// `EXPORT_ALERT_MAX_VOLUME`: alert when an hour has more exports than this (by default
    /// the replaced system's threshold).
    pub max_volume: u64,
    /// `ALERT_WEBHOOK_URL`: alerts are also POSTed here as JSON.
    pub webhook: Option<String>,
    /// `EDGECRON_PING_URL`: a healthchecks.io-style base URL each run pings (start, end).
    pub ping: Option<String>,
}

impl Default for AlertSettings {
    /// What an environment without the alert variables configures.
    fn default() -> AlertSettings {
        parse_alerts(&Environment::new([])).expect("the declared defaults are accepted")
    }
}

/// `EXPORT_FORMAT`: how export files are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line, the contract's default.
    Ndjson,
    /// Columnar, typed and compressed per column (zstd), for lake engines.
    Parquet,
}

/// `EXPORT_COMPRESSION`: how NDJSON export files (and the archives that follow them) are
/// compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `batch-….json`, the contract's default.
    None,
    /// `batch-….json.gz`: what DuckDB, Spark, Athena and Hive read as they are.
    Gzip,
    /// `batch-….json.zst`: read as they are by DuckDB, Spark and Athena; smaller than gzip
    /// and faster to write.
    Zstd,
}

impl Compression {
    /// The suffix it adds after a file's own extension.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }
}

/// Whether the built-in scheduler fires jobs. `Off` is for a host whose jobs an outside
/// scheduler (a Kubernetes CronJob, crontab + curl) triggers already, so none runs twice per
/// due time; routes, the CLI and expected schedules work either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    On,
    Off,
}

/// `EDGECRON_DURABILITY`: when a commit of edgecron's own state is on disk (SPEC section 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL` on edgecron's connections: each commit is on disk before edgecron
    /// acts on it, so a power cut loses none.
    Full,
    /// `synchronous=NORMAL` (for slow flash): a power cut may roll back the last commits, and
    /// later runs redo that work.
    Normal,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub db_path: PathBuf,
    pub listen: SocketAddr,
    /// `CRON_SECRET`, split on commas for rotation; empty means `serve` generates one.
    pub cron_secrets: Vec<Secret>,
    pub maintenance_secret: Option<Secret>,
    pub cron_token: Option<Secret>,
    pub cron_enabled: bool,
    /// `EDGECRON_SCHEDULER`: whether the built-in scheduler fires jobs.
    pub scheduler: Scheduler,
    pub durability: Durability,
    /// `EDGECRON_SITE_ID`: this host's site in a fleet; unset, the store's own.
    pub site_id: Option<String>,
    /// Each job's schedule (parsed, in its zone) and scheduling policies.
    jobs: BTreeMap<&'static str, JobSettings>,
    pub export_batch_size: usize,
    /// `EXPORT_COMPRESSION`: how export files and archives are written.
    pub export_compression: Compression,
    pub export_format: ExportFormat,
    pub job_deadline: Duration,
    pub shutdown_grace: Duration,
    pub http_workers: usize,
    /// `EDGECRON_HTTP_MAX_CONNECTIONS`: open connections past this are answered 503 and closed.
    pub http_max_connections: usize,
    pub outbox_lease: Duration,
    pub outbox_max_attempts: i64,
    pub s3: Option<S3Settings>,
    /// `EXPORT_ARCHIVE_BUCKET`: where `export-log-cleanup` archives instead of `S3_BUCKET`.
    pub export_archive: Option<S3Settings>,
    /// `EXPORT_PARALLELISM`: threads encoding and writing export files (default: the cores, at most 4).
    pub export_parallelism: usize,
    /// `EXPORT_DELETE_LOCAL_AFTER_UPLOAD`: remove local export files once verified in S3.
    pub delete_local_after_upload: bool,
    /// `SIEM_*`: where `siem-ship` delivers audit rows, or why it does not.
    pub siem: Siem,
    pub alerts: AlertSettings,
    /// `GITOPS_DIR`: the desired configuration, `kind/name.json` files.
    pub gitops_dir: Option<PathBuf>,
    /// `ATTACHMENTS_DIR`, `UPLOADS_DIR`, `APP_EXPORTS_DIR`: the only places a row may name a
    /// file to delete.
    pub named_files: NamedFileDirs,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env(jobs: &[JobDefaults]) -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars(), jobs)
    }

    /// Reads configuration from `vars`; `jobs` are the jobs that per-job variables may name,
    /// with their built-in schedules. Answers the first problem found.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        jobs: &[JobDefaults],
    ) -> Result<Config, ConfigError> {
        Config::check_vars(vars, jobs).map_err(|mut problems| problems.swap_remove(0))
    }

    /// Reads configuration from `vars`, collecting every problem rather than stopping at the
    /// first (`edgecron check` lists them all). Never empty on error.
    pub fn check_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        jobs: &[JobDefaults],
    ) -> Result<Config, Vec<ConfigError>> {
        let env = Environment::new(vars);
        let mut problems = Problems::default();

        let data_dir = PathBuf::from(env.text_or_default(&EDGECRON_DATA_DIR));
        let db_path = env
            .text(&EDGECRON_DB)
            .map_or_else(|| data_dir.join("edgecron.db"), PathBuf::from);
        let listen_text = env.text_or_default(&EDGECRON_LISTEN);
        let listen = problems.take(
            listen_text.parse().map_err(|_| {
                ConfigError(format!(
                    "EDGECRON_LISTEN: {listen_text:?} is not an address like 127.0.0.1:8787"
                ))
            }),
            SocketAddr::from(([127, 0, 0, 1], 8787)),
        );
        let zone = problems.take(
            parse_zone("EDGECRON_TZ", env.text_or_default(&EDGECRON_TZ)),
            chrono_tz::UTC,
        );
        let jobs = jobs::parse_job_vars(&env, jobs, zone, &mut problems);

        let s3 = problems.take(parse_s3(&env), None);
        let export_archive = problems.take(parse_export_archive(&env), None);
        let export_compression = problems.take(
            env.one_of(
                &EXPORT_COMPRESSION,
                [Compression::None, Compression::Gzip, Compression::Zstd],
            ),
            Compression::None,
        );
        let export_format = problems.take(
            env.one_of(&EXPORT_FORMAT, [ExportFormat::Ndjson, ExportFormat::Parquet])
                .and_then(|format| match (format, export_compression) {
                    (ExportFormat::Parquet, Compression::Gzip | Compression::Zstd) => Err(ConfigError(
                        "EXPORT_COMPRESSION: only none with EXPORT_FORMAT=parquet (Parquet compresses its columns with zstd itself)".into(),
                    )),
                    _ => Ok(format),
                }),
            ExportFormat::Ndjson,
        );
        let siem = problems.take(
            siem::parse(&env),
            Siem::Off("SIEM_* is misconfigured".into()),
        );
        let alerts = problems.take(parse_alerts(&env), AlertSettings::default());
        let gitops_dir = env.text(&GITOPS_DIR).map(PathBuf::from);
        let named_files = problems.take(
            NamedFileDirs::parse(&env, &data_dir, &db_path, gitops_dir.as_deref()),
            NamedFileDirs::unchecked_defaults(&data_dir),
        );
        let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get().min(4));
        // A stand-in after a problem is never used: a configuration with a problem is refused.
        let mut number = |variable: &Variable| problems.take(env.number(variable), 1);
        let export_parallelism = match env.text(&EXPORT_PARALLELISM) {
            None => cores,
            Some(_) => number(&EXPORT_PARALLELISM) as usize,
        };
        let export_batch_size = number(&EXPORT_BATCH_SIZE) as usize;
        let job_deadline = number(&EDGECRON_JOB_DEADLINE_SECS);
        let shutdown_grace = number(&EDGECRON_SHUTDOWN_GRACE_SECS);
        let http_workers = number(&EDGECRON_HTTP_WORKERS) as usize;
        let http_max_connections = number(&EDGECRON_HTTP_MAX_CONNECTIONS) as usize;
        let outbox_lease = number(&OUTBOX_LEASE_SECS);
        let outbox_max_attempts = number(&OUTBOX_MAX_ATTEMPTS) as i64;
        let delete_local_after_upload =
            problems.take(env.flag(&EXPORT_DELETE_LOCAL_AFTER_UPLOAD), false);
        let cron_enabled = problems.take(env.flag(&CRON_ENABLED), true);
        let scheduler = problems.take(
            env.one_of(&EDGECRON_SCHEDULER, [Scheduler::On, Scheduler::Off]),
            Scheduler::On,
        );
        let durability = problems.take(
            env.one_of(&EDGECRON_DURABILITY, [Durability::Full, Durability::Normal]),
            Durability::Full,
        );
        let site_id = problems.take(parse_site_id(env.text(&EDGECRON_SITE_ID)), None);
        problems.finish()?;
        Ok(Config {
            s3,
            export_archive,
            siem,
            alerts,
            gitops_dir,
            named_files,
            export_parallelism,
            delete_local_after_upload,
            db_path,
            listen,
            cron_secrets: env
                .text(&CRON_SECRET)
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|secret| !secret.is_empty())
                        .map(|secret| Secret::new(secret.to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            maintenance_secret: env
                .text(&MAINTENANCE_CRON_SECRET)
                .map(|value| Secret::new(value.to_string())),
            cron_token: env
                .text(&CRON_TOKEN)
                .map(|value| Secret::new(value.to_string())),
            cron_enabled,
            scheduler,
            durability,
            site_id,
            jobs,
            export_batch_size,
            export_compression,
            export_format,
            job_deadline: Duration::from_secs(job_deadline),
            shutdown_grace: Duration::from_secs(shutdown_grace),
            http_workers,
            http_max_connections,
            outbox_lease: Duration::from_secs(outbox_lease),
            outbox_max_attempts,
            data_dir,
        })
    }

    /// `job`'s scheduling; `None` for a job the configuration was not told of.
    pub fn job(&self, job: &str) -> Option<&JobSettings> {
        self.jobs.get(job)
    }
}

/// `EDGECRON_LOG_FORMAT`, read before anything else so the logger is set up first.
pub fn log_format() -> Result<LogFormat, ConfigError> {
    let env = Environment::new(std::env::vars());
    env.one_of(&EDGECRON_LOG_FORMAT, [LogFormat::Text, LogFormat::Json])
}

/// Problems found while reading configuration, each with its variable's name.
#[derive(Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    /// The value, or `fallback` with the problem noted, so reading goes on to find the rest.
    fn take<T>(&mut self, result: Result<T, ConfigError>, fallback: T) -> T {
        result.unwrap_or_else(|problem| {
            self.0.push(problem);
            fallback
        })
    }

    fn finish(self) -> Result<(), Vec<ConfigError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// `EDGECRON_SITE_ID`: 1 to 40 of a-z, 0-9 and `-`, as partition values and keys take it.
fn parse_site_id(id: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(id) = id else {
        return Ok(None);
    };
    let valid = (1..=40).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        return Err(ConfigError(format!(
            "EDGECRON_SITE_ID: {id:?} must be 1 to 40 of a-z, 0-9 and -"
        )));
    }
    Ok(Some(id.to_string()))
}

fn parse_alerts(env: &Environment) -> Result<AlertSettings, ConfigError> {
    let http_url = |variable: &Variable| -> Result<Option<String>, ConfigError> {
        let name = variable.name;
        let Some(url) = env.text(variable) else {
            return Ok(None);
        };
        match url::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
                Ok(Some(url.to_string()))
            }
            _ => Err(ConfigError(format!(
                "{name}: {url:?} is not an http:// or https:// URL"
            ))),
        }
    };
    let webhook = http_url(&ALERT_WEBHOOK_URL)?;
    let ping = http_url(&EDGECRON_PING_URL)?;
    let rate = &EXPORT_ALERT_FAILURE_RATE;
    Ok(AlertSettings {
        failure_rate: rate.fraction(rate.name, env.text(rate))?,
        min_exports: env.number(&EXPORT_ALERT_MIN_EXPORTS)?,
        avg_duration_ms: env.number(&EXPORT_ALERT_AVG_DURATION_MS)?,
        max_volume: env.number(&EXPORT_ALERT_MAX_VOLUME)?,
        webhook,
        ping,
    })
}

/// An IANA zone; the problem names the variable with its value (`EDGECRON_TZ_CLEANUP=Mars/Base`).
pub fn parse_zone(name: &str, value: &str) -> Result<Tz, ConfigError> {
    value.parse::<Tz>().map_err(|_| {
        ConfigError(format!(
            "{name}={}: unknown time zone (use an IANA name like Europe/Berlin)",
            value.escape_debug()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOBS: &[JobDefaults] = &[
        JobDefaults {
            name: "cleanup",
            schedule: "30 4 * * *",
        },
        JobDefaults {
            name: "export-interactions",
            schedule: "0 * * * *",
        },
    ];

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            JOBS,
        )
    }

    #[test]
    fn defaults_follow_the_spec() {
        let config = config(&[]).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.db_path, PathBuf::from("./data/edgecron.db"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:8787");
        assert!(config.cron_enabled && config.cron_secrets.is_empty());
        assert_eq!(config.export_batch_size, 10_000);
        assert_eq!(config.http_max_connections, 1_024);
        let cleanup = config.job("cleanup").unwrap();
        assert_eq!(cleanup.schedule.expression(), "30 4 * * *");
        assert_eq!(cleanup.schedule.zone(), chrono_tz::UTC);
        assert_eq!(
            (cleanup.enabled, cleanup.grace),
            (None, Duration::from_secs(300))
        );
    }

    #[test]
    fn an_s3_prefix_that_could_leave_the_bucket_is_refused() {
        let bucket = [("S3_BUCKET", "b")];
        for prefix in ["../other/", "/abs/", "a/../b/", "a\\b/"] {
            let vars = [bucket[0], ("S3_PREFIX", prefix)];
            let refused = config(&vars).unwrap_err().0;
            assert!(refused.starts_with("S3_PREFIX"), "{prefix}: {refused}");
        }
        let vars = [bucket[0], ("S3_PREFIX", "edgecron/site-1/")];
        assert_eq!(
            config(&vars).unwrap().s3.unwrap().prefix,
            "edgecron/site-1/"
        );
    }

    #[test]
    fn secrets_rotate_and_overrides_name_jobs() {
        let config = config(&[
            ("CRON_SECRET", "new, old ,"),
            ("EDGECRON_SCHEDULE_EXPORT_INTERACTIONS", "0 * * * *"),
            ("EDGECRON_ENABLED_EXPORT_INTERACTIONS", "true"),
            ("EDGECRON_TZ_EXPORT_INTERACTIONS", "Asia/Kolkata"),
        ])
        .unwrap();
        let secrets: Vec<&str> = config.cron_secrets.iter().map(Secret::expose).collect();
        assert_eq!(secrets, ["new", "old"]);
        let export = config.job("export-interactions").unwrap();
        assert_eq!(export.schedule.expression(), "0 * * * *");
        assert_eq!(export.schedule.zone(), chrono_tz::Asia::Kolkata);
        assert_eq!(export.enabled, Some(true));
        assert_eq!(format!("{:?}", config.cron_secrets[0]), "Secret(..)");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (vars, variable) in [
            (vec![("EDGECRON_LISTEN", "nowhere")], "EDGECRON_LISTEN"),
            (vec![("EDGECRON_TZ", "Mars/Olympus")], "EDGECRON_TZ"),
            (
                vec![("EDGECRON_SCHEDULE_CLEANUP", "99 * * * *")],
                "EDGECRON_SCHEDULE_CLEANUP",
            ),
            (
                vec![("EDGECRON_SCHEDULE_NOPE", "* * * * *")],
                "EDGECRON_SCHEDULE_NOPE",
            ),
            (vec![("CRON_ENABLED", "maybe")], "CRON_ENABLED"),
            (vec![("EXPORT_BATCH_SIZE", "0")], "EXPORT_BATCH_SIZE"),
            (
                vec![("EDGECRON_HTTP_MAX_CONNECTIONS", "0")],
                "EDGECRON_HTTP_MAX_CONNECTIONS",
            ),
            (
                vec![("EDGECRON_JOB_DEADLINE_SECS", "18446744073709551615")],
                "EDGECRON_JOB_DEADLINE_SECS",
            ),
            (
                vec![("OUTBOX_LEASE_SECS", "99999999999")],
                "OUTBOX_LEASE_SECS",
            ),
            (
                vec![("S3_BUCKET", "b"), ("S3_ACCESS_KEY_ID", "k")],
                "S3_ACCESS_KEY_ID",
            ),
            (
                vec![("S3_BUCKET", "b"), ("S3_ENDPOINT", "localhost:9000")],
                "S3_ENDPOINT",
            ),
        ] {
            let error = config(&vars).unwrap_err().to_string();
            assert!(error.starts_with(variable), "{error}");
        }
    }
}
