//! The command line: each subcommand parses its arguments, loads configuration and calls the
//! same runner, store and scheduler code the HTTP routes use.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod show;

use show::{calendar, check, jobs, occurrences, print_json, print_variables, runs};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigError};
use crate::jobs::{DataSubject, Registry, RunParams};
use crate::process::Process;
use crate::restore::RestoreError;
use crate::runner::{Answer, EXIT_USAGE, RunError, Runner, answered};
use crate::serve::{self, ServeError};
use crate::site::SiteError;
use crate::status::history::HistoryError;
use crate::store::backup::{self, BackupError};
use crate::store::runs::Trigger;
use crate::store::{Store, StoreError};

#[derive(Debug, Parser)]
#[command(
    name = "edgecron",
    version,
    about = "Periodic data jobs against a local SQLite store: built-in scheduler, HTTP triggers, one-shot runs"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Migrate the store, start the HTTP listener and the scheduler; stop on SIGTERM/SIGINT
    Serve,
    /// Run one job once and print its JSON result
    Run {
        job: String,
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_name = "YYYY-MM-DD")]
        start_date: Option<String>,
        #[arg(long, value_name = "YYYY-MM-DD")]
        end_date: Option<String>,
    },
    /// Erase one data subject everywhere edgecron holds them, exports included
    Erase {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        customer: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// Print every record of one data subject in edgecron's tables and exports, as JSON
    Access {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        customer: String,
    },
    /// List every job: schedule, enabled, last run, next run
    Jobs {
        #[arg(long)]
        json: bool,
    },
    /// Show run history, newest first
    Runs {
        job: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show every fire time that was due and what became of it, newest first
    Occurrences {
        job: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration without opening the store, and print each job's plan
    Check {
        /// List every environment variable edgecron reads instead: its default, the values it
        /// accepts, whether it is set here, and what it does
        #[arg(long)]
        variables: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show the next times a cron expression fires, like `systemd-analyze calendar`
    Calendar {
        expression: String,
        /// Time zone the expression is read in (default: EDGECRON_TZ, else UTC)
        #[arg(long)]
        tz: Option<String>,
        /// Start after this time (ISO-8601; without an offset it is read in the zone)
        #[arg(long)]
        from: Option<String>,
        /// How many fire times to show, 1 to 10,000
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        count: u64,
        #[arg(long)]
        json: bool,
    },
    /// Create or upgrade the store's schema
    Migrate,
    /// Fill the store with deterministic sample data for every job
    Demo {
        #[arg(long, default_value_t = 5)]
        tenants: usize,
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
    },
    /// Print this store's site id; `adopt`: make a store copied or moved here this host's own
    Site {
        #[command(subcommand)]
        action: Option<SiteAction>,
    },
    /// Copy the store, consistent, while serve and the application write; never overwrites
    Backup {
        /// Where the copy goes (must not exist)
        path: std::path::PathBuf,
    },
    /// Put a copy made by `backup` in place of the store (serve stopped), keeping the replaced
    /// one beside it, and take the export files written since into its manifest
    Restore {
        /// The copy `edgecron backup` made
        backup: std::path::PathBuf,
    },
    /// Print the shell completion script for SHELL
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff)
    #[command(hide = true)]
    Man,
}

#[derive(Debug, clap::Subcommand)]
enum SiteAction {
    /// Record this host (and EDGECRON_SITE_ID, or a new derived id) as the store's site
    Adopt,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error("restore: {0}")]
    Restore(#[from] RestoreError),
    /// A run refused before it started; its exit code is the runner's answer's.
    #[error(transparent)]
    Run(RunError),
}

/// Installs the logger in the format `EDGECRON_LOG_FORMAT` names.
pub fn start_logging() -> Result<(), CliError> {
    crate::logging::init(crate::config::log_format()?);
    Ok(())
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => EXIT_USAGE,
            // A store that cannot be opened or written is bad configuration too (SPEC §1).
            CliError::Store(StoreError::Unusable { .. } | StoreError::CreateDir { .. }) => {
                EXIT_USAGE
            }
            CliError::Serve(ServeError::Listen { .. }) => EXIT_USAGE,
            // A store that belongs to another site is refused as bad configuration.
            CliError::Site(SiteError::Elsewhere { .. } | SiteError::Renamed { .. }) => EXIT_USAGE,
            CliError::Restore(RestoreError::Served(_) | RestoreError::NotABackup { .. }) => {
                EXIT_USAGE
            }
            CliError::Run(error) => Answer::of_error(error).exit_code(),
            CliError::Store(_) | CliError::Failed(_) | CliError::Serve(_) | CliError::Site(_) => 1,
            CliError::Restore(_) => 1,
        }
    }
}

/// A job `runs` or `occurrences` does not know is bad usage; the store's errors are the store's.
impl From<HistoryError> for CliError {
    fn from(error: HistoryError) -> CliError {
        match error {
            HistoryError::UnknownJob(_) => CliError::Usage(error.to_string()),
            HistoryError::Store(error) => CliError::Store(error),
        }
    }
}

/// The longest `run` waits at its end for the alert webhook.
const ALERT_DELIVERY_AT_EXIT: Duration = Duration::from_secs(5);

pub fn execute(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Serve => serve(),
        Command::Run {
            job,
            dry_run,
            start_date,
            end_date,
        } => {
            let params = RunParams::from_text(dry_run, start_date.as_deref(), end_date.as_deref())
                .map_err(|error| CliError::Usage(error.to_string()))?;
            // Bad usage is refused before the store is touched.
            Registry::all()
                .resolve(&job, &params)
                .map_err(|error| CliError::Usage(error.to_string()))?;
            run(&job, params)
        }
        Command::Erase {
            tenant,
            customer,
            dry_run,
        } => {
            let subject = data_subject(tenant, customer)?;
            finish_run(|runner| runner.erase(subject, Trigger::Cli, dry_run))
        }
        Command::Access { tenant, customer } => access(data_subject(tenant, customer)?),
        Command::Jobs { json } => jobs(json),
        Command::Runs { job, limit, json } => runs(job.as_deref(), limit, json),
        Command::Occurrences { job, limit, json } => occurrences(job.as_deref(), limit, json),
        Command::Check {
            variables: true,
            json,
        } => {
            print_variables(json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { json, .. } => check(json),
        Command::Calendar {
            expression,
            tz,
            from,
            count,
            json,
        } => calendar(
            &expression,
            tz.as_deref(),
            from.as_deref(),
            count as usize,
            json,
        ),
        Command::Migrate => {
            let (_config, store) = open()?;
            println!(
                "store {} is at schema version {}",
                store.path().display(),
                crate::store::MIGRATIONS.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { path } => backup(&path),
        Command::Restore { backup } => {
            let config = Config::from_env(&Registry::all().defaults())?;
            let now = crate::clock::to_store_text(SystemClock.now());
            print_json(&serde_json::json!(crate::restore::restore(
                &config, &backup, &now
            )?));
            Ok(ExitCode::SUCCESS)
        }
        Command::Site { action } => site(action),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "edgecron", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let page = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
            page.render(&mut std::io::stdout())
                .map_err(|error| CliError::Failed(format!("writing the man page: {error}")))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { tenants, rows } => {
            let (config, store) = open()?;
            let summary = crate::demo::fill(&store, &config, SystemClock.now(), tenants, rows)
                .map_err(|error| CliError::Failed(format!("demo: {error}")))?;
            print_json(&summary);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `edgecron backup PATH`: the copy, its size and how long it took.
fn backup(path: &std::path::Path) -> Result<ExitCode, CliError> {
    let (_config, store) = open()?;
    let report = backup::backup_to(&store, path).map_err(|error| match error {
        BackupError::Exists(_) => CliError::Usage(error.to_string()),
        other => CliError::Failed(format!("backup: {other}")),
    })?;
    println!(
        "backed up {} to {}: {} bytes in {:.2}s, integrity ok",
        store.path().display(),
        report.path.display(),
        report.bytes,
        report.took.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// Loads configuration and opens the migrated store.
pub(super) fn open() -> Result<(Arc<Config>, Store), CliError> {
    let config = Config::from_env(&Registry::all().defaults())?;
    let store = Store::open(&config.db_path, config.durability)?;
    store.migrate()?;
    Ok((Arc::new(config), store))
}

/// This process's parts, on the migrated store.
pub(super) fn process() -> Result<Process, CliError> {
    let (config, store) = open()?;
    Ok(Process::new(config, store, Arc::new(SystemClock)))
}

/// `edgecron site`: the store's site id; `adopt`: make it this host's own.
fn site(action: Option<SiteAction>) -> Result<ExitCode, CliError> {
    let (config, store) = open()?;
    let now = crate::clock::to_store_text(SystemClock.now());
    let id = match action {
        None => match crate::site::recorded(&store)? {
            Some(id) => id,
            None => crate::site::bind(&store, config.site_id.as_deref(), &now)?,
        },
        Some(SiteAction::Adopt) => crate::site::adopt(&store, config.site_id.as_deref(), &now)?,
    };
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// A process for work: its store bound to this host's site first (SPEC section 9).
fn working_process() -> Result<Process, CliError> {
    let process = process()?;
    let now = crate::clock::to_store_text(SystemClock.now());
    crate::site::bind(&process.store, process.config.site_id.as_deref(), &now)?;
    Ok(process)
}

fn run(job: &str, params: RunParams) -> Result<ExitCode, CliError> {
    finish_run(|runner| runner.run_job(job, Trigger::Cli, params))
}

/// A data subject as the command line names it: both ids, neither empty.
fn data_subject(tenant: String, customer: String) -> Result<DataSubject, CliError> {
    if tenant.is_empty() || customer.is_empty() {
        return Err(CliError::Usage(
            "--tenant and --customer must name a tenant and a customer".into(),
        ));
    }
    Ok(DataSubject {
        tenant_id: tenant,
        customer_id: customer,
    })
}

fn access(subject: DataSubject) -> Result<ExitCode, CliError> {
    let process = working_process()?;
    let document = process
        .runner
        .access(&subject)
        .map_err(|error| CliError::Failed(error.to_string()))?;
    print_json(&document);
    Ok(ExitCode::SUCCESS)
}

/// Starts a run with `start`, prints its result and answers its exit code.
fn finish_run(
    start: impl FnOnce(&Runner) -> Result<crate::runner::Completed, RunError>,
) -> Result<ExitCode, CliError> {
    let process = working_process()?;
    // SIGTERM/SIGINT ask the job to stop at its next safe point; its progress is kept.
    let _signals = serve::forward_signals(&process.shutdown);
    let outcome = start(&process.runner);
    // Alerts the run raised (and older ones still queued) go out before the process does.
    process.alerts.deliver_now(ALERT_DELIVERY_AT_EXIT);
    match outcome {
        Ok(_) | Err(RunError::AlreadyRunning { .. }) => {
            let (answer, body) = answered(outcome);
            print_json(&body);
            Ok(ExitCode::from(answer.exit_code()))
        }
        Err(error) => Err(CliError::Run(error)),
    }
}

fn serve() -> Result<ExitCode, CliError> {
    serve::run(&working_process()?)?;
    Ok(ExitCode::SUCCESS)
}
